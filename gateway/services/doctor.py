"""Check an installation and say what to fix, one finding per check."""

from __future__ import annotations

import contextlib
import stat
from dataclasses import dataclass
from pathlib import Path

import yaml

from gateway.atomic_files import check_secret_file
from gateway.catalog import CatalogStore
from gateway.domain.principal import Role
from gateway.engine import Domain
from gateway.errors import VeilgateError
from gateway.settings import Settings
from gateway.signing import KeyRing
from gateway.state.backend import accounts_file, open_accounts, open_log


@dataclass(frozen=True, slots=True)
class Finding:
    check: str
    ok: bool
    message: str


def _keys(directory: Path, purpose: str) -> Finding:
    try:
        ring = KeyRing.load(directory)
    except VeilgateError as exc:
        return Finding(f"{purpose} keys", False, f"{exc.detail}")
    return Finding(f"{purpose} keys", True, f"{len(ring.keys)} key(s), active {ring.active.kid}")


def _clients(settings: Settings) -> Finding:
    try:
        with contextlib.closing(open_accounts(settings, listen=False)) as store:
            clients = store.all()
        if not settings.database_dsn:
            check_secret_file(accounts_file(settings))
    except VeilgateError as exc:
        return Finding("client accounts", False, f"{exc.detail}; create one with `veilgate clients add`")
    admins = [c for c in clients if Role.ADMIN in c.roles and not c.disabled]
    if not admins:
        return Finding("client accounts", False, "no enabled admin client; `veilgate clients add ID --role admin`")
    return Finding("client accounts", True, f"{len(clients)} client(s), {len(admins)} admin(s)")


def _domain(settings: Settings) -> list[Finding]:
    catalog = CatalogStore(settings.data_path)
    records = catalog.records()
    if not records:
        return [Finding("data domain", False, f"no dataset registered under {settings.data_path}; `veilgate register`")]
    findings = []
    domain = Domain(
        settings.data_path,
        threads=settings.engine_threads,
        index_max_rows=settings.lookup_index_max_rows,
        spark_master=settings.spark_master,
    )
    try:
        for record in records:
            name = f"dataset {record.entry.dataset}"
            if not record.is_served:
                findings.append(Finding(name, True, f"{record.status}, not served"))
                continue
            try:
                with domain.snapshot(record.entry.dataset, record.version) as snap:
                    snap.count_rows()
                findings.append(Finding(name, True, f"version {record.version} opens read-only"))
            except VeilgateError as exc:
                findings.append(Finding(name, False, f"{exc.detail}; register it again"))
    finally:
        domain.close()
    return findings


def _audit(settings: Settings) -> Finding:
    directory = settings.audit_dir
    if not settings.database_dsn and not (directory / "log.sqlite3").exists():
        return Finding("audit log", True, "none yet: it is created when the gateway first starts")
    try:
        log = open_log(directory, dsn=settings.database_dsn, schema=settings.database_schema)
    except VeilgateError as exc:
        return Finding("audit log", False, exc.detail)
    try:
        size, latest = log.size(), log.latest_checkpoint()
    except VeilgateError as exc:
        return Finding("audit log", False, exc.detail)
    finally:
        log.close()
    signed = f"last checkpoint at {latest.size} leaves, {latest.time}" if latest else "no checkpoint yet"
    return Finding("audit log", True, f"{size} leaves, {signed}; `veilgate audit verify` checks it all")


def _policy(policy_dir: Path) -> Finding:
    if not policy_dir.is_dir():
        return Finding("policy bundle", False, f"{policy_dir} is not a directory; set policy_dir")
    files = sorted(policy_dir.rglob("*.yaml"))
    for path in files:
        try:
            yaml.safe_load(path.read_text(encoding="utf-8"))
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            where = f" line {mark.line + 1}" if mark is not None else ""
            return Finding("policy bundle", False, f"{path.name}{where} is not valid YAML")
    return Finding("policy bundle", True, f"{len(files)} YAML file(s) parse")


def _state_dir(state_dir: Path) -> Finding:
    if not state_dir.is_dir():
        return Finding("state directory", False, f"{state_dir} does not exist; run `make demo` or create it")
    if state_dir.stat().st_mode & stat.S_IWOTH:
        return Finding("state directory", False, f"{state_dir} is world-writable; chmod o-w it")
    return Finding("state directory", True, str(state_dir))


def diagnose(settings: Settings) -> list[Finding]:
    state = _state_dir(settings.state_dir)
    if not state.ok:
        return [state]
    return [
        state,
        _keys(settings.token_keys_dir, "token-signing"),
        _keys(settings.receipt_keys_dir, "receipt-signing"),
        _clients(settings),
        *_domain(settings),
        _audit(settings),
        _policy(settings.policy_dir),
    ]
