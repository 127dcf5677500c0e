"""Typed exceptions: the gateway's RFC 9457 problems, and evidence that does not check out.

A caller catches what it can act on (`BudgetExhausted`, `RateLimited.retry_after`,
`Refused.parameter`) instead of parsing status codes and texts.
"""

from __future__ import annotations

from typing import Any

import httpx


class VeilgateError(Exception):
    """Base of everything this package raises on purpose."""


class ProblemError(VeilgateError):
    """The gateway refused or failed a request, with an RFC 9457 problem document."""

    def __init__(self, status: int, problem: dict[str, Any], request_id: str | None = None) -> None:
        self.status = status
        self.problem = problem
        self.type: str = str(problem.get("type", ""))
        self.title: str = str(problem.get("title", ""))
        self.detail: str = str(problem.get("detail", ""))
        self.errors: list[dict[str, Any]] = list(problem.get("errors") or [])
        self.request_id = request_id
        super().__init__(f"{status} {self.slug}: {self.detail}" + (f" (request {request_id})" if request_id else ""))

    @property
    def slug(self) -> str:
        """The problem type's last segment, such as `budget-exhausted`."""
        return self.type.rsplit("/", 1)[-1] if self.type else "http-error"


class BadRequest(ProblemError):
    """The request cannot be served as sent (400)."""


class Refused(BadRequest):
    """422: a parameter the gateway does not allow. `parameter` is the one it names, if any."""

    @property
    def parameter(self) -> str | None:
        if self.errors:
            return str(self.errors[0].get("location", "")) or None
        head, sep, _rest = self.detail.partition(": ")
        return head if sep and " " not in head else None


class Unauthorized(ProblemError):
    """401: the credentials or the token were refused."""


class Forbidden(ProblemError):
    """403: no grant of yours covers this, for this purpose, now."""


class Frozen(Forbidden):
    """403: an administrator stopped this consumer, organisation, dataset or service."""


class NotFound(ProblemError):
    """404: no such template, model, service, job or leaf (or not yours)."""


class Conflict(ProblemError):
    """409: the request conflicts with the gateway's state (an `Idempotency-Key` still running)."""


class BudgetExhausted(Conflict):
    """409: a privacy budget (grant, organisation or dataset version) cannot take the charge."""


class PayloadTooLarge(ProblemError):
    """413: the request body is too large."""


class RateLimited(ProblemError):
    """429: a limit would be exceeded; nothing was counted. Retry after `retry_after` seconds."""

    def __init__(
        self, status: int, problem: dict[str, Any], request_id: str | None = None, retry_after: float | None = None
    ) -> None:
        super().__init__(status, problem, request_id)
        self.retry_after = retry_after


class Unavailable(ProblemError):
    """503: the audit log, the ledger or a service cannot take the request now; nothing was released."""


class ServerError(ProblemError):
    """500: the gateway failed; quote `request_id` when reporting it."""


_BY_SLUG: dict[str, type[ProblemError]] = {
    "bad-request": BadRequest,
    "invalid-request": Refused,
    "signature-invalid": Refused,
    "unauthenticated": Unauthorized,
    "policy-denied": Forbidden,
    "frozen": Frozen,
    "not-found": NotFound,
    "method-not-allowed": BadRequest,
    "conflict": Conflict,
    "service-unavailable": Unavailable,
    "budget-exhausted": BudgetExhausted,
    "payload-too-large": PayloadTooLarge,
    "rate-limited": RateLimited,
    "audit-unavailable": Unavailable,
    "dependency-unavailable": Unavailable,
    "not-ready": Unavailable,
    "internal-error": ServerError,
}
_BY_STATUS: dict[int, type[ProblemError]] = {
    400: BadRequest, 401: Unauthorized, 403: Forbidden, 404: NotFound, 409: Conflict,
    413: PayloadTooLarge, 422: Refused, 429: RateLimited, 503: Unavailable,
}  # fmt: skip


def problem_from_response(response: httpx.Response) -> ProblemError:
    """The typed exception for an error response (problem+json, or a bare status)."""
    try:
        body = response.json()
    except (ValueError, RecursionError):
        body = None
    problem: dict[str, Any] = body if isinstance(body, dict) else {"detail": response.text[:200]}
    slug = str(problem.get("type", "")).rsplit("/", 1)[-1]
    kind = _BY_SLUG.get(slug) or _BY_STATUS.get(response.status_code) or ServerError
    request_id = response.headers.get("X-Request-Id")
    if kind is RateLimited:
        return RateLimited(response.status_code, problem, request_id, retry_after=_retry_after(response))
    return kind(response.status_code, problem, request_id)


def _retry_after(response: httpx.Response) -> float | None:
    value = response.headers.get("Retry-After")
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None


class BadResponse(VeilgateError):
    """The gateway answered something the API does not promise (not JSON, a missing field):
    nothing from that answer is returned. Often a proxy or the wrong URL; otherwise a bug to report."""


class Unreachable(VeilgateError):
    """The gateway could not be reached, or the connection broke before its answer arrived."""


class EvidenceError(VeilgateError):
    """A receipt, a key set or an audit proof does not check out: do not rely on the result."""


class ReceiptInvalid(EvidenceError):
    """The receipt's signature, key, type, shape or content does not match what was received."""


class KeysChanged(EvidenceError):
    """The gateway's published keys changed in a way its rotation rules do not allow."""


class NotIncluded(EvidenceError):
    """The receipt's audit leaf is not in the tree a signed checkpoint commits to."""


class NotYetCheckpointed(EvidenceError):
    """No signed checkpoint covers the receipt's leaf yet; ask again after the checkpoint interval."""
