"""Registration in bounded memory: the limit is applied, spilling gives the same version, and a
source that changes while it is read is refused."""

from __future__ import annotations

import os
from pathlib import Path

import duckdb
import pyarrow.parquet as pq
import pytest

from gateway import engine
from gateway.catalog import CatalogStore, load_entry
from gateway.errors import RegistrationError
from gateway.services import registration
from gateway.settings import Settings
from tests.conftest import Installation

DATASET = "social_insurance"


def _rows(path: Path) -> list[tuple[object, ...]]:
    con = duckdb.connect(str(path), read_only=True)
    try:
        return con.execute(f"SELECT * FROM {engine.TABLE}").fetchall()  # noqa: S608 - constant
    finally:
        con.close()


def test_a_version_built_while_spilling_equals_one_built_in_memory(
    session_installation: Installation, tmp_path: Path
) -> None:
    source = session_installation.source
    entry = load_entry(source / f"{DATASET}.yaml")
    roomy = engine.build_version(entry, source / f"{DATASET}.parquet", tmp_path / "a")
    spill = tmp_path / "spill"
    tight = engine.build_version(
        entry,
        source / f"{DATASET}.parquet",
        tmp_path / "b",
        limits=engine.BuildLimits(memory_limit="24MB", temp_directory=spill, threads=1),
    )
    assert (tight.version, tight.rows, tight.rows_dropped_by_contribution_bound) == (
        roomy.version,
        roomy.rows,
        roomy.rows_dropped_by_contribution_bound,
    )
    assert tight.rows_dropped_by_contribution_bound > 0  # the bound was exercised
    assert sorted(_rows(tight.path)) == sorted(_rows(roomy.path))  # the same rows kept
    assert spill.is_dir()


def test_the_memory_limit_is_applied(session_installation: Installation, tmp_path: Path) -> None:
    """A limit too small for anything: DuckDB must refuse, so the limit reached it."""
    source = session_installation.source
    entry = load_entry(source / f"{DATASET}.yaml")
    with pytest.raises(RegistrationError, match="the data engine refused the file"):
        engine.build_version(
            entry, source / f"{DATASET}.parquet", tmp_path / "data", limits=engine.BuildLimits(memory_limit="1KB")
        )
    assert not list((tmp_path / "data" / "domain" / DATASET).glob("*"))


def test_a_source_rewritten_during_registration_is_refused(session_installation: Installation, tmp_path: Path) -> None:
    """The version is the hash of the bytes read first; bytes that moved afterwards are refused."""
    data = tmp_path / "data.parquet"
    pq.write_table(pq.read_table(session_installation.source / f"{DATASET}.parquet"), data)
    entry = session_installation.source / f"{DATASET}.yaml"

    def rewrite(step: str) -> None:
        if step == "enforcing the contribution bound":
            table = pq.read_table(data)
            pq.write_table(table.slice(1), data)
            os.utime(data, ns=(1, 1))

    data_dir = tmp_path / "domain-data"
    with pytest.raises(RegistrationError, match="changed while it was registered"):
        registration.register(CatalogStore(data_dir), data_dir, entry, data, progress=rewrite)
    assert CatalogStore(data_dir).find(DATASET) is None
    assert not list((data_dir / "domain" / DATASET).glob("*"))


def test_a_source_rewritten_in_place_with_its_old_times_is_refused(
    session_installation: Installation, tmp_path: Path
) -> None:
    """A data holder can write other bytes over the file between the checks and the write, put
    the first bytes back and set the modification time back each time (same size, same inode,
    same mtime): the version would hold rows no check saw, under the name of bytes that passed.
    Any write moves the change time, which nobody can set back."""
    data = tmp_path / "data.parquet"
    pq.write_table(pq.read_table(session_installation.source / f"{DATASET}.parquet"), data)
    entry = session_installation.source / f"{DATASET}.yaml"
    original = data.read_bytes()
    before = data.stat()

    def rewrite_in_place(step: str) -> None:
        if step == "enforcing the contribution bound":
            with data.open("r+b") as handle:  # the same bytes again: only the times could tell
                handle.write(original)
            os.utime(data, ns=(before.st_atime_ns, before.st_mtime_ns))

    data_dir = tmp_path / "domain-data"
    with pytest.raises(RegistrationError, match="changed while it was registered"):
        registration.register(CatalogStore(data_dir), data_dir, entry, data, progress=rewrite_in_place)
    assert CatalogStore(data_dir).find(DATASET) is None


@pytest.mark.parametrize("name", ["export[12].parquet", "export*.parquet", "export?.parquet", "ex{a,b}.parquet"])
def test_a_source_whose_name_duckdb_reads_as_a_pattern_is_refused(
    session_installation: Installation, tmp_path: Path, name: str
) -> None:
    """DuckDB reads `export[12].parquet` as `export1.parquet` and `export2.parquet`: the version
    would hold files that were neither hashed nor watched for change."""
    table = pq.read_table(session_installation.source / f"{DATASET}.parquet")
    for other in ("export1.parquet", "export2.parquet", "exa.parquet", "exb.parquet", name):
        pq.write_table(table, tmp_path / other)
    entry = session_installation.source / f"{DATASET}.yaml"
    data_dir = tmp_path / "domain-data"
    with pytest.raises(RegistrationError, match=r"source: a path without \* \? \[ \] \{ \}"):
        registration.register(CatalogStore(data_dir), data_dir, entry, tmp_path / name)


def test_a_file_without_a_header_row_is_not_quoted_back(session_installation: Installation, tmp_path: Path) -> None:
    """Without a header row, a CSV file's first record becomes its column names: the refusal
    names only what could be a column of a catalogue, and counts the rest."""
    record = ["110101199003070015", "Zhang San [bold]", "91110000MA01ABCD2X"]
    data = tmp_path / "data.csv"
    data.write_text(",".join(record) + "\n" + ",".join(record) + "\n", encoding="utf-8")
    entry = session_installation.source / f"{DATASET}.yaml"
    data_dir = tmp_path / "domain-data"
    with pytest.raises(RegistrationError) as refused:
        registration.register(CatalogStore(data_dir), data_dir, entry, data)
    assert "3 other(s) that are not column names" in refused.value.detail
    assert not [value for value in record if value in refused.value.detail]


def test_settings_carry_the_limits(tmp_path: Path) -> None:
    settings = Settings(registration_memory_limit="512MB", registration_temp_directory=tmp_path)
    limits = registration.build_limits(settings)
    assert (limits.memory_limit, limits.temp_directory) == ("512MB", tmp_path)
    with pytest.raises(ValueError, match="registration_memory_limit"):
        Settings(registration_memory_limit="2GB; SET enable_external_access = true")
