"""One writer thread per store that commits whatever is waiting in one transaction.

Below the leaves (the audit log and the ledger use it). Callers `put` items; the writer takes
the first, then everything else already queued (up to `limit`), and hands the batch to
`commit` with its own connection. Under load many callers share one commit and one fsync;
alone, a caller waits for exactly one. `close` lets what is queued commit, then stops.
"""

from __future__ import annotations

import queue
import sqlite3
import threading
from collections.abc import Callable
from typing import Generic, TypeVar

Item = TypeVar("Item")


class GroupCommitter(Generic[Item]):
    def __init__(
        self,
        name: str,
        connect: Callable[[], sqlite3.Connection],
        commit: Callable[[sqlite3.Connection, list[Item]], None],
        *,
        limit: int,
    ) -> None:
        self._name = name
        self._connect = connect
        self._commit = commit
        self._limit = limit
        self._queue: queue.SimpleQueue[Item | None] = queue.SimpleQueue()
        self._writer: threading.Thread | None = None
        self._lock = threading.Lock()

    def put(self, item: Item) -> None:
        """Queue `item`, starting the writer on first use."""
        with self._lock:
            if self._writer is None:
                self._writer = threading.Thread(target=self._loop, name=self._name, daemon=True)
                self._writer.start()
        self._queue.put(item)

    def close(self) -> None:
        with self._lock:
            writer, self._writer = self._writer, None
        if writer is not None:
            self._queue.put(None)
            writer.join()

    def _loop(self) -> None:
        conn = self._connect()
        try:
            while True:
                first = self._queue.get()
                if first is None:
                    return
                batch = [first]
                while len(batch) < self._limit:
                    try:
                        item = self._queue.get_nowait()
                    except queue.Empty:
                        break
                    if item is None:
                        self._queue.put(None)  # stop after this batch
                        break
                    batch.append(item)
                self._commit(conn, batch)
        finally:
            conn.close()
