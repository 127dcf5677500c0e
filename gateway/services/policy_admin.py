"""The policy bundle in force and how it changes: propose, approve, add and revoke grants,
reload from disk, roll back. Every change is validated like `veilgate policy check` first.

Each request reads the bundle through `current(rt)`, which notices a change made by any
process (one stat) and swaps the new bundle in whole.
"""

from __future__ import annotations

from gateway.domain.policy import Grant, PolicyBundle
from gateway.errors import NotFound, PolicyInvalid
from gateway.policy import PolicyState
from gateway.policy_store import Change
from gateway.services.policy_check import check, serving_issues, validate
from gateway.services.runtime import Runtime


def current(rt: Runtime) -> PolicyState:
    """The bundle in force for this request, re-read if any process changed it."""
    state = rt.policy.state
    source = rt.policy_store.stamp()
    if source != state.source:
        active = rt.policy_store.active_version()
        if active is not None:
            bundle = rt.policy_store.load(active)
            rt.policy.swap(bundle, serving_issues(bundle, rt.catalog, rt.onnx), source)
        state = rt.policy.state
    return state


def _checked(rt: Runtime, bundle: PolicyBundle) -> PolicyBundle:
    errors = validate(bundle, rt.catalog, rt.onnx)
    if errors:
        raise PolicyInvalid(errors)
    return bundle


def propose(rt: Runtime, bundle: PolicyBundle, *, by: str, note: str) -> Change:
    return rt.policy_store.propose(
        _checked(rt, bundle), by=by, note=note, approvals_required=rt.settings.policy_approvals
    )


def approve(rt: Runtime, proposal_id: str, *, by: str) -> Change:
    change = rt.policy_store.approve(proposal_id, by=by, approvals_required=rt.settings.policy_approvals)
    if change.active is not None:  # the catalogue may have changed since it was proposed
        _checked(rt, rt.policy_store.load(change.active))
    return change


def add_grant(rt: Runtime, grant_id: str, grant: Grant, *, by: str) -> Change:
    """A new grant is a policy change: proposed, and in force once approved."""
    bundle = current(rt).bundle
    changed = PolicyBundle.model_validate({**bundle.model_dump(), "grants": {**bundle.grants, grant_id: grant}})
    return propose(rt, changed, by=by, note=f"grant {grant_id}")


def revoke_grant(rt: Runtime, grant_id: str, *, by: str, reason: str) -> Change:
    """Revoking only takes permission away, so it needs no second approval: in force at once."""
    bundle = current(rt).bundle
    if grant_id not in bundle.grants:
        raise NotFound(f"no grant {grant_id!r}")
    grants = {k: v for k, v in bundle.grants.items() if k != grant_id}
    changed = PolicyBundle.model_validate({**bundle.model_dump(), "grants": grants})
    return rt.policy_store.activate(changed, by=by, reason=f"revoke grant {grant_id}: {reason}")


def reload_from_disk(rt: Runtime, *, by: str) -> Change:
    """`veilgate policy reload` and SIGHUP: the YAML bundle, through the same checks as
    `policy check`; a bundle that fails changes nothing (the last good one stays in force)."""
    bundle, errors = check(rt.settings.policy_dir, rt.catalog)
    if bundle is None:
        raise PolicyInvalid(errors)
    return rt.policy_store.activate(bundle, by=by, reason=f"reload of {rt.settings.policy_dir}")
