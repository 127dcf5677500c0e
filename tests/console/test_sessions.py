"""The console's session cookie attacked: a copy taken before logout replayed afterwards on
another process or replica, the cookie's token sent to the API as a bearer token, an API token
planted as the cookie, and over https a cookie planted by a sibling subdomain (the `__Host-`
prefix) or sent to routes outside /console (Path=/)."""

from __future__ import annotations

import contextlib
import re
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from gateway.app import create_app
from gateway.console import session
from gateway.console.openapi import api_routes
from gateway.settings import Settings
from tests.conftest import ON_POSTGRES, PG_DSN, Installation, bearer, get_token, pg_schema
from tests.console.conftest import hidden, logged_in_as

HTTPS = "https://gw.example"


@pytest.fixture(params=["sqlite", ON_POSTGRES])
def replicas(request: pytest.FixtureRequest, installation: Installation, tmp_path: Path) -> Iterator[list[Settings]]:
    """Settings of two gateway processes: on one machine (SQLite files in one state directory),
    or two replicas with state directories of their own on one PostgreSQL database."""
    if request.param == "sqlite":
        yield [installation.settings, installation.settings]
        return
    with pg_schema() as schema:
        made = []
        for name in ("a", "b"):
            state = tmp_path / f"replica-{name}"  # a new installation's: without an audit trail of its own
            shutil.copytree(installation.settings.state_dir, state, ignore=shutil.ignore_patterns("log.sqlite3*"))
            made.append(
                installation.settings.model_copy(
                    update={"state_dir": state, "database_dsn": PG_DSN, "database_schema": schema}
                )
            )
        yield made


def test_a_cookie_copied_before_logout_is_refused_after_by_every_process(
    replicas: list[Settings], installation: Installation
) -> None:
    with contextlib.ExitStack() as running:  # started and stopped as served: every connection closed
        browser, thief, again = (running.enter_context(TestClient(create_app(s))) for s in (*replicas, replicas[0]))
        _replayed_after_logout(browser, thief, again, installation)


def _replayed_after_logout(
    browser: TestClient, thief: TestClient, again: TestClient, installation: Installation
) -> None:
    csrf = logged_in_as(browser, installation, "demo-admin")
    stolen = browser.cookies.get(session.COOKIE)
    assert stolen
    thief.cookies.set(session.COOKIE, stolen, path="/console")
    assert thief.get("/console/admin").status_code == 200  # the copy works while the session lasts
    assert thief.get("/v1/me", headers=bearer(stolen)).status_code == 401  # never as an API token
    assert browser.post("/console/logout", data={"csrf": csrf}, follow_redirects=False).status_code == 303
    assert thief.get("/console/admin").status_code == 401
    assert "demo-admin" not in thief.get("/console").text  # shown as signed out
    form = {"about": "dataset", "subject": "enterprise_registry", "text": "t", "csrf": csrf}
    assert thief.post("/console/objections", data=form).status_code == 401  # no write either
    again.cookies.set(session.COOKIE, stolen, path="/console")
    assert again.get("/console/admin").status_code == 401  # nor on another handle where it logged out
    logged_in_as(browser, installation, "demo-admin")  # a new session of the same account is not ended
    assert browser.get("/console/admin").status_code == 200


def test_an_api_token_is_no_console_session(installation: Installation, make_client: Callable[..., TestClient]) -> None:
    client = make_client(installation.settings)
    api_token = get_token(client, "demo-admin", installation.credentials["demo-admin"])
    client.cookies.set(session.COOKIE, api_token, path="/console")
    assert client.get("/console/admin").status_code == 401


def _set_cookie(response: Any, name: str) -> str:
    return next(v for v in response.headers.get_list("set-cookie") if v.startswith(f"{name}="))


def _is_host_only(cookie: str) -> None:
    attributes = [a.strip().lower() for a in cookie.split(";")[1:]]
    assert "path=/" in attributes and "secure" in attributes and "httponly" in attributes, cookie
    assert "samesite=strict" in attributes and not any(a.startswith("domain") for a in attributes), cookie


def _outside_console(client: TestClient) -> Iterator[tuple[str, str]]:
    """(method, path) of every route of the API, its path parameters filled in."""
    for template, route in api_routes(client.app):  # type: ignore[arg-type]
        if not template.startswith("/console"):
            path = re.sub(r"{(\w+)}", lambda m: "enterprise_registry" if m.group(1) == "dataset" else "x", template)
            for method in sorted(route.methods - {"HEAD"}):
                yield method, path


def test_over_https_the_cookies_are_host_only_and_planted_ones_are_ignored(
    installation: Installation, make_client: Callable[..., TestClient]
) -> None:
    client = make_client(installation.settings.model_copy(update={"console_origin": HTTPS}))
    form = client.get("/console/login")
    login_cookie = _set_cookie(form, session.HOST_PREFIX + session.LOGIN_COOKIE)
    _is_host_only(login_cookie)
    login = {"client_id": "demo-admin", "client_secret": installation.credentials["demo-admin"],
             "login_csrf": hidden(form.text, "login_csrf")}  # fmt: skip
    # A login token planted without the prefix (a sibling subdomain can set that one) does not count.
    planted_login = f"{session.LOGIN_COOKIE}={login['login_csrf']}"
    refused = client.post("/console/login", data=login, headers={"Origin": HTTPS, "Cookie": planted_login})
    assert refused.status_code == 403
    logged = client.post("/console/login", data=login, follow_redirects=False,
                         headers={"Origin": HTTPS, "Cookie": login_cookie.split(";")[0]})  # fmt: skip
    assert logged.status_code == 303
    cookie = _set_cookie(logged, session.HOST_PREFIX + session.COOKIE)
    _is_host_only(cookie)
    own = {"Cookie": cookie.split(";")[0]}
    token = cookie.split(";")[0].split("=", 1)[1]
    assert client.get("/console/admin", headers=own).status_code == 200
    # SECURITY: a session planted under the plain name (its planter's own account, say) is ignored.
    assert client.get("/console/admin", headers={"Cookie": f"{session.COOKIE}={token}"}).status_code == 401
    # Path=/ sends the cookie to every route: outside /console it changes no answer.
    compared = 0
    for method, path in _outside_console(client):
        without = client.request(method, path).status_code
        assert client.request(method, path, headers=own).status_code == without, (method, path)
        compared += without == 401
    assert compared >= 20  # the API's authenticated routes were among them
    # Logout deletes it under the same name and path, and ends it.
    csrf = hidden(client.get("/console/objections", headers=own).text, "csrf")
    ended = client.post("/console/logout", data={"csrf": csrf}, headers={**own, "Origin": HTTPS},
                        follow_redirects=False)  # fmt: skip
    deleted = _set_cookie(ended, session.HOST_PREFIX + session.COOKIE)
    assert "Max-Age=0" in deleted and "Path=/" in deleted
    assert client.get("/console/admin", headers=own).status_code == 401
