"""The `veilgate` command line. Thin: each command calls one service or leaf."""

from __future__ import annotations

import contextlib
import getpass
import json
import os
import re
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Literal

import typer
import uvicorn
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TaskID, TextColumn, TimeElapsedColumn

from gateway import demo_data
from gateway.app import create_app
from gateway.audit import AuditLog, open_log
from gateway.catalog import CatalogStore
from gateway.domain.policy import FreezeKind
from gateway.domain.principal import Role
from gateway.errors import InvalidRequest, VeilgateError
from gateway.freezes import FreezeStore, open_freezes
from gateway.http_server import NoDelayH11Protocol
from gateway.policy import load_bundle
from gateway.policy_store import open_policy_store
from gateway.services import (
    audit_trail,
    authentication,
    database_import,
    disclosure_report,
    doctor,
    metering,
    policy_admin,
    policy_check,
    receipts,
    registration,
    tracker,
)
from gateway.services import demo_setup as demo_service
from gateway.services import jobs as jobs_service
from gateway.services.runtime import Runtime
from gateway.settings import Settings, load_settings
from gateway.signing import KeyRing
from gateway.state.backend import open_accounts
from gateway.state.ports import PRIVILEGED, AccountStore

app = typer.Typer(help="Veilgate: answers about public data, never the records.", no_args_is_help=True)
keys_app = typer.Typer(help="Signing keys: create, rotate, revoke.", no_args_is_help=True)
clients_app = typer.Typer(help="Client accounts for OAuth2 client credentials.", no_args_is_help=True)
demo_app = typer.Typer(help="The demo data domain.", no_args_is_help=True)
receipt_app = typer.Typer(help="Receipts: check them offline.", no_args_is_help=True)
audit_app = typer.Typer(help="The audit log: verify, export, checkpoint, witness.", no_args_is_help=True)
policy_app = typer.Typer(help="The policy bundle: check, propose a reload, roll back.", no_args_is_help=True)
usage_app = typer.Typer(help="Usage and fees.", no_args_is_help=True)
budget_app = typer.Typer(help="Privacy budgets.", no_args_is_help=True)
database_app = typer.Typer(help="The PostgreSQL database that replicas share.", no_args_is_help=True)
disclosure_app = typer.Typer(help="Public disclosure.", no_args_is_help=True)
jobs_app = typer.Typer(help="Approved analysis code.", no_args_is_help=True)
app.add_typer(keys_app, name="keys")
app.add_typer(receipt_app, name="receipt")
app.add_typer(audit_app, name="audit")
app.add_typer(policy_app, name="policy")
app.add_typer(usage_app, name="usage")
app.add_typer(budget_app, name="budget")
app.add_typer(database_app, name="database")
app.add_typer(disclosure_app, name="disclosure")
app.add_typer(jobs_app, name="jobs")
app.add_typer(clients_app, name="clients")
app.add_typer(demo_app, name="demo")

console = Console(stderr=True, soft_wrap=True)  # one message, one line: logs and scripts grep them
ConfigOption = Annotated[
    Path | None, typer.Option("--config", "-c", envvar="VEILGATE_CONFIG", help="TOML config file.")
]


DEMO_CONFIG = Path(".demo") / "veilgate.toml"


def _settings(config: Path | None, *, creating: bool = False) -> Settings:
    """The installation: `--config`, else VEILGATE_CONFIG (both given to `config` by Typer), else
    ./veilgate.toml, else the demo's .demo/veilgate.toml (said in one line). With none of them, only
    a command that creates an installation (`creating`) goes on, on the default ./state."""
    if config is not None and not config.is_file():
        _fail(f"config file {config} does not exist")
    if config is None:
        config = next((c for c in (Path("veilgate.toml"), DEMO_CONFIG) if c.is_file()), None)
        if config == DEMO_CONFIG:
            console.print(f"[dim]using the demo's configuration {config.resolve()}[/dim]", highlight=False)
    settings = load_settings(config)
    if config is None and not creating and not settings.state_dir.exists():
        _fail(
            "no configuration found: pass --config FILE, set VEILGATE_CONFIG, or run where veilgate.toml "
            "(or the demo's .demo/veilgate.toml) is"
        )
    return settings


def _fail(message: str) -> None:
    console.print(f"[red]error:[/red] {message}")
    raise typer.Exit(1)


def _run(action: str) -> _Guard:
    return _Guard(action)


class _Guard:
    """Turn a VeilgateError into a one-line message and exit code 1, never a traceback."""

    def __init__(self, action: str) -> None:
        self.action = action

    def __enter__(self) -> None:
        return None

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, _tb: object) -> Literal[False]:
        if isinstance(exc, VeilgateError):
            console.print(f"[red]{self.action} failed:[/red] {exc.detail}")
            raise typer.Exit(1)
        return False


@contextmanager
def _runtime(action: str, config: Path | None) -> Iterator[Runtime]:
    """The whole runtime, for a command that acts like the server; errors become one line."""
    settings = _settings(config)
    with _run(action):
        rt = Runtime.open(settings)
        try:
            yield rt
        finally:
            rt.close()


def _progress(*, transient: bool = False) -> Progress:
    return Progress(
        SpinnerColumn(),
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
        transient=transient,
    )


def _data_progress(bar: Progress) -> demo_data.ProgressFn:
    tasks: dict[str, TaskID] = {}

    def update(dataset: str, done: int, total: int) -> None:
        if dataset not in tasks:
            tasks[dataset] = bar.add_task(dataset, total=total)
        bar.update(tasks[dataset], completed=done, total=total)

    return update


@app.command("demo-data")
def demo_data_command(
    out: Annotated[Path, typer.Option(help="Directory for the Parquet files and catalogue entries.")],
    scale: Annotated[float, typer.Option(min=0.001, help="1 = 10k enterprises, ~400k contribution rows.")] = 1.0,
    seed: Annotated[int, typer.Option(help="Same seed, same bytes.")] = 20261128,
    canary: Annotated[str | None, typer.Option(help="Plant this string in raw values (leak tests).")] = None,
) -> None:
    """Generate deterministic synthetic public data for the demo domain."""
    with _progress() as bar:
        summary = demo_data.generate(out, scale=scale, seed=seed, canary=canary, progress=_data_progress(bar))
    for name, rows in summary.rows.items():
        console.print(f"{name}: {rows:,} rows -> {summary.files[name]}")


@app.command()
def register(
    entry: Annotated[Path, typer.Argument(help="Catalogue entry (YAML).")],
    source: Annotated[Path, typer.Option(help="Data file, Parquet or CSV.")],
    config: ConfigOption = None,
    correction: Annotated[bool, typer.Option(help="Record this as a correction of the current version.")] = False,
    note: Annotated[str, typer.Option(help="Why: kept in the public registration history.")] = "",
) -> None:
    """Check a data file against its catalogue entry and make it the served version."""
    settings = _settings(config, creating=True)
    with _run("registration"), _progress() as bar:
        task = bar.add_task("registering", total=None)
        outcome = registration.register(
            CatalogStore(settings.data_path),
            settings.data_path,
            entry,
            source,
            correction=correction,
            note=note,
            progress=lambda step: bar.update(task, description=step),
        )
        bar.update(task, description="done", total=1, completed=1)
    record = outcome.record
    state = "unchanged (same content version)" if outcome.unchanged else record.history[-1].kind.value
    typer.echo(
        f"{record.entry.dataset}: {state}; version {record.version}; {outcome.rows:,} rows served; "
        f"{outcome.rows_dropped_by_contribution_bound:,} rows dropped by the contribution bound "
        f"(at most {record.entry.privacy_unit.max_rows} per {record.entry.privacy_unit.column})"
    )


@app.command()
def deregister(
    dataset: str,
    config: ConfigOption = None,
    note: Annotated[str, typer.Option(help="Why: kept in the public registration history.")] = "",
) -> None:
    """Cancel a dataset's registration: it stays listed as cancelled and is no longer served."""
    settings = _settings(config)
    with _run("cancellation"):
        registration.cancel(CatalogStore(settings.data_path), dataset, note=note)
    typer.echo(f"{dataset}: cancelled")


class KeyPurpose(StrEnum):
    TOKEN = "token"  # noqa: S105 - the name of a key ring, not a secret
    RECEIPT = "receipt"


def _key_dir(settings: Settings, purpose: KeyPurpose) -> Path:
    return settings.token_keys_dir if purpose is KeyPurpose.TOKEN else settings.receipt_keys_dir


PurposeOption = Annotated[KeyPurpose, typer.Option(help="Which key ring.")]


@keys_app.command("init")
def keys_init(config: ConfigOption = None) -> None:
    """Create the token-signing and receipt-signing key rings if they do not exist."""
    settings = _settings(config, creating=True)
    with _run("key creation"):
        for purpose in KeyPurpose:
            ring = KeyRing.create(_key_dir(settings, purpose))
            typer.echo(f"{purpose.value}: active key {ring.active.kid}")


@keys_app.command("rotate")
def keys_rotate(config: ConfigOption = None, purpose: PurposeOption = KeyPurpose.RECEIPT) -> None:
    """Make a new active key; the old one is retired and stays published."""
    settings = _settings(config)
    with _run("rotation"):
        info = KeyRing.load(_key_dir(settings, purpose)).rotate()
    typer.echo(f"{purpose.value}: new active key {info.kid}")


@keys_app.command("revoke")
def keys_revoke(
    kid: str,
    since: Annotated[datetime, typer.Option(help="When the key was compromised (ISO 8601; UTC if no offset).")],
    config: ConfigOption = None,
    purpose: PurposeOption = KeyPurpose.RECEIPT,
) -> None:
    """Mark a compromised key as revoked."""
    settings = _settings(config)
    since = since if since.tzinfo is not None else since.replace(tzinfo=UTC)
    with _run("revocation"):
        KeyRing.load(_key_dir(settings, purpose)).revoke(kid, since)
    typer.echo(f"{purpose.value}: key {kid} revoked since {since.isoformat()}")


def _client_store(settings: Settings) -> contextlib.closing[AccountStore]:
    """The accounts as configured, for one command (no listening: it reads what it needs)."""
    return contextlib.closing(open_accounts(settings, listen=False))


def _freeze_store(settings: Settings) -> contextlib.closing[FreezeStore]:
    """The stops as configured, for one command: works while no gateway can start."""
    dsn, schema = settings.database_dsn, settings.database_schema
    return contextlib.closing(open_freezes(settings.freezes_file, dsn=dsn, schema=schema, listen=False))


@clients_app.command("add")
def clients_add(
    client_id: str,
    org: Annotated[str, typer.Option(help="The client's organisation.")],
    role: Annotated[list[Role], typer.Option(help="Repeat for several roles.")],
    person: Annotated[str | None, typer.Option(help="Who holds it: two approvals need two people.")] = None,
    config: ConfigOption = None,
) -> None:
    """Create a client; its secret is printed once and stored only as a hash. Privileged roles
    only while setting up (fewer administrators than `policy_approvals`): after that, through
    `POST /v1/admin/consumers` and a second administrator's approval."""
    settings = _settings(config, creating=True)
    with _run("client creation"), _client_store(settings) as clients:
        admins = {a.identity for a in clients.all() if Role.ADMIN in a.roles and not a.disabled}
        if PRIVILEGED & set(role) and len(admins) >= max(1, settings.policy_approvals):
            _fail("privileged roles are granted through POST /v1/admin/consumers and a second administrator's approval")
            return
        secret = clients.add(client_id, org, role, person=person)
    typer.echo(json.dumps({"client_id": client_id, "client_secret": secret}))


@clients_app.command("disable")
def clients_disable(client_id: str, config: ConfigOption = None) -> None:
    """Disable a client: its tokens stop working on the next request."""
    settings = _settings(config)
    with _run("disabling"), _client_store(settings) as clients:
        clients.disable(client_id)
    typer.echo(f"{client_id}: disabled")


@clients_app.command("list")
def clients_list(config: ConfigOption = None) -> None:
    settings = _settings(config)
    with _client_store(settings) as clients:
        accounts = clients.all()
    for c in accounts:
        roles = ",".join(sorted(r.value for r in c.roles))
        state = "disabled" if c.disabled else "enabled"
        typer.echo(f"{c.client_id}\t{c.organisation}\t{c.person or '-'}\t{roles}\t{state}")


@app.command()
def token(
    client: Annotated[str, typer.Option(help="Client id to mint a token for.")],
    config: ConfigOption = None,
) -> None:
    """Print an access token for a client, for local administration (needs the key files)."""
    settings = _settings(config)
    with _run("token"), _client_store(settings) as clients:
        found = clients.find(client)
        if found is None or found.disabled:
            _fail(f"no enabled client {client!r}")
            return
        keys = KeyRing.load(settings.token_keys_dir)
        typer.echo(
            authentication.mint_token(
                keys,
                found.client_id,
                found.organisation,
                found.roles,
                issuer=settings.issuer,
                audience=settings.audience,
                ttl_seconds=settings.token_ttl_seconds,
            )
        )


@app.command("doctor")
def doctor_command(config: ConfigOption = None) -> None:
    """Check an installation and say what to fix."""
    settings = _settings(config)
    findings = doctor.diagnose(settings)
    for f in findings:
        mark = "[green]ok[/green]  " if f.ok else "[red]FAIL[/red]"
        console.print(f"{mark} {f.check}: {f.message}")
    if not all(f.ok for f in findings):
        raise typer.Exit(1)


@app.command()
def serve(
    config: ConfigOption = None,
    host: Annotated[str | None, typer.Option(help="Overrides the config.")] = None,
    port: Annotated[int | None, typer.Option(help="Overrides the config.")] = None,
    workers: Annotated[int, typer.Option(min=1, max=64, help="Worker processes; they share the state.")] = 1,
) -> None:
    """Serve the gateway with uvicorn."""
    settings = _settings(config)
    with _run("startup"):
        application = create_app(settings)  # fails fast, with a message, before any worker starts
    # SECURITY: no uvicorn access log. It would write raw paths and query strings, which a caller
    # controls and could fill with a person's key; every request is in the audit log instead.
    bind = {
        "host": host or settings.host,
        "port": port or settings.port,
        "log_level": "info",
        "access_log": False,
        "http": NoDelayH11Protocol,
    }
    if workers == 1:
        uvicorn.run(application, **bind)  # type: ignore[arg-type]
        return
    application.state.runtime.close()
    if config is not None:
        os.environ["VEILGATE_CONFIG"] = str(config.resolve())
    uvicorn.run("gateway.app:app_from_environment", factory=True, workers=workers, **bind)  # type: ignore[arg-type]


@app.command("worker")
def worker_command(
    config: ConfigOption = None,
    poll: Annotated[float, typer.Option(min=0.1, max=60, help="Seconds between looks at the job store.")] = 0.5,
) -> None:
    """Run approved jobs in their jails: the only process that runs jobs, and the one that needs
    the privileges for it (root, or CAP_SETUID, CAP_SETGID, CAP_CHOWN and CAP_KILL)."""
    import logging  # noqa: PLC0415
    import signal  # noqa: PLC0415
    import threading  # noqa: PLC0415

    from gateway.services import job_worker  # noqa: PLC0415

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    stop = threading.Event()
    for number in (signal.SIGINT, signal.SIGTERM):
        signal.signal(number, lambda _n, _f: stop.set())
    with _runtime("worker", config) as rt, job_worker.lock(rt):
        job_worker.serve(rt, stop=stop, poll_seconds=poll)


@demo_app.command("setup")
def demo_setup_command(
    directory: Annotated[Path, typer.Option("--dir", help="Demo directory.")] = Path(".demo"),
    policy_dir: Annotated[Path, typer.Option(help="Policy bundle the demo serves.")] = Path("policies"),
    scale: Annotated[float, typer.Option(min=0.001)] = 1.0,
    port: Annotated[int, typer.Option(help="Port the tour's requests use.")] = 8000,
) -> None:
    """Generate, register and configure the demo data domain; print the tour."""
    with _run("demo setup"), _progress() as bar:
        result = demo_service.setup(
            directory, policy_dir, scale=scale, say=console.print, data_progress=_data_progress(bar)
        )
    sys.stdout.write(demo_service.tour(result, f"http://127.0.0.1:{port}") + "\n")


def _read_text_argument(value: str) -> str:
    """A compact JWS given inline, as a file path, or as `-` for stdin."""
    if value == "-":
        return sys.stdin.read().strip()
    if re.fullmatch(r"[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*", value.strip()):
        return value.strip()
    path = Path(value)
    if not path.is_file():
        _fail(f"{value} is neither a compact JWS nor a file")
    return path.read_text().strip()


def _saved_receipt(text: str) -> tuple[str, dict[str, object] | None]:
    """The JWS, and the document a saved file claims it signs: a client's saved Receipt
    (`"format": "veilgate-receipt"`, with `document`) or a saved response body (the body itself)."""
    if not text.startswith("{"):
        return text, None
    try:
        saved = json.loads(text)
    except ValueError:
        saved = None
    if not isinstance(saved, dict) or not isinstance(saved.get("receipt"), str):
        _fail("the file is JSON but holds no `receipt`")
        return text, None
    if saved.get("format") == "veilgate-receipt":
        return saved["receipt"], saved.get("document")
    return saved["receipt"], {k: v for k, v in saved.items() if k != "receipt"}


@receipt_app.command("verify")
def receipt_verify(
    receipt: Annotated[
        str, typer.Argument(help="The receipt: a JWS, a file with one, a saved Receipt or response body, or -.")
    ],
    jwks: Annotated[str, typer.Option(help="The published keys: a file or a URL such as .../.well-known/jwks.json.")],
) -> None:
    """Check a receipt's signature, key, algorithm and shape; print its result document."""
    token_text, claimed = _saved_receipt(_read_text_argument(receipt))
    with _run("receipt verification"):
        document = receipts.verify_receipt(token_text, receipts.load_jwks(jwks))
    if claimed is not None and claimed != json.loads(receipts.signed_payload(token_text)):
        _fail("the saved document differs from what its receipt signs")
    console.print(f"[green]valid receipt[/green] for request {document.request_id}, audit leaf {document.audit_seq}")
    sys.stdout.write(json.dumps(document.model_dump(mode="json"), indent=2, ensure_ascii=False) + "\n")


def _open_audit(settings: Settings) -> AuditLog:
    if not settings.database_dsn and not (settings.audit_dir / "log.sqlite3").exists():
        _fail(f"no audit log under {settings.audit_dir}; has this installation served yet?")
    return open_log(settings.audit_dir, dsn=settings.database_dsn, schema=settings.database_schema)


@audit_app.command("verify")
def audit_verify(
    config: ConfigOption = None,
    witness_file: Annotated[
        list[Path] | None, typer.Option("--witness", help="A checkpoint JWS a witness kept (repeatable).")
    ] = None,
    jwks: Annotated[
        str | None, typer.Option(help="Published keys (file or URL); default: this installation's.")
    ] = None,
) -> None:
    """Check every leaf, the tree, every checkpoint and their consistency; name the first bad record."""
    settings = _settings(config)
    with _run("audit verification"):
        keys = receipts.load_jwks(jwks) if jwks else KeyRing.load(settings.receipt_keys_dir).jwks()
        log = _open_audit(settings)
        witnessed = [p.read_text().strip() for p in witness_file or []]
        try:
            with _progress(transient=True) as bar:
                task = bar.add_task("leaves", total=log.size())
                report = audit_trail.verify_log(log, keys, witnessed=witnessed, progress=lambda n: bar.advance(task, n))
        finally:
            log.close()
    if not report.ok:
        _fail(f"the audit log does not verify: {report.failure}")
    typer.echo(
        f"audit log verified: leaves {report.leaves}, checkpoints {report.checkpoints}, "
        f"witnessed checkpoints {report.witnessed}"
    )


@audit_app.command("export")
def audit_export(
    out: Annotated[Path, typer.Option(help="JSON lines file to write; - for stdout.")],
    config: ConfigOption = None,
) -> None:
    """Write every leaf as one JSON line, exactly the bytes that are hashed into the tree."""
    settings = _settings(config)
    log = _open_audit(settings)
    try:
        handle = sys.stdout.buffer if str(out) == "-" else out.open("wb")
        with _progress(transient=True) as bar:
            task = bar.add_task("leaves", total=log.size())
            for row in log.stored():
                handle.write(row.record + b"\n")
                bar.advance(task)
        handle.flush()
        if handle is not sys.stdout.buffer:
            handle.close()
    finally:
        log.close()


@audit_app.command("checkpoint")
def audit_checkpoint(config: ConfigOption = None) -> None:
    """Sign a checkpoint of the log now, if it grew since the last one."""
    settings = _settings(config)
    with _run("checkpoint"):
        log = _open_audit(settings)
        try:
            made = audit_trail.make_checkpoint(log, KeyRing.load(settings.receipt_keys_dir), issuer=settings.issuer)
        finally:
            log.close()
    typer.echo(f"checkpoint signed: {made.size} leaves" if made else "the log has not grown since the last checkpoint")


@audit_app.command("witness")
def audit_witness(
    url: Annotated[str, typer.Argument(help="The gateway's base URL, e.g. https://gateway.example.org")],
    store: Annotated[Path, typer.Option(help="File where this witness keeps the newest checkpoint it saw.")],
) -> None:
    """Check that the gateway's newest checkpoint extends the one kept from the last run, then keep it."""
    kept = store.read_text().strip() if store.is_file() else None
    with _run("witnessing"):
        report = audit_trail.witness(url, kept)
    if report.latest is None or report.checkpoint is None:
        typer.echo("the gateway has published no checkpoint yet")
        return
    store.write_text(report.checkpoint + "\n")
    start = f"extends the kept checkpoint of {report.previous.size} leaves" if report.previous else "first seen"
    typer.echo(f"checkpoint of {report.latest.size} leaves at {report.latest.time}: {start}; kept in {store}")


@policy_app.command("check")
def policy_check_command(
    directory: Annotated[Path, typer.Argument(help="The bundle's directory.")],
    config: ConfigOption = None,
) -> None:
    """Validate a bundle completely, against itself and the catalogue; print every error with file and line."""
    settings = _settings(config)
    bundle, errors = policy_check.check(directory, CatalogStore(settings.data_path))
    for error in errors:
        console.print(f"[red]{error}[/red]", highlight=False)
    if bundle is None:
        _fail(f"the bundle in {directory} has {len(errors)} error(s)")
        return
    typer.echo(
        f"bundle {bundle.version}: {len(bundle.verification_services)} verification service(s), "
        f"{len(bundle.aggregate_templates)} aggregate template(s), {len(bundle.models)} model(s), "
        f"{len(bundle.job_services)} job service(s), "
        f"{len(bundle.grants)} grant(s), {len(bundle.consumers)} consumer(s)"
    )


@policy_app.command("reload")
def policy_reload_command(config: ConfigOption = None) -> None:
    """Propose the YAML bundle of `policy_dir`, after the same checks (a running server does the
    same on SIGHUP): in force once an administrator approves it (at once with
    `policy_approvals = 1`); a bundle that fails changes nothing."""
    with _runtime("policy reload", config) as rt:
        change = policy_admin.reload_from_disk(rt, by=f"cli:{getpass.getuser()}")
    if change.active is not None:
        typer.echo(f"bundle {change.active} in force")
    elif change.proposal is not None:
        typer.echo(
            f"bundle {change.proposal['version']} proposed as {change.proposal['id']}: in force once an "
            f"administrator approves it (POST /v1/admin/policy/proposals/{change.proposal['id']}/approve)"
        )


@policy_app.command("rollback")
def policy_rollback_command(config: ConfigOption = None) -> None:
    """Restore the bundle that was in force before the current one."""
    settings = _settings(config)
    with _run("policy rollback"):
        dsn, schema = settings.database_dsn, settings.database_schema
        store = open_policy_store(settings.policy_store_dir, dsn=dsn, schema=schema, listen=False)
        with contextlib.closing(store):
            version = store.rollback(by=f"cli:{getpass.getuser()}")
    typer.echo(f"bundle {version} in force again")


@app.command("tracker")
def tracker_command(
    key: Annotated[str, typer.Argument(help="The credit code or resident id; - reads it from stdin.")],
    config: ConfigOption = None,
) -> None:
    """Who asked about this key, when and under which grant, from the audit log's keyed hashes."""
    value = sys.stdin.readline().strip() if key == "-" else key
    with _runtime("tracker", config) as rt:
        rows = tracker.track(rt, value)
    for row in rows:
        typer.echo(
            f"{row['time']}  {row['consumer'] or '-':20} {row['service'] or '-':26} "
            f"grant {row['grant'] or '-':24} {row['decision']} ({row['status']})  leaf {row['seq']}"
        )
    console.print(f"{len(rows)} request(s) about this key")


@jobs_app.command("run-local")
def jobs_run_local(
    code: Annotated[Path, typer.Argument(help="The job's Python file.", exists=True, dir_okay=False)],
    *,
    service: Annotated[str, typer.Option(help="The job service it will be submitted under.")],
    dataset: Annotated[list[str], typer.Option(help="A dataset the job reads (repeat for several).")],
    output: Annotated[list[str] | None, typer.Option(help="A DP output the job declares (repeat for several).")] = None,
    tables: Annotated[
        Path | None,
        typer.Option(
            help="SDC services: a JSON file with the declared tables, as `tables` of a submission.",
            exists=True,
            dir_okay=False,
        ),
    ] = None,
    rows: Annotated[int, typer.Option(min=1, max=100_000, help="Rows of the synthetic sample.")] = 1000,
    config: ConfigOption = None,
) -> None:
    """Run a job on the synthetic sample of its datasets, with the job API and the output checks
    of the domain, and print the outcome in the shape the gateway releases it."""
    settings = _settings(config)
    try:
        bundle = load_bundle(settings.policy_dir)
        catalog = CatalogStore(settings.data_path)
        entries = [catalog.get(name).entry for name in dataset]
        try:
            declared = None if tables is None else json.loads(tables.read_text())
        except ValueError:
            raise InvalidRequest("--tables: not a JSON file") from None
        outcome = jobs_service.run_local(
            bundle, service, entries, code.read_text(), list(output or []), rows=rows,
            work_dir=settings.state_dir / "jobs" / "local", tables=declared,
        )  # fmt: skip
    except VeilgateError as exc:
        _fail(str(exc))
        return
    console.print("[dim]synthetic sample made from the catalogue alone; run without isolation[/dim]")
    typer.echo(json.dumps(outcome, indent=2, ensure_ascii=False, default=str))
    if not outcome["completed"]:
        raise typer.Exit(1)


@usage_app.command("report")
def usage_report_command(
    since: Annotated[datetime, typer.Option(formats=["%Y-%m-%d"], help="First UTC day.")],
    until: Annotated[datetime, typer.Option(formats=["%Y-%m-%d"], help="Last UTC day.")],
    config: ConfigOption = None,
) -> None:
    """Every consumer's statement for a period, as JSON: calls, claims, billable claims, fees."""
    with _runtime("usage report", config) as rt:
        report = metering.statement(rt, since.date(), until.date())
    sys.stdout.write(json.dumps(report, indent=2, ensure_ascii=False) + "\n")


@budget_app.command("stale")
def budget_stale(
    older_than_minutes: Annotated[
        int, typer.Option(min=1, help="Older than this, a reservation's request is over (longer than any query).")
    ] = 60,
    settle: Annotated[
        bool,
        typer.Option(
            help="Give back reservations that read no data, commit the others; drop holds, free idempotency keys."
        ),
    ] = False,
    config: ConfigOption = None,
) -> None:
    """What crashed requests left (reservations, release holds, running idempotency keys): listed, or settled."""
    cutoff = (datetime.now(UTC) - timedelta(minutes=older_than_minutes)).isoformat()
    with _runtime("stale reservations", config) as rt:
        stale = rt.budget.stale(cutoff)
        for found in stale:
            eps = found.amount.epsilon
            typer.echo(f"{found.id}\t{found.state}\tepsilon {eps}\t{found.created}\t{','.join(found.accounts)}")
        held = rt.budget.stale_holds(cutoff)
        for entry in held:
            typer.echo(f"{entry.kind}\t{entry.name}\t{entry.created}")
        if settle:
            returned, committed = rt.budget.settle_stale(cutoff)
            holds, keys = rt.budget.settle_stale_holds(cutoff)
            typer.echo(f"given back (no data read): {returned}; committed (data read, the charge stays): {committed}")
            typer.echo(f"holds dropped: {holds}; idempotency keys freed: {keys}")
        elif stale or held:
            typer.echo(
                f"{len(stale)} stale reservation(s), {len(held)} hold(s) or running key(s); "
                "--settle gives back reservations that read no data, commits the others, and frees the rest"
            )


@database_app.command("import")
def database_import_command(config: ConfigOption = None) -> None:
    """Move this installation's history from its files into `database_dsn`, before replicas start there."""
    settings = _settings(config)
    with _run("import"):
        imported = database_import.import_installation(settings)
    for step in imported:
        typer.echo(f"{step.store}: " + ("it already holds data; nothing copied" if step.copied is None
                                        else f"{step.copied} copied"))  # fmt: skip


@disclosure_app.command("report")
def disclosure_report_command(
    year: Annotated[int, typer.Option(min=2000, max=2100, help="The calendar year.")],
    out: Annotated[Path, typer.Option(help="Directory for disclosure-YEAR.json and disclosure-YEAR.md.")] = Path("."),
    config: ConfigOption = None,
) -> None:
    """The annual disclosure report, as JSON and as a readable document."""
    with _runtime("disclosure report", config) as rt:
        report = disclosure_report.build(rt, year)
    out.mkdir(parents=True, exist_ok=True)
    (out / f"disclosure-{year}.json").write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n")
    (out / f"disclosure-{year}.md").write_text(disclosure_report.markdown(report))
    typer.echo(f"wrote {out / f'disclosure-{year}.json'} and {out / f'disclosure-{year}.md'}")


@app.command("freeze")
def freeze_command(
    kind: Annotated[FreezeKind, typer.Argument(help="What to stop.")],
    name: Annotated[str, typer.Argument(help="Client id, organisation, dataset or service name.")],
    reason: Annotated[str, typer.Option(help="Why; recorded and shown to those refused.")],
    config: ConfigOption = None,
) -> None:
    """Emergency stop, effective on the next request of every gateway process; works without the API."""
    settings = _settings(config)
    with _run("freeze"), _freeze_store(settings) as store:
        made = store.freeze(kind, name, by=f"cli:{getpass.getuser()}", reason=reason)
    typer.echo(f"{made.kind.value} {made.name} frozen since {made.since.isoformat()}")


@app.command("unfreeze")
def unfreeze_command(
    kind: Annotated[FreezeKind, typer.Argument(help="What to resume.")],
    name: Annotated[str, typer.Argument(help="Client id, organisation, dataset or service name.")],
    reason: Annotated[str, typer.Option(help="Why; recorded in the history.")],
    config: ConfigOption = None,
) -> None:
    """Lift a freeze."""
    settings = _settings(config)
    with _run("unfreeze"), _freeze_store(settings) as store:
        store.unfreeze(kind, name, by=f"cli:{getpass.getuser()}", reason=reason)
    typer.echo(f"{kind.value} {name} no longer frozen")


if __name__ == "__main__":  # pragma: no cover
    app()
