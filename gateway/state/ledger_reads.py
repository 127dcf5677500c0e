"""The ledger's reads outside the writer: metering per grant, billing, the monthly report and
the alerts administrators see. Each backend reads on its own connection (`ReadRows`)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

from gateway.state.ports import BillingRow


class ReadRows(Protocol):
    def __call__(self, sql: str, params: Sequence[Any] = (), /) -> list[tuple[Any, ...]]: ...


class LedgerReads:
    """Reports over the ledger's billing and alert tables."""

    _rows: ReadRows

    def usage(self, grant: str) -> list[tuple[str, str, str, int, int, int]]:
        """Metering rows of a grant: (service, purpose, day, calls, claims, billable claims)."""
        rows = self._rows(
            "SELECT service, purpose, day, SUM(calls), SUM(claims), SUM(billable) FROM billing "
            "WHERE grant_id = ? GROUP BY service, purpose, day ORDER BY day, service",
            (grant,),
        )
        return [(str(a), str(b), str(c), int(d), int(e), int(f)) for a, b, c, d, e, f in rows]

    def alerts(self, since: str | None = None, limit: int = 1000) -> list[dict[str, Any]]:
        rows = self._rows(
            "SELECT id, at, kind, subject, message FROM alerts WHERE at >= ? ORDER BY id DESC LIMIT ?",
            (since or "", limit),
        )
        return [{"id": i, "at": at, "kind": k, "subject": sub, "message": m} for i, at, k, sub, m in rows]

    def monthly_usage(self) -> list[tuple[str, str, int, int]]:
        """Per service and month (YYYY-MM): calls and counted claims, every grant together."""
        rows = self._rows(
            "SELECT service, substr(day, 1, 7) AS month, SUM(calls), SUM(claims) FROM billing "
            "GROUP BY service, month ORDER BY month, service"
        )
        return [(str(a), str(b), int(c), int(d)) for a, b, c, d in rows]

    def billing(self, since: str, until: str, consumer: str | None = None) -> list[BillingRow]:
        """Billing rows of UTC days `since` to `until` (inclusive, YYYY-MM-DD), of one consumer or all."""
        sql = "SELECT * FROM billing WHERE day >= ? AND day <= ?"
        params: tuple[str, ...] = (since, until)
        if consumer is not None:
            sql, params = sql + " AND consumer = ?", (*params, consumer)
        rows = self._rows(sql + " ORDER BY consumer, day, grant_id, service", params)
        return [BillingRow(*row) for row in rows]
