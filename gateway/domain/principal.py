"""Who is asking: the authenticated caller, as the rest of the request path sees it."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class Role(StrEnum):
    CONSUMER = "consumer"
    RESEARCHER = "researcher"
    ADMIN = "admin"
    AUDITOR = "auditor"


@dataclass(frozen=True, slots=True)
class Principal:
    client_id: str
    organisation: str
    roles: frozenset[Role]
    token_id: str

    def has_role(self, role: Role) -> bool:
        return role in self.roles
