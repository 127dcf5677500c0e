"""Moving an installation's history into PostgreSQL: the same answers, budgets, stops and trail."""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from pathlib import Path

from typer.testing import CliRunner

from gateway.cli import app as cli
from gateway.domain.budget import Amount, accounts
from gateway.domain.policy import FreezeKind
from gateway.services.runtime import Runtime
from gateway.state.audit_sqlite import SqliteAuditLog
from gateway.state.backend import policy_database, sessions_file
from gateway.state.budget_postgres import PostgresBudgetLedger
from gateway.state.budget_sqlite import SqliteBudgetLedger
from gateway.state.ledger_sqlite import SqliteLedger
from gateway.state.policy_sqlite import SqlitePolicyStore
from gateway.state.sessions_sqlite import SqliteSessionStore
from tests.conftest import PG_DSN, Installation, bearer, get_token, needs_pg, pg_schema
from tests.verify.conftest import Gateway, enterprises

pytestmark = [needs_pg]


def _postgres_config(inst: Installation, schema: str) -> Path:
    """The installation's configuration with its shared state in `schema` of PostgreSQL."""
    config = inst.root / "postgres.toml"
    config.write_text(
        f'state_dir = "{inst.settings.state_dir}"\npolicy_dir = "{inst.settings.policy_dir}"\n'
        f'database_dsn = "{PG_DSN}"\ndatabase_schema = "{schema}"\n'
    )
    return config


def test_an_installation_moves_to_postgres_with_its_history(gateway_for: Callable[..., Gateway]) -> None:
    gw = gateway_for()
    inst = gw.installation
    code = enterprises(inst)[0]["credit_code"]
    claim = [{"keys": {"credit_code": code}, "checks": {"legal_representative": "someone else"}}]
    assert gw.verify(claim).status_code == 200  # a counted claim, a stored answer, a leaf
    admin = bearer(get_token(gw.client, "demo-admin", inst.credentials["demo-admin"]))
    stop = {"kind": "service", "name": "tax-compliance", "reason": "investigation"}
    assert gw.client.post("/v1/admin/freeze", json=stop, headers=admin).status_code == 201
    gw.client.close()  # the single host stops; its history is in its files
    local_log = SqliteAuditLog.open(inst.settings.audit_dir)
    size, root = local_log.size(), local_log.root(local_log.size())
    local_log.close()
    local_ledger = SqliteLedger.open(inst.settings.state_dir / "ledger")
    usage = local_ledger.usage("bank-sme-credit-2026")
    local_ledger.close()
    local_policy = SqlitePolicyStore(policy_database(inst.settings))
    in_force = local_policy.active_version()
    local_policy.close()
    assert size > 0 and usage and in_force
    ended = SqliteSessionStore(sessions_file(inst.settings))  # a console logout, and one long expired
    ended.end("logged-out", until=int(time.time()) + 3600)
    ended.end("expired", until=int(time.time()) - 60)
    ended.close()

    with pg_schema() as schema:
        config = _postgres_config(inst, schema)
        moved = CliRunner().invoke(cli, ["database", "import", "--config", str(config)])
        assert moved.exit_code == 0, moved.output
        copied = re.search(r"^audit log: (\d+) copied$", moved.output, re.M)
        assert copied is not None and int(copied.group(1)) >= size  # leaves, and checkpoints
        assert "freezes: 1 copied" in moved.output
        assert "ended console sessions: 1 copied" in moved.output
        again = CliRunner().invoke(cli, ["database", "import", "--config", str(config)])
        assert again.exit_code == 0
        verified = CliRunner().invoke(cli, ["audit", "verify", "--config", str(config)])
        assert verified.exit_code == 0, verified.output  # the moved log, against its checkpoints
        assert all(n == "0" for n in re.findall(r": (\d+) copied", again.output))  # nothing twice

        settings = inst.settings.model_copy(update={"database_dsn": PG_DSN, "database_schema": schema})
        rt = Runtime.open(settings)  # it starts: nothing is left behind in the files
        try:
            assert rt.audit.root(size) == root  # the same tree: every old receipt still proves
            assert (FreezeKind.SERVICE, "tax-compliance") in rt.freezes.active()
            assert rt.ledger.usage("bank-sme-credit-2026") == usage
            assert rt.policy_store.active_version() == in_force
            assert rt.clients.find("demo-business") is not None
            assert rt.sessions.has_ended("logged-out") and not rt.sessions.has_ended("expired")
        finally:
            rt.close()


def test_spent_budgets_move_with_the_installation(tmp_path: Path) -> None:
    local = SqliteBudgetLedger(tmp_path / "budget.sqlite3")
    acc = accounts(
        grant="g", consumer="c", organisation="o", dataset="d", version="v",
        grant_cap=Amount(10**6), organisation_cap=Amount(10**6), dataset_version_cap=Amount(10**6),
    )  # fmt: skip
    local.commit(local.reserve(acc, Amount(300_000)))
    held = local.reserve(acc, Amount(100_000))
    local.close()
    assert PG_DSN is not None
    with pg_schema() as schema:
        shared = PostgresBudgetLedger(PG_DSN, schema=schema)
        try:
            assert shared.import_from(tmp_path / "budget.sqlite3") == 2 + 2 * 3 + 3  # reservations, postings, balances
            assert shared.import_from(tmp_path / "budget.sqlite3") is None  # not twice
            balance = shared.balance(acc.grant)
            assert balance.spent == Amount(300_000) and balance.reserved == Amount(100_000)
            assert [s.id for s in shared.stale("9999")] == [held]
        finally:
            shared.close()


def test_host_commands_before_the_import_begin_no_new_trail(gateway_for: Callable[..., Gateway]) -> None:
    """Under a configuration that names PostgreSQL, whose log is still empty while the SQLite one
    has leaves, a host command's leaf would begin the trail anew (and the import would then find
    the log taken and copy nothing): the command changes nothing and says to import first. An
    emergency stop is the exception: it is made, and says it is not in the log."""
    gw = gateway_for()
    inst = gw.installation
    assert gw.verify([{"keys": {"credit_code": enterprises(inst)[0]["credit_code"]}, "checks": {"active": True}}])
    gw.client.close()
    with pg_schema() as schema:
        config = _postgres_config(inst, schema)
        rotated = CliRunner().invoke(cli, ["keys", "rotate", "--config", str(config)])
        assert rotated.exit_code == 1 and "veilgate database import" in rotated.output
        assert "nothing was changed" in rotated.output
        frozen = CliRunner().invoke(
            cli, ["freeze", "service", "tax-compliance", "--reason", "now", "--config", str(config)]
        )
        assert frozen.exit_code == 0 and "not in the audit log" in frozen.output
        moved = CliRunner().invoke(cli, ["database", "import", "--config", str(config)])
        assert moved.exit_code == 0, moved.output
        (audit,) = [line for line in moved.output.splitlines() if line.startswith("audit log:")]
        assert audit != "audit log: it already holds data; nothing copied" and audit.endswith("copied")
