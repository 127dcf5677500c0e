"""Result objects: the gateway's answers as rows and DataFrames, each with its checked receipt.

pandas and polars are optional: `to_pandas()` and `to_polars()` import them when called.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import httpx

from veilgate_client.plots import plot_budget, plot_release

if TYPE_CHECKING:
    from veilgate_client.receipt import Receipt


def _pandas() -> Any:
    try:
        import pandas  # noqa: PLC0415 - an optional extra
    except ImportError:
        raise ImportError("DataFrames need pandas: pip install 'veilgate-client[pandas]'") from None
    return pandas


def _polars() -> Any:
    try:
        import polars  # noqa: PLC0415 - an optional extra
    except ImportError:
        raise ImportError("polars DataFrames need polars: pip install 'veilgate-client[polars]'") from None
    return polars


def frame(rows: list[dict[str, Any]]) -> Any:
    """A pandas DataFrame of flat rows."""
    return _pandas().DataFrame.from_records(rows)


def table_rows(rows: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Release rows flattened: the group keys, then any bin or quantile, then value, lower, upper."""
    flat = []
    for row in rows:
        out: dict[str, Any] = dict(row.get("group") or {})
        out |= {k: v for k, v in row.items() if k not in ("group", "value", "interval")}
        interval = row.get("interval") or [None, None]
        out |= {"value": row.get("value"), "lower": interval[0], "upper": interval[1]}
        flat.append(out)
    return flat


class _Table:
    """Something with `rows()`: adds the DataFrame conversions."""

    def rows(self) -> list[dict[str, Any]]:
        raise NotImplementedError

    def to_pandas(self) -> Any:
        return frame(self.rows())

    def to_polars(self) -> Any:
        return _polars().DataFrame(self.rows())


@dataclass
class Release(_Table):
    """One DP release: `result` as signed, and its `receipt` (checked). Rows are cells, in order."""

    result: dict[str, Any]
    receipt: Receipt

    @property
    def template(self) -> str:
        return str(self.result["template"])

    @property
    def group_by(self) -> list[str]:
        return list(self.result.get("parameters", {}).get("group_by") or [])

    @property
    def replayed(self) -> bool:
        """True when this is the stored release of an identical earlier query (charged nothing)."""
        return bool(self.result.get("replayed"))

    @property
    def charged(self) -> dict[str, str]:
        return dict(self.result.get("charged") or {})

    def rows(self) -> list[dict[str, Any]]:
        return table_rows(self.result.get("rows") or [])

    def plot(self, ax: Any = None, *, title: str | None = None) -> Any:
        """Values with their 95% intervals: a line over months, otherwise (grouped) bars."""
        return plot_release(self, ax, title=title)

    def __repr__(self) -> str:
        return f"Release({self.template!r}, rows={len(self.result.get('rows') or [])}, charged={self.charged})"


@dataclass
class Batch:
    """A batch release: one `Release` per query, all under one receipt (charged together)."""

    releases: list[Release]
    receipt: Receipt

    def __iter__(self) -> Any:
        return iter(self.releases)

    def __getitem__(self, index: int) -> Release:
        return self.releases[index]

    def __len__(self) -> int:
        return len(self.releases)


@dataclass
class Preview(_Table):
    """Cost and expected accuracy: `total` (epsilon, delta) and one row per query."""

    body: dict[str, Any]

    @property
    def total(self) -> dict[str, str]:
        return dict(self.body["total"])

    def rows(self) -> list[dict[str, Any]]:
        return [{"template": q["template"], "epsilon": q["epsilon"], "delta": q["delta"], "rows": q.get("rows"),
                 "interval_width": q.get("interval_width")} for q in self.body["queries"]]  # fmt: skip


LEVELS = ("grant", "organisation", "dataset_version")


@dataclass
class Budget(_Table):
    """Privacy budget per grant, dataset and level (grant, organisation, dataset version)."""

    body: dict[str, Any]

    def rows(self) -> list[dict[str, Any]]:
        out = []
        for entry in self.body.get("budgets", []):
            for level in LEVELS:
                amounts = entry["levels"].get(level)
                if amounts is None:
                    continue
                row = {"grant": entry["grant"], "dataset": entry["dataset"], "level": level}
                for part in ("granted", "spent", "reserved", "remaining"):
                    row[f"{part}_epsilon"] = float(amounts[part]["epsilon"])
                    row[f"{part}_delta"] = float(amounts[part]["delta"])
                out.append(row)
        return out

    def plot(self, ax: Any = None, *, title: str | None = "Privacy budget (epsilon)") -> Any:
        """Spent, reserved and left per dataset and level, as stacked horizontal bars."""
        return plot_budget(self, ax, title=title)


@dataclass
class Fit(_Table):
    """A model fitted under DP: `coefficients()` (linear regression) or `classes()` and
    `conditionals()` (naive Bayes), each value with its 95% interval; `receipt` checked."""

    result: dict[str, Any]
    receipt: Receipt

    @property
    def kind(self) -> str:
        return str(self.result["kind"])

    def rows(self) -> list[dict[str, Any]]:
        return self.coefficients() if self.kind == "linear_regression" else self.classes()

    def coefficients(self) -> list[dict[str, Any]]:
        return [{"name": c["name"], "value": c["value"], "std_error": c.get("std_error"), "lower": c["interval"][0],
                 "upper": c["interval"][1]} for c in self.result.get("coefficients", [])]  # fmt: skip

    def classes(self) -> list[dict[str, Any]]:
        return [{"class": c["class"], "count": c["count"], "lower": c["interval"][0], "upper": c["interval"][1],
                 "prior": c.get("prior")} for c in self.result.get("classes", [])]  # fmt: skip

    def conditionals(self) -> list[dict[str, Any]]:
        return [{"feature": feature, "class": c["class"], "value": c["value"], "count": c["count"],
                 "lower": c["interval"][0], "upper": c["interval"][1], "probability": c.get("probability")}
                for feature, cells in self.result.get("conditionals", {}).items() for c in cells]  # fmt: skip


@dataclass(frozen=True)
class RateLimitState:
    """The IETF HTTPAPI rate-limit fields of a response: per policy name, its quota `q` and window
    `w` (seconds), what is left `r` and seconds to reset `t`."""

    policies: dict[str, dict[str, int]] = field(default_factory=dict)

    @classmethod
    def parse(cls, response: httpx.Response) -> RateLimitState:
        merged: dict[str, dict[str, int]] = {}
        for header in ("RateLimit-Policy", "RateLimit"):
            for item in filter(None, (i.strip() for i in response.headers.get(header, "").split(","))):
                name, *params = (p.strip() for p in item.split(";"))
                values = dict(p.split("=", 1) for p in params if "=" in p)
                merged.setdefault(name.strip('"'), {}).update({k: int(v) for k, v in values.items() if v.isdigit()})
        return cls(merged)

    def remaining(self, policy: str) -> int | None:
        return self.policies.get(policy, {}).get("r")

    def resets_in(self, policy: str) -> int | None:
        return self.policies.get(policy, {}).get("t")


@dataclass
class Answers(_Table):
    """A verification or scoring answer: one entry per claim or key (`match`, `no_match`,
    `scored`, `not_scored`, `not_found` or `invalid` with the field), its checked `receipt`, the rate-limit state."""

    result: dict[str, Any]
    receipt: Receipt
    rate_limit: RateLimitState

    @property
    def answers(self) -> list[dict[str, Any]]:
        return list(self.result.get("answers", []))

    def __iter__(self) -> Any:
        return iter(self.answers)

    def __len__(self) -> int:
        return len(self.answers)

    @property
    def results(self) -> list[str]:
        return [str(a["result"]) for a in self.answers]

    def rows(self) -> list[dict[str, Any]]:
        out = []
        for answer in self.answers:
            row = {k: v for k, v in answer.items() if k not in ("fields", "error")}
            row |= {f"field.{k}": v for k, v in (answer.get("fields") or {}).items()}
            if answer.get("error"):
                row |= {"error_field": answer["error"].get("field"), "error": answer["error"].get("message")}
            out.append(row)
        return out
