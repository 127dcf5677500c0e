"""Each service names the leaves it uses (a `...Needs` protocol), so it runs with only those:
here services are built with two or three real stores and nothing else. A service that reached
for another leaf would fail these with AttributeError (and mypy would refuse it first)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import date
from decimal import Decimal
from pathlib import Path
from types import SimpleNamespace

import pytest

from gateway.domain.budget import Amount, accounts, cap
from gateway.domain.principal import Principal, Role
from gateway.domain.trail import AuditEvent, Decision, utc_now
from gateway.services import accounts_admin, charging, metering, tracker
from gateway.state.backend import open_accounts, open_ledger, open_log
from gateway.state.budget_sqlite import SqliteBudgetLedger
from tests.conftest import make_settings


def test_a_charged_release_needs_only_the_budget_ledger(tmp_path: Path) -> None:
    budget = SqliteBudgetLedger(tmp_path / "budget.sqlite3")
    try:
        stores = SimpleNamespace(budget=budget)
        one = cap(Decimal(1), Decimal(0))
        payer = accounts(
            grant="g1", consumer="c1", organisation="o1", dataset="d1", version="v1",
            grant_cap=one, organisation_cap=one, dataset_version_cap=one,
        )  # fmt: skip
        reads: list[int] = []

        def compute(reading: Callable[[], None]) -> dict[str, object]:
            reading()
            reads.append(1)
            return {"count": 7}

        charge = charging.Charge("q1", Amount(250_000, 0), payer, compute, service="s1")
        assert charging.run(stores, [charge]) == [({"count": 7}, True)]
        assert charging.run(stores, [charge]) == [({"count": 7}, False)]  # replayed free
        assert reads == [1]
    finally:
        budget.close()


def test_a_usage_statement_needs_only_the_two_ledgers(tmp_path: Path) -> None:
    ledger = open_ledger(make_settings(tmp_path / "state"))
    budget = SqliteBudgetLedger(tmp_path / "budget.sqlite3")
    try:
        report = metering.statement(SimpleNamespace(ledger=ledger, budget=budget), date(2026, 1, 1), date(2026, 1, 31))
        assert report["rows"] == [] and report["privacy_budget"] == []
        assert report["total"] == {"calls": 0, "billable_claims": 0, "fee_yuan": "0"}
    finally:
        ledger.close()
        budget.close()


def test_the_tracker_needs_only_the_audit_log(tmp_path: Path) -> None:
    log = open_log(tmp_path / "audit")
    try:
        subject = log.pseudonym("entity", "ABC123")
        event = AuditEvent(
            time=utc_now(), request_id="r1", principal="c1", method="POST", route="/v1/verify/s1", service="s1",
            grant="g1", decision=Decision.ALLOWED, subjects=(subject,), status=200,
        )  # fmt: skip
        log.append_now(event)
        rows = tracker.track(SimpleNamespace(audit=log), "abc123")
        assert [(r["consumer"], r["service"], r["grant"]) for r in rows] == [("c1", "s1", "g1")]
    finally:
        log.close()


def test_account_changes_need_only_the_accounts_and_the_settings(tmp_path: Path) -> None:
    settings = make_settings(tmp_path / "state", policy_approvals=2)
    clients = open_accounts(settings, listen=False)
    try:
        clients.add("admin-a", "org", [Role.ADMIN], person="alice")
        who = Principal(client_id="admin-a", organisation="org", roles=frozenset({Role.ADMIN}), token_id="t1")
        stores = SimpleNamespace(clients=clients, settings=settings)
        made = accounts_admin.create(stores, who, "analyst", organisation="org", roles=[Role.CONSUMER], person=None)
        assert made.account is not None and made.secret is not None  # a consumer: made at once
        admin = accounts_admin.create(stores, who, "admin-b", organisation="org", roles=[Role.ADMIN], person="bob")
        assert admin.account is None and admin.proposal is not None  # settings: two approvals for an admin
        assert clients.find("admin-b") is None
    finally:
        clients.close()


def test_a_service_given_less_than_it_names_fails_on_the_missing_leaf(tmp_path: Path) -> None:
    ledger = open_ledger(make_settings(tmp_path / "state"))
    try:
        with pytest.raises(AttributeError, match="budget"):
            metering.statement(SimpleNamespace(ledger=ledger), date(2026, 1, 1), date(2026, 1, 31))
    finally:
        ledger.close()
