"""The jail against hostile code, at the sandbox's own interface (`sandbox_client.run`, as the
worker calls it). Each test names what the earlier sandbox (`unshare` namespaces, job as
`nobody`, output read with `communicate`) let through, so each would fail against it."""

from __future__ import annotations

import os
import struct
import threading
import time
from pathlib import Path

import pytest

from gateway import job_processes, sandbox_client
from gateway.domain import seccomp
from tests.conftest import JOB_UIDS
from tests.jobs.conftest import needs_isolation

UIDS = JOB_UIDS
PG_SOCKET = Path("/var/run/postgresql/.s.PGSQL.5432")


def _limits(**changes: int) -> sandbox_client.Limits:
    limits = {"cpu_seconds": 30, "wall_seconds": 30, "memory_mb": 1024, "file_mb": 8, "processes": 16, "scratch_mb": 16}
    return sandbox_client.Limits(**(limits | changes))


def _run(code: str, tmp_path: Path, **kwargs: object) -> sandbox_client.Outcome:
    limits = kwargs.pop("limits", None) or _limits()
    return sandbox_client.run(
        work_dir=tmp_path / "runs", files={"main.py": code.encode()}, write_inputs=lambda _target: None,
        limits=limits, job_uids=UIDS, **kwargs,  # type: ignore[arg-type]
    )  # fmt: skip


def _left() -> list[job_processes.Process]:
    return job_processes.of_uids(range(UIDS[0], UIDS[1] + 1))


@needs_isolation
def test_no_socket_reaches_the_host(tmp_path: Path) -> None:
    """The old sandbox kept the host's /var/run: a job connected to PostgreSQL's Unix socket and
    was answered as its superuser. Now /run does not exist in the jail, and no socket can be
    made at all (Unix, IP, netlink, a pair), by `socket` or io_uring (seccomp)."""
    if not PG_SOCKET.exists():
        pytest.skip(f"no PostgreSQL socket at {PG_SOCKET} on this host to aim at")
    code = f"""
import ctypes, os, socket
print('run exists', os.path.exists('/var/run'), os.path.exists('/run'), os.path.exists('{PG_SOCKET}'))
for name, make in [
    ('unix', lambda: socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)),
    ('ip', lambda: socket.create_connection(('127.0.0.1', 5432), timeout=2)),
    ('netlink', lambda: socket.socket(socket.AF_NETLINK, socket.SOCK_RAW)),
    ('pair', lambda: socket.socketpair()),
]:
    try:
        make()
        print(name, 'MADE')
    except OSError as error:
        print(name, 'refused', error.errno)
libc = ctypes.CDLL(None, use_errno=True)
params = ctypes.create_string_buffer(120)
print('io_uring', libc.syscall(425, 8, params), ctypes.get_errno())
"""
    outcome = _run(code, tmp_path)
    assert outcome.exit_code == 0, outcome.stderr
    assert "run exists False False False" in outcome.stdout
    for name in ("unix", "ip", "netlink", "pair"):
        assert f"{name} refused 1" in outcome.stdout, outcome.stdout  # EPERM, from the filter
    assert "io_uring -1 1" in outcome.stdout
    assert "MADE" not in outcome.stdout


@needs_isolation
def test_nothing_outside_scratch_is_writable_and_nothing_is_left(tmp_path: Path) -> None:
    """The old sandbox covered /tmp, /var/tmp and /dev/shm one by one with read-only tmpfs;
    anything it forgot (/var/lib/..., a mounted volume) stayed writable for `nobody`. Now the
    root holds only what is allowed and is read-only, and so is /dev."""
    marker = f"veilgate-escape-{os.getpid()}-{time.monotonic_ns()}"
    targets = ["/tmp", "/var/tmp", "/dev/shm", "/", "/mnt", "/mnt/inputs", "/mnt/out", "/usr", str(tmp_path)]
    code = f"""
import os
for target in {targets!r}:
    try:
        with open(os.path.join(target, {marker!r}), 'w') as f:
            f.write('x')
        print(target, 'WRITTEN')
    except OSError as error:
        print(target, 'refused', type(error).__name__)
with open('/mnt/scratch/ok', 'w') as f:
    f.write('scratch is writable')
print('scratch', open('/mnt/scratch/ok').read())
"""
    outcome = _run(code, tmp_path)
    assert outcome.exit_code == 0, outcome.stderr
    assert "WRITTEN" not in outcome.stdout, outcome.stdout
    assert "scratch scratch is writable" in outcome.stdout
    for target in ["/tmp", "/var/tmp", "/dev/shm", str(tmp_path)]:
        assert not (Path(target) / marker).exists()
    assert not (tmp_path / "runs").exists() or list((tmp_path / "runs").iterdir()) == []  # removed, inputs too


@needs_isolation
def test_no_ipc_object_outlives_the_job(tmp_path: Path) -> None:
    """The old sandbox shared the host's IPC namespace: SysV segments and queues a job made
    stayed on the host after it ended (and /dev/shm, had it been writable). Now the job has an
    IPC namespace of its own, gone with it."""
    key = 0x5EED0000 + os.getpid() % 0xFFFF
    code = f"""
import ctypes
libc = ctypes.CDLL(None, use_errno=True)
print('shm', libc.shmget({key}, 4096, 0o1666))
print('msg', libc.msgget({key}, 0o1666))
try:
    open('/dev/shm/veilgate-posix', 'w')
    print('posix MADE')
except OSError:
    print('posix refused')
"""
    outcome = _run(code, tmp_path)
    assert outcome.exit_code == 0, outcome.stderr
    assert "shm -1" in outcome.stdout  # SysV shared memory is refused (seccomp: the memory watch cannot see it)
    assert "msg -1" not in outcome.stdout  # a queue is made, inside
    assert "posix refused" in outcome.stdout
    keys = set()
    for table in ("shm", "msg"):
        for line in Path(f"/proc/sysvipc/{table}").read_text().splitlines()[1:]:
            keys.add(int(line.split()[0]))
    assert key not in keys  # and nothing of it on the host
    assert not Path("/dev/shm/veilgate-posix").exists()


@needs_isolation
def test_memory_no_process_maps_and_nested_namespaces_are_refused(tmp_path: Path) -> None:
    """Memory in a memfd that no process maps escaped the summed memory watch, and a nested user
    namespace gave the job CAP_SYS_ADMIN over new mounts (the kernel code behind many escapes)."""
    code = """
import ctypes, os
libc = ctypes.CDLL(None, use_errno=True)
print('memfd', libc.syscall(319 if os.uname().machine == 'x86_64' else 279, b'x', 0))
print('userns', libc.unshare(0x10000000))  # CLONE_NEWUSER
"""
    outcome = _run(code, tmp_path)
    assert outcome.exit_code == 0, outcome.stderr
    assert "memfd -1" in outcome.stdout
    assert "userns -1" in outcome.stdout


@needs_isolation
def test_memory_is_limited_for_the_whole_job(tmp_path: Path) -> None:
    """The old sandbox limited the address space of each process: four processes of 150 MiB
    each passed a limit of 300 MiB. Now the memory of all the job's processes is summed, and
    past `memory_mb` all of them are killed."""
    code = """
import os, time
for _ in range(4):
    if os.fork() == 0:
        block = bytes([1]) * (150 << 20)
        time.sleep(60)
        os._exit(0)
time.sleep(60)
"""
    started = time.monotonic()
    outcome = _run(code, tmp_path, limits=_limits(memory_mb=300, wall_seconds=60))
    assert outcome.memory_exceeded and outcome.exit_code is None, outcome
    assert time.monotonic() - started < 50  # killed, not ended by the wall clock
    assert _left() == []


@needs_isolation
def test_a_fork_bomb_is_held_to_the_job_and_leaves_nothing(tmp_path: Path) -> None:
    """RLIMIT_NPROC counts the processes of a uid: under the old sandbox's shared `nobody`, it
    counted every job and every other `nobody` process together, and the namespace's death was
    the only cleanup. Now each job has its own uid, and every process of it is gone after."""
    code = """
import os, time
made = 0
try:
    while True:
        if os.fork() == 0:
            time.sleep(60)
            os._exit(0)
        made += 1
except OSError as error:
    print('stopped after', made, type(error).__name__)
"""
    outcome = _run(code, tmp_path, limits=_limits(processes=8))
    assert "stopped after" in outcome.stdout, outcome
    made = int(outcome.stdout.split("stopped after")[1].split()[0])
    assert made <= 8
    assert _left() == []


@needs_isolation
def test_a_stdout_flood_is_cut_and_never_held_in_memory(tmp_path: Path) -> None:
    """The old client read stdout with `communicate`: 1 GiB of output was 1 GiB in the gateway.
    Now both streams go to files cut at 64 KiB, and the rest is read and dropped."""
    code = """
import sys
chunk = b'x' * (1 << 20)
for _ in range(1024):
    sys.stdout.buffer.write(chunk)
sys.stdout.flush()
sys.stderr.write('done\\n')
"""
    peak = [0]
    done = threading.Event()

    def watch() -> None:
        while not done.is_set():
            status = Path("/proc/self/status").read_text()
            rss = int(next(line for line in status.splitlines() if line.startswith("VmRSS:")).split()[1])
            peak[0] = max(peak[0], rss)
            time.sleep(0.05)

    before = int(next(line for line in Path("/proc/self/status").read_text().splitlines()
                      if line.startswith("VmRSS:")).split()[1])  # fmt: skip
    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        outcome = _run(code, tmp_path, limits=_limits(cpu_seconds=60, wall_seconds=120))
    finally:
        done.set()
        watcher.join()
    assert outcome.exit_code == 0 and outcome.log_cut, outcome.stderr
    assert "done" in outcome.stderr
    assert len(outcome.stdout) <= sandbox_client.MAX_LOG_BYTES + 100
    assert peak[0] - before < 128 * 1024  # KiB: a 1 GiB flood never reaches this process's memory


@needs_isolation
def test_should_stop_kills_the_running_job_at_once(tmp_path: Path) -> None:
    """The old client waited for the job to end: a freeze made during a run changed nothing until
    the wall clock. Now `should_stop` is asked every 0.5 s and its answer kills the whole job."""
    asked_from = time.monotonic() + 1

    def should_stop() -> str | None:
        return "frozen" if time.monotonic() > asked_from else None

    code = "import os, time\nif os.fork() == 0:\n    time.sleep(120)\ntime.sleep(120)\n"
    outcome = _run(code, tmp_path, limits=_limits(wall_seconds=120), should_stop=should_stop)
    assert outcome.stopped == "frozen" and outcome.exit_code is None and not outcome.timed_out
    assert _left() == []


def _evaluate(program: bytes, arch: int, nr: int) -> int:
    """A classic-BPF interpreter for the few instructions the filter uses."""
    ops = [struct.unpack("=HBBI", program[i : i + 8]) for i in range(0, len(program), 8)]
    data = struct.pack("=iI", nr, arch)
    pc, accumulator = 0, 0
    while True:
        code, jt, jf, k = ops[pc]
        if code == 0x20:
            (accumulator,) = struct.unpack("=I", data[k : k + 4])
            pc += 1
        elif code in (0x15, 0x35):
            taken = accumulator == k if code == 0x15 else accumulator >= k
            pc += 1 + (jt if taken else jf)
        elif code == 0x06:
            return k
        else:
            raise AssertionError(f"unexpected instruction {code:#x}")


@pytest.mark.parametrize("machine", sorted(seccomp.ABIS))
def test_the_seccomp_filter_checks_the_architecture_then_the_call(machine: str) -> None:
    abi = seccomp.ABIS[machine]
    program = seccomp.job_filter(machine)
    refused = seccomp.RET_ERRNO | seccomp.EPERM
    for number in abi.refused.values():
        assert _evaluate(program, abi.audit_arch, number) == refused
    assert _evaluate(program, abi.audit_arch, 0) == seccomp.RET_ALLOW  # read
    other = next(a.audit_arch for m, a in seccomp.ABIS.items() if m != machine)
    assert _evaluate(program, other, 0) == seccomp.RET_KILL_PROCESS
    assert _evaluate(program, 0x40000003, 102) == seccomp.RET_KILL_PROCESS  # i386 socketcall
    if abi.x32_bit:
        assert _evaluate(program, abi.audit_arch, seccomp.X32_SYSCALL_BIT | 41) == refused
        assert _evaluate(program, abi.audit_arch, seccomp.X32_SYSCALL_BIT) == refused
    with pytest.raises(ValueError, match="architecture"):
        seccomp.job_filter("sparc")


def test_outputs_nested_past_the_parser_are_invalid_not_an_internal_error(tmp_path: Path) -> None:
    """A job could nest its outputs file deep enough to raise RecursionError in the gateway's
    parser: the run ended as an internal error and its evidence was dropped."""
    written = tmp_path / "outputs.json"
    written.write_text("[" * 200_000)
    outputs, problem = sandbox_client._read_outputs(written)
    assert outputs is None and problem == "the outputs file is not valid JSON"
