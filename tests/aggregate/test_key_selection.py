"""DP key selection: groups of a column without a public category list are released only when
their noisy count clears a threshold, so a group made by one privacy unit almost never shows."""

from __future__ import annotations

from collections.abc import Callable
from decimal import Decimal
from pathlib import Path
from typing import Any

from gateway import privacy
from gateway.catalog import CatalogStore
from gateway.services.policy_check import check
from tests.aggregate.conftest import Research, payroll_templates, register_payroll
from tests.conftest import CANARY, Installation, policy_copy


def test_only_groups_above_the_threshold_are_released(research: Callable[..., Research]) -> None:
    r = research()
    response = r.release("payroll-by-city", parameters={"group_by": ["city"]})
    assert response.status_code == 200, response.text
    body = response.json()
    rows = body["result"]["rows"]
    assert [row["group"] for row in rows] == [{"city": "Springfield"}]  # the canary's city is withheld
    (noise,) = body["result"]["noise"]
    assert noise["mechanism"] == "discrete_laplace_threshold" and noise["threshold"] > 3
    assert body["privacy_spent"] == {"epsilon": "5", "delta": "0.000001"}
    assert body["result"]["delta"] == "0.000001"
    budgets = r.client.get("/v1/budget", headers=r.headers).json()["budgets"]
    (payroll,) = [b for b in budgets if b["dataset"] == "payroll"]
    assert payroll["levels"]["grant"]["spent"] == {"epsilon": "5", "delta": "0.000001"}
    assert CANARY not in response.text
    preview = r.preview("payroll-by-city", parameters={"group_by": ["city"]}).json()["queries"][0]
    assert preview["rows"] is None and preview["noise"][0]["threshold"] == noise["threshold"]


def test_calibration_meets_epsilon_and_delta_with_the_smallest_threshold() -> None:
    for max_rows, micro, nano in [
        (1, 1_000_000, 1_000),
        (3, 5_000_000, 1_000),
        (36, 500_000, 1_000),
        (36, 2_000_000, 100),
    ]:
        scale, threshold = privacy.calibrate_threshold(max_rows, micro, nano)
        distance = (max_rows, max_rows, max_rows)
        epsilon, delta = privacy._threshold_mechanism(scale, threshold).map(distance)
        assert Decimal(epsilon) <= Decimal(micro) / 10**6 and Decimal(delta) <= Decimal(nano) / 10**9
        _, looser = privacy._threshold_mechanism(scale, threshold - 1).map(distance)
        assert Decimal(looser) > Decimal(nano) / 10**9


def test_a_single_units_group_shows_at_most_about_delta_of_the_time() -> None:
    """With a deliberately weak delta (5%), a key held by one unit (max_rows rows) shows rarely."""
    max_rows, micro, nano = 3, 1_000_000, 50_000_000
    shown = sum(
        "lonely" in privacy.select_keys({"lonely": max_rows, "crowd": 500}, max_rows, micro, nano).counts
        for _ in range(3000)
    )
    assert shown / 3000 <= 0.05 + 0.015, shown


def test_grouping_by_a_column_without_categories_needs_key_selection(
    installation: Installation, tmp_path: Path
) -> None:
    register_payroll(installation)

    def errors_for(change: Callable[[dict[str, Any]], None]) -> list[str]:
        def apply(bundle: dict[str, Any]) -> None:
            payroll_templates(bundle)
            change(bundle)

        policies = policy_copy(tmp_path / f"p{len(list(tmp_path.iterdir()))}", apply)
        _bundle, errors = check(policies, CatalogStore(installation.settings.data_path))
        return [str(e) for e in errors]

    def no_selection(bundle: dict[str, Any]) -> None:
        del bundle["aggregate_templates"]["payroll-by-city"]["key_selection"]

    def by_person(bundle: dict[str, Any]) -> None:
        bundle["aggregate_templates"]["payroll-by-city"]["group_by"] = ["person"]

    def on_a_sum(bundle: dict[str, Any]) -> None:
        bundle["aggregate_templates"]["payroll-sum"]["key_selection"] = {"delta": "0.000001"}

    assert any("needs `key_selection`" in e for e in errors_for(no_selection))
    assert any("person is identifier: not a group key" in e for e in errors_for(by_person))
    assert any("count templates only" in e for e in errors_for(on_a_sum))
    assert errors_for(lambda _b: None) == []


def test_a_personal_column_is_no_group_key_even_with_its_categories(installation: Installation, tmp_path: Path) -> None:
    """`paid` is personal: a filter may select by it, but no template groups by it, although a
    boolean always has its categories (the check ran only for columns without them)."""

    def by_paid(bundle: dict[str, Any]) -> None:
        bundle["aggregate_templates"]["contributors-count"]["group_by"] = ["region", "paid"]

    _bundle, errors = check(policy_copy(tmp_path / "p", by_paid), CatalogStore(installation.settings.data_path))
    assert [str(e) for e in errors if "group_by" in str(e)] == [
        next(str(e) for e in errors if "paid is personal: not a group key" in str(e))
    ]
