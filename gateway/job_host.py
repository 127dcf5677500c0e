"""What the host must satisfy before `veilgate worker` runs a job: checked once, at its start.

Imports nothing from gateway but errors. Two invariants the jail relies on and cannot check
itself:
- **the job uids are the jobs' alone**: a job runs as a uid of `sandbox_job_uids`, and the worker
  kills every process of those uids and sums their memory. A uid or gid that a host account or
  group has, or that a subordinate range (`/etc/subuid`, `/etc/subgid`, the ranges rootless
  containers map to) hands out, would let a job act as that account, reach its files, or be
  killed with it. The files are read, and every id of the range is also asked of the system's
  account database (NSS: `pwd.getpwuid`, `grp.getgrgid`), which sees accounts and groups that
  live only in a directory service (LDAP, sssd) and appear in no file. The paths and the lookups
  are parameters so that tests give their own.
- **nothing secret is bound into the jail**: the jail binds whole directories read-only (the
  interpreter's prefixes, the virtual environment, the site-packages); a state directory, keys
  or a dataset directory under one of them would be readable by every job.
"""

from __future__ import annotations

import grp
import pwd
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

from gateway.errors import ServiceUnavailable

__all__ = ["HOST_FILES", "HostFiles", "check_jail_binds", "check_job_uids"]


def _has_account(uid: int) -> bool:
    try:
        pwd.getpwuid(uid)
    except KeyError:
        return False
    return True


def _has_group(gid: int) -> bool:
    try:
        grp.getgrgid(gid)
    except KeyError:
        return False
    return True


@dataclass(frozen=True, slots=True)
class HostFiles:
    """Where the host lists its accounts, groups and subordinate id ranges, and how it is asked
    whether an id is an account's or a group's (NSS, every source it is configured with)."""

    passwd: Path = Path("/etc/passwd")
    group: Path = Path("/etc/group")
    subuid: Path = Path("/etc/subuid")
    subgid: Path = Path("/etc/subgid")
    has_account: Callable[[int], bool] = _has_account
    has_group: Callable[[int], bool] = _has_group


HOST_FILES = HostFiles()

_RULE = (
    "sandbox_job_uids: the range must be used by no account or group of this host and overlap no "
    "subordinate id range (/etc/passwd, /etc/group, /etc/subuid, /etc/subgid, the account database)"
)
MAX_JOB_UIDS = 65_536
"""The widest range a worker accepts: each of its ids is looked up in the account database."""


def _lines(path: Path) -> Iterable[tuple[int, list[str]]]:
    """(line number, colon-separated fields) of a host file; none if the file does not exist.
    NIS compatibility lines (`+`, `-`) and comments are skipped."""
    if not path.exists():
        return
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError as error:
        raise ServiceUnavailable(f"{_RULE}; {path} cannot be read ({type(error).__name__})") from None
    for number, line in enumerate(text.splitlines(), start=1):
        if line.strip() and not line.startswith(("#", "+", "-")):
            yield number, line.split(":")


def _number(path: Path, number: int, field: str) -> int:
    try:
        value = int(field)
    except ValueError:
        raise ServiceUnavailable(f"{_RULE}; line {number} of {path} is not understood") from None
    if value < 0:
        raise ServiceUnavailable(f"{_RULE}; line {number} of {path} is not understood")
    return value


def _ranges(files: HostFiles) -> Iterable[tuple[Path, int, int, int]]:
    """(file, line, first id, last id) of every id or id range the host hands out."""
    for number, fields in _lines(files.passwd):  # name:password:uid:gid:...
        if len(fields) < 4:
            raise ServiceUnavailable(f"{_RULE}; line {number} of {files.passwd} is not understood")
        for field in fields[2:4]:
            value = _number(files.passwd, number, field)
            yield files.passwd, number, value, value
    for number, fields in _lines(files.group):  # name:password:gid:members
        if len(fields) < 3:
            raise ServiceUnavailable(f"{_RULE}; line {number} of {files.group} is not understood")
        value = _number(files.group, number, fields[2])
        yield files.group, number, value, value
    for path in (files.subuid, files.subgid):  # owner:first:count
        for number, fields in _lines(path):
            if len(fields) != 3:
                raise ServiceUnavailable(f"{_RULE}; line {number} of {path} is not understood")
            first, count = _number(path, number, fields[1]), _number(path, number, fields[2])
            if count:
                yield path, number, first, first + count - 1


def check_job_uids(job_uids: tuple[int, int], files: HostFiles = HOST_FILES) -> None:
    """Refuse (ServiceUnavailable naming the setting and the rule, and where the clash is) a job
    uid range that any account, group or subordinate range of the host uses, in its files or in
    the account database. Jobs run with the same number as uid and gid, so both are checked
    against both."""
    first, last = job_uids
    if not 1000 <= first <= last:
        raise ServiceUnavailable("sandbox_job_uids: give a first and a last uid, from 1000 up")
    if last - first >= MAX_JOB_UIDS:
        raise ServiceUnavailable(f"sandbox_job_uids: at most {MAX_JOB_UIDS} uids")
    for path, number, low, high in _ranges(files):
        if low <= last and first <= high:
            raise ServiceUnavailable(f"{_RULE}; line {number} of {path} uses ids in it")
    # SECURITY: an account or group only a directory service knows is in no file above.
    for number in range(first, last + 1):
        if files.has_account(number) or files.has_group(number):
            raise ServiceUnavailable(f"{_RULE}; the account database has an account or group with id {number}")


def check_jail_binds(bound: Iterable[Path], protected: Mapping[str, Path]) -> None:
    """Refuse (ServiceUnavailable naming what and why) when a protected path (`protected`: what
    it is, by name, and where) lies under a directory the jail binds: every job could read it.
    Both sides are compared resolved, so a symbolic link does not hide the overlap."""
    resolved = [p.resolve() for p in bound]
    for name, path in protected.items():
        target = path.resolve()
        for directory in resolved:
            if target.is_relative_to(directory):
                raise ServiceUnavailable(
                    f"{name} lies under {directory}, which the job jail binds read-only: every job could "
                    f"read it. Move it out of the interpreter's and the virtual environment's directories"
                )
