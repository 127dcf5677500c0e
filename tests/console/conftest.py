"""Console helpers: log a test client in through the login form, read a form's CSRF token."""

from __future__ import annotations

import re

from fastapi.testclient import TestClient

from tests.jobs.conftest import jobs_gateway  # noqa: F401  (a fixture the console tests share)

PUBLIC_PAGES = (
    "/console",
    "/console/catalogue",
    "/console/catalogue/enterprise_registry",
    "/console/disclosure",
    "/console/checkpoints",
    "/console/receipt",
    "/console/objections",
    "/console/login",
)


def hidden(page: str, name: str) -> str:
    found = re.search(rf'name="{name}" value="([^"]*)"', page)
    assert found is not None, f"no hidden field {name}"
    return found.group(1)


def console_login(client: TestClient, client_id: str, secret: str) -> str:
    """Log in through the form; returns the session's CSRF token (from the next page)."""
    form = client.get("/console/login")
    response = client.post(
        "/console/login",
        data={"client_id": client_id, "client_secret": secret, "login_csrf": hidden(form.text, "login_csrf")},
        follow_redirects=False,
    )
    assert response.status_code == 303, response.text
    return hidden(client.get("/console/objections").text, "csrf")


def logged_in_as(client: TestClient, installation: object, client_id: str) -> str:
    """Log `client` in as the demo account `client_id` (the session replaces any earlier one)."""
    client.cookies.clear()
    return console_login(client, client_id, installation.credentials[client_id])  # type: ignore[attr-defined]
