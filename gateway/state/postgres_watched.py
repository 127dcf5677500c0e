"""Values read from PostgreSQL and kept in memory (`Watched`), renewed on NOTIFY by the one
listener connection of a process."""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import threading
import time
from collections.abc import Callable
from typing import Any, Generic, TypeVar

from gateway.state.postgres_connections import connect

Value = TypeVar("Value")
log = logging.getLogger("veilgate.postgres")

_sharing = threading.Lock()
"""Guards the listeners, and which values they serve."""


_RELISTEN_SECONDS = 1.0
"""After a failure, how long the listener waits before it connects again."""
_WAKE_SECONDS = 0.05
"""How often the listener looks for new values to watch, and whether it should stop."""
HEARTBEAT_SECONDS = 10.0
"""How often the listener proves its connection (a query must come back) and reads every value
again: a notice lost on a connection that died without a word (half-open: no error, no notice)
is made up for within this, and the TCP settings (`KEEPALIVES`) end such a connection."""


class Watched(Generic[Value]):
    """A value read from PostgreSQL and kept in memory, renewed whenever a change NOTIFYs
    `channel`: what every request consults (freezes, client accounts) at no database cost.

    While the process's listener is not connected, `get` reads the value on every call instead
    (a change is never missed, only slower to see), and fails while it cannot read it. A change
    made through this process calls `renew`, so it is in force here on the next request, notice
    or not.
    """

    def __init__(
        self,
        dsn: str,
        schema: str,
        *,
        channel: str,
        load: Callable[[], Value],
        listen: bool = True,
    ) -> None:
        """`listen=False`: no copy, `get` always reads (a CLI command, say)."""
        self.channel = channel
        self._load = load
        self._value: Value | None = None
        self._live = False
        """Whether the listener is connected and listening here: only then is a copy kept."""
        self._reload_lock = threading.Lock()
        self._closed = False
        self.listening = threading.Event()
        self._listener = _Listener.join(dsn, schema, self) if listen else None
        if listen:
            self.listening.wait(timeout=5)  # usually at once; until then, `get` reads

    def get(self) -> Value:
        value = self._value
        return value if value is not None else self._load()

    def renew(self) -> None:
        """After a change made through this process (already committed): a failed read drops
        the copy, so that `get` reads until the next notice."""
        try:
            self._reload()
        except Exception:
            with self._reload_lock:
                self._value = None
            log.warning("%s: renewing after a change failed; reading on every request", self.channel, exc_info=True)

    @property
    def live(self) -> bool:
        return self._live

    def _reload(self) -> None:
        """Read and replace as one step, and only while listening: a read that began before a
        change cannot replace one that saw it, nor a copy outlive its listener."""
        with self._reload_lock:
            if self._live:
                self._value = self._load()

    def set_live(self, live: bool) -> None:
        """For the listener: listening now (then `_reload`), or not (`get` reads)."""
        with self._reload_lock:
            self._live = live and not self._closed  # a notice that races `close` reads nothing
            self._value = None

    def close(self) -> None:
        with self._reload_lock:
            self._closed = True
        self.set_live(False)
        if self._listener is not None:
            self._listener.leave(self)


_listeners: dict[tuple[int, str, str], _Listener] = {}


class _Listener:
    """The one LISTEN connection of a process (`veilgate-listener`), for every `Watched` value:
    one connection and one thread, not one each. On a failure, every value it serves is read
    on each use until it listens again."""

    def __init__(self, dsn: str, schema: str) -> None:
        self._key = (os.getpid(), dsn, schema)
        self._connect = functools.partial(
            connect, dsn, schema, name="veilgate-listener", unavailable="change notices cannot be received"
        )
        self._watched: list[Watched[Any]] = []
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._listen, name="veilgate-listener", daemon=True)

    @classmethod
    def join(cls, dsn: str, schema: str, watched: Watched[Any]) -> _Listener:
        with _sharing:
            listener = _listeners.get((os.getpid(), dsn, schema))
            if listener is None:
                listener = _listeners[(os.getpid(), dsn, schema)] = cls(dsn, schema)
                listener._thread.start()
            listener._watched.append(watched)
        return listener

    def leave(self, watched: Watched[Any]) -> None:
        """The thread stops with the last value it serves."""
        with _sharing:
            self._watched.remove(watched)
            if self._watched:
                return
            del _listeners[self._key]
        self._stopping.set()
        self._thread.join(timeout=_RELISTEN_SECONDS + 1)

    def _serving(self) -> list[Watched[Any]]:
        with _sharing:
            return list(self._watched)

    def _listen(self) -> None:
        """LISTEN on each value's channel, load it, then reload on every notice; on a failure,
        every value reads on each use until this connects and listens again."""
        while not self._stopping.is_set():
            conn = None
            try:
                conn = self._connect()
                channels: set[str] = set()
                beat = time.monotonic()
                while not self._stopping.is_set():
                    serving = self._serving()
                    for watched in serving:
                        if watched.channel not in channels:
                            conn.execute(f"LISTEN {watched.channel}")  # a fixed name of a store, not input
                            channels.add(watched.channel)
                        if not watched.live:  # new here, or after a failure
                            watched.set_live(True)
                            watched._reload()  # after LISTEN: no change falls between the two
                            watched.listening.set()
                    for notice in conn.notifies(timeout=_WAKE_SECONDS, stop_after=1):
                        for watched in serving:
                            if watched.channel == notice.channel:
                                watched._reload()
                    if time.monotonic() - beat >= HEARTBEAT_SECONDS:
                        conn.execute("SELECT 1")  # raises on a dead connection: read on each use, reconnect
                        for watched in serving:  # whatever a lost notice would have said
                            watched._reload()
                        beat = time.monotonic()
            except Exception:  # any failure: read on every use, and try again
                for watched in self._serving():
                    watched.set_live(False)
                log.warning("listening for changes failed; reading on every request until it works", exc_info=True)
                self._stopping.wait(_RELISTEN_SECONDS)
            finally:
                if conn is not None:
                    with contextlib.suppress(Exception):
                        conn.close()
