"""The researcher's calls against a real gateway: templates, previews, releases as DataFrames with
their intervals, batches, budgets, DP fits, plots, typed refusals, retries under one key."""

from __future__ import annotations

from collections.abc import Callable
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import matplotlib
import pytest
from veilgate_client import BudgetExhausted, Gateway, NotFound, Refused, Unauthorized, Unreachable

from tests.client.conftest import Served

matplotlib.use("Agg")


def _epsilon_spent(budget_rows: list[dict[str, Any]], dataset: str) -> float:
    row = next(r for r in budget_rows if r["dataset"] == dataset and r["level"] == "grant")
    return float(row["spent_epsilon"])


def test_a_release_is_a_table_of_values_intervals_and_group_keys_with_a_checked_receipt(served: Served) -> None:
    with served.gateway("demo-researcher", "public_research") as gw:
        names = {t["name"] for t in gw.templates()}
        assert {"wage-base-mean", "insured-persons"} <= names
        preview = gw.preview("insured-persons", group_by=["region"], epsilon="0.3")
        assert preview.total["epsilon"] == "0.3" and preview.to_pandas()["interval_width"].iloc[0] > 0

        release = gw.release("insured-persons", group_by=["region"], epsilon="0.3")
        table = release.to_pandas()
        assert list(table.columns) == ["region", "value", "lower", "upper"]
        assert len(table) == preview.rows()[0]["rows"] and (table["lower"] <= table["value"]).all()
        assert (table["value"] <= table["upper"]).all()
        assert release.to_polars().columns == ["region", "value", "lower", "upper"]
        assert release.receipt.document["result"] == release.result
        assert release.receipt.document["consumer"] == "demo-researcher"
        assert not release.replayed and release.charged["epsilon"] == "0.3"

        again = gw.release("insured-persons", group_by=["region"], epsilon="0.3")
        assert again.replayed and again.to_pandas().equals(table)


def test_batches_budgets_and_fits(served: Served) -> None:
    with served.gateway("demo-researcher", "public_research") as gw:
        before = _epsilon_spent(gw.budget().rows(), "social_insurance")
        queries = [
            {"template": "contributors-count", "group_by": ["industry"], "epsilon": 0.2},
            {"template": "wage-base-mean", "filters": {"industry": ["C"]}, "epsilon": "0.4"},
        ]
        assert gw.preview_batch(queries).total["epsilon"] == "0.6"
        batch = gw.release_batch(queries)
        assert [r.template for r in batch] == ["contributors-count", "wage-base-mean"]
        assert "industry" in batch[0].to_pandas().columns and batch[0].receipt is batch.receipt
        budget = gw.budget().to_pandas()
        assert set(budget["level"]) == {"grant", "organisation", "dataset_version"}
        assert _epsilon_spent(budget.to_dict("records"), "social_insurance") == pytest.approx(before + 0.6)

        fit = gw.fit("penalties-regression", epsilon=1)
        coefficients = fit.to_pandas()
        assert list(coefficients["name"]) == ["intercept", "arrears_months"]
        assert (coefficients["lower"] <= coefficients["value"]).all() and fit.receipt.result == fit.result
        classes = gw.fit("rating-by-filing")
        assert {"class", "count", "lower", "upper", "prior"} <= set(classes.to_pandas().columns)
        assert {row["feature"] for row in classes.conditionals()} == {"filed_on_time"}


def test_refusals_are_typed_and_name_the_parameter(served: Served) -> None:
    with served.gateway("demo-researcher", "public_research") as gw:
        with pytest.raises(Refused) as refused:
            gw.release("wage-base-mean", group_by=["person_id"])
        assert refused.value.parameter == "parameters.group_by" and refused.value.status == 422
        assert refused.value.request_id
        with pytest.raises(Refused) as too_much:
            gw.preview("wage-base-mean", epsilon=2000)
        assert too_much.value.parameter == "epsilon"
        with pytest.raises(NotFound):
            gw.release("no-such-template")
    with served.gateway("demo-researcher") as no_purpose, pytest.raises(ValueError, match="purpose"):
        no_purpose.release("insured-persons")
    with Gateway(served.base, "demo-researcher", "wrong", pin_file=False) as wrong, pytest.raises(Unauthorized):
        wrong.templates()


def test_an_exhausted_budget_is_its_own_exception_and_charges_nothing(fresh: Any) -> None:
    gateway = fresh()
    with gateway.gateway("demo-researcher", "public_research") as gw:
        for month in range(1, 6):  # five different queries at epsilon 2 use up the grant's 10
            gw.release("insured-persons", filters={"month": {"from": f"2025-{month:02d}-01"}}, epsilon=2)
        with pytest.raises(BudgetExhausted) as exhausted:
            gw.release("insured-persons", filters={"month": {"from": "2025-06-01"}}, epsilon="0.1")
        assert exhausted.value.status == 409 and "grant" in exhausted.value.detail
        assert _epsilon_spent(gw.budget().rows(), "social_insurance") == 10


class _FailFirst(httpx.BaseTransport):
    """Drops the first request to each of `paths` (as a lost connection would), then passes everything on."""

    def __init__(self, *paths: str) -> None:
        self.inner = httpx.HTTPTransport()
        self.seen: dict[str, list[httpx.Request]] = {path: [] for path in paths}

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        seen = self.seen.get(request.url.path)
        if seen is not None:
            seen.append(request)
            if len(seen) == 1:
                self.inner.handle_request(request).close()  # it reached the gateway; the answer is lost
                raise httpx.ReadError("connection lost", request=request)
        return self.inner.handle_request(request)

    def close(self) -> None:
        self.inner.close()


def test_a_release_is_retried_under_one_idempotency_key_and_charged_once(fresh: Any) -> None:
    gateway = fresh()
    transport = _FailFirst("/v1/aggregate/insured-persons", "/v1/aggregate-batch")
    with gateway.gateway("demo-researcher", "public_research", transport=transport) as gw:
        release = gw.release("insured-persons", epsilon="0.7")
        batch = gw.release_batch([{"template": "contributors-count", "epsilon": "0.2"},
                                  {"template": "wage-base-mean", "epsilon": "0.1"}])  # fmt: skip
        for sent in transport.seen.values():
            assert len(sent) == 2 and len({r.headers["Idempotency-Key"] for r in sent}) == 1
        assert not release.replayed and release.charged["epsilon"] == "0.7" and len(batch) == 2
        assert Decimal(str(_epsilon_spent(gw.budget().rows(), "social_insurance"))) == Decimal("1.0")


def test_nothing_but_a_release_is_retried(served: Served) -> None:
    calls: list[tuple[str, str, str, Callable[[Gateway], object]]] = [
        ("demo-researcher", "public_research", "/v1/aggregate/insured-persons/preview",
         lambda gw: gw.preview("insured-persons")),
        ("demo-researcher", "public_research", "/v1/models/penalties-regression/fit",
         lambda gw: gw.fit("penalties-regression", epsilon="0.1")),
        ("demo-business", "credit_assessment", "/v1/verify/enterprise-registration",
         lambda gw: gw.verify("enterprise-registration", {"keys": {"credit_code": "x"}, "checks": {"active": True}})),
        ("demo-business", "credit_assessment", "/v1/models/enterprise-credit-risk/score",
         lambda gw: gw.score("enterprise-credit-risk", ["x"])),
    ]  # fmt: skip
    for client, purpose, path, call in calls:
        transport = _FailFirst(path)
        gw = served.gateway(client, purpose, transport=transport)
        with gw, pytest.raises(Unreachable, match="ReadError") as lost:
            call(gw)
        assert isinstance(lost.value.__cause__, httpx.ReadError)
        assert len(transport.seen[path]) == 1 and "Idempotency-Key" not in transport.seen[path][0].headers


def test_the_token_is_renewed_before_it_expires(served: Served) -> None:
    with served.gateway("demo-researcher", "public_research") as gw:
        first = gw.token()
        assert gw.token() == first  # still valid: reused
        gw._expires -= 900 - 30  # 30 s left, less than the minute of margin
        renewed = gw.token()
        assert renewed != first and gw.templates()


def test_plots_of_a_release_and_of_the_budget_are_drawn(served: Served, tmp_path: Path) -> None:
    with served.gateway("demo-researcher", "public_research") as gw:
        bars = gw.release("wage-base-mean", group_by=["industry", "region"], filters={"industry": ["C", "F"]})
        ax = bars.plot()
        assert len(ax.patches) == len(bars.rows()) and ax.get_legend() is not None
        line = gw.release("contributors-by-month", group_by=["month"], epsilon=2)
        ax = line.plot()
        assert len(ax.lines[0].get_xdata()) == len(line.rows())
        budget_ax = gw.budget().plot()
        assert len(budget_ax.patches) == 3 * len(gw.budget().rows())
        budget_ax.figure.savefig(tmp_path / "budget.png")
        assert (tmp_path / "budget.png").stat().st_size > 1000
