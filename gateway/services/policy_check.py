"""`veilgate policy check`: the whole bundle, against itself and against the catalogue."""

from __future__ import annotations

import logging
from pathlib import Path

from gateway.catalog import CatalogStore
from gateway.domain.policy import PolicyBundle, check_against_catalog, check_references
from gateway.errors import PolicyInvalid
from gateway.policy import Located, PolicyHolder, locate_issues, read_bundle

log = logging.getLogger("veilgate.policy")


def check(policy_dir: Path, catalog: CatalogStore) -> tuple[PolicyBundle | None, list[Located]]:
    """The bundle and no errors, or None and every error with its file and line."""
    bundle, errors = read_bundle(policy_dir)
    if bundle is None:
        return None, errors
    entries = {r.entry.dataset: r.entry for r in catalog.records() if r.is_served}
    issues = check_references(bundle) + check_against_catalog(bundle, entries)
    return (None, locate_issues(policy_dir, issues)) if issues else (bundle, [])


def load_for_serving(policy_dir: Path, catalog: CatalogStore) -> PolicyHolder:
    """The bundle to serve: it must be whole and self-consistent, or nothing starts. Services
    whose data the catalogue cannot serve now are marked unavailable, with the reason, and the
    rest are served (deregistering a dataset must not stop the gateway)."""
    bundle, errors = read_bundle(policy_dir)
    if bundle is None:
        raise PolicyInvalid(errors)
    references = check_references(bundle)
    if references:
        raise PolicyInvalid(locate_issues(policy_dir, references))
    entries = {r.entry.dataset: r.entry for r in catalog.records() if r.is_served}
    unavailable: dict[str, str] = {}
    for issue in check_against_catalog(bundle, entries):
        service = str(issue.path[1])
        unavailable.setdefault(service, issue.message)
        log.warning("policy: service %s is unavailable: %s", service, issue.message)
    return PolicyHolder(bundle, unavailable)
