"""Check characters of credit codes and resident ids: known examples, and mutations fail."""

from __future__ import annotations

import random

import duckdb
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.domain.catalog import Column
from gateway.domain.identifiers import (
    USCC_ALPHABET,
    is_valid_resident_id,
    is_valid_uscc,
    normalize_key,
    valid_resident_ids,
)
from gateway.domain.mock_rows import mock_resident_id, mock_uscc
from gateway.engine.checks import invalid_keys


@pytest.mark.parametrize("code", ["91350100M000100Y43", "91110000802100433B"])
def test_published_credit_codes_are_valid(code: str) -> None:
    assert is_valid_uscc(code)


def test_standard_resident_id_example_is_valid() -> None:
    assert is_valid_resident_id("11010519491231002X")  # the example of GB 11643-1999


@pytest.mark.parametrize(
    "code",
    [
        "91350100M000100Y44",  # wrong check character
        "91350100M000100Y4",  # too short
        "91350100M000100Y433",  # too long
        "91350100I000100Y43",  # I is not in the alphabet
        "9135010XM000100Y43",  # division code not numeric
        "",
    ],
)
def test_malformed_credit_codes_are_refused(code: str) -> None:
    assert not is_valid_uscc(code)


@pytest.mark.parametrize(
    "number",
    [
        "110105194912310021",
        "11010519491331002X",
        "1101051949123100",
        "ABCDEFGHIJKLMNOPQR",
        "\u06611010519491231002X",  # the valid example with an Arabic-Indic one: a digit, not ASCII
        "\u00b21010519491231002X",  # a superscript two: str.isdigit takes it, int() does not
    ],
)
def test_malformed_resident_ids_are_refused(number: str) -> None:
    assert not is_valid_resident_id(number)


def test_normalisation_folds_full_width_space_and_case() -> None:
    assert normalize_key("  ９１３５０１００ｍ０００１００ｙ４３ ") == "91350100M000100Y43"
    assert is_valid_uscc(normalize_key("91350100m000100y43"))


@given(st.integers(min_value=0, max_value=2**32), st.integers(min_value=0, max_value=17), st.data())
def test_any_single_character_change_breaks_a_credit_code(seed: int, position: int, data: st.DataObject) -> None:
    code = mock_uscc(random.Random(seed))
    assert is_valid_uscc(code)
    replacement = data.draw(st.sampled_from([c for c in USCC_ALPHABET if c != code[position]]))
    mutated = code[:position] + replacement + code[position + 1 :]
    # The check character over a prime modulus catches every single substitution.
    assert not is_valid_uscc(mutated)


@given(st.integers(min_value=0, max_value=2**32), st.integers(min_value=0, max_value=16), st.data())
def test_any_single_digit_change_breaks_a_resident_id(seed: int, position: int, data: st.DataObject) -> None:
    number = mock_resident_id(random.Random(seed))
    assert is_valid_resident_id(number)
    replacement = data.draw(st.sampled_from([d for d in "0123456789" if d != number[position]]))
    assert not is_valid_resident_id(number[:position] + replacement + number[position + 1 :])


def _uscc_by_definition(code: str) -> bool:
    """GB 32100 and GB 11714 as written: the reference the table-driven check must equal."""
    alphabet, org_alphabet = USCC_ALPHABET, "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ"
    if len(code) != 18 or any(c not in alphabet for c in code) or not code[2:8].isdigit():
        return False
    org_sum = sum(org_alphabet.index(c) * w for c, w in zip(code[8:16], (3, 7, 9, 10, 5, 8, 4, 2), strict=True))
    org_check = {10: "X", 11: "0"}.get(11 - org_sum % 11, str(11 - org_sum % 11))
    total = sum(alphabet.index(c) * pow(3, i, 31) for i, c in enumerate(code[:17]))
    return org_check == code[16] and alphabet[(31 - total % 31) % 31] == code[17]


@given(st.integers(min_value=0, max_value=2**32), st.lists(st.tuples(st.integers(0, 17), st.characters()), max_size=3))
def test_the_credit_code_check_equals_the_standards_definition(seed: int, changes: list[tuple[int, str]]) -> None:
    """Valid codes, and codes with any characters (other alphabets, digits, 'I', 'O', a full
    stop...) put anywhere: both checks agree on every one."""
    code = list(mock_uscc(random.Random(seed)))
    for position, character in changes:
        code[position] = character
    text = "".join(code)
    assert is_valid_uscc(text) == _uscc_by_definition(text)
    assert is_valid_uscc(text[:17]) is False and is_valid_uscc(text + "0") is False


def _resident_id_variants(seed: int, changes: list[tuple[int, str]]) -> str:
    number = list(mock_resident_id(random.Random(seed)))
    for position, character in changes:
        number[position % len(number)] = character
    return "".join(number)


_ODD_CHARACTERS = [*"0123456789X", "x", " ", "\u0663", "\u00e9", "\uff11"]
_CHANGES = st.lists(st.tuples(st.integers(0, 17), st.sampled_from(_ODD_CHARACTERS)), max_size=3)


@given(st.lists(st.tuples(st.integers(0, 2**32), _CHANGES), min_size=1, max_size=40))
def test_the_batch_resident_id_check_equals_the_one_at_a_time_check(
    numbers: list[tuple[int, list[tuple[int, str]]]],
) -> None:
    """Valid numbers with digits, 'X', letters, spaces and other scripts' digits put anywhere:
    every 18-byte one is judged as is_valid_resident_id judges it."""
    texts = [_resident_id_variants(seed, changes) for seed, changes in numbers]
    fixed = [t.encode("utf-8") for t in texts if len(t.encode("utf-8")) == 18]
    if not fixed:
        return
    matrix = np.frombuffer(b"".join(fixed), dtype=np.uint8).reshape(len(fixed), 18)
    assert valid_resident_ids(matrix).tolist() == [is_valid_resident_id(t.decode("utf-8")) for t in fixed]


@pytest.mark.parametrize("is_csv", [False, True])
def test_registration_counts_every_kind_of_invalid_resident_id(is_csv: bool) -> None:
    """Through DuckDB and Arrow as registration reads them: wrong lengths, other scripts (more
    bytes than characters), a bad month, a bad check character; an empty CSV cell is missing."""
    good = [mock_resident_id(random.Random(seed)) for seed in range(5)]
    bad = [
        good[0][:17],
        good[0] + "1",
        "\u0663" + good[0][1:],
        good[1][:10] + "13" + good[1][12:],
        good[2][:17] + ("0" if good[2][17] != "0" else "1"),
    ]
    con = duckdb.connect()
    con.execute("CREATE TABLE src AS SELECT unnest($1) AS person_id", [[*good, *bad, "", None, *good]])
    column = Column.model_validate(
        {"name": "person_id", "type": "string", "sensitivity": "identifier", "key_format": "resident_id"}
    )
    assert invalid_keys(con, column, "src", is_csv) == len(bad) + (0 if is_csv else 1)
