"""veilgate-client: use a Veilgate gateway from Python, with every receipt checked.

from veilgate_client import Gateway
gw = Gateway("http://127.0.0.1:8000", "demo-researcher", secret, purpose="public_research")
gw.release("wage-base-mean", group_by=["region"]).to_pandas()
"""

from veilgate_client.client import Gateway
from veilgate_client.errors import (
    BadRequest,
    BadResponse,
    BudgetExhausted,
    Conflict,
    EvidenceError,
    Forbidden,
    Frozen,
    KeysChanged,
    NotFound,
    NotIncluded,
    NotYetCheckpointed,
    PayloadTooLarge,
    ProblemError,
    RateLimited,
    ReceiptInvalid,
    Refused,
    ServerError,
    Unauthorized,
    Unavailable,
    Unreachable,
    VeilgateError,
)
from veilgate_client.jobs import Job, LocalRun
from veilgate_client.receipt import Inclusion, Receipt
from veilgate_client.results import Answers, Batch, Budget, Fit, Preview, RateLimitState, Release

__version__ = "0.1.0"
__all__ = [
    "Answers", "BadRequest", "BadResponse", "Batch", "Budget", "BudgetExhausted", "Conflict", "EvidenceError", "Fit",
    "Forbidden", "Frozen", "Gateway", "Inclusion", "Job", "KeysChanged", "LocalRun", "NotFound", "NotIncluded",
    "NotYetCheckpointed", "PayloadTooLarge", "Preview", "ProblemError", "RateLimitState", "RateLimited",
    "Receipt", "ReceiptInvalid", "Refused", "Release", "ServerError", "Unauthorized", "Unavailable",
    "Unreachable", "VeilgateError",
]  # fmt: skip
