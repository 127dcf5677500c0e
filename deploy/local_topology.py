#!/usr/bin/env python3
"""The deployment's topology on one machine, without containers: two `veilgate serve` replicas on
one PostgreSQL, behind nginx configured from deploy/nginx/veilgate.conf.template (the template
compose.yaml's proxy uses), with the settings compose.yaml passes (by VEILGATE_* variables).

    deploy/local-topology --config veilgate.toml --dsn postgresql://... [--schema veilgate]
                          [--listen 127.0.0.1:8080] [--workdir DIR]

Both replicas read one state directory (keys, subject secret, data), as compose's replicas share
one volume; what they must agree on at once (ledgers, audit log, freezes, accounts, policy,
jobs) is in PostgreSQL. Ctrl-C stops all three. tests/ops/test_local_topology.py runs it.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import socket
import string
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

TEMPLATE = Path(__file__).resolve().parent / "nginx" / "veilgate.conf.template"
_NGINX_MAIN = """worker_processes 1;
pid {dir}/nginx.pid;
error_log {dir}/nginx-error.log warn;
daemon off;
events {{ worker_connections 512; }}
http {{
    client_body_temp_path {dir}/tmp/body;
    proxy_temp_path {dir}/tmp/proxy;
    fastcgi_temp_path {dir}/tmp/fastcgi;
    uwsgi_temp_path {dir}/tmp/uwsgi;
    scgi_temp_path {dir}/tmp/scgi;
    include {dir}/veilgate.conf;
}}
"""


def find_nginx() -> str | None:
    """nginx from Debian lives in /usr/sbin, which a user's PATH may not hold."""
    return shutil.which("nginx") or shutil.which("nginx", path="/usr/sbin:/usr/local/sbin")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def wait_for(url: str, process: subprocess.Popen[bytes], log: Path, seconds: float = 60.0) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{url}: the process exited; its log:\n{log.read_text(errors='replace')[-4000:]}")
        with contextlib.suppress(OSError), urllib.request.urlopen(url, timeout=1) as response:  # noqa: S310
            if response.status == 200:
                return
        time.sleep(0.1)
    raise RuntimeError(f"{url}: no answer within {seconds} s")


def nginx_config(directory: Path, upstreams: tuple[str, str], listen: str) -> Path:
    """nginx.conf for a private prefix, including the deployment's template filled in."""
    filled = string.Template(TEMPLATE.read_text()).safe_substitute(
        VEILGATE_UPSTREAM_1=upstreams[0], VEILGATE_UPSTREAM_2=upstreams[1], VEILGATE_PROXY_LISTEN=listen
    )
    (directory / "veilgate.conf").write_text(filled)
    for name in ("body", "proxy", "fastcgi", "uwsgi", "scgi"):
        (directory / "tmp" / name).mkdir(parents=True, exist_ok=True)
        (directory / "tmp" / name).chmod(0o777)  # nginx's workers run as another user under root
    main = directory / "nginx.conf"
    main.write_text(_NGINX_MAIN.format(dir=directory))
    return main


@dataclass(frozen=True)
class Topology:
    proxy: str
    """The base URL callers use."""
    replicas: tuple[str, str]
    """Each replica's own base URL (for checks and for Prometheus, which scrapes them directly)."""
    workdir: Path


@contextlib.contextmanager
def running(
    config: Path, dsn: str, *, schema: str = "veilgate", listen: str | None = None, workdir: Path | None = None
) -> Iterator[Topology]:
    """Start the replicas one after the other (the first creates the schema), then nginx."""
    nginx = find_nginx()
    if nginx is None:
        raise RuntimeError("nginx is not installed (apt-get install nginx)")
    work = Path(workdir or tempfile.mkdtemp(prefix="veilgate-topology-"))
    work.mkdir(parents=True, exist_ok=True)
    work.chmod(0o755)
    listen = listen or f"127.0.0.1:{free_port()}"
    env = {
        **os.environ,
        "VEILGATE_DATABASE_DSN": dsn,
        "VEILGATE_DATABASE_SCHEMA": schema,
        "VEILGATE_LOG_FORMAT": "json",
    }
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    processes: list[subprocess.Popen[bytes]] = []
    logs: list[object] = []
    try:
        bases = []
        for number in (1, 2):
            port = free_port()
            log = work / f"replica-{number}.log"
            handle = log.open("wb")
            logs.append(handle)
            command = [sys.executable, "-m", "gateway.cli", "serve", "--config", str(config), "--host", "127.0.0.1",
                       "--port", str(port), "--workers", "1"]  # fmt: skip
            processes.append(subprocess.Popen(command, env=env, stdout=handle, stderr=subprocess.STDOUT))  # noqa: S603
            base = f"http://127.0.0.1:{port}"
            wait_for(f"{base}/healthz", processes[-1], log)
            bases.append(base)
        main = nginx_config(work, (bases[0].removeprefix("http://"), bases[1].removeprefix("http://")), listen)
        proxy_log = work / "nginx.log"
        handle = proxy_log.open("wb")
        logs.append(handle)
        processes.append(
            subprocess.Popen([nginx, "-c", str(main), "-p", str(work)], stdout=handle, stderr=subprocess.STDOUT)  # noqa: S603
        )
        proxy = f"http://{listen}"
        wait_for(f"{proxy}/healthz", processes[-1], work / "nginx-error.log")
        yield Topology(proxy, (bases[0], bases[1]), work)
    finally:
        for process in reversed(processes):
            if process.poll() is None:
                process.terminate()
        for process in processes:
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        for handle in logs:
            handle.close()  # type: ignore[attr-defined]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", type=Path, required=True, help="veilgate.toml both replicas read")
    parser.add_argument("--dsn", required=True, help="PostgreSQL both replicas share")
    parser.add_argument("--schema", default="veilgate")
    parser.add_argument("--listen", default="127.0.0.1:8080", help="where nginx listens")
    parser.add_argument("--workdir", type=Path, help="logs and nginx's files (default: a new temporary directory)")
    args = parser.parse_args()
    with running(args.config, args.dsn, schema=args.schema, listen=args.listen, workdir=args.workdir) as topology:
        print(f"proxy {topology.proxy}; replicas {' '.join(topology.replicas)}; logs in {topology.workdir}")
        with contextlib.suppress(KeyboardInterrupt):
            while True:
                time.sleep(3600)


if __name__ == "__main__":
    main()
