"""How a person's name reads to someone approving a change, as keys to compare names by.

Two names that read alike to an approver must not count as two people: one administrator could
otherwise name a second account after a person who differs only in how the name is written, and
approve their own changes with it. Three keys, each compared with the same key of every other
name: case, width, spacing and invisible characters aside (`reading`); letters that look alike
across or within scripts (a Cyrillic `а` for a Latin `a`, `I`, `l` and `1`, `O` and `0`, `rn`
and `m`) taken as one (`shape`); and both at once (`shape_of_reading`).

Look-alike letters come from the Unicode consortium's confusables list (UTS #39) as the
confusable-homoglyphs library ships it: every pair of single characters it lists as confusable
is joined into one class, read as the smallest character of the class, and a character the list
confuses with a sequence (`m` and `rn`, `œ` and `oe`) is read as that sequence. Two CJK
ideographs are never joined (`士` and `土` are different names to anyone who reads them).
"""

from __future__ import annotations

import unicodedata
from functools import cache

__all__ = ["is_invisible", "keys"]

_INVISIBLE = (
    (0x00AD, 0x00AD), (0x034F, 0x034F), (0x061C, 0x061C), (0x115F, 0x1160), (0x17B4, 0x17B5),
    (0x180B, 0x180F), (0x200B, 0x200F), (0x202A, 0x202E), (0x2060, 0x206F), (0x2800, 0x2800),
    (0x3164, 0x3164), (0xFE00, 0xFE0F), (0xFEFF, 0xFEFF), (0xFFA0, 0xFFA0), (0x1BCA0, 0x1BCA3),
    (0x1D173, 0x1D17A), (0xE0000, 0xE0FFF),
)  # fmt: skip
"""Unicode's Default_Ignorable_Code_Point (DerivedCoreProperties.txt: drawn as nothing) and the
blank Braille pattern, which looks like a space: none of them has a place in a name."""


def is_invisible(ch: str) -> bool:
    """A control, format or unassigned character, or one drawn as nothing or as a blank."""
    point = ord(ch)
    return unicodedata.category(ch)[0] == "C" or any(low <= point <= high for low, high in _INVISIBLE)


def keys(person: str) -> frozenset[tuple[str, str]]:
    """The ways `person` reads: a name that shares one of them with another name reads like it."""
    shown = "".join(ch for ch in unicodedata.normalize("NFKC", person) if not is_invisible(ch))
    reading = " ".join(shown.casefold().split())
    return frozenset(
        {
            ("reading", reading),
            ("shape", " ".join(_shape(shown).split())),
            ("shape_of_reading", " ".join(_shape(reading).casefold().split())),
        }
    )


def _shape(text: str) -> str:
    classes, sequences = _look_alikes()
    once = "".join(classes.get(ch, ch) for ch in text)
    expanded = "".join(sequences.get(ch, ch) for ch in once)
    return "".join(classes.get(ch, ch) for ch in expanded)


def _is_ideograph(ch: str) -> bool:
    return unicodedata.name(ch, "").startswith(("CJK UNIFIED IDEOGRAPH", "CJK COMPATIBILITY IDEOGRAPH"))


@cache
def _look_alikes() -> tuple[dict[str, str], dict[str, str]]:
    """Each character the confusables list names, mapped to the smallest character it is joined
    with (union-find over the list's single-character pairs), and each class's character that the
    list confuses with a sequence, mapped to that sequence; built once, on first use."""
    # The list is 50 ms of data to load: only when a person is named, not by every process.
    from confusable_homoglyphs import confusables  # noqa: PLC0415

    parent: dict[str, str] = {}

    def root(ch: str) -> str:
        while (up := parent.get(ch, ch)) != ch:
            parent[ch] = parent.get(up, up)
            ch = up
        return ch

    multiple: dict[str, list[str]] = {}
    for character, found in confusables.confusables_data.items():
        if len(character) != 1:
            continue
        for homoglyph in found:
            other = homoglyph["c"]
            if len(other) > 1:
                if not any(is_invisible(ch) for ch in other):
                    multiple.setdefault(character, []).append(other)
            elif not (_is_ideograph(character) and _is_ideograph(other)):
                a, b = root(character), root(other)
                if a != b:
                    parent[max(a, b)] = min(a, b)
    classes = {ch: root(ch) for ch in list(parent)}
    sequences: dict[str, str] = {}
    for character, found in multiple.items():
        rep, shortest = classes.get(character, character), min(found)
        sequences[rep] = min(shortest, sequences.get(rep, shortest))
    return classes, sequences
