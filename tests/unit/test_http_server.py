"""Connections served by `veilgate serve` have Nagle's algorithm off, with one worker or many.

The server runs here as `veilgate serve` configures it (`http_server.server_options`), on a
listening socket bound the way uvicorn binds one for its worker processes; the accepted
connection is then found among this process's descriptors and its TCP_NODELAY read.
"""

from __future__ import annotations

import os
import socket
import threading
import time
from typing import Any

import uvicorn

from gateway.http_server import available_cores, server_options


async def _app(scope: Any, receive: Any, send: Any) -> None:
    if scope["type"] == "http":
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})


def _nodelay_of_peer(peer: tuple[str, int]) -> int | None:
    """TCP_NODELAY of the socket in this process whose remote end is `peer` (the server's side)."""
    for name in os.listdir("/proc/self/fd"):
        try:
            sock = socket.socket(fileno=os.dup(int(name)))
        except OSError:
            continue
        with sock:
            try:
                if sock.type == socket.SOCK_STREAM and sock.getpeername() == peer:
                    return sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)
            except OSError:
                continue
    return None


def test_a_connection_accepted_as_veilgate_serve_accepts_it_has_nagle_off() -> None:
    options = {**server_options("127.0.0.1", 0), "lifespan": "off", "log_level": "warning"}
    config = uvicorn.Config(_app, **options)
    listener = config.bind_socket()  # as uvicorn binds it for `--workers N`
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [listener]}, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 10
        while not server.started and time.monotonic() < deadline:
            time.sleep(0.01)
        assert server.started
        with socket.create_connection(listener.getsockname()[:2]) as client:
            client.sendall(b"GET / HTTP/1.1\r\nHost: test\r\n\r\n")
            assert client.recv(1000).startswith(b"HTTP/1.1 200")
            assert _nodelay_of_peer(client.getsockname()) == 1
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        listener.close()


def test_serve_names_its_loop_and_parser_and_keeps_no_access_log() -> None:
    options = server_options("127.0.0.1", 8000)
    assert (options["loop"], options["http"], options["access_log"]) == ("uvloop", "httptools", False)
    assert available_cores() >= 1
