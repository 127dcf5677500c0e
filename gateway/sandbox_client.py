"""Running one approved job in the sandbox, and collecting what it left behind.

Imports no other leaf and never imports `sandbox/`: it starts `python -m sandbox.launch` inside
new network, mount and PID namespaces (`unshare`) and speaks to it through files: a request
(JSON), the job's inputs (its code and the Parquet files of its datasets), and the outputs file
the job API writes: the one file the job may write on this machine's disk (owned by `nobody`, in a
directory it cannot add to), so its size is bounded by the file-size limit. Its scratch space is
a memory filesystem of `scratch_mb` inside the namespace. The job directory is removed
afterwards, whatever happened.

Where isolation cannot be set up, a job is refused, unless the deployment explicitly allows
`unsafe_run_without_isolation` for development; every such run logs a warning and is marked.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import site
import subprocess
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gateway.errors import ServiceUnavailable

log = logging.getLogger("veilgate.sandbox")
NOBODY = 65534
MAX_OUTPUTS_BYTES = 4 * 1024 * 1024
MAX_LOG_BYTES = 64 * 1024
UNSHARE = ("unshare", "--net", "--mount", "--pid", "--fork", "--kill-child", "--mount-proc", "--")


@dataclass(frozen=True, slots=True)
class Limits:
    cpu_seconds: int
    wall_seconds: int
    memory_mb: int
    file_mb: int
    processes: int
    scratch_mb: int


@dataclass(frozen=True, slots=True)
class Outcome:
    exit_code: int | None
    timed_out: bool
    stdout: str
    stderr: str
    outputs: dict[str, Any] | None
    """The job's outputs file, parsed; None if it wrote none or an unreadable one."""
    problem: str | None
    isolation: str


def isolation_problem() -> str | None:
    """Why namespaces cannot be used here, or None if they can (checked by a real probe)."""
    if shutil.which("unshare") is None or os.geteuid() != 0:
        return "the sandbox needs unshare and root to build its namespaces"
    try:
        probe = subprocess.run([*UNSHARE, "true"], capture_output=True, timeout=10, check=False)  # noqa: S603
    except (OSError, subprocess.SubprocessError):
        return "unshare could not create namespaces"
    return None if probe.returncode == 0 else "unshare could not create namespaces"


def run(
    *,
    work_dir: Path,
    hide: list[Path],
    files: dict[str, bytes],
    write_inputs: Callable[[Path], None],
    limits: Limits,
    unsafe_run_without_isolation: bool = False,
) -> Outcome:
    """Run the job whose `files` (relative paths, `main.py` first to run) go to `<inputs>/job`,
    with the inputs `write_inputs` puts in `<inputs>/data`; always cleans up."""
    problem = isolation_problem()
    if problem is not None and not unsafe_run_without_isolation:
        raise ServiceUnavailable(f"jobs cannot run here: {problem}")
    work_dir.mkdir(parents=True, exist_ok=True)
    job = Path(tempfile.mkdtemp(prefix="job-", dir=work_dir))
    try:
        os.chmod(job, 0o711)  # noqa: S103 - traversable, not listable: the launcher binds its parts
        inputs, out = job / "inputs", job / "out"
        (inputs / "data").mkdir(parents=True)
        (inputs / "job").mkdir()
        out.mkdir(mode=0o755)
        outputs = out / "outputs.json"
        outputs.touch(mode=0o600)
        for name, content in files.items():  # names were checked by the caller (services.jobs)
            target = inputs / "job" / name
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(content)
        write_inputs(inputs / "data")
        for path in (inputs, *inputs.rglob("*")):
            os.chmod(path, 0o755 if path.is_dir() else 0o644)
        if problem is None:
            os.chown(outputs, NOBODY, NOBODY)  # the file, not its directory: nothing can be added
            request = {
                "protocol": 1,
                "job_dir": str(job),
                "hidden": [str(p) for p in hide],
                "site_packages": site.getsitepackages(),
                "limits": {
                    "cpu_seconds": limits.cpu_seconds,
                    "memory_mb": limits.memory_mb,
                    "file_mb": limits.file_mb,
                    "processes": limits.processes,
                    "scratch_mb": limits.scratch_mb,
                },
            }
            (job / "request.json").write_text(json.dumps(request))
            command = [*UNSHARE, sys.executable, "-m", "sandbox.launch", str(job / "request.json")]
            isolation = "namespaces"
        else:
            log.warning("UNSAFE: running a job WITHOUT isolation (unsafe_run_without_isolation is set)")
            harness = _sandbox_dir() / "harness.py"
            scratch = job / "scratch"  # on this disk: no quota but the file-size limit
            scratch.mkdir()
            arguments = [str(scratch), str(inputs), str(outputs), *site.getsitepackages()]
            command = [sys.executable, "-I", "-S", str(harness), *arguments]
            isolation = "none (unsafe_run_without_isolation)"
        return _execute(command, outputs, limits, isolation)
    finally:
        shutil.rmtree(job, ignore_errors=True)


def _sandbox_dir() -> Path:
    import importlib.util  # noqa: PLC0415

    spec = importlib.util.find_spec("sandbox")  # located, not imported
    if spec is None or not spec.submodule_search_locations:
        raise ServiceUnavailable("the sandbox package is not installed")
    return Path(next(iter(spec.submodule_search_locations)))


def _limit(limits: Limits) -> None:
    """Resource limits for a job run without namespaces (the launcher sets its own)."""
    import resource  # noqa: PLC0415 - Unix only, and only in the child

    resource.setrlimit(resource.RLIMIT_CPU, (limits.cpu_seconds, limits.cpu_seconds))
    resource.setrlimit(resource.RLIMIT_AS, (limits.memory_mb * 1024 * 1024,) * 2)
    resource.setrlimit(resource.RLIMIT_FSIZE, (limits.file_mb * 1024 * 1024,) * 2)


def _execute(command: list[str], written: Path, limits: Limits, isolation: str) -> Outcome:
    unisolated = isolation != "namespaces"
    process = subprocess.Popen(  # noqa: S603 - our own launcher, fixed arguments
        command,
        preexec_fn=(lambda: _limit(limits)) if unisolated else None,  # noqa: PLW1509 - rlimits only
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,
        env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LANG": "C.UTF-8"},
    )
    timed_out = False
    try:
        stdout, stderr = process.communicate(timeout=limits.wall_seconds)
    except subprocess.TimeoutExpired:
        timed_out = True
        os.killpg(process.pid, signal.SIGKILL)
        stdout, stderr = process.communicate()
    outputs: dict[str, Any] | None = None
    problem = None
    size = written.stat().st_size if written.is_file() and not written.is_symlink() else 0
    if size > MAX_OUTPUTS_BYTES:
        problem = "the outputs are larger than 4 MiB"
    elif size:  # the file is made empty: a job that wrote nothing leaves it so
        try:
            loaded = json.loads(written.read_text())
        except (ValueError, UnicodeDecodeError):
            problem = "the outputs file is not valid JSON"
        else:
            if isinstance(loaded, dict) and loaded.get("protocol") == 1 and isinstance(loaded.get("outputs"), dict):
                outputs = loaded["outputs"]
            else:
                problem = "the outputs file does not follow the job API"
    return Outcome(
        exit_code=None if timed_out else process.returncode,
        timed_out=timed_out,
        stdout=stdout[-MAX_LOG_BYTES:].decode("utf-8", errors="replace"),
        stderr=stderr[-MAX_LOG_BYTES:].decode("utf-8", errors="replace"),
        outputs=outputs,
        problem=problem,
        isolation=isolation,
    )
