"""The emergency stops' port: which consumers, organisations, datasets and services are frozen.

A freeze made by any process, or by `veilgate freeze` while the API is down, is in force on the
next request of every process; every change is kept in the history.
"""

from __future__ import annotations

from typing import Any, Protocol

from gateway.domain.policy import Freeze, FreezeKind

Freezes = dict[tuple[FreezeKind, str], Freeze]


class FreezeStore(Protocol):
    def active(self) -> Freezes:
        """What is frozen now: read on every request, so cheap when nothing changed."""
        ...

    def history(self) -> list[dict[str, Any]]: ...

    def freeze(self, kind: FreezeKind, name: str, *, by: str, reason: str) -> Freeze:
        """Conflict if it is frozen already."""
        ...

    def unfreeze(self, kind: FreezeKind, name: str, *, by: str, reason: str) -> Freeze:
        """NotFound if it is not frozen."""
        ...

    def close(self) -> None: ...
