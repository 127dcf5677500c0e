"""Connections served by `veilgate serve` have Nagle's algorithm off, with one worker or many."""

from __future__ import annotations

import asyncio
import socket
from typing import Any

import uvicorn
from uvicorn.server import ServerState

from gateway.http_server import NoDelayH11Protocol


class _Transport(asyncio.Transport):
    def __init__(self, sock: socket.socket) -> None:
        super().__init__()
        self._sock = sock

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return {"socket": self._sock, "peername": ("127.0.0.1", 1), "sockname": ("127.0.0.1", 2)}.get(name, default)

    def is_closing(self) -> bool:
        return False

    def close(self) -> None:
        pass


async def _app(scope: Any, receive: Any, send: Any) -> None:
    pass


def test_a_connection_accepted_like_uvicorn_workers_accept_it_gets_tcp_nodelay() -> None:
    # uvicorn binds worker sockets as `socket.socket(family=...)`, without naming TCP, so
    # asyncio leaves Nagle on for what they accept: the premise of this protocol.
    with socket.socket(socket.AF_INET) as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        with socket.create_connection(listener.getsockname()) as _client:
            accepted, _ = listener.accept()
            with accepted:
                assert accepted.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) == 0

                async def serve_one() -> None:
                    config = uvicorn.Config(app=_app, http=NoDelayH11Protocol)
                    config.load()
                    protocol = NoDelayH11Protocol(config=config, server_state=ServerState(), app_state={})
                    transport = _Transport(accepted)
                    protocol.connection_made(transport)
                    protocol.connection_lost(None)

                asyncio.run(serve_one())
                assert accepted.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) == 1
