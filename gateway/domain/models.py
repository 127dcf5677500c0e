"""Approved models: scorecards run in the domain on one entity, and DP model fitting templates.

Pure: no I/O. A scorecard is declarative (features defined from in-domain columns of one
entity, bins and points, grade bands), so a reviewer reads exactly what runs. `score` turns an
entity's feature values into points; features never leave. Fitting templates name bounded
columns; the fitting itself (private sufficient statistics, noisy counts) lives in the service
and the privacy leaf.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import date
from decimal import Decimal
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from gateway.domain.aggregate import EpsilonRange
from gateway.domain.catalog import NUMERIC_TYPES, CatalogEntry, ColumnType, Identifier
from gateway.domain.limits import VerificationLimits
from gateway.domain.names import Name


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class ModelCard(_Frozen):
    """The public part of a model: what it is for, what goes in and out, who answers for it."""

    purpose: str = Field(min_length=1)
    inputs: str = Field(min_length=1)
    outputs: str = Field(min_length=1)
    owner: str = Field(min_length=1)
    approved_on: date
    limitations: str = ""


class Feature(_Frozen):
    dataset: Identifier
    column: Identifier
    key: Identifier
    """The dataset's lookup key that holds the entity's key."""
    transform: Literal["value", "years_since", "sum", "max", "count"] = "value"
    """`value`: the newest row's value; `years_since`: whole years from a date to the scoring
    day; `sum`, `max`, `count`: over the newest `last` rows (by `order_by`)."""
    order_by: Identifier | None = None
    last: int = Field(1, ge=1, le=100)
    description: str = ""


class Bin(_Frozen):
    """Points for a feature value: the first bin that matches wins."""

    below: Decimal | None = None
    equals: str | bool | None = None
    points: int = Field(ge=-1000, le=1000)

    @model_validator(mode="after")
    def _one(self) -> Bin:
        if self.below is not None and self.equals is not None:
            raise ValueError("a bin has `below` or `equals`, not both (neither: every other value)")
        return self


class Grade(_Frozen):
    grade: str = Field(min_length=1, max_length=16)
    min_score: int | None = None
    """The lowest score of this band; the last band has none (every lower score)."""


class Scorer(_Frozen):
    """What every model that scores one entity in the domain has: a scorecard or an ONNX model."""

    title: str = Field(min_length=1)
    description: str = ""
    card: ModelCard
    key: Identifier
    """The name of the entity key a caller supplies (for example `credit_code`)."""
    key_format: Literal["uscc", "resident_id"]
    entity_dataset: Identifier
    """The register whose record makes an entity known; unknown keys are answered `not_found`."""
    features: dict[Name, Feature] = Field(min_length=1, max_length=32)
    grades: tuple[Grade, ...] = Field(min_length=1)
    output: Literal["grade", "score", "both"] = "grade"
    max_batch: int = Field(20, ge=1, le=1000)
    limits: VerificationLimits = Field(default_factory=VerificationLimits)
    """Rates, distinct entities per day, and how often one entity may be scored in a window."""
    price_class: Name | None = None

    @model_validator(mode="after")
    def _bands_and_features(self) -> Scorer:
        *banded, last = self.grades
        if last.min_score is not None or any(g.min_score is None for g in banded):
            raise ValueError("every grade band but the last has `min_score`; the last has none")
        scores = [g.min_score for g in banded]
        if scores != sorted(scores, reverse=True) or len(set(scores)) != len(scores):  # type: ignore[type-var]
            raise ValueError("grade bands go from the highest `min_score` down")
        for name, feature in self.features.items():
            if feature.transform in ("sum", "max", "count", "value") and feature.last > 1 and feature.order_by is None:
                raise ValueError(f"feature {name}: `last` needs `order_by`")
        return self


class ScoringModel(Scorer):
    """A declarative scorecard: bins and points per feature, read by a reviewer as it runs."""

    kind: Literal["scorecard"] = "scorecard"
    base_points: int = Field(ge=-10_000, le=10_000)
    points: dict[Name, tuple[Bin, ...]]
    missing_points: dict[Name, int] = {}
    """Points for a feature with no value (no row); 0 if not given."""

    @model_validator(mode="after")
    def _shape(self) -> ScoringModel:
        if set(self.points) != set(self.features):
            raise ValueError("`points` must give bins for exactly the `features`")
        if not set(self.missing_points) <= set(self.features):
            raise ValueError("`missing_points` names a feature that is not declared")
        return self


class OnnxModel(Scorer):
    """An approved ONNX model run in the domain: the features, as one row of numbers in their
    declared order, go in; one number comes out, and only the score or grade made from it leaves.

    The file is named relative to the policy directory and pinned by its SHA-256: a file that
    differs from what was approved is never run."""

    kind: Literal["onnx"]
    file: str = Field(pattern=r"^[A-Za-z0-9_][A-Za-z0-9_./-]*\.onnx$", max_length=200)
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    input_name: str = Field("features", min_length=1, max_length=128)
    """The model's input: a float tensor of shape [rows, features]."""
    output_name: str | None = Field(None, min_length=1, max_length=128)
    """The output holding one number per row (a probability, say); None: the first output."""
    score_scale: Decimal = Field(Decimal(1000), gt=0, le=Decimal(1_000_000))
    """The released score is the output times this, rounded to an integer (the grade bands
    compare that integer)."""
    missing_values: dict[Name, float] = {}
    """The input for a feature with no value (no row); 0 if not given."""

    @model_validator(mode="after")
    def _missing_known(self) -> OnnxModel:
        if ".." in self.file.split("/"):
            raise ValueError("`file` is a path inside the policy directory, without `..`")
        if not set(self.missing_values) <= set(self.features):
            raise ValueError("`missing_values` names a feature that is not declared")
        return self


class _FitTemplate(_Frozen):
    title: str = Field(min_length=1)
    description: str = ""
    card: ModelCard
    dataset: Identifier
    features: tuple[Identifier, ...] = Field(min_length=1, max_length=8)
    target: Identifier
    epsilon: EpsilonRange
    price_class: Name | None = None


class LinearRegressionFit(_FitTemplate):
    """Least squares on bounded columns, from private sufficient statistics."""

    kind: Literal["linear_regression"]


class NaiveBayesFit(_FitTemplate):
    """A DP histogram-based classifier: naive Bayes from noisy counts over public categories."""

    kind: Literal["naive_bayes"]


Model = Annotated[ScoringModel | OnnxModel | LinearRegressionFit | NaiveBayesFit, Field(discriminator="kind")]
FIT_KINDS = ("linear_regression", "naive_bayes")


def check_model(
    model: Scorer | LinearRegressionFit | NaiveBayesFit, entries: Mapping[str, CatalogEntry]
) -> list[tuple[tuple[str | int, ...], str]]:
    """(path, message) for everything wrong with a model given the catalogue."""
    if isinstance(model, Scorer):
        return _check_scorecard(model, entries)
    issues: list[tuple[tuple[str | int, ...], str]] = []
    entry = entries.get(model.dataset)
    if entry is None:
        return [(("dataset",), f"dataset {model.dataset} is not registered")]
    columns = {c.name: c for c in entry.columns}
    for path, name in [*((("features", i), f) for i, f in enumerate(model.features)), (("target",), model.target)]:
        column = columns.get(name)
        if column is None:
            issues.append((path, f"{model.dataset} has no column {name}"))
        elif isinstance(model, LinearRegressionFit) and (column.type not in NUMERIC_TYPES or column.bounds is None):
            issues.append((path, f"{name} needs a numeric type and catalogue bounds"))
        elif isinstance(model, NaiveBayesFit) and column.categories is None and column.type is not ColumnType.BOOLEAN:
            issues.append((path, f"{name} needs a public category list (or to be boolean)"))
    return issues


def _check_scorecard(model: Scorer, entries: Mapping[str, CatalogEntry]) -> list[tuple[tuple[str | int, ...], str]]:
    issues: list[tuple[tuple[str | int, ...], str]] = []
    if model.entity_dataset not in {f.dataset for f in model.features.values()}:
        issues.append((("entity_dataset",), "the entity dataset must be one that a feature reads"))
    for name, feature in model.features.items():
        where: tuple[str | int, ...] = ("features", name)
        entry = entries.get(feature.dataset)
        if entry is None:
            issues.append(((*where, "dataset"), f"dataset {feature.dataset} is not registered"))
            continue
        columns = {c.name: c for c in entry.columns}
        for field, column_name in (("column", feature.column), ("key", feature.key), ("order_by", feature.order_by)):
            if column_name is not None and column_name not in columns:
                issues.append(((*where, field), f"{feature.dataset} has no column {column_name}"))
        if feature.key not in entry.lookup_keys:
            issues.append(((*where, "key"), f"{feature.key} is not a lookup key of {feature.dataset}"))
        elif columns[feature.key].key_format != model.key_format:
            issues.append(((*where, "key"), f"{feature.key} does not hold {model.key_format} keys"))
        column = columns.get(feature.column)
        if column is None:
            continue
        if feature.transform == "years_since" and column.type is not ColumnType.DATE:
            issues.append(((*where, "transform"), "years_since needs a date column"))
        if feature.transform in ("sum", "max") and column.type not in NUMERIC_TYPES:
            issues.append(((*where, "transform"), f"{feature.transform} needs a numeric column"))
        if entry.privacy_unit.max_rows > 1 and feature.order_by is None and feature.transform != "count":
            issues.append(((*where, "order_by"), f"{feature.dataset} has several rows per key: say which come first"))
        numeric = column.type in NUMERIC_TYPES or column.type is ColumnType.BOOLEAN
        if isinstance(model, OnnxModel) and feature.transform in ("value", "sum", "max") and not numeric:
            issues.append(((*where, "column"), "an ONNX model takes numbers: a numeric or boolean column"))
        is_number = feature.transform != "value" or column.type in NUMERIC_TYPES
        if (
            isinstance(model, ScoringModel)
            and not is_number
            and any(b.below is not None for b in model.points.get(name, ()))
        ):
            issues.append((("points", name), f"a `below` bin compares numbers: {name} is a {column.type.value}"))
    return issues


def feature_value(feature: Feature, rows: Sequence[tuple[Any, ...]], today: date) -> Any:
    """The feature from the entity's rows, each (column value, order_by value or None)."""
    # Newest first; a NULL `order_by` sorts after every value (None does not compare), as in verification.
    ordered = (
        sorted(rows, key=lambda r: (r[1] is not None, r[1]), reverse=True)
        if feature.order_by is not None
        else list(rows)
    )
    newest = ordered[: feature.last]
    values = [r[0] for r in newest if r[0] is not None]
    if feature.transform == "count":
        return len(newest)
    if not values:
        return None
    if feature.transform == "sum":
        return sum(values)
    if feature.transform == "max":
        return max(values)
    if feature.transform == "years_since":
        born: date = values[0]
        return today.year - born.year - ((today.month, today.day) < (born.month, born.day))
    return values[0]


def points_for(bins: Sequence[Bin], value: Any) -> int | None:
    for candidate in bins:
        if candidate.below is not None:
            if value is not None and not isinstance(value, (bool, str)) and Decimal(str(value)) < candidate.below:
                return candidate.points
        elif candidate.equals is not None:
            if value == candidate.equals and type(value) is type(candidate.equals):
                return candidate.points
        else:
            return candidate.points
    return None


def score(model: ScoringModel, features: Mapping[str, Any]) -> tuple[int, str]:
    """Points and grade band from feature values (None: no value)."""
    total = model.base_points
    for name, value in features.items():
        if value is None:
            total += model.missing_points.get(name, 0)
            continue
        total += points_for(model.points[name], value) or 0
    return total, grade_for(model, total)


def grade_for(model: Scorer, total: int) -> str:
    for band in model.grades:
        if band.min_score is None or total >= band.min_score:
            return band.grade
    return model.grades[-1].grade  # unreachable: the last band has no minimum


def onnx_row(model: OnnxModel, features: Mapping[str, Any]) -> list[float]:
    """The model's input row: each feature as a number, in declared order (None: its missing value)."""
    row = []
    for name in model.features:
        value = features.get(name)
        row.append(model.missing_values.get(name, 0.0) if value is None else float(value))
    return row


def onnx_score(model: OnnxModel, output: float) -> tuple[int, str]:
    """Score and grade band from the model's output for one entity."""
    total = int((Decimal(repr(output)) * model.score_scale).to_integral_value())
    return total, grade_for(model, total)
