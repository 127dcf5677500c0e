"""`canonical` is RFC 8785 exactly: the fast path never differs from the rfc8785 library."""

from __future__ import annotations

from typing import Any

import pytest
import rfc8785
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.domain.canonical_json import canonical

keys = st.one_of(st.text(max_size=8), st.text(alphabet=st.characters(codec="ascii"), max_size=8))
scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**53) + 1, max_value=2**53 - 1),
    st.integers(),
    st.floats(allow_nan=False, allow_infinity=False),
    st.floats(min_value=1e-5, max_value=1e17),
    st.floats(min_value=-1e17, max_value=-1e-5),
    st.sampled_from([1e-4, 0.0001000000001, 9.999999999999998e15, 1e16, 0.95, 0.975, 1 / 3, 2.5, -0.0, 5e-324]),
    st.text(alphabet=st.characters(blacklist_categories=["Cs"])),
)
documents: st.SearchStrategy[Any] = st.recursive(
    scalars,
    lambda children: st.one_of(st.lists(children, max_size=5), st.dictionaries(keys, children, max_size=5)),
    max_leaves=30,
)


@settings(max_examples=2000)
@given(documents)
def test_canonical_equals_rfc8785(document: Any) -> None:
    try:
        expected = rfc8785.dumps(document)
    except (rfc8785.CanonicalizationError, ValueError, OverflowError):
        return  # values RFC 8785 refuses (integers beyond the double range) are not ours to encode
    assert canonical(document) == expected


def test_the_tricky_characters() -> None:
    for text in ("\u2028\u2029", "\x7f", "\x00\x1f\b\f\n\r\t", '"\\/', "é中𝄞", "\ue000\U0001f600"):
        assert canonical({"k": text, "é": [text]}) == rfc8785.dumps({"k": text, "é": [text]})
    assert canonical({"b": 1, "a": [True, None, 2**53 - 1]}) == rfc8785.dumps({"b": 1, "a": [True, None, 2**53 - 1]})


@settings(max_examples=5000)
@given(st.floats(allow_nan=False, allow_infinity=False))
def test_every_float_is_written_as_rfc8785_writes_it(number: float) -> None:
    assert canonical({"x": [number]}) == rfc8785.dumps({"x": [number]})


def test_what_the_fast_path_does_not_take_goes_to_rfc8785() -> None:
    """Nesting deeper than orjson goes, subclasses of the plain types and other objects: the
    same bytes as rfc8785, or its refusal."""
    deep: Any = "x"
    for _ in range(300):
        deep = [deep]
    assert canonical(deep) == rfc8785.dumps(deep)

    class Text(str):
        pass

    assert canonical({"k": Text("v")}) == rfc8785.dumps({"k": Text("v")})
    for refused in ({"k": "\ud800"}, {"k": float("nan")}, {"k": 2**64}, {"k": object()}):
        with pytest.raises((rfc8785.CanonicalizationError, ValueError, OverflowError, TypeError)):
            canonical(refused)
