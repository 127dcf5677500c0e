"""Console helpers: log a test client in through the login form, read a form's CSRF token."""

from __future__ import annotations

import re

from fastapi.testclient import TestClient

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
