"""A worker refuses to start on a host where the jail's assumptions do not hold: a job uid that
an account, a group or a subordinate id range also uses, or a secret (the state directory, the
keys, a dataset) inside a directory the jail binds for every job to read."""

from __future__ import annotations

import dataclasses
import pwd
import sys
from pathlib import Path

import pytest

from gateway import job_host, sandbox_client
from gateway.errors import ServiceUnavailable
from gateway.services import job_worker
from tests.conftest import make_settings
from tests.jobs.conftest import needs_isolation

RANGE = (200_000, 200_999)
PASSWD = "root:x:0:0:root:/root:/bin/bash\nnobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n"
GROUP = "root:x:0:\nnogroup:x:65534:\n"


def _host(tmp_path: Path, **files: str) -> job_host.HostFiles:
    """Host files under tmp_path: a clean host, with `files` (by name) replaced."""
    contents = {"passwd": PASSWD, "group": GROUP, "subuid": "alice:100000:65536\n", "subgid": "alice:100000:65536\n"}
    contents |= files
    tmp_path.mkdir(parents=True, exist_ok=True)
    for name, text in contents.items():
        (tmp_path / name).write_text(text)
    return job_host.HostFiles(*(tmp_path / name for name in ("passwd", "group", "subuid", "subgid")))


def _refusal(tmp_path: Path, **files: str) -> str:
    with pytest.raises(ServiceUnavailable) as refused:
        job_host.check_job_uids(RANGE, _host(tmp_path, **files))
    message = str(refused.value)
    assert message.startswith("sandbox_job_uids: the range must be used by no account or group"), message
    return message


def test_a_clean_host_passes(tmp_path: Path) -> None:
    job_host.check_job_uids(RANGE, _host(tmp_path))
    job_host.check_job_uids(RANGE, job_host.HostFiles(*(tmp_path / n for n in ("a", "b", "c", "d"))))  # none exist


@pytest.mark.parametrize(
    ("name", "text", "where"),
    [
        ("passwd", PASSWD + "svc:x:200500:1000::/srv:/bin/sh\n", "line 3 of"),  # an account's uid
        ("passwd", PASSWD + "svc:x:1001:200999::/srv:/bin/sh\n", "line 3 of"),  # an account's primary gid
        ("group", GROUP + "builders:x:200000:alice\n", "line 3 of"),
        ("subuid", "alice:100000:65536\nbob:165536:65536\n", "line 2 of"),  # 165536-231071 covers the range
        ("subgid", "bob:199999:2\n", "line 1 of"),  # one id at each side of the first uid
        ("subuid", "carol:200999:1\n", "line 1 of"),  # the last uid alone
    ],
)
def test_a_range_any_host_id_uses_is_refused(tmp_path: Path, name: str, text: str, where: str) -> None:
    assert f"{where} {tmp_path / name} uses ids in it" in _refusal(tmp_path, **{name: text})


def test_ranges_next_to_it_and_unreadable_lines(tmp_path: Path) -> None:
    job_host.check_job_uids(RANGE, _host(tmp_path, subuid="a:100000:100000\nb:201000:65536\n", subgid="c:0:0\n"))
    assert "line 1 of" in _refusal(tmp_path, subuid="alice:not-a-number:65536\n")
    assert "is not understood" in _refusal(tmp_path, passwd="root:x:0\n")
    with pytest.raises(ServiceUnavailable, match="from 1000 up"):
        job_host.check_job_uids((0, 10), _host(tmp_path))


def test_an_account_only_the_directory_service_knows_is_refused(tmp_path: Path) -> None:
    """An LDAP or sssd account is in no host file: the range's ids are asked of the account
    database too (here stand-ins for NSS that know one uid, then one gid, of the range)."""
    clean = _host(tmp_path)
    in_directory = dataclasses.replace(clean, has_account=lambda uid: uid == 200_777)
    with pytest.raises(ServiceUnavailable, match="the account database has an account or group with id 200777"):
        job_host.check_job_uids(RANGE, in_directory)
    group_only = dataclasses.replace(clean, has_group=lambda gid: gid == RANGE[0])
    with pytest.raises(ServiceUnavailable, match="sandbox_job_uids: the range must be used by no account"):
        job_host.check_job_uids(RANGE, group_only)
    job_host.check_job_uids(RANGE, dataclasses.replace(clean, has_account=lambda uid: uid == RANGE[1] + 1))
    with pytest.raises(ServiceUnavailable, match="at most 65536 uids"):
        job_host.check_job_uids((1000, 1000 + 65_536), clean)


def test_the_real_account_database_is_asked_even_with_empty_files(tmp_path: Path) -> None:
    """With host files that list nothing, a uid the system's NSS knows (an account of this
    machine, 1000 or above) is still refused: the lookups are the real `pwd` and `grp`."""
    known = sorted(entry.pw_uid for entry in pwd.getpwall() if 1000 <= entry.pw_uid < 2**31)
    if not known:
        pytest.skip("this machine has no account with a uid of 1000 or above")
    empty = job_host.HostFiles(*(tmp_path / n for n in ("a", "b", "c", "d")))
    with pytest.raises(ServiceUnavailable, match=f"the account database has an account or group with id {known[0]}"):
        job_host.check_job_uids((known[0], known[0] + 10), empty)


def _refused_because(settings_dir: Path, **over: object) -> str:
    settings = make_settings(settings_dir, **over)
    with pytest.raises(ServiceUnavailable) as refused:
        job_host.check_jail_binds(sandbox_client.allowed_paths(), job_worker.protected_paths(settings))
    return str(refused.value)


def test_secrets_under_a_directory_the_jail_binds_are_refused(tmp_path: Path) -> None:
    prefix = Path(sys.prefix).resolve()
    state = tmp_path / "state"
    (state / "data" / "payroll").mkdir(parents=True)
    settings = make_settings(state)
    job_host.check_jail_binds(sandbox_client.allowed_paths(), job_worker.protected_paths(settings))  # a safe layout
    # the state directory inside the virtual environment: every job could read it
    assert _refused_because(prefix / "veilgate-state").startswith("the state directory (state_dir) lies under")
    assert "which the job jail binds read-only" in _refused_because(prefix / "veilgate-state")
    # a data directory there, given apart from the state directory
    assert _refused_because(state, data_dir=prefix / "data").startswith("the data directory (data_dir) lies under")
    # keys and a dataset's directory that are links into a bound directory (not created: only resolved)
    (state / "keys").symlink_to(prefix / "lib")
    assert _refused_because(state).startswith("the token keys lies under")
    (state / "keys").unlink()
    (state / "data" / "wages").symlink_to(prefix / "lib", target_is_directory=True)
    assert _refused_because(state).startswith("the dataset directory wages lies under")


@needs_isolation
def test_a_worker_checks_the_host_before_anything_else(tmp_path: Path) -> None:
    clean = _host(tmp_path / "clean")
    state = tmp_path / "state"
    state.mkdir()
    assert job_worker.check_host(make_settings(state), clean) is None
    taken = make_settings(state).sandbox_job_uids[0] + 1
    busy = _host(tmp_path / "busy", passwd=PASSWD + f"svc:x:{taken}:{taken}::/srv:/bin/sh\n")
    with pytest.raises(ServiceUnavailable, match="sandbox_job_uids"):
        job_worker.check_host(make_settings(state), busy)
    with pytest.raises(ServiceUnavailable, match="state directory"):
        job_worker.check_host(make_settings(Path(sys.prefix) / "veilgate-state"), clean)
