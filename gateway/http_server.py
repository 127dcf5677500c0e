"""The HTTP protocol `veilgate serve` runs: uvicorn's h11 protocol, with Nagle's algorithm off.

asyncio turns Nagle off only on sockets created as TCP sockets by name. With `--workers`, uvicorn
binds its listening socket without naming the protocol, so accepted connections kept Nagle on, and
a response written in two parts (head, then body) waited for the client's delayed ACK: a flat
40 ms per request. Setting it per connection here holds with one worker or many.
"""

from __future__ import annotations

import asyncio
import socket

from uvicorn.protocols.http.h11_impl import H11Protocol


class NoDelayH11Protocol(H11Protocol):
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        sock = transport.get_extra_info("socket")
        if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        super().connection_made(transport)  # type: ignore[arg-type]
