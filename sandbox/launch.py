"""Set up the job's world, drop every privilege, and run the job.

Runs as root inside fresh network, mount and PID namespaces (`unshare --net --mount --pid
--fork --kill-child`, started by the gateway). The steps, in order:
1. make every mount private, so nothing done here reaches the host;
2. mount a private /mnt holding the job's inputs (read-only), its scratch space (a memory
   filesystem of `scratch_mb`, owned by nobody), the directory of its outputs file (the one
   file on the host's disk it may write; it cannot add another), and read-only copies of what
   the interpreter needs (its installation, the virtual environment, the site-packages and this
   package);
3. cover with an empty read-only tmpfs: the gateway's state and data directories (keys,
   ledger, audit log and every other dataset disappear), /tmp, /var/tmp and /dev/shm, and any
   directory others may not enter that holds the interpreter (/root); then put back only what
   the interpreter needs, read-only;
4. set the resource limits (CPU time, address space, file size, processes, open files);
5. become `nobody` (no supplementary groups), with a minimal environment, in the scratch
   directory, and exec the harness.
If any step fails, the job does not run: isolation is never best effort.
"""

from __future__ import annotations

import json
import os
import resource
import stat
import subprocess
import sys
from pathlib import Path

NOBODY = 65534
MNT = Path("/mnt")


def _mount(*args: str) -> None:
    subprocess.run(["mount", *args], check=True, capture_output=True)  # noqa: S603, S607 - fixed arguments


def _closed_ancestor(path: Path) -> Path | None:
    """The highest ancestor of `path` that others may not enter, if any."""
    for ancestor in reversed(path.parents):
        if ancestor != Path("/") and not os.stat(ancestor).st_mode & stat.S_IXOTH:
            return ancestor
    return None


def main() -> None:
    request = json.loads(Path(sys.argv[1]).read_text())
    if request.get("protocol") != 1:
        sys.exit("sandbox: unknown protocol version")
    job = Path(request["job_dir"])
    sandbox_dir = Path(__file__).resolve().parent
    keep = [Path(sys.base_prefix).resolve(), Path(sys.prefix).resolve(), sandbox_dir]
    keep += [Path(p).resolve() for p in request["site_packages"] if Path(p).is_dir()]
    # 1.
    _mount("--make-rprivate", "/")
    # 2.
    _mount("-t", "tmpfs", "-o", "mode=0755,size=1m", "tmpfs", str(MNT))
    for name in ("inputs", "scratch", "out"):
        (MNT / name).mkdir()
    _mount("--bind", str(job / "inputs"), str(MNT / "inputs"))
    _mount("-o", "remount,bind,ro", str(MNT / "inputs"))
    _mount("--bind", str(job / "out"), str(MNT / "out"))
    scratch = f"size={int(request['limits']['scratch_mb'])}m,mode=0700,uid={NOBODY},gid={NOBODY},nosuid,nodev"
    _mount("-t", "tmpfs", "-o", scratch, "tmpfs", str(MNT / "scratch"))
    saved = []
    for i, path in enumerate(keep):
        copy = MNT / "keep" / str(i)
        copy.mkdir(parents=True)
        _mount("--bind", str(path), str(copy))
        _mount("-o", "remount,bind,ro", str(copy))
        saved.append((path, copy))
    # 3.
    covers = {a for path in keep if (a := _closed_ancestor(path)) is not None}
    covers |= {Path(p) for p in request["hidden"]} | {Path("/tmp"), Path("/var/tmp"), Path("/dev/shm")}  # noqa: S108
    covered: list[Path] = []
    for cover in sorted(covers, key=lambda p: len(p.parts)):
        if any(cover.is_relative_to(done) for done in covered) or not cover.is_dir():
            continue
        _mount("-t", "tmpfs", "-o", "mode=0755,size=1m", "tmpfs", str(cover))
        for path, copy in saved:
            if path.is_relative_to(cover):
                path.mkdir(parents=True, exist_ok=True)
                _mount("--bind", str(copy), str(path))
        _mount("-o", "remount,ro", str(cover))
        covered.append(cover)
    # 4.
    limits = request["limits"]
    memory = limits["memory_mb"] * 1024 * 1024
    resource.setrlimit(resource.RLIMIT_CPU, (limits["cpu_seconds"], limits["cpu_seconds"]))
    resource.setrlimit(resource.RLIMIT_AS, (memory, memory))
    resource.setrlimit(resource.RLIMIT_FSIZE, (limits["file_mb"] * 1024 * 1024,) * 2)
    resource.setrlimit(resource.RLIMIT_NPROC, (limits["processes"], limits["processes"]))
    resource.setrlimit(resource.RLIMIT_NOFILE, (256, 256))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    # 5.
    os.setgroups([])
    os.setgid(NOBODY)
    os.setuid(NOBODY)
    if os.getuid() != NOBODY or os.geteuid() != NOBODY:
        sys.exit("sandbox: could not drop privileges")
    os.chdir(MNT / "scratch")
    environment = {"PATH": "/usr/bin:/bin", "HOME": str(MNT / "scratch"), "LANG": "C.UTF-8"}
    arguments = [
        str(MNT / "scratch"),
        str(MNT / "inputs"),
        str(MNT / "out" / "outputs.json"),
        *request["site_packages"],
    ]
    harness = sandbox_dir / "harness.py"
    os.execve(sys.executable, [sys.executable, "-I", "-S", str(harness), *arguments], environment)  # noqa: S606


if __name__ == "__main__":
    main()
