"""Logs as JSON lines: one event a line, with the request it belongs to.

`log_format = "json"` makes `veilgate serve` hand uvicorn `log_config()`, which every worker
process applies to itself. A record becomes one JSON object (newlines inside a message or a
traceback are escaped, so one event is one line) with the id of the request being served, the
same `request_id` its problem body, its `X-Request-Id` header and its audit event carry.

SECURITY: the message is the code's own text; the gateway logs no raw key, query, body or secret
(uvicorn's access log, which would write raw paths, stays off), and this adds nothing from the
request but its id.
"""

from __future__ import annotations

import json
import logging
import traceback
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import Any

REQUEST_ID: ContextVar[str | None] = ContextVar("veilgate_request_id", default=None)
"""The id of the request this task serves; set by the request middleware, copied into threads
that `asyncio.to_thread` starts for it."""


class JsonLines(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        event: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        request_id = REQUEST_ID.get()
        if request_id is not None:
            event["request_id"] = request_id
        if record.exc_info:
            event["exception"] = self.formatException(record.exc_info)
        return json.dumps(event, ensure_ascii=False, separators=(",", ":"), default=str)


def log_config(level: str = "INFO") -> dict[str, Any]:
    """A `logging.config.dictConfig` for uvicorn's `log_config`: everything as JSON lines on stderr."""
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"json": {"()": f"{__name__}.JsonLines"}},
        "handlers": {"stderr": {"class": "logging.StreamHandler", "formatter": "json", "stream": "ext://sys.stderr"}},
        "root": {"handlers": ["stderr"], "level": level},
        "loggers": {
            "uvicorn": {"handlers": [], "propagate": True, "level": level},
            "uvicorn.error": {"handlers": [], "propagate": True, "level": level},
            "uvicorn.access": {"handlers": [], "propagate": False, "level": "CRITICAL"},
        },
    }


def bare_trace(exc: BaseException) -> str:
    """The traceback of `exc` and of its causes by type, file, line and function only.

    SECURITY: for errors whose text may quote a value from a record or a caller (a library's
    message: `12720000000000000 exceeds safe integer domain`, a key DuckDB could not convert).
    """
    parts: list[str] = []
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        frames = traceback.extract_tb(current.__traceback__)
        parts.append(type(current).__name__ + "".join(f"\n  {f.filename}:{f.lineno} in {f.name}" for f in frames))
        current = current.__cause__ or current.__context__
    return "\ncaused by ".join(parts)
