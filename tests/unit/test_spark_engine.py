"""The Spark engine computes the exact pre-noise statistics DuckDB computes, on the same data.

Every aggregate template of the shipped policy bundle is compiled into plans (no parameters,
every filter, every group-by, and a coarser granularity so rounding and non-grid bins are
exercised) and each plan runs on both engines; the values must be equal, bounded
contributions included. The measures covered are read from the plans, and every measure the
domain knows must be among them: a new measure without a template here fails this test.
One Spark session (local[2]) serves the whole module.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import yaml

from gateway.catalog import CatalogStore, load_entry
from gateway.domain.aggregate import MAX_GROUP_BY, AggregateTemplate, Measure, Plan, plan
from gateway.domain.catalog import CatalogEntry
from gateway.engine import BuildLimits, Domain, build_version, marker_path
from gateway.engine.spark.session import missing_requirement
from gateway.errors import DependencyError, RegistrationError
from gateway.policy import load_bundle
from gateway.services import registration
from tests.conftest import REPO, Installation

REASON = missing_requirement()
pytestmark = pytest.mark.skipif(REASON is not None, reason=str(REASON))
MASTER = "local[2]"


@pytest.fixture(scope="module")
def spark() -> Iterator[Any]:
    from pyspark.sql import SparkSession

    session = (
        SparkSession.builder.master(MASTER)
        .config("spark.sql.shuffle.partitions", "4")
        .config("spark.default.parallelism", "2")
        .config("spark.ui.enabled", "false")
        .getOrCreate()
    )
    yield session
    session.stop()


def _spark_entry(source: Path, dataset: str, tmp_path: Path) -> Path:
    raw = yaml.safe_load((source / f"{dataset}.yaml").read_text())
    raw["engine"] = "spark"
    path = tmp_path / f"{dataset}.yaml"
    path.write_text(yaml.safe_dump(raw, allow_unicode=True))
    return path


@pytest.fixture(scope="module")
def engines(
    spark: Any, session_installation: Installation, tmp_path_factory: pytest.TempPathFactory
) -> dict[str, tuple[CatalogEntry, str, str]]:
    """Per dataset of the bundle's templates: (entry, DuckDB version, Spark version), the Spark
    versions registered from the same source files into a data directory of their own."""
    tmp = tmp_path_factory.mktemp("spark")
    bundle = load_bundle(REPO / "policies")
    out = {}
    store = CatalogStore(session_installation.settings.data_path)
    for dataset in sorted({t.dataset for t in bundle.aggregate_templates.values()}):
        duck = store.get(dataset)
        entry = _spark_entry(session_installation.source, dataset, tmp)
        outcome = registration.register(
            CatalogStore(tmp / "data"),
            tmp / "data",
            entry,
            str(session_installation.source / f"{dataset}.parquet"),
            limits=BuildLimits(spark_master=MASTER),
        )
        assert outcome.record.entry.engine == "spark"
        assert outcome.rows == duck.rows
        assert outcome.rows_dropped_by_contribution_bound == duck.rows_dropped_by_contribution_bound
        out[dataset] = (duck.entry, duck.version, outcome.record.version)
    return out


def _variants(template: AggregateTemplate, entry: CatalogEntry, *, all_shapes: bool) -> Iterator[dict[str, Any]]:
    """No parameters; every group-by column at once; every filter with one group-by column."""
    groups = list(template.group_by)[:MAX_GROUP_BY]
    if all_shapes:
        yield {}
    if groups:
        yield {"group_by": groups}
    filters: dict[str, Any] = {}
    for column, rule in template.filters.items():
        if rule.range is not None:
            low, high = rule.range
            filters[column] = {"from": str(low), "to": str(high) if not isinstance(high, Decimal) else str(high / 2)}
        else:
            allowed = rule.values or entry.column(column).categories or (True, False)
            filters[column] = list(allowed[: max(1, len(allowed) // 2)])
    if filters and all_shapes:
        yield {"filters": filters, "group_by": groups[:1]}


def _plans(engines: dict[str, tuple[CatalogEntry, str, str]]) -> Iterator[tuple[Plan, str, str]]:
    bundle = load_bundle(REPO / "policies")
    for name, template in sorted(bundle.aggregate_templates.items()):
        entry, duck_version, spark_version = engines[template.dataset]
        shapes = [template]
        if template.column is not None:  # rounding to a coarser unit; bins then off the grid
            shapes.append(template.model_copy(update={"granularity": Decimal(7)}))
        for shape in shapes:
            for parameters in _variants(shape, entry, all_shapes=shape is template):
                yield plan(name, shape, entry, duck_version, parameters, epsilon=None), duck_version, spark_version


def _lists(exact: Mapping[str, Sequence[int]]) -> dict[str, list[int]]:
    """DuckDB places a histogram's or quantile's bins in a numpy vector, Spark in a list."""
    return {name: [int(v) for v in values] for name, values in exact.items()}


def test_exact_values_equal_duckdb_for_every_template_and_measure(
    engines: dict[str, tuple[CatalogEntry, str, str]], session_installation: Installation, tmp_path_factory: Any
) -> None:
    duck_domain = Domain(session_installation.settings.data_path)
    spark_dir = next(iter(tmp_path_factory.getbasetemp().glob("spark*"))) / "data"
    spark_domain = Domain(spark_dir, spark_master=MASTER)
    measures: set[Measure] = set()
    compared = 0
    try:
        for compiled, duck_version, spark_version in _plans(engines):
            with duck_domain.snapshot(compiled.dataset, duck_version) as duck:
                expected = duck.grouped_counts(compiled) if compiled.selects_keys else _lists(duck.aggregate(compiled))
            with spark_domain.snapshot(compiled.dataset, spark_version) as other:
                assert type(other).__name__ == "SparkSnapshot"
                found = other.grouped_counts(compiled) if compiled.selects_keys else other.aggregate(compiled)
            assert found == expected, (compiled.template_name, compiled.parameters, compiled.template.granularity)
            assert any(expected.values()) if compiled.selects_keys else any(any(v) for v in expected.values())
            measures.add(compiled.template.measure)
            compared += 1
    finally:
        duck_domain.close()
        spark_domain.close()
    assert measures == set(Measure), f"no template covers {set(Measure) - measures}"
    assert compared > 15


def test_the_bound_keeps_the_same_rows(
    engines: dict[str, tuple[CatalogEntry, str, str]],
    session_installation: Installation,
    spark: Any,
    tmp_path_factory: Any,
) -> None:
    spark_dir = next(iter(tmp_path_factory.getbasetemp().glob("spark*"))) / "data"
    for dataset, (entry, duck_version, spark_version) in engines.items():
        exported = tmp_path_factory.mktemp("export") / f"{dataset}.parquet"
        with Domain(session_installation.settings.data_path).snapshot(dataset, duck_version) as snap:
            snap.export(exported, [c.name for c in entry.columns])  # through the serving connection
        import pyarrow.parquet as pq

        expected = sorted((tuple(r.values()) for r in pq.read_table(exported).to_pylist()), key=repr)
        import json

        location = json.loads(marker_path(spark_dir, dataset, spark_version).read_text())["location"]
        found = sorted(
            (tuple(r) for r in spark.read.parquet(location).select(*[c.name for c in entry.columns]).collect()),
            key=repr,
        )
        assert found == expected


def test_a_spark_version_refuses_what_it_does_not_serve(
    engines: dict[str, tuple[CatalogEntry, str, str]], tmp_path_factory: Any
) -> None:
    spark_dir = next(iter(tmp_path_factory.getbasetemp().glob("spark*"))) / "data"
    dataset, (entry, _duck, version) = next(iter(engines.items()))
    domain = Domain(spark_dir, spark_master=MASTER)
    with domain.snapshot(dataset, version) as snap, pytest.raises(DependencyError, match="aggregates only"):
        snap.lookup(entry.privacy_unit.column, "x", [entry.columns[0].name])
    with pytest.raises(DependencyError, match="aggregates only"):
        domain.find(dataset, version, entry.privacy_unit.column, "x", [entry.columns[0].name])


def test_spark_registration_refuses_what_duckdb_refuses(
    spark: Any, session_installation: Installation, tmp_path: Path
) -> None:
    """The same checks, the same messages: a value outside its bounds is refused by both."""
    source = session_installation.source
    bad = _shifted_wages(source, tmp_path / "bad.parquet")
    entry = load_entry(_spark_entry(source, "social_insurance", tmp_path))
    messages = []
    for shaped in (entry, entry.model_copy(update={"engine": "duckdb"})):
        with pytest.raises(RegistrationError) as refused:
            build_version(shaped, bad, tmp_path / "data", limits=BuildLimits(spark_master=MASTER))
        messages.append(str(refused.value))
    assert messages[0] == messages[1]
    assert "wage_base: values outside the bounds" in messages[0]
    assert not list((tmp_path / "data" / "domain").glob("social_insurance/*"))


def _shifted_wages(source: Path, target: Path) -> Path:
    """The demo's social-insurance rows with every wage far outside its declared bounds."""
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    table = pq.read_table(source / "social_insurance.parquet")
    wage = table.column("wage_base")
    table = table.set_column(table.schema.get_field_index("wage_base"), "wage_base", pc.add(wage, 10_000_000))
    pq.write_table(table, target)
    return target


def test_rows_swapped_in_between_the_checks_and_the_write_are_refused(
    spark: Any, session_installation: Installation, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Spark reads the source once for the checks and again for the write. A source swapped
    between the two (and back before its fingerprint is taken again) is what the write sees;
    here the write's read is handed the swapped rows directly. The rows written are checked."""
    from gateway.engine.spark import build as spark_build

    source = session_installation.source
    bad = _shifted_wages(source, tmp_path / "swapped.parquet")
    entry = load_entry(_spark_entry(source, "social_insurance", tmp_path))
    bounded = spark_build._bounded

    def write_reads_the_swapped_source(frame: Any, shaped: CatalogEntry) -> Any:
        return bounded(frame.sparkSession.read.parquet(str(bad)), shaped)

    monkeypatch.setattr(spark_build, "_bounded", write_reads_the_swapped_source)
    data = tmp_path / "data"
    with pytest.raises(RegistrationError, match="wage_base: values outside the bounds"):
        build_version(entry, source / "social_insurance.parquet", data, limits=BuildLimits(spark_master=MASTER))
    assert not list((data / "domain").glob("social_insurance/*.spark.json"))


def test_rows_written_beyond_the_bound_are_refused(
    spark: Any, session_installation: Installation, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Whatever the write did, no unit keeps more than max_rows rows in a served version."""
    from gateway.engine.spark import build as spark_build

    source = session_installation.source
    entry = load_entry(_spark_entry(source, "social_insurance", tmp_path))
    tight = entry.model_copy(update={"privacy_unit": entry.privacy_unit.model_copy(update={"max_rows": 1})})
    typed = spark_build._bounded
    monkeypatch.setattr(spark_build, "_bounded", lambda frame, shaped: typed(frame, entry))  # the declared bound
    data = tmp_path / "data"
    with pytest.raises(RegistrationError, match="exceed max_rows"):
        build_version(tight, source / "social_insurance.parquet", data, limits=BuildLimits(spark_master=MASTER))
    assert not list((data / "domain").glob("social_insurance/*.spark.json"))
