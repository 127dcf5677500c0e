"""The one exception tree of Veilgate and its permanent problem types.

Imports nothing from `gateway`. Every error that may reach a client is a `VeilgateError`
subclass with a stable kebab-case `type_slug`; the API renders it as RFC 9457 problem+json.

SECURITY: a `detail` is shown to the caller. It must never carry a raw dataset value, a SQL
text, a path inside the state directory or a secret. Write it for the user, from request
parameters and public metadata only.
"""

from __future__ import annotations

from collections.abc import Sequence

PROBLEM_BASE = "https://veilgate.dev/problems/"


class VeilgateError(Exception):
    """Base of every error Veilgate raises on purpose."""

    status: int = 500
    type_slug: str = "internal-error"
    title: str = "Internal error"

    def __init__(self, detail: str, *, headers: dict[str, str] | None = None) -> None:
        super().__init__(detail)
        self.detail = detail
        self.headers = headers or {}

    @property
    def type_uri(self) -> str:
        return PROBLEM_BASE + self.type_slug


class ClientError(VeilgateError):
    """The request cannot be served as sent; retrying it unchanged will not help."""

    status = 400
    type_slug = "bad-request"
    title = "Bad request"


class InvalidRequest(ClientError):
    status = 422
    type_slug = "invalid-request"
    title = "Invalid request"


class Unauthenticated(ClientError):
    status = 401
    type_slug = "unauthenticated"
    title = "Authentication required"

    def __init__(self, detail: str) -> None:
        super().__init__(detail, headers={"WWW-Authenticate": 'Bearer realm="veilgate"'})


class PolicyDenied(ClientError):
    status = 403
    type_slug = "policy-denied"
    title = "Not allowed by policy"


class SignatureInvalid(ClientError):
    """A receipt or checkpoint does not verify against the published keys."""

    status = 422
    type_slug = "signature-invalid"
    title = "Signature invalid"


class Frozen(PolicyDenied):
    """An administrator stopped this use (a consumer, organisation, dataset or service)."""

    type_slug = "frozen"
    title = "Use stopped"


class NotFound(ClientError):
    status = 404
    type_slug = "not-found"
    title = "Not found"


class MethodNotAllowed(ClientError):
    status = 405
    type_slug = "method-not-allowed"
    title = "Method not allowed"


class Conflict(ClientError):
    status = 409
    type_slug = "conflict"
    title = "Conflict"


class ServiceUnavailable(Conflict):
    """The service is approved but cannot be served now (its data is not registered, say)."""

    type_slug = "service-unavailable"
    title = "Service unavailable"


class BudgetExhausted(Conflict):
    type_slug = "budget-exhausted"
    title = "Privacy budget exhausted"


class PayloadTooLarge(ClientError):
    status = 413
    type_slug = "payload-too-large"
    title = "Payload too large"


class RateLimited(ClientError):
    status = 429
    type_slug = "rate-limited"
    title = "Too many requests"

    def __init__(self, detail: str, *, retry_after_seconds: int) -> None:
        super().__init__(detail)
        self.headers = {"Retry-After": str(max(1, retry_after_seconds))}


class PolicyInvalid(VeilgateError):
    """A policy bundle does not validate; nothing of it is used."""

    status = 422
    type_slug = "policy-invalid"
    title = "Policy bundle invalid"

    def __init__(self, errors: Sequence[object]) -> None:
        self.errors = [str(e) for e in errors]
        shown = "; ".join(self.errors[:3]) + (f" (and {len(self.errors) - 3} more)" if len(self.errors) > 3 else "")
        super().__init__(f"the policy bundle has {len(self.errors)} error(s): {shown}")


class LimitReached(RateLimited):
    """A verification limit refused the request; the ledger keeps which, for alerts."""

    def __init__(
        self, detail: str, *, retry_after_seconds: int, limit: str = "", consumer: str = "", grant: str = ""
    ) -> None:
        super().__init__(detail, retry_after_seconds=retry_after_seconds)
        self.limit = limit
        self.consumer = consumer
        self.grant = grant


class RegistrationError(VeilgateError):
    """A dataset file does not agree with its catalogue entry; nothing was registered."""

    status = 422
    type_slug = "registration-rejected"
    title = "Dataset registration rejected"


class ConfigurationError(VeilgateError):
    """The installation is not set up so that it can serve safely."""

    status = 500
    type_slug = "configuration-error"
    title = "Configuration error"


class DependencyError(VeilgateError):
    """A store or service Veilgate depends on is unavailable."""

    status = 503
    type_slug = "dependency-unavailable"
    title = "Service unavailable"


class AuditUnavailable(DependencyError):
    """The audit log cannot take a record, so nothing may be released."""

    type_slug = "audit-unavailable"
    title = "Audit log unavailable"


class NotReady(DependencyError):
    type_slug = "not-ready"
    title = "Not ready"


class InternalError(VeilgateError):
    """An invariant broke. This is a bug: the detail shown to clients never says more."""

    status = 500
    type_slug = "internal-error"
    title = "Internal error"


def all_problem_types() -> list[type[VeilgateError]]:
    """Every concrete error class, for docs and the problem-shape test."""
    seen: list[type[VeilgateError]] = [VeilgateError]
    queue: list[type[VeilgateError]] = [VeilgateError]
    while queue:
        for sub in queue.pop().__subclasses__():
            if sub not in seen:
                seen.append(sub)
                queue.append(sub)
    return seen
