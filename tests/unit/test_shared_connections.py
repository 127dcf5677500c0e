"""The stores of one process that read rarely share one PostgreSQL connection, and the values
every request consults share one listener: two connections, not eight, and still every change
reaches every handle, and each store's errors still name it."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from gateway.domain.policy import FreezeKind
from gateway.domain.principal import Role
from gateway.errors import DependencyError
from gateway.state.accounts_postgres import PostgresAccountStore
from gateway.state.backend import open_freezes, open_objections, open_policy_store, open_sessions
from gateway.state.jobs_postgres import PostgresJobStore
from tests.conftest import PG_DSN, eventually, make_settings, needs_pg, pg_schema

pytestmark = needs_pg
NAMES = ("veilgate-reader", "veilgate-listener")


def _connections() -> dict[str, int]:
    assert PG_DSN is not None
    with psycopg.connect(PG_DSN, autocommit=True) as admin:
        rows = admin.execute(
            "SELECT application_name, count(*) FROM pg_stat_activity WHERE application_name = ANY(%s) "
            "GROUP BY application_name",
            (list(NAMES),),
        ).fetchall()
    return {name: dict(rows).get(name, 0) for name in NAMES}


@pytest.fixture
def schema() -> Iterator[str]:
    with pg_schema() as name:
        yield name


def test_the_rarely_read_stores_of_a_process_share_one_connection_and_one_listener(schema: str, tmp_path: Path) -> None:
    before = _connections()
    with contextlib.ExitStack() as stores:
        opened = []
        for _replica in range(2):  # two handles on each store, as two replicas in one process
            settings = make_settings(tmp_path, database_dsn=PG_DSN, database_schema=schema)
            opened.append(
                (
                    stores.enter_context(contextlib.closing(PostgresAccountStore(str(PG_DSN), schema=schema))),
                    stores.enter_context(contextlib.closing(open_freezes(settings))),
                    stores.enter_context(contextlib.closing(open_policy_store(settings))),
                )
            )
            stores.enter_context(contextlib.closing(PostgresJobStore(str(PG_DSN), schema=schema)))
            stores.enter_context(contextlib.closing(open_objections(settings)))
            stores.enter_context(contextlib.closing(open_sessions(settings)))
        during = _connections()
        assert {n: during[n] - before[n] for n in NAMES} == {"veilgate-reader": 1, "veilgate-listener": 1}

        (clients, freezes, _policy), (other_clients, other_freezes, _other_policy) = opened
        freezes.freeze(FreezeKind.SERVICE, "svc", by="admin", reason="incident")
        eventually(lambda: (FreezeKind.SERVICE, "svc") in other_freezes.active())
        clients.add("new-client", "Org", [Role.CONSUMER])
        eventually(lambda: other_clients.find("new-client") is not None)

        # The listener is cut: every value reads its rows until it listens again, then keeps a copy.
        with psycopg.connect(str(PG_DSN), autocommit=True) as admin:
            admin.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = %s",
                          ("veilgate-listener",))  # fmt: skip
        other_freezes.unfreeze(FreezeKind.SERVICE, "svc", by="admin", reason="resolved")
        eventually(lambda: (FreezeKind.SERVICE, "svc") not in freezes.active())
        clients.disable("new-client", approvals_required=2)
        eventually(lambda: getattr(other_clients.find("new-client"), "disabled", False))
    eventually(lambda: _connections() == before)  # closed with the last handle


def test_a_shared_connection_still_names_the_store_that_cannot_read(tmp_path: Path) -> None:
    nowhere = "postgresql://nobody@127.0.0.1:1/none?connect_timeout=1"
    with pytest.raises(DependencyError, match="freezes cannot be read"):
        open_freezes(make_settings(tmp_path, database_dsn=nowhere))
    with pytest.raises(DependencyError, match="client accounts"):
        PostgresAccountStore("postgresql://nobody@127.0.0.1:1/none?connect_timeout=1", schema="veilgate")
