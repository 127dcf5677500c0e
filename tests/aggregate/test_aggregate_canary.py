"""A canary planted in raw data never appears in any aggregate response, error, log or stored state.

The payroll dataset's canary person has thousands of rows, the largest values and a free-text
note holding the canary; every template over it is asked, refused, previewed and replayed.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import pytest

from tests.aggregate.conftest import Research
from tests.conftest import CANARY

TEMPLATES = ["payroll-count", "payroll-persons", "payroll-sum", "payroll-mean", "payroll-histogram", "payroll-median"]


def test_the_canary_is_in_the_registered_data(research: Callable[..., Research]) -> None:
    r = research()
    data = r.installation.settings.data_path / "domain" / "payroll"
    assert any(CANARY.encode() in path.read_bytes() for path in data.glob("*.duckdb"))


def test_the_canary_never_leaves_through_aggregates(
    research: Callable[..., Research], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    r = research()
    emitted: list[str] = []

    def keep(response: object) -> None:
        emitted.append(response.text)  # type: ignore[attr-defined]
        emitted.extend(f"{k}: {v}" for k, v in response.headers.items())  # type: ignore[attr-defined]

    for template in TEMPLATES:
        for parameters in ({}, {"group_by": ["region"]}, {"filters": {"region": ["north"]}}):
            keep(r.preview(template, parameters=parameters))
            keep(r.release(template, parameters=parameters, epsilon="5"))
            keep(r.release(template, parameters=parameters, epsilon="5"))  # replayed
        for hostile in (
            {"group_by": ["person"]},
            {"group_by": ["note"]},
            {"filters": {"person": [CANARY[:3]]}},
            {"filters": {"note": {"from": "A"}}},
            {"filters": {"region": ["nowhere"]}},
        ):
            keep(r.release(template, parameters=hostile))
    keep(r.client.get("/v1/budget", headers=r.headers))
    keep(r.client.get("/v1/aggregate", headers=r.headers))
    keep(r.client.get("/v1/disclosure/services"))
    emitted.append(caplog.text)
    state = r.installation.settings.state_dir
    for directory in (state / "audit", state / "ledger"):
        for stored in directory.iterdir():
            emitted.append(stored.read_bytes().decode("utf-8", errors="replace"))
    assert any('"rows"' in text for text in emitted)  # releases did happen
    assert [text[:200] for text in emitted if CANARY in text] == []
