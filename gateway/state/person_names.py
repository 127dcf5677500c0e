"""How a person's name reads to someone approving a change, as keys to compare names by.

Two names that read alike to an approver must not count as two people: one administrator could
otherwise name a second account after a person who differs only in how the name is written, and
approve their own changes with it. Three keys, each compared with the same key of every other
name: case, width, spacing and invisible characters aside (`reading`); letters that look alike
across or within scripts (a Cyrillic `а` for a Latin `a`, `I`, `l` and `1`, `O` and `0`) taken as
one (`shape`); and both at once (`shape_of_reading`). Look-alike letters come from the Unicode
consortium's confusables list (UTS #39) as the confusable-homoglyphs library ships it: every pair
of single characters it lists as confusable is joined into one class, and each character reads
as the smallest character of its class.
"""

from __future__ import annotations

import unicodedata
from functools import cache

__all__ = ["keys"]


def keys(person: str) -> frozenset[tuple[str, str]]:
    """The ways `person` reads: a name that shares one of them with another name reads like it."""
    shown = _shown(person)
    reading = " ".join(shown.casefold().split())
    return frozenset(
        {
            ("reading", reading),
            ("shape", " ".join(_shape(shown).split())),
            ("shape_of_reading", " ".join(_shape(reading).casefold().split())),
        }
    )


def _shown(person: str) -> str:
    """Width folded (NFKC), invisible and control characters left out."""
    return "".join(ch for ch in unicodedata.normalize("NFKC", person) if unicodedata.category(ch)[0] != "C")


def _shape(text: str) -> str:
    classes = _classes()
    return "".join(classes.get(ch, ch) for ch in text)


@cache
def _classes() -> dict[str, str]:
    """Each character the confusables list names, mapped to the smallest character it is joined
    with (union-find over the list's single-character pairs); built once, on first use."""
    # The list is 50 ms of data to load: only when a person is named, not by every process.
    from confusable_homoglyphs import confusables  # noqa: PLC0415

    parent: dict[str, str] = {}

    def root(ch: str) -> str:
        while (up := parent.get(ch, ch)) != ch:
            parent[ch] = parent.get(up, up)
            ch = up
        return ch

    for character, found in confusables.confusables_data.items():
        if len(character) != 1:
            continue
        for homoglyph in found:
            other = homoglyph["c"]
            if len(other) == 1:
                a, b = root(character), root(other)
                if a != b:
                    parent[max(a, b)] = min(a, b)
    return {ch: root(ch) for ch in list(parent)}
