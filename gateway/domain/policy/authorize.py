"""Who is served now: the grant that allows a consumer a service for a purpose at a time
(`authorize`), and the emergency stops that override every grant (`check_not_frozen`).

Pure functions of (bundle, principal, request, clock), tested without a server. Deny by
default; a refusal names the parameter and the rule, and only the caller's own grants.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime, timedelta
from enum import StrEnum

from pydantic import BaseModel, ConfigDict, Field

from gateway.domain.policy.schema import Grant, PolicyBundle
from gateway.domain.principal import Principal
from gateway.errors import Frozen, NotFound, PolicyDenied

__all__ = ["LIFT_REQUEST_LIFETIME", "Freeze", "FreezeKind", "LiftRequest", "authorize", "check_not_frozen"]


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class FreezeKind(StrEnum):
    CONSUMER = "consumer"
    ORGANISATION = "organisation"
    DATASET = "dataset"
    SERVICE = "service"


LIFT_REQUEST_LIFETIME = timedelta(days=1)
"""A lift asked for and not approved within a day is void: an approval given long after the
request would restart a use on reasons nobody holds any more."""


class LiftRequest(_Frozen):
    """Administrators who asked to lift a stop, before enough identities did (two people, as for
    a policy change: one administrator, or one person's two accounts, cannot restart a use that
    another stopped)."""

    since: datetime
    """When the first asked; a request older than a day is void."""
    by: tuple[str, ...]
    identities: tuple[str, ...]
    reason: str = Field(min_length=1, max_length=500)


class Freeze(_Frozen):
    """An emergency stop: from `since`, nothing is served to or from what it names."""

    kind: FreezeKind
    name: str = Field(min_length=1, max_length=128)
    since: datetime
    by: str
    reason: str = Field(min_length=1, max_length=500)
    lift: LiftRequest | None = None
    """A lift asked for and waiting for another administrator; the stop holds meanwhile."""

    def pending_lift(self, now: datetime) -> LiftRequest | None:
        """The lift request still in force at `now` (None: none, or a void one)."""
        return self.lift if self.lift is not None and now - self.lift.since < LIFT_REQUEST_LIFETIME else None

    def as_shown(self, now: datetime) -> Freeze:
        """The stop without a void lift request, as administrators are shown it."""
        return (
            self if self.lift is None or self.pending_lift(now) is not None else self.model_copy(update={"lift": None})
        )


def check_not_frozen(
    freezes: Mapping[tuple[FreezeKind, str], Freeze], *, consumer: str, organisation: str, service: str, dataset: str
) -> None:
    """Refuse if any of the four is frozen; the message names which, and why."""
    for kind, name in (
        (FreezeKind.CONSUMER, consumer),
        (FreezeKind.ORGANISATION, organisation),
        (FreezeKind.SERVICE, service),
        (FreezeKind.DATASET, dataset),
    ):
        found = freezes.get((kind, name))
        if found is not None:
            raise Frozen(f"use of {kind.value} {name!r} is stopped since {found.since.isoformat()}: {found.reason}")


def authorize(
    bundle: PolicyBundle, principal: Principal, service: str, purpose: str, now: datetime
) -> tuple[str, Grant]:
    """The grant that allows this consumer this service for this purpose now, or why not.

    Deny by default: the first reason that applies is the one given, and it names what the
    caller can act on (its own grants only, never another consumer's).
    """
    if service not in bundle.service_names():
        raise NotFound("service: no service of this name")
    mine = [(gid, g) for gid, g in bundle.grants.items() if g.consumer == principal.client_id and service in g.services]
    if not mine:
        raise PolicyDenied("service: no grant of yours covers this service")
    for_purpose = [(gid, g) for gid, g in mine if purpose in g.purposes]
    if not for_purpose:
        allowed = sorted({p for _gid, g in mine for p in g.purposes})
        raise PolicyDenied(f"purpose: not one your grant allows ({', '.join(allowed)})")
    current = [(gid, g) for gid, g in for_purpose if g.not_before <= now < g.expires]
    if not current:
        gid, grant = for_purpose[0]
        when = "is not valid before" if now < grant.not_before else "expired at"
        moment = grant.not_before if now < grant.not_before else grant.expires
        raise PolicyDenied(f"your grant {gid} {when} {moment.isoformat()}")
    return min(current, key=lambda item: item[0])
