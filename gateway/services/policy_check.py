"""`veilgate policy check`: the whole bundle, against itself and against the catalogue."""

from __future__ import annotations

from pathlib import Path

from gateway.catalog import CatalogStore
from gateway.domain.policy import PolicyBundle, check_against_catalog, check_references
from gateway.errors import PolicyInvalid
from gateway.policy import Located, locate_issues, read_bundle


def check(policy_dir: Path, catalog: CatalogStore) -> tuple[PolicyBundle | None, list[Located]]:
    """The bundle and no errors, or None and every error with its file and line."""
    bundle, errors = read_bundle(policy_dir)
    if bundle is None:
        return None, errors
    entries = {r.entry.dataset: r.entry for r in catalog.records() if r.is_served}
    issues = check_references(bundle) + check_against_catalog(bundle, entries)
    return (None, locate_issues(policy_dir, issues)) if issues else (bundle, [])


def load_checked(policy_dir: Path, catalog: CatalogStore) -> PolicyBundle:
    bundle, errors = check(policy_dir, catalog)
    if bundle is None:
        raise PolicyInvalid(errors)
    return bundle
