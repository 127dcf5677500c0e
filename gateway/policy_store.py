"""The bundle's lifecycle: stored versions, proposals (rollbacks too), approvals, the version in force.

Imports no other leaf. Each bundle ever proposed is kept (content-addressed, never changed), and
one state document says which version is in force, which came before, the open proposals, the
outcome of each decided one (activated, rejected, withdrawn: never reopened) and the history of
every change with who, when and the diff. Two stores:

- `FilePolicyStore`, under `state/policy/`: `versions/<version>.json` and `state.json`. Changes
  take an exclusive lock shared by all processes; every process re-reads `state.json` when its
  stamp changes, so a change is in force on the next request everywhere on the machine.
- `PostgresPolicyStore`, for replicas on several machines: the same in two tables. A change holds
  the state's row and NOTIFYs every replica, which sees a new stamp and loads the version in force.

Validation is the caller's: this store records decisions, it does not make them.
"""

from __future__ import annotations

import difflib
import json
import secrets
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from gateway.atomic_files import CachedStamp, Stamp, locked_json, write_atomic
from gateway.domain.policy import PolicyBundle
from gateway.errors import Conflict, NotFound, PolicyDenied
from gateway.state import postgres_connections, postgres_reader, postgres_watched

_EMPTY: dict[str, Any] = {"active": None, "previous": [], "proposals": {}, "closed": {}, "history": []}


@dataclass(frozen=True, slots=True)
class Change:
    """What happened: the version now in force (None if only proposed) and the proposal."""

    active: str | None
    proposal: dict[str, Any] | None


@dataclass(frozen=True, slots=True)
class Decision:
    """A proposal closed without going in force: the proposal with its `outcome`, and the history
    entry that records who, when and why (what the request's audit leaf digests)."""

    proposal: dict[str, Any]
    entry: dict[str, Any]


class PolicyStore:
    """The lifecycle's rules, whichever store keeps the versions and the state document."""

    def stamp(self) -> Stamp | None:  # pragma: no cover - each store has its own
        """Changes whenever the state does: a process that sees a new stamp loads the version in force."""
        raise NotImplementedError

    def _read(self) -> dict[str, Any]:  # pragma: no cover
        raise NotImplementedError

    def _changing(self) -> AbstractContextManager[dict[str, Any]]:  # pragma: no cover
        """Read-modify-write of the state document, one change at a time across processes;
        written back unless the block raises."""
        raise NotImplementedError

    def load(self, version: str) -> PolicyBundle:  # pragma: no cover
        raise NotImplementedError

    def _store(self, bundle: PolicyBundle) -> str:  # pragma: no cover
        """Keep `bundle` under its version (once); returns the version."""
        raise NotImplementedError

    def close(self) -> None:
        """Release what the store holds open (nothing, for the files)."""

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
        before = _pretty(self.load(active)).splitlines() if active else []
        return "\n".join(
            difflib.unified_diff(before, _pretty(bundle).splitlines(), "in force", "proposed", lineterm="")
        )


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


def _pretty(bundle: PolicyBundle) -> str:
    return json.dumps(bundle.model_dump(mode="json"), indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def _brief(proposal: dict[str, Any]) -> dict[str, Any]:
    return {"proposal": proposal["id"], "version": proposal["version"]}


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


class FilePolicyStore(PolicyStore):
    def __init__(self, directory: Path, *, recheck_seconds: float = 0.0) -> None:
        """`recheck_seconds`: how long `stamp` may answer from memory before it looks at the
        file for another process's change (0: on every call); a change made here is seen at once."""
        self._dir = directory
        self._state = directory / "state.json"
        self._stamp = CachedStamp(self._state, recheck_seconds)

    def stamp(self) -> Stamp | None:
        return self._stamp.get()

    def _read(self) -> dict[str, Any]:
        if not self._state.exists():
            return json.loads(json.dumps(_EMPTY))  # type: ignore[no-any-return]
        loaded: dict[str, Any] = json.loads(self._state.read_text(encoding="utf-8"))
        return loaded

    @contextmanager
    def _changing(self) -> Iterator[dict[str, Any]]:
        try:
            with locked_json(self._state, _EMPTY) as data:
                yield data
        finally:
            self._stamp.forget()

    def load(self, version: str) -> PolicyBundle:
        path = self._dir / "versions" / f"{version}.json"
        if not path.is_file():
            raise NotFound(f"no stored policy version {version}")
        return PolicyBundle.model_validate_json(path.read_bytes())

    def _store(self, bundle: PolicyBundle) -> str:
        path = self._dir / "versions" / f"{bundle.version}.json"
        if not path.exists():
            write_atomic(path, _pretty(bundle).encode())
        return bundle.version


_PG_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS policy_versions (version TEXT PRIMARY KEY, bundle TEXT NOT NULL)",
    """CREATE TABLE IF NOT EXISTS policy_state (
        id INTEGER PRIMARY KEY CHECK (id = 1), state TEXT NOT NULL, changes BIGINT NOT NULL)""",
)
_CHANNEL = "veilgate_policy"
_UNAVAILABLE = "the policy store cannot be read"


class PostgresPolicyStore(PolicyStore):
    """Versions and the state document in PostgreSQL; the stamp is the state's change count,
    kept in memory by every replica and renewed on each NOTIFY."""

    def __init__(self, dsn: str, *, schema: str, listen: bool = True) -> None:
        self._db = postgres_reader.Reader.shared(dsn, schema, unavailable=_UNAVAILABLE)
        self._db.create_tables("veilgate_policy", _PG_SCHEMA)
        self._db.write("INSERT INTO policy_state VALUES (1, ?, 0) ON CONFLICT DO NOTHING", (json.dumps(_EMPTY),))
        self._watched = postgres_watched.Watched(dsn, schema, channel=_CHANNEL, load=self._changes, listen=listen)

    def _changes(self) -> int:
        return int(self._db.rows("SELECT changes FROM policy_state WHERE id = 1")[0][0])

    def stamp(self) -> Stamp | None:
        return (self._watched.get(), 0)

    def _read(self) -> dict[str, Any]:
        state: dict[str, Any] = json.loads(self._db.rows("SELECT state FROM policy_state WHERE id = 1")[0][0])
        return state

    @contextmanager
    def _changing(self) -> Iterator[dict[str, Any]]:
        with self._db.transaction() as db:
            (text,) = db.execute("SELECT state FROM policy_state WHERE id = 1 FOR UPDATE").fetchone()
            state: dict[str, Any] = json.loads(text)
            yield state
            db.execute(
                "UPDATE policy_state SET state = ?, changes = changes + 1 WHERE id = 1",
                (json.dumps(state, ensure_ascii=False),),
            )
            db.execute(f"NOTIFY {_CHANNEL}")  # a fixed name, not input
        self._watched.renew()

    def import_from(self, directory: Path) -> int | None:
        """Copy an installation's policy files here (every version, the state with its history),
        if this store never changed (else None); returns the versions copied."""
        local = FilePolicyStore(directory)
        versions = sorted((directory / "versions").glob("*.json"))
        with self._db.transaction() as db:
            (changes,) = db.execute("SELECT changes FROM policy_state WHERE id = 1 FOR UPDATE").fetchone()
            if changes or not postgres_connections.is_empty(db, (("policy_versions", ()),)):
                return None
            rows = [(path.stem, path.read_text(encoding="utf-8")) for path in versions]
            db.executemany("INSERT INTO policy_versions VALUES (?, ?)", rows)
            state = json.dumps(local.state(), ensure_ascii=False)
            db.execute("UPDATE policy_state SET state = ?, changes = changes + 1 WHERE id = 1", (state,))
            db.execute(f"NOTIFY {_CHANNEL}")  # a fixed name, not input
        self._watched.renew()
        return len(versions)

    def load(self, version: str) -> PolicyBundle:
        rows = self._db.rows("SELECT bundle FROM policy_versions WHERE version = ?", (version,))
        if not rows:
            raise NotFound(f"no stored policy version {version}")
        return PolicyBundle.model_validate_json(rows[0][0])

    def _store(self, bundle: PolicyBundle) -> str:
        self._db.write(
            "INSERT INTO policy_versions VALUES (?, ?) ON CONFLICT DO NOTHING", (bundle.version, _pretty(bundle))
        )
        return bundle.version

    def close(self) -> None:
        self._watched.close()
        self._db.close()


def open_policy_store(
    directory: Path,
    *,
    dsn: str | None = None,
    schema: str = "veilgate",
    listen: bool = True,
    recheck_seconds: float = 0.0,
) -> PolicyStore:
    """The policy store as configured: in PostgreSQL when `dsn` is set (changes arrive by
    notice), else files under `directory` (looked at again every `recheck_seconds`)."""
    if dsn:
        return PostgresPolicyStore(dsn, schema=schema, listen=listen)
    return FilePolicyStore(directory, recheck_seconds=recheck_seconds)
