"""The two-person rule on accounts, attacked through the API: one administrator cannot make a
second administrator and approve with it, cannot disable the others nor the last one, and a
re-enabled account needs a second person too."""

from __future__ import annotations

from collections.abc import Callable

from fastapi.testclient import TestClient

from tests.conftest import bearer, get_token
from tests.verify.conftest import Gateway


def _as(gw: Gateway, who: str, secret: str | None = None) -> dict[str, str]:
    return bearer(get_token(gw.client, who, secret or gw.installation.credentials[who]))


def _token_status(client: TestClient, who: str, secret: str) -> int:
    form = {"grant_type": "client_credentials", "client_id": who, "client_secret": secret}
    return client.post("/v1/token", data=form).status_code


def test_an_administrator_alone_cannot_make_a_second_administrator_and_approve_with_it(
    gateway_for: Callable[..., Gateway],
) -> None:
    gw = gateway_for()
    admin, approver = _as(gw, "demo-admin"), _as(gw, "demo-approver")
    made = gw.client.post(
        "/v1/admin/consumers", headers=admin,
        json={"client_id": "sock-puppet", "organisation": "Demo Public Data Administration", "roles": ["admin"],
              "person": "Someone Else"},
    )  # fmt: skip
    assert made.status_code == 202 and made.json()["account"] is None
    half = made.json()["client_secret_part"]
    assert _token_status(gw.client, "sock-puppet", half) == 401  # no account yet, and half a secret
    pid = made.json()["proposal"]["id"]
    own = gw.client.post(f"/v1/admin/consumers/proposals/{pid}/approve", headers=admin)
    assert own.status_code == 403 and own.headers["content-type"] == "application/problem+json"
    # A consumer account made at once, then given the admin role: a proposal as well.
    puppet = gw.client.post("/v1/admin/consumers", headers=admin,
                            json={"client_id": "puppet-2", "organisation": "X", "roles": ["consumer"]})  # fmt: skip
    assert puppet.status_code == 201
    raised = gw.client.put("/v1/admin/consumers/puppet-2/roles", headers=admin, json={"roles": ["admin"]})
    assert raised.status_code == 202
    secret = puppet.json()["client_secret"]
    assert "admin" not in gw.client.get("/v1/me", headers=_as(gw, "puppet-2", secret)).json()["roles"]
    # Approved by another person: in force, and the secret is the two halves, neither alone.
    approved = gw.client.post(f"/v1/admin/consumers/proposals/{pid}/approve", headers=approver)
    assert approved.status_code == 200 and approved.json()["account"]["roles"] == ["admin"]
    other_half = approved.json()["client_secret_part"]
    assert _token_status(gw.client, "sock-puppet", half) == 401
    assert _token_status(gw.client, "sock-puppet", other_half) == 401
    assert _token_status(gw.client, "sock-puppet", half + other_half) == 200


def test_two_accounts_of_one_person_make_one_approval(gateway_for: Callable[..., Gateway]) -> None:
    gw = gateway_for()
    admin, approver = _as(gw, "demo-admin"), _as(gw, "demo-approver")
    made = gw.client.post(
        "/v1/admin/consumers", headers=admin,
        json={"client_id": "admin-alt", "organisation": "Demo Public Data Administration", "roles": ["admin"],
              "person": "Demo Administrator"},
    ).json()  # fmt: skip
    approved = gw.client.post(f"/v1/admin/consumers/proposals/{made['proposal']['id']}/approve", headers=approver)
    alt = _as(gw, "admin-alt", made["client_secret_part"] + approved.json()["client_secret_part"])
    policy = gw.client.get("/v1/admin/policy", headers=admin).json()
    changed = policy["bundle"]
    changed["grants"]["bank-sme-credit-2026"]["services"] = ["enterprise-registration"]
    proposed = gw.client.put(
        "/v1/admin/policy", headers=admin,
        json={"bundle": changed, "note": "narrower", "base_version": policy["version"]},
    ).json()["proposal"]  # fmt: skip
    same_person = gw.client.post(f"/v1/admin/policy/proposals/{proposed['id']}/approve", headers=alt)
    assert same_person.status_code == 403
    # Nor can the same person approve an account change with their second account.
    auditor = {"client_id": "auditor-2", "organisation": "O", "roles": ["auditor"]}
    third = gw.client.post("/v1/admin/consumers", headers=admin, json=auditor).json()
    assert (
        gw.client.post(f"/v1/admin/consumers/proposals/{third['proposal']['id']}/approve", headers=alt).status_code
        == 403
    )


def test_an_administrator_cannot_disable_the_others_nor_the_last_other_one(gateway_for: Callable[..., Gateway]) -> None:
    gw = gateway_for()
    admin, approver = _as(gw, "demo-admin"), _as(gw, "demo-approver")
    asked = gw.client.delete("/v1/admin/consumers/demo-approver", headers=admin)
    assert asked.status_code == 409  # it would leave one administrator: nothing could be approved again
    assert "fewer than 2 administrators" in asked.json()["detail"]
    assert gw.client.get("/v1/me", headers=approver).status_code == 200
    auditor = gw.client.delete("/v1/admin/consumers/demo-auditor", headers=admin)
    assert auditor.status_code == 202  # a privileged account: a proposal, not at once
    assert gw.client.get("/v1/me", headers=_as(gw, "demo-auditor")).status_code == 200
    approved = gw.client.post(
        f"/v1/admin/consumers/proposals/{auditor.json()['proposal']['id']}/approve", headers=approver
    )
    assert approved.status_code == 200 and approved.json()["account"]["disabled"] is True
    assert _token_status(gw.client, "demo-auditor", gw.installation.credentials["demo-auditor"]) == 401


def test_a_disabled_account_is_enabled_again_by_two_people(gateway_for: Callable[..., Gateway]) -> None:
    gw = gateway_for()
    admin, approver = _as(gw, "demo-admin"), _as(gw, "demo-approver")
    secret = gw.installation.credentials["demo-business"]
    assert gw.client.delete("/v1/admin/consumers/demo-business", headers=admin).status_code == 204  # at once
    assert _token_status(gw.client, "demo-business", secret) == 401
    asked = gw.client.post("/v1/admin/consumers/demo-business/enable", headers=admin)
    assert asked.status_code == 202 and _token_status(gw.client, "demo-business", secret) == 401
    pid = asked.json()["proposal"]["id"]
    assert gw.client.post(f"/v1/admin/consumers/proposals/{pid}/approve", headers=admin).status_code == 403
    assert gw.client.post(f"/v1/admin/consumers/proposals/{pid}/approve", headers=approver).status_code == 200
    assert _token_status(gw.client, "demo-business", secret) == 200
    listed = gw.client.get("/v1/admin/consumers", headers=_as(gw, "demo-auditor")).json()
    assert listed["proposals"] == [] and all("secret" not in str(a) for a in listed["accounts"])


def test_a_proposal_applies_only_to_the_account_it_was_made_from(gateway_for: Callable[..., Gateway]) -> None:
    gw = gateway_for()
    admin, approver = _as(gw, "demo-admin"), _as(gw, "demo-approver")
    asked = gw.client.put("/v1/admin/consumers/demo-business/roles", headers=admin, json={"roles": ["auditor"]})
    assert asked.status_code == 202
    assert gw.client.delete("/v1/admin/consumers/demo-business", headers=approver).status_code == 204
    stale = gw.client.post(f"/v1/admin/consumers/proposals/{asked.json()['proposal']['id']}/approve", headers=approver)
    assert stale.status_code == 409 and "propose it again" in stale.json()["detail"]
