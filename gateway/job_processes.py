"""The processes of a job, found by its uid: every job runs as a uid of its own (from the
configured range), so whatever it forks, detaches or hides in a new session is still found,
summed and killed here, by reading /proc (world-readable `status` files; no ptrace needed).
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

PROC = Path("/proc")


@dataclass(frozen=True, slots=True)
class Process:
    pid: int
    uid: int
    memory_kib: int
    """Resident anonymous and shared memory (RssAnon + RssShmem): what the job itself allocated."""
    zombie: bool


def processes() -> list[Process]:
    """Every process of the machine (as this process's PID namespace sees it)."""
    found = []
    for entry in PROC.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            text = (entry / "status").read_text()
        except OSError:  # it ended meanwhile
            continue
        fields = dict(line.split(":", 1) for line in text.splitlines() if ":" in line)
        memory = sum(int(fields.get(k, "0 kB").split()[0]) for k in ("RssAnon", "RssShmem"))
        found.append(
            Process(
                pid=int(entry.name),
                uid=int(fields["Uid"].split()[0]),
                memory_kib=memory,
                zombie=fields.get("State", "").strip().startswith("Z"),
            )
        )
    return found


def of_uids(uids: Iterable[int]) -> list[Process]:
    wanted = set(uids)
    return [p for p in processes() if p.uid in wanted and not p.zombie]


def memory_mib(uid: int) -> float:
    """The memory of all the live processes of `uid`, summed."""
    return sum(p.memory_kib for p in of_uids([uid])) / 1024


def kill_all(uids: Iterable[int], *, rounds: int = 100) -> int:
    """SIGKILL every process of these uids until none is left (a fork between two passes is
    caught by the next one). Returns how many were killed; raises if some survive."""
    wanted = set(uids)
    killed = 0
    for _ in range(rounds):
        left = of_uids(wanted)
        if not left:
            return killed
        for process in left:
            try:
                os.kill(process.pid, signal.SIGKILL)
                killed += 1
            except ProcessLookupError:
                pass
        time.sleep(0.02)
    raise RuntimeError(f"processes of job uids survive SIGKILL: {[p.pid for p in of_uids(wanted)][:10]}")
