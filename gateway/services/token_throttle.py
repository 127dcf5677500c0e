"""Limits on `POST /v1/token`, checked before the secret is hashed.

Checking a client secret costs a scrypt hash (16 MiB, tens of milliseconds of CPU), for a wrong
or unknown client id as much as for a right one, so that timing tells nothing. Without a limit
anyone could keep every core busy. Three token buckets are checked before the hash runs: one per
client id (guessing one account's secret), one per source address (one machine trying many
ids), and one for the whole process (many machines). An attempt is counted only when all three
admit it, so a refusal by one bucket does not drain the others.

The buckets live in the process: the resource they protect is this process's CPU. Memory is
bounded: at most `MAX_TRACKED` ids and addresses each, the least recently seen forgotten first
(a forgotten key starts full, which the address and process buckets still bound).
"""

from __future__ import annotations

import math
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

from gateway.errors import RateLimited

MAX_TRACKED = 10_000


@dataclass(slots=True)
class _Bucket:
    tokens: float
    at: float


@dataclass(frozen=True, slots=True)
class Rate:
    """`per_minute` attempts on average, at most `per_minute` at once after a quiet minute."""

    per_minute: int

    @property
    def per_second(self) -> float:
        return self.per_minute / 60.0


class _Buckets:
    def __init__(self, rate: Rate) -> None:
        self.rate = rate
        self._buckets: OrderedDict[str, _Bucket] = OrderedDict()

    def _refilled(self, key: str, now: float) -> _Bucket:
        bucket = self._buckets.get(key)
        if bucket is None:
            bucket = _Bucket(float(self.rate.per_minute), now)
            self._buckets[key] = bucket
            if len(self._buckets) > MAX_TRACKED:
                self._buckets.popitem(last=False)
        else:
            self._buckets.move_to_end(key)
            elapsed = max(0.0, now - bucket.at)
            bucket.tokens = min(float(self.rate.per_minute), bucket.tokens + elapsed * self.rate.per_second)
            bucket.at = now
        return bucket

    def wait(self, key: str, now: float) -> float:
        """Seconds until `key` may try again; 0 if it may now."""
        bucket = self._refilled(key, now)
        return 0.0 if bucket.tokens >= 1.0 else (1.0 - bucket.tokens) / self.rate.per_second

    def take(self, key: str) -> None:
        self._buckets[key].tokens -= 1.0


class TokenThrottle:
    """Admits or refuses one token request, by client id, source address and in all."""

    def __init__(
        self,
        *,
        per_client: Rate,
        per_address: Rate,
        overall: Rate,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._limits = (
            ("client_id", _Buckets(per_client)),
            ("address", _Buckets(per_address)),
            ("overall", _Buckets(overall)),
        )
        self._clock = clock
        self._lock = threading.Lock()

    def admit(self, client_id: str, address: str) -> None:
        """Count one attempt, or raise `RateLimited` (429, Retry-After) and count nothing."""
        keys = {"client_id": client_id, "address": address, "overall": ""}
        with self._lock:
            now = self._clock()
            waits = [(buckets.wait(keys[name], now), name) for name, buckets in self._limits]
            longest, which = max(waits)
            if longest > 0:
                # SECURITY: names the limit, not the client id or address it counted.
                raise RateLimited(
                    f"too many token requests ({which} limit); retry after the Retry-After seconds",
                    retry_after_seconds=math.ceil(longest),
                )
            for name, buckets in self._limits:
                buckets.take(keys[name])
