"""Privacy budget spent, by consumer, grant, service, dataset and UTC day: for a consumer's usage
statement and for public disclosure.

Written once against `budget_base.Store`, for both backends. A reservation carries its label (who, which
grant, which service, which dataset) from the moment it is made; its spend is added to the day's
row in the same transaction that spends it, so a crash can lose neither (a reservation a crash
left is labelled, and `settle_stale` adds it when it commits it).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

from gateway.state.budget_base import Cursor, Store
from gateway.state.ports.budget import SpendingRow

SCHEMA = (
    """CREATE TABLE IF NOT EXISTS budget_labels (
        reservation_id TEXT PRIMARY KEY, consumer TEXT NOT NULL, grant_id TEXT NOT NULL,
        service TEXT NOT NULL, dataset TEXT NOT NULL)""",
    """CREATE TABLE IF NOT EXISTS budget_spending (
        consumer TEXT NOT NULL, grant_id TEXT NOT NULL, service TEXT NOT NULL, dataset TEXT NOT NULL,
        day TEXT NOT NULL, releases BIGINT NOT NULL, micro_epsilon BIGINT NOT NULL, nano_delta BIGINT NOT NULL,
        PRIMARY KEY (consumer, grant_id, service, dataset, day))""",
)
TABLES = (
    ("budget_labels", ("reservation_id", "consumer", "grant_id", "service", "dataset")),
    (
        "budget_spending",
        ("consumer", "grant_id", "service", "dataset", "day", "releases", "micro_epsilon", "nano_delta"),
    ),
)


@dataclass(frozen=True, slots=True)
class Label:
    consumer: str
    grant: str
    service: str
    dataset: str


class SpendingStore(Store):
    """Labels on reservations, and what their spends add up to."""

    def _label(self, cur: Cursor, reservation: str, label: Label) -> None:
        cur.execute(
            "INSERT INTO budget_labels VALUES (?, ?, ?, ?, ?)",
            (reservation, label.consumer, label.grant, label.service, label.dataset),
        )

    def _spent(self, cur: Cursor, reservation: str, micro_epsilon: int, nano_delta: int) -> None:
        """Add a spend to its day's row (once: the label goes with it)."""
        rows = self._rows(
            cur,
            "SELECT consumer, grant_id, service, dataset FROM budget_labels WHERE reservation_id = ?",
            (reservation,),
        )
        if not rows:
            return  # reserved before reservations were labelled
        day = datetime.now(UTC).date().isoformat()
        cur.execute(
            "INSERT INTO budget_spending VALUES (?, ?, ?, ?, ?, 1, ?, ?) "
            "ON CONFLICT (consumer, grant_id, service, dataset, day) DO UPDATE SET "
            "releases = budget_spending.releases + 1, "
            "micro_epsilon = budget_spending.micro_epsilon + excluded.micro_epsilon, "
            "nano_delta = budget_spending.nano_delta + excluded.nano_delta",
            (*rows[0], day, micro_epsilon, nano_delta),
        )
        self._unlabel(cur, reservation)

    def _unlabel(self, cur: Cursor, reservation: str) -> None:
        cur.execute("DELETE FROM budget_labels WHERE reservation_id = ?", (reservation,))

    def spending(self, since: str, until: str, consumer: str | None = None) -> list[SpendingRow]:
        """Rows of UTC days `since` to `until` (inclusive, YYYY-MM-DD), of one consumer or all."""
        sql = "SELECT * FROM budget_spending WHERE day >= ? AND day <= ?"
        params: tuple[str, ...] = (since, until)
        if consumer is not None:
            sql, params = sql + " AND consumer = ?", (*params, consumer)
        with self._read() as cur:
            rows = self._rows(cur, sql + " ORDER BY consumer, day, grant_id, service, dataset", params)
        return [
            SpendingRow(str(a), str(b), str(c), str(d), str(e), int(f), int(g), int(h))
            for a, b, c, d, e, f, g, h in rows
        ]

    def monthly_spending(self) -> list[tuple[str, str, str, int, int, int]]:
        """Per service, dataset and month (YYYY-MM): releases charged, micro-epsilon, nano-delta."""
        with self._read() as cur:
            rows = self._rows(
                cur,
                "SELECT service, dataset, substr(day, 1, 7) AS month, SUM(releases), SUM(micro_epsilon), "
                "SUM(nano_delta) FROM budget_spending GROUP BY service, dataset, month "
                "ORDER BY month, service, dataset",
                (),
            )
        return [(str(a), str(b), str(c), int(d), int(e), int(f)) for a, b, c, d, e, f in rows]
