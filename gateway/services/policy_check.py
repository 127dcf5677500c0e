"""`veilgate policy check`: the whole bundle, against itself and against the catalogue."""

from __future__ import annotations

import logging
from pathlib import Path

from gateway.catalog import CatalogStore
from gateway.domain.catalog import CatalogEntry
from gateway.domain.models import OnnxModel
from gateway.domain.policy import PolicyBundle, PolicyIssue, check_against_catalog, check_references
from gateway.errors import Conflict, PolicyInvalid
from gateway.onnx_models import OnnxModels
from gateway.policy import Located, PolicyHolder, locate_issues, read_bundle
from gateway.state.ports import PolicyStore

log = logging.getLogger("veilgate.policy")


def check(
    policy_dir: Path, catalog: CatalogStore, *, policy_approvals: int = 2
) -> tuple[PolicyBundle | None, list[Located]]:
    """The bundle and no errors, or None and every error with its file and line.
    `policy_approvals`: the installation's setting (2 unless configured)."""
    bundle, errors = read_bundle(policy_dir)
    if bundle is None:
        return None, errors
    issues = check_references(bundle) + two_person_issues(bundle, policy_approvals)
    issues += check_against_catalog(bundle, entries(catalog))
    issues += model_file_issues(bundle, OnnxModels(policy_dir))
    return (None, locate_issues(policy_dir, issues)) if issues else (bundle, [])


def two_person_issues(bundle: PolicyBundle, policy_approvals: int) -> list[PolicyIssue]:
    """SECURITY: job services run code on the data; with one approval for policy changes, one
    administrator alone could change a job service, or grant one to an account of their own."""
    if policy_approvals >= 2:
        return []
    return [
        PolicyIssue(path=("job_services", name), message="job services need the setting policy_approvals = 2")
        for name in sorted(bundle.job_services)
    ]


def entries(catalog: CatalogStore) -> dict[str, CatalogEntry]:
    return {r.entry.dataset: r.entry for r in catalog.records() if r.is_served}


def model_file_issues(bundle: PolicyBundle, onnx: OnnxModels) -> list[PolicyIssue]:
    """ONNX models whose file is missing, is not the approved bytes, or does not fit its features."""
    issues = []
    for name, model in bundle.models.items():
        if isinstance(model, OnnxModel):
            width = len(model.features)
            problem = onnx.problem(
                model.file, model.sha256, input_name=model.input_name, output_name=model.output_name, width=width
            )
            if problem is not None:
                issues.append(PolicyIssue(path=("models", name, "file"), message=problem))
    return issues


def validate(bundle: PolicyBundle, catalog: CatalogStore, onnx: OnnxModels, *, policy_approvals: int) -> list[str]:
    """Everything `policy check` checks after parsing, as `path: message` lines."""
    issues = check_references(bundle) + two_person_issues(bundle, policy_approvals)
    issues += check_against_catalog(bundle, entries(catalog))
    return [str(i) for i in issues + model_file_issues(bundle, onnx)]


def serving_issues(
    bundle: PolicyBundle, catalog: CatalogStore, onnx: OnnxModels, *, policy_approvals: int
) -> dict[str, str]:
    """Services the catalogue cannot serve now, with the reason (the rest are served); a bundle
    that is wrong in itself, or for this installation's `policy_approvals`, is not served at all."""
    references = check_references(bundle) + two_person_issues(bundle, policy_approvals)
    if references:
        raise PolicyInvalid(references)
    unavailable: dict[str, str] = {}
    for issue in check_against_catalog(bundle, entries(catalog)) + model_file_issues(bundle, onnx):
        unavailable.setdefault(str(issue.path[1]), issue.message)
    for service, reason in unavailable.items():
        log.warning("policy: service %s is unavailable: %s", service, reason)
    return unavailable


def open_policy(
    policy_dir: Path, store: PolicyStore, catalog: CatalogStore, onnx: OnnxModels, *, policy_approvals: int
) -> PolicyHolder:
    """The bundle in force: the store's, or on first start the one in `policy_dir`."""
    source = store.stamp()
    active = store.active_version()
    if active is None:
        bundle, errors = read_bundle(policy_dir)
        if bundle is None:
            raise PolicyInvalid(errors)
        unavailable = serving_issues(bundle, catalog, onnx, policy_approvals=policy_approvals)
        try:
            store.activate(bundle, by="startup", reason=f"first import of {policy_dir}", base=None)
        except Conflict:  # another process imported first: serve what it put in force
            return open_policy(policy_dir, store, catalog, onnx, policy_approvals=policy_approvals)
        return PolicyHolder(bundle, unavailable, store.stamp())
    bundle = store.load(active)
    on_disk, _errors = read_bundle(policy_dir)
    if on_disk is not None and on_disk.version != bundle.version:
        log.warning("policy: %s differs from the bundle in force; `veilgate policy reload` applies it", policy_dir)
    return PolicyHolder(bundle, serving_issues(bundle, catalog, onnx, policy_approvals=policy_approvals), source)
