"""Disclosure control for job services that release tables (`output_check: sdc`). Pure: no I/O.

A job declares every table at submission: its name, key columns (public categories of its
datasets) and count columns, and either a cross-tabulation the gateway computes itself on the
data or nothing (the job writes the counts with `vg.table`). A written table must match its
declaration exactly and hold whole numbers in [0, 2^53]; nothing ties such counts to the data,
so they are never released without output checking by people. Every table then goes through
the automatic rules: counts at or below the threshold redacted, the others rounded, and
secondary suppression. Refusals and reasons name the parameter and the rule, never a value
sent or a name that was not declared.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from itertools import product
from typing import Any, Literal

from gateway.domain.catalog import CatalogEntry, Column, ColumnType
from gateway.domain.job_plan import OUTPUT_NAME
from gateway.domain.job_vocabulary import Reason
from gateway.domain.jobs import DisclosureControl
from gateway.errors import InvalidRequest

NAME = OUTPUT_NAME
NAME_RULE = "a name matches ^[a-z][a-z0-9_]{0,62}$"
MAX_TABLES = 20
MAX_KEYS = 4
MAX_COUNTS = 8
MAX_CELLS = 10_000
MAX_COUNT = 2**53
"""The largest count a table may hold: every integer up to it is exact in a JSON double."""

# The reasons a researcher may read for a withheld table (the vocabulary: nothing from the job).
NOT_PRODUCED = Reason.NOT_PRODUCED
SCHEMA_MISMATCH = Reason.NOT_AS_DECLARED
BAD_COUNT = Reason.NOT_A_COUNT
BAD_KEY = Reason.NOT_PUBLIC_CATEGORY
DUPLICATE_KEYS = Reason.OUTSIDE_RULES
TOO_MANY_ROWS = Reason.OUTSIDE_RULES


@dataclass(frozen=True, slots=True)
class CrossTab:
    """Counts the gateway computes on the data: rows, or distinct privacy units, per key cell."""

    dataset: str
    count: Literal["rows", "units"]
    filters: tuple[tuple[str, tuple[str | bool, ...]], ...] = ()


@dataclass(frozen=True, slots=True)
class TableDeclaration:
    name: str
    keys: tuple[str, ...]
    counts: tuple[str, ...]
    crosstab: CrossTab | None = None

    def as_json(self) -> dict[str, Any]:
        body: dict[str, Any] = {"name": self.name, "keys": list(self.keys), "counts": list(self.counts)}
        if self.crosstab is not None:
            body["crosstab"] = {
                "dataset": self.crosstab.dataset,
                "count": self.crosstab.count,
                "filters": [{"column": c, "values": list(v)} for c, v in self.crosstab.filters],
            }
        return body


def _public_columns(entries: Sequence[CatalogEntry]) -> dict[str, Column]:
    """Public columns with categories (booleans count) of these datasets, by name."""
    out: dict[str, Column] = {}
    for entry in entries:
        for column in entry.columns:
            if column.sensitivity.value == "public" and categories(column) is not None:
                out.setdefault(column.name, column)
    return out


def categories(column: Column) -> tuple[str | bool, ...] | None:
    if column.type is ColumnType.BOOLEAN:
        return (False, True)
    return column.categories


def _name(value: Any, where: str) -> str:
    if not isinstance(value, str) or not NAME.fullmatch(value):
        raise InvalidRequest(f"{where}: {NAME_RULE}")
    return value


def _names(value: Any, where: str, *, least: int, most: int) -> tuple[str, ...]:
    if not isinstance(value, list) or not least <= len(value) <= most:
        raise InvalidRequest(f"{where}: a list of {least} to {most} names")
    names = tuple(_name(v, f"{where}[{i}]") for i, v in enumerate(value))
    if len(set(names)) != len(names):
        raise InvalidRequest(f"{where}: each name once")
    return names


def _fields(value: Any, where: str, allowed: set[str], required: set[str]) -> Mapping[str, Any]:
    if not isinstance(value, dict) or not all(isinstance(k, str) for k in value):
        raise InvalidRequest(f"{where}: an object")
    if not set(value) <= allowed or not required <= set(value):
        raise InvalidRequest(
            f"{where}: the fields are {', '.join(sorted(allowed))} ({', '.join(sorted(required))} required)"
        )
    return value


def declare_tables(raw: Any, entries: Sequence[CatalogEntry]) -> list[TableDeclaration]:
    """The declared tables of a submission, checked against the catalogue of the job's datasets."""
    if not isinstance(raw, list) or not 1 <= len(raw) <= MAX_TABLES:
        raise InvalidRequest(f"tables: declare 1 to {MAX_TABLES} tables, each with name, keys and counts")
    public = _public_columns(entries)
    by_name = {e.dataset: e for e in entries}
    declared: list[TableDeclaration] = []
    for i, item in enumerate(raw):
        where = f"tables[{i}]"
        fields = _fields(item, where, {"name", "keys", "counts", "crosstab"}, {"name", "keys", "counts"})
        name = _name(fields["name"], f"{where}.name")
        keys = _names(fields["keys"], f"{where}.keys", least=0, most=MAX_KEYS)
        counts = _names(fields["counts"], f"{where}.counts", least=1, most=MAX_COUNTS)
        if set(keys) & set(counts):
            raise InvalidRequest(f"{where}: a column is a key or a count, not both")
        crosstab = None
        if fields.get("crosstab") is not None:
            crosstab = _crosstab(fields["crosstab"], f"{where}.crosstab", by_name)
            if len(counts) != 1:
                raise InvalidRequest(f"{where}.counts: a cross-tabulation has one count column")
            scope = _public_columns([by_name[crosstab.dataset]])
        else:
            scope = public
        cells = 1
        for j, key in enumerate(keys):
            if key not in scope:
                raise InvalidRequest(f"{where}.keys[{j}]: keys are public category columns of the datasets")
            cells *= len(categories(scope[key]) or ())
        if cells > MAX_CELLS:
            raise InvalidRequest(f"{where}.keys: at most {MAX_CELLS} key combinations")
        declared.append(TableDeclaration(name, keys, counts, crosstab))
    if len({t.name for t in declared}) != len(declared):
        raise InvalidRequest("tables: each name once")
    return declared


def _crosstab(raw: Any, where: str, by_name: Mapping[str, CatalogEntry]) -> CrossTab:
    fields = _fields(raw, where, {"dataset", "count", "filters"}, {"dataset", "count"})
    entry = by_name.get(fields["dataset"]) if isinstance(fields["dataset"], str) else None
    if entry is None:
        raise InvalidRequest(f"{where}.dataset: one of the job's datasets")
    if fields["count"] not in ("rows", "units"):
        raise InvalidRequest(f"{where}.count: rows or units (distinct privacy units)")
    public = _public_columns([entry])
    raw_filters = fields.get("filters") or []
    if not isinstance(raw_filters, list) or len(raw_filters) > MAX_KEYS:
        raise InvalidRequest(f"{where}.filters: a list of at most {MAX_KEYS} filters")
    filters: list[tuple[str, tuple[str | bool, ...]]] = []
    for j, item in enumerate(raw_filters):
        here = f"{where}.filters[{j}]"
        spec = _fields(item, here, {"column", "values"}, {"column", "values"})
        column = public.get(spec["column"]) if isinstance(spec["column"], str) else None
        if column is None:
            raise InvalidRequest(f"{here}.column: filters are on public category columns of the dataset")
        allowed = categories(column) or ()
        values = spec["values"]
        if (
            not isinstance(values, list)
            or not values
            or any(type(v) is not type(allowed[0]) or v not in allowed for v in values)
            or len(set(values)) != len(values)
        ):
            raise InvalidRequest(f"{here}.values: distinct public categories of the column")
        if any(c == column.name for c, _ in filters):
            raise InvalidRequest(f"{here}.column: one filter per column")
        filters.append((column.name, tuple(values)))
    return CrossTab(entry.dataset, fields["count"], tuple(filters))


def cells(declaration: TableDeclaration, entries: Sequence[CatalogEntry]) -> list[tuple[str | bool, ...]]:
    """Every combination of the keys' public categories, in catalogue order."""
    public = _public_columns(entries)
    return list(product(*(categories(public[k]) or () for k in declaration.keys)))


@dataclass(frozen=True, slots=True)
class Checked:
    rows: list[dict[str, Any]] | None
    reason: Reason | None = None


def check_written(output: Any, declaration: TableDeclaration, entries: Sequence[CatalogEntry]) -> Checked:
    """A table the job wrote, against its declaration: exactly the declared columns, key values
    that are public categories, each key combination at most once, counts whole numbers in
    [0, 2^53]. It comes back with every cell in catalogue order (`cells`), 0 where none was written.

    SECURITY: the order of the rows and which cells are left out are the job's choice, so they
    could spell out records (a permutation of 620 cells holds about 4,860 bits) under counts
    that look right to the checkers: neither survives the check."""
    if not isinstance(output, dict) or output.get("kind") != "table":
        return Checked(None, SCHEMA_MISMATCH)
    if output.get("keys") != list(declaration.keys) or output.get("counts") != list(declaration.counts):
        return Checked(None, SCHEMA_MISMATCH)
    rows = output.get("rows")
    if not isinstance(rows, list):
        return Checked(None, SCHEMA_MISMATCH)
    if len(rows) > MAX_CELLS:
        return Checked(None, TOO_MANY_ROWS)
    public = _public_columns(entries)
    allowed = {k: categories(public[k]) or () for k in declaration.keys}
    columns = {*declaration.keys, *declaration.counts}
    by_key: dict[tuple[Any, ...], dict[str, Any]] = {}
    for row in rows:
        if not isinstance(row, dict) or set(row) != columns:
            return Checked(None, SCHEMA_MISMATCH)
        key = tuple(row[k] for k in declaration.keys)
        # type and value: True is not 1, and "1" is not 1
        if any(
            not any(type(v) is type(a) and v == a for a in allowed[k])
            for k, v in zip(declaration.keys, key, strict=True)
        ):
            return Checked(None, BAD_KEY)
        if key in by_key:
            return Checked(None, DUPLICATE_KEYS)
        by_key[key] = row
        for count in declaration.counts:
            value = row[count]
            if type(value) is not int or not 0 <= value <= MAX_COUNT:
                return Checked(None, BAD_COUNT)
    zero = dict.fromkeys(declaration.counts, 0)
    return Checked(
        [{**dict(zip(declaration.keys, key, strict=True)), **{c: by_key.get(key, zero)[c] for c in declaration.counts}}
         for key in cells(declaration, entries)]
    )  # fmt: skip


def apply_rules(
    rows: list[dict[str, Any]], keys: Sequence[str], counts: Sequence[str], rules: DisclosureControl
) -> list[dict[str, Any]]:
    """The automatic rules: counts at or below the threshold redacted (None), the others rounded
    to the nearest multiple of the base, then secondary suppression until no group of cells that
    share all keys but one has exactly one redacted cell (its total would give it back)."""
    released = [dict(row) for row in rows]
    for count in counts:
        redacted = {i for i, row in enumerate(released) if row[count] <= rules.threshold}
        redacted = _secondary(released, keys, count, redacted)
        for i, row in enumerate(released):
            row[count] = None if i in redacted else _round(row[count], rules.rounding)
    return released


def _round(value: int, base: int) -> int:
    return ((value + base // 2) // base) * base


def _secondary(rows: list[dict[str, Any]], keys: Sequence[str], count: str, redacted: set[int]) -> set[int]:
    """A worklist: a group is looked at again only when one of its cells was just redacted.

    SECURITY: a job chooses the counts it writes, and so how long this takes; passes over every
    group until nothing changed took 132 ms for one count column of 1,860 cells whose values
    were searched for the longest cascade, against 4 for plain values (time the job's outcome
    would carry). Each redaction here re-reads only the groups of its cell."""
    redacted = set(redacted)
    groupings = [[k for k in keys if k != free] for free in keys] or [[]]
    groups: list[list[int]] = []
    groups_of: list[list[int]] = [[] for _ in rows]
    for fixed in groupings:
        numbered: dict[tuple[Any, ...], int] = {}
        for i, row in enumerate(rows):
            group = numbered.setdefault(tuple(row[k] for k in fixed), len(groups))
            if group == len(groups):
                groups.append([])
            groups[group].append(i)
            groups_of[i].append(group)
    pending = deque(range(len(groups)))
    queued = [True] * len(groups)
    while pending:
        group = pending.popleft()
        queued[group] = False
        members = groups[group]
        hidden = [i for i in members if i in redacted]
        if len(hidden) == 1 and len(members) > 1:
            shown = min((i for i in members if i not in redacted), key=lambda i: (rows[i][count], i))
            redacted.add(shown)
            for other in groups_of[shown]:
                if not queued[other]:
                    queued[other] = True
                    pending.append(other)
    return redacted


CHECKERS = 2
"""Different output checkers who must release a held output; one withholding withholds it."""


def pending_outputs(held: Mapping[str, Any] | None) -> list[str]:
    """The outputs of a job held for output checking (those that passed the automatic rules)."""
    outputs = (held or {}).get("outputs") or {}
    return [name for name, result in outputs.items() if isinstance(result, dict) and result.get("status") == "held"]


def current_checks(reviews: Sequence[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    """The output checks of the job's current run: those recorded since its last requeue. A
    check is of the values a checker saw; a run after a requeue writes new values."""
    last = max((i for i, r in enumerate(reviews) if r.get("decision") == "requeue"), default=-1)
    return [r for r in reviews[last + 1 :] if r.get("output") is not None]


def output_decisions(
    pending: Sequence[str], checks: Sequence[Mapping[str, Any]], identity_of: Callable[[str], str] = str
) -> dict[str, str | None]:
    """Each held output's outcome so far, from the checks recorded with the reviews: `released`
    (two different people released it: `identity_of` maps an account to its person), `withheld`
    (a checker withheld it), or None (waiting)."""
    out: dict[str, str | None] = {}
    current = current_checks(checks)
    for name in pending:
        mine = [c for c in current if c.get("output") == name]
        if any(c["decision"] == "withhold" for c in mine):
            out[name] = "withheld"
        elif len({identity_of(c["reviewer"]) for c in mine if c["decision"] == "release"}) >= CHECKERS:
            out[name] = "released"
        else:
            out[name] = None
    return out
