"""Both languages are complete: a page in one language shows none of the other's messages."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from gateway.console import i18n
from tests.conftest import Installation
from tests.console.conftest import PUBLIC_PAGES, logged_in_as
from tests.console.test_admin_pages import ADMIN_PAGES


def _foreign(language: str) -> list[str]:
    """Messages of the other language long enough to be telling, and not the same in both."""
    mine, other = i18n.catalogue(language), i18n.catalogue("en" if language == "zh" else "zh")
    heads = {key: re.split(r"{\w+}", text)[0].strip() for key, text in other.items() if key != "nav.switch"}
    return [
        head
        for key, head in heads.items()
        if len(head) >= 4
        and (" " in head or not head.isascii())  # one English word may be a datum
        and not any(head in own for own in mine.values())
        and other[key] != mine[key]
    ]


@pytest.mark.parametrize("language", i18n.LANGUAGES)
def test_no_message_of_the_other_language_shows(installation: Installation, make_client: object, language: str) -> None:
    client: TestClient = make_client(installation.settings)  # type: ignore[operator]
    foreign = _foreign(language)
    assert len(foreign) > 100
    logged_in_as(client, installation, "demo-admin")
    for path in (*PUBLIC_PAGES, *ADMIN_PAGES, "/console/admin/jobs"):
        page = client.get(path, params={"lang": language}).text
        shown = [text for text in foreign if re.search(rf"[>\"]\s*{re.escape(text)}", page)]  # a message starts a text
        assert not shown, (path, shown[:3])


def test_templates_hold_no_words_of_their_own() -> None:
    """Every word a page shows comes from a catalogue or from the data: none is written into a
    template, where it would stay in one language."""
    root = Path(__file__).resolve().parents[2] / "gateway" / "console" / "templates"
    templates = list(root.rglob("*.html"))
    assert len(templates) > 20
    for template in templates:
        text = re.sub(r"{{.*?}}|{%.*?%}|{#.*?#}", " ", template.read_text("utf-8"), flags=re.DOTALL)
        text = re.sub(r"<[^>]*>", " ", text, flags=re.DOTALL)
        assert not re.findall(r"[A-Za-z\u4e00-\u9fff]{2,}", text), template.name
    # attributes a screen reader reads come from the catalogues too
    for template in templates:
        for value in re.findall(r'(?:aria-label|title|placeholder|alt)="([^"{]*)"', template.read_text("utf-8")):
            assert not re.search(r"[A-Za-z]{3,}", value) or value.startswith("2026"), (template.name, value)
