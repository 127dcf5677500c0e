"""Client accounts: the rules, written once against the tables, for both backends.

Invariants:
- a client secret is shown once, when it is made, and stored only as a salted scrypt hash;
  a secret that grants a privileged role is split between the two administrators of the change;
- checking a secret costs the same whether or not the client exists, and compares in constant
  time, so timing tells nothing about which client ids exist;
- privileged roles (`ports.PRIVILEGED`) are granted and withdrawn, privileged accounts disabled,
  and any account re-enabled, only by a proposal that people of other identities approve
  (`approvals_required` in all); a proposal applies only to the account revision it was made from;
- no change leaves fewer administrators (by identity) than it takes to approve a change;
- every change is one transaction that one process or replica holds at a time (`_Backend.writing`).
"""

from __future__ import annotations

import json
import re
import secrets
from collections.abc import Iterable, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from gateway.domain.names import CLIENT_ID_PATTERN
from gateway.domain.principal import Role
from gateway.errors import Conflict, InvalidRequest, NotFound, PolicyDenied
from gateway.state import person_names
from gateway.state import secrets as secret_codes
from gateway.state.migrations import Execute, Step
from gateway.state.ports import PRIVILEGED, Account, AccountAction, AccountChange

STORE = "accounts"


PROPOSAL_EXPIRES = timedelta(days=7)
"""How long an account proposal waits for its second approval."""


def _record(account: Account) -> dict[str, Any]:
    return {
        "client_id": account.client_id,
        "organisation": account.organisation,
        "roles": sorted(r.value for r in account.roles),
        "secret_hash": account.secret_hash,
        "created_at": account.created_at.isoformat(),
        "disabled": account.disabled,
        "person": account.person,
        "revision": account.revision,
        "made_by": account.made_by,
        "maker_identity": account.maker_identity,
        "token_generation": account.token_generation,
    }


def _account(item: dict[str, Any]) -> Account:
    """A stored record; one written before accounts named a person is its own person."""
    return Account(
        client_id=item["client_id"],
        organisation=item["organisation"],
        roles=frozenset(Role(r) for r in item["roles"]),
        secret_hash=item["secret_hash"],
        created_at=datetime.fromisoformat(item["created_at"]),
        disabled=bool(item.get("disabled", False)),
        person=item["person"] if "person" in item else item["client_id"],
        revision=int(item.get("revision", 0)),
        made_by=item.get("made_by"),
        maker_identity=item.get("maker_identity"),
        token_generation=int(item.get("token_generation", 0)),
    )


def _name_every_person(execute: Execute) -> None:
    for client_id, text in execute("SELECT client_id, record FROM clients").fetchall():
        record = json.loads(text)
        if "person" not in record:
            record = _record(_account(record))
            execute("UPDATE clients SET record = ? WHERE client_id = ?", (json.dumps(record), client_id))


STEPS = (
    Step(1, ("CREATE TABLE IF NOT EXISTS clients (client_id TEXT PRIMARY KEY, record TEXT NOT NULL)",)),
    Step(
        2,
        ("CREATE TABLE IF NOT EXISTS account_proposals (id TEXT PRIMARY KEY, record TEXT NOT NULL)",),
        _name_every_person,
    ),
)
"""1: the layout PostgreSQL installations already had; 2: proposals, and a person on each account."""


def import_file(execute: Execute, path: Path) -> int | None:
    """Copy the accounts of a `clients.json` (the store before this one) into an empty table,
    in the caller's transaction; None if there was nothing to copy or accounts are here already."""
    if not path.is_file() or execute("SELECT 1 FROM clients LIMIT 1").fetchall():
        return None
    found = [_account(item) for item in json.loads(path.read_text(encoding="utf-8"))["clients"]]
    for account in found:
        execute("INSERT INTO clients VALUES (?, ?)", (account.client_id, json.dumps(_record(account))))
    return len(found)


def _check_person(person: str | None, accounts: Iterable[Account]) -> None:
    """SECURITY: a person spelled nearly like another (`demo administrator`, a trailing space, a
    zero width space, a Cyrillic letter in a Latin name) reads to an approver as that person but
    would count as someone else, so its holder could approve their own changes. Refused, naming
    the parameter and the rule."""
    if person is None:
        return
    if person != " ".join(person.split()) or any(person_names.is_invisible(ch) for ch in person):
        raise InvalidRequest("person: no control or invisible characters, and single spaces between words only")
    reads = person_names.keys(person)
    if any(a.person is not None and a.person != person and reads & person_names.keys(a.person) for a in accounts):
        raise InvalidRequest(
            "person: reads like an existing person (differs only in case, width, spacing or letters that look "
            "alike); give that person's name exactly as on their other accounts, or a name that reads differently"
        )


class _Tables:
    """One transaction's view of the tables."""

    def __init__(self, execute: Execute) -> None:
        self.execute = execute

    def get(self, client_id: str) -> Account | None:
        rows = self.execute("SELECT record FROM clients WHERE client_id = ?", (client_id,)).fetchall()
        return _account(json.loads(rows[0][0])) if rows else None

    def all(self) -> list[Account]:
        return [_account(json.loads(text)) for (text,) in self.execute("SELECT record FROM clients").fetchall()]

    def insert(self, account: Account) -> None:
        if self.get(account.client_id) is not None:
            raise Conflict("this client id is taken")
        self.execute("INSERT INTO clients VALUES (?, ?)", (account.client_id, json.dumps(_record(account))))

    def update(self, account: Account) -> Account:
        """Store a change. SECURITY: a disable or a role taken away moves the account to its next
        token generation, voiding every token issued before, so a later re-enable or grant
        revives none (a count, not a time: no clock or second boundary decides it)."""
        before = self.get(account.client_id)
        ends = before is not None and ((account.disabled and not before.disabled) or bool(before.roles - account.roles))
        generation = account.token_generation + 1 if ends else account.token_generation
        changed = replace(account, revision=account.revision + 1, token_generation=generation)
        self.execute(
            "UPDATE clients SET record = ? WHERE client_id = ?", (json.dumps(_record(changed)), account.client_id)
        )
        return changed

    def proposal(self, proposal_id: str) -> dict[str, Any]:
        rows = self.execute("SELECT record FROM account_proposals WHERE id = ?", (proposal_id,)).fetchall()
        if not rows:
            raise NotFound("there is no open account proposal with this id")
        found: dict[str, Any] = json.loads(rows[0][0])
        return found

    def keep(self, proposal: dict[str, Any], *, new: bool) -> None:
        if new:
            self.execute("INSERT INTO account_proposals VALUES (?, ?)", (proposal["id"], json.dumps(proposal)))
        else:
            self.execute("UPDATE account_proposals SET record = ? WHERE id = ?", (json.dumps(proposal), proposal["id"]))

    def drop(self, proposal_id: str) -> None:
        self.execute("DELETE FROM account_proposals WHERE id = ?", (proposal_id,))

    def identity_of(self, client_id: str) -> str:
        found = self.get(client_id)
        return found.identity if found is not None else f"client:{client_id}"


class AccountRules:
    """The account operations of `ports.AccountStore`; a backend supplies `writing` (a write
    transaction, serialised across processes and replicas), `_accounts` (the accounts as last
    committed, cached as the backend can) and `_changed` (after a commit)."""

    def writing(self) -> AbstractContextManager[Execute]:  # pragma: no cover - each backend has its own
        raise NotImplementedError

    def _accounts(self) -> dict[str, Account]:  # pragma: no cover
        raise NotImplementedError

    def _changed(self) -> None:  # pragma: no cover
        raise NotImplementedError

    def _proposal_rows(self) -> list[str]:  # pragma: no cover
        raise NotImplementedError

    @contextmanager
    def _tables(self) -> Iterator[_Tables]:
        """One write transaction; the caches learn of it once it is committed."""
        try:
            with self.writing() as execute:
                yield _Tables(execute)
        finally:
            self._changed()

    def find(self, client_id: str) -> Account | None:
        return self._accounts().get(client_id)

    def all(self) -> list[Account]:
        return sorted(self._accounts().values(), key=lambda a: a.client_id)

    def identity_of(self, client_id: str) -> str:
        found = self.find(client_id)
        return found.identity if found is not None else f"client:{client_id}"

    def check_credentials(self, client_id: str, secret: str) -> Account | None:
        account = self.find(client_id)
        matches = secret_codes.is_secret_match(secret, account.secret_hash if account else secret_codes.DUMMY_HASH)
        if account is None or not matches or account.disabled:
            return None
        return account

    def add(self, client_id: str, organisation: str, roles: Iterable[Role], *, person: str | None = None) -> str:
        # SECURITY: the API checks the pattern too; the host's `clients add` comes here directly,
        # and an id such as `cli:root` would pass for the command line's own name.
        if re.fullmatch(CLIENT_ID_PATTERN, client_id) is None:
            raise InvalidRequest("client_id: 3 to 64 of a-z, 0-9, '.', '_' and '-', starting with a letter or digit")
        secret = secret_codes.new_secret()
        made = Account(
            client_id, organisation, frozenset(roles), secret_codes.hash_secret(secret), datetime.now(UTC),
            person=person, revision=1,
        )  # fmt: skip
        with self._tables() as tables:
            _check_person(person, tables.all())
            tables.insert(made)
        return secret

    def disable(self, client_id: str, *, approvals_required: int) -> Account:
        with self._tables() as tables:
            found = tables.get(client_id)
            if found is None:
                raise NotFound("there is no client with this id")
            if found.disabled:
                return found
            after = replace(found, disabled=True)
            # SECURITY: fewer administrators than approvals reopens setting up (privileged roles
            # granted from the host alone); the host keeps the API's rule.
            _keep_enough_admins(tables, found, after, approvals_required)
            return tables.update(after)

    def proposals(self) -> list[dict[str, Any]]:
        return [_public(json.loads(text)) for text in self._proposal_rows()]

    def propose(
        self,
        action: AccountAction,
        client_id: str,
        *,
        by: str,
        approvals_required: int,
        organisation: str | None = None,
        roles: Iterable[Role] | None = None,
        person: str | None = None,
    ) -> AccountChange:
        with self._tables() as tables:
            current = tables.get(client_id)
            if action == "create":
                if current is None and organisation is None:
                    raise Conflict("a new account needs an organisation")
                if current is not None:
                    raise Conflict("this client id is taken")
                _check_person(person, tables.all())
            elif current is None:
                raise NotFound("there is no client with this id")
            proposal = {
                "id": secrets.token_hex(6),
                "action": action,
                "client_id": client_id,
                "organisation": organisation if current is None else current.organisation,
                "person": person if current is None else current.person,
                "roles": sorted(r.value for r in (roles if roles is not None else current.roles if current else ())),
                "base_revision": current.revision if current else None,
                "proposed_by": by,
                "proposed_at": datetime.now(UTC).isoformat(timespec="seconds"),
                "approvals": [by],
                "identities": [tables.identity_of(by)],
            }
            after = _applied(proposal, current)
            if current is not None and after == current:
                raise Conflict(f"the account is already as this {action} would leave it")
            _keep_enough_admins(tables, current, after, approvals_required)
            gains = _gains_privilege(current, after)
            if not gains and not _needs_approval(action, current, after):
                secret = secret_codes.new_secret() if current is None else None
                return AccountChange(_apply(tables, proposal, current, secret), None, secret)
            if approvals_required <= 1:
                secret = secret_codes.new_secret() if gains else None
                return AccountChange(_apply(tables, proposal, current, secret), None, secret)
            half = secret_codes.first_half() if gains else None
            tables.keep({**proposal, "secret_half": half}, new=True)
            return AccountChange(None, _public(proposal), half)

    def approve(self, proposal_id: str, *, by: str, approvals_required: int) -> AccountChange:
        with self._tables() as tables:
            proposal = tables.proposal(proposal_id)
            # SECURITY: "make X an administrator" must not wait, approvable, until a day nobody
            # remembers why it was proposed: a second person approves it within a week or never.
            if datetime.now(UTC) - datetime.fromisoformat(proposal["proposed_at"]) > PROPOSAL_EXPIRES:
                raise Conflict(f"this proposal expired after {PROPOSAL_EXPIRES.days} days; propose it again")
            identity = tables.identity_of(by)
            if identity in proposal["identities"]:
                raise PolicyDenied("a change is approved by another person than the ones who proposed or approved it")
            current = tables.get(proposal["client_id"])
            if (current.revision if current else None) != proposal["base_revision"]:
                raise Conflict("the account changed since this proposal was made; propose it again")
            proposal["approvals"].append(by)
            proposal["identities"].append(identity)
            if len(proposal["identities"]) < approvals_required:
                tables.keep(proposal, new=False)
                return AccountChange(None, _public(proposal))
            after = _applied(proposal, current)
            _keep_enough_admins(tables, current, after, approvals_required)
            half = secret_codes.second_half() if proposal.get("secret_half") else None
            secret = proposal["secret_half"] + half if half else None
            tables.drop(proposal_id)
            return AccountChange(_apply(tables, proposal, current, secret), _public(proposal), half)


def _public(proposal: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in proposal.items() if k != "secret_half"}


def _applied(proposal: dict[str, Any], current: Account | None) -> Account:
    """The account as the proposal would leave it (the secret aside)."""
    roles = frozenset(Role(r) for r in proposal["roles"])
    if current is None:
        return Account(
            proposal["client_id"], proposal["organisation"], roles, "", datetime.now(UTC), person=proposal["person"],
            made_by=proposal["proposed_by"], maker_identity=proposal["identities"][0],
        )  # fmt: skip
    action = proposal["action"]
    return replace(
        current,
        roles=roles if action == "roles" else current.roles,
        disabled={"disable": True, "enable": False}.get(action, current.disabled),
    )


def _gains_privilege(current: Account | None, after: Account) -> bool:
    return bool((after.roles & PRIVILEGED) - (current.roles if current else frozenset()))


def _needs_approval(action: AccountAction, current: Account | None, after: Account) -> bool:
    if action == "enable":
        return True
    before = current.roles & PRIVILEGED if current else frozenset()
    return before != after.roles & PRIVILEGED or (action == "disable" and bool(before))


def _admins(accounts: Iterable[Account]) -> set[str]:
    return {a.identity for a in accounts if Role.ADMIN in a.roles and not a.disabled}


def _keep_enough_admins(tables: _Tables, current: Account | None, after: Account, approvals_required: int) -> None:
    """No change leaves fewer administrators (by identity) than it takes to approve the next."""
    if current is None or Role.ADMIN not in current.roles or current.disabled:
        return
    others = [a for a in tables.all() if a.client_id != current.client_id]
    needed = max(1, approvals_required)
    if len(_admins([*others, after])) < needed:
        raise Conflict(f"the change would leave fewer than {needed} administrators (counted by person)")


def _apply(tables: _Tables, proposal: dict[str, Any], current: Account | None, secret: str | None) -> Account:
    after = _applied(proposal, current)
    if secret is not None:
        after = replace(after, secret_hash=secret_codes.hash_secret(secret))
    if current is None:
        if secret is None:
            raise AssertionError("a new account is made with a secret")
        made = replace(after, revision=1)
        tables.insert(made)
        return made
    return tables.update(after)
