"""Objections on both stores: the file always, PostgreSQL when VEILGATE_TEST_PG_DSN is set.
Filed through one handle (another process, or a replica), answered through another."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from gateway.errors import Conflict, NotFound
from gateway.state.objections_file import FileObjectionStore
from gateway.state.objections_postgres import PostgresObjectionStore
from gateway.state.ports import ObjectionStore, Status
from tests.conftest import ON_POSTGRES, store_handles


@pytest.fixture(params=["file", ON_POSTGRES])
def open_store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Callable[[], ObjectionStore]]:
    with store_handles(
        request.param,
        lambda: FileObjectionStore(tmp_path / "objections.json"),
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
