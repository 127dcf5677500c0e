"""Running one approved job in its jail, and collecting what it left behind.

Called by `veilgate worker` only (the API process runs no job). Never imports `sandbox/`: the job
runs `sandbox/harness.py` inside a bubblewrap jail and speaks to us through files:

- **the jail** (`bwrap`): new user, PID, network, IPC, UTS and mount namespaces; a root that is
  an empty read-only filesystem holding only what is allowed: the interpreter and the libraries
  it needs (read-only), the job's inputs (its code and the Parquet files of its datasets,
  read-only), a scratch memory filesystem of `scratch_mb`, and its one outputs file. No `/run`,
  no `/tmp`, no socket and no host directory exist inside. A seccomp filter refuses socket
  creation (`gateway.domain.seccomp`). The job dies with its worker (`--die-with-parent`, and the
  parent-death signal of bwrap itself), runs in a new session (no terminal) with an environment
  of four variables;
- **the whole job is limited**: it runs as a uid of its own from `sandbox_job_uids`, so
  RLIMIT_NPROC counts all its processes, and a watch sums the memory of all of them every
  0.2 s and kills them all past `memory_mb` (this host's cgroups are v1: no delegated
  `memory.max`); CPU seconds, address space, file size and open files per process; a wall
  clock; `should_stop` (a freeze, a revoked grant) polled every 0.5 s kills it at once;
- **stdout and stderr** are streamed to files in the job directory and cut at `MAX_LOG_BYTES`
  each (the rest is read and dropped, never held in memory).

The job directory (exported inputs included) is removed afterwards, whatever happened, and
every process of the job's uid is killed; `clean_up` does the same at a worker's start for what
a stopped worker left. Where the jail cannot be built, a job is refused, unless the deployment
explicitly allows `unsafe_run_without_isolation` for development (logged, and marked).
"""

from __future__ import annotations

import contextlib
import ctypes
import fcntl
import functools
import json
import logging
import os
import platform
import resource
import shutil
import signal
import site
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from gateway import job_processes
from gateway.domain.job_source import visible
from gateway.domain.seccomp import job_filter
from gateway.errors import ServiceUnavailable

log = logging.getLogger("veilgate.sandbox")
MAX_OUTPUTS_BYTES = 4 * 1024 * 1024
MAX_LOG_BYTES = 64 * 1024
DEFAULT_JOB_UIDS = (200_000, 200_999)
JAIL_UID = 65534
"""The job's uid inside its user namespace (its own uid outside)."""
SCRATCH, INPUTS, OUTPUTS = "/mnt/scratch", "/mnt/inputs", "/mnt/out/outputs.json"
WATCH_SECONDS = 0.2
STOP_POLL_SECONDS = 0.5
_PR_SET_PDEATHSIG = 1


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
    memory_exceeded: bool = False
    """Its processes together went past `memory_mb`: all were killed."""
    stopped: str | None = None
    """What `should_stop` answered when it stopped the job (all its processes were killed)."""
    log_cut: bool = False
    """stdout or stderr was longer than `MAX_LOG_BYTES` and was cut."""
    cpu_exceeded: bool = False
    """A process of the job used up its CPU seconds and was killed (SIGXCPU)."""


@functools.cache
def isolation_problem(job_uids: tuple[int, int] = DEFAULT_JOB_UIDS) -> str | None:
    """Why the jail cannot be built here, or None if it can (a real probe: an interpreter
    started in a jail as the first job uid)."""
    if shutil.which("bwrap") is None:
        return "bubblewrap (bwrap) is not installed"
    if platform.machine() not in ("x86_64", "aarch64"):
        return f"no seccomp filter for {platform.machine()}"
    uid = job_uids[0]
    try:
        with tempfile.TemporaryDirectory(prefix="veilgate-probe-") as directory:
            job = Path(directory)
            (job / "inputs").mkdir()
            (job / "outputs.json").touch()
            staged = _staged(job / "inputs", job / "outputs.json")
            seccomp = _seccomp_fd()
            try:
                command = _jail_command(staged, seccomp, 1, [sys.executable, "-I", "-S", "-c", "pass"])
                probe = subprocess.run(  # noqa: S603 - bwrap, fixed arguments
                    command, preexec_fn=functools.partial(_become, uid, None, staged), pass_fds=[seccomp],
                    capture_output=True, timeout=30, check=False, env={},
                )  # fmt: skip
            finally:
                os.close(seccomp)
    except (OSError, subprocess.SubprocessError) as error:
        return f"the jail could not be built ({type(error).__name__}: it needs root, or CAP_SETUID and CAP_SETGID)"
    if probe.returncode != 0:
        return f"the jail could not be built: {probe.stderr.decode(errors='replace').strip()[:200]}"
    return None


def clean_up(work_dir: Path, job_uids: tuple[int, int] = DEFAULT_JOB_UIDS) -> int:
    """At a worker's start: kill every process of the job uids (a stopped worker's jobs) and
    remove the job directories, exported inputs included. Returns how many processes it killed."""
    killed = job_processes.kill_all(range(job_uids[0], job_uids[1] + 1))
    if work_dir.is_dir():
        for job in work_dir.iterdir():
            shutil.rmtree(job, ignore_errors=True) if job.is_dir() else job.unlink(missing_ok=True)
    return killed


_uids_lock = threading.Lock()
_uids_in_use: dict[int, IO[str]] = {}
"""The uids this process runs jobs as, each with its lock file held (other processes skip it)."""


def _claim_uid(job_uids: tuple[int, int]) -> int:
    first, last = job_uids
    if first < 1000 or last < first:
        raise ServiceUnavailable("sandbox_job_uids: give a first and a last uid, from 1000 up")
    directory = Path("/run/lock") if Path("/run/lock").is_dir() else Path(tempfile.gettempdir())
    with _uids_lock:
        busy = {p.uid for p in job_processes.processes()} | set(_uids_in_use)
        for uid in range(first, last + 1):
            if uid in busy:
                continue
            held = (directory / f"veilgate-job-uid-{uid}.lock").open("a")
            try:
                fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                held.close()
                continue
            _uids_in_use[uid] = held
            return uid
    raise ServiceUnavailable("every job uid is in use; jobs run again once one ends")


def _release_uid(uid: int) -> None:
    with _uids_lock:
        held = _uids_in_use.pop(uid, None)
    if held is not None:
        held.close()


def run(
    *,
    work_dir: Path,
    files: dict[str, bytes],
    write_inputs: Callable[[Path], None],
    limits: Limits,
    unsafe_run_without_isolation: bool = False,
    should_stop: Callable[[], str | None] | None = None,
    job_uids: tuple[int, int] = DEFAULT_JOB_UIDS,
) -> Outcome:
    """Run the job whose `files` (relative paths, `main.py` first to run) go to `<inputs>/job`,
    with the inputs `write_inputs` puts in `<inputs>/data`; always cleans up."""
    problem = isolation_problem(job_uids)
    if problem is not None and not unsafe_run_without_isolation:
        raise ServiceUnavailable(f"jobs cannot run here: {problem}")
    uid = _claim_uid(job_uids) if problem is None else None
    work_dir.mkdir(parents=True, exist_ok=True)
    job = Path(tempfile.mkdtemp(prefix="job-", dir=work_dir))
    seccomp: int | None = None
    try:
        inputs, outputs = job / "inputs", job / "outputs.json"
        (inputs / "data").mkdir(parents=True)
        (inputs / "job").mkdir()
        outputs.touch(mode=0o600)
        for name, content in files.items():  # names were checked by the caller (services.jobs)
            target = inputs / "job" / name
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(content)
        write_inputs(inputs / "data")
        for path in (inputs, *inputs.rglob("*")):
            os.chmod(path, 0o755 if path.is_dir() else 0o644)
        harness = str(_sandbox_dir() / "harness.py")
        if uid is not None:
            os.chown(outputs, uid, uid)  # the file only: bound alone into the jail, nothing beside it
            staged = _staged(inputs, outputs)
            seccomp = _seccomp_fd()
            arguments = [sys.executable, "-I", "-S", harness, SCRATCH, INPUTS, OUTPUTS, *site.getsitepackages()]
            command = _jail_command(staged, seccomp, limits.scratch_mb, arguments)
            become = functools.partial(_become, uid, limits, staged)
            return _execute(command, job, limits, uid=uid, become=become, pass_fds=[seccomp], should_stop=should_stop)
        log.warning("UNSAFE: running a job WITHOUT isolation (unsafe_run_without_isolation is set)")
        scratch = job / "scratch"  # on this disk: no quota but the file-size limit
        scratch.mkdir()
        arguments = [str(scratch), str(inputs), str(outputs), *site.getsitepackages()]
        command = [sys.executable, "-I", "-S", harness, *arguments]
        become = functools.partial(_unsafe_limits, limits)
        return _execute(command, job, limits, uid=None, become=become, pass_fds=[], should_stop=should_stop)
    finally:
        if seccomp is not None:
            os.close(seccomp)
        if uid is not None:
            try:
                job_processes.kill_all([uid])
            finally:
                _release_uid(uid)
        shutil.rmtree(job, ignore_errors=True)


def _sandbox_dir() -> Path:
    import importlib.util  # noqa: PLC0415

    spec = importlib.util.find_spec("sandbox")  # located, not imported
    if spec is None or not spec.submodule_search_locations:
        raise ServiceUnavailable("the sandbox package is not installed")
    return Path(next(iter(spec.submodule_search_locations)))


def allowed_paths() -> list[Path]:
    """What the interpreter needs, read-only: its installation, the virtual environment, the
    site-packages, this repository's `sandbox/` and the system libraries (`/usr`)."""
    wanted = [Path("/usr"), Path(sys.base_prefix), Path(sys.prefix), _sandbox_dir()]
    wanted += [Path(p) for p in site.getsitepackages()]
    resolved = sorted({p.resolve() for p in wanted if p.is_dir()}, key=lambda p: len(p.parts))
    kept: list[Path] = []
    for path in resolved:  # a directory inside one already kept comes along with it
        if not any(path.is_relative_to(k) for k in kept):
            kept.append(path)
    return kept


STAGE = Path("/mnt")
"""Where the child, in a mount namespace of its own, binds what the jail gets, before it becomes
the job's uid: bwrap runs as that uid and must reach each source by path, which the uid may not
do where they are (a Python under /root, a state directory of mode 0700)."""


def _staged(inputs: Path, outputs: Path) -> list[tuple[Path, Path, str]]:
    """(source, staged path, place in the jail) of what the jail binds."""
    staged = [(p, STAGE / "keep" / str(i), str(p)) for i, p in enumerate(allowed_paths())]
    return [*staged, (inputs, STAGE / "inputs", INPUTS), (outputs, STAGE / "outputs.json", OUTPUTS)]


def _seccomp_fd() -> int:
    program = job_filter(platform.machine())
    seccomp = os.memfd_create("veilgate-seccomp", 0)
    os.write(seccomp, program)
    os.lseek(seccomp, 0, os.SEEK_SET)
    return seccomp


def _jail_command(
    staged: list[tuple[Path, Path, str]], seccomp: int, scratch_mb: int, arguments: list[str]
) -> list[str]:
    command = [
        "bwrap", "--unshare-user", "--unshare-pid", "--unshare-net", "--unshare-ipc", "--unshare-uts",
        "--unshare-cgroup-try", "--disable-userns", "--assert-userns-disabled",
        "--die-with-parent", "--new-session", "--clearenv", "--hostname", "job",
        "--uid", str(JAIL_UID), "--gid", str(JAIL_UID), "--proc", "/proc", "--dev", "/dev",
        "--remount-ro", "/dev",
    ]  # fmt: skip
    for _source, stage, inside in staged:
        how = "--bind" if inside == OUTPUTS else "--ro-bind"  # the outputs file is the one writable
        command += [how, str(stage), inside]
    for name in ("bin", "sbin", "lib", "lib32", "lib64", "libx32"):  # a merged /usr's links
        link = Path("/") / name
        if link.is_symlink():
            command += ["--symlink", os.readlink(link), str(link)]
    command += [
        "--size", str(scratch_mb * 1024 * 1024), "--perms", "0700", "--tmpfs", SCRATCH,
        "--remount-ro", "/",
        "--chdir", SCRATCH,
        "--setenv", "PATH", "/usr/bin:/bin", "--setenv", "HOME", SCRATCH, "--setenv", "TMPDIR", SCRATCH,
        "--setenv", "LANG", "C.UTF-8",
        "--seccomp", str(seccomp),
        "--", *arguments,
    ]  # fmt: skip
    return command


_libc = ctypes.CDLL(None, use_errno=True)


_CLONE_NEWNS, _MS_BIND, _MS_REC, _MS_PRIVATE, _MS_NOSUID, _MS_NODEV = 0x20000, 0x1000, 0x4000, 0x40000, 0x2, 0x4


def _become(uid: int, limits: Limits | None, staged: list[tuple[Path, Path, str]]) -> None:
    """In the child, before bwrap runs: stage the jail's sources in a mount namespace of its own,
    set the limits, become the job's uid (no groups), then set the parent-death signal (last: a
    change of uid clears it). Any failure ends the child: the job does not run."""

    def check(result: int) -> None:
        if result != 0:
            os._exit(126)

    check(_libc.unshare(_CLONE_NEWNS))
    check(_libc.mount(b"none", b"/", None, _MS_REC | _MS_PRIVATE, None))
    check(_libc.mount(b"tmpfs", bytes(STAGE), b"tmpfs", _MS_NOSUID | _MS_NODEV, b"mode=0755,size=64k"))
    for source, stage, _inside in staged:
        stage.parent.mkdir(parents=True, exist_ok=True)
        stage.mkdir() if source.is_dir() else stage.touch()
        check(_libc.mount(bytes(source), bytes(stage), None, _MS_BIND, None))
    if limits is not None:  # CPU: SIGXCPU at the limit (told apart from other kills), SIGKILL a second later
        resource.setrlimit(resource.RLIMIT_CPU, (limits.cpu_seconds, limits.cpu_seconds + 1))
        resource.setrlimit(resource.RLIMIT_AS, (limits.memory_mb * 1024 * 1024,) * 2)
        resource.setrlimit(resource.RLIMIT_FSIZE, (limits.file_mb * 1024 * 1024,) * 2)
        resource.setrlimit(resource.RLIMIT_NPROC, (limits.processes + 2,) * 2)  # + bwrap's two
        resource.setrlimit(resource.RLIMIT_NOFILE, (256, 256))
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    os.setgroups([])
    os.setresgid(uid, uid, uid)
    os.setresuid(uid, uid, uid)
    check(_libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0))


def _unsafe_limits(limits: Limits) -> None:
    """Resource limits for a job run without the jail (development only)."""
    resource.setrlimit(resource.RLIMIT_CPU, (limits.cpu_seconds, limits.cpu_seconds))
    resource.setrlimit(resource.RLIMIT_AS, (limits.memory_mb * 1024 * 1024,) * 2)
    resource.setrlimit(resource.RLIMIT_FSIZE, (limits.file_mb * 1024 * 1024,) * 2)


class _Capped:
    """Copies a stream to a file, keeping its first `MAX_LOG_BYTES` and dropping the rest."""

    def __init__(self, stream: IO[bytes], path: Path) -> None:
        self.path, self.cut = path, False
        self._thread = threading.Thread(target=self._copy, args=(stream,), daemon=True)
        self._thread.start()

    def _copy(self, stream: IO[bytes]) -> None:
        kept = 0
        with stream, self.path.open("wb") as out:
            while chunk := stream.read(64 * 1024):
                if kept < MAX_LOG_BYTES:
                    out.write(chunk[: MAX_LOG_BYTES - kept])
                kept += len(chunk)
        self.cut = kept > MAX_LOG_BYTES

    def text(self) -> str:
        self._thread.join(timeout=10)
        text = self.path.read_bytes().decode("utf-8", errors="replace") if self.path.is_file() else ""
        # SECURITY: reviewers and output checkers read this; nothing in it may reorder or hide text
        return visible(text) + ("\n[cut: longer than 64 KiB]" if self.cut else "")


def _execute(
    command: list[str], job: Path, limits: Limits, *, uid: int | None, become: Callable[[], None],
    pass_fds: list[int], should_stop: Callable[[], str | None] | None,
) -> Outcome:  # fmt: skip
    process = subprocess.Popen(  # noqa: S603 - bwrap or the harness, fixed arguments
        command,
        preexec_fn=become,  # noqa: PLW1509 - mounts in its own namespace, limits, uid; no lock taken
        pass_fds=pass_fds,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,
        env={} if uid is not None else {"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8"},
    )
    assert process.stdout is not None  # noqa: S101 - a pipe
    assert process.stderr is not None  # noqa: S101 - a pipe
    stdout, stderr = _Capped(process.stdout, job / "stdout.log"), _Capped(process.stderr, job / "stderr.log")
    deadline = time.monotonic() + limits.wall_seconds
    next_stop_poll = 0.0
    timed_out, memory_exceeded, stopped = False, False, None
    while process.poll() is None:
        now = time.monotonic()
        if now >= deadline:
            timed_out = True
        elif uid is not None and job_processes.memory_mib(uid) > limits.memory_mb:
            memory_exceeded = True
        elif should_stop is not None and now >= next_stop_poll:
            next_stop_poll = now + STOP_POLL_SECONDS
            stopped = should_stop()
        if timed_out or memory_exceeded or stopped:
            _kill(process, uid)
            break
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(timeout=WATCH_SECONDS)
    process.wait()
    if uid is not None:
        job_processes.kill_all([uid])  # anything that outlived the namespace's first process
    outputs, problem = _read_outputs(job / "outputs.json")
    killed = timed_out or memory_exceeded or stopped is not None
    return Outcome(
        exit_code=None if killed else process.returncode,
        timed_out=timed_out,
        stdout=stdout.text(),
        stderr=stderr.text(),
        outputs=outputs,
        problem=problem,
        isolation="bubblewrap" if uid is not None else "none (unsafe_run_without_isolation)",
        memory_exceeded=memory_exceeded,
        stopped=stopped,
        log_cut=stdout.cut or stderr.cut,
        cpu_exceeded=not killed and process.returncode in (-signal.SIGXCPU, 128 + signal.SIGXCPU),
    )


def _kill(process: subprocess.Popen[bytes], uid: int | None) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)
    if uid is not None:
        job_processes.kill_all([uid])


def _read_outputs(written: Path) -> tuple[dict[str, Any] | None, str | None]:
    size = written.stat().st_size if written.is_file() and not written.is_symlink() else 0
    if size > MAX_OUTPUTS_BYTES:
        return None, "the outputs are larger than 4 MiB"
    if not size:  # the file is made empty: a job that wrote nothing leaves it so
        return None, None
    try:
        loaded = json.loads(written.read_text())
    except (ValueError, UnicodeDecodeError, RecursionError):  # nesting deep enough to exhaust the parser
        return None, "the outputs file is not valid JSON"
    if isinstance(loaded, dict) and loaded.get("protocol") == 1 and isinstance(loaded.get("outputs"), dict):
        return loaded["outputs"], None
    return None, "the outputs file does not follow the job API"
