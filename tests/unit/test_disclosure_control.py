"""Statistical disclosure control of job tables: small counts redacted, the rest rounded, and
secondary suppression so that no total gives a redacted cell back."""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.domain.jobs import DisclosureControl, check_table

PUBLIC = {"industry": {"A", "B", "C", "D"}, "status": {"active", "revoked"}, "flag": {True, False}}
RULES = DisclosureControl()


def _table(rows: list[dict[str, Any]], keys: list[str], counts: list[str]) -> dict[str, Any]:
    return {"kind": "table", "keys": keys, "counts": counts, "rows": rows}


def test_small_counts_are_redacted_and_the_rest_rounded() -> None:
    rows = [{"industry": i, "n": n} for i, n in zip("ABCD", [3, 12, 13, 40], strict=True)]
    checked = check_table(_table(rows, ["industry"], ["n"]), PUBLIC, RULES)
    assert checked.released is not None
    # 3 is redacted; its total could give it back, so the next smallest (12) goes too
    assert [r["n"] for r in checked.released] == [None, None, 15, 40]


def test_a_lone_redaction_in_a_row_or_column_takes_a_second_cell() -> None:
    rows = [
        {"industry": "A", "status": "active", "n": 100},
        {"industry": "A", "status": "revoked", "n": 2},
        {"industry": "B", "status": "active", "n": 50},
        {"industry": "B", "status": "revoked", "n": 30},
    ]
    released = check_table(_table(rows, ["industry", "status"], ["n"]), PUBLIC, RULES).released
    assert released is not None
    hidden = {(r["industry"], r["status"]) for r in released if r["n"] is None}
    assert ("A", "revoked") in hidden and len(hidden) >= 2
    assert _no_lone_redaction(released, ["industry", "status"], "n")


@given(
    st.dictionaries(
        st.tuples(st.sampled_from(sorted(PUBLIC["industry"])), st.sampled_from(sorted(PUBLIC["status"]))),
        st.integers(0, 60),
        min_size=1,
    )
)
@settings(max_examples=200)
def test_no_group_ever_has_exactly_one_redacted_cell(cells: dict[tuple[str, str], int]) -> None:
    rows = [{"industry": i, "status": s, "n": n} for (i, s), n in cells.items()]
    released = check_table(_table(rows, ["industry", "status"], ["n"]), PUBLIC, RULES).released
    assert released is not None
    assert _no_lone_redaction(released, ["industry", "status"], "n")
    for row, original in zip(released, rows, strict=True):
        assert row["n"] is None or (original["n"] > RULES.threshold and row["n"] % RULES.rounding == 0)
        assert row["n"] is None or abs(row["n"] - original["n"]) <= RULES.rounding // 2


def _no_lone_redaction(rows: list[dict[str, Any]], keys: list[str], count: str) -> bool:
    for free in keys:
        fixed = [k for k in keys if k != free]
        groups: dict[tuple[Any, ...], list[Any]] = {}
        for row in rows:
            groups.setdefault(tuple(row[k] for k in fixed), []).append(row[count])
        for values in groups.values():
            if len(values) > 1 and sum(v is None for v in values) == 1:
                return False
    return True


def test_anything_but_public_keys_and_counts_is_withheld() -> None:
    def reason(rows: list[dict[str, Any]], keys: list[str], counts: list[str]) -> str | None:
        return check_table(_table(rows, keys, counts), PUBLIC, RULES).reason

    assert "not a public category column" in (reason([{"person_id": "x", "n": 9}], ["person_id"], ["n"]) or "")
    assert "neither a key nor a count" in (reason([{"industry": "A", "n": 9, "wage": 5}], ["industry"], ["n"]) or "")
    assert "not a public category" in (reason([{"industry": "Z", "n": 9}], ["industry"], ["n"]) or "")
    assert "must be a count" in (reason([{"industry": "A", "n": 9.5}], ["industry"], ["n"]) or "")
    assert "must be a count" in (reason([{"industry": "A", "n": -1}], ["industry"], ["n"]) or "")
    assert "must be a count" in (reason([{"industry": "A", "n": True}], ["industry"], ["n"]) or "")
    assert "twice" in (reason([{"industry": "A", "n": 9}, {"industry": "A", "n": 9}], ["industry"], ["n"]) or "")
    assert "at least one count" in (check_table(_table([], ["industry"], []), PUBLIC, RULES).reason or "")
    assert check_table({"kind": "table", "rows": "x"}, PUBLIC, RULES).reason
