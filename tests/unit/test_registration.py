"""Registration: every check refuses bad data and leaves nothing behind; the bound holds exactly."""

from __future__ import annotations

import itertools
import math
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest
import yaml

from gateway import engine
from gateway.catalog import CatalogStore, load_entry
from gateway.domain.catalog import ChangeKind
from gateway.engine.snapshot import Snapshot, VersionFacts
from gateway.errors import Conflict, InternalError, RegistrationError
from gateway.services import registration
from tests.conftest import CANARY, Installation


@pytest.fixture
def source(session_installation: Installation) -> Path:
    return session_installation.source


def _entry(source: Path, dataset: str, tmp_path: Path, **changes: Any) -> Path:
    raw = yaml.safe_load((source / f"{dataset}.yaml").read_text())
    raw.update(changes)
    path = tmp_path / f"{dataset}-{len(list(tmp_path.iterdir()))}.yaml"
    path.write_text(yaml.safe_dump(raw, allow_unicode=True))
    return path


def _write(table: pa.Table, tmp_path: Path, name: str = "data.parquet") -> Path:
    path = tmp_path / name
    pq.write_table(table, path)
    return path


def _register(data_dir: Path, entry: Path, data: Path, **kw: Any) -> registration.RegistrationOutcome:
    return registration.register(CatalogStore(data_dir), data_dir, entry, data, **kw)


def _nothing_written(data_dir: Path, dataset: str) -> bool:
    versions = list((data_dir / "domain" / dataset).glob("*")) if (data_dir / "domain" / dataset).exists() else []
    return CatalogStore(data_dir).find(dataset) is None and versions == []


def test_registers_and_reports(source: Path, tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    outcome = _register(data_dir, source / "enterprise_registry.yaml", source / "enterprise_registry.parquet")
    record = CatalogStore(data_dir).get("enterprise_registry")
    assert record.version == outcome.record.version
    assert record.history[0].kind is ChangeKind.REGISTRATION
    assert outcome.rows == pq.read_metadata(source / "enterprise_registry.parquet").num_rows
    assert engine.version_path(data_dir, "enterprise_registry", record.version).is_file()


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda t: t.drop_columns(["status"]), "missing column(s): status"),
        (
            lambda t: t.append_column("secret_note", pa.array(["x"] * t.num_rows)),
            "not in the catalogue entry: secret_note",
        ),
        (
            lambda t: t.set_column(3, "registered_capital", pc.cast(t["registered_capital"], pa.string())),
            "registered_capital: type VARCHAR does not match integer",
        ),
        (
            lambda t: t.set_column(3, "registered_capital", pa.array([-1] + [5] * (t.num_rows - 1))),
            "registered_capital: values outside the bounds",
        ),
        (
            lambda t: t.set_column(7, "status", pa.array(["dormant"] + ["active"] * (t.num_rows - 1))),
            "status: values outside the public category list",
        ),
        (
            lambda t: t.set_column(7, "status", pa.array([None] + ["active"] * (t.num_rows - 1), pa.string())),
            "status: missing values in a non-nullable column",
        ),
        (
            lambda t: t.set_column(
                0, "credit_code", pa.array(["91350100M000100Y44", *t["credit_code"].to_pylist()[1:]])
            ),
            "credit_code: 1 distinct value(s) are not valid uscc keys",
        ),
    ],
    ids=["missing-column", "extra-column", "wrong-type", "out-of-bounds", "unknown-category", "null", "bad-key"],
)
def test_bad_files_are_refused_and_nothing_is_written(source: Path, tmp_path: Path, mutate: Any, message: str) -> None:
    table = pq.read_table(source / "enterprise_registry.parquet")
    data = _write(mutate(table), tmp_path)
    data_dir = tmp_path / "data"
    with pytest.raises(RegistrationError) as caught:
        _register(data_dir, source / "enterprise_registry.yaml", data)
    assert message in caught.value.detail
    assert CANARY not in caught.value.detail
    assert _nothing_written(data_dir, "enterprise_registry")


def test_nan_and_infinity_are_refused_in_float_columns(source: Path, tmp_path: Path) -> None:
    raw = yaml.safe_load((source / "tax_compliance.yaml").read_text())
    for col in raw["columns"]:
        if col["name"] == "tax_paid":
            col["type"] = "float"
    entry = tmp_path / "tax.yaml"
    entry.write_text(yaml.safe_dump(raw))
    table = pq.read_table(source / "tax_compliance.parquet")
    values = [math.nan, math.inf] + [1.0] * (table.num_rows - 2)
    data = _write(table.set_column(2, "tax_paid", pa.array(values)), tmp_path)
    with pytest.raises(RegistrationError, match=r"tax_paid: NaN or infinite values \(2 row\(s\)\)"):
        _register(tmp_path / "data", entry, data)


def test_core_data_is_refused(source: Path, tmp_path: Path) -> None:
    entry = _entry(source, "enterprise_registry", tmp_path, level="core")
    with pytest.raises(RegistrationError, match="core data is never served"):
        _register(tmp_path / "data", entry, source / "enterprise_registry.parquet")
    assert _nothing_written(tmp_path / "data", "enterprise_registry")


def test_invalid_entry_names_the_field(source: Path, tmp_path: Path) -> None:
    entry = _entry(source, "enterprise_registry", tmp_path, privacy_unit={"column": "nope", "max_rows": 1})
    with pytest.raises(RegistrationError, match="column nope is referenced but not declared"):
        _register(tmp_path / "data", entry, source / "enterprise_registry.parquet")


def test_hostile_identifier_in_entry_is_refused(source: Path, tmp_path: Path) -> None:
    raw = yaml.safe_load((source / "enterprise_registry.yaml").read_text())
    raw["columns"][1]["name"] = 'name" FROM records; --'
    entry = tmp_path / "hostile.yaml"
    entry.write_text(yaml.safe_dump(raw))
    with pytest.raises(RegistrationError, match=r"columns\.1\.name"):
        _register(tmp_path / "data", entry, source / "enterprise_registry.parquet")


def test_contribution_bound_keeps_the_most_recent_rows_of_each_person(source: Path, tmp_path: Path) -> None:
    table = pq.read_table(source / "social_insurance.parquet")
    per_person = table.group_by("person_id").aggregate([("month", "count")]).to_pydict()
    expected_dropped = sum(max(0, n - 36) for n in per_person["month_count"])
    assert expected_dropped > 0, "the demo data must exercise the bound"
    data_dir = tmp_path / "data"
    outcome = _register(data_dir, source / "social_insurance.yaml", source / "social_insurance.parquet")
    assert outcome.rows_dropped_by_contribution_bound == expected_dropped
    assert outcome.rows == table.num_rows - expected_dropped
    # The rule is documented: per person, the 36 latest months are kept.
    rows = table.to_pylist()
    heavy = max(zip(per_person["month_count"], per_person["person_id"], strict=True))[1]
    months = sorted((r["month"] for r in rows if r["person_id"] == heavy), reverse=True)
    domain = engine.Domain(data_dir)
    with domain.snapshot("social_insurance", outcome.record.version) as snap:
        kept = sorted((r[0] for r in snap.lookup("person_id", heavy, ["month"])), reverse=True)
    domain.close()
    assert kept == months[:36]


def test_same_content_is_unchanged_and_a_new_file_is_a_change(source: Path, tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    first = _register(data_dir, source / "tax_compliance.yaml", source / "tax_compliance.parquet")
    again = _register(data_dir, source / "tax_compliance.yaml", source / "tax_compliance.parquet")
    assert again.unchanged
    assert again.record.version == first.record.version
    table = pq.read_table(source / "tax_compliance.parquet")
    changed = _write(table.slice(1), tmp_path, "changed.parquet")
    second = _register(data_dir, source / "tax_compliance.yaml", changed, note="late filings")
    assert second.record.version != first.record.version
    fixed = _write(table.slice(2), tmp_path, "fixed.parquet")
    third = _register(data_dir, source / "tax_compliance.yaml", fixed, correction=True, note="typo")
    kinds = [h.kind for h in third.record.history]
    assert kinds == [ChangeKind.REGISTRATION, ChangeKind.CHANGE, ChangeKind.CORRECTION]
    cancelled = registration.cancel(CatalogStore(data_dir), "tax_compliance", note="source retired")
    assert cancelled.status == "cancelled"
    assert not cancelled.is_served
    assert cancelled.history[-1].kind is ChangeKind.CANCELLATION
    with pytest.raises(Conflict):
        registration.cancel(CatalogStore(data_dir), "tax_compliance")


def test_csv_registers_like_parquet_and_bad_csv_values_are_refused(source: Path, tmp_path: Path) -> None:
    table = pq.read_table(source / "tax_compliance.parquet")
    good = tmp_path / "tax.csv"
    pacsv.write_csv(table, good)
    outcome = _register(tmp_path / "data", source / "tax_compliance.yaml", good)
    assert outcome.rows == table.num_rows
    bad = tmp_path / "bad.csv"
    text = good.read_text().splitlines()
    fields = text[1].split(",")
    fields[2] = "lots"
    bad.write_text("\n".join([text[0], ",".join(fields), *text[2:]]) + "\n")
    with pytest.raises(RegistrationError, match=r"tax_paid: values that are not integer \(1 row\(s\)\)"):
        _register(tmp_path / "data2", source / "tax_compliance.yaml", bad)


def test_unsupported_or_missing_source_is_refused(source: Path, tmp_path: Path) -> None:
    with pytest.raises(RegistrationError, match="does not exist"):
        _register(tmp_path / "data", source / "tax_compliance.yaml", tmp_path / "absent.parquet")
    odd = tmp_path / "data.json"
    odd.write_text("{}")
    with pytest.raises(RegistrationError, match=r"\.parquet or \.csv"):
        _register(tmp_path / "data", source / "tax_compliance.yaml", odd)


def test_correction_of_an_unregistered_dataset_is_refused(source: Path, tmp_path: Path) -> None:
    with pytest.raises(RegistrationError, match="nothing to correct"):
        _register(tmp_path / "data", source / "tax_compliance.yaml", source / "tax_compliance.parquet", correction=True)
    assert _nothing_written(tmp_path / "data", "tax_compliance")


def _social_insurance(source: Path, tmp_path: Path, mutate: Any) -> Path:
    table = pq.read_table(source / "social_insurance.parquet")
    return _write(mutate(table), tmp_path)


def _set(table: pa.Table, column: str, rows: dict[int, Any]) -> pa.Table:
    values = table[column].to_pylist()
    for i, value in rows.items():
        values[i] = value
    return table.set_column(
        table.schema.get_field_index(column), column, pa.array(values, table.schema.field(column).type)
    )


def test_value_problems_count_every_row_and_come_before_key_problems(source: Path, tmp_path: Path) -> None:
    table = pq.read_table(source / "social_insurance.parquet")
    ids = table["person_id"].to_pylist()
    same_person = [i for i, p in enumerate(ids) if p == ids[0]][:3]
    others = [i for i, p in enumerate(ids) if p != ids[0]][:2]
    bad_rows = dict.fromkeys([*same_person, *others], 40_001)
    data = _social_insurance(
        source, tmp_path, lambda t: _set(_set(t, "wage_base", bad_rows), "person_id", {7: "1101011950"})
    )
    with pytest.raises(RegistrationError) as caught:
        _register(tmp_path / "data", source / "social_insurance.yaml", data)
    assert caught.value.detail == "column wage_base: values outside the bounds [0, 40000] (5 row(s))"


def test_an_invalid_key_only_in_rows_the_bound_drops_is_refused(source: Path, tmp_path: Path) -> None:
    """Keys are checked in every source row, not only in the rows the bound keeps."""
    table = pq.read_table(source / "social_insurance.parquet")
    ids, months = table["person_id"].to_pylist(), table["month"].to_pylist()
    heavy = max(set(ids), key=ids.count)
    rows = [i for i, p in enumerate(ids) if p == heavy]
    oldest = min(rows, key=lambda i: months[i])
    assert sum(1 for i in rows if months[i] > months[oldest]) >= 36, "the oldest row must be dropped"
    data = _social_insurance(source, tmp_path, lambda t: _set(t, "employer_code", {oldest: "91350100M000100Y44"}))
    with pytest.raises(RegistrationError) as caught:
        _register(tmp_path / "data", source / "social_insurance.yaml", data)
    assert caught.value.detail == "column employer_code: 1 distinct value(s) are not valid uscc keys"
    assert _nothing_written(tmp_path / "data", "social_insurance")


def test_an_invalid_privacy_unit_key_is_refused(source: Path, tmp_path: Path) -> None:
    data = _social_insurance(
        source,
        tmp_path,
        lambda t: _set(_set(t, "person_id", {0: "110101195001010011", 5: "x"}), "employer_code", {9: "9"}),
    )
    with pytest.raises(RegistrationError) as caught:
        _register(tmp_path / "data", source / "social_insurance.yaml", data)
    assert caught.value.detail == (
        "column person_id: 2 distinct value(s) are not valid resident_id keys; "
        "column employer_code: 1 distinct value(s) are not valid uscc keys"
    )
    assert _nothing_written(tmp_path / "data", "social_insurance")


def test_the_version_is_sorted_by_the_first_keys_hash_and_the_others_have_sorted_key_tables(
    source: Path, tmp_path: Path
) -> None:
    """The first lookup key, text, is stored hashed and the table sorted by the hash (zone maps
    find a key's rows); every other text lookup key has a table of (hash of the key, row id)
    sorted by the hash, which names exactly the rows holding it; there is no ART index."""
    outcome = _register(tmp_path / "data", source / "social_insurance.yaml", source / "social_insurance.parquet")
    path = engine.version_path(tmp_path / "data", "social_insurance", outcome.record.version)
    con = duckdb.connect(str(path), read_only=True)
    try:
        hashes = [row[0] for row in con.execute('SELECT "_hash_person_id" FROM records').fetchall()]
        wrong = con.execute('SELECT count(*) FROM records WHERE "_hash_person_id" IS DISTINCT FROM hash(person_id)')
        assert wrong.fetchone() == (0,)
        keyed = con.execute('SELECT h, r FROM "_index_employer_code"').fetchall()
        held = con.execute("SELECT rowid, hash(employer_code) FROM records WHERE employer_code IS NOT NULL").fetchall()
        art = con.execute("SELECT count(*) FROM duckdb_indexes()").fetchone()
    finally:
        con.close()
    assert hashes == sorted(hashes)
    assert [h for h, _r in keyed] == sorted(h for h, _r in keyed)
    assert {r: h for h, r in keyed} == dict(held)
    assert len(keyed) == len(held) > 0
    assert art == (0,)


def test_the_number_of_passes_follows_the_rows_and_the_memory_limit() -> None:
    """About 10 bytes a column of a row sorted within the limit a pass, at most MAX_PASSES."""
    passes = engine.build._passes
    assert [passes(rows, 7, "2GB") for rows in (0, 1_000, 25 * 10**6, 25 * 10**6 + 1, 10**8)] == [1, 1, 1, 2, 4]
    assert passes(10**8, 7, "2GiB") == 4
    assert passes(10**8, 7, "64MB") == passes(10**12, 7, "2GB") == engine.build.MAX_PASSES
    with pytest.raises(RegistrationError, match="registration_memory_limit"):
        passes(10, 7, "2 gigabytes")


@pytest.mark.parametrize("lookup_keys", [["person_id", "employer_code"], ["employer_code", "person_id"], []])
@pytest.mark.parametrize("passes", [2, 7])
def test_a_version_written_in_passes_holds_the_same_rows_in_one_sorted_run_a_pass(
    source: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, lookup_keys: list[str], passes: int
) -> None:
    """Where one sort would not fit the memory limit, the table is written in passes over
    consecutive parts of the source: the same rows as one pass writes (each pass leaves out the
    bound's dropped positions in its part), each pass one run sorted by the first key's hash, and
    every key's rows found."""
    table, person = _heavy_person(source)
    data = _write(table, tmp_path)
    entry = load_entry(_entry(source, "social_insurance", tmp_path, lookup_keys=lookup_keys))
    monkeypatch.setattr(engine.build, "_passes", lambda *_a, **_k: 1)
    whole = engine.build_version(entry, data, tmp_path / "one")
    monkeypatch.setattr(engine.build, "_passes", lambda *_a, **_k: passes)
    split = engine.build_version(entry, data, tmp_path / "split")
    sort_key = {"person_id": '"_hash_person_id"', "employer_code": '"_hash_employer_code"'}.get(
        lookup_keys[0] if lookup_keys else "", "hash(person_id)"
    )
    tables, keys = [], []
    for built in (whole, split):
        con = duckdb.connect(str(built.path), read_only=True)
        try:
            keys.append([row[0] for row in con.execute(f"SELECT {sort_key} FROM records").fetchall()])  # noqa: S608
            tables.append(sorted(con.execute("SELECT COLUMNS('^[a-z]') FROM records").fetchall()))
        finally:
            con.close()
    assert tables[0] == tables[1]
    assert sum(1 for a, b in itertools.pairwise(keys[0]) if a > b) == 0
    assert 0 < sum(1 for a, b in itertools.pairwise(keys[1]) if a > b) <= passes - 1
    assert sum(1 for row in tables[1] if row[0] == person) == 36
    if lookup_keys:
        domain = engine.Domain(tmp_path / "split", index_max_rows=0)
        try:
            for key_column in lookup_keys:
                value = table[key_column][0].as_py()
                rows = domain.find("social_insurance", split.version, key_column, value, ["month", "region"])
                assert len(rows) == sum(1 for row in tables[1] if row[_column_names(entry).index(key_column)] == value)
        finally:
            domain.close()


def _column_names(entry: Any) -> list[str]:
    return [c.name for c in entry.columns]


def _canonical(rows: list[tuple[Any, ...]]) -> list[tuple[Any, ...]]:
    """Rows in the documented lookup order: every column ascending, NULLs last."""
    return sorted(rows, key=lambda row: [(v is None, v) for v in row])


def _every_lookup(domain: engine.Domain, version: str, keys: dict[str, list[str]]) -> dict[Any, Any]:
    columns = ["employer_code", "person_id", "month", "region", "wage_base", "paid"]
    found = {}
    for key_column, values in keys.items():
        for value in values:
            found[key_column, value] = domain.find("social_insurance", version, key_column, value, columns)
    return found


def test_every_lookup_finds_a_keys_rows_in_one_order_whatever_the_build(source: Path, tmp_path: Path) -> None:
    """A version's row order is not kept (it is sorted by a hash), so lookups order what they
    return. Built twice (one thread and all), looked up by the hash, by the key table and from
    the in-memory index, each key gives exactly its rows, in one documented order; a person
    with ties in every column the bound orders by included."""
    table, person = _heavy_person(source)
    data = _write(table, tmp_path)
    entry = load_entry(source / "social_insurance.yaml")
    persons = [person, *table["person_id"].to_pylist()[:3], "110101199001010023"]
    employers = [*dict.fromkeys(table["employer_code"].to_pylist()[:3]), "911101010000000000"]
    keys = {"person_id": persons, "employer_code": employers}
    answers = []
    for limits, index_max_rows in ((engine.BuildLimits(), 0), (engine.BuildLimits(threads=1), 10**9)):
        data_dir = tmp_path / f"data-{len(answers)}"
        built = engine.build_version(entry, data, data_dir, limits=limits)
        domain = engine.Domain(data_dir, index_max_rows=index_max_rows)
        try:
            answers.append(_every_lookup(domain, built.version, keys))
        finally:
            domain.close()
        con = duckdb.connect(str(built.path), read_only=True)
        try:
            for (key_column, value), rows in answers[-1].items():
                scanned = con.execute(
                    "SELECT employer_code, person_id, month, region, wage_base, paid FROM records"  # noqa: S608
                    f" WHERE {key_column} = $1",
                    [value],
                ).fetchall()
                assert rows == _canonical(scanned)
        finally:
            con.close()
    assert answers[0] == answers[1]
    assert len(answers[0]["person_id", person]) == 36
    assert answers[0]["person_id", "110101199001010023"] == []


@pytest.mark.parametrize(
    ("key_column", "changed"),
    [
        ("person_id", 'UPDATE records SET "_hash_person_id" = xor("_hash_person_id", 1) WHERE person_id = $1'),
        (
            "employer_code",
            'UPDATE "_index_employer_code" SET h = xor(h, 1)'
            " WHERE r = (SELECT min(rowid) FROM records WHERE employer_code = $1)",
        ),
        # the count and the sum of the hashes kept, one of the key's rows given to another key
        (
            "employer_code",
            'UPDATE "_index_employer_code" SET r = CASE r WHEN a THEN b ELSE a END FROM ('
            " SELECT (SELECT min(rowid) FROM records WHERE employer_code = $1) AS a,"
            " (SELECT min(rowid) FROM records WHERE employer_code <> $1) AS b) AS pair WHERE r IN (a, b)",
        ),
    ],
)
def test_a_stored_hash_this_duckdb_does_not_compute_is_not_used(
    source: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture, key_column: str, changed: str
) -> None:
    """A version built by a DuckDB release whose hash() differs would find nothing by its stored
    hashes. One key's hash changed in the file (in the table, or in a key table), or one of its
    rows' ids swapped with another key's: the version's hashes of that key are not used, and
    the key's rows are all still found, by a scan."""
    outcome = _register(tmp_path / "data", source / "social_insurance.yaml", source / "social_insurance.parquet")
    path = engine.version_path(tmp_path / "data", "social_insurance", outcome.record.version)
    con = duckdb.connect(str(path))
    try:
        (key,) = con.execute(f"SELECT {key_column} FROM records LIMIT 1").fetchone() or ("",)  # noqa: S608
        con.execute(changed, [key])
        expected = con.execute(f"SELECT count(*) FROM records WHERE {key_column} = $1", [key]).fetchone()  # noqa: S608
    finally:
        con.close()
    domain = engine.Domain(tmp_path / "data", index_max_rows=0)
    try:
        rows = domain.find("social_insurance", outcome.record.version, key_column, key, ["month"])
    finally:
        domain.close()
    assert expected is not None and len(rows) == expected[0] > 0
    assert "stored key hashes differ" in caplog.text


def test_a_row_the_key_table_names_for_another_key_of_the_same_hash_is_dropped(source: Path, tmp_path: Path) -> None:
    """Two keys of one 64-bit hash: the key table gives the row ids of both, and a lookup
    returns only the rows of the key asked for."""
    outcome = _register(tmp_path / "data", source / "social_insurance.yaml", source / "social_insurance.parquet")
    path = engine.version_path(tmp_path / "data", "social_insurance", outcome.record.version)
    con = duckdb.connect(str(path))
    try:
        asked, other = (row[0] for row in con.execute("SELECT DISTINCT employer_code FROM records LIMIT 2").fetchall())
        con.execute(
            'INSERT INTO "_index_employer_code" SELECT hash($1), rowid FROM records WHERE employer_code = $2',
            [asked, other],
        )
        expected = con.execute(
            "SELECT person_id, month FROM records WHERE employer_code = $1 ORDER BY ALL", [asked]
        ).fetchall()
    finally:
        con.close()
    con = duckdb.connect(str(path), read_only=True)
    try:
        layout = VersionFacts({}, None, frozenset({"employer_code"}))  # trusted, as a real collision would be
        snap = Snapshot(con.cursor(), "social_insurance", outcome.record.version, layout)
        assert snap.lookup("employer_code", asked, ["person_id", "month"]) == expected != []
    finally:
        con.close()


def test_a_version_built_before_the_hashed_layout_is_still_served(source: Path, tmp_path: Path) -> None:
    """A version file sorted by its first key with an ART index on the second, as earlier
    releases wrote them: no stored hash, no key table; both keys found by their values."""
    outcome = _register(tmp_path / "data", source / "social_insurance.yaml", source / "social_insurance.parquet")
    path = engine.version_path(tmp_path / "data", "social_insurance", outcome.record.version)
    con = duckdb.connect(str(path))
    try:
        con.execute("CREATE TABLE old AS SELECT COLUMNS('^[a-z]') FROM records ORDER BY person_id")
        con.execute('DROP TABLE records; DROP TABLE "_index_employer_code"; ALTER TABLE old RENAME TO records')
        con.execute("CREATE INDEX idx_employer_code ON records (employer_code)")
        person, employer = con.execute("SELECT person_id, employer_code FROM records LIMIT 1").fetchone() or ("", "")
        expected = {
            key: con.execute(
                f"SELECT month, region FROM records WHERE {key} = $1 ORDER BY ALL",  # noqa: S608
                [value],
            ).fetchall()
            for key, value in (("person_id", person), ("employer_code", employer))
        }
    finally:
        con.close()
    for index_max_rows in (0, 10**9):
        domain = engine.Domain(tmp_path / "data", index_max_rows=index_max_rows)
        try:
            for key, value in (("person_id", person), ("employer_code", employer)):
                found = domain.find("social_insurance", outcome.record.version, key, value, ["month", "region"])
                assert found == expected[key] != []
        finally:
            domain.close()


def _heavy_person(source: Path) -> tuple[pa.Table, str]:
    """The demo rows and 60 more of one new person, in ties of six months (ten rows a month), so
    that which 36 rows the bound keeps depends on every column after keep_first_by."""
    table = pq.read_table(source / "social_insurance.parquet")
    first = table.slice(0, 1).to_pylist()[0]
    person = "110101199001010015"
    extra = [
        first
        | {
            "person_id": person,
            "month": first["month"].replace(month=1 + i % 6),
            "region": ["11", "31"][i % 2],
            "wage_base": 1000 + (i * 7919) % 60,
            "paid": i % 3 != 0,
        }
        for i in range(60)
    ]
    return pa.concat_tables([table, pa.Table.from_pylist(extra, schema=table.schema)]), person


def _rule(rows: list[dict[str, Any]], max_rows: int) -> list[tuple[Any, ...]]:
    """The documented rule, row by row: latest month first, then every column in catalogue order."""
    ordered = sorted(
        rows,
        key=lambda r: (
            -r["month"].toordinal(),
            r["employer_code"],
            r["region"],
            r["industry"],
            r["wage_base"],
            r["paid"],
        ),
    )
    return sorted(tuple(r.values()) for r in ordered[:max_rows])


@pytest.mark.parametrize("lookup_keys", [["person_id", "employer_code"], ["employer_code", "person_id"], []])
def test_the_bound_keeps_the_documented_rows_whichever_key_sorts_the_version(
    source: Path, tmp_path: Path, lookup_keys: list[str]
) -> None:
    """Whichever key sorts the version (the unit, another key, none), the units above the bound
    are ranked apart: each person keeps at most max_rows rows, exactly the ones the documented
    rule names."""
    table, person = _heavy_person(source)
    data = _write(table, tmp_path)
    entry = _entry(source, "social_insurance", tmp_path, lookup_keys=lookup_keys)
    outcome = _register(tmp_path / "data", entry, data)
    path = engine.version_path(tmp_path / "data", "social_insurance", outcome.record.version)
    con = duckdb.connect(str(path), read_only=True)
    try:
        # the catalogue's columns: a stored key hash starts with an underscore
        cursor = con.execute(f"SELECT COLUMNS('^[a-z]') FROM {engine.TABLE}")  # noqa: S608 - constant
        names = [d[0] for d in cursor.description]
        kept = [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]
    finally:
        con.close()
    per_person: dict[str, int] = {}
    for row in kept:
        per_person[row["person_id"]] = per_person.get(row["person_id"], 0) + 1
    assert max(per_person.values()) == 36
    assert per_person[person] == 36
    heavy = [r for r in table.to_pylist() if r["person_id"] == person]
    assert sorted(tuple(r.values()) for r in kept if r["person_id"] == person) == _rule(heavy, 36)
    counts = pc.value_counts(table["person_id"]).to_pylist()
    assert outcome.rows_dropped_by_contribution_bound == sum(max(0, c["counts"] - 36) for c in counts) > 0


@pytest.mark.parametrize("lookup_keys", [["person_id"], ["employer_code"]])
def test_rows_without_a_unit_share_one_bound(source: Path, tmp_path: Path, lookup_keys: list[str]) -> None:
    """A nullable unit column: its missing values are one unit, as in PARTITION BY."""
    table, person = _heavy_person(source)
    ids = [None if p == person else p for p in table["person_id"].to_pylist()]
    data = _write(table.set_column(0, "person_id", pa.array(ids, pa.string())), tmp_path)
    raw = yaml.safe_load((source / "social_insurance.yaml").read_text())
    raw["columns"][0]["nullable"] = True
    raw["lookup_keys"] = lookup_keys
    entry = tmp_path / "entry.yaml"
    entry.write_text(yaml.safe_dump(raw, allow_unicode=True))
    outcome = _register(tmp_path / "data", entry, data)
    path = engine.version_path(tmp_path / "data", "social_insurance", outcome.record.version)
    con = duckdb.connect(str(path), read_only=True)
    try:
        missing = con.execute(f"SELECT count(*) FROM {engine.TABLE} WHERE person_id IS NULL").fetchone()  # noqa: S608
    finally:
        con.close()
    assert missing == (36,)


def test_rows_outside_the_category_list_are_counted_row_by_row(source: Path, tmp_path: Path) -> None:
    table = pq.read_table(source / "enterprise_registry.parquet")
    status = ["dormant", "dormant", "closed", *table["status"].to_pylist()[3:]]
    data = _write(table.set_column(7, "status", pa.array(status)), tmp_path)
    with pytest.raises(RegistrationError) as caught:
        _register(tmp_path / "data", source / "enterprise_registry.yaml", data)
    assert caught.value.detail == "column status: values outside the public category list (3 row(s))"


@pytest.mark.parametrize("file_format", ["csv", "parquet"])
def test_every_units_kept_rows_follow_the_rule_from_csv_and_from_many_row_groups(
    source: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, file_format: str
) -> None:
    """Every unit, not one: from a CSV file (row ids of its temporary table) and from a Parquet
    file of many row groups (file_row_number), in three passes, the version holds exactly the
    rows the documented rule keeps. A unit above the bound whose id is missing (an empty CSV
    field) is one unit; units at or below the bound keep every row."""
    table, person = _heavy_person(source)
    ids = [None if p == person else p for p in table["person_id"].to_pylist()]
    table = table.set_column(0, "person_id", pa.array(ids, pa.string()))
    data = tmp_path / f"data.{file_format}"
    if file_format == "csv":
        pacsv.write_csv(table, data)
    else:
        pq.write_table(table, data, row_group_size=97)
    raw = yaml.safe_load((source / "social_insurance.yaml").read_text())
    raw["columns"][0]["nullable"] = True
    entry = tmp_path / "entry.yaml"
    entry.write_text(yaml.safe_dump(raw, allow_unicode=True))
    monkeypatch.setattr(engine.build, "_passes", lambda *_a, **_k: 3)
    built = engine.build_version(load_entry(entry), data, tmp_path / "data")
    con = duckdb.connect(str(built.path), read_only=True)
    try:
        kept = con.execute("SELECT COLUMNS('^[a-z]') FROM records").fetchall()
    finally:
        con.close()
    by_unit: dict[str | None, list[dict[str, Any]]] = {}
    for row in table.to_pylist():
        by_unit.setdefault(row["person_id"], []).append(row)
    expected = [row for rows in by_unit.values() for row in _rule(rows, 36)]
    assert _canonical(kept) == _canonical(expected)
    assert built.rows_dropped_by_contribution_bound == sum(max(0, len(r) - 36) for r in by_unit.values()) > 0


def test_a_unit_above_the_bound_in_the_written_table_fails_the_build(
    source: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The count after the write is the last line of defence: a pass that kept one row too many
    of a unit at the bound fails the build, and no version file is left."""
    write = engine.build._write_in_passes

    def one_row_too_many(con: duckdb.DuckDBPyConnection, table: str, written: str, rows: int, passes: int) -> None:
        write(con, table, written, rows, passes)
        if table == engine.TABLE:
            con.execute(
                f"INSERT INTO {table} SELECT * FROM {table} WHERE person_id = ("  # noqa: S608 - constant
                f"SELECT person_id FROM {table} GROUP BY 1 HAVING count(*) = 36 LIMIT 1) LIMIT 1"
            )

    table, _person = _heavy_person(source)
    data = _write(table, tmp_path)
    monkeypatch.setattr(engine.build, "_write_in_passes", one_row_too_many)
    with pytest.raises(InternalError, match="contribution bound did not hold"):
        engine.build_version(load_entry(source / "social_insurance.yaml"), data, tmp_path / "data")
    assert list((tmp_path / "data" / "domain" / "social_insurance").iterdir()) == []


@pytest.mark.parametrize("name", ["rowid", "file_row_number"])
def test_a_column_named_for_duckdbs_row_positions_is_refused(source: Path, tmp_path: Path, name: str) -> None:
    """Registration drops rows over the bound and key tables name rows by DuckDB's row positions;
    a column of that name would hide them (a CSV column named rowid would stand for the positions)."""
    raw = yaml.safe_load((source / "social_insurance.yaml").read_text())
    raw["columns"][2]["name"] = name
    entry = tmp_path / "entry.yaml"
    entry.write_text(yaml.safe_dump(raw, allow_unicode=True))
    with pytest.raises(RegistrationError, match=f"column {name}: a name DuckDB gives row positions"):
        load_entry(entry)
