"""The console attacked as a hostile user would: forms sent from elsewhere or with another
session's token, sessions that ended, accounts of the wrong role, redirects off the site,
framing, caching, markup planted in every value a page shows, and error pages that echo."""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from fastapi import routing
from fastapi.routing import APIRoute
from fastapi.testclient import TestClient
from markupsafe import escape

from gateway.app import create_app
from gateway.console import session
from gateway.domain.principal import Role
from gateway.services import authentication
from tests.conftest import CANARY, Installation, bearer, get_token, serving
from tests.console.conftest import PUBLIC_PAGES, hidden, logged_in_as

HOSTILE = "<script>alert('x')</script>\"><img src=x onerror=alert(1)>"
PARAMETERS = {
    "dataset": "enterprise_registry",
    "name": "console.js",
    "proposal_id": "000000000000",
    "job_id": "000000000000",
    "objection_id": "000000000000",
    "client_id": "demo-business",
    "grant_id": "bank-sme-credit-2026",
    "decision": "reject",
    "action": "freeze",
    "output": "table",
}
FORM = {  # every field any console form takes, so a refusal is the role's and not a missing field's
    "reason": "x", "kind": "consumer", "name": "demo-business", "status": "accepted", "reply": "x",
    "grant_id": "g", "grant": "{}", "client_id": "someone", "organisation": "o", "role": "consumer",
    "bundle": "{}", "note": "x", "roles": "consumer", "key": "x", "about": "dataset",
    "subject": "enterprise_registry", "text": "x",
}  # fmt: skip


@pytest.fixture
def client(installation: Installation, make_client: Callable[..., TestClient]) -> TestClient:
    return make_client(installation.settings)


def console_routes(client: TestClient, prefix: str = "/console") -> Iterator[tuple[str, str]]:
    """(method, path) of every console route, its path parameters filled in."""
    contexts = getattr(routing, "iter_route_contexts", None)  # as gateway.console.openapi.api_routes
    routes = client.app.routes  # type: ignore[attr-defined]
    for item in contexts(routes) if contexts is not None else routes:
        route = getattr(item, "original_route", item)
        template = str(getattr(item, "path_format", None) or getattr(route, "path_format", ""))
        if isinstance(route, APIRoute) and template.startswith(prefix):
            path = re.sub(r"{(\w+)}", lambda m: PARAMETERS[m.group(1)], template)
            for method in sorted(route.methods):
                yield method, path


def _is_protected(response: Any, *, cached: bool = False) -> None:
    headers = response.headers
    policy = headers["content-security-policy"]
    assert "frame-ancestors 'none'" in policy and "script-src 'self'" in policy, response.url
    assert "default-src 'none'" in policy and "base-uri 'none'" in policy and "form-action 'self'" in policy
    assert "unsafe" not in policy.split("style-src")[0], response.url  # never for scripts
    assert headers["x-frame-options"] == "DENY" and headers["x-content-type-options"] == "nosniff"
    if not cached:
        assert headers["cache-control"] == "no-store", response.url


def test_every_console_response_forbids_framing_sniffing_and_caching(
    client: TestClient, installation: Installation
) -> None:
    anonymous = [client.get(path) for _m, path in console_routes(client) if _m == "GET"]
    anonymous += [client.get(p) for p in (*PUBLIC_PAGES, "/console/nope", "/console/catalogue/nope", "/docs")]
    anonymous += [client.get("/console/disclosure", params={"year": "abc"}), client.put("/console/login")]
    oversized = client.post("/console/login", content=b"x" * (installation.settings.max_body_bytes + 1))
    anonymous.append(oversized)  # answered by the request middleware, outside the console's own layer
    statuses = {r.status_code for r in anonymous}
    assert {200, 401, 404, 405, 413, 422} <= statuses  # pages, refusals, unknown paths, methods, bodies, queries
    for response in anonymous:
        _is_protected(response, cached=response.url.path.startswith(("/console/static/", "/docs/assets/")))
    logged_in_as(client, installation, "demo-admin")
    signed_in = [client.get(path) for method, path in console_routes(client, "/console/admin") if method == "GET"]
    assert len(signed_in) >= 12 and any(r.status_code == 200 for r in signed_in)
    for response in signed_in:  # an administrator's page is never kept by a browser or a proxy
        _is_protected(response)
    redirect = client.post("/console/logout", data={"csrf": hidden(client.get("/console").text, "csrf")},
                           follow_redirects=False)  # fmt: skip
    assert redirect.status_code == 303
    _is_protected(redirect)
    _is_protected(client.get("/docs/assets/docs.js"), cached=True)


def _frozen(client: TestClient, token: str) -> list[Any]:
    found: list[Any] = client.get("/v1/admin/freezes", headers=bearer(token)).json()["active"]
    return found


def test_forms_from_another_site_or_session_are_refused(client: TestClient, installation: Installation) -> None:
    other = TestClient(client.app)
    their_csrf = logged_in_as(other, installation, "demo-approver")  # another session's token
    old_csrf = logged_in_as(client, installation, "demo-admin")
    csrf = logged_in_as(client, installation, "demo-admin")  # a new session: the old form is stale
    assert csrf not in (old_csrf, their_csrf)
    form = {"kind": "consumer", "name": "demo-business", "reason": "forged"}
    attacks: list[tuple[dict[str, str], dict[str, str]]] = [
        ({}, {}),  # no token
        ({"csrf": "0" * 64}, {}),  # a made-up token
        ({"csrf": their_csrf}, {}),  # the token of another session
        ({"csrf": old_csrf}, {}),  # the token of an earlier session of the same person
        ({"csrf": csrf}, {"Origin": "https://evil.example"}),
        ({"csrf": csrf}, {"Origin": "null"}),  # a sandboxed frame or a data: page
        ({"csrf": csrf}, {"Origin": "http://testserver:8443"}),  # another port: same site, not same origin
        ({"csrf": csrf}, {"Sec-Fetch-Site": "cross-site"}),
        ({"csrf": csrf}, {"Sec-Fetch-Site": "same-site"}),  # a sibling subdomain
    ]
    for fields, headers in attacks:
        refused = client.post("/console/admin/freezes/freeze", data={**form, **fields}, headers=headers)
        assert refused.status_code == 403 and "csrf" in refused.text, (fields, headers)
    admin = get_token(client, "demo-admin", installation.credentials["demo-admin"])
    assert _frozen(client, admin) == []
    same = {"Origin": "http://testserver", "Sec-Fetch-Site": "same-origin"}
    assert client.post("/console/admin/freezes/freeze", data={**form, "csrf": csrf}, headers=same).status_code == 200
    assert len(_frozen(client, admin)) == 1


@pytest.mark.parametrize("account", ["demo-business", "demo-researcher"])
def test_a_consumer_or_researcher_session_reaches_no_admin_route(
    client: TestClient, installation: Installation, account: str
) -> None:
    routes = list(console_routes(client, "/console/admin"))
    assert len(routes) >= 25
    for method, path in routes:  # no session at all
        assert client.request(method, path, data=FORM if method == "POST" else None).status_code == 401, path
    csrf = logged_in_as(client, installation, account)
    for method, path in routes:
        response = client.request(method, path, data={**FORM, "csrf": csrf} if method == "POST" else None)
        assert response.status_code == 403, (method, path, response.status_code)
    assert 'href="/console/admin"' not in client.get("/console").text  # not even offered


def test_login_never_redirects_off_the_site(client: TestClient, installation: Installation) -> None:
    for account, landing in (("demo-admin", "/console/admin"), ("demo-business", "/console/objections")):
        client.cookies.clear()
        form = client.get("/console/login", params={"next": "https://evil.example/"})
        response = client.post(
            "/console/login",
            params={"next": "//evil.example", "redirect": "https://evil.example"},
            data={"client_id": account, "client_secret": installation.credentials[account],
                  "login_csrf": hidden(form.text, "login_csrf"), "next": "https://evil.example"},
            follow_redirects=False,
        )  # fmt: skip
        assert response.status_code == 303 and response.headers["location"] == landing


def test_logout_and_expiry_end_the_session(client: TestClient, installation: Installation) -> None:
    csrf = logged_in_as(client, installation, "demo-admin")
    assert client.post("/console/logout", data={"csrf": "0" * 64}).status_code == 403  # nobody logs you out
    ended = client.post("/console/logout", data={"csrf": csrf}, follow_redirects=False)
    assert ended.status_code == 303 and ended.headers["location"] == "/console"
    cookie = next(v for v in ended.headers.get_list("set-cookie") if v.startswith(f"{session.COOKIE}="))
    assert "Max-Age=0" in cookie and "Path=/console" in cookie and "HttpOnly" in cookie
    assert client.get("/console/admin").status_code == 401
    assert 'action="/console/logout"' not in client.get("/console").text  # signed out
    rt = client.app.state.runtime  # type: ignore[attr-defined]
    settings = installation.settings
    expired = authentication.mint_token(
        rt.token_keys, "demo-admin", "Veilgate demo", frozenset({Role.ADMIN}), issuer=settings.issuer,
        audience=authentication.console_audience(settings.audience), ttl_seconds=60,
        now=datetime.now(UTC) - timedelta(minutes=10),
    )  # fmt: skip
    client.cookies.set(session.COOKIE, expired, path="/console")
    assert client.get("/console/admin").status_code == 401
    assert "demo-admin" not in client.get("/console").text  # shown as signed out


@contextmanager
def behind_proxy(app: Any, trusted: str) -> Iterator[str]:
    """`app` served by uvicorn as `veilgate serve` does (proxy headers on), trusting `trusted`."""
    with serving(app, forwarded_allow_ips=trusted) as base:
        yield base


def _session_cookie(response: Any) -> str:
    """The session's Set-Cookie, named `__Host-vg_session` over https, `vg_session` over http."""
    names = (f"{session.COOKIE}=", f"{session.HOST_PREFIX}{session.COOKIE}=")
    return next(v for v in response.headers.get_list("set-cookie") if v.startswith(names))


def _login(client: Any, installation: Installation, **headers: str) -> Any:
    """Log in as demo-admin; the login cookie is sent back by hand (a Secure cookie is not, over http)."""
    form = client.get("/console/login", headers=headers)
    names = (f"{session.LOGIN_COOKIE}=", f"{session.HOST_PREFIX}{session.LOGIN_COOKIE}=")
    cookie = next(v for v in form.headers.get_list("set-cookie") if v.startswith(names)).split(";")[0]
    return client.post(
        "/console/login",
        data={"client_id": "demo-admin", "client_secret": installation.credentials["demo-admin"],
              "login_csrf": hidden(form.text, "login_csrf")},
        headers={**headers, "Cookie": cookie}, follow_redirects=False,
    )  # fmt: skip


def test_secure_cookie_behind_a_proxy_that_ends_tls(
    installation: Installation, make_client: Callable[..., TestClient]
) -> None:
    import httpx2

    proxied = installation.settings.model_copy(update={"console_origin": "https://gw.example"})
    client = make_client(proxied)
    logged = _login(client, installation, Origin="https://gw.example")
    assert logged.status_code == 303 and "; Secure" in _session_cookie(logged)
    cookie = {"Cookie": _session_cookie(logged).split(";")[0]}  # a Secure cookie is not sent over http
    csrf = hidden(client.get("/console/objections", headers=cookie).text, "csrf")
    form = {"about": "dataset", "subject": "enterprise_registry", "text": "t", "csrf": csrf}
    # the scheme and host the gateway itself sees are not the console's origin any more
    seen = client.post("/console/objections", data=form, headers={**cookie, "Origin": "http://testserver"})
    assert seen.status_code == 403
    sent = client.post("/console/objections", data=form, headers={**cookie, "Origin": "https://gw.example"})
    assert sent.status_code == 200
    # Without the setting, X-Forwarded-Proto counts only from a proxy uvicorn trusts.
    for trusted, secure in (("127.0.0.1", True), ("10.9.9.9", False)):
        with behind_proxy(create_app(installation.settings), trusted) as base, httpx2.Client(base_url=base) as http:
            logged = _login(http, installation, **{"X-Forwarded-Proto": "https"})
            assert logged.status_code == 303 and ("; Secure" in _session_cookie(logged)) is secure, trusted


def test_every_value_an_attacker_controls_is_shown_as_text(
    installation: Installation, make_client: Callable[..., TestClient]
) -> None:
    """Markup in a dataset's title, description, owner and columns, an account's names, a grant's
    scenario, a proposal's note and diff, an objection, a freeze and a rejection's reasons."""
    record_path = installation.settings.data_path / "catalog" / "enterprise_registry.json"
    if not record_path.exists():
        record_path = next(Path(installation.settings.data_path).rglob("enterprise_registry.json"))
    record = json.loads(record_path.read_text())
    entry = record["entry"]
    entry.update(title=HOSTILE, description=HOSTILE, owner_body=HOSTILE)
    entry["columns"][0]["description"] = HOSTILE
    record_path.write_text(json.dumps(record, ensure_ascii=False))
    client = make_client(installation.settings)
    csrf = logged_in_as(client, installation, "demo-business")
    client.post("/console/objections", data={"about": "dataset", "subject": "enterprise_registry",
                                             "text": HOSTILE, "csrf": csrf})  # fmt: skip
    csrf = logged_in_as(client, installation, "demo-admin")
    account = {"client_id": "hostile-org", "organisation": HOSTILE, "role": "consumer", "person": HOSTILE}
    made = client.post("/console/admin/consumers", data={**account, "csrf": csrf})
    assert made.status_code == 200
    admin = bearer(get_token(client, "demo-admin", installation.credentials["demo-admin"]))
    grant = client.get("/v1/admin/grants/bank-sme-credit-2026", headers=admin).json()["grant"]
    grant.update(scenario=HOSTILE)
    for grant_id in ("hostile-grant", "hostile-rejected"):
        proposed = client.post("/v1/admin/grants", json={"id": grant_id, "grant": grant}, headers=admin)
        assert proposed.status_code == 202, proposed.text
    client.post("/console/admin/freezes/freeze", data={"kind": "service", "name": "tax-compliance",
                                                       "reason": HOSTILE, "csrf": csrf})  # fmt: skip
    csrf = logged_in_as(client, installation, "demo-approver")
    pending = client.get("/v1/admin/policy", headers=admin).json()["proposals"]
    assert "<img src=x onerror=alert(1)>" in json.dumps(pending)  # the diff carries it (as JSON)
    shown = client.get("/console/admin/policy").text
    assert "<img src=x" not in shown and "&lt;img src=x onerror=alert(1)&gt;" in shown
    first, second = (p["id"] for p in pending)
    client.post(f"/console/admin/policy/proposals/{first}/approve", data={"csrf": csrf})
    client.post(f"/console/admin/policy/proposals/{second}/reject", data={"reason": HOSTILE, "csrf": csrf})
    pages = [*PUBLIC_PAGES, "/console/catalogue/enterprise_registry", "/console/disclosure"]
    pages += [path for method, path in console_routes(client, "/console/admin") if method == "GET"]
    seen = 0
    for path in pages:
        text = client.get(path).text
        assert HOSTILE not in text and "<img src=x" not in text and "<script>alert" not in text, path
        seen += str(escape(HOSTILE)) in text
    assert seen >= 7  # the catalogue, dataset, disclosure, policy, grants, consumers, freezes, objections pages


def test_error_pages_name_the_field_never_the_value(client: TestClient, installation: Installation) -> None:
    bad = f"{CANARY}<b>"
    csrf = logged_in_as(client, installation, "demo-admin")
    attempts = [
        ("/console/admin/freezes/freeze", {"kind": bad, "name": "x", "reason": "r"}),
        ("/console/admin/freezes/freeze", {"kind": "consumer", "name": bad, "reason": "r"}),
        ("/console/admin/consumers", {"client_id": bad, "organisation": "o", "role": "consumer"}),
        ("/console/admin/consumers", {"client_id": "ok-id", "organisation": "o", "role": bad}),
        ("/console/admin/grants", {"grant_id": "g", "grant": json.dumps({"consumer": bad})}),
        ("/console/admin/grants", {"grant_id": "g", "grant": bad}),
        ("/console/admin/policy", {"bundle": bad, "note": "n"}),
        ("/console/admin/objections/000000000000", {"status": bad, "reply": "r"}),
        ("/console/objections", {"about": bad, "subject": "s", "text": "t"}),
        ("/console/admin/policy/proposals/000000000000/reject", {"reason": "r" * 501}),
    ]
    for path, form in attempts:
        response = client.post(path, data={**form, "csrf": csrf})
        assert 400 <= response.status_code < 500, (path, response.status_code)
        assert CANARY not in response.text, (path, form)
    for query in ({"since": bad}, {"principal": bad}, {"decision": bad}):
        response = client.get("/console/admin/audit", params=query)
        assert response.status_code == 422 and CANARY not in response.text, query
    wrong = client.post("/console/login", data={"client_id": bad, "client_secret": bad, "login_csrf": "x"})
    assert wrong.status_code == 403 and CANARY not in wrong.text


def test_the_public_page_shows_no_operators_fees_for_the_year_under_way(
    client: TestClient, installation: Installation
) -> None:
    """The annual report names each operator's fees. Rebuilt live for the current year, an
    outsider polling the page watched one named bank's billable requests as they happened; it
    is shown for years that have ended only."""
    from tests.verify.conftest import PURPOSE, SERVICE, enterprises

    business = bearer(get_token(client, "demo-business", installation.credentials["demo-business"]))
    claims = [{"keys": {"credit_code": enterprises(installation)[0]["credit_code"]}, "checks": {"active": True}}]
    verified = client.post(f"/v1/verify/{SERVICE}", json={"purpose": PURPOSE, "claims": claims}, headers=business)
    assert verified.is_success
    year = datetime.now(UTC).year
    english = json.loads((Path(__file__).parents[2] / "gateway/console/messages/en.json").read_text())
    for shown in (year, year + 1):
        page = client.get("/console/disclosure", params={"year": str(shown), "lang": "en"})
        assert page.status_code == 200
        report = page.text.split('id="report"')[1]
        assert english["disclosure.fees"] not in report and "bank-sme-credit" not in report
    default = client.get("/console/disclosure", params={"lang": "en"}).text
    assert f"{english['disclosure.report']} {year - 1}" in default  # the last year that has ended
    ended = client.get("/console/disclosure", params={"year": str(year - 1), "lang": "en"})
    assert english["disclosure.fees"] in ended.text  # a closed year's report is published in full
