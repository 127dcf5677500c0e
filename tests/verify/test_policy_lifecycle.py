"""Changing the policy: validated, approved by two administrators, swapped in whole, revoked at
once, rolled back, reloaded from disk; every request under exactly one version."""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx2
import yaml
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from gateway.app import create_app
from gateway.cli import app as cli
from gateway.domain.policy import PolicyBundle
from gateway.domain.trail import digest
from gateway.state.backend import policy_database
from gateway.state.policy_sqlite import SqlitePolicyStore
from tests.conftest import Installation, bearer, get_token, policy_copy, serve_process
from tests.verify.conftest import Gateway, enterprises


def _claim(gw: Gateway, index: int = 0) -> list[dict[str, Any]]:
    return [{"keys": {"credit_code": enterprises(gw.installation)[index]["credit_code"]}, "checks": {"active": True}}]


def _admin(gw: Gateway, who: str = "demo-admin") -> dict[str, str]:
    return bearer(get_token(gw.client, who, gw.installation.credentials[who]))


def _bundle(gw: Gateway) -> dict[str, Any]:
    body: dict[str, Any] = gw.client.get("/v1/admin/policy", headers=_admin(gw)).json()
    return body


def test_one_administrator_alone_cannot_change_the_policy(gateway_for: Callable[..., Gateway]) -> None:
    gw = gateway_for()
    before = _bundle(gw)
    changed = before["bundle"]
    changed["grants"]["bank-sme-credit-2026"]["services"] = ["enterprise-registration"]
    body = {"bundle": changed, "note": "no tax data", "base_version": before["version"]}
    proposed = gw.client.put("/v1/admin/policy", json=body, headers=_admin(gw))
    assert proposed.status_code == 202 and proposed.json()["active"] is None
    proposal = proposed.json()["proposal"]
    assert "tax-compliance" in proposal["diff"]
    tax_claim = [{"keys": _claim(gw)[0]["keys"], "checks": {"filed_on_time": True}}]
    assert gw.verify(tax_claim, service="tax-compliance").status_code == 200  # not yet in force
    own = gw.client.post(f"/v1/admin/policy/proposals/{proposal['id']}/approve", headers=_admin(gw))
    assert own.status_code == 403
    business = bearer(get_token(gw.client, "demo-business", gw.installation.credentials["demo-business"]))
    assert gw.client.post(f"/v1/admin/policy/proposals/{proposal['id']}/approve", headers=business).status_code == 403
    approved = gw.client.post(
        f"/v1/admin/policy/proposals/{proposal['id']}/approve", headers=_admin(gw, "demo-approver")
    )
    assert approved.status_code == 200 and approved.json()["active"] == proposal["version"]
    assert gw.verify(tax_claim, service="tax-compliance").status_code == 403
    after = _bundle(gw)
    assert after["version"] == proposal["version"] != before["version"]
    activation = after["history"][-1]
    assert activation["action"] == "activate" and activation["approved_by"] == ["demo-admin", "demo-approver"]
    assert activation["proposed_by"] == "demo-admin" and "tax-compliance" in activation["diff"]


def test_a_bad_bundle_is_refused_and_changes_nothing(gateway_for: Callable[..., Gateway]) -> None:
    gw = gateway_for()
    before = _bundle(gw)
    bad = before["bundle"]
    bad["grants"]["bank-sme-credit-2026"]["consumer"] = "ghost"
    bad["verification_services"]["enterprise-registration"]["dataset"] = "social_insurance"
    body = {"bundle": bad, "note": "oops", "base_version": before["version"]}
    refused = gw.client.put("/v1/admin/policy", json=body, headers=_admin(gw))
    assert refused.status_code == 422
    errors = refused.json()["errors"]
    assert any("unknown consumer ghost" in e for e in errors)
    assert any("important data is served only through DP aggregates" in e for e in errors)
    malformed = {"bundle": {"grants": 7}, "note": "x", "base_version": before["version"]}
    assert gw.client.put("/v1/admin/policy", json=malformed, headers=_admin(gw)).status_code == 422
    after = _bundle(gw)
    assert after["version"] == before["version"] and after["proposals"] == []
    assert gw.verify(_claim(gw)).status_code == 200


def test_a_revoked_grant_is_refused_on_the_next_request_in_every_process(gateway_for: Callable[..., Gateway]) -> None:
    gw = gateway_for()
    other = Gateway(TestClient(create_app(gw.client.app.state.settings)), gw.headers, gw.installation)  # type: ignore[attr-defined]
    assert other.verify(_claim(gw)).status_code == 200
    revoked = gw.client.delete("/v1/admin/grants/bank-sme-credit-2026?reason=contract ended", headers=_admin(gw))
    assert revoked.status_code == 200
    for gateway in (gw, other):  # the other one only sees the store change
        refused = gateway.verify(_claim(gw, 1))
        assert refused.status_code == 403 and "no grant of yours" in refused.json()["detail"]
    other.client.close()


def test_a_new_grant_waits_for_approval(gateway_for: Callable[..., Gateway]) -> None:
    gw = gateway_for()
    researcher = bearer(get_token(gw.client, "demo-researcher", gw.installation.credentials["demo-researcher"]))
    grant = {
        "consumer": "demo-researcher",
        "mode": "domain",
        "services": ["enterprise-registration"],
        "purposes": ["public_research"],
        "scenario": "Studying firm survival",
        "not_before": "2026-01-01T00:00:00Z",
        "expires": "2030-01-01T00:00:00Z",
        "price_class": "public-free",
    }
    body = {"purpose": "public_research", "claims": _claim(gw)}
    assert gw.client.post("/v1/verify/enterprise-registration", json=body, headers=researcher).status_code == 403
    proposed = gw.client.post("/v1/admin/grants", json={"id": "uni-firms", "grant": grant}, headers=_admin(gw))
    assert proposed.status_code == 202
    assert gw.client.get("/v1/admin/grants/uni-firms", headers=_admin(gw)).status_code == 404
    pid = proposed.json()["proposal"]["id"]
    gw.client.post(f"/v1/admin/policy/proposals/{pid}/approve", headers=_admin(gw, "demo-approver"))
    assert (
        gw.client.get("/v1/admin/grants/uni-firms", headers=_admin(gw)).json()["grant"]["consumer"] == "demo-researcher"
    )
    assert gw.client.post("/v1/verify/enterprise-registration", json=body, headers=researcher).status_code == 200
    bad = {**grant, "services": ["mind-reading"]}
    assert gw.client.post("/v1/admin/grants", json={"id": "bad", "grant": bad}, headers=_admin(gw)).status_code == 422


def test_rollback_and_reload_from_disk(gateway_for: Callable[..., Gateway]) -> None:
    gw = gateway_for(lambda _bundle: None)  # the bundle as one file, bundle.yaml
    settings = gw.client.app.state.settings  # type: ignore[attr-defined]
    config = ["--config", str(gw.installation.root / "veilgate.toml")]
    env = {"VEILGATE_POLICY_DIR": str(settings.policy_dir)}
    first = _bundle(gw)["version"]
    gw.client.delete("/v1/admin/grants/bank-sme-credit-2026?reason=test", headers=_admin(gw))
    assert gw.verify(_claim(gw)).status_code == 403
    result = CliRunner().invoke(cli, ["policy", "rollback", *config], env=env)
    assert result.exit_code == 0 and "proposed as" in result.output, result.output
    (rollback,) = _bundle(gw)["proposals"]
    assert "bank-sme-credit-2026" in rollback["diff"]  # the reviewers see the grant come back
    approve = f"/v1/admin/policy/proposals/{rollback['id']}/approve"
    # one administrator alone (the command line is nobody's approval) cannot roll back
    assert gw.client.post(approve, headers=_admin(gw)).status_code == 202
    assert gw.verify(_claim(gw)).status_code == 403
    assert gw.client.post(approve, headers=_admin(gw, "demo-approver")).status_code == 200
    assert gw.verify(_claim(gw)).status_code == 200 and _bundle(gw)["version"] == first
    # Reload from disk: a good change goes in force, a bad one changes nothing.
    grants_file = Path(settings.policy_dir) / "bundle.yaml"
    data = yaml.safe_load(grants_file.read_text())
    data["grants"]["bank-sme-credit-2026"]["purposes"] = ["merchant_onboarding"]
    grants_file.write_text(yaml.safe_dump(data, allow_unicode=True))
    proposed = CliRunner().invoke(cli, ["policy", "reload", *config], env=env)
    assert proposed.exit_code == 0 and "proposed as" in proposed.stdout
    assert gw.verify(_claim(gw), purpose="merchant_onboarding").status_code == 403  # not before approval
    (waiting,) = _bundle(gw)["proposals"]
    approved = gw.client.post(f"/v1/admin/policy/proposals/{waiting['id']}/approve", headers=_admin(gw))
    assert approved.status_code == 202  # recorded, not yet in force
    # the command line is nobody's approval: the admin who ran it approving is one of two
    assert gw.verify(_claim(gw), purpose="merchant_onboarding").status_code == 403
    second = f"/v1/admin/policy/proposals/{waiting['id']}/approve"
    assert gw.client.post(second, headers=_admin(gw, "demo-approver")).status_code == 200
    assert gw.verify(_claim(gw), purpose="merchant_onboarding").status_code == 200
    data["grants"]["bank-sme-credit-2026"]["consumer"] = "ghost"
    grants_file.write_text(yaml.safe_dump(data, allow_unicode=True))
    failed = CliRunner().invoke(cli, ["policy", "reload", *config], env=env)
    assert failed.exit_code == 1 and "unknown consumer ghost" in failed.output
    assert gw.verify(_claim(gw, 1), purpose="merchant_onboarding").status_code == 200


def test_every_request_is_served_under_exactly_one_version(gateway_for: Callable[..., Gateway]) -> None:
    """Swap two bundles back and forth (as another process would) under concurrent requests."""
    gw = gateway_for()
    store = SqlitePolicyStore(policy_database(gw.client.app.state.settings))  # type: ignore[attr-defined]
    one = store.load(store.active_version() or "")
    data = one.model_dump(mode="json")
    data["grants"] = {"bank-b": data["grants"]["bank-sme-credit-2026"]}
    two = PolicyBundle.model_validate(data)
    grant_of = {one.version: "bank-sme-credit-2026", two.version: "bank-b"}
    rows = enterprises(gw.installation, 400)
    seen: list[tuple[str, str]] = []
    failures: list[str] = []

    def load(offset: int) -> None:
        for i in range(40):
            claim = [{"keys": {"credit_code": rows[offset * 40 + i]["credit_code"]}, "checks": {"active": True}}]
            response = gw.verify(claim)
            if response.status_code != 200:
                failures.append(response.text)
                continue
            body = response.json()
            seen.append((body["policy_version"], body["result"]["grant"]))

    workers = [threading.Thread(target=load, args=(w,)) for w in range(4)]
    for worker in workers:
        worker.start()
    flip = 0
    while any(w.is_alive() for w in workers):
        store.activate((one, two)[flip % 2], by="test", reason="flip", base=store.active_version())
        flip += 1
    for worker in workers:
        worker.join()
    assert not failures
    assert len(seen) == 160 and all(grant_of[version] == grant for version, grant in seen)
    assert {version for version, _grant in seen} == {one.version, two.version}


def test_sighup_proposes_a_reload_and_a_failed_reload_keeps_the_last_good_bundle(
    installation: Installation, tmp_path: Path
) -> None:
    policies = policy_copy(tmp_path / "policies", lambda _bundle: None)
    config = tmp_path / "veilgate.toml"
    config.write_text(f'state_dir = "{installation.settings.state_dir}"\npolicy_dir = "{policies}"\n')

    def version(base: str) -> str:
        return str(httpx2.get(f"{base}/v1/disclosure/authorizations").json()["policy_version"])

    def wait_for(condition: Callable[[], bool]) -> bool:
        for _ in range(100):
            if condition():
                return True
            time.sleep(0.1)
        return False

    with serve_process(config) as (base, server):

        def token_of(who: str) -> str:
            secret = installation.credentials[who]
            form = {"grant_type": "client_credentials", "client_id": who, "client_secret": secret}
            return str(httpx2.post(f"{base}/v1/token", data=form).json()["access_token"])

        first = version(base)
        data = yaml.safe_load((policies / "bundle.yaml").read_text())
        data["grants"]["bank-sme-credit-2026"]["scenario"] = "Changed on disk"
        (policies / "bundle.yaml").write_text(yaml.safe_dump(data, allow_unicode=True))
        os.kill(server.pid, signal.SIGHUP)
        admin = {"Authorization": f"Bearer {token_of('demo-admin')}"}

        def proposals() -> list[dict[str, Any]]:
            found: list[dict[str, Any]] = httpx2.get(f"{base}/v1/admin/policy", headers=admin).json()["proposals"]
            return found

        assert wait_for(lambda: bool(proposals()))  # a proposal: nobody alone puts a bundle in force
        assert version(base) == first
        (proposal,) = proposals()
        assert proposal["proposed_by"] == "sighup" and proposal["base"] == first
        approve = f"{base}/v1/admin/policy/proposals/{proposal['id']}/approve"
        approved = httpx2.post(approve, headers=admin)
        assert approved.status_code == 202, approved.text
        assert version(base) == first  # SIGHUP is nobody's approval: one admin is not enough
        other = {"Authorization": f"Bearer {token_of('demo-approver')}"}
        assert httpx2.post(approve, headers=other).status_code == 200
        second = version(base)
        assert second != first
        data["grants"]["bank-sme-credit-2026"]["consumer"] = "ghost"
        (policies / "bundle.yaml").write_text(yaml.safe_dump(data, allow_unicode=True))
        os.kill(server.pid, signal.SIGHUP)
        token = token_of("demo-auditor")

        def alerted() -> bool:
            found = httpx2.get(f"{base}/v1/admin/alerts", headers={"Authorization": f"Bearer {token}"}).json()
            return any(a["kind"] == "policy_reload_failed" for a in found["alerts"])

        assert wait_for(alerted)
        assert version(base) == second  # the last good bundle stays in force


def test_a_change_made_from_an_older_version_is_refused(gateway_for: Callable[..., Gateway]) -> None:
    gw = gateway_for()
    before = _bundle(gw)
    gw.client.delete("/v1/admin/grants/bank-sme-credit-2026?reason=ended", headers=_admin(gw))
    stale = before["bundle"]
    stale["grants"]["bank-sme-credit-2026"]["scenario"] = "edited from the older version"
    body = {"bundle": stale, "note": "would bring the revoked grant back", "base_version": before["version"]}
    refused = gw.client.put("/v1/admin/policy", json=body, headers=_admin(gw))
    assert refused.status_code == 409 and refused.headers["content-type"] == "application/problem+json"
    assert _bundle(gw)["proposals"] == []


def test_a_revoke_racing_an_approved_change_undoes_nothing(gateway_for: Callable[..., Gateway]) -> None:
    """Two processes: one approves a new grant while the other revokes another grant. Whatever
    the order, an approval that answered 200 stays in force and the revoked grant stays out."""
    gw = gateway_for()
    other = TestClient(create_app(gw.client.app.state.settings))  # type: ignore[attr-defined]
    grant = _bundle(gw)["bundle"]["grants"]["bank-sme-credit-2026"]
    for trial in range(6):
        name = f"new-grant-{trial}"
        proposed = gw.client.post("/v1/admin/grants", json={"id": name, "grant": grant}, headers=_admin(gw))
        revoked_id = f"new-grant-{trial - 1}" if trial else "bank-sme-credit-2026"
        pid = proposed.json()["proposal"]["id"]
        outcome: dict[str, int] = {}

        def approve(pid: str = pid, outcome: dict[str, int] = outcome) -> None:
            url = f"/v1/admin/policy/proposals/{pid}/approve"
            outcome["approve"] = gw.client.post(url, headers=_admin(gw, "demo-approver")).status_code

        def revoke(revoked_id: str = revoked_id, outcome: dict[str, int] = outcome) -> None:
            url = f"/v1/admin/grants/{revoked_id}?reason=race"
            outcome["revoke"] = other.delete(url, headers=_admin(gw)).status_code

        racers = [threading.Thread(target=approve), threading.Thread(target=revoke)]
        for racer in racers:
            racer.start()
        for racer in racers:
            racer.join()
        grants = _bundle(gw)["bundle"]["grants"]
        assert outcome["revoke"] == 200 and revoked_id not in grants
        assert outcome["approve"] in {200, 409}  # 409: the revoke went first, the proposal is stale
        assert (name in grants) == (outcome["approve"] == 200)
        if outcome["approve"] == 409:  # propose it again, from the version in force now
            again = gw.client.post("/v1/admin/grants", json={"id": name, "grant": grant}, headers=_admin(gw))
            url = f"/v1/admin/policy/proposals/{again.json()['proposal']['id']}/approve"
            assert gw.client.post(url, headers=_admin(gw, "demo-approver")).status_code == 200
    other.close()


def test_a_reload_cannot_replace_an_approved_bundle_alone(gateway_for: Callable[..., Gateway]) -> None:
    gw = gateway_for(lambda _bundle: None)
    settings = gw.client.app.state.settings  # type: ignore[attr-defined]
    config = ["--config", str(gw.installation.root / "veilgate.toml")]
    env = {"VEILGATE_POLICY_DIR": str(settings.policy_dir)}
    before = _bundle(gw)
    changed = before["bundle"]
    changed["grants"]["bank-sme-credit-2026"]["services"] = ["enterprise-registration"]
    body = {"bundle": changed, "note": "approved by two", "base_version": before["version"]}
    pid = gw.client.put("/v1/admin/policy", json=body, headers=_admin(gw)).json()["proposal"]["id"]
    approved = gw.client.post(f"/v1/admin/policy/proposals/{pid}/approve", headers=_admin(gw, "demo-approver"))
    assert approved.status_code == 200
    reload = CliRunner().invoke(cli, ["policy", "reload", *config], env=env)  # the files of before
    assert reload.exit_code == 0 and "proposed as" in reload.stdout
    assert _bundle(gw)["version"] == approved.json()["active"]  # the approved bundle stays in force
    assert gw.verify(_claim(gw), service="tax-compliance").status_code == 403


def test_a_rollback_never_revives_a_grant_revoked_after_it_was_proposed(gateway_for: Callable[..., Gateway]) -> None:
    """Roll back to a bundle that still has a grant, revoke the grant, then approve the rollback:
    the rollback was made from the version before the revoke, so it is refused."""
    gw = gateway_for(lambda _bundle: None)
    config = ["--config", str(gw.installation.root / "veilgate.toml")]
    env = {"VEILGATE_POLICY_DIR": str(gw.client.app.state.settings.policy_dir)}  # type: ignore[attr-defined]
    before = _bundle(gw)
    changed = before["bundle"]
    changed["grants"]["bank-sme-credit-2026"]["purposes"] = ["merchant_onboarding"]
    body = {"bundle": changed, "note": "narrower", "base_version": before["version"]}
    proposal = gw.client.put("/v1/admin/policy", json=body, headers=_admin(gw)).json()["proposal"]
    approve = f"/v1/admin/policy/proposals/{proposal['id']}/approve"
    assert gw.client.post(approve, headers=_admin(gw, "demo-approver")).status_code == 200
    assert CliRunner().invoke(cli, ["policy", "rollback", *config], env=env).exit_code == 0
    (rollback,) = _bundle(gw)["proposals"]
    revoked = gw.client.delete("/v1/admin/grants/bank-sme-credit-2026?reason=misuse", headers=_admin(gw))
    assert revoked.status_code == 200, revoked.text
    approve = f"/v1/admin/policy/proposals/{rollback['id']}/approve"
    for admin in ("demo-admin", "demo-approver"):  # every approval checks the base: refused
        refused = gw.client.post(approve, headers=_admin(gw, admin))
        assert refused.status_code == 409 and "propose it again" in refused.json()["detail"]
    assert "bank-sme-credit-2026" not in _bundle(gw)["bundle"]["grants"]
    assert gw.verify(_claim(gw)).status_code == 403


def test_a_proposal_is_rejected_by_another_admin_or_withdrawn_by_its_proposer(
    gateway_for: Callable[..., Gateway],
) -> None:
    gw = gateway_for()
    admin, approver = _admin(gw), _admin(gw, "demo-approver")
    before = _bundle(gw)
    changed = before["bundle"]
    changed["grants"]["bank-sme-credit-2026"]["services"] = ["enterprise-registration"]
    body = {"bundle": changed, "note": "no tax data", "base_version": before["version"]}
    first, second = (gw.client.put("/v1/admin/policy", json=body, headers=admin).json()["proposal"] for _ in "12")
    reject = f"/v1/admin/policy/proposals/{first['id']}/reject"
    withdraw = f"/v1/admin/policy/proposals/{second['id']}/withdraw"
    reason = {"reason": "tax checks stay <b>on</b>"}
    auditor = bearer(get_token(gw.client, "demo-auditor", gw.installation.credentials["demo-auditor"]))
    for who in (gw.headers, auditor):  # a consumer and an auditor: the wrong role
        refused = gw.client.post(reject, json=reason, headers=who)
        assert refused.status_code == 403 and refused.json()["type"].endswith("/policy-denied")
    assert gw.client.post(reject, json=reason).status_code == 401
    own = gw.client.post(reject, json=reason, headers=admin)
    assert own.status_code == 403 and "withdraws" in own.json()["detail"]  # the proposer withdraws instead
    assert gw.client.post(withdraw, json=reason, headers=approver).status_code == 403  # not the proposer's
    for bad in ({}, {"reason": ""}, {"reason": "x" * 501}, {"reason": "x", "extra": 1}):
        assert gw.client.post(reject, json=bad, headers=approver).status_code == 422, bad
    unknown = gw.client.post("/v1/admin/policy/proposals/000000000000/reject", json=reason, headers=approver)
    assert unknown.status_code == 404 and unknown.headers["content-type"] == "application/problem+json"
    rejected = gw.client.post(reject, json=reason, headers=approver)
    assert rejected.status_code == 200 and rejected.json()["proposal"]["outcome"] == "rejected"
    withdrawn = gw.client.post(withdraw, json={"reason": "made twice"}, headers=admin)
    assert withdrawn.status_code == 200 and withdrawn.json()["proposal"]["outcome"] == "withdrawn"
    for path in (reject, withdraw):  # decided for good: no approval, rejection or withdrawal after
        for action, who in (("approve", approver), ("reject", approver), ("withdraw", admin)):
            again = gw.client.post(path.rsplit("/", 1)[0] + f"/{action}", json=reason, headers=who)
            assert again.status_code == 409 and again.json()["type"].endswith("/conflict"), (path, action)
            assert "<b>" not in again.json()["detail"]
    after = _bundle(gw)
    assert after["version"] == before["version"] and after["proposals"] == []
    tax_claim = [{"keys": _claim(gw)[0]["keys"], "checks": {"filed_on_time": True}}]
    assert gw.verify(tax_claim, service="tax-compliance").status_code == 200  # never in force
    entries = after["history"][-2:]
    assert [(e["action"], e["by"], e["reason"]) for e in entries] == [
        ("reject", "demo-approver", reason["reason"]),
        ("withdraw", "demo-admin", "made twice"),
    ]
    # The request's audit leaf digests the history entry, so the stored reason cannot change unseen.
    leaves = gw.client.get("/v1/admin/audit", params={"principal": "demo-approver", "limit": 1000}, headers=admin)
    (leaf,) = [x for x in leaves.json()["leaves"] if x["route"].endswith("/reject") and x["status"] == 200]
    assert leaf["result_digest"] == digest(rejected.json()["decision"]) == digest(entries[0])


def test_reject_and_withdraw_from_the_command_line(gateway_for: Callable[..., Gateway]) -> None:
    gw = gateway_for()
    config = ["--config", str(gw.installation.root / "veilgate.toml")]
    settings = gw.client.app.state.settings  # type: ignore[attr-defined]
    env = {"VEILGATE_POLICY_DIR": str(settings.policy_dir)}
    gw.client.delete("/v1/admin/grants/bank-sme-credit-2026?reason=test", headers=_admin(gw))
    made = CliRunner().invoke(cli, ["policy", "rollback", *config], env=env)
    assert made.exit_code == 0, made.output
    (proposal,) = _bundle(gw)["proposals"]
    refused = CliRunner().invoke(cli, ["policy", "reject", proposal["id"], "--reason", "mine", *config], env=env)
    assert refused.exit_code == 1 and "withdraws" in refused.output  # this user proposed it
    empty = CliRunner().invoke(cli, ["policy", "withdraw", proposal["id"], "--reason", " ", *config], env=env)
    assert empty.exit_code == 1 and "--reason" in empty.output
    done = CliRunner().invoke(cli, ["policy", "withdraw", proposal["id"], "--reason", "not now", *config], env=env)
    assert done.exit_code == 0 and "withdrawn" in done.output, done.output
    again = CliRunner().invoke(cli, ["policy", "withdraw", proposal["id"], "--reason", "again", *config], env=env)
    assert again.exit_code == 1 and "already withdrawn" in again.output
    assert _bundle(gw)["proposals"] == [] and _bundle(gw)["history"][-1]["reason"] == "not now"
    approve = gw.client.post(f"/v1/admin/policy/proposals/{proposal['id']}/approve", headers=_admin(gw))
    assert approve.status_code == 409


def test_an_account_named_like_a_reload_is_not_its_first_approval(gateway_for: Callable[..., Gateway]) -> None:
    """A reload (SIGHUP, `veilgate policy reload`) is proposed by no account. One administrator
    who names an account `sighup` must not thereby count as its proposer's approval and then put
    the bundle in force alone with their own; and the host refuses client ids that could pass
    for the command line's own name (`cli:<user>`)."""
    from gateway.background import Housekeeping

    gw = gateway_for(lambda _bundle: None)
    rt = gw.client.app.state.runtime
    made = gw.client.post(
        "/v1/admin/consumers",
        json={"client_id": "sighup", "organisation": "Elsewhere", "roles": ["consumer"], "person": "Zed Nobody"},
        headers=_admin(gw),
    )
    assert made.status_code == 201, made.text
    policies = rt.settings.policy_dir
    data = yaml.safe_load((policies / "bundle.yaml").read_text())
    data["grants"]["bank-sme-credit-2026"]["scenario"] = "Changed on disk"
    (policies / "bundle.yaml").write_text(yaml.safe_dump(data, allow_unicode=True))
    before = _bundle(gw)["version"]
    Housekeeping(rt).reload_policy()
    (proposal,) = gw.client.get("/v1/admin/policy", headers=_admin(gw)).json()["proposals"]
    assert proposal["proposed_by"] == "sighup" and proposal["approvals"] == []
    approved = gw.client.post(f"/v1/admin/policy/proposals/{proposal['id']}/approve", headers=_admin(gw))
    assert approved.status_code == 202, approved.text  # one approval of the two
    assert _bundle(gw)["version"] == before
    config = ["--config", str(gw.installation.root / "veilgate.toml")]
    added = CliRunner().invoke(cli, ["clients", "add", "cli:root", "--org", "X", "--role", "consumer", *config])
    assert added.exit_code == 1 and "client_id" in added.output
