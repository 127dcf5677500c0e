"""Usage statements: calls, counted and billable claims, and the fees charged, per consumer; and
the privacy budget its differentially private releases spent."""

from __future__ import annotations

from datetime import date
from decimal import Decimal
from typing import Any, Protocol

from gateway.domain.budget import Amount
from gateway.errors import InvalidRequest
from gateway.services.needs import HasBudget, HasLedger


class MeteringNeeds(HasLedger, HasBudget, Protocol):
    """Statements read the two ledgers only."""


def _yuan(micro: int) -> str:
    return str((Decimal(micro) / Decimal(1_000_000)).quantize(Decimal("0.000001")).normalize())


def amount_text(micro_epsilon: int, nano_delta: int) -> dict[str, str]:
    """Spent privacy budget as exact decimal strings."""
    amount = Amount(micro_epsilon, nano_delta)
    return {"epsilon": format(amount.epsilon.normalize(), "f"), "delta": format(amount.delta.normalize(), "f")}


def statement(rt: MeteringNeeds, since: date, until: date, consumer: str | None = None) -> dict[str, Any]:
    """Rows per consumer, grant, service, purpose and UTC day, with fees in yuan (exact decimals);
    `privacy_budget`: rows per consumer, grant, service, dataset and UTC day of the releases
    charged to a privacy budget (aggregates, model fits, job outputs) and what they spent."""
    if until < since:
        raise InvalidRequest("until: must not be before since")
    rows = rt.ledger.billing(since.isoformat(), until.isoformat(), consumer)
    spent = rt.budget.spending(since.isoformat(), until.isoformat(), consumer)
    return {
        "since": since.isoformat(),
        "until": until.isoformat(),
        "rows": [
            {
                "consumer": r.consumer,
                "grant": r.grant,
                "service": r.service,
                "purpose": r.purpose,
                "day": r.day,
                "calls": r.calls,
                "claims": r.claims,
                "billable_claims": r.billable,
                "fee_yuan": _yuan(r.fee_micro_yuan),
            }
            for r in rows
        ],
        "total": {
            "calls": sum(r.calls for r in rows),
            "billable_claims": sum(r.billable for r in rows),
            "fee_yuan": _yuan(sum(r.fee_micro_yuan for r in rows)),
        },
        "privacy_budget": [
            {
                "consumer": r.consumer,
                "grant": r.grant,
                "service": r.service,
                "dataset": r.dataset,
                "day": r.day,
                "releases": r.releases,
                "spent": amount_text(r.micro_epsilon, r.nano_delta),
            }
            for r in spent
        ],
    }
