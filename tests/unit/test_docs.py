"""The README's settings and problem-type tables agree with the code."""

from __future__ import annotations

import re

from gateway import errors
from gateway.settings import Settings
from tests.conftest import REPO


def _table_after(heading: str) -> list[list[str]]:
    text = (REPO / "README.md").read_text()
    section = text.split(f"## {heading}\n", 1)[1].split("\n## ", 1)[0]
    rows = [line for line in section.splitlines() if line.startswith("| `")]
    return [[cell.strip() for cell in row.strip("|").split("|")] for row in rows]


def test_settings_table_matches_settings() -> None:
    rows = _table_after("Settings")
    documented = {re.sub(r"`", "", r[0]) for r in rows}
    assert documented == set(Settings.model_fields)
    for name, default, _meaning in rows:
        field = Settings.model_fields[name.strip("`")]
        if field.default is not None:
            value = field.default
            shown = str(value).lower() if isinstance(value, bool) else str(value)
            assert default.strip("`") == shown, name


def test_problem_table_matches_error_tree() -> None:
    rows = _table_after("Problem types")
    documented = {(r[0].strip("`"), int(r[1])) for r in rows}
    actual = {(cls.type_slug, cls.status) for cls in errors.all_problem_types()}
    assert documented == actual
