"""A stored job's parts that every step reads: its files (and their hash) and its service."""

from __future__ import annotations

import base64
import hashlib

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


def service_of(bundle: PolicyBundle, name: str) -> JobService:
    service = bundle.job_services.get(name)
    if service is None:
        raise NotFound("service: no job service of this name")
    return service
