"""Client accounts on both stores: the file always, PostgreSQL when VEILGATE_TEST_PG_DSN is set.
A client disabled through one handle (another process, or a replica) is refused by the others."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from gateway.clients import ClientStore, FileClientStore, PostgresClientStore
from gateway.domain.principal import Role
from gateway.errors import Conflict, NotFound
from tests.conftest import ON_POSTGRES, PG_DSN, eventually, needs_pg, pg_schema, store_handles


@pytest.fixture(params=["file", ON_POSTGRES])
def open_store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Callable[[], ClientStore]]:
    """A factory: every call opens another handle on one set of accounts."""
    with store_handles(
        request.param,
        lambda: FileClientStore(tmp_path / "clients.json"),
        lambda dsn, schema: PostgresClientStore(dsn, schema=schema),
    ) as factory:
        yield factory


def test_accounts_are_made_checked_and_disabled_across_handles(open_store: Callable[[], ClientStore]) -> None:
    here, there = open_store(), open_store()
    secret = here.add("bank-1", "Bank One", [Role.CONSUMER])
    assert secret.startswith("vgs_") and secret not in repr(here.find("bank-1"))
    with pytest.raises(Conflict):
        here.add("bank-1", "Bank One", [Role.CONSUMER])
    found = here.check_credentials("bank-1", secret)
    assert found is not None and found.roles == frozenset({Role.CONSUMER})
    assert here.check_credentials("bank-1", secret + "x") is None
    assert here.check_credentials("nobody", secret) is None
    eventually(lambda: there.check_credentials("bank-1", secret) is not None)
    there.disable("bank-1")
    assert there.check_credentials("bank-1", secret) is None  # where it was disabled: at once
    eventually(lambda: here.check_credentials("bank-1", secret) is None)
    with pytest.raises(NotFound):
        there.disable("nobody")
    assert [(c.client_id, c.disabled) for c in here.all()] == [("bank-1", True)]


@pytest.mark.postgres
@needs_pg
def test_the_first_replica_copies_the_accounts_of_its_file(tmp_path: Path) -> None:
    file = FileClientStore(tmp_path / "clients.json")
    secret = file.add("admin-1", "Operator", [Role.ADMIN])
    assert PG_DSN is not None
    with pg_schema() as schema:
        first = PostgresClientStore(PG_DSN, schema=schema, seed_from=tmp_path / "clients.json")
        file.disable("admin-1")  # later changes to the file are not copied: the table is not empty
        second = PostgresClientStore(PG_DSN, schema=schema, seed_from=tmp_path / "clients.json")
        try:
            assert first.check_credentials("admin-1", secret) is not None
            assert second.check_credentials("admin-1", secret) is not None
        finally:
            first.close()
            second.close()
