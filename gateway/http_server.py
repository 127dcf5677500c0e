"""How `veilgate serve` serves HTTP: uvicorn on uvloop with the httptools parser, N processes.

Chosen by measurement (benchmarks/verify_load.py): uvicorn's pure-Python h11 parser on the
standard asyncio loop served a bare endpoint at about half the rate of uvloop with httptools,
and the server's share of a verification's CPU shrank by as much. Both are pinned dependencies,
named here rather than left to uvicorn's "auto", so that a missing wheel fails at start instead
of quietly serving at half speed. granian 2.8 (a Rust server) was measured in its place and
served verification no faster on one worker and slower on two: the app, not the server, is
where a request's time goes.

Nagle's algorithm must be off on every accepted connection, or a response written in two parts
(head, then body) waits 40 ms for the client's delayed ACK. uvloop turns it off on every TCP
transport it makes, with one worker or many; tests/unit/test_http_server.py holds it to that.
"""

from __future__ import annotations

import os
from typing import Any


def available_cores() -> int:
    """The cores this process may run on (its CPU affinity, which containers narrow), at least 1."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - platforms without affinity
        return max(1, os.cpu_count() or 1)


def server_options(host: str, port: int) -> dict[str, Any]:
    """uvicorn's options for `veilgate serve`, one worker or many."""
    return {
        "host": host,
        "port": port,
        "loop": "uvloop",
        "http": "httptools",
        "log_level": "info",
        # SECURITY: no uvicorn access log. It would write raw paths and query strings, which a
        # caller controls and could fill with a person's key; every request is in the audit log.
        "access_log": False,
        # The gateway answers within its own limits; uvicorn's Server and Date headers add bytes
        # to every response and say nothing a client needs.
        "server_header": False,
    }
