"""The policy store in files under `state/policy/`, for the processes of one machine:
`versions/<version>.json` (written once) and `state.json`. Changes take an exclusive lock shared
by all processes; every process re-reads `state.json` when its stamp changes (looked at again at
most once per recheck interval), so a change is in force everywhere on the machine within it.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from gateway.atomic_files import CachedStamp, Stamp, locked_json, write_atomic
from gateway.domain.policy import PolicyBundle
from gateway.errors import NotFound
from gateway.state.policy import EMPTY, PolicyRules, pretty

__all__ = ["FilePolicyStore"]


class FilePolicyStore(PolicyRules):
    def __init__(self, directory: Path, *, recheck_seconds: float = 0.0) -> None:
        """`recheck_seconds`: how long `stamp` may answer from memory before it looks at the
        file for another process's change (0: on every call); a change made here is seen at once."""
        self._dir = directory
        self._state = directory / "state.json"
        self._stamp = CachedStamp(self._state, recheck_seconds)
        super().__init__(read=self._read_state, changing=self._changing_state, keep=self._keep, load=self.load)

    def stamp(self) -> Stamp | None:
        return self._stamp.get()

    def _read_state(self) -> dict[str, Any]:
        if not self._state.exists():
            return json.loads(json.dumps(EMPTY))  # type: ignore[no-any-return]
        loaded: dict[str, Any] = json.loads(self._state.read_text(encoding="utf-8"))
        return loaded

    @contextmanager
    def _changing_state(self) -> Iterator[dict[str, Any]]:
        try:
            with locked_json(self._state, EMPTY) as data:
                yield data
        finally:
            self._stamp.forget()

    def load(self, version: str) -> PolicyBundle:
        path = self._dir / "versions" / f"{version}.json"
        if not path.is_file():
            raise NotFound(f"no stored policy version {version}")
        return PolicyBundle.model_validate_json(path.read_bytes())

    def _keep(self, bundle: PolicyBundle) -> str:
        path = self._dir / "versions" / f"{bundle.version}.json"
        if not path.exists():
            write_atomic(path, pretty(bundle).encode())
        return bundle.version

    def close(self) -> None:
        """Nothing is held open between calls."""
