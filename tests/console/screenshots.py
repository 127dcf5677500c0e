"""`make screenshots`: the console's main pages, photographed in Debian's chromium for
docs/console.md, on a small demo installation with a little activity (an answer, a proposal,
a job, a freeze), so every page shows something. The Chinese pages need a CJK font
(`apt-get install fonts-wqy-microhei`).

Usage: python -m tests.console.screenshots DIRECTORY
"""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path

import httpx2
from playwright.sync_api import Page, sync_playwright

from gateway.app import create_app
from gateway.services import demo_setup
from tests.conftest import REPO, serving
from tests.console.test_browser import ARGS, CHROMIUM
from tests.jobs.conftest import EXAMPLE_TABLES

SHOTS = (
    ("catalogue", "/console/catalogue?lang=en"),
    ("dataset-zh", "/console/catalogue/enterprise_registry?lang=zh"),
    ("disclosure", "/console/disclosure?lang=en"),
    ("checkpoints", "/console/checkpoints?lang=en"),
)
ADMIN_SHOTS = (
    ("admin-policy", "/console/admin/policy?lang=en"),
    ("admin-freezes", "/console/admin/freezes?lang=en"),
    ("admin-jobs-zh", "/console/admin/jobs?lang=zh"),
    ("admin-audit", "/console/admin/audit?lang=en"),
    ("admin-budgets", "/console/admin/budgets?lang=en"),
)


def _token(base: str, credentials: dict[str, str], client_id: str) -> dict[str, str]:
    data = {"grant_type": "client_credentials", "client_id": client_id, "client_secret": credentials[client_id]}
    return {"Authorization": f"Bearer {httpx2.post(f'{base}/v1/token', data=data).json()['access_token']}"}


def _activity(base: str, credentials: dict[str, str]) -> str:
    """An answer (its receipt is returned), a proposed grant, a submitted job and a freeze."""
    admin = _token(base, credentials, "demo-admin")
    answer = httpx2.post(
        f"{base}/v1/aggregate/wage-base-mean",
        json={"purpose": "public_research", "parameters": {"group_by": ["region"]}, "epsilon": "1"},
        headers=_token(base, credentials, "demo-researcher"),
    )
    grant = httpx2.get(f"{base}/v1/admin/grants/bank-sme-credit-2026", headers=admin).json()["grant"]
    grant["scenario"] = "Checking enterprises that apply for export credit insurance"
    httpx2.post(f"{base}/v1/admin/grants", json={"id": "bank-export-credit-2027", "grant": grant}, headers=admin)
    job = {"service": "enterprise-tables", "purpose": "public_research", "code": "import veilgate_job\n",
           "datasets": ["enterprise_registry"], "tables": EXAMPLE_TABLES}  # fmt: skip
    httpx2.post(f"{base}/v1/jobs", json=job, headers=_token(base, credentials, "demo-researcher"))
    freeze = {"kind": "organisation", "name": "demo-bank", "reason": "Incident 2026-12: credentials reported lost"}
    httpx2.post(f"{base}/v1/admin/freeze", json=freeze, headers=admin)
    if answer.status_code != 200:
        raise SystemExit(f"no receipt to show: the aggregate answered {answer.status_code}")
    return str(answer.json()["receipt"])


def _shoot(page: Page, base: str, path: str, target: Path) -> None:
    page.goto(base + path)
    proposal = page.locator(".proposal")
    if proposal.count():  # the whole proposal: its diff and its approve and reject forms, not the page's top
        proposal.first.screenshot(path=str(target))
        return
    page.screenshot(path=str(target), full_page=False)


def main(directory: Path) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as scratch:
        made = demo_setup.setup(Path(scratch), REPO / "policies", scale=0.05)
        with serving(create_app(made.settings)) as base, sync_playwright() as p:
            receipt = _activity(base, made.credentials)
            browser = p.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=ARGS)
            page = browser.new_context(viewport={"width": 1280, "height": 860}).new_page()
            for name, path in SHOTS:
                _shoot(page, base, path, directory / f"{name}.png")
            page.goto(f"{base}/console/receipt?lang=en")
            page.get_by_label("Receipt").fill(receipt)
            page.get_by_role("button", name="Check").click()
            page.wait_for_selector("#receipt-valid")
            page.screenshot(path=str(directory / "receipt.png"))
            page.goto(f"{base}/console/login?lang=en")
            page.get_by_label("Client id").fill("demo-approver")
            page.get_by_label("Client secret").fill(made.credentials["demo-approver"])
            page.get_by_role("button", name="Log in").click()
            page.wait_for_load_state()
            for name, path in ADMIN_SHOTS:
                _shoot(page, base, path, directory / f"{name}.png")
            browser.close()
    print(json.dumps({"screenshots": sorted(p.name for p in directory.glob("*.png"))}))


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else REPO / "docs" / "console")
