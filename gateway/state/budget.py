"""The privacy-budget ledger's rules: reserve before execution, commit once data is read,
release only what was never used; written once for both backends (`budget_sqlite`,
`budget_postgres`), with the store's schema steps.

Every operation is one transaction. A reservation draws on three accounts
at once (grant, organisation, dataset version; see `domain.budget`) and is refused if any of them
would exceed its cap. The accounts are locked in name order, so two reservations never deadlock.

A reservation is `reserved`, then `reading` once its computation is about to read data (from then
on its charge stays, whatever happens), then `committed`. A crash leaves it counted: the ledger
errs on the safe side and is never overspent. `stale` lists what crashes left, and `settle_stale`
gives back what never read data and commits what did. Stored releases, their holds and
idempotency keys: `budget_releases`; spending by day: `budget_spending`.
"""

from __future__ import annotations

import secrets
from collections.abc import Sequence
from datetime import UTC, datetime

from gateway.domain.budget import Accounts, Amount
from gateway.errors import BudgetExhausted, Conflict, NotFound
from gateway.state import budget_releases, budget_spending
from gateway.state.budget_base import Cursor
from gateway.state.budget_releases import ReleaseStore
from gateway.state.budget_spending import Label, SpendingStore
from gateway.state.migrations import Step
from gateway.state.ports.budget import Balance, StaleReservation

STORE = "budget"
_LAYOUT = (
    """CREATE TABLE IF NOT EXISTS budget_reservations (
        id TEXT PRIMARY KEY, state TEXT NOT NULL, micro_epsilon BIGINT NOT NULL, nano_delta BIGINT NOT NULL,
        created TEXT NOT NULL)""",
    """CREATE TABLE IF NOT EXISTS budget_postings (
        reservation_id TEXT NOT NULL, account TEXT NOT NULL, PRIMARY KEY (reservation_id, account))""",
    """CREATE TABLE IF NOT EXISTS budget_balances (
        account TEXT PRIMARY KEY, reserved_e BIGINT NOT NULL, reserved_d BIGINT NOT NULL,
        spent_e BIGINT NOT NULL, spent_d BIGINT NOT NULL)""",
    *budget_releases.SCHEMA,
    *budget_spending.SCHEMA,
)
STEPS = (Step(1, _LAYOUT),)
"""1: the layout of before versioned migrations, reached from any earlier one as it always was
(`CREATE ... IF NOT EXISTS`, and the per-question holds of old dropped)."""
TABLES = (
    ("budget_reservations", ("id", "state", "micro_epsilon", "nano_delta", "created")),
    ("budget_postings", ("reservation_id", "account")),
    ("budget_balances", ("account", "reserved_e", "reserved_d", "spent_e", "spent_d")),
    *budget_releases.TABLES,
    *budget_spending.TABLES,
)
"""What an installation's SQLite file holds that PostgreSQL takes on `import_from`."""
_UNRESERVE = "UPDATE budget_balances SET reserved_e = reserved_e - ?, reserved_d = reserved_d - ? WHERE account = ?"
_SPEND = (
    "UPDATE budget_balances SET reserved_e = reserved_e - ?, reserved_d = reserved_d - ?, "
    "spent_e = spent_e + ?, spent_d = spent_d + ? WHERE account = ?"
)
_LEVELS = ("the grant's budget on this dataset", "the organisation's budget on this dataset",
           "the global budget of this dataset version")  # fmt: skip


class BudgetRules(ReleaseStore, SpendingStore):
    """The operations of `ports.BudgetStore`, on any backend: a backend hands them its
    transaction and its read (`budget_base.Store`) and the statements that hold a row."""

    select_balance = "SELECT reserved_e, reserved_d, spent_e, spent_d FROM budget_balances WHERE account = ?"

    def reserve(self, accounts: Accounts, amount: Amount) -> str:
        """A reservation id; BudgetExhausted names the first account that cannot take it."""
        return self.reserve_all([(accounts, amount)])[0]

    def reserve_all(self, charges: Sequence[tuple[Accounts, Amount]], services: Sequence[str] = ()) -> list[str]:
        """One reservation per charge, all in one transaction: all are made or none is.

        Charges of a batch that share an account are added up before the cap is checked.
        `services`: per charge, the service it is for; with it, what the charge spends shows in
        usage statements and public disclosure (`spending`).
        """
        reservations = [secrets.token_hex(12) for _ in charges]
        needed: dict[str, Amount] = {}
        caps: dict[str, Amount] = {}
        levels: dict[str, str] = {}
        for accounts, amount in charges:
            for (account, cap), level in zip(accounts.pairs(), _LEVELS, strict=True):
                needed[account] = needed.get(account, Amount(0, 0)) + amount
                caps[account] = cap
                levels[account] = level
        created = datetime.now(UTC).isoformat()
        with self._transaction() as cur:
            for account in sorted(needed):
                cur.execute(
                    "INSERT INTO budget_balances VALUES (?, 0, 0, 0, 0) ON CONFLICT (account) DO NOTHING",
                    (account,),
                )
            for account in sorted(needed):
                ((re, rd, se, sd),) = self._rows(cur, self.select_balance, (account,))
                if not needed[account].fits(Amount(int(re) + int(se), int(rd) + int(sd)), caps[account]):
                    raise BudgetExhausted(f"this release would exceed {levels[account]}")
            for n, (reservation, (accounts, amount)) in enumerate(zip(reservations, charges, strict=True)):
                cur.execute(
                    "INSERT INTO budget_reservations VALUES (?, 'reserved', ?, ?, ?)",
                    (reservation, amount.micro_epsilon, amount.nano_delta, created),
                )
                if services:
                    self._label(
                        cur, reservation, Label(accounts.consumer, accounts.grant_id, services[n], accounts.dataset)
                    )
                for account, _cap in accounts.pairs():
                    cur.execute("INSERT INTO budget_postings VALUES (?, ?)", (reservation, account))
                    cur.execute(
                        "UPDATE budget_balances SET reserved_e = reserved_e + ?, reserved_d = reserved_d + ? "
                        "WHERE account = ?",
                        (amount.micro_epsilon, amount.nano_delta, account),
                    )
        return reservations

    def commit(self, reservation: str) -> None:
        """The data was read: the charge is spent for good (idempotent)."""
        self._settle(reservation, spend=True)

    def mark_reading(self, reservation: str) -> None:
        """Data is about to be read: from now on the charge stays, even after a crash.

        Raises Conflict if the reservation was given back meanwhile (`settle_stale` took it for
        abandoned): then no data may be read for it.
        """
        with self._transaction() as cur:
            changed = cur.execute(
                "UPDATE budget_reservations SET state = 'reading' WHERE id = ? AND state IN ('reserved', 'reading')",
                (reservation,),
            ).rowcount
        if changed != 1:
            raise Conflict(f"budget reservation {reservation} is no longer held; nothing was read")

    def stale(self, older_than: str) -> list[StaleReservation]:
        """Reservations made before `older_than` (ISO time) and never committed: what crashes left."""
        with self._read() as cur:
            rows = self._rows(
                cur,
                "SELECT id, state, micro_epsilon, nano_delta, created FROM budget_reservations "
                "WHERE state IN ('reserved', 'reading') AND created < ? ORDER BY created",
                (older_than,),
            )
            found = []
            for rid, state, eps, delta, created in rows:
                accounts = self._rows(
                    cur, "SELECT account FROM budget_postings WHERE reservation_id = ? ORDER BY account", (rid,)
                )
                found.append(
                    StaleReservation(str(rid), str(state), Amount(int(eps), int(delta)), str(created),
                                     tuple(str(a) for (a,) in accounts))
                )  # fmt: skip
        return found

    def settle_stale(self, older_than: str) -> tuple[int, int]:
        """Give back the stale reservations that never read data, commit those that did; returns
        (given back, committed). Only for requests that are over: a computation still running
        past `older_than` finds its reservation gone before it reads (`mark_reading`)."""
        returned = committed = 0
        for stale in self.stale(older_than):
            with self._transaction() as cur:
                rows = self._rows(cur, self.select_reservation, (stale.id,))
                if not rows or rows[0][0] not in ("reserved", "reading"):
                    continue  # settled meanwhile
                spend = rows[0][0] == "reading"
                self._settle_in(cur, stale.id, spend=spend)
            committed += spend
            returned += not spend
        return returned, committed

    def release(self, reservation: str) -> None:
        """Nothing was read: give the reservation back (a committed one stays spent)."""
        self._settle(reservation, spend=False)

    def _settle(self, reservation: str, *, spend: bool) -> None:
        with self._transaction() as cur:
            self._settle_in(cur, reservation, spend=spend)

    def _settle_in(self, cur: Cursor, reservation: str, *, spend: bool) -> None:
        rows = self._rows(cur, self.select_reservation, (reservation,))
        if not rows:
            raise NotFound(f"no budget reservation {reservation}")
        state, eps, delta = rows[0]
        if state == "committed":
            return  # spent stays spent
        if state == "reading" and not spend:
            raise Conflict(f"budget reservation {reservation} read data: its charge stays")
        accounts = [r[0] for r in self._rows(
            cur, "SELECT account FROM budget_postings WHERE reservation_id = ? ORDER BY account", (reservation,)
        )]  # fmt: skip
        for account in accounts:
            if spend:
                cur.execute(_SPEND, (eps, delta, eps, delta, account))
            else:
                cur.execute(_UNRESERVE, (eps, delta, account))
        if spend:
            cur.execute("UPDATE budget_reservations SET state = 'committed' WHERE id = ?", (reservation,))
            self._spent(cur, reservation, int(eps), int(delta))
        else:
            self._unlabel(cur, reservation)
            cur.execute("DELETE FROM budget_postings WHERE reservation_id = ?", (reservation,))
            cur.execute("DELETE FROM budget_reservations WHERE id = ?", (reservation,))

    def has_history(self) -> bool:
        """Whether any budget was ever reserved here."""
        with self._read() as cur:
            return bool(self._rows(cur, "SELECT 1 FROM budget_reservations LIMIT 1", ()))

    def balance(self, account: str) -> Balance:
        with self._read() as cur:
            rows = self._rows(
                cur,
                "SELECT reserved_e, reserved_d, spent_e, spent_d FROM budget_balances WHERE account = ?",
                (account,),
            )
        if not rows:
            return Balance(Amount(0, 0), Amount(0, 0))
        re, rd, se, sd = (int(v) for v in rows[0])
        return Balance(spent=Amount(se, sd), reserved=Amount(re, rd))


__all__ = ["STEPS", "STORE", "TABLES", "BudgetRules"]
