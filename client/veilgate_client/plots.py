"""Plots people would rather look at than read: releases with their 95% intervals, budgets.

matplotlib is an optional extra (`pip install 'veilgate-client[plot]'`); it is imported when a
plot is drawn. Each function draws on `ax` (a new figure's axes if None) and returns the axes.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from veilgate_client.results import Budget, Release

_TIME_COLUMNS = ("month", "year", "tax_year", "date", "quarter")


def _axes(ax: Any) -> Any:
    if ax is not None:
        return ax
    try:
        import matplotlib.pyplot as plt  # noqa: PLC0415 - an optional extra
    except ImportError:
        raise ImportError("plots need matplotlib: pip install 'veilgate-client[plot]'") from None
    _figure, new = plt.subplots(figsize=(8, 4.5), layout="constrained")
    return new


def _label(row: dict[str, Any], columns: list[str]) -> str:
    return " / ".join(str(row[c]) for c in columns) or "all"


def plot_release(release: Release, ax: Any = None, *, title: str | None = None) -> Any:
    """A line with a 95% band over a time column; bars with 95% error bars otherwise, grouped
    by the second group-by column when there are two."""
    ax = _axes(ax)
    rows = [r for r in release.rows() if r["value"] is not None]
    groups = release.group_by
    extra: list[str] = [k for k in ("bin", "quantile", "lower_bound") if rows and k in rows[0]]
    unit = release.result.get("column") or release.result.get("measure", "value")
    if groups and groups[0] in _TIME_COLUMNS and len(groups) == 1:
        xs = [str(r[groups[0]]) for r in rows]
        ax.plot(xs, [r["value"] for r in rows], marker="o", label=release.template)
        ax.fill_between(xs, [r["lower"] for r in rows], [r["upper"] for r in rows], alpha=0.25, label="95% interval")
        ax.tick_params(axis="x", labelrotation=60)
        ax.legend()
    else:
        outer = groups[:1] + extra if len(groups) < 2 else groups[:1]
        inner = groups[1:2] if len(groups) >= 2 else []
        categories = list(dict.fromkeys(_label(r, outer) for r in rows))
        series = list(dict.fromkeys(_label(r, inner) for r in rows)) if inner else [""]
        width = 0.8 / len(series)
        for i, name in enumerate(series):
            mine = [r for r in rows if not inner or _label(r, inner) == name]
            positions = [categories.index(_label(r, outer)) + (i - (len(series) - 1) / 2) * width for r in mine]
            values = [r["value"] for r in mine]
            errors = [[v - r["lower"] for v, r in zip(values, mine, strict=True)],
                      [r["upper"] - v for v, r in zip(values, mine, strict=True)]]  # fmt: skip
            ax.bar(positions, values, width=width, yerr=errors, capsize=2, label=name or None)
        ax.set_xticks(range(len(categories)), categories, rotation=60 if len(categories) > 8 else 0)
        if inner:
            ax.legend(title=inner[0])
        if outer:
            ax.set_xlabel(" / ".join(outer))
    ax.set_ylabel(f"{release.result.get('measure', '')} {unit if unit != release.result.get('measure') else ''}")
    ax.set_title(title or f"{release.template} (95% intervals, epsilon {release.result.get('epsilon')})")
    return ax


def plot_budget(budget: Budget, ax: Any = None, *, title: str | None = None) -> Any:
    """Spent, reserved and remaining epsilon per dataset and level, as stacked bars."""
    ax = _axes(ax)
    rows = budget.rows()
    labels = [f"{r['dataset']}\n{r['level']}" for r in rows]
    left = [0.0] * len(rows)
    for part, colour in (("spent", "tab:red"), ("reserved", "tab:orange"), ("remaining", "tab:green")):
        values = [r[f"{part}_epsilon"] for r in rows]
        ax.barh(labels, values, left=left, color=colour, label=part)
        left = [a + b for a, b in zip(left, values, strict=True)]
    ax.invert_yaxis()
    ax.set_xlabel("epsilon")
    ax.legend()
    if title:
        ax.set_title(title)
    return ax
