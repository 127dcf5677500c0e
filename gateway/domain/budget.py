"""Privacy budget arithmetic: exact integers, rounded up, never a float.

Budgets and charges are integers in micro-epsilon (1e-6) and nano-delta (1e-9). A charge is
rounded up to the next unit, so accounting can only err on the safe side; zero, negative,
non-finite and sub-granular values are refused, so nothing is ever released for free by
rounding. Three levels hold at once for every charge: the consumer's grant on a dataset (over
the grant's term), the organisation on that dataset, and a global cap per dataset version that
bounds what one person can lose across all consumers together.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import ROUND_CEILING, ROUND_FLOOR, Decimal, InvalidOperation

from gateway.errors import InvalidRequest

MICRO = Decimal(1_000_000)
NANO = Decimal(1_000_000_000)


def _exact(value: Decimal | str | int, scale: Decimal, name: str, *, allow_zero: bool) -> int:
    try:
        number = Decimal(value)
    except (InvalidOperation, ValueError):
        raise InvalidRequest(f"{name}: not a number") from None
    if not number.is_finite():
        raise InvalidRequest(f"{name}: must be finite")
    if number < 0 or (number == 0 and not allow_zero):
        raise InvalidRequest(f"{name}: must be {'zero or more' if allow_zero else 'more than zero'}")
    units = (number * scale).to_integral_value(rounding=ROUND_CEILING)
    if number > 0 and number * scale < 1:
        raise InvalidRequest(f"{name}: smaller than the accounting unit ({1 / scale})")
    return int(units)


def micro_epsilon(value: Decimal | str | int) -> int:
    """Epsilon of a charge in micro-units, rounded up; zero is refused."""
    return _exact(value, MICRO, "epsilon", allow_zero=False)


def nano_delta(value: Decimal | str | int) -> int:
    """Delta of a charge in nano-units, rounded up; zero is allowed (pure DP)."""
    return _exact(value, NANO, "delta", allow_zero=True)


def cap(epsilon: Decimal, delta: Decimal) -> Amount:
    """A budget as a cap, rounded down to whole units: the ledger can only err on the safe side."""
    return Amount(
        int((epsilon * MICRO).to_integral_value(rounding=ROUND_FLOOR)),
        int((delta * NANO).to_integral_value(rounding=ROUND_FLOOR)),
    )


@dataclass(frozen=True, slots=True)
class Amount:
    micro_epsilon: int
    nano_delta: int = 0

    def fits(self, used: Amount, cap: Amount) -> bool:
        return (
            used.micro_epsilon + self.micro_epsilon <= cap.micro_epsilon
            and used.nano_delta + self.nano_delta <= cap.nano_delta
        )

    def __add__(self, other: Amount) -> Amount:
        return Amount(self.micro_epsilon + other.micro_epsilon, self.nano_delta + other.nano_delta)

    @property
    def epsilon(self) -> Decimal:
        return Decimal(self.micro_epsilon) / MICRO

    @property
    def delta(self) -> Decimal:
        return Decimal(self.nano_delta) / NANO


@dataclass(frozen=True, slots=True)
class Accounts:
    """The three budget accounts one charge draws on, and their caps."""

    grant: str
    """`grant:<id>:<consumer>:<dataset>`: the consumer's grant on one dataset."""
    grant_cap: Amount
    organisation: str
    organisation_cap: Amount
    dataset_version: str
    dataset_version_cap: Amount
    grant_id: str = ""
    consumer: str = ""
    dataset: str = ""
    """Who pays and for which dataset, by name: for the usage statements and public disclosure."""

    def pairs(self) -> tuple[tuple[str, Amount], ...]:
        return (
            (self.grant, self.grant_cap),
            (self.organisation, self.organisation_cap),
            (self.dataset_version, self.dataset_version_cap),
        )


def accounts(
    *,
    grant: str,
    consumer: str,
    organisation: str,
    dataset: str,
    version: str,
    grant_cap: Amount,
    organisation_cap: Amount,
    dataset_version_cap: Amount,
) -> Accounts:
    return Accounts(
        grant=f"grant:{grant}:{consumer}:{dataset}",
        grant_cap=grant_cap,
        organisation=f"organisation:{organisation}:{dataset}",
        organisation_cap=organisation_cap,
        dataset_version=f"dataset:{dataset}:{version}",
        dataset_version_cap=dataset_version_cap,
        grant_id=grant,
        consumer=consumer,
        dataset=dataset,
    )
