"""A DP job's plan: the DP statistics its run on the synthetic sample asked for, checked as templates.

Pure. SECURITY: on a service with `output_check: dp`, a job's code never runs on real records.
It runs once on the synthetic sample (made from the catalogue alone), and what it asked for
there is its plan; reviewers approve the code and the plan (by their hashes), and the real run
is the gateway computing that plan, nothing else. So nothing about the real data can steer what
is asked (a job that reads the data and then picks its queries leaks through the choice).

Every planned output goes through every check a template gets (negative list, column
sensitivity, public categories for group keys and filter values, bounds) and then the same
planner (`aggregate.plan`); a refusal names the parameter and the rule, never the value.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from gateway.domain.aggregate import AggregateTemplate, FilterRule, Plan, check_template, epsilon_text, plan
from gateway.domain.canonical_json import canonical
from gateway.domain.catalog import CatalogEntry, ColumnType
from gateway.domain.job_vocabulary import Reason, Refusal
from gateway.errors import InvalidRequest

OUTPUT_NAME = re.compile(r"^[a-z][a-z0-9_]{0,62}$")
"""What an output may be called: declared at submission, before any run."""
MEASURES = ("count", "sum", "mean")
PLAN_TEMPLATE = "job-dp-output"
"""The name every planned output is compiled under: the same question asked by two jobs (or twice)
has one release key, so it is answered from the stored release and charged once."""
_FIELDS = ("kind", "measure", "dataset", "column", "group_by", "filters")
_SENSITIVE = ("identifier", "personal", "commercial_secret")


@dataclass(frozen=True, slots=True)
class Planned:
    """One DP output of a plan, as stored with the job and approved by its reviewers."""

    name: str
    measure: str
    dataset: str
    column: str | None
    group_by: tuple[str, ...]
    filters: Mapping[str, tuple[str | bool, ...]]
    epsilon: str

    def stored(self) -> dict[str, Any]:
        return {
            "name": self.name, "measure": self.measure, "dataset": self.dataset, "column": self.column,
            "group_by": list(self.group_by), "filters": {k: list(v) for k, v in self.filters.items()},
            "epsilon": self.epsilon,
        }  # fmt: skip

    @classmethod
    def from_stored(cls, body: Mapping[str, Any]) -> Planned:
        return cls(
            name=str(body["name"]), measure=str(body["measure"]), dataset=str(body["dataset"]),
            column=None if body["column"] is None else str(body["column"]), group_by=tuple(body["group_by"]),
            filters={str(k): tuple(v) for k, v in body["filters"].items()}, epsilon=str(body["epsilon"]),
        )  # fmt: skip


def plan_sha256(planned: Sequence[Mapping[str, Any]]) -> str:
    """The hash reviewers approve, of the plan as stored (canonical JSON)."""
    return hashlib.sha256(canonical(list(planned))).hexdigest()


def read_requests(
    produced: Mapping[str, Any], declared: Sequence[str], datasets: Sequence[str]
) -> tuple[list[tuple[str, dict[str, Any]]], dict[str, Refusal], list[str]]:
    """The DP requests among a plan run's outputs, in declared order: (requests, refusals by
    declared name, notes for reviewers). Undeclared outputs are dropped and never named back."""
    requests: list[tuple[str, dict[str, Any]]] = []
    refused: dict[str, Refusal] = {}
    notes = (
        [f"{len(set(produced) - set(declared))} undeclared output(s) dropped"] if set(produced) - set(declared) else []
    )
    for name in declared:
        output = produced.get(name)
        if output is None:
            refused[name] = Refusal(Reason.NOT_PRODUCED)
        elif not isinstance(output, Mapping) or output.get("kind") != "dp" or set(output) - set(_FIELDS):
            refused[name] = Refusal(Reason.NOT_THIS_KIND, detail="only vg.dp outputs are released by this service")
        elif output.get("dataset") not in datasets:
            refused[name] = Refusal(Reason.NOT_DECLARED, "dataset", "the dataset is not one the job declared")
        elif output.get("measure") not in MEASURES:
            refused[name] = Refusal(Reason.NOT_A_STATISTIC, "measure", "count, sum or mean")
        else:
            requests.append((name, dict(output)))
    return requests, refused, notes


def check_request(
    name: str, request: Mapping[str, Any], entry: CatalogEntry, banned_columns: set[str], epsilon: str
) -> Planned | Refusal:
    """One DP request through every check a template gets; the planned output, or a refusal."""
    columns = {c.name: c for c in entry.columns}
    column, group_by, filters = request.get("column"), request.get("group_by") or [], request.get("filters") or {}
    if column is not None and not isinstance(column, str):
        return Refusal(Reason.OUTSIDE_RULES, "column", "give a column name")
    if not isinstance(group_by, list) or not all(isinstance(g, str) for g in group_by):
        return Refusal(Reason.OUTSIDE_RULES, "group_by", "give a list of column names")
    if not isinstance(filters, Mapping) or not all(isinstance(v, list) and v for v in filters.values()):
        return Refusal(Reason.OUTSIDE_RULES, "filters", "give a mapping of column to a non-empty list of values")
    used = [("column", column)] if column is not None else []
    used += [("group_by", g) for g in group_by] + [("filters", str(f)) for f in filters]
    for field, used_column in used:
        # SECURITY: a column the catalogue does not know is not named back (it came from the job).
        found = columns.get(used_column)
        if found is None:
            return Refusal(Reason.NO_SUCH_COLUMN, field, "the dataset has no such column")
        where = f"{field}.{used_column}" if field != "column" else f"column.{used_column}"
        if f"{entry.dataset}.{used_column}" in banned_columns:
            return Refusal(Reason.NEGATIVE_LIST, where)
        if field != "column" and found.type is ColumnType.STRING and found.sensitivity.value in _SENSITIVE:
            # as for templates: no text of an identifier, personal or secret column selects or groups
            return Refusal(Reason.SENSITIVE_COLUMN, where, f"{found.sensitivity.value}: text only of public columns")
        if field == "group_by" and found.sensitivity.value in _SENSITIVE:  # as for templates: public group keys
            return Refusal(Reason.SENSITIVE_COLUMN, where, f"{found.sensitivity.value}: public group keys only")
        categories = (False, True) if found.type is ColumnType.BOOLEAN else found.categories
        if field != "column" and categories is None:
            return Refusal(Reason.NOT_PUBLIC_CATEGORY, where, "the column has no public category list")
        if field == "filters" and not all(_is_category(v, categories or ()) for v in filters[used_column]):
            return Refusal(Reason.NOT_PUBLIC_CATEGORY, where, "a value is not one of the column's public categories")
    if len(set(group_by)) != len(group_by):
        return Refusal(Reason.OUTSIDE_RULES, "group_by", "each column once")
    planned = Planned(
        name=name, measure=str(request["measure"]), dataset=entry.dataset, column=column,
        group_by=tuple(group_by), filters={str(k): tuple(v) for k, v in sorted(filters.items())}, epsilon=epsilon,
    )  # fmt: skip
    try:
        compile_planned(planned, entry, "synthetic")
    except Refused as refused:
        return refused.refusal
    return planned


def _is_category(value: Any, categories: Sequence[str | bool]) -> bool:
    """`value` is one of the categories, of the same type (True is not 1)."""
    return any(type(category) is type(value) and category == value for category in categories)


class Refused(Exception):
    """A planned output the rules refuse (carries its refusal)."""

    def __init__(self, refusal: Refusal) -> None:
        super().__init__(refusal.reason.value)
        self.refusal = refusal


def template_of(planned: Planned) -> AggregateTemplate:
    """The template a planned output is checked and compiled as: its filters allow exactly the
    public categories (no range, no free text), its epsilon is its share of the job's."""
    return AggregateTemplate.model_validate(
        {
            "title": "a DP output of an approved job",
            "dataset": planned.dataset,
            "measure": planned.measure,
            "column": planned.column,
            "filters": {column: FilterRule() for column in planned.filters},
            "group_by": list(planned.group_by),
            "epsilon": {"default": planned.epsilon, "max": planned.epsilon},
        }
    )


def compile_planned(planned: Planned, entry: CatalogEntry, version: str) -> Plan:
    """The planned output compiled by the aggregate planner, after `check_template`; raises Refused."""
    try:
        template = template_of(planned)
    except ValueError:
        raise Refused(Refusal(Reason.OUTSIDE_RULES, "measure", "not a valid template")) from None
    issues = check_template(template, entry)
    if issues:
        path, message = issues[0]
        raise Refused(Refusal(Reason.OUTSIDE_RULES, str(path[0]), message))
    parameters = {"filters": {k: list(v) for k, v in planned.filters.items()}, "group_by": list(planned.group_by)}
    try:
        return plan(PLAN_TEMPLATE, template, entry, version, parameters, epsilon=None)
    except InvalidRequest as bad:
        field = str(bad.detail).split(":", 1)[0].removeprefix("parameters.").split(".", 1)[0]
        # SECURITY: the planner's message may repeat a value; reviewers see it, the researcher sees the field.
        raise Refused(Refusal(Reason.OUTSIDE_RULES, field if field in (*_FIELDS, "epsilon") else None,
                              str(bad.detail))) from None  # fmt: skip


def share_of(total_micro: int, count: int) -> str:
    """Each planned output's equal share of the job's epsilon (at least one millionth)."""
    return epsilon_text(max(1, total_micro // max(1, count)))
