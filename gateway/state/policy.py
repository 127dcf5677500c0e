"""The policy store's rules, written once for both stores (`policy_sqlite`, `policy_postgres`):
proposals (rollbacks too), approvals by other identities, rejections and withdrawals that close
a proposal for good, activation as a compare and swap on the version in force, and the history
of every change with who, when and the diff."""

from __future__ import annotations

import difflib
import json
import secrets
from collections.abc import Callable
from contextlib import AbstractContextManager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from gateway.domain.policy import PolicyBundle
from gateway.errors import Conflict, NotFound, PolicyDenied
from gateway.state.migrations import Execute, Step
from gateway.state.ports.policy import Change, Decision

__all__ = [
    "ACTIVATED", "EMPTY", "REJECTED", "STEPS", "STORE", "WITHDRAWN", "PolicyRules", "copy_directory", "is_proposer",
    "pretty",
]  # fmt: skip

EMPTY: dict[str, Any] = {"active": None, "previous": [], "proposals": {}, "closed": {}, "history": []}
"""The state document of a store that never changed."""
STORE = "policy"


def _first_state(execute: Execute) -> None:
    """The state document of a store that never changed, unless it has one."""
    execute("INSERT INTO policy_state VALUES (1, ?, 0) ON CONFLICT DO NOTHING", (json.dumps(EMPTY),))


STEPS = (
    Step(
        1,
        (
            "CREATE TABLE IF NOT EXISTS policy_versions (version TEXT PRIMARY KEY, bundle TEXT NOT NULL)",
            """CREATE TABLE IF NOT EXISTS policy_state (
            id INTEGER PRIMARY KEY CHECK (id = 1), state TEXT NOT NULL, changes BIGINT NOT NULL)""",
        ),
        _first_state,
    ),
)
"""1: the versions and the one state row with its change count (PostgreSQL's layout before
versioned migrations; SQLite's from the start)."""


def copy_directory(execute: Execute, directory: Path) -> int | None:
    """Copy the files the policy store kept before SQLite (`versions/<version>.json`, `state.json`)
    into a store that never changed, in the caller's transaction: the versions copied, or None if
    there is no `state.json` or the store changed already."""
    state_file = directory / "state.json"
    (changes,) = execute("SELECT changes FROM policy_state WHERE id = 1").fetchone()
    if not state_file.is_file() or changes or execute("SELECT 1 FROM policy_versions LIMIT 1").fetchall():
        return None
    versions = sorted((directory / "versions").glob("*.json"))
    for path in versions:
        execute("INSERT INTO policy_versions VALUES (?, ?)", (path.stem, path.read_text(encoding="utf-8")))
    state = json.dumps(json.loads(state_file.read_text(encoding="utf-8")), ensure_ascii=False)
    execute("UPDATE policy_state SET state = ?, changes = changes + 1 WHERE id = 1", (state,))
    return len(versions)


class PolicyRules:
    """The operations of `ports.PolicyStore` other than `stamp`, `load` and `close`, whichever
    store keeps the versions and the state document. A backend hands them:
    - `read`: the state document as last committed;
    - `changing`: a read-modify-write of it, one change at a time across processes, written back
      unless the block raises;
    - `keep`: keep a bundle under its version (once), returning the version;
    - `load`: a stored version (the diff of a proposal is against the version in force)."""

    def __init__(
        self,
        *,
        read: Callable[[], dict[str, Any]],
        changing: Callable[[], AbstractContextManager[dict[str, Any]]],
        keep: Callable[[PolicyBundle], str],
        load: Callable[[str], PolicyBundle],
    ) -> None:
        self._read = read
        self._changing = changing
        self._store = keep
        self._load = load

    def state(self) -> dict[str, Any]:
        """The whole state document: the version in force, those before, proposals, history."""
        return self._read()

    def active_version(self) -> str | None:
        active = self._read()["active"]
        return str(active) if active else None

    def proposals(self) -> dict[str, dict[str, Any]]:
        found: dict[str, dict[str, Any]] = self._read()["proposals"]
        return found

    def history(self) -> list[dict[str, Any]]:
        found: list[dict[str, Any]] = self._read()["history"]
        return found

    def propose(
        self, bundle: PolicyBundle, *, by: str, identity: str | None, note: str, approvals_required: int,
        base: str | None, rollback: bool = False,
    ) -> Change:  # fmt: skip
        """Record a proposal made from the version `base`; with one approval required, the
        proposer's own is enough. `identity`: the person (or organisation) behind `by`, or None
        when no account made it (the command line, SIGHUP): then it counts as nobody's approval,
        and every approval must come from an administrator's account. `rollback`: the bundle is
        the version in force before `base`, which goes back off the list of earlier versions
        once it is in force again (so a second rollback goes one further back)."""
        version = self._store(bundle)
        with self._changing() as state:
            _check_base(state, base)
            if state["active"] == version:
                raise Conflict("the proposed bundle is the one in force")
            proposal = {
                "id": secrets.token_hex(6),
                "version": version,
                "base": state["active"],
                "proposed_by": by,
                "proposed_at": _now(),
                "note": note,
                "approvals": [by] if identity is not None else [],
                "identities": [identity] if identity is not None else [],
                "diff": self._diff(state["active"], bundle),
            }
            if rollback:
                proposal["rollback"] = True
            if approvals_required <= 1 and identity is not None:
                self._activate(state, version, proposal, reason=note)
                return Change(version, proposal)
            state["proposals"][proposal["id"]] = proposal
            state["history"].append({"action": "propose", "at": proposal["proposed_at"], "by": by, **_brief(proposal)})
        return Change(None, proposal)

    def approve(self, proposal_id: str, *, by: str, identity: str, approvals_required: int) -> Change:
        """An administrator of another identity approves; nobody approves their own proposal,
        nor with a second account of their own. A proposal already decided (in force, rejected,
        withdrawn) is refused with 409."""
        with self._changing() as state:
            proposal = _open_proposal(state, proposal_id)
            identities = proposal.setdefault("identities", list(proposal["approvals"]))
            if by in proposal["approvals"] or identity in identities:
                raise PolicyDenied("a change is approved by another person than the ones who proposed or approved it")
            if proposal["base"] != state["active"]:
                raise Conflict("the bundle in force changed since this proposal was made; propose it again")
            proposal["approvals"].append(by)
            identities.append(identity)
            state["history"].append({"action": "approve", "at": _now(), "by": by, **_brief(proposal)})
            if len(proposal["approvals"]) < approvals_required:
                return Change(None, proposal)
            _close(state, proposal_id, ACTIVATED, by=by)
            self._activate(state, proposal["version"], proposal, reason=proposal["note"])
            return Change(proposal["version"], proposal)

    def reject(self, proposal_id: str, *, by: str, identity: str | None, reason: str) -> Decision:
        """Another person than the proposer turns an open proposal down, for good: it can never
        be approved afterwards. A compare and swap on the proposal's state, in the same
        transaction as approvals, so a rejection racing the last approval loses or wins whole."""
        with self._changing() as state:
            proposal = _open_proposal(state, proposal_id)
            if is_proposer(proposal, by, identity):
                raise PolicyDenied("a proposal is rejected by another person than its proposer, who withdraws it")
            return _close(state, proposal_id, REJECTED, by=by, reason=reason)

    def withdraw(self, proposal_id: str, *, by: str, identity: str | None, reason: str) -> Decision:
        """The proposer takes an open proposal back, for good (as `reject`, by the other side)."""
        with self._changing() as state:
            proposal = _open_proposal(state, proposal_id)
            if not is_proposer(proposal, by, identity):
                raise PolicyDenied("only the proposer withdraws a proposal; another administrator rejects it")
            return _close(state, proposal_id, WITHDRAWN, by=by, reason=reason)

    def activate(self, bundle: PolicyBundle, *, by: str, reason: str, base: str | None) -> Change:
        """Put a bundle in force at once, if the version in force is still `base` (else 409):
        for restrictions (revoking a grant) and the first import."""
        version = self._store(bundle)
        with self._changing() as state:
            _check_base(state, base)
            change = {"id": None, "version": version, "proposed_by": by, "approvals": [by],
                      "diff": self._diff(state["active"], bundle)}  # fmt: skip
            self._activate(state, version, change, reason=reason)
        return Change(version, None)

    def rollback_target(self) -> tuple[str | None, str]:
        """(version in force, the version in force before it): what a rollback proposes."""
        state = self._read()
        if not state["previous"]:
            raise Conflict("there is no earlier version to roll back to")
        return state["active"], str(state["previous"][-1])

    def _activate(self, state: dict[str, Any], version: str, change: dict[str, Any], *, reason: str) -> None:
        if change.get("rollback") and state["previous"] and state["previous"][-1] == version:
            state["previous"].pop()  # back to the version before: the one rolled back from is not kept
        elif state["active"] is not None:
            state["previous"].append(state["active"])
        replaced, state["active"] = state["active"], version
        state["history"].append(
            {
                "action": "activate",
                "at": _now(),
                "version": version,
                "replaced": replaced,
                "proposed_by": change["proposed_by"],
                "approved_by": change["approvals"],
                "reason": reason,
                "diff": change["diff"],
            }
        )

    def _diff(self, active: str | None, bundle: PolicyBundle) -> str:
        before = pretty(self._load(active)).splitlines() if active else []
        return "\n".join(difflib.unified_diff(before, pretty(bundle).splitlines(), "in force", "proposed", lineterm=""))


ACTIVATED, REJECTED, WITHDRAWN = "activated", "rejected", "withdrawn"
_ACTIONS = {REJECTED: "reject", WITHDRAWN: "withdraw"}


def _open_proposal(state: dict[str, Any], proposal_id: str) -> dict[str, Any]:
    """The open proposal `proposal_id`; 409 if it was decided, 404 if there never was one."""
    proposal: dict[str, Any] | None = state["proposals"].get(proposal_id)
    if proposal is not None:
        return proposal
    closed = state.get("closed", {}).get(proposal_id)
    if closed is not None:
        raise Conflict(f"proposal: already {closed['outcome']}; a decided proposal is never reopened")
    raise NotFound("proposal: there is no proposal with this id")


def is_proposer(proposal: dict[str, Any], by: str, identity: str | None) -> bool:
    """`by` made the proposal, or is another account of the same person."""
    if by == proposal["proposed_by"]:
        return True
    approvals, identities = proposal["approvals"], proposal.get("identities", [])
    # The proposer's identity is the first one recorded, when an account made the proposal.
    own = identities[0] if approvals and identities and approvals[0] == proposal["proposed_by"] else None
    return identity is not None and identity == own


def _close(state: dict[str, Any], proposal_id: str, outcome: str, *, by: str, reason: str = "") -> Decision:
    """Take the proposal off the open ones and remember its outcome, so it is never decided twice;
    a rejection or withdrawal also goes in the history with its reason."""
    proposal = state["proposals"].pop(proposal_id)
    at = _now()
    state.setdefault("closed", {})[proposal_id] = {"outcome": outcome, "by": by, "at": at}
    entry = {"action": _ACTIONS.get(outcome, outcome), "at": at, "by": by, "reason": reason, **_brief(proposal)}
    if outcome in _ACTIONS:
        state["history"].append(entry)
    return Decision({**proposal, "outcome": outcome}, entry)


def _check_base(state: dict[str, Any], base: str | None) -> None:
    """A change applies to the version it was made from, or not at all (compare and swap)."""
    if state["active"] != base:
        raise Conflict("the bundle in force changed since this change was made from it; make it again")


def pretty(bundle: PolicyBundle) -> str:
    return json.dumps(bundle.model_dump(mode="json"), indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def _brief(proposal: dict[str, Any]) -> dict[str, Any]:
    return {"proposal": proposal["id"], "version": proposal["version"]}


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")
