"""`make demo` prints requests; each one, pasted into a shell, works against a live server."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterator

import pytest

from gateway.app import create_app
from gateway.services import demo_setup
from tests.conftest import REPO, Installation, serving


@pytest.fixture
def live_server(session_installation: Installation) -> Iterator[str]:
    with serving(create_app(session_installation.settings)) as base:
        yield base


def _commands(tour: str) -> list[str]:
    """Shell commands from the tour: curl lines, with backslash continuations joined."""
    commands: list[str] = []
    pending = ""
    for raw in tour.splitlines():
        line = raw.strip()
        if pending:
            pending += " " + line.rstrip("\\").strip()
            if not line.endswith("\\"):
                commands.append(pending)
                pending = ""
            continue
        if line.startswith(("curl ", "TOKEN=")):
            if line.endswith("\\"):
                pending = line.rstrip("\\").strip()
            else:
                commands.append(line)
        elif line.startswith("Health: "):
            commands += [part.strip() for part in line.removeprefix("Health: ").split(";")]
    return commands


@pytest.mark.skipif(shutil.which("curl") is None or shutil.which("bash") is None, reason="needs curl and bash")
def test_every_printed_request_works(session_installation: Installation, live_server: str) -> None:
    result = demo_setup.DemoSetup(
        session_installation.root / "veilgate.toml",
        session_installation.settings,
        session_installation.credentials,
        session_installation.settings.state_dir / "demo-credentials.json",
    )
    commands = _commands(demo_setup.tour(result, live_server))
    assert len(commands) >= 8
    script = "set -euo pipefail\n" + "\n".join(
        f"{c.replace('curl -s', 'curl -sf', 1)} > /dev/null && echo ok" if c.startswith("curl") else c for c in commands
    )
    completed = subprocess.run(
        ["bash", "-c", script], capture_output=True, text=True, timeout=60, cwd=REPO, check=False
    )
    assert completed.returncode == 0, completed.stderr
    assert completed.stdout.count("ok") == sum(c.startswith("curl") for c in commands)
