"""Tracker, usage and fees, objections, alerts, the annual report, and roles on every route."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from gateway.cli import app as cli
from tests.conftest import bearer, get_token
from tests.verify.conftest import Gateway, enterprises, valid_unknown_code

_STARTED = datetime.now(UTC).date()
# A day each side: a test that runs across midnight UTC still finds its own calls (each test's
# installation is new, so nothing else is in the period).
SINCE, UNTIL = (_STARTED - timedelta(days=1)).isoformat(), (_STARTED + timedelta(days=1)).isoformat()


def _token(gw: Gateway, who: str) -> dict[str, str]:
    return bearer(get_token(gw.client, who, gw.installation.credentials[who]))


def _claims(gw: Gateway, *indexes: int) -> list[dict[str, Any]]:
    rows = enterprises(gw.installation, max(indexes) + 1)
    return [{"keys": {"credit_code": rows[i]["credit_code"]}, "checks": {"active": True}} for i in indexes]


def test_the_tracker_finds_who_asked_about_a_key(gateway_for: Callable[..., Gateway]) -> None:
    gw = gateway_for()
    code = enterprises(gw.installation)[0]["credit_code"]
    gw.verify(_claims(gw, 0))
    gw.verify([{"keys": {"credit_code": code}, "checks": {"filed_on_time": True}}], service="tax-compliance")
    gw.verify(_claims(gw, 1))
    auditor = _token(gw, "demo-auditor")
    found = gw.client.post("/v1/admin/tracker", json={"key": code.lower()}, headers=auditor).json()["requests"]
    assert [(r["consumer"], r["service"], r["grant"]) for r in found] == [
        ("demo-business", "enterprise-registration", "bank-sme-credit-2026"),
        ("demo-business", "tax-compliance", "bank-sme-credit-2026"),
    ]
    assert all(code not in json.dumps(r) for r in found)
    assert gw.client.post("/v1/admin/tracker", json={"key": code}, headers=gw.headers).status_code == 403
    result = CliRunner().invoke(cli, ["tracker", code, "--config", str(gw.installation.root / "veilgate.toml")])
    assert result.exit_code == 0, result.output
    assert "enterprise-registration" in result.stdout and "bank-sme-credit-2026" in result.stdout


def test_usage_statements_charge_commercial_billable_claims_only(gateway_for: Callable[..., Gateway]) -> None:
    gw = gateway_for()
    unknown = {"keys": {"credit_code": "91110000MA000000X0"}, "checks": {"active": True}}
    gw.verify(_claims(gw, 0, 1, 2))
    gw.verify(_claims(gw, 0, 1, 2))  # repeats: not billed again
    gw.verify([unknown])
    statement = gw.client.get(f"/v1/usage?since={SINCE}&until={UNTIL}", headers=gw.headers).json()
    assert statement["total"] == {"calls": 3, "billable_claims": 3, "fee_yuan": "0.15"}  # the malformed key: invalid
    assert statement["rows"][0]["purpose"] == "credit_assessment"
    researcher = _token(gw, "demo-researcher")
    assert gw.client.get(f"/v1/usage?since={SINCE}&until={UNTIL}", headers=researcher).json()["rows"] == []
    assert gw.client.get(f"/v1/usage?since={SINCE}&until=2000-01-01", headers=gw.headers).status_code == 422
    report = CliRunner().invoke(
        cli,
        [
            "usage",
            "report",
            "--since",
            SINCE,
            "--until",
            UNTIL,
            "--config",
            str(gw.installation.root / "veilgate.toml"),
        ],
    )
    assert report.exit_code == 0, report.output
    assert json.loads(report.stdout)["total"]["fee_yuan"] == "0.15"


def test_usage_cannot_tell_which_keys_exist(gateway_for: Callable[..., Gateway]) -> None:
    """An attacker probing with a known and an unknown key sees its usage statement move alike."""
    gw = gateway_for()

    def total() -> dict[str, Any]:
        usage: dict[str, Any] = gw.client.get(f"/v1/usage?since={SINCE}&until={UNTIL}", headers=gw.headers).json()
        return usage["total"]

    before = total()
    gw.verify([{"keys": {"credit_code": enterprises(gw.installation)[0]["credit_code"]}, "checks": {"active": True}}])
    after_known = total()
    gw.verify([{"keys": {"credit_code": valid_unknown_code(gw.installation)}, "checks": {"active": True}}])
    after_unknown = total()
    assert after_known["billable_claims"] - before["billable_claims"] == 1
    assert after_unknown["billable_claims"] - after_known["billable_claims"] == 1
    assert after_unknown["calls"] - after_known["calls"] == after_known["calls"] - before["calls"] == 1
    assert after_known["fee_yuan"] == "0.05" and after_unknown["fee_yuan"] == "0.1"


def test_public_purposes_are_free(gateway_for: Callable[..., Gateway]) -> None:
    def public(bundle: dict[str, Any]) -> None:
        bundle["grants"]["bank-sme-credit-2026"]["purposes"].append("public_research")

    gw = gateway_for(public)
    gw.verify(_claims(gw, 0, 1), purpose="public_research")
    statement = gw.client.get(f"/v1/usage?since={SINCE}&until={UNTIL}", headers=gw.headers).json()
    assert statement["total"] == {"calls": 1, "billable_claims": 2, "fee_yuan": "0"}


def test_objections_flow_and_stay_private(gateway_for: Callable[..., Gateway]) -> None:
    gw = gateway_for()
    admin, researcher = _token(gw, "demo-admin"), _token(gw, "demo-researcher")
    filed = gw.client.post(
        "/v1/objections",
        json={"about": "dataset", "subject": "enterprise_registry", "text": "the status of one firm is outdated"},
        headers=gw.headers,
    )
    assert filed.status_code == 201
    oid = filed.json()["id"]
    unknown = {"about": "dataset", "subject": "nothing", "text": "x"}
    assert gw.client.post("/v1/objections", json=unknown, headers=gw.headers).status_code == 404
    assert gw.client.get(f"/v1/objections/{oid}", headers=researcher).status_code == 404
    assert gw.client.get("/v1/objections", headers=researcher).json()["objections"] == []
    assert (
        gw.client.post(
            f"/v1/admin/objections/{oid}", json={"status": "accepted", "reply": "x"}, headers=gw.headers
        ).status_code
        == 403
    )
    skip = gw.client.post(f"/v1/admin/objections/{oid}", json={"status": "corrected", "reply": "done"}, headers=admin)
    assert skip.status_code == 409
    for status in ("accepted", "corrected"):
        moved = gw.client.post(f"/v1/admin/objections/{oid}", json={"status": status, "reply": status}, headers=admin)
        assert moved.status_code == 200
    mine = gw.client.get(f"/v1/objections/{oid}", headers=gw.headers).json()
    assert mine["status"] == "corrected" and [s["by"] for s in mine["steps"]] == ["demo-admin", "demo-admin"]
    closed = gw.client.post(f"/v1/admin/objections/{oid}", json={"status": "rejected", "reply": "no"}, headers=admin)
    assert closed.status_code == 409


def test_alerts_for_probing_quota_and_bursts(gateway_for: Callable[..., Gateway]) -> None:
    def tight(bundle: dict[str, Any]) -> None:
        bundle["verification_services"]["enterprise-registration"]["limits"].update(probe_checks_per_key=1)
        bundle["grants"]["bank-sme-credit-2026"]["quotas"] = {"daily_claims": 10}

    gw = gateway_for(tight)
    code = enterprises(gw.installation)[0]["credit_code"]
    gw.verify(_claims(gw, *range(8)))  # 8 of 10: past 80%
    gw.verify([{"keys": {"credit_code": code}, "checks": {"name": "a guess"}}])  # a second question
    for _ in range(45):  # more than 2 x 20: one minute window gets over 20 even if the minute turns
        gw.verify([{"keys": {"credit_code": code}, "checks": {"name": "another guess"}}])
    auditor = _token(gw, "demo-auditor")
    kinds = {a["kind"] for a in gw.client.get("/v1/admin/alerts", headers=auditor).json()["alerts"]}
    assert {"quota_80", "probe_limit", "refusal_burst"} <= kinds
    assert gw.client.get("/v1/admin/alerts", headers=gw.headers).status_code == 403


def test_the_annual_report(gateway_for: Callable[..., Gateway], tmp_path: Path) -> None:
    gw = gateway_for()
    gw.verify(_claims(gw, 0, 1))
    year = datetime.now(UTC).year
    result = CliRunner().invoke(
        cli,
        [
            "disclosure",
            "report",
            "--year",
            str(year),
            "--out",
            str(tmp_path),
            "--config",
            str(gw.installation.root / "veilgate.toml"),
        ],
    )
    assert result.exit_code == 0, result.output
    report = json.loads((tmp_path / f"disclosure-{year}.json").read_text())
    items = {i["grant"]: i for i in report["authorized_resources"]}
    research = [r["registration_code"] for r in items["labour-research-2026"]["resources"]]
    assert research == ["PDR-DEMO-2026-0001", "PDR-DEMO-2026-0002", "PDR-DEMO-2026-0003"]
    item = items["bank-sme-credit-2026"]
    assert item["operator"] == "Demo Commercial Bank" and item["authorization_mode"] == "scenario"
    assert item["fees_charged_yuan"] == "0.1" and item["fee_cap"] == {"unit": "call", "cap_yuan": "0.10"}
    assert {r["registration_code"] for r in item["resources"]} == {"PDR-DEMO-2026-0001", "PDR-DEMO-2026-0003"}
    document = (tmp_path / f"disclosure-{year}.md").read_text()
    assert "Demo Commercial Bank" in document and "Enterprise registration check" in document
    before = CliRunner().invoke(
        cli,
        [
            "disclosure",
            "report",
            "--year",
            "2020",
            "--out",
            str(tmp_path),
            "--config",
            str(gw.installation.root / "veilgate.toml"),
        ],
    )
    assert (
        before.exit_code == 0
        and json.loads((tmp_path / "disclosure-2020.json").read_text())["authorized_resources"] == []
    )


ADMIN_ONLY = [
    ("POST", "/v1/admin/consumers", {"client_id": "someone", "organisation": "x", "roles": ["consumer"]}),
    ("DELETE", "/v1/admin/consumers/demo-business", None),
    ("POST", "/v1/admin/freeze", {"kind": "consumer", "name": "demo-business", "reason": "x"}),
    ("POST", "/v1/admin/unfreeze", {"kind": "consumer", "name": "demo-business", "reason": "x"}),
    ("PUT", "/v1/admin/policy", {"bundle": {}, "note": "x", "base_version": None}),
    ("POST", "/v1/admin/consumers/demo-business/enable", None),
    ("PUT", "/v1/admin/consumers/demo-business/roles", {"roles": ["auditor"]}),
    ("POST", "/v1/admin/consumers/proposals/abc/approve", None),
    ("POST", "/v1/admin/policy/proposals/abc/approve", None),
    ("POST", "/v1/admin/grants", {"id": "x", "grant": {}}),
    ("DELETE", "/v1/admin/grants/bank-sme-credit-2026?reason=x", None),
    ("POST", "/v1/admin/objections/abc", {"status": "accepted", "reply": "x"}),
]
ADMIN_OR_AUDITOR = [
    ("GET", "/v1/admin/datasets", None),
    ("GET", "/v1/admin/audit", None),
    ("GET", "/v1/admin/freezes", None),
    ("GET", "/v1/admin/policy", None),
    ("GET", "/v1/admin/consumers", None),
    ("GET", "/v1/admin/grants", None),
    ("GET", "/v1/admin/grants/bank-sme-credit-2026", None),
    ("GET", "/v1/admin/alerts", None),
    ("POST", "/v1/admin/tracker", {"key": "x"}),
]


@pytest.mark.parametrize(("method", "path", "body"), ADMIN_ONLY + ADMIN_OR_AUDITOR)
def test_every_administration_route_checks_its_role(
    gateway_for: Callable[..., Gateway], method: str, path: str, body: dict[str, Any] | None
) -> None:
    gw = gateway_for()
    refused = ["demo-business", "demo-researcher"]
    if (method, path, body) in ADMIN_ONLY:
        refused.append("demo-auditor")
    for who in refused:
        response = gw.client.request(method, path, json=body, headers=_token(gw, who))
        assert response.status_code == 403, (who, response.text)
    assert gw.client.request(method, path, json=body).status_code == 401
