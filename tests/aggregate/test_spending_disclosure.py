"""The privacy budget that DP releases spend shows in a researcher's usage statement, in public
disclosure per service and dataset, and in the annual report; a replay a payer already paid for
adds nothing, a failed request nothing."""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

from gateway.services import disclosure_report
from tests.aggregate.conftest import Research

COUNT = "contributors-count"
TODAY = datetime.now(UTC).date()


def test_dp_spend_is_in_usage_disclosure_and_the_annual_report(research: Callable[..., Research]) -> None:
    r = research()
    assert r.release(COUNT, parameters={"group_by": ["region"]}, epsilon="0.4").status_code == 200
    assert r.release(COUNT, parameters={"group_by": ["region"]}, epsilon="0.4").status_code == 200  # replay: free
    assert r.release(COUNT, parameters={"group_by": ["industry"]}, epsilon="0.25").status_code == 200
    assert r.release("payroll-count", epsilon="1").status_code == 200
    assert r.release(COUNT, epsilon="99").status_code == 422  # refused: spends nothing

    day = timedelta(days=1)  # a day each side: a run across midnight UTC still finds its releases
    usage = r.client.get(f"/v1/usage?since={TODAY - day}&until={TODAY + day}", headers=r.headers).json()
    assert [(u["service"], u["dataset"], u["releases"], u["spent"]) for u in usage["privacy_budget"]] == [
        (COUNT, "social_insurance", 2, {"epsilon": "0.65", "delta": "0"}),
        ("payroll-count", "payroll", 1, {"epsilon": "1", "delta": "0"}),
    ]
    assert {u["consumer"] for u in usage["privacy_budget"]} == {"demo-researcher"}
    assert {u["grant"] for u in usage["privacy_budget"]} == {"labour-research-2026"}

    public = r.client.get("/v1/disclosure/usage").json()["usage"]
    month = TODAY.isoformat()[:7]
    by_service = {row["service"]: row for row in public if row["month"] == month}
    assert by_service[COUNT]["kind"] == "aggregate" and by_service[COUNT]["releases"] == 2
    assert by_service[COUNT]["privacy_budget_spent"] == {"social_insurance": {"epsilon": "0.65", "delta": "0"}}
    assert by_service["payroll-count"]["privacy_budget_spent"] == {"payroll": {"epsilon": "1", "delta": "0"}}
    assert "demo-researcher" not in str(public)  # per service, never per consumer

    rt = r.client.app.state.runtime  # type: ignore[attr-defined]
    report = disclosure_report.build(rt, TODAY.year)
    assert report["privacy_budget_spent"] == [
        {"dataset": "payroll", "service": "payroll-count", "releases": 1, "spent": {"epsilon": "1", "delta": "0"}},
        {"dataset": "social_insurance", "service": COUNT, "releases": 2, "spent": {"epsilon": "0.65", "delta": "0"}},
    ]
    text = disclosure_report.markdown(report)
    assert "## Privacy budget spent" in text and f"| social_insurance | {COUNT} | 2 | 0.65 | 0 |" in text
    assert disclosure_report.build(rt, TODAY.year - 1)["privacy_budget_spent"] == []


def test_a_hostile_title_is_one_cell_of_the_annual_report(research: Callable[..., Research]) -> None:
    """Titles, descriptions and operators come from catalogue entries and bundles that one
    administrator writes: a `|`, a line break or markup in one must not forge a row, a fee or a
    heading in the published report, nor run script where it is rendered."""
    r = research()
    rt = r.client.app.state.runtime  # type: ignore[attr-defined]
    report = disclosure_report.build(rt, TODAY.year)
    hostile = "Wages | 0 yuan |\n## Fees refunded\n<script>alert(1)</script> `x` [y](javascript:z) ![](http://t)"
    report["products_and_services"] = [{**report["products_and_services"][0], "title": hostile}]
    text = disclosure_report.markdown(report)
    products = text.split("## Products and services")[1].strip().splitlines()
    assert len(products) == 3  # the header, its rule, and one row
    assert products[2].count(" | ") == products[0].count(" | ")  # as many cells as the header
    assert "<script>" not in text and "\n## Fees refunded" not in text
    assert re.search(r"(?<!\\)\[", text) is None  # no link nor image: every bracket escaped
