"""Factories: settings, a tiny registered demo domain with a canary, apps and tokens."""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Protocol, TypeVar

import httpx2
import pytest
import uvicorn
import yaml
from fastapi import FastAPI
from fastapi.testclient import TestClient

from gateway.app import create_app
from gateway.policy import read_bundle
from gateway.services import demo_setup
from gateway.settings import Settings
from gateway.state.backend import open_policy_store

REPO = Path(__file__).resolve().parent.parent
JOB_UIDS = (300_000 + (os.getpid() % 900) * 100, 300_000 + (os.getpid() % 900) * 100 + 99)
"""The job uids of this test process: a worker kills every process of its range when it starts,
and the jail tests look for leftovers there, so two test runs on one host must not share one."""
os.environ["VEILGATE_SANDBOX_JOB_UIDS"] = f"[{JOB_UIDS[0]}, {JOB_UIDS[1]}]"
PG_DSN = os.environ.get("VEILGATE_TEST_PG_DSN")
needs_pg = pytest.mark.skipif(PG_DSN is None, reason="set VEILGATE_TEST_PG_DSN to run against PostgreSQL")
ON_POSTGRES = pytest.param("postgres", marks=[pytest.mark.postgres, needs_pg])
"""The PostgreSQL case of a test parametrized over backends: run by CI, skipped without a DSN."""


@contextmanager
def pg_schema() -> Iterator[str]:
    """A PostgreSQL schema of its own for one test, dropped afterwards."""
    schema = f"vg_test_{secrets.token_hex(6)}"
    try:
        yield schema
    finally:
        import psycopg

        from gateway.state import postgres_watched

        leaked = [key for key in postgres_watched._listeners if key[2] == schema]
        assert not leaked, f"a store listening in {schema} was left open"

        assert PG_DSN is not None
        with psycopg.connect(PG_DSN, autocommit=True) as conn:
            conn.execute(psycopg.sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(psycopg.sql.Identifier(schema)))


@contextmanager
def pg_old_schema() -> Iterator[tuple[str, Any]]:
    """A schema of its own, made and set as the search path of a raw connection (yielded as a
    `postgres_connections.Db`), to write an earlier release's tables before a store opens them."""
    import psycopg

    from gateway.state import postgres_connections

    assert PG_DSN is not None
    with pg_schema() as schema, psycopg.connect(PG_DSN, autocommit=True) as conn:
        name = psycopg.sql.Identifier(schema)
        conn.execute(psycopg.sql.SQL("CREATE SCHEMA {}").format(name))
        conn.execute(psycopg.sql.SQL("SET search_path TO {}").format(name))
        yield schema, postgres_connections.Db(conn)


def eventually(check: Callable[[], bool], seconds: float = 5.0) -> None:
    """Until `check` holds: what another process or replica learns from a notice, not at once.
    Fails after `seconds`."""
    deadline = time.monotonic() + seconds
    while not check():
        assert time.monotonic() < deadline, f"not seen after {seconds} s"
        time.sleep(0.002)


class Closable(Protocol):
    def close(self) -> None: ...


Store = TypeVar("Store", bound=Closable)


@contextmanager
def store_handles(
    backend: str, local: Callable[[], Store], postgres: Callable[[str, str], Store]
) -> Iterator[Callable[[], Store]]:
    """A factory of handles on one store, each standing for another process or replica:
    `local()` for SQLite or a file, `postgres(dsn, schema)` in a schema of its own. All are
    closed afterwards, and the schema dropped."""
    opened: list[Store] = []
    with contextlib.ExitStack() as stack:
        schema = stack.enter_context(pg_schema()) if backend == "postgres" else ""

        def factory() -> Store:
            opened.append(postgres(PG_DSN or "", schema) if backend == "postgres" else local())
            return opened[-1]

        yield factory
        for handle in opened:
            handle.close()


CANARY = "CANARY-7Q4Z"
"""Planted in raw values of the demo data; must never appear in anything the gateway emits."""
TEST_SCALE = 0.02


def make_settings(state_dir: Path, **over: Any) -> Settings:
    values: dict[str, Any] = {"state_dir": state_dir, "policy_dir": REPO / "policies", **over}
    return Settings(**values)


@dataclass(frozen=True)
class Installation:
    root: Path
    settings: Settings
    credentials: dict[str, str]
    source: Path


@pytest.fixture(scope="session")
def session_installation(tmp_path_factory: pytest.TempPathFactory) -> Installation:
    root = tmp_path_factory.mktemp("demo")
    result = demo_setup.setup(root, REPO / "policies", scale=TEST_SCALE, canary=CANARY)
    return Installation(root, result.settings, result.credentials, root / "source")


@pytest.fixture
def installation(session_installation: Installation, tmp_path: Path) -> Installation:
    """A private copy of the demo installation, for tests that change state."""
    root = tmp_path / "demo"
    # Ledger counters and the policy in force belong to earlier requests: each copy starts without
    # them, and takes its bundle from its own policy directory.
    shutil.copytree(
        session_installation.root, root, ignore=lambda d, _names: ["ledger", "policy"] if d.endswith("state") else []
    )
    settings = session_installation.settings.model_copy(
        update={"state_dir": root / "state", "policy_dir": REPO / "policies"}
    )
    return replace(session_installation, root=root, settings=settings, source=root / "source")


@pytest.fixture
def make_client() -> Iterator[Any]:
    made: list[TestClient] = []

    def factory(settings: Settings, **kwargs: Any) -> TestClient:
        client = TestClient(create_app(settings), **kwargs)
        made.append(client)
        return client

    yield factory
    for client in made:
        client.close()


@pytest.fixture(scope="session")
def shared_client(session_installation: Installation) -> Iterator[TestClient]:
    """A client on the shared installation, for read-only tests."""
    with TestClient(create_app(session_installation.settings)) as client:
        yield client


def policy_copy(target: Path, change: Callable[[dict[str, Any]], None] | None = None) -> Path:
    """The demo bundle copied to `target`, with `change` applied to the merged sections."""
    shutil.copytree(REPO / "policies", target)
    if change is None:
        return target
    merged: dict[str, Any] = {}
    for path in sorted(target.glob("*.yaml")):
        merged.update(yaml.safe_load(path.read_text()) or {})
        path.unlink()
    change(merged)
    (target / "bundle.yaml").write_text(yaml.safe_dump(merged, allow_unicode=True, sort_keys=False))
    return target


@pytest.fixture
def bundle_app(installation: Installation, tmp_path: Path) -> Iterator[Callable[..., TestClient]]:
    """A factory: a client of a new app on the test's installation, serving the demo bundle with
    `change` applied. The first app of a test starts on an empty policy store (nothing an earlier
    test put in force); a later one shares that store, as the processes of one installation do,
    and puts its bundle in force there when it differs, for every app of the test."""
    made: list[TestClient] = []

    def factory(change: Callable[[dict[str, Any]], None] | None = None) -> TestClient:
        policies = policy_copy(tmp_path / f"policies-{len(made)}", change)
        settings = installation.settings.model_copy(update={"policy_dir": policies})
        if made:
            _put_in_force(settings, policies)
        else:
            shutil.rmtree(settings.policy_store_dir, ignore_errors=True)
        client = TestClient(create_app(settings))
        made.append(client)
        return client

    yield factory
    for client in made:
        client.close()


def _put_in_force(settings: Settings, policies: Path) -> None:
    bundle, errors = read_bundle(policies)
    assert bundle is not None, errors
    store = open_policy_store(settings, listen=False)
    try:
        active = store.active_version()
        if active is None or store.load(active) != bundle:
            store.activate(bundle, by="test", reason="the bundle of a later app of the test", base=active)
    finally:
        store.close()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@contextmanager
def serving(app: FastAPI | Any, *, forwarded_allow_ips: str | None = None) -> Iterator[str]:
    """Serve `app` with uvicorn in a thread; yields the base URL. `forwarded_allow_ips`: the
    proxies whose forwarded headers uvicorn believes, as `veilgate serve` passes them."""
    config = uvicorn.Config(
        app, host="127.0.0.1", port=free_port(), log_level="error", forwarded_allow_ips=forwarded_allow_ips
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    base = f"http://127.0.0.1:{config.port}"
    wait_until_up(base)
    try:
        yield base
    finally:
        server.should_exit = True
        thread.join(timeout=10)


def wait_until_up(base: str, process: subprocess.Popen[bytes] | None = None) -> None:
    """Until `/healthz` answers; fails with the server's stderr if the process died first."""
    for _ in range(300):
        if process is not None and process.poll() is not None:
            stderr = process.stderr.read().decode() if process.stderr else ""
            raise AssertionError(f"the server exited: {stderr}")
        try:
            if httpx2.get(f"{base}/healthz", timeout=1).status_code == 200:
                return
        except httpx2.TransportError:
            time.sleep(0.05)
    raise AssertionError(f"no server answered at {base}")


@contextmanager
def serve_process(config: Path, **env: str) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """`veilgate serve --config CONFIG` in its own process (env: extra variables); yields its
    base URL and the process, and stops it afterwards unless the test already killed it."""
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "gateway.cli", "serve", "--config", str(config), "--port", str(port), "--workers", "1"],
        env={**os.environ, **env},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        wait_until_up(base, process)
        yield base, process
    finally:
        if process.poll() is None:
            process.terminate()
            process.wait(timeout=30)
        if process.stderr:
            process.stderr.close()


def get_token(client: TestClient, client_id: str, secret: str) -> str:
    response = client.post(
        "/v1/token", data={"grant_type": "client_credentials", "client_id": client_id, "client_secret": secret}
    )
    assert response.status_code == 200, response.text
    token: str = response.json()["access_token"]
    return token


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}
