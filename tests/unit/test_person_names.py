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
    ],
)
def test_names_that_read_alike_share_a_key(one: str, other: str) -> None:
    assert person_names.keys(one) & person_names.keys(other)


@pytest.mark.parametrize(
    ("one", "other"),
    [("Jan", "Jon"), ("Anna", "Ann"), ("Li Ming", "Lin Ming"), ("王伟", "王玮"), ("Maria", "Mario")],
)
def test_names_that_read_differently_share_no_key(one: str, other: str) -> None:
    assert not person_names.keys(one) & person_names.keys(other)
