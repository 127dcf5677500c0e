"""Serving connections are read-only and sealed; a new version replaces the old under load."""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from gateway import engine
from gateway.catalog import CatalogStore
from gateway.errors import InternalError, NotFound
from gateway.services import registration
from tests.conftest import Installation


@pytest.fixture
def served(session_installation: Installation) -> Iterator[tuple[engine.Domain, str]]:
    record = CatalogStore(session_installation.settings.data_path).get("enterprise_registry")
    domain = engine.Domain(session_installation.settings.data_path)
    yield domain, record.version
    domain.close()


@pytest.mark.parametrize(
    "sql",
    [
        "SELECT * FROM read_csv('/etc/passwd')",
        "COPY records TO '/tmp/veilgate-exfiltrated.csv'",
        "ATTACH '/tmp/veilgate-other.duckdb' AS other",
        "SET enable_external_access = true",
        "INSTALL httpfs",
        "CREATE TABLE x AS SELECT 1",
        "DELETE FROM records",
    ],
)
def test_serving_connection_refuses_escapes(served: tuple[engine.Domain, str], sql: str) -> None:
    domain, version = served
    with domain.snapshot("enterprise_registry", version) as snap, pytest.raises(Exception) as caught:  # noqa: PT011
        snap._cursor.execute(sql)
    assert type(caught.value).__module__.startswith(("duckdb", "_duckdb"))
    assert not Path("/tmp/veilgate-exfiltrated.csv").exists()


def test_lookup_binds_the_key_and_quotes_only_catalogue_names(served: tuple[engine.Domain, str]) -> None:
    domain, version = served
    with domain.snapshot("enterprise_registry", version) as snap:
        assert snap.lookup("credit_code", "' OR 1=1 --", ["status"]) == []
        with pytest.raises(InternalError):
            snap.lookup('credit_code" OR 1=1 --', "x", ["status"])
        with pytest.raises(InternalError):
            snap.lookup("credit_code", "x", ["status, name"])


def test_unknown_version_is_not_found(served: tuple[engine.Domain, str]) -> None:
    domain, _ = served
    with pytest.raises(NotFound), domain.snapshot("enterprise_registry", "0" * 32):
        pass


def test_version_change_under_load_is_atomic(installation: Installation, tmp_path: Path) -> None:
    """Readers resolve the current version per request while a new one is registered:
    every read succeeds and sees one whole version, old or new, never a mix or an error."""
    data_dir = installation.settings.data_path
    catalog = CatalogStore(data_dir)
    old = catalog.get("tax_compliance")
    table = pq.read_table(installation.source / "tax_compliance.parquet")
    changed = tmp_path / "changed.parquet"
    pq.write_table(table.slice(0, table.num_rows // 2), changed)
    domain = engine.Domain(data_dir)
    seen: dict[str, set[int]] = {}
    errors: list[BaseException] = []
    stop = threading.Event()

    def reader() -> None:
        reader_catalog = CatalogStore(data_dir)
        while not stop.is_set():
            try:
                record = reader_catalog.get("tax_compliance")
                with domain.snapshot("tax_compliance", record.version) as snap:
                    seen.setdefault(record.version, set()).add(snap.count_rows())
            except BaseException as exc:  # collected and asserted below
                errors.append(exc)

    threads = [threading.Thread(target=reader) for _ in range(4)]
    for t in threads:
        t.start()
    outcome = registration.register(catalog, data_dir, installation.source / "tax_compliance.yaml", changed)
    for _ in range(200):  # keep reading a while after the switch
        if outcome.record.version in seen and len(seen[outcome.record.version]) >= 1:
            break
        threading.Event().wait(0.01)
    stop.set()
    for t in threads:
        t.join()
    domain.close()
    assert errors == []
    assert seen[old.version] == {old.rows}
    assert seen[outcome.record.version] == {table.num_rows // 2}


@pytest.mark.parametrize(
    ("master", "cores"),
    [("local", 1), ("local[3]", 3), ("local[2,4]", 2), ("local[0]", None), ("spark://h:7077", None), ("yarn", None)],
)
def test_shuffle_partitions_are_sized_for_local_masters_only(master: str, cores: int | None) -> None:
    """Local masters get a few shuffle partitions per core; a cluster keeps Spark's own setting."""
    from gateway.engine.spark.session import local_cores

    assert local_cores(master) == cores


def test_every_core_counts_for_local_star() -> None:
    from gateway.engine.spark.session import local_cores

    assert local_cores("local[*]") == (os.cpu_count() or 1)
