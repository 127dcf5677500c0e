"""What a consumer's privacy budgets look like now: granted, spent, reserved, remaining.

For every grant of the consumer and every dataset its budget-spending services read (aggregate
templates, model fits, DP job services), at the three levels a charge draws on: the grant on
the dataset, the organisation on the dataset, and the dataset version.
"""

from __future__ import annotations

import time
from typing import Protocol

from gateway.domain.budget import Amount
from gateway.domain.principal import Principal
from gateway.domain.trail import Json
from gateway.errors import NotFound
from gateway.services import policy_admin
from gateway.services.charging import amount_json
from gateway.services.needs import HasBudget
from gateway.services.policy_admin import PolicyReader


class BudgetViewNeeds(PolicyReader, HasBudget, Protocol):
    """What the budget view reads."""


def budget_view(rt: BudgetViewNeeds, principal: Principal) -> Json:
    """Granted, spent, reserved and remaining at each level, for every dataset the consumer's
    grants reach through aggregate templates and model fits."""
    bundle = policy_admin.current(rt).bundle
    organisation = bundle.organisation_of(principal)
    now = time.time()
    out: list[Json] = []
    for grant_id, grant in sorted(bundle.grants.items()):
        if grant.consumer != principal.client_id:
            continue
        datasets = sorted({d for s in grant.services if bundle.spends_budget(s) for d in bundle.datasets_of(s)})
        for dataset in datasets:
            try:
                version = rt.catalog.get(dataset).version
            except NotFound:
                continue
            keys = bundle.budget_accounts(
                grant_id=grant_id,
                consumer=principal.client_id,
                organisation=organisation,
                dataset=dataset,
                version=version,
            )
            levels = {}
            for level, (account, granted) in zip(
                ("grant", "organisation", "dataset_version"), keys.pairs(), strict=True
            ):
                balance = rt.budget.balance(account)
                used = balance.spent + balance.reserved
                levels[level] = {
                    "granted": amount_json(granted),
                    "spent": amount_json(balance.spent),
                    "reserved": amount_json(balance.reserved),
                    "remaining": amount_json(
                        Amount(
                            max(0, granted.micro_epsilon - used.micro_epsilon),
                            max(0, granted.nano_delta - used.nano_delta),
                        )
                    ),
                }
            out.append(
                {
                    "grant": grant_id,
                    "dataset": dataset,
                    "dataset_version": version,
                    "term": {"not_before": grant.not_before.isoformat(), "expires": grant.expires.isoformat()},
                    "active": grant.not_before.timestamp() <= now < grant.expires.timestamp(),
                    "levels": levels,
                }
            )
    return {"consumer": principal.client_id, "organisation": organisation, "budgets": out}
