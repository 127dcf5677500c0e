"""Where a hot-path request's time goes, step by step, inside the running app.

`Steps.installed()` wraps the named functions of the hot paths (authentication, the body,
validation, the lookup, keyed hashes, the release, the signature, ...) with a timer for as long
as it is open: each call adds its wall time to its step. The synchronous steps run on the event
loop without yielding, so their wall time is their CPU; authentication is awaited and counted
whole (it does not wait once the token is cached). The steps nest (`prepare` holds validation
and the keyed hashes), so they do not add up to the request; what no step names is the
middleware, the request and response objects, and the ledger's and the log's Python.

Sixteen requests interleaved on one loop keep little of a step's code and data in the caches,
so a step costs more here than alone in a loop: that is the figure that counts. The timers
cost about a microsecond a call, which the CPU figures of a run with `--steps` include.

Used by `request_cpu.py --steps`.
"""

from __future__ import annotations

import collections
import contextlib
import functools
import importlib
import inspect
import time
from collections.abc import Callable, Iterator
from typing import Any

STEPS: tuple[tuple[str, str, str], ...] = (
    # (module, attribute: a function or Class.method, step name), each nested step after the
    # step that calls it (the table indents it); a name shared by both routes is one step
    ("gateway.api.middleware", "utc_now", "arrival time"),
    ("gateway.api.hot_paths", "principal", "authentication"),
    ("gateway.api.hot_paths", "decode", "body (msgspec)"),
    ("gateway.api.hot_paths", "as_sent", "body as sent (request digest)"),
    ("gateway.api.hot_paths", "allowed_event", "audit event (pydantic)"),
    ("gateway.services.verification", "answers_in_memory", "in-memory check"),
    ("gateway.services.scoring", "scores_in_memory", "in-memory check"),
    ("gateway.services.verification", "prepare", "prepare"),
    ("gateway.services.scoring", "prepare_scoring", "prepare"),
    ("gateway.services.verification", "_validate", "  validation"),
    ("gateway.services.verification", "authorize", "  authorization"),
    ("gateway.services.scoring", "authorize", "  authorization"),
    ("gateway.services.verification", "_answer", "  lookup and answer"),
    ("gateway.services.scoring", "_score_one", "  lookup and score"),
    ("gateway.state.audit", "AuditLogRules.pseudonym", "  keyed hashes"),
    ("gateway.services.verification", "canonical_text", "  canonical texts"),
    ("gateway.services.scoring", "canonical_text", "  canonical texts"),
    ("gateway.services.verification", "fee_per_claim", "  fee"),
    ("gateway.services.scoring", "fee_per_claim", "  fee"),
    ("gateway.services.verification", "pending_release", "pending release"),
    ("gateway.services.scoring", "pending_scoring", "pending release"),
    ("gateway.services.release", "digest", "  digests"),
    ("gateway.services.release", "PendingRelease.complete", "receipt"),
    ("gateway.services.release", "sign_receipt", "  signature (Ed25519, JWS)"),
    ("gateway.services.release", "canonical", "  canonical bytes"),
    ("gateway.api.hot_paths", "rate_limit_headers", "rate-limit headers"),
    ("gateway.api.hot_paths", "released_response", "response"),
)


class Steps:
    """Time and calls per step, while installed."""

    def __init__(self) -> None:
        self.nanoseconds: collections.Counter[str] = collections.Counter()
        self.calls: collections.Counter[str] = collections.Counter()

    def clear(self) -> None:
        self.nanoseconds.clear()
        self.calls.clear()

    def per_request(self, requests: int) -> dict[str, tuple[float, float]]:
        """Each step that ran: (µs per request, calls per request), in `STEPS` order."""
        names = dict.fromkeys(name for _m, _a, name in STEPS)
        return {
            name: (self.nanoseconds[name] / requests / 1000, self.calls[name] / requests)
            for name in names
            if self.calls[name]
        }

    @contextlib.contextmanager
    def installed(self) -> Iterator[None]:
        undo: list[Callable[[], None]] = []
        try:
            for module_name, attribute, name in STEPS:
                owner: Any = importlib.import_module(module_name)
                *path, leaf = attribute.split(".")
                for part in path:
                    owner = getattr(owner, part)
                original = getattr(owner, leaf)
                setattr(owner, leaf, self._timed(original, name))
                undo.append(functools.partial(setattr, owner, leaf, original))
            yield
        finally:
            for step in reversed(undo):
                step()

    def _timed(self, function: Callable[..., Any], name: str) -> Callable[..., Any]:
        clock, spent, calls = time.perf_counter_ns, self.nanoseconds, self.calls
        if inspect.iscoroutinefunction(function):

            @functools.wraps(function)
            async def timed_async(*args: Any, **kwargs: Any) -> Any:
                started = clock()
                try:
                    return await function(*args, **kwargs)
                finally:
                    spent[name] += clock() - started
                    calls[name] += 1

            return timed_async

        @functools.wraps(function)
        def timed(*args: Any, **kwargs: Any) -> Any:
            started = clock()
            try:
                return function(*args, **kwargs)
            finally:
                spent[name] += clock() - started
                calls[name] += 1

        return timed


def table(route: str, steps: dict[str, tuple[float, float]]) -> str:
    lines = [f"{route}: µs per request (calls per request), nested steps indented"]
    lines += [f"  {name:34} {us:7.1f}  ({calls:.2f})" for name, (us, calls) in steps.items()]
    return "\n".join(lines)
