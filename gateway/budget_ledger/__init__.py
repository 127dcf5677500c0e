"""The privacy-budget ledger: reserve before execution, commit once data is read, release only
what was never used. Two backends behind one interface: SQLite (embedded) and PostgreSQL (for
several gateway processes or machines).

Imports no other leaf. Every operation is one transaction. A reservation draws on three accounts
at once (grant, organisation, dataset version; see `domain.budget`) and is refused if any of them
would exceed its cap. The accounts are locked in name order, so two reservations never deadlock.

A reservation is `reserved`, then `reading` once its computation is about to read data (from then
on its charge stays, whatever happens), then `committed`. A crash leaves it counted: the ledger
errs on the safe side and is never overspent. `stale` lists what crashes left, and `settle_stale`
gives back what never read data and commits what did. Stored releases, their holds and
idempotency keys: `releases`.
"""

from __future__ import annotations

import secrets
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from gateway.budget_ledger import releases, spending
from gateway.budget_ledger.releases import Holding, IdempotentReplay, ReleaseStore, StaleEntry
from gateway.budget_ledger.spending import Label, SpendingRow, SpendingStore
from gateway.budget_ledger.store import Cursor
from gateway.domain.budget import Accounts, Amount
from gateway.errors import BudgetExhausted, Conflict, NotFound
from gateway.state import postgres_connections
from gateway.state.sqlite_connections import immediate, open_wal, reading

_SCHEMA = (
    """CREATE TABLE IF NOT EXISTS budget_reservations (
        id TEXT PRIMARY KEY, state TEXT NOT NULL, micro_epsilon BIGINT NOT NULL, nano_delta BIGINT NOT NULL,
        created TEXT NOT NULL)""",
    """CREATE TABLE IF NOT EXISTS budget_postings (
        reservation_id TEXT NOT NULL, account TEXT NOT NULL, PRIMARY KEY (reservation_id, account))""",
    """CREATE TABLE IF NOT EXISTS budget_balances (
        account TEXT PRIMARY KEY, reserved_e BIGINT NOT NULL, reserved_d BIGINT NOT NULL,
        spent_e BIGINT NOT NULL, spent_d BIGINT NOT NULL)""",
    *releases.SCHEMA,
    *spending.SCHEMA,
)
_UNRESERVE = "UPDATE budget_balances SET reserved_e = reserved_e - ?, reserved_d = reserved_d - ? WHERE account = ?"
_SPEND = (
    "UPDATE budget_balances SET reserved_e = reserved_e - ?, reserved_d = reserved_d - ?, "
    "spent_e = spent_e + ?, spent_d = spent_d + ? WHERE account = ?"
)
_UNAVAILABLE = "the budget ledger is unavailable; nothing was released"
_LEVELS = ("the grant's budget on this dataset", "the organisation's budget on this dataset",
           "the global budget of this dataset version")  # fmt: skip


@dataclass(frozen=True, slots=True)
class StaleReservation:
    id: str
    state: str
    """`reserved` (no data was read: it may be given back) or `reading` (the charge stays)."""
    amount: Amount
    created: str
    accounts: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Balance:
    spent: Amount
    reserved: Amount


class BudgetLedger(ReleaseStore, SpendingStore):
    """The backend-independent rules; subclasses give a transaction and the SQL dialect."""

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
                    self._q("INSERT INTO budget_balances VALUES (?, 0, 0, 0, 0) ON CONFLICT (account) DO NOTHING"),
                    (account,),
                )
            for account in sorted(needed):
                ((re, rd, se, sd),) = self._rows(cur, self.select_balance, (account,))
                if not needed[account].fits(Amount(int(re) + int(se), int(rd) + int(sd)), caps[account]):
                    raise BudgetExhausted(f"this release would exceed {levels[account]}")
            for n, (reservation, (accounts, amount)) in enumerate(zip(reservations, charges, strict=True)):
                cur.execute(
                    self._q("INSERT INTO budget_reservations VALUES (?, 'reserved', ?, ?, ?)"),
                    (reservation, amount.micro_epsilon, amount.nano_delta, created),
                )
                if services:
                    self._label(
                        cur, reservation, Label(accounts.consumer, accounts.grant_id, services[n], accounts.dataset)
                    )
                for account, _cap in accounts.pairs():
                    cur.execute(self._q("INSERT INTO budget_postings VALUES (?, ?)"), (reservation, account))
                    cur.execute(
                        self._q(
                            "UPDATE budget_balances SET reserved_e = reserved_e + ?, reserved_d = reserved_d + ? "
                            "WHERE account = ?"
                        ),
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
                self._q(
                    "UPDATE budget_reservations SET state = 'reading' WHERE id = ? AND state IN ('reserved', 'reading')"
                ),
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
                cur.execute(self._q(_SPEND), (eps, delta, eps, delta, account))
            else:
                cur.execute(self._q(_UNRESERVE), (eps, delta, account))
        if spend:
            cur.execute(self._q("UPDATE budget_reservations SET state = 'committed' WHERE id = ?"), (reservation,))
            self._spent(cur, reservation, int(eps), int(delta))
        else:
            self._unlabel(cur, reservation)
            cur.execute(self._q("DELETE FROM budget_postings WHERE reservation_id = ?"), (reservation,))
            cur.execute(self._q("DELETE FROM budget_reservations WHERE id = ?"), (reservation,))

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

    def close(self) -> None:  # pragma: no cover - each backend has its own
        raise NotImplementedError


class SqliteBudgetLedger(BudgetLedger):
    """One file in WAL mode; BEGIN IMMEDIATE orders every process on the machine."""

    def __init__(self, path: Path) -> None:
        self._conn = open_wal(path)
        for statement in _SCHEMA:
            self._conn.execute(statement)
        self._lock = threading.Lock()

    @contextmanager
    def _transaction(self) -> Iterator[Cursor]:
        with immediate(self._conn, self._lock, _UNAVAILABLE) as conn:
            yield conn

    @contextmanager
    def _read(self) -> Iterator[Cursor]:
        """Without BEGIN IMMEDIATE: a lookup on the request path never waits for another
        process's write lock (each SELECT sees one committed state)."""
        with reading(self._conn, self._lock, _UNAVAILABLE) as conn:
            yield conn

    def close(self) -> None:
        self._conn.close()


_TABLES: postgres_connections.Tables = (
    ("budget_reservations", ("id", "state", "micro_epsilon", "nano_delta", "created")),
    ("budget_postings", ("reservation_id", "account")),
    ("budget_balances", ("account", "reserved_e", "reserved_d", "spent_e", "spent_d")),
    *releases.TABLES,
    *spending.TABLES,
)


class PostgresBudgetLedger(BudgetLedger):
    """PostgreSQL: balance rows locked FOR UPDATE, in name order, inside one transaction."""

    select_balance = BudgetLedger.select_balance + " FOR UPDATE"
    select_reservation = BudgetLedger.select_reservation + " FOR UPDATE"

    def __init__(self, dsn: str, *, schema: str = "public") -> None:
        # Pooled: a connection cut by a restart or a failover is replaced before it is used.
        self._pool = postgres_connections.Pool(dsn, schema, name="veilgate-budget", unavailable=_UNAVAILABLE)
        with self._pool.transaction() as conn:
            for statement in _SCHEMA:
                conn.execute(statement)

    def import_from(self, source: Path) -> int | None:
        """Copy an installation's SQLite budget ledger here, if this one is empty (else None)."""
        with self._pool.transaction() as conn:
            db = postgres_connections.Db(conn)
            return (
                postgres_connections.copy_tables(db, source, _TABLES)
                if postgres_connections.is_empty(db, _TABLES)
                else None
            )

    def _q(self, sql: str) -> str:
        return sql.replace("?", "%s")

    @contextmanager
    def _transaction(self) -> Iterator[Cursor]:
        with self._pool.transaction() as conn:
            yield conn

    def close(self) -> None:
        self._pool.close()


def open_budget_ledger(path: Path, *, dsn: str | None = None, schema: str = "veilgate") -> BudgetLedger:
    """The budget ledger as configured: in PostgreSQL when `dsn` is set, else the SQLite file at `path`."""
    if dsn:
        return PostgresBudgetLedger(dsn, schema=schema)
    return SqliteBudgetLedger(path)


__all__ = [
    "Balance",
    "BudgetLedger",
    "Holding",
    "IdempotentReplay",
    "PostgresBudgetLedger",
    "SpendingRow",
    "SqliteBudgetLedger",
    "StaleEntry",
    "StaleReservation",
    "open_budget_ledger",
]
