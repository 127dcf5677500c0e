"""Hostile jobs: each attempt is stopped or its output withheld, and nothing of the data or the
keys leaves. The researcher's view of every job is searched for raw values and key material."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest

from tests.conftest import CANARY, REPO
from tests.jobs.conftest import Jobs, needs_isolation

pytestmark = needs_isolation


def _tight(bundle: dict[str, Any]) -> None:
    limits = {"cpu_seconds": 4, "wall_seconds": 5, "memory_mb": 1024, "file_mb": 8, "processes": 16, "scratch_mb": 16}
    bundle["job_services"]["enterprise-tables"]["limits"] = limits


def _secrets(jobs: Jobs) -> list[str]:
    """Strings that must never reach a researcher: raw values and key material."""
    state = jobs.installation.settings.state_dir
    found = [CANARY]
    registry = pq.read_table(jobs.installation.source / "enterprise_registry.parquet").to_pylist()[:20]
    found += [row["credit_code"] for row in registry] + [row["legal_representative"] for row in registry[1:]]
    for pem in (state / "keys").rglob("*.pem"):
        found += [line for line in pem.read_text().splitlines() if line and not line.startswith("-----")]
    return found


HOSTILE = {
    "socket": "import socket\nsocket.create_connection(('127.0.0.1', 5432), timeout=2)\n",
    "keys": "import glob\nfor p in glob.glob('{state}/keys/**/*.pem', recursive=True): print(open(p).read())\n"
    "print(open('{state}/keys/receipt/keyring.json').read())\n",
    "state": "import os\nprint(os.listdir('{state}'))\n",
    "write": "open('{state}/../escaped.txt', 'w').write('x')\n",
    "write_tmp": "open('/var/tmp/escaped.txt', 'w').write('x')\n",
    "write_inputs": "open('/mnt/inputs/job/main.py', 'a').write('x')\n",
    "write_repo": "open('{repo}/escaped.txt', 'w').write('x')\n",
    "fill_scratch": "for i in range(64): open(f'/mnt/scratch/{i}', 'wb').write(bytes(4 * 1024 * 1024))\n",
    "fill_disk_beside_outputs": "open('/mnt/out/more.bin', 'wb').write(bytes(1024))\n",
    "fork": "import os, time\nwhile True:\n    if os.fork() == 0:\n        time.sleep(60)\n        os._exit(0)\n",
    "memory": "blocks = []\nwhile True: blocks.append(bytearray(256 * 1024 * 1024))\n",
    "forever": "while True: pass\n",
    "sleep": "import time\ntime.sleep(3600)\n",
}


@pytest.mark.parametrize("attack", list(HOSTILE))
def test_a_hostile_job_is_stopped(jobs_gateway: Callable[..., Jobs], attack: str) -> None:
    jobs = jobs_gateway(_tight)
    state = jobs.installation.settings.state_dir
    code = HOSTILE[attack].replace("{state}", str(state)).replace("{repo}", str(REPO))
    outcome = jobs.run(code)
    assert outcome["status"] == "failed", outcome
    assert outcome["result"]["result"]["outputs"]["counts"]["status"] == "withheld"
    assert outcome["result"]["result"]["completed"] is False
    text = str(outcome)
    assert [s[:12] for s in _secrets(jobs) if s in text] == []
    assert not (state.parent / "escaped.txt").exists() and not (REPO / "escaped.txt").exists()
    assert not Path("/var/tmp/escaped.txt").exists()
    stderr = jobs.admin_view(outcome["id"])["stderr"]
    expected = {
        "socket": "Operation not permitted",  # no socket at all (seccomp)
        "keys": "No such file or directory",
        "state": "No such file or directory",
        "write": "No such file or directory",
        "write_tmp": "No such file or directory",  # no /var/tmp in the jail
        "write_inputs": ("Permission denied", "Read-only file system"),  # owned by root, and read-only
        "write_repo": "Read-only file system",  # the sandbox package is there, read-only
        "memory": "MemoryError",
        "fill_scratch": "No space left on device",  # 16 MiB of memory, never the host's disk
        "fill_disk_beside_outputs": "Read-only file system",  # the outputs file only, bounded by file_mb
    }.get(attack)
    if expected:
        assert any(e in stderr for e in ((expected,) if isinstance(expected, str) else expected)), stderr
    if attack in ("forever", "sleep"):  # the researcher sees one reason; the reviewers which limit
        assert outcome["reason"] == "failed: error (see reviewers)", outcome["reason"]
        notes = jobs.admin_view(outcome["id"])["notes"]
        assert any(n in ("run: failed: time limit", "run: failed: CPU limit") for n in notes), notes
    if attack == "fork":
        assert "Resource temporarily unavailable" in stderr, stderr


def test_raw_rows_printed_or_returned_never_reach_the_researcher(jobs_gateway: Callable[..., Jobs]) -> None:
    jobs = jobs_gateway()
    code = (
        "import veilgate_job as vg\n"
        "t = vg.dataset('enterprise_registry').to_pylist()\n"
        "print(t[:50], [r for r in t if 'CANARY' in r['name']])\n"
        "vg.table('counts', [{'credit_code': r['credit_code'], 'n': 100} for r in t[:50]],"
        " keys=['credit_code'], counts=['n'])\n"
        "vg.table('records', t[:50], keys=['industry'], counts=['registered_capital'])\n"
        "vg.table('smuggled_xq7', [{'industry': 'C', 'n': 50}], keys=['industry'], counts=['n'])\n"
    )
    outcome = jobs.run(code, outputs=["counts", "records"])
    assert outcome["status"] == "finished"  # the job ran to its end; its outputs are another matter
    outputs = outcome["result"]["result"]["outputs"]
    assert all(o["status"] == "withheld" for o in outputs.values())
    # which rule refused each table is the job's choice: the reviewers see it, the researcher one reason
    nothing = {"status": "withheld", "reason": "withheld: nothing passed the automatic checks"}
    assert outputs == {"counts": nothing, "records": nothing}
    assert "smuggled_xq7" not in str(outcome) and "undeclared" not in str(outcome)  # never named back
    notes = jobs.admin_view(outcome["id"])["notes"]
    assert "1 undeclared output(s) dropped" in notes
    assert {"counts: withheld: not as declared", "records: withheld: not as declared"} <= set(notes)
    assert [s[:12] for s in _secrets(jobs) if s in str(outcome)] == []
    assert CANARY in jobs.admin_view(outcome["id"])["stdout"]  # printed rows: for administrators only
