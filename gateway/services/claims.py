"""What the per-claim services (verification and scoring) share: the kind of entity a key
names, the note a route keeps for the audit log whatever happens, and the fee of a claim.

Kept apart so that neither service imports the other.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from gateway.domain.policy import PolicyBundle, PurposeKind

__all__ = ["ENTITY_KINDS", "AuditNote", "fee_per_claim"]

ENTITY_KINDS = {"uscc": "enterprise", "resident_id": "person"}
"""The pseudonym kind of a key, by its format."""


@dataclass(slots=True)
class AuditNote:
    """What the route records even when the request is refused: the service, once it is known to
    be one (SECURITY: a name taken from the URL could be anything, a person's key included), and
    the pseudonyms of the entities asked about."""

    service: str | None = None
    subjects: list[str] = field(default_factory=list)


def fee_per_claim(bundle: PolicyBundle, price_class: str, purpose: str) -> int:
    """Millionths of a yuan per billable claim: public governance and welfare purposes are free."""
    price = bundle.price_classes.get(price_class)
    purpose_of = bundle.purposes.get(purpose)
    if price is None or purpose_of is None or purpose_of.kind is not PurposeKind.COMMERCIAL or price.unit != "call":
        return 0
    return int(price.price_yuan * 1_000_000)
