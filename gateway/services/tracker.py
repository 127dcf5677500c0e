"""The data tracker: on a person's or enterprise's request, who asked about its key, when, and
under which grant. The key is turned into the audit log's pseudonym and never stored."""

from __future__ import annotations

from typing import Any, Protocol

from gateway.domain.identifiers import is_valid_resident_id, is_valid_uscc, normalize_key
from gateway.errors import InvalidRequest
from gateway.services.needs import HasAudit


class TrackerNeeds(HasAudit, Protocol):
    """The tracker reads the audit log only."""


def kinds_of(key: str) -> list[str]:
    if is_valid_uscc(key):
        return ["enterprise"]
    if is_valid_resident_id(key):
        return ["person"]
    return ["entity"]


def track(rt: TrackerNeeds, raw_key: str) -> list[dict[str, Any]]:
    key = normalize_key(raw_key)
    if not 0 < len(key) <= 64:
        raise InvalidRequest("key: give the full key (1 to 64 characters)")
    found = []
    for kind in kinds_of(key):
        for leaf in rt.audit.find_subject(rt.audit.pseudonym(kind, key)):
            found.append(
                {
                    "seq": leaf.seq,
                    "time": leaf.time,
                    "consumer": leaf.principal,
                    "organisation": leaf.organisation,
                    "service": leaf.service,
                    "grant": leaf.grant,
                    "decision": leaf.decision.value,
                    "status": leaf.status,
                }
            )
    return sorted(found, key=lambda row: row["seq"])
