"""The gateway's background work, in one place: what runs beside the requests of a serving
process, started and stopped by the app's lifespan.

- at start: a checkpoint (it covers what the last run logged after its last one, a crash),
  then the warm-up (lookup indexes built, the long-lived heap frozen out of collections);
- every `checkpoint_interval_seconds`: a signed checkpoint of the audit log, if it grew;
- on SIGHUP: the policy bundle reloaded from disk, proposed like `veilgate policy reload`;
- at stop: a last checkpoint covering the final requests.

Jobs are not run here: `veilgate worker` runs them, and this process needs no privilege
(docs/operations.md). A failure in any task is logged and retried; serving goes on.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import signal
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from gateway.errors import VeilgateError
from gateway.services import aggregate, policy_admin, scoring, verification
from gateway.services.audit_trail import SIGNED_HEAD_FILE, LogForked, make_checkpoint
from gateway.services.runtime import Runtime

__all__ = ["Housekeeping"]

log = logging.getLogger("veilgate")
OPEN_VERSIONS_SECONDS = 5.0
"""How soon a version registered while the process runs is opened (its column facts read) if no
request opened it first."""


class Housekeeping:
    """The background tasks of one serving process over its runtime."""

    def __init__(self, rt: Runtime) -> None:
        self.rt = rt
        self.settings = rt.settings

    def checkpoint(self) -> None:
        kept = self.settings.audit_dir / SIGNED_HEAD_FILE
        try:
            made = make_checkpoint(self.rt.audit, self.rt.receipt_keys, issuer=self.settings.issuer, kept=kept)
        except LogForked as forked:  # every administrator is told, not only the log
            self.rt.ledger.raise_alert("audit-log-forked", "audit log", forked.detail)
            raise
        if made is not None:
            log.info("audit checkpoint signed: %d leaves", made.size)

    def reload_policy(self) -> None:
        """SIGHUP: propose the bundle on disk; the last good bundle stays in force if it fails."""
        try:
            change = policy_admin.reload_from_disk(self.rt, by="sighup")
            if change.active is None and change.proposal is not None:
                log.info("policy reload of %s proposed as %s: in force once approved",
                         self.settings.policy_dir, change.proposal["id"])  # fmt: skip
            else:
                log.info("policy reloaded from %s: version %s in force", self.settings.policy_dir, change.active)
        except VeilgateError as exc:
            log.error("policy reload failed, the bundle in force is unchanged: %s", exc.detail)
            self.rt.ledger.raise_alert("policy_reload_failed", str(self.settings.policy_dir), exc.detail)

    def warm_up(self) -> None:
        try:
            services = verification.warm_up(self.rt) + scoring.warm_up(self.rt)
            log.info("lookup indexes built for %d services", services)
        except VeilgateError as exc:  # a dataset that cannot be read: /readyz and its requests say so
            log.warning("warm-up stopped: %s", exc.detail)
        self.open_versions()
        # What is alive now (the lookup indexes, the bundle, the libraries) lives as long as the
        # process: frozen, it is left out of every later collection, and full collections pause
        # serving for a few milliseconds instead of 80 (measured under load).
        gc.collect()
        gc.freeze()

    def open_versions(self) -> None:
        """Open the served versions not yet open (column facts read before any request uses one)."""
        failed = aggregate.warm_up(self.rt)
        if failed:
            log.warning("dataset versions that could not be opened: %s", ", ".join(sorted(failed)))

    async def _open_versions_every_interval(self) -> None:
        while True:
            await asyncio.sleep(OPEN_VERSIONS_SECONDS)
            try:
                await asyncio.to_thread(self.open_versions)
            except Exception:  # the next round tries again; a request opens what it needs meanwhile
                log.exception("opening dataset versions failed")

    async def _checkpoint_every_interval(self) -> None:
        while True:
            await asyncio.sleep(self.settings.checkpoint_interval_seconds)
            try:
                await asyncio.to_thread(self.checkpoint)
            except Exception:  # a failed checkpoint is retried next interval; serving goes on
                log.exception("audit checkpoint failed")

    @asynccontextmanager
    async def running(self) -> AsyncIterator[None]:
        """Start everything, yield while the app serves, stop everything (a last checkpoint)."""
        loop = asyncio.get_running_loop()
        with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):  # not in the main thread
            loop.add_signal_handler(signal.SIGHUP, lambda: loop.run_in_executor(None, self.reload_policy))
        with contextlib.suppress(Exception):
            await asyncio.to_thread(self.checkpoint)
        await asyncio.to_thread(self.warm_up)
        tasks = [asyncio.create_task(self._checkpoint_every_interval()),
                 asyncio.create_task(self._open_versions_every_interval())]  # fmt: skip
        try:
            yield
        finally:
            for task in tasks:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            with contextlib.suppress(Exception):  # a last head covers the final requests
                await asyncio.to_thread(self.checkpoint)
