"""The public pages: both languages, complete and alike; no outside host; escaped; the
objection form behind a session and a CSRF token; the session cookie's flags."""

from __future__ import annotations

import re
from importlib.resources import files
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from gateway.console import i18n
from tests.conftest import Installation
from tests.console.conftest import PUBLIC_PAGES, console_login, hidden

OUTSIDE = re.compile(r"""(?:src|href|action|url)\s*[=(]\s*["']?\s*(?:https?:)?//""", re.IGNORECASE)
TEMPLATES = files("gateway.console") / "templates"


def test_both_languages_have_the_same_keys_and_no_empty_message() -> None:
    english, chinese = i18n.catalogue("en"), i18n.catalogue("zh")
    assert set(english) == set(chinese)
    assert all(v.strip() for v in (*english.values(), *chinese.values()))
    for key in english:  # the same fields to fill in
        assert set(re.findall(r"{(\w+)}", english[key])) == set(re.findall(r"{(\w+)}", chinese[key])), key


def test_every_key_the_templates_use_is_in_the_catalogue() -> None:
    used: set[str] = set()
    for template in Path(str(TEMPLATES)).rglob("*.html"):
        used |= set(re.findall(r"""\bt\(["']([a-z_]+\.[a-z_.]+)["']""", template.read_text("utf-8")))
    known = set(i18n.catalogue("en"))
    prefixes = {k for k in used if k.endswith((".", "_"))}  # t("level." ~ d.level): a family of keys
    assert len(used) > 200
    assert used - prefixes <= known
    assert all(any(k.startswith(p) for k in known) for p in prefixes)


@pytest.mark.parametrize("language", i18n.LANGUAGES)
@pytest.mark.parametrize("path", PUBLIC_PAGES)
def test_each_public_page_in_each_language(shared_client: TestClient, path: str, language: str) -> None:
    response = shared_client.get(path, params={"lang": language})
    assert response.status_code == 200
    page = response.text
    assert f'<html lang="{"zh-CN" if language == "zh" else "en"}">' in page
    assert i18n.catalogue(language)["nav.catalogue"] in page
    other = "en" if language == "zh" else "zh"
    assert i18n.catalogue(other)["nav.catalogue"] not in page  # nothing left in the other language
    assert not OUTSIDE.search(page), "a page names another host"
    assert "<script>" not in page and " on" + "click=" not in page  # no inline script
    policy = response.headers["content-security-policy"]
    assert "script-src 'self'" in policy and "unsafe-inline" not in policy
    assert response.headers["x-frame-options"] == "DENY"
    for label in re.findall(r'<label for="([^"]+)"', page):
        assert f'id="{label}"' in page  # every label names its field


def test_language_switch_is_remembered(shared_client: TestClient) -> None:
    shared_client.get("/console", params={"lang": "zh"})
    assert '<html lang="zh-CN">' in shared_client.get("/console/catalogue").text
    shared_client.get("/console", params={"lang": "en"})
    assert '<html lang="en">' in shared_client.get("/console/catalogue").text


def test_catalogue_page_shows_levels_columns_and_bounds(shared_client: TestClient) -> None:
    page = shared_client.get("/console/catalogue/enterprise_registry", params={"lang": "en"}).text
    assert "registered_capital" in page and "[0.0, 10000000000.0]" in page
    listing = shared_client.get("/console/catalogue", params={"lang": "zh"}).text
    assert "重要数据" in listing and "一般数据" in listing


def test_static_files_are_only_those_named(shared_client: TestClient) -> None:
    assert shared_client.get("/console/static/receipt.js").status_code == 200
    for name in ("..%2F__init__.py", "docs.js", "en.json"):
        assert shared_client.get(f"/console/static/{name}").status_code == 404


def test_session_cookie_flags_and_lifetime(installation: Installation, make_client: object) -> None:
    client: TestClient = make_client(installation.settings)  # type: ignore[operator]
    form = client.get("/console/login")
    response = client.post(
        "/console/login",
        data={
            "client_id": "demo-business",
            "client_secret": installation.credentials["demo-business"],
            "login_csrf": hidden(form.text, "login_csrf"),
        },
        follow_redirects=False,
    )
    assert response.status_code == 303
    cookie = next(v for v in response.headers.get_list("set-cookie") if v.startswith("vg_session="))
    assert "HttpOnly" in cookie and "SameSite=strict" in cookie and "Path=/console" in cookie
    max_age = int(re.search(r"Max-Age=(\d+)", cookie).group(1))  # type: ignore[union-attr]
    assert 0 < max_age <= installation.settings.token_ttl_seconds


def test_login_refuses_a_form_without_its_token(installation: Installation, make_client: object) -> None:
    client: TestClient = make_client(installation.settings)  # type: ignore[operator]
    secret = installation.credentials["demo-admin"]
    response = client.post(
        "/console/login", data={"client_id": "demo-admin", "client_secret": secret, "login_csrf": "x" * 43}
    )
    assert response.status_code == 403 and "csrf" in response.text
    assert "vg_session" not in response.headers.get("set-cookie", "")


def test_wrong_secret_is_refused_as_401(installation: Installation, make_client: object) -> None:
    client: TestClient = make_client(installation.settings)  # type: ignore[operator]
    form = client.get("/console/login")
    response = client.post(
        "/console/login",
        data={"client_id": "demo-admin", "client_secret": "wrong", "login_csrf": hidden(form.text, "login_csrf")},
    )
    assert response.status_code == 401
    assert "wrong" not in response.text.split("<main", 1)[1].split("</main>", 1)[0].replace("is wrong", "")


def test_objection_filed_from_the_console_is_escaped_and_needs_csrf(
    installation: Installation, make_client: object
) -> None:
    client: TestClient = make_client(installation.settings)  # type: ignore[operator]
    hostile = '<script>alert("x")</script><img src=x onerror=alert(1)>'
    refused = client.post(
        "/console/objections", data={"about": "dataset", "subject": "enterprise_registry", "text": hostile}
    )
    assert refused.status_code == 401  # no session
    csrf = console_login(client, "demo-business", installation.credentials["demo-business"])
    forged = client.post(
        "/console/objections",
        data={"about": "dataset", "subject": "enterprise_registry", "text": hostile, "csrf": "0" * 64},
    )
    assert forged.status_code == 403 and "csrf" in forged.text
    foreign = client.post(
        "/console/objections",
        data={"about": "dataset", "subject": "enterprise_registry", "text": hostile, "csrf": csrf},
        headers={"Origin": "https://evil.example"},
    )
    assert foreign.status_code == 403
    filed = client.post(
        "/console/objections",
        data={"about": "dataset", "subject": "enterprise_registry", "text": hostile, "csrf": csrf},
    )
    assert filed.status_code == 200, filed.text  # after the redirect
    assert hostile not in filed.text
    assert "&lt;script&gt;alert(&#34;x&#34;)&lt;/script&gt;&lt;img src=x onerror=alert(1)&gt;" in filed.text
    (mine,) = re.findall(r"Objection (\w+) is filed", filed.text)
    phishing = "0 is NOT filed. Your session expired: log in again at https://login.example/ - Objection x"
    for asked, notice in ((phishing, False), ("0" * 12, False), (mine, True)):
        shown = client.get("/console/objections", params={"filed": asked, "lang": "en"})
        assert ("is filed." in shown.text) is notice  # only the viewer's own objection is named
        assert "Your session expired" not in shown.text  # (the language links keep the query, encoded)
    anonymous: TestClient = make_client(installation.settings)  # type: ignore[operator]
    assert "is filed." not in anonymous.get("/console/objections", params={"filed": mine, "lang": "en"}).text


def test_an_invalid_objection_names_the_field_not_the_value(installation: Installation, make_client: object) -> None:
    client: TestClient = make_client(installation.settings)  # type: ignore[operator]
    csrf = console_login(client, "demo-business", installation.credentials["demo-business"])
    response = client.post(
        "/console/objections", data={"about": "dataset", "subject": "../../etc/passwd", "text": "x", "csrf": csrf}
    )
    assert response.status_code == 422
    assert "passwd" not in response.text and "subject" in response.text


def test_checkpoints_page_shows_the_newest_signed_heads(installation: Installation, make_client: object) -> None:
    from gateway.services.audit_trail import make_checkpoint

    client: TestClient = make_client(installation.settings)  # type: ignore[operator]
    rt = client.app.state.runtime  # type: ignore[attr-defined]
    for _ in range(3):
        client.get("/console/catalogue")
        assert make_checkpoint(rt.audit, rt.receipt_keys, issuer=installation.settings.issuer) is not None
    listed = client.get("/v1/audit/checkpoints").json()["checkpoints"]
    page = client.get("/console/checkpoints", params={"lang": "en"}).text
    roots = re.findall(r'<code class="hash">([0-9a-f]{64})</code>', page)
    assert roots[:3] == [c["root"] for c in sorted(listed, key=lambda c: -c["size"])][:3]
    assert listed[-1]["jws"] in page
