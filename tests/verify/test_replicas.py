"""Two gateway replicas that share nothing but PostgreSQL (each its own state directory, as on two
machines): a consumer's quota and probing limit hold across both, counted once, both write one
audit log, and an emergency stop, a disabled account or a revoked grant made through one is in
force in the other."""

from __future__ import annotations

import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx2
import pytest

from gateway.domain.budget import Accounts, Amount, accounts
from gateway.domain.policy import FreezeKind
from gateway.errors import ConfigurationError
from gateway.services.runtime import Runtime
from gateway.state.audit_sqlite import SqliteAuditLog
from gateway.state.budget_sqlite import SqliteBudgetLedger
from gateway.state.freezes_postgres import PostgresFreezeStore
from gateway.state.freezes_sqlite import SqliteFreezeStore
from tests.conftest import PG_DSN, Installation, needs_pg, pg_schema, policy_copy, serve_process
from tests.trust.conftest import event
from tests.verify.conftest import SERVICE, enterprises

pytestmark = [pytest.mark.postgres, needs_pg]


def new_replica(installation: Installation, state: Path) -> Path:
    """The installation's state directory for a replica on PostgreSQL: its own audit file left out,
    as on a new installation (one with a trail of its own would not start, see below)."""
    shutil.copytree(installation.settings.state_dir, state, ignore=shutil.ignore_patterns("log.sqlite3*"))
    return state


@pytest.fixture
def replicas(installation: Installation, tmp_path: Path) -> Iterator[list[str]]:
    def tight(bundle: dict[str, Any]) -> None:
        bundle["grants"]["bank-sme-credit-2026"]["quotas"] = {"daily_claims": 12}
        bundle["verification_services"][SERVICE]["limits"].update(probe_checks_per_key=3)

    policies = policy_copy(tmp_path / "policies", tight)
    configs = []
    with pg_schema() as schema:
        for name in ("a", "b"):
            state = tmp_path / f"replica-{name}"
            new_replica(installation, state)
            config = tmp_path / f"replica-{name}.toml"
            config.write_text(
                f'state_dir = "{state}"\npolicy_dir = "{policies}"\n'
                f'database_dsn = "{PG_DSN}"\ndatabase_schema = "{schema}"\n'
            )
            configs.append(config)
        with serve_process(configs[0]) as (first, _one), serve_process(configs[1]) as (second, _two):
            yield [first, second]


def test_limits_hold_across_replicas_on_postgres(replicas: list[str], installation: Installation) -> None:
    first, second = replicas
    form = {
        "grant_type": "client_credentials",
        "client_id": "demo-business",
        "client_secret": installation.credentials["demo-business"],
    }
    token = httpx2.post(f"{first}/v1/token", data=form).json()["access_token"]
    bank = {"Authorization": f"Bearer {token}"}
    rows = enterprises(installation, 20)

    def verify(base: str, index: int, checks: dict[str, Any] | None = None) -> httpx2.Response:
        claim = {"keys": {"credit_code": rows[index]["credit_code"]}, "checks": checks or {"active": True}}
        return httpx2.post(
            f"{base}/v1/verify/{SERVICE}", json={"purpose": "credit_assessment", "claims": [claim]}, headers=bank
        )

    # Three questions about one entity are allowed; asked alternately through both replicas.
    asked = [verify((first, second)[i % 2], 19, {"name": f"guess {i}"}) for i in range(4)]
    assert [r.status_code for r in asked] == [200, 200, 200, 429]
    assert "different questions about one entity" in asked[3].json()["detail"]
    # A repeat through the other replica gets the stored answer and is not counted again.
    repeat = verify(first, 19, {"name": "guess 1"})
    assert repeat.status_code == 200
    assert repeat.json()["result"]["answers"][0]["result"] == asked[1].json()["result"]["answers"][0]["result"]

    # The rest of the daily quota of 12 claims (3 used), spent alternately through both.
    statuses = [verify((first, second)[i % 2], i).status_code for i in range(11)]
    assert statuses[:9] == [200] * 9 and statuses[9:] == [429, 429]
    refused = verify(second, 15)
    assert "daily quota of 12 claims" in refused.json()["detail"]
    assert refused.headers["Retry-After"].isdigit()

    # One audit log: a receipt from one replica names a leaf the other proves, in one tree.
    released = verify(first, 0)  # a repeat, answered from storage
    seq = released.json()["audit_seq"]
    leaf = httpx2.get(f"{second}/v1/audit/leaves/{seq}", headers=bank)
    assert leaf.status_code == 200 and leaf.json()["request_id"] == released.json()["request_id"]
    size = seq + 1
    proofs = [httpx2.get(f"{base}/v1/audit/proof/inclusion", params={"leaf": seq, "size": size}) for base in replicas]
    assert proofs[0].status_code == proofs[1].status_code == 200
    assert proofs[0].json() == proofs[1].json()

    # An emergency stop made through one replica is in force in the other once its notice
    # arrives (milliseconds), without a shared state directory.
    form["client_id"], form["client_secret"] = "demo-admin", installation.credentials["demo-admin"]
    admin = {"Authorization": f"Bearer {httpx2.post(f'{second}/v1/token', data=form).json()['access_token']}"}
    body = {"kind": "consumer", "name": "demo-business", "reason": "incident"}
    assert httpx2.post(f"{second}/v1/admin/freeze", json=body, headers=admin).status_code == 201
    deadline = time.monotonic() + 5
    while (stopped := verify(first, 1)).status_code == 200 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert stopped.status_code == 403 and stopped.json()["type"].endswith("/frozen")

    # An account made through one replica works on the other; disabled there, it stops here.
    made = httpx2.post(
        f"{second}/v1/admin/consumers",
        json={"client_id": "bank-two", "organisation": "Demo Commercial Bank", "roles": ["consumer"]},
        headers=admin,
    )
    assert made.status_code == 201
    own = {"grant_type": "client_credentials", "client_id": "bank-two", "client_secret": made.json()["client_secret"]}
    deadline = time.monotonic() + 5
    while (issued := httpx2.post(f"{first}/v1/token", data=own)).status_code != 200 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert issued.status_code == 200
    mine = {"Authorization": f"Bearer {issued.json()['access_token']}"}
    assert httpx2.get(f"{first}/v1/me", headers=mine).status_code == 200
    assert httpx2.delete(f"{second}/v1/admin/consumers/bank-two", headers=admin).status_code == 204
    deadline = time.monotonic() + 5
    while (me := httpx2.get(f"{first}/v1/me", headers=mine)).status_code == 200 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert me.status_code == 401

    # The stop's lift asked by a second person through the other replica, then agreed through
    # this one; the grant revoked through it: the other serves again, then refuses, without a
    # shared policy directory.
    form["client_id"], form["client_secret"] = "demo-approver", installation.credentials["demo-approver"]
    approver = {"Authorization": f"Bearer {httpx2.post(f'{first}/v1/token', data=form).json()['access_token']}"}
    body = {"kind": "consumer", "name": "demo-business", "reason": "resolved"}
    assert httpx2.post(f"{first}/v1/admin/unfreeze", json=body, headers=approver).status_code == 202
    assert verify(first, 1).status_code == 403
    assert httpx2.post(f"{second}/v1/admin/unfreeze", json=body, headers=admin).status_code == 200
    deadline = time.monotonic() + 5
    while (served := verify(first, 1)).status_code != 200 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert served.status_code == 200
    revoked = httpx2.delete(
        f"{second}/v1/admin/grants/bank-sme-credit-2026", params={"reason": "contract ended"}, headers=admin
    )
    assert revoked.status_code == 200, revoked.text
    deadline = time.monotonic() + 5
    while (denied := verify(first, 1)).status_code == 200 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert denied.status_code == 403 and denied.json()["type"].endswith("/policy-denied")


def test_a_replica_with_another_subject_secret_does_not_start(installation: Installation, tmp_path: Path) -> None:
    """Set up on its own, a replica has another secret, so other pseudonyms for the same entities:
    against a shared ledger it would let each entity be asked about once more per secret."""
    state = new_replica(installation, tmp_path / "replica-own-secret")
    (state / "audit" / "subject.key").unlink()  # made anew on open, as on a freshly set-up machine
    with pg_schema() as schema:
        first = installation.settings.model_copy(
            update={"state_dir": new_replica(installation, tmp_path / "first"), "database_dsn": PG_DSN,
                    "database_schema": schema}
        )  # fmt: skip
        second = first.model_copy(update={"state_dir": state})
        Runtime.open(first).close()
        with pytest.raises(ConfigurationError, match="subject secret"):
            Runtime.open(second)
        (state / "audit" / "subject.key").write_bytes((first.audit_dir / "subject.key").read_bytes())
        Runtime.open(second).close()  # with the first one's secret copied over, it starts


def test_an_installation_with_history_in_its_files_does_not_start_on_postgres(
    installation: Installation, tmp_path: Path
) -> None:
    """Switched to PostgreSQL, it would spend again budgets already spent, begin its audit trail
    anew under receipts that name the old one, and lift its emergency stops."""
    with pg_schema() as schema:
        on_postgres = installation.settings.model_copy(update={"database_dsn": PG_DSN, "database_schema": schema})
        served = SqliteAuditLog.open(installation.settings.audit_dir)  # it has served before
        served.append_now(event(1))
        served.close()
        with pytest.raises(ConfigurationError, match="begin the trail anew"):
            Runtime.open(on_postgres)
    state = new_replica(installation, tmp_path / "spent")
    ledger = SqliteBudgetLedger(state / "ledger" / "budget.sqlite3")
    ledger.commit(ledger.reserve(_accounts(), Amount(100_000)))
    ledger.close()
    with pg_schema() as schema:
        spent = installation.settings.model_copy(
            update={"state_dir": state, "database_dsn": PG_DSN, "database_schema": schema}
        )
        with pytest.raises(ConfigurationError, match="would forget them"):
            Runtime.open(spent)

    stopped = new_replica(installation, tmp_path / "stopped")
    local = SqliteFreezeStore(stopped / "freezes.sqlite3")
    local.freeze(FreezeKind.CONSUMER, "demo-business", by="a", reason="abuse")
    local.close()
    with pg_schema() as schema:
        on_postgres = installation.settings.model_copy(
            update={"state_dir": stopped, "database_dsn": PG_DSN, "database_schema": schema}
        )
        with pytest.raises(ConfigurationError, match="would lift those stops"):
            Runtime.open(on_postgres)
        assert PG_DSN is not None
        again = PostgresFreezeStore(PG_DSN, schema=schema, listen=False)  # made again, as the message says
        again.freeze(FreezeKind.CONSUMER, "demo-business", by="a", reason="abuse")
        again.close()
        Runtime.open(on_postgres).close()


def _accounts() -> Accounts:
    big = Amount(10**9)
    return accounts(grant="g", consumer="c", organisation="o", dataset="d", version="v",
                    grant_cap=big, organisation_cap=big, dataset_version_cap=big)  # fmt: skip
