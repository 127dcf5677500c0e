"""A stored job's parts that every step reads: its files (and their hash) and its service."""

from __future__ import annotations

import base64
import hashlib

from gateway.domain.job_source import visible
from gateway.domain.jobs import JobService, unpack_archive
from gateway.domain.policy import PolicyBundle
from gateway.errors import NotFound


def job_files(code: str, kind: str) -> tuple[dict[str, bytes], str]:
    """The files a stored job runs, and the SHA-256 of what was submitted (the file's text, or
    the archive's bytes): what reviewers approve and what a run checks again."""
    if kind == "archive":
        data = base64.b64decode(code)
        return unpack_archive(data), hashlib.sha256(data).hexdigest()
    return {"main.py": code.encode()}, hashlib.sha256(code.encode()).hexdigest()


def readable_files(code: str, kind: str) -> dict[str, str]:
    """The files a stored job runs, as reviewers read them: each file's text (its `.py` files
    were checked to be UTF-8 that reads as it runs), or for a file that is not text its size and
    hash. An archive is shown file by file, as the run unpacks it, never as base64."""
    files, _digest = job_files(code, kind)
    shown = {}
    for name, content in sorted(files.items()):
        try:
            shown[name] = visible(content.decode("utf-8"))
        except UnicodeDecodeError:
            shown[name] = f"(not text: {len(content)} bytes, SHA-256 {hashlib.sha256(content).hexdigest()})"
    return shown


def service_of(bundle: PolicyBundle, name: str) -> JobService:
    service = bundle.job_services.get(name)
    if service is None:
        raise NotFound("service: no job service of this name")
    return service
