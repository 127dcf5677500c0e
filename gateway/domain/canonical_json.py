"""Canonical JSON (RFC 8785): the one way this gateway writes JSON whose bytes matter.

Signatures, Merkle hashes, content versions, plan hashes, key ids, pseudonym inputs and stored
answers that are compared later are all made over bytes: two encoders that differ in one space
would make a valid record look forged, or the same question look new. So every such byte string
comes from `canonical` (or its text, `canonical_text`), and nothing else in `gateway/` calls
`json.dumps(..., sort_keys=True)` or `rfc8785` directly. JSON written for people or storage
only (indented files, API bodies) is not canonical and need not be.

Pure: imports only the standard library and rfc8785.
"""

from __future__ import annotations

import json
from typing import Any

import rfc8785

__all__ = ["canonical", "canonical_text"]

_SAFE_INT = 2**53


def canonical(value: Any) -> bytes:
    """RFC 8785 canonical JSON of `value`, as UTF-8 bytes.

    Most documents here hold only text, integers, booleans, ASCII keys and floats such as 0.975;
    for those the C encoder of the standard library already writes RFC 8785 (same escapes, same
    key order, and for a non-integral float of magnitude in [1e-4, 1e16) the same shortest
    round-trip digits in positional notation) at a twentieth of the cost, and a property test
    holds the two outputs equal. Anything else (integral or very large or small floats,
    non-ASCII keys, integers beyond 2**53) goes through rfc8785, which refuses what RFC 8785
    cannot write (integers beyond 2**53, NaN, lone surrogates).
    """
    if _plain(value):
        try:
            return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()
        except UnicodeEncodeError:
            pass  # a lone surrogate: let rfc8785 refuse it in its own words
    return bytes(rfc8785.dumps(value))


def canonical_text(value: Any) -> str:
    """`canonical(value)` as text, for keys and stored answers kept as strings."""
    return canonical(value).decode()


def _plain(value: Any) -> bool:
    stack = [value]
    while stack:
        item = stack.pop()
        kind = type(item)
        if kind is str or kind is bool or item is None:
            continue
        if kind is int:
            if -_SAFE_INT < item < _SAFE_INT:
                continue
            return False
        if kind is float:
            # Python writes 1e-05 and 2.0 where RFC 8785 (ECMAScript) writes 0.00001 and 2.
            if 1e-4 <= abs(item) < 1e16 and not item.is_integer():
                continue
            return False
        if kind is dict:
            for key, child in item.items():
                if type(key) is not str or not key.isascii():
                    return False
                stack.append(child)
            continue
        if kind is list or kind is tuple:
            stack.extend(item)
            continue
        return False
    return True
