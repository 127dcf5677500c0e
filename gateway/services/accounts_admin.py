"""Administering client accounts through the API: every change goes through the store's
proposals, which apply at once what takes nothing away from the two-person rule (a consumer
account, a disabled consumer) and wait for a second person for the rest (privileged roles,
privileged accounts disabled, any account re-enabled)."""

from __future__ import annotations

from typing import Any, Protocol

from gateway.domain.principal import Principal, Role
from gateway.errors import NotFound
from gateway.services.needs import HasClients, HasSettings
from gateway.state.ports import Account, AccountChange


class AccountsNeeds(HasClients, HasSettings, Protocol):
    """Account changes: the account store and how many approvals they need."""


def create(
    rt: AccountsNeeds, who: Principal, client_id: str, *, organisation: str, roles: list[Role], person: str | None
) -> AccountChange:
    return rt.clients.propose(
        "create", client_id, by=who.client_id, approvals_required=rt.settings.policy_approvals,
        organisation=organisation, roles=roles, person=person,
    )  # fmt: skip


def change(
    rt: AccountsNeeds, who: Principal, client_id: str, action: str, roles: list[Role] | None = None
) -> AccountChange:
    if action not in ("roles", "disable", "enable"):
        raise NotFound("there is no such account change")
    return rt.clients.propose(
        action,  # type: ignore[arg-type]  # checked above
        client_id, by=who.client_id, approvals_required=rt.settings.policy_approvals, roles=roles,
    )  # fmt: skip


def approve(rt: AccountsNeeds, who: Principal, proposal_id: str) -> AccountChange:
    return rt.clients.approve(proposal_id, by=who.client_id, approvals_required=rt.settings.policy_approvals)


def public(account: Account) -> dict[str, Any]:
    """An account as administrators see it: never its secret's hash."""
    return {
        "client_id": account.client_id,
        "organisation": account.organisation,
        "person": account.person,
        "made_by": account.made_by,
        "roles": sorted(r.value for r in account.roles),
        "disabled": account.disabled,
        "revision": account.revision,
        "created_at": account.created_at.isoformat(timespec="seconds"),
    }


def answer(outcome: AccountChange) -> tuple[int, dict[str, Any]]:
    """The status and body of a change: 201/200 once applied, 202 while it waits."""
    body: dict[str, Any] = {
        "account": public(outcome.account) if outcome.account else None,
        "proposal": outcome.proposal,
    }
    if outcome.secret is not None:
        whole = outcome.proposal is None
        body["client_secret" if whole else "client_secret_part"] = outcome.secret
        body["note"] = (
            "The secret is shown once and stored only as a hash."
            if whole
            else "One half of the secret, shown once: the account's holder joins the proposer's half "
            "and the approver's half, in that order."
        )
    if outcome.account is None:
        return 202, body
    return 200, body
