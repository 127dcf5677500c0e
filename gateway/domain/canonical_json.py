"""Canonical JSON (RFC 8785): the one way this gateway writes JSON whose bytes matter.

Signatures, Merkle hashes, content versions, plan hashes, key ids, pseudonym inputs and stored
answers that are compared later are all made over bytes: two encoders that differ in one space
would make a valid record look forged, or the same question look new. So every such byte string
comes from `canonical` (or its text, `canonical_text`), and nothing else in `gateway/` calls
`json.dumps(..., sort_keys=True)`, orjson's key sorting or `rfc8785` directly. JSON written for
people or storage only (indented files, API bodies) is not canonical and need not be.

Pure: imports only the standard library, orjson and rfc8785.
"""

from __future__ import annotations

from typing import Any

import orjson
import rfc8785

__all__ = ["LARGEST_EXACT_INT", "canonical", "canonical_text"]

_SAFE_INT = 2**53
LARGEST_EXACT_INT = _SAFE_INT - 1
"""The largest integer (in magnitude) canonical JSON writes: RFC 8785 refuses larger ones."""


def canonical(value: Any) -> bytes:
    """RFC 8785 canonical JSON of `value`, as UTF-8 bytes.

    Most documents here hold only text, integers, booleans, ASCII keys and floats such as 0.975;
    for those orjson with sorted keys already writes RFC 8785 (no spaces, the same escapes, keys
    in code-unit order, which for ASCII keys is byte order, and for a non-integral float of
    magnitude in [1e-4, 1e16) the same shortest round-trip digits in positional notation) at a
    thirtieth of the cost of the rfc8785 library, and property tests hold the two outputs equal.
    Anything else (integral or very large or small floats, non-ASCII keys, integers beyond 2**53,
    subclasses of the plain types) goes through rfc8785, which refuses what RFC 8785 cannot
    write (integers beyond 2**53, NaN, lone surrogates).
    """
    if _plain(value):
        try:
            return orjson.dumps(value, option=orjson.OPT_SORT_KEYS)
        except orjson.JSONEncodeError:
            pass  # a lone surrogate, or nesting deeper than orjson goes: rfc8785 decides
    return bytes(rfc8785.dumps(value))


def canonical_text(value: Any) -> str:
    """`canonical(value)` as text, for keys and stored answers kept as strings."""
    return canonical(value).decode()


def _plain(value: Any) -> bool:
    """Whether every node of `value` is of a kind orjson writes as RFC 8785 does."""
    stack = [value]
    pop, extend = stack.pop, stack.extend
    while stack:
        item = pop()
        kind = type(item)
        if kind is str or kind is bool or item is None:
            continue
        if kind is dict:
            for key in item:
                if type(key) is not str or not key.isascii():
                    return False
            extend(item.values())
        elif kind is list or kind is tuple:
            extend(item)
        elif kind is int:
            if not -_SAFE_INT < item < _SAFE_INT:
                return False
        elif kind is float:
            # Both write 1e-05 and 2.0 where RFC 8785 (ECMAScript) writes 0.00001 and 2.
            if not (1e-4 <= abs(item) < 1e16 and not item.is_integer()):
                return False
        else:
            return False
    return True
