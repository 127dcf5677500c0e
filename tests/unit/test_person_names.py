"""Names that read alike share a key; names that read differently do not."""

from __future__ import annotations

import pytest

from gateway.state import person_names


@pytest.mark.parametrize(
    ("one", "other"),
    [
        ("Alice Smith", "alice smith"),  # case
        ("Alice Smith", "Ａｌｉｃｅ Smith"),  # width
        ("Alice Smith", "\u0410lice Smith"),  # a Cyrillic capital A
        ("Alice Smith", "Alice Sm\u0456th"),  # a Cyrillic i
        ("Alice", "AIice"),  # a capital I for an l
        ("Oscar", "0scar"),  # a zero for an O
        ("Oscar Wilde", "\u03bfscar Wilde"),  # a Greek omicron, lower case
        ("Paul", "\u0420aul"),  # a Cyrillic Er
        ("Kim", "Kirn"),  # r and n for an m
        ("Chloe", "Chl\u0153"),  # a ligature
        ("Anna", "ANN\u0410"),  # upper case, the last letter Cyrillic
        ("Alice Smith", "Ali\u034fce Smith"),  # a combining grapheme joiner, drawn as nothing
    ],
)
def test_names_that_read_alike_share_a_key(one: str, other: str) -> None:
    assert person_names.keys(one) & person_names.keys(other)


@pytest.mark.parametrize(
    ("one", "other"),
    [
        ("Jan", "Jon"),
        ("Anna", "Ann"),
        ("Li Ming", "Lin Ming"),
        ("王伟", "王玮"),
        ("Maria", "Mario"),
        ("李士明", "李土明"),
        ("口", "囗"),
    ],
)
def test_names_that_read_differently_share_no_key(one: str, other: str) -> None:
    assert not person_names.keys(one) & person_names.keys(other)


@pytest.mark.parametrize("character", ["\u034f", "\u3164", "\u115f", "\u1160", "\uffa0", "\u2800", "\ufe0f",
                                       "\U000e0101", "\u180b", "\u200b", "\u00ad"])  # fmt: skip
def test_characters_drawn_as_nothing_or_a_blank_are_invisible(character: str) -> None:
    """The account rules refuse a person holding any of them (tests/verify/test_account_changes.py)."""
    assert person_names.is_invisible(character)
    assert not person_names.is_invisible("a") and not person_names.is_invisible("李")
