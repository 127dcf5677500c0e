"""Approved aggregate templates, the plans queries under them compile to, and their releases.

Pure: no I/O, no OpenDP. `templates` holds what an administrator approved and its check,
`sensitivity` the noisy statistics each measure needs, `plan` the compiled query (every
refusal from public facts only, before any data is read) and `assemble` the post-processing
of noisy statistics into rows whose shape never depends on the data.
"""

from gateway.domain.aggregate import quantiles
from gateway.domain.aggregate.assemble import NoisyVector, assemble, assemble_selected
from gateway.domain.aggregate.plan import MECHANISMS, Filter, Plan, bin_labels, epsilon_text, jsonable, plan
from gateway.domain.aggregate.sensitivity import Statistic, statistics_for
from gateway.domain.aggregate.templates import (
    CONFIDENCE,
    MAX_CELLS,
    MAX_GROUP_BY,
    MEASURES_ON_A_COLUMN,
    MEASURES_WITH_BINS,
    AggregateTemplate,
    EpsilonRange,
    FilterRule,
    KeySelection,
    Measure,
    bin_count,
    categories_of,
    check_template,
)

__all__ = [
    "CONFIDENCE",
    "MAX_CELLS",
    "MAX_GROUP_BY",
    "MEASURES_ON_A_COLUMN",
    "MEASURES_WITH_BINS",
    "MECHANISMS",
    "AggregateTemplate",
    "EpsilonRange",
    "Filter",
    "FilterRule",
    "KeySelection",
    "Measure",
    "NoisyVector",
    "Plan",
    "Statistic",
    "assemble",
    "assemble_selected",
    "bin_count",
    "bin_labels",
    "categories_of",
    "check_template",
    "epsilon_text",
    "jsonable",
    "plan",
    "quantiles",
    "statistics_for",
]
