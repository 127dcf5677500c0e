"""The policy bundle in force and how it changes: propose, approve, reject, withdraw, add and
revoke grants, reload from disk, roll back. Every change is validated like `veilgate policy
check` first.

Each request reads the bundle through `current(rt)`, which notices a change made by any
process (one stat) and swaps the new bundle in whole.
"""

from __future__ import annotations

from typing import Any, Protocol

from gateway.domain.policy import Grant, PolicyBundle
from gateway.errors import Conflict, NotFound, PolicyInvalid
from gateway.policy import PolicyState
from gateway.services.needs import HasCatalog, HasClients, HasOnnx, HasPolicy, HasPolicyStore, HasSettings
from gateway.services.policy_check import check, serving_issues, validate
from gateway.state.policy import is_proposer as _is_proposer
from gateway.state.ports import Change, Decision


class PolicyReader(HasPolicy, HasPolicyStore, HasCatalog, HasOnnx, HasSettings, Protocol):
    """What reading the bundle in force takes (`current`)."""


class PolicyAdminNeeds(PolicyReader, HasClients, HasSettings, Protocol):
    """What changing the bundle takes: who proposes and approves, and how many approvals."""


def current(rt: PolicyReader) -> PolicyState:
    """The bundle in force for this request, re-read if any process changed it."""
    state = rt.policy.state
    source = rt.policy_store.stamp()
    if source != state.source:
        active = rt.policy_store.active_version()
        if active is not None:
            bundle = rt.policy_store.load(active)
            approvals = rt.settings.policy_approvals
            rt.policy.swap(bundle, serving_issues(bundle, rt.catalog, rt.onnx, policy_approvals=approvals), source)
        state = rt.policy.state
    return state


def _checked(rt: PolicyAdminNeeds, bundle: PolicyBundle) -> PolicyBundle:
    errors = validate(bundle, rt.catalog, rt.onnx, policy_approvals=rt.settings.policy_approvals)
    if errors:
        raise PolicyInvalid(errors)
    return bundle


def propose(
    rt: PolicyAdminNeeds,
    bundle: PolicyBundle,
    *,
    by: str,
    note: str,
    base: str | None,
    rollback: bool = False,
    account: bool = True,
) -> Change:
    """A proposal made from the version `base`: refused (409) if another is in force by now.

    `account=False` for a proposal of no account (`cli:<user>`, `sighup`): it counts as nobody's
    approval. SECURITY: decided by where the call comes from, never by looking `by` up, or an
    account named `sighup` would make every reload its holder's first approval.
    """
    return rt.policy_store.propose(
        _checked(rt, bundle), by=by, identity=_identity(rt, by) if account else None, note=note,
        approvals_required=rt.settings.policy_approvals, base=base, rollback=rollback,
    )  # fmt: skip


def approve(rt: PolicyAdminNeeds, proposal_id: str, *, by: str) -> Change:
    change = rt.policy_store.approve(
        proposal_id, by=by, identity=rt.clients.identity_of(by), approvals_required=rt.settings.policy_approvals
    )
    if change.active is not None:  # the catalogue may have changed since it was proposed
        _checked(rt, rt.policy_store.load(change.active))
    return change


def _identity(rt: PolicyAdminNeeds, by: str) -> str | None:
    """The person behind `by`, or None for a caller of no account (`cli:<user>`)."""
    return rt.clients.identity_of(by) if rt.clients.find(by) is not None else None


def is_proposer(rt: PolicyAdminNeeds, proposal: dict[str, Any], by: str) -> bool:
    """Whether `by` (or another account of the same person) made `proposal`: who withdraws it,
    and who may not reject it."""
    return _is_proposer(proposal, by, _identity(rt, by))


def reject(rt: PolicyAdminNeeds, proposal_id: str, *, by: str, reason: str) -> Decision:
    """Turn another person's open proposal down for good, with a reason kept in the history."""
    return rt.policy_store.reject(proposal_id, by=by, identity=_identity(rt, by), reason=reason)


def withdraw(rt: PolicyAdminNeeds, proposal_id: str, *, by: str, reason: str) -> Decision:
    """Take one's own open proposal back for good."""
    return rt.policy_store.withdraw(proposal_id, by=by, identity=_identity(rt, by), reason=reason)


def _in_force(rt: PolicyAdminNeeds) -> tuple[str | None, PolicyBundle]:
    """The version in force and its bundle, read from the store (not this process's copy)."""
    version = rt.policy_store.active_version()
    return version, rt.policy_store.load(version) if version else current(rt).bundle


def add_grant(rt: PolicyAdminNeeds, grant_id: str, grant: Grant, *, by: str) -> Change:
    """A new grant is a policy change: proposed from the version in force, in force once approved."""
    version, bundle = _in_force(rt)
    changed = PolicyBundle.model_validate({**bundle.model_dump(), "grants": {**bundle.grants, grant_id: grant}})
    return propose(rt, changed, by=by, note=f"grant {grant_id}", base=version)


_REVOKE_TRIES = 5


def revoke_grant(rt: PolicyAdminNeeds, grant_id: str, *, by: str, reason: str) -> Change:
    """Revoking only takes permission away, so it needs no second approval: in force at once.
    It is a compare and swap on the version it read: a change put in force meanwhile is never
    undone; the grant is taken out of that one instead."""
    for _ in range(_REVOKE_TRIES):
        version, bundle = _in_force(rt)
        if grant_id not in bundle.grants:
            raise NotFound("there is no grant with this id")
        grants = {k: v for k, v in bundle.grants.items() if k != grant_id}
        changed = PolicyBundle.model_validate({**bundle.model_dump(), "grants": grants})
        try:
            return rt.policy_store.activate(changed, by=by, reason=f"revoke grant {grant_id}: {reason}", base=version)
        except Conflict:
            continue  # another change went in force: take the grant out of that one
    raise Conflict("the policy kept changing while the grant was revoked; revoke it again")


def reload_from_disk(rt: PolicyAdminNeeds, *, by: str) -> Change:
    """`veilgate policy reload` and SIGHUP: the YAML bundle, through the same checks as
    `policy check`, proposed like any change (a second administrator approves it); a bundle
    that fails changes nothing (the last good one stays in force)."""
    bundle, errors = check(rt.settings.policy_dir, rt.catalog)
    if bundle is None:
        raise PolicyInvalid(errors)
    version = rt.policy_store.active_version()
    return propose(rt, bundle, by=by, note=f"reload of {rt.settings.policy_dir}", base=version, account=False)


def propose_rollback(rt: PolicyAdminNeeds, *, by: str) -> Change:
    """`veilgate policy rollback`: the version in force before the current one, proposed like any
    change (SECURITY: it may bring back grants and services since taken away, so a second
    administrator approves it, and the command line is nobody's approval). Its base is the
    version in force now: once anything else goes in force, a revoke included, approving it is
    refused (409), so it never silently undoes a later change."""
    base, version = rt.policy_store.rollback_target()
    return propose(
        rt, rt.policy_store.load(version), by=by, note=f"rollback to {version}", base=base, rollback=True, account=False
    )
