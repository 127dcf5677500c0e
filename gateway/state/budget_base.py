"""What the budget ledger's rules need of a backend: a write transaction and a read, each
yielding something with `execute(sql, params)` that takes `?` placeholders (a sqlite3
connection, or `postgres_connections.Db`).

The rules (reservations in `budget`, stored releases and their holds in `budget_releases`,
spending in `budget_spending`) are written once against it; a backend hands them its
transaction and its read when it opens.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from typing import Any, Protocol

__all__ = ["Cursor", "Store"]


class Cursor(Protocol):
    def execute(self, sql: str, params: Sequence[Any] = (), /) -> Any: ...


class _Settle(Protocol):
    def __call__(self, cur: Cursor, reservation: str, *, spend: bool) -> None: ...


Transaction = Callable[[], AbstractContextManager[Cursor]]


class Store:
    """The backend-independent part: how the rules reach the tables."""

    select_reservation = "SELECT state, micro_epsilon, nano_delta FROM budget_reservations WHERE id = ?"
    _settle_in: _Settle
    """Spend or give back one reservation inside a transaction (`budget.BudgetRules`)."""

    def __init__(self, *, transaction: Transaction, read: Transaction | None = None) -> None:
        """`read`: a transaction that does not take the write lock, for backends that have one."""
        self._transaction = transaction
        self._read = read or transaction

    def _rows(self, cur: Cursor, sql: str, params: Sequence[Any]) -> list[tuple[Any, ...]]:
        result: list[tuple[Any, ...]] = cur.execute(sql, params).fetchall()
        return result
