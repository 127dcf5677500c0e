"""A NULL in a service's `latest_by` column: that row is the oldest, not a server error."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

from gateway.domain.policy import UnknownKey
from gateway.policy import load_bundle
from gateway.services.verification import _answer, _Valid, lookup_columns
from tests.conftest import REPO


def test_a_null_latest_by_sorts_before_every_year() -> None:
    tax = load_bundle(REPO / "policies").verification_services["tax-compliance"]
    service = tax.model_copy(update={"unknown_key": UnknownKey.NOT_FOUND})  # no_match below: the record was read
    columns = lookup_columns(service)
    assert columns[-1] == "tax_year"

    def row(filed: bool, year: int | None) -> tuple[Any, ...]:
        values = {"filed_on_time": filed, "arrears_months": 0, "tax_paid": 0, "tax_year": year}
        return tuple(values.get(c) for c in columns)

    found = [row(True, None), row(False, 2025), row(True, None), row(True, 2024)]
    rt: Any = SimpleNamespace(domain=SimpleNamespace(find=lambda *_args: found))
    claim = _Valid(0, {"credit_code": "k"}, {"filed_on_time": True}, "entity")
    assert _answer(rt, service, "v1", columns, claim) == {
        "result": "no_match",
        "fields": {"filed_on_time": False},
    }  # 2025
    only_nulls = [row(True, None), row(True, None)]
    rt.domain.find = lambda *_args: only_nulls
    assert _answer(rt, service, "v1", columns, claim)["result"] == "match"
