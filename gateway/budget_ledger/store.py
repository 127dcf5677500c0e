"""What the budget ledger's rules need of a backend: a transaction, a read, and its SQL dialect.

Imports nothing from gateway but errors; the rules (reservations in `__init__`, stored releases
and their holds in `releases`) are written once against it.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any, Protocol


class Cursor(Protocol):
    def execute(self, sql: str, params: Sequence[Any] = ()) -> Any: ...


class Store:
    """The backend-independent part; subclasses give a transaction and the SQL dialect."""

    select_reservation = "SELECT state, micro_epsilon, nano_delta FROM budget_reservations WHERE id = ?"

    @contextmanager
    def _transaction(self) -> Iterator[Cursor]:  # pragma: no cover - each backend has its own
        raise NotImplementedError
        yield

    @contextmanager
    def _read(self) -> Iterator[Cursor]:
        """Reads only: backends that can read without the write lock say so."""
        with self._transaction() as cur:
            yield cur

    def _q(self, sql: str) -> str:
        return sql

    def _rows(self, cur: Cursor, sql: str, params: Sequence[Any]) -> list[tuple[Any, ...]]:
        result: list[tuple[Any, ...]] = cur.execute(self._q(sql), params).fetchall()
        return result

    def _settle_in(self, cur: Cursor, reservation: str, *, spend: bool) -> None:  # pragma: no cover
        raise NotImplementedError
