"""Every way to rewrite history is detected by `verify_log`, which also says where.

The attacker here has write access to the log's database and, in the last cases, the signing
key too: only copies of checkpoints that witnesses kept can catch a log rewritten consistently.
"""

from __future__ import annotations

import json
import shutil
import sqlite3
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway.domain import merkle
from gateway.domain.canonical_json import canonical
from gateway.domain.trail import AuditLeaf
from gateway.services.audit_trail import make_checkpoint, verify_log
from gateway.signing import KeyRing
from gateway.state.audit_postgres import PostgresAuditLog
from gateway.state.audit_sqlite import SqliteAuditLog
from tests.conftest import PG_DSN, needs_pg, pg_schema
from tests.trust.conftest import event

SIZE = 40
CHECKPOINTS = (10, 25, 40)


@dataclass(frozen=True)
class Template:
    root: Path
    jwks: dict[str, Any]
    witnessed: dict[int, str]


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> Template:
    root = tmp_path_factory.mktemp("log")
    keys = KeyRing.create(root / "keys")
    log = SqliteAuditLog.open(root / "audit")
    witnessed: dict[int, str] = {}
    for i in range(SIZE):
        log.append_now(event(i, principal="demo-business" if i % 2 else None, status=(200, 401, 404)[i % 3]))
        if i + 1 in CHECKPOINTS:
            made = make_checkpoint(log, keys, issuer="veilgate")
            assert made is not None
            witnessed[made.size] = made.jws
    log.close()
    return Template(root, keys.jwks(), witnessed)


@contextmanager
def copy_of(template: Template) -> Iterator[tuple[Path, sqlite3.Connection]]:
    with tempfile.TemporaryDirectory() as tmp:
        shutil.copytree(template.root, Path(tmp) / "log")
        db = sqlite3.connect(Path(tmp) / "log" / "audit" / "log.sqlite3", isolation_level=None)
        try:
            yield Path(tmp) / "log", db
        finally:
            db.close()


def _verify(root: Path, template: Template, witnessed: tuple[str, ...] = ()) -> str | None:
    log = SqliteAuditLog.open(root / "audit")
    try:
        return verify_log(log, template.jwks, witnessed=witnessed).failure
    finally:
        log.close()


def _record(db: sqlite3.Connection, seq: int) -> dict[str, Any]:
    (text,) = db.execute("SELECT record FROM leaves WHERE seq = ?", (seq,)).fetchone()
    loaded: dict[str, Any] = json.loads(text)
    return loaded


def _store(db: sqlite3.Connection, seq: int, record: dict[str, Any], *, rehash: bool) -> None:
    data = canonical(record)
    if rehash:
        db.execute("UPDATE leaves SET record = ?, hash = ? WHERE seq = ?", (data.decode(), merkle.leaf_hash(data), seq))
    else:
        db.execute("UPDATE leaves SET record = ? WHERE seq = ?", (data.decode(), seq))


CHANGES: dict[str, object] = {
    "time": "2020-01-01T00:00:00.000Z",
    "request_id": "forged",
    "principal": "someone-else",
    "organisation": "Other Org",
    "method": "POST",
    "route": "/v1/elsewhere",
    "service": "verify-enterprise",
    "dataset": "social_insurance",
    "dataset_version": "0" * 32,
    "decision": "failed",
    "reason": "policy-denied",
    "cost": {"epsilon": "9", "delta": "0", "quota_units": 1},
    "result_digest": "sha256:" + "0" * 64,
    "subjects": ["person:" + "0" * 32],
    "status": 503,
}


def test_the_untouched_log_verifies(template: Template) -> None:
    with copy_of(template) as (root, _db):
        assert _verify(root, template, tuple(template.witnessed.values())) is None


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(seq=st.integers(0, SIZE - 1), field=st.sampled_from(sorted(CHANGES)), rehash=st.booleans())
def test_changing_any_field_of_any_leaf_is_detected_and_located(
    template: Template, seq: int, field: str, rehash: bool
) -> None:
    with copy_of(template) as (root, db):
        record = _record(db, seq)
        if record[field] == CHANGES[field]:
            record[field] = None if field != "status" else 500
        else:
            record[field] = CHANGES[field]
        _store(db, seq, record, rehash=rehash)
        failure = _verify(root, template)
    assert failure is not None
    if not rehash:
        assert failure.startswith(f"leaf {seq} was changed after it was written")
    else:  # hashes recomputed too: located to the span between two checkpoints
        start = max([0, *[c for c in CHECKPOINTS if c <= seq]])
        end = min(c for c in CHECKPOINTS if c > seq) - 1
        assert f"leaves {start} to {end} do not match the checkpoint of size {end + 1}" in failure


def test_an_edit_that_breaks_canonical_form_is_named(template: Template) -> None:
    with copy_of(template) as (root, db):
        (text,) = db.execute("SELECT record FROM leaves WHERE seq = 7").fetchone()
        db.execute("UPDATE leaves SET record = ? WHERE seq = 7", (text.replace(",", ", ", 1),))
        assert _verify(root, template) == "leaf 7 is not in canonical form: it was edited outside the log"


def test_deleting_a_leaf_is_detected_and_located(template: Template) -> None:
    with copy_of(template) as (root, db):
        db.execute("DELETE FROM leaves WHERE seq = 13")
        assert _verify(root, template) == "leaf 13 is missing: the next stored leaf is 14"


def _renumber(db: sqlite3.Connection, records: list[dict[str, Any]]) -> None:
    """Rewrite the table as if `records` had always been the log, hashes and all."""
    db.execute("DELETE FROM leaves")
    for seq, record in enumerate(records):
        data = canonical({**record, "seq": seq})
        db.execute(
            "INSERT INTO leaves (seq, record, hash) VALUES (?, ?, ?)", (seq, data.decode(), merkle.leaf_hash(data))
        )


def _all(db: sqlite3.Connection) -> list[dict[str, Any]]:
    return [json.loads(r[0]) for r in db.execute("SELECT record FROM leaves ORDER BY seq")]


def test_deleting_a_leaf_and_renumbering_the_rest_is_detected(template: Template) -> None:
    with copy_of(template) as (root, db):
        records = _all(db)
        _renumber(db, records[:13] + records[14:])
        assert _verify(root, template) == (
            "leaves 10 to 24 do not match the checkpoint of size 25 signed at "
            f"{_checkpoint_time(db, 25)}: they were rewritten"
        )


def _checkpoint_time(db: sqlite3.Connection, size: int) -> str:
    (time,) = db.execute("SELECT time FROM checkpoints WHERE size = ?", (size,)).fetchone()
    return str(time)


def test_inserting_a_leaf_is_detected_and_located(template: Template) -> None:
    with copy_of(template) as (root, db):
        records = _all(db)
        forged = AuditLeaf.of(event(999), 0).model_dump(mode="json")
        _renumber(db, [*records[:3], forged, *records[3:]])
        failure = _verify(root, template)
    assert failure is not None
    assert failure.startswith("leaves 0 to 9 do not match the checkpoint of size 10")


def test_swapping_two_leaves_is_detected_and_located(template: Template) -> None:
    with copy_of(template) as (root, db):
        five, six = _record(db, 5), _record(db, 6)
        _store(db, 5, six, rehash=True)
        _store(db, 6, five, rehash=True)
        assert _verify(root, template) == "leaf 5 holds the record of position 6: leaves were moved"


def test_reordering_with_positions_rewritten_is_detected_and_located(template: Template) -> None:
    with copy_of(template) as (root, db):
        records = _all(db)
        records[30], records[31] = records[31], records[30]
        _renumber(db, records)
        failure = _verify(root, template)
    assert failure is not None
    assert failure.startswith("leaves 25 to 39 do not match the checkpoint of size 40")


def test_cutting_the_tail_is_detected(template: Template) -> None:
    with copy_of(template) as (root, db):
        db.execute("DELETE FROM leaves WHERE seq >= 35")
        failure = _verify(root, template)
    assert failure is not None
    assert failure.startswith("the log was cut: the checkpoint of size 40")
    assert failure.endswith("covers 40 leaves, the log holds 35")


def test_cutting_the_tail_and_its_checkpoints_is_caught_by_a_witness(template: Template) -> None:
    with copy_of(template) as (root, db):
        db.execute("DELETE FROM leaves WHERE seq >= 35")
        db.execute("DELETE FROM checkpoints WHERE size > 35")
        assert _verify(root, template) is None  # locally consistent: only a witness can tell
        failure = _verify(root, template, (template.witnessed[40],))
    assert failure is not None
    assert "covers 40 leaves, the log holds 35" in failure
    assert "that a witness kept" in failure


def test_a_consistent_rewrite_with_the_signing_key_is_caught_by_a_witness(template: Template) -> None:
    """The operator rewrites leaf 12, recomputes every hash and re-signs every checkpoint."""
    with copy_of(template) as (root, db):
        records = _all(db)
        records[12]["status"], records[12]["decision"] = 403, "refused"
        assert records[12] != _record(db, 12)
        _renumber(db, records)
        db.execute("DELETE FROM checkpoints")
        keys = KeyRing.load(root / "keys")
        log = SqliteAuditLog.open(root / "audit")
        make_checkpoint(log, keys, issuer="veilgate")
        log.close()
        assert _verify(root, template) is None  # the forger's own checkpoints agree with the forgery
        failure = _verify(root, template, (template.witnessed[25],))
    assert failure is not None
    assert failure.startswith("leaves 0 to 24 do not match the checkpoint of size 25 that a witness kept")


def test_an_edited_checkpoint_is_detected(template: Template) -> None:
    with copy_of(template) as (root, db):
        db.execute("UPDATE checkpoints SET root = ? WHERE size = 25", ("ab" * 32,))
        failure = _verify(root, template)
    assert failure is not None
    assert failure.startswith("the checkpoint of size 25 signed at")
    assert failure.endswith("was edited: its stored fields differ from what was signed")


def test_a_checkpoint_signed_by_another_key_is_detected(template: Template, tmp_path: Path) -> None:
    with copy_of(template) as (root, db):
        db.execute("DELETE FROM checkpoints WHERE size = 40")
        log = SqliteAuditLog.open(root / "audit")
        make_checkpoint(log, KeyRing.create(tmp_path / "foreign"), issuer="veilgate")
        log.close()
        failure = _verify(root, template)
    assert failure is not None
    assert "the checkpoint of size 40" in failure
    assert "does not verify: the JWS is signed by a key that the JWKS does not publish" in failure


@pytest.mark.postgres
@needs_pg
def test_a_leaf_changed_in_postgres_is_found(tmp_path: Path) -> None:
    """The same checks on the PostgreSQL store: whoever can write its rows changes a leaf."""
    import psycopg

    keys = KeyRing.create(tmp_path / "keys")
    with pg_schema() as schema:
        assert PG_DSN is not None
        log = PostgresAuditLog(PG_DSN, schema=schema, key_directory=tmp_path / "audit")
        try:
            for i in range(12):
                log.append_now(event(i))
            assert make_checkpoint(log, keys, issuer="veilgate") is not None
            assert verify_log(log, keys.jwks()).failure is None
            with psycopg.connect(PG_DSN, autocommit=True) as conn:
                leaves = psycopg.sql.Identifier(schema, "leaves")
                conn.execute(
                    psycopg.sql.SQL(
                        "UPDATE {} SET record = replace(record, 'req-000005', 'req-999999') WHERE seq = 5"
                    ).format(leaves)
                )
            failure = verify_log(log, keys.jwks()).failure
        finally:
            log.close()
    assert failure is not None
    assert failure.startswith("leaf 5 was changed after it was written")


@pytest.mark.parametrize("drop_checkpoints", [False, True])
def test_the_signer_never_signs_a_log_rewritten_under_it(template: Template, drop_checkpoints: bool) -> None:
    """Write access to the database, not to the keys: leaf 5 rewritten with its hash (and the
    checkpoints deleted, so the log looks consistent), one more leaf appended. The gateway signs
    nothing: the tree must hold the newest stored checkpoint and the head kept out of the database."""
    from gateway.services.audit_trail import SIGNED_HEAD_FILE, LogForked

    with copy_of(template) as (root, db):
        keys = KeyRing.load(root / "keys")
        kept = root / "audit" / SIGNED_HEAD_FILE
        log = SqliteAuditLog.open(root / "audit")
        log.append_now(event(SIZE))
        made = make_checkpoint(log, keys, issuer="veilgate", kept=kept)
        log.close()
        assert made is not None and kept.is_file()
        record = _record(db, 5)
        record["status"] = 403
        _store(db, 5, record, rehash=True)
        if drop_checkpoints:
            db.execute("DELETE FROM checkpoints")
        log = SqliteAuditLog.open(root / "audit")
        try:
            log.append_now(event(SIZE + 1))
            with pytest.raises(LogForked, match="no longer holds the checkpoint of size"):
                make_checkpoint(log, keys, issuer="veilgate", kept=kept)
            assert log.latest_checkpoint() is None if drop_checkpoints else log.latest_checkpoint() == made
        finally:
            log.close()


def test_a_head_signed_by_another_replica_meanwhile_is_no_fork(
    template: Template, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two replicas sign in turn: a head stored by the other one while this one reads the log's
    size is no sign of a rewrite (the heads are read first, the size after)."""
    from gateway.services.audit_trail import SIGNED_HEAD_FILE

    with copy_of(template) as (root, _db):
        keys = KeyRing.load(root / "keys")
        mine, other = SqliteAuditLog.open(root / "audit"), SqliteAuditLog.open(root / "audit")
        mine.append_now(event(SIZE))
        real_size = mine.size

        def size_while_the_other_signs() -> int:
            found = real_size()
            other.append_now(event(SIZE + 1))
            assert make_checkpoint(other, keys, issuer="veilgate") is not None
            return found

        monkeypatch.setattr(mine, "size", size_while_the_other_signs)
        try:
            made = make_checkpoint(mine, keys, issuer="veilgate", kept=root / "audit" / SIGNED_HEAD_FILE)
            assert made is None or made.size == SIZE + 1
        finally:
            mine.close()
            other.close()
