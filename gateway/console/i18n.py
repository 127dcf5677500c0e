"""The console's two languages: one message catalogue each (messages/en.json, messages/zh.json),
with the same keys (a test compares them), and the choice of language for a request."""

from __future__ import annotations

import json
from functools import cache
from importlib.resources import files

from fastapi import Request

LANGUAGES = ("en", "zh")
DEFAULT = "en"
COOKIE = "vg_lang"


@cache
def catalogue(language: str) -> dict[str, str]:
    """The messages of `language`, read once."""
    if language not in LANGUAGES:
        raise ValueError(f"no message catalogue for {language!r}")
    found: dict[str, str] = json.loads((files("gateway.console") / "messages" / f"{language}.json").read_text("utf-8"))
    return found


def choose(request: Request) -> str:
    """`?lang=` first (a switch), then the cookie that remembers it, then Accept-Language."""
    for candidate in (request.query_params.get("lang"), request.cookies.get(COOKIE)):
        if candidate in LANGUAGES:
            return str(candidate)
    accepted = request.headers.get("accept-language", "").lower()
    return "zh" if accepted.startswith("zh") else DEFAULT


class Translator:
    """`t("key", name=value)`: the message in this language with its fields filled in. A key
    missing from a catalogue is a bug, so it fails loudly instead of showing a raw key."""

    def __init__(self, language: str) -> None:
        self.language = language
        self._messages = catalogue(language)

    def has(self, key: str) -> bool:
        return key in self._messages

    def __call__(self, key: str, **fields: object) -> str:
        text = self._messages[key]
        return text.format(**fields) if fields else text
