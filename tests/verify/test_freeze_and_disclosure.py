"""Emergency stops take effect on the next request of the process that made them and on every
other process's first request after its recheck interval; disclosure matches the bundle."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from unittest.mock import patch

import pytest
from typer.testing import CliRunner

from gateway.cli import app as cli
from gateway.domain.policy import LIFT_REQUEST_LIFETIME, FreezeKind
from gateway.domain.principal import Role
from gateway.errors import Conflict, DependencyError, NotFound
from gateway.policy import load_bundle
from gateway.state import freezes
from gateway.state.freezes_postgres import PostgresFreezeStore
from gateway.state.freezes_sqlite import SqliteFreezeStore
from gateway.state.ports import FreezeStore, LiftApproval
from tests.conftest import (
    ON_POSTGRES,
    PG_DSN,
    REPO,
    bearer,
    eventually,
    get_token,
    needs_pg,
    pg_schema,
    store_handles,
)
from tests.verify.conftest import Gateway, enterprises


def _claim(gw: Gateway, index: int = 0) -> list[dict[str, object]]:
    return [{"keys": {"credit_code": enterprises(gw.installation)[index]["credit_code"]}, "checks": {"active": True}}]


@pytest.mark.parametrize(
    ("kind", "name"),
    [
        ("consumer", "demo-business"),
        ("organisation", "demo-bank"),
        ("service", "enterprise-registration"),
        ("dataset", "enterprise_registry"),
    ],
)
def test_a_freeze_stops_the_next_request_and_unfreeze_resumes(
    gateway_for: Callable[..., Gateway], kind: str, name: str
) -> None:
    gw = gateway_for()
    admin = bearer(get_token(gw.client, "demo-admin", gw.installation.credentials["demo-admin"]))
    approver = bearer(get_token(gw.client, "demo-approver", gw.installation.credentials["demo-approver"]))
    assert gw.verify(_claim(gw)).status_code == 200
    made = gw.client.post("/v1/admin/freeze", json={"kind": kind, "name": name, "reason": "incident 42"}, headers=admin)
    assert made.status_code == 201, made.text
    refused = gw.verify(_claim(gw, 1))
    assert refused.status_code == 403
    assert refused.json()["type"].endswith("/frozen") and "incident 42" in refused.json()["detail"]
    again = gw.client.post("/v1/admin/freeze", json={"kind": kind, "name": name, "reason": "again"}, headers=admin)
    assert again.status_code == 409
    body = {"kind": kind, "name": name, "reason": "fixed"}
    asked = gw.client.post("/v1/admin/unfreeze", json=body, headers=admin)
    assert asked.status_code == 202 and asked.json()["lift"]["by"] == ["demo-admin"]
    assert gw.verify(_claim(gw, 1)).status_code == 403  # one administrator's request lifts nothing
    lifted = gw.client.post("/v1/admin/unfreeze", json={**body, "reason": "agreed"}, headers=approver)
    assert lifted.status_code == 200 and lifted.json()["reason"] == "incident 42"
    assert gw.verify(_claim(gw, 1)).status_code == 200
    listed = gw.client.get("/v1/admin/freezes", headers=admin).json()
    assert listed["active"] == [] and [h["action"] for h in listed["history"]] == ["freeze", "lift asked", "unfreeze"]
    assert listed["history"][0]["by"] == "demo-admin"
    assert listed["history"][2]["by"] == "demo-approver" and listed["history"][2]["asked_by"] == ["demo-admin"]


def test_one_person_cannot_lift_a_freeze_alone(gateway_for: Callable[..., Gateway]) -> None:
    """An administrator who asks twice, or again from a second account of the same person, lifts
    nothing; a second person does."""
    gw = gateway_for()
    rt = gw.client.app.state.runtime  # type: ignore[attr-defined]
    alias = rt.clients.add("admin-alias", "Demo Public Data Administration", [Role.ADMIN], person="Demo Administrator")
    secrets = {"admin-alias": alias, **gw.installation.credentials}
    tokens = {
        who: bearer(get_token(gw.client, who, secrets[who])) for who in ("demo-admin", "demo-approver", "admin-alias")
    }
    body = {"kind": "consumer", "name": "demo-business", "reason": "leaked secret"}
    assert gw.client.post("/v1/admin/freeze", json=body, headers=tokens["demo-approver"]).status_code == 201
    assert gw.client.post("/v1/admin/unfreeze", json=body, headers=tokens["demo-admin"]).status_code == 202
    twice = gw.client.post("/v1/admin/unfreeze", json=body, headers=tokens["demo-admin"])
    assert twice.status_code == 409 and "another administrator" in twice.json()["detail"]
    alias_lift = gw.client.post("/v1/admin/unfreeze", json=body, headers=tokens["admin-alias"])
    assert alias_lift.status_code == 409  # the same person, through another account
    assert gw.verify(_claim(gw)).status_code == 403
    assert gw.client.post("/v1/admin/unfreeze", json=body, headers=tokens["demo-approver"]).status_code == 200
    assert gw.verify(_claim(gw)).status_code == 200


def test_a_lift_request_is_void_after_a_day(open_store: Callable[[], FreezeStore]) -> None:
    """An approval given long after the request would restart a use on reasons nobody holds."""
    store = open_store()
    stop = (FreezeKind.SERVICE, "tax-compliance")
    store.freeze(*stop, by="a", reason="incident")
    asked = store.unfreeze(*stop, by="a", reason="fixed", approval=LiftApproval("person:a", 2))
    assert not asked.lifted and stop in store.active()
    assert store.active()[stop].lift is not None
    later = datetime.now(UTC) + LIFT_REQUEST_LIFETIME + timedelta(seconds=1)
    assert store.active()[stop].as_shown(later).lift is None  # shown to nobody as waiting
    with patch.object(freezes, "datetime", wraps=datetime) as clock:
        clock.now.return_value = later
        again = store.unfreeze(*stop, by="b", reason="ok", approval=LiftApproval("person:b", 2))
    assert not again.lifted and again.freeze.lift is not None and again.freeze.lift.by == ("b",)
    assert stop in store.active()
    lifted = store.unfreeze(*stop, by="a", reason="ok", approval=LiftApproval("person:a", 2))
    assert lifted.lifted and store.active() == {}


def test_only_admins_freeze(gateway_for: Callable[..., Gateway]) -> None:
    gw = gateway_for()
    body = {"kind": "consumer", "name": "demo-business", "reason": "x"}
    for who in ("demo-business", "demo-auditor", "demo-researcher"):
        token = bearer(get_token(gw.client, who, gw.installation.credentials[who]))
        assert gw.client.post("/v1/admin/freeze", json=body, headers=token).status_code == 403
    assert gw.client.post("/v1/admin/freeze", json=body).status_code == 401
    auditor = bearer(get_token(gw.client, "demo-auditor", gw.installation.credentials["demo-auditor"]))
    assert gw.client.get("/v1/admin/freezes", headers=auditor).status_code == 200


def test_a_freeze_from_the_cli_reaches_a_running_gateway(gateway_for: Callable[..., Gateway]) -> None:
    """What an operator does when the API itself is the problem: another process writes the stop,
    in force on the gateway's first request once its recheck interval has passed."""
    gw = gateway_for()
    interval = gw.installation.settings.state_recheck_seconds
    assert 0 < interval <= 1  # the default: the file is not looked at on every request
    assert gw.verify(_claim(gw)).status_code == 200  # the freezes file read, its stamp remembered
    config = ["--config", str(gw.installation.root / "veilgate.toml")]
    result = CliRunner().invoke(cli, ["freeze", "consumer", "demo-business", "--reason", "leaked secret", *config])
    assert result.exit_code == 0, result.output
    time.sleep(interval)
    assert gw.verify(_claim(gw)).status_code == 403
    twice = CliRunner().invoke(cli, ["freeze", "consumer", "demo-business", "--reason", "x", *config])
    assert twice.exit_code == 1 and "already frozen" in twice.output
    assert (
        CliRunner().invoke(cli, ["unfreeze", "consumer", "demo-business", "--reason", "rotated", *config]).exit_code
        == 0
    )
    time.sleep(interval)
    assert gw.verify(_claim(gw)).status_code == 200


@pytest.fixture(params=["sqlite", ON_POSTGRES])
def open_store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Callable[[], FreezeStore]]:
    with store_handles(
        request.param,
        lambda: SqliteFreezeStore(tmp_path / "freezes.sqlite3"),
        lambda dsn, schema: PostgresFreezeStore(dsn, schema=schema, listen=False),
    ) as factory:
        yield factory


def test_the_store_keeps_history_and_refuses_nonsense(open_store: Callable[[], FreezeStore]) -> None:
    store = open_store()
    assert store.active() == {}
    store.freeze(FreezeKind.SERVICE, "tax-compliance", by="a", reason="r")
    with pytest.raises(Conflict):
        store.freeze(FreezeKind.SERVICE, "tax-compliance", by="a", reason="r")
    with pytest.raises(NotFound):
        store.unfreeze(FreezeKind.DATASET, "tax_compliance", by="a", reason="r")
    other_process = open_store()
    assert (FreezeKind.SERVICE, "tax-compliance") in other_process.active()
    other_process.unfreeze(FreezeKind.SERVICE, "tax-compliance", by="b", reason="r")
    with pytest.raises(NotFound):
        store.unfreeze(FreezeKind.SERVICE, "tax-compliance", by="a", reason="r")
    assert store.active() == {}
    assert [(h["action"], h["by"]) for h in store.history()] == [("freeze", "a"), ("unfreeze", "b")]


def test_a_freezes_file_of_before_is_imported_once_with_its_history(tmp_path: Path) -> None:
    """An installation's `freezes.json`, in the format the file store wrote: its stops and history
    are copied into the new SQLite file on first open, and the file kept as `.imported`."""
    legacy = tmp_path / "freezes.json"
    since = "2026-01-02T03:04:05+00:00"
    stop = {"kind": "consumer", "name": "demo-business", "since": since, "by": "admin", "reason": "leaked"}
    lifted = {"action": "unfreeze", "kind": "service", "name": "svc", "since": since, "by": "b", "reason": "ok"}
    history = [{"action": "freeze", **stop, "name": "svc", "kind": "service"}, lifted, {"action": "freeze", **stop}]
    legacy.write_text(json.dumps({"active": [stop], "history": history}), encoding="utf-8")
    store = SqliteFreezeStore(tmp_path / "freezes.sqlite3", import_from=legacy)
    try:
        assert list(store.active()) == [(FreezeKind.CONSUMER, "demo-business")]
        assert store.active()[(FreezeKind.CONSUMER, "demo-business")].reason == "leaked"
        assert store.history() == history
        assert not legacy.exists() and (tmp_path / "freezes.json.imported").is_file()
        store.unfreeze(FreezeKind.CONSUMER, "demo-business", by="admin", reason="rotated")
    finally:
        store.close()
    legacy.write_text(json.dumps({"active": [stop], "history": [{"action": "freeze", **stop}]}), encoding="utf-8")
    again = SqliteFreezeStore(tmp_path / "freezes.sqlite3", import_from=legacy)  # not over a store with history
    try:
        assert again.active() == {} and len(again.history()) == 4 and legacy.exists()
    finally:
        again.close()


def test_disclosure_matches_the_bundle(gateway_for: Callable[..., Gateway]) -> None:
    gw = gateway_for()
    bundle = load_bundle(REPO / "policies")
    authorizations = gw.client.get("/v1/disclosure/authorizations").json()
    assert authorizations["policy_version"] == bundle.version
    by_name = {a["grant"]: a for a in authorizations["authorizations"]}
    assert set(by_name) == set(bundle.grants)
    grant = by_name["bank-sme-credit-2026"]
    source = bundle.grants["bank-sme-credit-2026"]
    assert grant["grant"] == "bank-sme-credit-2026" and grant["organisation"] == "Demo Commercial Bank"
    assert [s["name"] for s in grant["services"]] == list(source.services)
    assert grant["datasets"] == ["enterprise_registry", "tax_compliance"]
    assert [p["name"] for p in grant["purposes"]] == list(source.purposes)
    assert grant["expires"] == source.expires.isoformat()
    services = {s["name"]: s for s in gw.client.get("/v1/disclosure/services").json()["services"]}
    assert set(services) == set(bundle.verification_services) | set(bundle.aggregate_templates) | set(
        bundle.models
    ) | set(bundle.job_services)
    assert {s["kind"] for n, s in services.items() if n in bundle.aggregate_templates} == {"aggregate"}
    research = by_name["labour-research-2026"]
    assert research["datasets"] == ["enterprise_registry", "social_insurance", "tax_compliance"]
    assert [s["name"] for s in research["services"]] == list(bundle.grants["labour-research-2026"].services)
    registration = services["enterprise-registration"]
    assert registration["price"] == {
        "title": "Commercial verification, per claim",
        "unit": "call",
        "price_yuan": "0.05",
        "cap_yuan": "0.10",
    }
    assert [f["name"] for f in registration["fields"]] == list(
        bundle.verification_services["enterprise-registration"].fields
    )
    assert registration["available"] is True


def test_usage_is_disclosed_per_service_and_month_without_keys(gateway_for: Callable[..., Gateway]) -> None:
    gw = gateway_for()
    claims = _claim(gw, 0) + _claim(gw, 1)
    assert gw.verify(claims).status_code == 200
    assert gw.verify(claims).status_code == 200  # repeats: a call, but no new claims
    response = gw.client.get("/v1/disclosure/usage")
    (row,) = response.json()["usage"]
    assert (row["service"], row["calls"], row["claims"]) == ("enterprise-registration", 2, 2)
    assert (row["kind"], row["releases"], row["privacy_budget_spent"]) == ("verification", 0, {})  # not DP
    assert all(c["keys"]["credit_code"] not in response.text for c in claims)  # type: ignore[index]


@pytest.mark.postgres
@needs_pg
def test_freezes_in_postgres_reach_every_replica_and_survive_a_cut_listener() -> None:
    import psycopg

    assert PG_DSN is not None
    with pg_schema() as schema:
        here, there = PostgresFreezeStore(PG_DSN, schema=schema), PostgresFreezeStore(PG_DSN, schema=schema)
        try:
            service = (FreezeKind.SERVICE, "enterprise-registration")
            here.freeze(*service, by="admin-a", reason="incident")
            assert service in here.active()  # where it was made: on the next request
            eventually(lambda: service in there.active())  # elsewhere: once the notice arrives
            with pytest.raises(Conflict):
                there.freeze(*service, by="admin-b", reason="again")

            # The other replica's listener is cut: it reads the rows until it listens again.
            with psycopg.connect(PG_DSN, autocommit=True) as admin:
                admin.execute(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                    "WHERE application_name = 'veilgate-listener'"
                )
            consumer = (FreezeKind.CONSUMER, "demo-business")
            here.freeze(*consumer, by="admin-a", reason="abuse")
            eventually(lambda: consumer in there.active())
            there.unfreeze(*service, by="admin-b", reason="resolved")
            assert service not in there.active()
            eventually(lambda: service not in here.active())
            assert [(h["action"], h["by"]) for h in here.history()] == [
                ("freeze", "admin-a"),
                ("freeze", "admin-a"),
                ("unfreeze", "admin-b"),
            ]
        finally:
            here.close()
            there.close()


def test_freezes_refuse_to_start_without_their_database() -> None:
    with pytest.raises(DependencyError, match="freezes cannot be read"):
        PostgresFreezeStore("postgresql://nobody@127.0.0.1:1/none?connect_timeout=1", schema="veilgate")


@pytest.mark.postgres
@needs_pg
def test_the_cli_freezes_in_postgres_while_the_api_is_down(tmp_path: Path) -> None:
    with pg_schema() as schema:
        config = tmp_path / "veilgate.toml"
        config.write_text(
            f'state_dir = "{tmp_path / "state"}"\ndatabase_dsn = "{PG_DSN}"\ndatabase_schema = "{schema}"\n'
        )
        args = ["consumer", "demo-business", "--reason", "leaked secret", "--config", str(config)]
        assert CliRunner().invoke(cli, ["freeze", *args]).exit_code == 0
        assert PG_DSN is not None
        replica = PostgresFreezeStore(PG_DSN, schema=schema)
        try:
            assert (FreezeKind.CONSUMER, "demo-business") in replica.active()
            assert CliRunner().invoke(cli, ["unfreeze", *args]).exit_code == 0
            eventually(lambda: replica.active() == {})
        finally:
            replica.close()
