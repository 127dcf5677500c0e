"""Small state files that survive crashes and are read only when they change.

Below the leaves (catalogue, clients, key rings, engine), which all keep state in files under
the state directory. Invariant: a file is replaced whole (write to a temporary file beside it,
fsync, rename, fsync the directory), so a reader sees the old content or the new, never a mix.
"""

from __future__ import annotations

import os
import stat
import tempfile
import time
from pathlib import Path

from gateway.errors import ConfigurationError

Stamp = tuple[int, int]


def stamp(path: str | Path) -> Stamp | None:
    """(mtime in ns, size): changes whenever the file is replaced; None if it does not exist.

    Callers on the request path pass a `str` made once: building and printing a `Path` costs
    more than the system call."""
    try:
        info = os.stat(path)  # not Path.stat: this runs several times per request
    except FileNotFoundError:
        return None
    return (info.st_mtime_ns, info.st_size)


class Recheck:
    """When to look at a file again for another process's change: at most once per `seconds`.

    A state file that other processes replace (freezes, the policy in force, a catalogue record,
    a key ring) used to be stat'ed several times per request; a monotonic clock read is a
    fraction of that. `seconds = 0` looks every time. A change made through the same object
    calls `now()`, so the process that made it sees it on its next request.
    """

    __slots__ = ("_next", "_seconds")

    def __init__(self, seconds: float = 0.0) -> None:
        self._seconds = seconds
        self._next = 0.0

    def due(self) -> bool:
        """True when the caller should look again (and the next look is then `seconds` away)."""
        if self._seconds <= 0:
            return True
        clock = time.monotonic()
        if clock < self._next:
            return False
        self._next = clock + self._seconds
        return True

    def now(self) -> None:
        """Look again on the next call, whatever the interval."""
        self._next = 0.0


def fsync_path(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_atomic(path: Path, data: bytes, *, mode: int = 0o600) -> None:
    """Replace `path` with `data`, readable by its owner only unless `mode` says otherwise."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".tmp-{path.name}-")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    fsync_path(path.parent)


def create_secret_file(path: Path, data: bytes) -> None:
    """Write a new secret readable by its owner only; never replaces an existing one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())
    fsync_path(path.parent)


def check_secret_file(path: Path) -> None:
    """Refuse a secret file that others may read or that is not a regular file."""
    try:
        info = path.lstat()
    except FileNotFoundError:
        raise ConfigurationError(f"secret file {path.name} is missing") from None
    if not stat.S_ISREG(info.st_mode):
        raise ConfigurationError(f"secret file {path.name} is not a regular file")
    if info.st_mode & 0o077:
        raise ConfigurationError(f"secret file {path.name} is readable by others; chmod 600 it")
