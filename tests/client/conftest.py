"""A real gateway on a copy of the tiny demo installation, served over HTTP for the client's tests.

The client is tested only through HTTP, as a user runs it; the gateway's own modules are used
here to start the server and to act as its operator (rotating keys, signing a checkpoint).
"""

from __future__ import annotations

import contextlib
import shutil
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from veilgate_client import Gateway

from gateway.app import create_app
from gateway.settings import Settings
from tests.conftest import Installation, serving


@dataclass(frozen=True)
class Served:
    base: str
    settings: Settings
    credentials: dict[str, str]
    root: Path
    pins: Path

    def gateway(self, client_id: str, purpose: str | None = None, **options: object) -> Gateway:
        """A client of this gateway, pinning its keys in the test's own directory."""
        options.setdefault("pin_file", self.pins / f"{client_id}.json")
        return Gateway(self.base, client_id, self.credentials[client_id], purpose=purpose, **options)  # type: ignore[arg-type]

    def active_enterprise(self, index: int = 0) -> dict[str, str]:
        """An active enterprise of the demo data (the first row, with the canary, left out)."""
        table = pq.read_table(self.root / "source" / "enterprise_registry.parquet")
        rows = [r for r in table.slice(1, 200).to_pylist() if r["status"] == "active"]
        return {"credit_code": rows[index]["credit_code"], "legal_representative": rows[index]["legal_representative"]}


def _copy(session_installation: Installation, root: Path) -> Settings:
    shutil.copytree(
        session_installation.root, root, ignore=lambda d, _names: ["ledger", "policy"] if d.endswith("state") else []
    )
    return session_installation.settings.model_copy(
        # state looked at on every request: an operator's key rotation is in force at the next request
        update={"state_dir": root / "state", "checkpoint_interval_seconds": 1, "state_recheck_seconds": 0}
    )


@pytest.fixture(scope="module")
def served(session_installation: Installation, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    """One gateway for a test module (checkpoints every second), on its own copy of the demo."""
    root = tmp_path_factory.mktemp("client-demo")
    settings = _copy(session_installation, root / "demo")
    with serving(create_app(settings)) as base:
        yield Served(base, settings, session_installation.credentials, root / "demo", root)


@pytest.fixture
def fresh(session_installation: Installation, tmp_path: Path) -> Iterator[Callable[[], Served]]:
    """For a test that changes what it serves (keys, budgets): its own gateway on its own copy."""
    with contextlib.ExitStack() as stack:
        made: list[str] = []

        def start() -> Served:
            root = tmp_path / f"demo-{len(made)}"
            settings = _copy(session_installation, root)
            made.append(stack.enter_context(serving(create_app(settings))))
            return Served(made[-1], settings, session_installation.credentials, root, tmp_path)

        yield start
