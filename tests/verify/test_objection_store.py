"""Objections on both stores: SQLite always, PostgreSQL when VEILGATE_TEST_PG_DSN is set.
Filed through one handle (another process, or a replica), answered through another."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from gateway.errors import Conflict, NotFound
from gateway.state.objections_postgres import PostgresObjectionStore
from gateway.state.objections_sqlite import SqliteObjectionStore
from gateway.state.ports import ObjectionStore, Status
from tests.conftest import ON_POSTGRES, store_handles


@pytest.fixture(params=["sqlite", ON_POSTGRES])
def open_store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Callable[[], ObjectionStore]]:
    with store_handles(
        request.param,
        lambda: SqliteObjectionStore(tmp_path / "objections.sqlite3"),
        lambda dsn, schema: PostgresObjectionStore(dsn, schema=schema),
    ) as factory:
        yield factory


def test_an_objection_moves_only_forward_whoever_answers(open_store: Callable[[], ObjectionStore]) -> None:
    filing, answering = open_store(), open_store()
    mine = filing.file(consumer="bank-1", about="dataset", subject="enterprise_registry", text="wrong status")
    other = filing.file(consumer="bank-2", about="receipt", subject="req-1", text="not mine")
    assert {o["id"] for o in answering.list()} == {mine["id"], other["id"]}
    assert [o["id"] for o in answering.list("bank-1")] == [mine["id"]]
    with pytest.raises(Conflict, match="open can move to accepted, rejected"):
        answering.move(mine["id"], Status.CORRECTED, reply="done", by="admin")
    answering.move(mine["id"], Status.ACCEPTED, reply="looking", by="admin")
    moved = answering.move(mine["id"], Status.CORRECTED, reply="fixed in version 2", by="admin")
    assert moved["status"] == "corrected" and [s["status"] for s in moved["steps"]] == ["accepted", "corrected"]
    assert filing.get(mine["id"]) == moved
    with pytest.raises(Conflict, match="closed"):
        filing.move(mine["id"], Status.REJECTED, reply="no", by="admin")
    with pytest.raises(NotFound):
        filing.get("no-such-objection")


def test_an_objections_file_of_before_is_imported_once(tmp_path: Path) -> None:
    """An installation's `objections.json`, in the format the file store wrote, is copied into
    the new SQLite file on first open, and the file kept as `.imported`."""
    legacy = tmp_path / "objections.json"
    step = {"status": "accepted", "reply": "looking", "by": "admin", "at": "2026-01-02T00:00:00+00:00"}
    answered = {"id": "a1", "consumer": "bank-1", "about": "dataset", "subject": "enterprise_registry",
                "text": "wrong", "status": "accepted", "filed_at": "2026-01-01T00:00:00+00:00",
                "steps": [step]}  # fmt: skip
    later = {**answered, "id": "b2", "consumer": "bank-2", "status": "open", "filed_at": "2026-02-01T00:00:00+00:00",
             "steps": []}  # fmt: skip
    legacy.write_text(json.dumps({"objections": {"b2": later, "a1": answered}}), encoding="utf-8")
    store = SqliteObjectionStore(tmp_path / "objections.sqlite3", import_from=legacy)
    try:
        assert store.list() == [answered, later] and store.list("bank-2") == [later]
        assert not legacy.exists() and (tmp_path / "objections.json.imported").is_file()
        moved = store.move("a1", Status.CORRECTED, reply="fixed", by="admin")
        assert [s["status"] for s in moved["steps"]] == ["accepted", "corrected"]
    finally:
        store.close()
    legacy.write_text(json.dumps({"objections": {"b2": later, "a1": answered}}), encoding="utf-8")
    again = SqliteObjectionStore(tmp_path / "objections.sqlite3", import_from=legacy)  # not over objections
    try:
        assert again.get("a1")["status"] == "corrected" and legacy.exists()
    finally:
        again.close()
