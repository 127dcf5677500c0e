"""Approved analysis code (jobs): submit, review, run, check outputs, release; one module per step.

1. submit: a grant of the researcher covers the job service and the purpose; the datasets are
   among the service's; the code is stored with its SHA-256;
2. review: administrators approve or reject with a reason; nobody reviews their own job, and the
   service says how many different reviewers must approve;
3. run (once approved, by `veilgate worker`, never by the API process): the code is read afresh
   and run only if its hash is the one approved; the declared datasets (without negative-listed
   columns) are exported for the sandbox; the sandbox runs it jailed and limited;
4. check each declared output: tables through disclosure control, statistics through
   differential privacy (computed by the gateway, charged to the ledger like aggregates);
   anything else is withheld with a reason;
5. release: one signed, audited document for the job; stdout and stderr are kept for
   administrators only.

Other packages use what `__all__` names, never a step's module (an import contract says so).
"""

from gateway.services.jobs.dispatch import OVERDUE_GRACE_SECONDS, fail_overdue, runnable, runs_dir
from gateway.services.jobs.local import run_local
from gateway.services.jobs.output_checking import (
    check_output,
    checker_job,
    checker_queue,
    checker_view,
    release_unclaimed,
)
from gateway.services.jobs.outputs import check_outputs
from gateway.services.jobs.review import admin_view, requeue, require_owner, review, view
from gateway.services.jobs.run import RunNeeds, run
from gateway.services.jobs.stored import job_files, service_of
from gateway.services.jobs.submission import Submission, submit

__all__ = [
    "OVERDUE_GRACE_SECONDS",
    "RunNeeds",
    "Submission",
    "admin_view",
    "check_output",
    "check_outputs",
    "checker_job",
    "checker_queue",
    "checker_view",
    "fail_overdue",
    "job_files",
    "release_unclaimed",
    "requeue",
    "require_owner",
    "review",
    "run",
    "run_local",
    "runnable",
    "runs_dir",
    "service_of",
    "submit",
    "view",
]
