"""Stored releases, the holds that make one question one charge, and idempotency keys.

Written once against `budget_base.Store`, for both backends. Invariants, across the processes and
replicas that share the ledger:
- one question (query key) has one stored release: the first committed wins;
- a budget account (the payer) pays for a question at most once: `release_payers` records who
  paid, in the same transaction as the charge;
- while a request computes or charges a question for a payer, it holds the question's key for
  that payer (`payer_holds`); another request of the same payer for it waits for the answer
  instead of paying again. SECURITY: a hold is never shared between payers, so no request waits
  on, or learns by timing about, another payer's request. A hold older than its expiry was left
  by a crash: the next request takes it over, and `veilgate budget stale` lists and clears such
  holds and idempotency keys.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import UTC, datetime

from gateway.state.budget_base import Store
from gateway.state.ports.budget import Holding, IdempotentReplay, StaleEntry

SCHEMA = (
    """CREATE TABLE IF NOT EXISTS aggregate_releases (
        query_key TEXT PRIMARY KEY, result TEXT NOT NULL, created TEXT NOT NULL)""",
    """CREATE TABLE IF NOT EXISTS idempotency_keys (
        consumer TEXT NOT NULL, idempotency_key TEXT NOT NULL, request_digest TEXT NOT NULL,
        state TEXT NOT NULL, body TEXT, created TEXT NOT NULL, PRIMARY KEY (consumer, idempotency_key))""",
    # Holds were once per question, shared by every payer; they only ever live for a request.
    "DROP TABLE IF EXISTS release_holds",
    """CREATE TABLE IF NOT EXISTS payer_holds (
        query_key TEXT NOT NULL, payer TEXT NOT NULL, holder TEXT NOT NULL, created TEXT NOT NULL,
        PRIMARY KEY (query_key, payer))""",
    """CREATE TABLE IF NOT EXISTS release_payers (
        query_key TEXT NOT NULL, payer TEXT NOT NULL, PRIMARY KEY (query_key, payer))""",
)
TABLES = (  # holds are not history: a request's, never copied
    ("aggregate_releases", ("query_key", "result", "created")),
    ("idempotency_keys", ("consumer", "idempotency_key", "request_digest", "state", "body", "created")),
    ("release_payers", ("query_key", "payer")),
)


def now_text() -> str:
    return datetime.now(UTC).isoformat()


class ReleaseStore(Store):
    """The rules of stored releases, holds and idempotency keys, on any backend."""

    def stored_release(self, query_key: str) -> str | None:
        with self._read() as cur:
            rows = self._rows(cur, "SELECT result FROM aggregate_releases WHERE query_key = ?", (query_key,))
        return str(rows[0][0]) if rows else None

    def paid_release(self, query_key: str, payer: str) -> str | None:
        """The stored release of a question that `payer` already paid for, else None (reads only)."""
        with self._read() as cur:
            rows = self._rows(
                cur,
                "SELECT r.result FROM aggregate_releases AS r JOIN release_payers AS p ON p.query_key = r.query_key "
                "WHERE r.query_key = ? AND p.payer = ?",
                (query_key, payer),
            )
        return str(rows[0][0]) if rows else None

    def hold_releases(self, pairs: Iterable[tuple[str, str]], holder: str, *, expired_before: str) -> Holding:
        """Hold every (key, payer) pair for `holder`, all or none, in one transaction.

        A hold taken before `expired_before` (ISO time) was left by a crash and is taken over.
        Under the holds, the stored releases and whether these payers paid for them are read: no
        other request of these payers can change that until the holds are dropped.
        """
        wanted = sorted(set(pairs))
        created = now_text()
        with self._transaction() as cur:
            busy = []
            for key, payer in wanted:
                cur.execute(
                    "DELETE FROM payer_holds WHERE query_key = ? AND payer = ? AND created < ? AND holder <> ?",
                    (key, payer, expired_before, holder),
                )
                cur.execute(
                    "INSERT INTO payer_holds VALUES (?, ?, ?, ?) ON CONFLICT (query_key, payer) DO NOTHING",
                    (key, payer, holder, created),
                )
                owners = self._rows(
                    cur, "SELECT holder FROM payer_holds WHERE query_key = ? AND payer = ?", (key, payer)
                )
                # PostgreSQL reads each statement afresh: a hold that conflicted with the INSERT
                # may be dropped by its holder before the SELECT, leaving no row. Busy either way:
                # the caller waits and asks again.
                if not owners or owners[0][0] != holder:
                    busy.append((key, payer))
            if busy:  # all or none: a batch never holds some pairs while it waits for others
                cur.execute("DELETE FROM payer_holds WHERE holder = ?", (holder,))
                return Holding(tuple(busy), {}, frozenset())
            stored: dict[str, str] = {}
            paid: set[tuple[str, str]] = set()
            for key, payer in wanted:
                for (result,) in self._rows(cur, "SELECT result FROM aggregate_releases WHERE query_key = ?", (key,)):
                    stored[key] = str(result)
                if self._rows(cur, "SELECT 1 FROM release_payers WHERE query_key = ? AND payer = ?", (key, payer)):
                    paid.add((key, payer))
        return Holding((), stored, frozenset(paid))

    def drop_holds(self, holder: str) -> None:
        """The request is over (answered, refused or failed): its keys are free again."""
        with self._transaction() as cur:
            cur.execute("DELETE FROM payer_holds WHERE holder = ?", (holder,))

    def commit_release(self, reservation: str, query_key: str, result: str, payer: str = "") -> str:
        """Spend the charge, store the release under its query key and record who paid, in one
        transaction.

        Returns the stored release: this one, or the one an identical query stored first (which
        the caller then returns instead, so one question never has two answers).
        """
        with self._transaction() as cur:
            self._settle_in(cur, reservation, spend=True)
            cur.execute(
                "INSERT INTO aggregate_releases VALUES (?, ?, ?) ON CONFLICT (query_key) DO NOTHING",
                (query_key, result, now_text()),
            )
            if payer:
                cur.execute(
                    "INSERT INTO release_payers VALUES (?, ?) ON CONFLICT (query_key, payer) DO NOTHING",
                    (query_key, payer),
                )
            ((stored,),) = self._rows(cur, "SELECT result FROM aggregate_releases WHERE query_key = ?", (query_key,))
        return str(stored)

    def claim_idempotency_key(
        self, consumer: str, key: str, request_digest: str, *, expired_before: str = ""
    ) -> IdempotentReplay | None:
        """None if this request now holds the key; else what the key already holds.

        A key still `running` since before `expired_before` (ISO time) was left by a crash: the
        same request takes it over (a different one is still told the key is used).
        """
        with self._transaction() as cur:
            inserted = cur.execute(
                "INSERT INTO idempotency_keys VALUES (?, ?, ?, 'running', NULL, ?) "
                "ON CONFLICT (consumer, idempotency_key) DO NOTHING",
                (consumer, key, request_digest, now_text()),
            ).rowcount
            if inserted == 1:
                return None
            taken = cur.execute(
                "UPDATE idempotency_keys SET created = ? WHERE consumer = ? AND idempotency_key = ? "
                "AND state = 'running' AND request_digest = ? AND created < ?",
                (now_text(), consumer, key, request_digest, expired_before),
            ).rowcount
            if taken == 1:
                return None
            ((digest, state, body),) = self._rows(
                cur,
                "SELECT request_digest, state, body FROM idempotency_keys WHERE consumer = ? AND idempotency_key = ?",
                (consumer, key),
            )
        return IdempotentReplay(str(digest), str(state), None if body is None else str(body))

    def finish_idempotency_key(self, consumer: str, key: str, body: str | None) -> None:
        """Store the answer to replay, or (body None) free the key after a refusal."""
        with self._transaction() as cur:
            if body is None:
                cur.execute(
                    "DELETE FROM idempotency_keys WHERE consumer = ? AND idempotency_key = ? AND state = 'running'",
                    (consumer, key),
                )
            else:
                cur.execute(
                    "UPDATE idempotency_keys SET state = 'done', body = ? WHERE consumer = ? AND idempotency_key = ?",
                    (body, consumer, key),
                )

    def stale_holds(self, older_than: str) -> list[StaleEntry]:
        """Holds and running idempotency keys taken before `older_than`: what crashes left."""
        with self._read() as cur:
            return _entries(
                self._rows(cur, "SELECT 'hold', query_key, created FROM payer_holds WHERE created < ?", (older_than,))
                + self._rows(
                    cur,
                    "SELECT 'idempotency-key', consumer, created FROM idempotency_keys "
                    "WHERE state = 'running' AND created < ?",
                    (older_than,),
                )
            )

    def settle_stale_holds(self, older_than: str) -> tuple[int, int]:
        """Drop the holds and free the running idempotency keys taken before `older_than`;
        returns (holds, keys). A charge their requests made is settled with the reservations
        (`settle_stale`): once data was read, it stays."""
        with self._transaction() as cur:
            holds = cur.execute("DELETE FROM payer_holds WHERE created < ?", (older_than,)).rowcount
            keys = cur.execute(
                "DELETE FROM idempotency_keys WHERE state = 'running' AND created < ?", (older_than,)
            ).rowcount
        return int(holds), int(keys)


def _entries(rows: Sequence[tuple[object, ...]]) -> list[StaleEntry]:
    return sorted((StaleEntry(str(k), str(n), str(c)) for k, n, c in rows), key=lambda e: e.created)


__all__ = ["SCHEMA", "TABLES", "ReleaseStore", "now_text"]
