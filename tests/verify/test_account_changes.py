"""The two-person rule on accounts, attacked through the API: one administrator cannot make a
second administrator and approve with it, cannot disable the others nor the last one, and a
re-enabled account needs a second person too."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from gateway.cli import app as cli
from gateway.errors import Conflict
from gateway.state.jobs_sqlite import SqliteJobStore
from tests.conftest import bearer, eventually, get_token
from tests.verify.conftest import Gateway


def _as(gw: Gateway, who: str, secret: str | None = None) -> dict[str, str]:
    return bearer(get_token(gw.client, who, secret or gw.installation.credentials[who]))


def _propose_an_administrator(gw: Gateway, admin: dict[str, str], client_id: str, person: str) -> Any:
    """An administrator's account proposed by `admin`: it waits for another person's approval."""
    return gw.client.post(
        "/v1/admin/consumers", headers=admin,
        json={"client_id": client_id, "organisation": "Demo Public Data Administration", "roles": ["admin"],
              "person": person},
    )  # fmt: skip


def _token_status(client: TestClient, who: str, secret: str) -> int:
    form = {"grant_type": "client_credentials", "client_id": who, "client_secret": secret}
    return client.post("/v1/token", data=form).status_code


def test_an_administrator_alone_cannot_make_a_second_administrator_and_approve_with_it(
    gateway_for: Callable[..., Gateway],
) -> None:
    gw = gateway_for()
    admin, approver = _as(gw, "demo-admin"), _as(gw, "demo-approver")
    made = _propose_an_administrator(gw, admin, "sock-puppet", "Someone Else")
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


def test_an_account_made_without_a_person_counts_as_its_maker(
    gateway_for: Callable[..., Gateway], tmp_path: Path
) -> None:
    """An administrator who leaves `person` out of a new account (no second person approves a
    consumer account) must not get an account of another identity to submit jobs from: it is
    the maker's identity, so the maker can neither review nor check nor requeue its jobs."""
    gw = gateway_for()
    admin = _as(gw, "demo-admin")
    made = gw.client.post("/v1/admin/consumers", headers=admin,
                          json={"client_id": "no-person", "organisation": "Elsewhere Institute",
                                "roles": ["researcher"]})  # fmt: skip
    assert made.status_code == 201 and made.json()["account"]["person"] is None
    rt = gw.client.app.state.runtime  # type: ignore[attr-defined]
    assert rt.clients.identity_of("no-person") == rt.clients.identity_of("demo-admin")
    assert rt.clients.identity_of("no-person") != rt.clients.identity_of("demo-approver")
    store = SqliteJobStore(tmp_path / "jobs.sqlite3")
    job = store.submit(submitter="no-person", organisation="Elsewhere Institute", service="s", purpose="p",
                       grant_id="g", code="print(1)", code_kind="file", code_sha256="0" * 64, datasets=["d"],
                       outputs=["o"], epsilon=None)  # fmt: skip
    with pytest.raises(Conflict, match="nobody reviews their own job"):
        store.review(job.id, "demo-admin", "approve", "fine", 2, identity_of=rt.clients.identity_of)
    store.review(job.id, "demo-approver", "approve", "fine", 2, identity_of=rt.clients.identity_of)
    assert store.get(job.id).status == "submitted"  # one approval of two: the maker's does not count
    # With a person named, the account is that person's (the name is on the record, with its maker).
    named = gw.client.post("/v1/admin/consumers", headers=admin,
                           json={"client_id": "named", "organisation": "Elsewhere Institute",
                                 "roles": ["researcher"], "person": "A Researcher"})  # fmt: skip
    assert named.status_code == 201
    assert rt.clients.identity_of("named") == "person:A Researcher"
    listed = {a["client_id"]: a for a in gw.client.get("/v1/admin/consumers", headers=admin).json()["accounts"]}
    assert listed["named"]["made_by"] == "demo-admin" and listed["no-person"]["made_by"] == "demo-admin"


def test_the_command_line_cannot_disable_the_others_to_make_an_administrator_alone(
    gateway_for: Callable[..., Gateway],
) -> None:
    """From the host: disabling the other administrator would reopen the setting-up window in
    which `veilgate clients add` grants privileged roles alone; it is refused like the API's."""
    gw = gateway_for()
    config = str(gw.installation.root / "veilgate.toml")
    refused = CliRunner().invoke(cli, ["clients", "disable", "demo-approver", "--config", config])
    assert refused.exit_code != 0 and "fewer than 2 administrators" in refused.output
    made = CliRunner().invoke(
        cli, ["clients", "add", "second-me", "--org", "O", "--role", "admin", "--person", "Not Me", "--config", config]
    )
    assert made.exit_code != 0 and "second administrator's approval" in made.output
    assert gw.client.get("/v1/me", headers=_as(gw, "demo-approver")).status_code == 200
    # A consumer is still disabled at once from the host.
    assert CliRunner().invoke(cli, ["clients", "disable", "demo-business", "--config", config]).exit_code == 0
    secret = gw.installation.credentials["demo-business"]
    eventually(lambda: _token_status(gw.client, "demo-business", secret) == 401)  # the server rechecks the file


def test_a_person_spelled_nearly_like_another_is_refused(gateway_for: Callable[..., Gateway]) -> None:
    """An approver who agrees to "a second account of the Demo Administrator" must not thereby
    make another identity: a person that differs from an existing one only in case, spacing,
    width or invisible characters would count as someone else, and its holder would approve
    their own changes; so would one written with letters that look alike (a Cyrillic `е` or `і`,
    a capital `I` for an `l`). Such a person is refused (naming the parameter and the rule)."""
    gw = gateway_for()
    admin, approver = _as(gw, "demo-admin"), _as(gw, "demo-approver")
    for near in ("demo administrator", "Demo Administrator ", "Demo  Administrator", "Demo\u200bAdministrator",
                 "Ｄｅｍｏ Administrator", "D\u0435mo Administrator", "Demo Admin\u0456strator",
                 "DEMO ADM\u0406N\u0406STRATOR", "Demo AdminIstrator", "Demo Adrninistrator",
                 "Demo Admi\u034fnistrator", "Demo\u3164Administrator"):  # fmt: skip
        asked = gw.client.post(
            "/v1/admin/consumers", headers=admin,
            json={"client_id": "admin-alt", "organisation": "Demo Public Data Administration", "roles": ["admin"],
                  "person": near},
        )  # fmt: skip
        assert asked.status_code == 422, (near, asked.status_code)
        assert asked.json()["detail"].startswith("person: "), asked.text
        assert near not in asked.text
    # the exact spelling is that person's second account, and approving it adds no identity
    same = gw.client.post(
        "/v1/admin/consumers", headers=admin,
        json={"client_id": "admin-alt", "organisation": "Demo Public Data Administration", "roles": ["admin"],
              "person": "Demo Administrator"},
    )  # fmt: skip
    assert same.status_code == 202
    approved = gw.client.post(
        f"/v1/admin/consumers/proposals/{same.json()['proposal']['id']}/approve", headers=approver
    )
    assert approved.status_code == 200
    rt = gw.client.app.state.runtime  # type: ignore[attr-defined]
    assert rt.clients.identity_of("admin-alt") == rt.clients.identity_of("demo-admin")
    # the host's command line keeps the same rule
    config = str(gw.installation.root / "veilgate.toml")
    made = CliRunner().invoke(
        cli,
        [
            "clients",
            "add",
            "r-2",
            "--org",
            "O",
            "--role",
            "researcher",
            "--person",
            "DEMO APPROVER",
            "--config",
            config,
        ],
    )
    assert made.exit_code != 0 and "person:" in made.output


def test_an_account_proposal_left_for_more_than_a_week_is_not_approved(gateway_for: Callable[..., Gateway]) -> None:
    """A proposal to make someone an administrator, forgotten, must not be approvable years later
    by whoever comes across it: a second person approves it within a week, or it is proposed again."""
    import sqlite3
    from datetime import UTC, datetime, timedelta

    from gateway.state.backend import accounts_file

    gw = gateway_for()
    admin, approver = _as(gw, "demo-admin"), _as(gw, "demo-approver")
    made = _propose_an_administrator(gw, admin, "old-idea", "Someone Later")
    assert made.status_code == 202
    pid = made.json()["proposal"]["id"]
    week_ago = (datetime.now(UTC) - timedelta(days=7, minutes=1)).isoformat(timespec="seconds")
    with sqlite3.connect(accounts_file(gw.installation.settings)) as conn:
        changed = conn.execute(
            "UPDATE account_proposals SET record = json_set(record, '$.proposed_at', ?) WHERE id = ?", (week_ago, pid)
        ).rowcount
    assert changed == 1
    late = gw.client.post(f"/v1/admin/consumers/proposals/{pid}/approve", headers=approver)
    assert late.status_code == 409 and "expired after 7 days" in late.json()["detail"]
    assert _token_status(gw.client, "old-idea", made.json()["client_secret_part"]) == 401
    assert gw.client.app.state.runtime.clients.find("old-idea") is None


def test_a_token_from_before_a_disable_or_a_role_withdrawn_stays_void_once_restored(
    gateway_for: Callable[..., Gateway],
) -> None:
    """A copied token (or console cookie) came back to life when its account was re-enabled or
    its role granted again, though the documented promise is that a disable ends it."""
    gw = gateway_for()
    admin, approver = _as(gw, "demo-admin"), _as(gw, "demo-approver")
    copied = _as(gw, "demo-business")
    assert gw.client.get("/v1/me", headers=copied).status_code == 200
    assert gw.client.delete("/v1/admin/consumers/demo-business", headers=admin).status_code == 204
    pid = gw.client.post("/v1/admin/consumers/demo-business/enable", headers=admin).json()["proposal"]["id"]
    assert gw.client.post(f"/v1/admin/consumers/proposals/{pid}/approve", headers=approver).status_code == 200
    assert gw.client.get("/v1/me", headers=copied).status_code == 401  # re-enabled: the old token stays void
    assert gw.client.get("/v1/me", headers=_as(gw, "demo-business")).status_code == 200  # a new one works at once

    auditor = _as(gw, "demo-auditor")
    assert gw.client.get("/v1/admin/consumers", headers=auditor).status_code == 200
    withdrawn = gw.client.put("/v1/admin/consumers/demo-auditor/roles", headers=admin, json={"roles": ["consumer"]})
    assert withdrawn.status_code in (200, 202), withdrawn.text
    if withdrawn.status_code == 202:
        wid = withdrawn.json()["proposal"]["id"]
        assert gw.client.post(f"/v1/admin/consumers/proposals/{wid}/approve", headers=approver).status_code == 200
    granted = gw.client.put("/v1/admin/consumers/demo-auditor/roles", headers=admin, json={"roles": ["auditor"]})
    if granted.status_code == 202:
        gid = granted.json()["proposal"]["id"]
        assert gw.client.post(f"/v1/admin/consumers/proposals/{gid}/approve", headers=approver).status_code == 200
    assert gw.client.get("/v1/admin/consumers", headers=auditor).status_code == 401  # granted again: still void
