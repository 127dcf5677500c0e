"""The administrators' console through HTTP: roles as the API has them, the two-person rule,
freezes that the API then enforces, job review and output checking, escaping, CSRF."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from html import unescape

import pytest
from fastapi.testclient import TestClient
from markupsafe import escape

from gateway.state.ports import AWAITING_CHECK
from tests.conftest import Installation, bearer, get_token
from tests.console.conftest import logged_in_as
from tests.jobs.conftest import EXAMPLE_TABLES, Jobs, needs_isolation
from tests.verify.conftest import PURPOSE, SERVICE, enterprises

ADMIN_PAGES = (
    "/console/admin",
    "/console/admin/policy",
    "/console/admin/grants",
    "/console/admin/consumers",
    "/console/admin/freezes",
    "/console/admin/alerts",
    "/console/admin/objections",
    "/console/admin/audit",
    "/console/admin/budgets",
    "/console/admin/tracker",
)
HOSTILE = "<script>alert('x')</script>\"><img src=x onerror=alert(1)>"


@pytest.fixture
def client(installation: Installation, make_client: Callable[..., TestClient]) -> TestClient:
    return make_client(installation.settings)


def test_admin_pages_need_a_session_and_a_role(client: TestClient, installation: Installation) -> None:
    for path in ADMIN_PAGES:
        assert client.get(path).status_code == 401, path
    logged_in_as(client, installation, "demo-business")
    for path in (*ADMIN_PAGES, "/console/admin/jobs"):
        assert client.get(path).status_code == 403, path


@pytest.mark.parametrize("language", ["en", "zh"])
def test_each_admin_page_in_each_language(client: TestClient, installation: Installation, language: str) -> None:
    logged_in_as(client, installation, "demo-admin")
    for path in (*ADMIN_PAGES, "/console/admin/jobs"):
        response = client.get(path, params={"lang": language})
        assert response.status_code == 200, path
        assert f'<html lang="{"zh-CN" if language == "zh" else "en"}">' in response.text
        assert "<script>" not in response.text


def test_auditor_reads_but_writes_nothing(client: TestClient, installation: Installation) -> None:
    csrf = logged_in_as(client, installation, "demo-auditor")
    assert client.get("/console/admin/freezes").status_code == 200
    assert 'action="/console/admin/freezes/freeze"' not in client.get("/console/admin/freezes").text
    refused = client.post(
        "/console/admin/freezes/freeze",
        data={"kind": "consumer", "name": "demo-business", "reason": "test", "csrf": csrf},
    )
    assert refused.status_code == 403
    assert client.get("/console/admin/jobs").status_code == 403  # reviews are for administrators, as in the API


def test_two_person_rule_through_two_logins(client: TestClient, installation: Installation) -> None:
    token = get_token(client, "demo-admin", installation.credentials["demo-admin"])
    grant = client.get("/v1/admin/grants/bank-sme-credit-2026", headers=bearer(token)).json()["grant"]
    csrf = logged_in_as(client, installation, "demo-admin")
    proposed = client.post(
        "/console/admin/grants", data={"grant_id": "console-grant", "grant": json.dumps(grant), "csrf": csrf}
    )
    assert proposed.status_code == 200 and "console-grant" not in client.get("/console/admin/grants").text
    page = client.get("/console/admin/policy").text
    proposal_id = re.search(r"/console/admin/policy/proposals/([0-9a-f]+)/approve", page)
    assert proposal_id is None  # the proposer is offered no approve button
    proposal_id = re.search(r'id="proposal-([0-9a-f]+)"', page).group(1)  # type: ignore[union-attr]
    assert "demo-approver" in page and "+    &#34;console-grant&#34;" in page  # who may approve; the diff
    own = client.post(f"/console/admin/policy/proposals/{proposal_id}/approve", data={"csrf": csrf})
    assert own.status_code == 403  # the same rule as the API: nobody approves their own proposal
    csrf = logged_in_as(client, installation, "demo-approver")
    assert f"/console/admin/policy/proposals/{proposal_id}/approve" in client.get("/console/admin/policy").text
    forged = client.post(f"/console/admin/policy/proposals/{proposal_id}/approve", data={"csrf": "f" * 64})
    assert forged.status_code == 403 and "csrf" in forged.text
    approved = client.post(f"/console/admin/policy/proposals/{proposal_id}/approve", data={"csrf": csrf})
    assert approved.status_code == 200
    assert "console-grant" in client.get("/console/admin/grants").text
    assert "console-grant" in client.get("/v1/admin/grants", headers=bearer(token)).text


def test_a_freeze_from_the_console_is_enforced_by_the_api_and_its_reason_escaped(
    client: TestClient, installation: Installation
) -> None:
    business = bearer(get_token(client, "demo-business", installation.credentials["demo-business"]))
    csrf = logged_in_as(client, installation, "demo-admin")
    unguarded = client.post(
        "/console/admin/freezes/freeze", data={"kind": "consumer", "name": "demo-business", "reason": "x"}
    )
    assert unguarded.status_code == 403  # no CSRF token: refused, nothing frozen
    assert client.get("/v1/me", headers=business).status_code == 200
    frozen = client.post(
        "/console/admin/freezes/freeze",
        data={"kind": "consumer", "name": "demo-business", "reason": HOSTILE, "csrf": csrf},
    )
    assert frozen.status_code == 200
    assert HOSTILE not in frozen.text and str(escape(HOSTILE)) in frozen.text
    claims = [{"keys": {"credit_code": enterprises(installation)[0]["credit_code"]}, "checks": {"active": True}}]
    body = {"purpose": PURPOSE, "claims": claims}
    verify = client.post(f"/v1/verify/{SERVICE}", json=body, headers=business)
    assert verify.status_code == 403 and verify.json()["type"].endswith("/frozen")
    lift = {"kind": "consumer", "name": "demo-business", "reason": "cleared", "csrf": csrf}
    asked = client.post("/console/admin/freezes/unfreeze", data=lift)
    assert asked.status_code == 200 and "Lift asked" in asked.text and "cleared" in asked.text
    assert "You asked for this lift" in asked.text and 'action="/console/admin/freezes/unfreeze"' not in asked.text
    assert client.post(f"/v1/verify/{SERVICE}", json=body, headers=business).status_code == 403  # it holds
    lift["csrf"] = logged_in_as(client, installation, "demo-approver")
    thawed = client.post("/console/admin/freezes/unfreeze", data=lift)
    assert thawed.status_code == 200 and "Unfrozen" in thawed.text
    assert client.post(f"/v1/verify/{SERVICE}", json=body, headers=business).status_code == 200


def test_hostile_names_render_escaped_everywhere(client: TestClient, installation: Installation) -> None:
    business_csrf = logged_in_as(client, installation, "demo-business")
    client.post(
        "/console/objections",
        data={"about": "dataset", "subject": "enterprise_registry", "text": HOSTILE, "csrf": business_csrf},
    )
    csrf = logged_in_as(client, installation, "demo-admin")
    made = client.post(
        "/console/admin/consumers",
        data={"client_id": "hostile-org", "organisation": HOSTILE, "role": "consumer", "person": HOSTILE, "csrf": csrf},
    )
    assert made.status_code == 200 and "secret" in made.text
    for path in ("/console/admin/consumers", "/console/admin/objections", "/console/admin/audit"):
        page = client.get(path).text
        assert HOSTILE not in page and "<img src=x" not in page, path
    assert str(escape(HOSTILE)) in client.get("/console/admin/objections").text


def test_objection_answered_from_the_console(client: TestClient, installation: Installation) -> None:
    csrf = logged_in_as(client, installation, "demo-business")
    form = {"about": "dataset", "subject": "tax_compliance", "text": "t", "csrf": csrf}
    client.post("/console/objections", data=form)
    listed = client.get("/console/objections").text
    objection_id = re.search(r"<code>([0-9a-f]{12})</code>", listed).group(1)  # type: ignore[union-attr]
    csrf = logged_in_as(client, installation, "demo-admin")
    answered = client.post(
        f"/console/admin/objections/{objection_id}", data={"status": "accepted", "reply": "we look", "csrf": csrf}
    )
    assert answered.status_code == 200 and "we look" in answered.text
    again = client.post(
        f"/console/admin/objections/{objection_id}", data={"status": "accepted", "reply": "again", "csrf": csrf}
    )
    assert again.status_code == 409  # the API's own transitions


def test_audit_trail_is_newest_first_and_filtered(client: TestClient, installation: Installation) -> None:
    logged_in_as(client, installation, "demo-auditor")
    for _ in range(3):
        client.get("/console/catalogue")
    page = client.get("/console/admin/audit").text
    seqs = [int(s) for s in re.findall(r"<tr><td>(\d+)</td>", page)]
    assert len(seqs) > 3 and seqs == sorted(seqs, reverse=True)
    refused = client.get("/console/admin/audit", params={"decision": "refused"}).text
    assert "(200)" not in refused
    assert client.get("/console/admin/audit", params={"since": "yesterday"}).status_code == 422


def test_budgets_are_drawn_as_inline_svg(client: TestClient, installation: Installation) -> None:
    logged_in_as(client, installation, "demo-auditor")
    page = client.get("/console/admin/budgets").text
    assert page.count("<svg") >= 1 and 'role="img"' in page and "<title" in page


def test_job_review_from_the_console(jobs_gateway: Callable[..., Jobs], installation: Installation) -> None:
    jobs = jobs_gateway()
    submitted = jobs.submit("print('hello')\n" + "# " + HOSTILE, tables=EXAMPLE_TABLES)
    assert submitted.status_code == 201, submitted.text
    job_id = submitted.json()["id"]
    csrf = logged_in_as(jobs.client, installation, "demo-admin")
    listing = jobs.client.get("/console/admin/jobs").text
    assert job_id in listing
    page = jobs.client.get(f"/console/admin/jobs/{job_id}").text
    assert submitted.json()["code_sha256"] in page and str(escape("# " + HOSTILE)) in page and HOSTILE not in page
    approved = jobs.client.post(f"/console/admin/jobs/{job_id}/approve", data={"reason": "fine", "csrf": csrf})
    assert approved.status_code == 200
    again = jobs.client.post(f"/console/admin/jobs/{job_id}/approve", data={"reason": "again", "csrf": csrf})
    assert again.status_code == 409  # one person reviews once, as in the API
    csrf = logged_in_as(jobs.client, installation, "demo-approver")
    rejected = jobs.client.post(f"/console/admin/jobs/{job_id}/reject", data={"reason": "no", "csrf": csrf})
    assert rejected.status_code == 200
    assert jobs.admin_view(job_id)["status"] == "rejected"


@needs_isolation
def test_output_checking_from_the_console(jobs_gateway: Callable[..., Jobs], installation: Installation) -> None:
    from tests.jobs.test_output_checking import EXAMPLE, _submit_approved

    jobs = jobs_gateway()
    job_id = _submit_approved(jobs, EXAMPLE, EXAMPLE_TABLES)
    assert jobs.wait(job_id)["status"] == AWAITING_CHECK
    decided = 0
    for checker in ("demo-admin", "demo-approver"):
        csrf = logged_in_as(jobs.client, installation, checker)
        page = jobs.client.get(f"/console/admin/output-checks/{job_id}").text
        assert "enterprises_by_status" in page and "active_by_province" in page
        for output in ("enterprises_by_status", "active_by_province"):
            action = f"/console/admin/output-checks/{job_id}/{output}/release"
            if action not in jobs.client.get(f"/console/admin/output-checks/{job_id}").text:
                continue  # decided already: no form for it
            decision = "release" if output == "enterprises_by_status" else "withhold"
            done = jobs.client.post(
                f"/console/admin/output-checks/{job_id}/{output}/{decision}", data={"reason": "ok", "csrf": csrf}
            )
            assert done.status_code == 200, done.text
            decided += 1
    assert decided >= 2
    result = jobs.admin_view(job_id)
    assert result["status"] != AWAITING_CHECK, result


def test_a_whole_bundle_proposed_from_the_console(client: TestClient, installation: Installation) -> None:
    csrf = logged_in_as(client, installation, "demo-admin")
    page = client.get("/console/admin/policy").text
    bundle = json.loads(unescape(re.search(r'<textarea id="bundle"[^>]*>(.*?)</textarea>', page, re.S).group(1)))  # type: ignore[union-attr]
    base = re.search(r'name="base_version" value="([0-9a-f]+)"', page).group(1)  # type: ignore[union-attr]
    bundle["grants"].pop("bank-sme-credit-2026")
    form = {"bundle": json.dumps(bundle), "note": "end the bank's grant", "base_version": base, "csrf": csrf}
    assert client.post("/console/admin/policy", data={**form, "csrf": ""}).status_code == 403
    stale = client.post("/console/admin/policy", data={**form, "base_version": "0" * 32})
    assert stale.status_code == 409  # made from a version no longer in force
    proposed = client.post("/console/admin/policy", data=form)
    assert proposed.status_code == 200 and "end the bank&#39;s grant" in proposed.text
    assert "bank-sme-credit-2026" in client.get("/console/admin/grants").text  # not in force before approval
    broken = client.post("/console/admin/policy", data={**form, "bundle": "{not json"})
    assert broken.status_code == 422


def test_roles_enable_and_tracker(client: TestClient, installation: Installation) -> None:
    business = bearer(get_token(client, "demo-business", installation.credentials["demo-business"]))
    claims = [{"keys": {"credit_code": enterprises(installation)[0]["credit_code"]}, "checks": {"active": True}}]
    assert (
        client.post(f"/v1/verify/{SERVICE}", json={"purpose": PURPOSE, "claims": claims}, headers=business).status_code
        == 200
    )
    csrf = logged_in_as(client, installation, "demo-auditor")
    tracked = client.post(
        "/console/admin/tracker", data={"key": enterprises(installation)[0]["credit_code"], "csrf": csrf}
    )
    assert tracked.status_code == 200 and "demo-business" in tracked.text
    assert enterprises(installation)[0]["credit_code"] not in tracked.text  # the key is not echoed
    csrf = logged_in_as(client, installation, "demo-admin")
    roles = client.post("/console/admin/consumers/demo-researcher/roles", data={"roles": ["consumer"], "csrf": csrf})
    assert roles.status_code == 200
    assert client.post("/console/admin/consumers/demo-business/disable", data={"csrf": csrf}).status_code == 200
    assert client.get("/v1/me", headers=business).status_code == 401  # the API sees it at once
    enabled = client.post("/console/admin/consumers/demo-business/enable", data={"csrf": csrf})
    assert enabled.status_code == 200 and "demo-business" in enabled.text
    assert client.get("/v1/me", headers=business).status_code == 401  # re-enabling waits for another person


def _proposal_id(page: str) -> str:
    return re.search(r'id="proposal-([0-9a-f]+)"', page).group(1)  # type: ignore[union-attr]


def test_a_proposal_rejected_or_withdrawn_from_the_console(client: TestClient, installation: Installation) -> None:
    token = get_token(client, "demo-admin", installation.credentials["demo-admin"])
    grant = client.get("/v1/admin/grants/bank-sme-credit-2026", headers=bearer(token)).json()["grant"]
    csrf = logged_in_as(client, installation, "demo-admin")
    for name in ("rejected-grant", "withdrawn-grant"):
        made = client.post("/console/admin/grants", data={"grant_id": name, "grant": json.dumps(grant), "csrf": csrf})
        assert made.status_code == 200
    page = client.get("/console/admin/policy").text
    first, second = re.findall(r'id="proposal-([0-9a-f]+)"', page)
    # The proposer is offered withdraw, never reject, and the store refuses a reject from them too.
    assert f"/proposals/{first}/withdraw" in page and f"/proposals/{first}/reject" not in page
    assert (
        client.post(f"/console/admin/policy/proposals/{first}/reject", data={"reason": "x", "csrf": csrf}).status_code
        == 403
    )
    withdrawn = client.post(
        f"/console/admin/policy/proposals/{second}/withdraw", data={"reason": "twice", "csrf": csrf}
    )
    assert withdrawn.status_code == 200 and "can never be approved" in withdrawn.text
    csrf = logged_in_as(client, installation, "demo-auditor")
    page = client.get("/console/admin/policy").text
    assert "/reject" not in page and "/withdraw" not in page  # auditors read only
    refused = client.post(f"/console/admin/policy/proposals/{first}/reject", data={"reason": "x", "csrf": csrf})
    assert refused.status_code == 403
    csrf = logged_in_as(client, installation, "demo-approver")
    page = client.get("/console/admin/policy").text
    assert f"/proposals/{first}/reject" in page and f"/proposals/{first}/withdraw" not in page
    reject = f"/console/admin/policy/proposals/{first}/reject"
    for forged in ({"reason": "x"}, {"reason": "x", "csrf": "0" * 64}):
        assert client.post(reject, data=forged).status_code == 403
    foreign = client.post(reject, data={"reason": "x", "csrf": csrf}, headers={"Origin": "https://evil.example"})
    assert foreign.status_code == 403
    assert client.post(reject, data={"reason": "", "csrf": csrf}).status_code == 422
    assert (
        client.post(f"/console/admin/policy/proposals/{first}/ignore", data={"reason": "x", "csrf": csrf}).status_code
        == 422
    )
    rejected = client.post(reject, data={"reason": HOSTILE, "csrf": csrf})
    assert rejected.status_code == 200 and "can never be approved" in rejected.text
    assert HOSTILE not in rejected.text and str(escape(HOSTILE)) in rejected.text  # the reason, in the history
    assert 'id="proposal-' not in rejected.text
    again = client.post(f"/console/admin/policy/proposals/{first}/approve", data={"csrf": csrf})
    assert again.status_code == 409  # decided for good
    assert "rejected-grant" not in client.get("/console/admin/grants").text


def test_an_administrator_of_the_submitters_own_identity_sees_the_researchers_view(
    jobs_gateway: Callable[..., Jobs],
) -> None:
    """Its API answer is the researcher's view (no submitter, no log); the page shows that view
    instead of failing on the fields it leaves out."""
    from gateway.domain.principal import Role
    from tests.console.conftest import console_login

    jobs = jobs_gateway()
    job_id = jobs.submit("print('hello')\n", tables=EXAMPLE_TABLES).json()["id"]
    rt = jobs.client.app.state.runtime
    secret = rt.clients.add("res-admin", "Demo University Institute of Labour Economics", [Role.ADMIN])
    assert rt.clients.identity_of("res-admin") == rt.clients.identity_of("demo-researcher")
    jobs.client.cookies.clear()
    console_login(jobs.client, "res-admin", secret)
    page = jobs.client.get(f"/console/admin/jobs/{job_id}")
    assert page.status_code == 200 and job_id in page.text
    assert "hello" not in page.text  # what the job printed stays with the other administrators


def test_an_account_proposal_shows_what_its_approver_approves(client: TestClient, installation: Installation) -> None:
    """Roles to be granted beside those held, the person and the organisation: an approver who
    saw only "roles demo-business" approved, unseen, making it an administrator."""
    csrf = logged_in_as(client, installation, "demo-admin")
    proposed = client.post(
        "/console/admin/consumers/demo-business/roles", data={"roles": ["consumer", "admin"], "csrf": csrf}
    )
    assert proposed.status_code == 200
    logged_in_as(client, installation, "demo-approver")
    page = client.get("/console/admin/consumers", params={"lang": "en"}).text
    row = next(r for r in page.split("<tr>") if "/console/admin/consumers/proposals/" in r and "demo-business" in r)
    assert "Roles: admin, consumer" in row and "Roles now: consumer" in row
    assert "Person:" in row and "Demo Commercial Bank" in row and "data-confirm" in row
