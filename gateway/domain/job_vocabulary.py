"""The words a researcher sees about a job: every status and reason, from this fixed list.

Pure. SECURITY: a job's code and its data may steer an exit status, an exception's text, a
parameter value or the name of an output; none of those reaches a researcher's view or the
signed result. What does is one of these entries, and at most the name of the parameter a rule
refused (a catalogue column, or a field of the output), never the value. The details stay with
the reviewers (the job's notes, stdout and stderr).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class Reason(StrEnum):
    """Why an output was withheld or a job did not complete, in the researcher's words."""

    NOT_DECLARED = "withheld: not declared"
    NOT_PRODUCED = "withheld: not produced"
    NOT_THIS_KIND = "withheld: not an output this service releases"
    NOT_A_STATISTIC = "withheld: not a statistic the gateway computes"
    NO_SUCH_COLUMN = "withheld: no such column"
    NEGATIVE_LIST = "withheld: on the negative list"
    SENSITIVE_COLUMN = "withheld: not a public column"
    NOT_PUBLIC_CATEGORY = "withheld: not a public category"
    BELOW_THRESHOLD = "withheld: below threshold"
    OUTSIDE_RULES = "withheld: outside the service's rules"
    NOT_AS_DECLARED = "withheld: not as declared"
    NOT_A_COUNT = "withheld: counts are whole numbers from 0 to 2^53"
    OUTPUT_CHECK = "withheld: by output checking"
    NOTHING_PASSED = "withheld: nothing passed the automatic checks"
    BUDGET = "withheld: privacy budget"
    NOT_RUN = "withheld: the job did not complete"
    TIME_LIMIT = "failed: time limit"
    CPU_LIMIT = "failed: CPU limit"
    MEMORY_LIMIT = "failed: memory limit"
    ERROR = "failed: error (see reviewers)"
    CODE_NOT_APPROVED = "failed: code not approved"
    PLAN_NOT_APPROVED = "failed: plan not approved"
    PROCESS_STOPPED = "failed: process stopped"
    INTERNAL = "failed: internal error"
    FROZEN = "stopped: frozen"
    GRANT_REVOKED = "stopped: grant revoked"
    SERVICE_WITHDRAWN = "stopped: service withdrawn"
    ACCOUNT_DISABLED = "stopped: account disabled"


@dataclass(frozen=True, slots=True)
class Refusal:
    """One output withheld: the reason, the parameter the rule refused, and (reviewers only) why."""

    reason: Reason
    parameter: str | None = None
    """A field of the output (`dataset`, `column`, `filters`, ...), with a catalogue column name
    when the column exists; never a value the job gave."""
    detail: str = ""

    def shown(self) -> dict[str, str]:
        """What the researcher sees."""
        body = {"status": "withheld", "reason": self.reason.value}
        if self.parameter is not None:
            body["parameter"] = self.parameter
        return body


STOPPED = (Reason.FROZEN, Reason.GRANT_REVOKED, Reason.SERVICE_WITHDRAWN, Reason.ACCOUNT_DISABLED)
"""Reasons that stop a run and release nothing."""
