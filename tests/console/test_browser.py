"""The console in a real browser: Playwright driving Debian's chromium (never a browser of
Playwright's own). Each page in both languages, two logins approving one change, a freeze, a
job review, the receipt checker on a genuine and a tampered receipt, and a forged form refused.

Skipped, with the reason, where /usr/bin/chromium or Playwright is missing (`.ci/run` installs
chromium)."""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import httpx2
import pytest

from gateway.app import create_app
from tests.conftest import REPO, Installation, free_port, serving
from tests.console.conftest import PUBLIC_PAGES
from tests.jobs.conftest import EXAMPLE_TABLES
from tests.verify.conftest import PURPOSE, SERVICE, enterprises

CHROMIUM = Path("/usr/bin/chromium")
ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
playwright_api = pytest.importorskip(
    "playwright.sync_api", reason="Playwright is not installed (pip install -e .[dev])"
)
pytestmark = pytest.mark.skipif(
    not CHROMIUM.exists(), reason="no /usr/bin/chromium: apt-get install chromium (.ci/run does)"
)
ADMIN_PAGES = (
    "",
    "/policy",
    "/grants",
    "/consumers",
    "/freezes",
    "/alerts",
    "/objections",
    "/jobs",
    "/audit",
    "/budgets",
)


@pytest.fixture(scope="module")
def site(
    session_installation: Installation, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[str, Installation]]:
    """A gateway of its own for this module (the tests change its state), served over HTTP."""
    root = tmp_path_factory.mktemp("browser") / "demo"
    shutil.copytree(
        session_installation.root, root, ignore=lambda d, _n: ["ledger", "policy"] if d.endswith("state") else []
    )
    settings = session_installation.settings.model_copy(
        update={"state_dir": root / "state", "policy_dir": REPO / "policies"}
    )
    installation = replace(session_installation, root=root, settings=settings, source=root / "source")
    with serving(create_app(settings)) as base:
        yield base, installation


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    os.environ.setdefault("PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD", "1")
    with playwright_api.sync_playwright() as p:
        launched = p.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=ARGS)
        yield launched
        launched.close()


class Watch:
    """A browser context that refuses every request to another host and records CSP and script errors."""

    def __init__(self, browser: Any, base: str) -> None:
        self.context = browser.new_context(locale="en-GB")
        self.context.set_default_timeout(10_000)
        self.outside: list[str] = []
        self.errors: list[str] = []
        host = urlparse(base).netloc
        self.base = base

        def gate(route: Any) -> None:
            if urlparse(route.request.url).netloc != host:
                self.outside.append(route.request.url)
                route.abort()
            else:
                route.continue_()

        self.context.route("**/*", gate)
        self.page = self.context.new_page()
        self.page.on("console", lambda m: self.errors.append(m.text) if m.type == "error" else None)
        self.page.on("pageerror", lambda e: self.errors.append(str(e)))
        self.page.on("dialog", lambda d: d.accept())

    def goto(self, path: str) -> Any:
        return self.page.goto(self.base + path)

    def login(self, client_id: str, secret: str) -> None:
        self.goto("/console/login?lang=en")
        self.page.get_by_label("Client id").fill(client_id)
        self.page.get_by_label("Client secret").fill(secret)
        self.page.get_by_role("button", name="Log in").click()
        self.page.wait_for_load_state()

    def clean(self) -> None:
        assert self.outside == [], f"requests to other hosts: {self.outside}"
        # a refused request (401/403/404) logs an error line in the console; CSP or script errors never
        assert not [e for e in self.errors if "Content Security Policy" in e or "Error" in e], self.errors

    def close(self) -> None:
        self.context.close()


@pytest.fixture
def watch(browser: Any, site: tuple[str, Installation]) -> Iterator[Watch]:
    made = Watch(browser, site[0])
    yield made
    made.close()


def token(base: str, installation: Installation, client_id: str) -> dict[str, str]:
    got = httpx2.post(
        f"{base}/v1/token",
        data={
            "grant_type": "client_credentials",
            "client_id": client_id,
            "client_secret": installation.credentials[client_id],
        },
    )
    assert got.status_code == 200, got.text
    return {"Authorization": f"Bearer {got.json()['access_token']}"}


@pytest.mark.parametrize("language", ["en", "zh"])
def test_every_page_in_both_languages(watch: Watch, site: tuple[str, Installation], language: str) -> None:
    _base, installation = site
    for path in PUBLIC_PAGES:
        response = watch.goto(f"{path}?lang={language}")
        assert response.status == 200, path
        assert watch.page.locator("html").get_attribute("lang") == ("zh-CN" if language == "zh" else "en")
        assert watch.page.locator("h1").inner_text().strip()
    watch.login("demo-admin", installation.credentials["demo-admin"])
    for path in ADMIN_PAGES:
        response = watch.goto(f"/console/admin{path}?lang={language}")
        assert response.status == 200, path
        assert watch.page.locator("html").get_attribute("lang") == ("zh-CN" if language == "zh" else "en")
    # Swagger UI must not take its document or configuration from the query (a hostile link)
    watch.goto("/docs?url=https://evil.example/openapi.json&configUrl=https://evil.example/c.json")
    watch.page.wait_for_selector(".opblock", timeout=20000)
    assert watch.page.locator("button.authorize").count() == 1
    assert "Veilgate" in watch.page.locator(".info .title").inner_text()
    watch.clean()


def test_keyboard_reaches_the_skip_link_and_the_form(watch: Watch) -> None:
    watch.goto("/console/receipt?lang=en")
    watch.page.keyboard.press("Tab")
    assert watch.page.evaluate("document.activeElement.className") == "skip"
    watch.page.get_by_label("Receipt").focus()
    assert watch.page.evaluate("document.activeElement.id") == "receipt"
    watch.clean()


def test_receipt_checker_on_a_genuine_and_a_tampered_receipt(watch: Watch, site: tuple[str, Installation]) -> None:
    base, installation = site
    claims = [{"keys": {"credit_code": enterprises(installation)[0]["credit_code"]}, "checks": {"active": True}}]
    answered = httpx2.post(
        f"{base}/v1/verify/{SERVICE}",
        json={"purpose": PURPOSE, "claims": claims},
        headers=token(base, installation, "demo-business"),
    )
    assert answered.status_code == 200, answered.text
    receipt = answered.json()["receipt"]
    watch.goto("/console/receipt?lang=en")
    watch.page.get_by_label("Receipt").fill(receipt)
    watch.page.get_by_role("button", name="Check").click()
    watch.page.wait_for_selector("#receipt-valid")
    shown = json.loads(watch.page.locator("#receipt-json").inner_text())
    assert shown["request_id"] == answered.json()["request_id"]
    header, payload, signature = receipt.split(".")
    flipped = payload[:10] + ("A" if payload[10] != "A" else "B") + payload[11:]
    watch.page.get_by_label("Receipt").fill(f"{header}.{flipped}.{signature}")
    watch.page.get_by_role("button", name="Check").click()
    watch.page.wait_for_selector("#receipt-invalid")
    assert "altered" in watch.page.locator("#receipt-invalid").inner_text()
    assert watch.page.locator("#receipt-document").is_hidden()
    watch.goto("/console/receipt?lang=zh")
    watch.page.get_by_label("回执").fill("not.a-receipt")
    watch.page.get_by_role("button", name="核验").click()
    watch.page.wait_for_selector("#receipt-invalid")
    watch.clean()


def test_two_person_approval_with_two_logins(browser: Any, site: tuple[str, Installation]) -> None:
    base, installation = site
    grant = httpx2.get(
        f"{base}/v1/admin/grants/bank-sme-credit-2026", headers=token(base, installation, "demo-admin")
    ).json()
    proposer, approver = Watch(browser, base), Watch(browser, base)
    try:
        proposer.login("demo-admin", installation.credentials["demo-admin"])
        proposer.goto("/console/admin/grants?lang=en")
        proposer.page.get_by_label("Grant id").fill("browser-grant")
        proposer.page.get_by_label("Grant (JSON)").fill(json.dumps(grant["grant"]))
        proposer.page.get_by_role("button", name="Propose").click()
        proposer.page.wait_for_load_state()
        assert "browser-grant" in proposer.page.locator(".diff").first.inner_text()
        assert proposer.page.get_by_role("button", name="Approve").count() == 0
        assert "another person approves it" in proposer.page.content()
        approver.login("demo-approver", installation.credentials["demo-approver"])
        approver.goto("/console/admin/policy?lang=en")
        assert "demo-admin" in approver.page.locator(".proposal").first.inner_text()
        approver.page.get_by_role("button", name="Approve").first.click()
        approver.page.wait_for_load_state()
        assert "in force" in approver.page.locator(".notice.ok").inner_text()
        proposer.goto("/console/admin/grants")
        assert "browser-grant" in proposer.page.content()
        proposer.clean()
        approver.clean()
    finally:
        proposer.close()
        approver.close()


def test_freeze_and_unfreeze(browser: Any, site: tuple[str, Installation]) -> None:
    base, installation = site
    watch, approver = Watch(browser, base), Watch(browser, base)
    try:
        watch.login("demo-admin", installation.credentials["demo-admin"])
        watch.goto("/console/admin/freezes?lang=en")
        watch.page.get_by_label("Kind").select_option("service")
        watch.page.get_by_label("Name").fill("tax-compliance")
        watch.page.locator("#freeze-reason").fill("incident <b>7</b>")
        watch.page.get_by_role("button", name="Freeze now").click()
        watch.page.wait_for_load_state()
        row = watch.page.locator("table").first.inner_text()
        assert "tax-compliance" in row and "incident <b>7</b>" in row  # shown as text, not markup
        assert watch.page.locator("b", has_text="7").count() == 0
        watch.page.locator("#unfreeze-1").fill("resolved")
        watch.page.get_by_role("button", name="Unfreeze").click()
        watch.page.wait_for_load_state()
        assert "Lift asked" in watch.page.locator(".notice.ok").inner_text()
        assert "tax-compliance" in watch.page.locator("table").first.inner_text()  # one person lifts nothing
        approver.login("demo-approver", installation.credentials["demo-approver"])
        approver.goto("/console/admin/freezes?lang=en")
        assert "demo-admin" in approver.page.locator("table").first.inner_text()
        approver.page.locator("#unfreeze-1").fill("agreed")
        approver.page.get_by_role("button", name="Approve the lift").click()
        approver.page.wait_for_load_state()
        assert "Nothing is frozen." in approver.page.locator("table").first.inner_text()
        watch.clean()
        approver.clean()
    finally:
        watch.close()
        approver.close()


def test_job_review(watch: Watch, site: tuple[str, Installation]) -> None:
    base, installation = site
    body = {"service": "enterprise-tables", "purpose": "public_research", "code": "print('hi')\n",
            "datasets": ["enterprise_registry"], "tables": EXAMPLE_TABLES}  # fmt: skip
    submitted = httpx2.post(f"{base}/v1/jobs", json=body, headers=token(base, installation, "demo-researcher"))
    assert submitted.status_code == 201, submitted.text
    job_id = submitted.json()["id"]
    watch.login("demo-admin", installation.credentials["demo-admin"])
    watch.goto("/console/admin/jobs?lang=en")
    watch.page.get_by_role("link", name=job_id).first.click()
    watch.page.wait_for_load_state()
    assert submitted.json()["code_sha256"] in watch.page.content()
    watch.page.get_by_label("Reason").fill("reviewed in the browser")
    watch.page.get_by_role("button", name="Reject").click()
    watch.page.wait_for_load_state()
    assert watch.page.locator("#job-status").inner_text() == "rejected"
    assert "reviewed in the browser" in watch.page.content()
    watch.clean()


def test_a_forged_form_is_refused(watch: Watch, site: tuple[str, Installation]) -> None:
    _base, installation = site
    watch.login("demo-admin", installation.credentials["demo-admin"])
    watch.goto("/console/admin/freezes?lang=en")
    watch.page.evaluate("document.querySelectorAll('input[name=csrf]').forEach(i => { i.value = 'f'.repeat(64); })")
    watch.page.get_by_label("Name").fill("demo-business")
    watch.page.locator("#freeze-reason").fill("forged")
    watch.page.get_by_role("button", name="Freeze now").click()
    watch.page.wait_for_load_state()
    assert "csrf" in watch.page.locator(".notice.error").inner_text()
    watch.goto("/console/admin/freezes?lang=en")
    assert "Nothing is frozen." in watch.page.locator("table").first.inner_text()


def test_a_proposal_rejected_by_another_administrator(browser: Any, site: tuple[str, Installation]) -> None:
    base, installation = site
    admin = token(base, installation, "demo-admin")
    grant = httpx2.get(f"{base}/v1/admin/grants/bank-sme-credit-2026", headers=admin).json()["grant"]
    made = httpx2.post(f"{base}/v1/admin/grants", json={"id": "rejected-grant", "grant": grant}, headers=admin)
    assert made.status_code == 202, made.text
    proposal_id = made.json()["proposal"]["id"]
    approver = Watch(browser, base)
    try:
        approver.login("demo-approver", installation.credentials["demo-approver"])
        approver.goto("/console/admin/policy?lang=zh")
        proposal = approver.page.locator(f"#proposal-{proposal_id}").locator("xpath=..")
        proposal.get_by_label("驳回理由（记入历史）").fill("期限不对 <i>x</i>")
        proposal.get_by_role("button", name="驳回").click()
        approver.page.wait_for_load_state()
        assert "已驳回" in approver.page.locator(".notice.ok").inner_text()
        assert approver.page.locator(f"#proposal-{proposal_id}").count() == 0
        history = approver.page.locator("table").last.inner_text()
        assert "期限不对 <i>x</i>" in history and "驳回" in history  # the reason, shown as text
        approver.clean()
    finally:
        approver.close()
    again = httpx2.post(
        f"{base}/v1/admin/policy/proposals/{proposal_id}/approve", headers=token(base, installation, "demo-approver")
    )
    assert again.status_code == 409


def test_a_form_from_another_origin_on_the_same_host_is_refused(watch: Watch, site: tuple[str, Installation]) -> None:
    """A page on another port of the same host is the same site, so the SameSite=Strict cookie
    goes along; even with the session's own token (as if it had leaked), its form is refused."""
    base, installation = site
    watch.login("demo-admin", installation.credentials["demo-admin"])
    watch.goto("/console/admin/freezes?lang=en")
    leaked = watch.page.locator("input[name=csrf]").first.get_attribute("value")
    evil = f"http://127.0.0.1:{free_port()}/prize"
    form = (
        f'<form method="post" action="{base}/console/admin/freezes/freeze">'
        f'<input name="csrf" value="{leaked}"><input name="kind" value="consumer">'
        '<input name="name" value="demo-business"><input name="reason" value="csrf">'
        '<button type="submit">Claim</button></form>'
    )
    watch.page.route(evil, lambda route: route.fulfill(status=200, content_type="text/html", body=form))
    watch.page.goto(evil)
    with watch.page.expect_navigation():
        watch.page.get_by_role("button", name="Claim").click()
    # refused for where it came from (the session went along: without it the refusal is a 401)
    assert "sent from another site" in watch.page.locator(".notice.error").inner_text()
    watch.goto("/console/admin/freezes?lang=en")
    assert "Nothing is frozen." in watch.page.locator("table").first.inner_text()
    assert watch.outside == []
