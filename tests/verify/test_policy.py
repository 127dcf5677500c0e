"""The policy bundle: every error found with its file and line, the catalogue rules, and the
deny-by-default decision."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner

from gateway.catalog import CatalogStore
from gateway.cli import app as cli
from gateway.domain.policy import PolicyBundle, authorize
from gateway.domain.principal import Principal, Role
from gateway.errors import NotFound, PolicyDenied, PolicyInvalid
from gateway.policy import load_bundle, read_bundle
from gateway.services import policy_check
from tests.conftest import REPO, Installation, policy_copy

BANK = Principal("demo-business", "Demo Commercial Bank", frozenset({Role.CONSUMER}), "t")
NOW = datetime(2026, 11, 28, 12, tzinfo=UTC)


def _demo() -> PolicyBundle:
    return load_bundle(REPO / "policies")


def _errors(directory: Path, installation: Installation | None = None) -> list[str]:
    if installation is None:
        _bundle, located = read_bundle(directory)
    else:
        _bundle, located = policy_check.check(directory, CatalogStore(installation.settings.data_path))
    return [str(e) for e in located]


def test_the_demo_bundle_is_valid_against_the_demo_catalogue(session_installation: Installation) -> None:
    assert _errors(REPO / "policies", session_installation) == []


def test_the_version_is_a_content_hash_not_a_file_layout(tmp_path: Path) -> None:
    merged = policy_copy(tmp_path / "merged", lambda _b: None)
    assert load_bundle(merged).version == _demo().version
    changed = policy_copy(tmp_path / "changed", lambda b: b["grants"]["bank-sme-credit-2026"].update(scenario="x"))
    assert load_bundle(changed).version != _demo().version


def test_yaml_and_schema_errors_name_file_and_line(tmp_path: Path) -> None:
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "a.yaml").write_text("grants:\n  g1:\n    consumer: demo-business\n    mode: sometimes\n")
    (bad / "b.yaml").write_text("purposes:\n  p1: {title: x, kind: commercial}\n  p1b: [\n")
    (bad / "c.yaml").write_text("colours:\n  red: 1\n")
    errors = _errors(bad)
    assert any(e.startswith("b.yaml:4: not valid YAML") for e in errors), errors  # where the stream ended
    assert "c.yaml:1: unknown section 'colours'" in errors
    bad_yaml_removed = tmp_path / "schema"
    bad_yaml_removed.mkdir()
    (bad_yaml_removed / "a.yaml").write_text((bad / "a.yaml").read_text())
    errors = _errors(bad_yaml_removed)
    assert any(e.startswith("a.yaml:4: grants.g1.mode:") for e in errors), errors
    assert any(e.startswith("a.yaml:2: grants.g1.services: Field required") for e in errors), errors


def test_a_name_defined_twice_is_refused(tmp_path: Path) -> None:
    bundle = policy_copy(tmp_path / "p")
    (bundle / "more.yaml").write_text("grants:\n  bank-sme-credit-2026: {}\n")
    errors = _errors(bundle)
    assert any("grants.bank-sme-credit-2026 is defined twice (first in grants.yaml:" in e for e in errors), errors


def test_a_price_over_its_cap_is_refused(tmp_path: Path) -> None:
    def dear(b: dict[str, Any]) -> None:
        b["price_classes"]["commercial-verification"]["price_yuan"] = "0.11"

    errors = _errors(policy_copy(tmp_path / "p", dear))
    assert any("price_classes.commercial-verification" in e and "exceeds `cap_yuan`" in e for e in errors), errors
    assert all(e.startswith("bundle.yaml:") for e in errors)


def test_references_must_resolve(tmp_path: Path, session_installation: Installation) -> None:
    def dangling(b: dict[str, Any]) -> None:
        grant = b["grants"]["bank-sme-credit-2026"]
        grant.update(consumer="nobody", purposes=["gambling"], price_class="cheap")
        grant["services"].append("mind-reading")
        b["consumers"]["demo-business"]["organisation"] = "nowhere"

    errors = _errors(policy_copy(tmp_path / "p", dangling), session_installation)
    messages = {e.split(": ", 1)[1] for e in errors}
    assert messages >= {
        "grants.bank-sme-credit-2026.consumer: unknown consumer nobody",
        "grants.bank-sme-credit-2026.purposes.0: unknown purpose gambling",
        "grants.bank-sme-credit-2026.price_class: unknown price class cheap",
        "grants.bank-sme-credit-2026.services.3: unknown service mind-reading",
        "consumers.demo-business.organisation: unknown organisation",
    }, errors


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (
            lambda s: s.update(
                dataset="social_insurance",
                keys=["employer_code"],
                latest_by="month",
                fields={"paid": {"column": "paid", "check": "fixed", "value": True}},
            ),
            "important data is served only through DP aggregates",
        ),
        (lambda s: s.update(dataset="nothing"), "dataset nothing is not registered"),
        (lambda s: s["fields"].update(x={"column": "shoe_size", "check": "equals"}), "has no column shoe_size"),
        (
            lambda s: s["fields"]["registered_capital_at_least"].update(thresholds=[1, 20000000000]),
            "thresholds must lie inside the bounds",
        ),
        (  # true of every record: it would only tell that the key exists, which no_match hides
            lambda s: s["fields"]["registered_capital_at_least"].update(thresholds=[0, 1000000]),
            "a threshold at the lower bound of registered_capital is true of every record",
        ),
        (
            lambda s: s["fields"].update(x={"column": "registered_capital", "check": "equals"}),
            "an equality check compares text",
        ),
        (lambda s: s["fields"]["active"].update(value="sleeping"), "'sleeping' is not a category of status"),
        (lambda s: s.update(keys=["name"]), "name is not a lookup key of enterprise_registry"),
    ],
)
def test_catalogue_rules(tmp_path: Path, session_installation: Installation, change: Any, expected: str) -> None:
    errors = _errors(
        policy_copy(tmp_path / "p", lambda b: change(b["verification_services"]["enterprise-registration"])),
        session_installation,
    )
    assert any(expected in e for e in errors), errors
    assert all(e.startswith("bundle.yaml:") and int(e.split(":")[1]) > 0 for e in errors), errors


def test_a_multi_row_dataset_needs_latest_by(tmp_path: Path, session_installation: Installation) -> None:
    errors = _errors(
        policy_copy(tmp_path / "p", lambda b: b["verification_services"]["tax-compliance"].pop("latest_by")),
        session_installation,
    )
    assert any("tax_compliance has up to 5 rows per key; say which" in e for e in errors), errors


def test_the_negative_list_wins(tmp_path: Path, session_installation: Installation) -> None:
    def banned(b: dict[str, Any]) -> None:
        b["negative_list"]["columns"].append("enterprise_registry.legal_representative")

    errors = _errors(policy_copy(tmp_path / "p", banned), session_installation)
    assert any("enterprise_registry.legal_representative is on the negative list" in e for e in errors), errors


def test_authorize_denies_by_default() -> None:
    bundle = _demo()
    gid, grant = authorize(bundle, BANK, "enterprise-registration", "credit_assessment", NOW)
    assert gid == "bank-sme-credit-2026" and grant.consumer == "demo-business"
    with pytest.raises(NotFound):
        authorize(bundle, BANK, "nothing", "credit_assessment", NOW)
    with pytest.raises(PolicyDenied, match="purpose: not one your grant allows"):
        authorize(bundle, BANK, "enterprise-registration", "public_research", NOW)
    stranger = Principal("demo-researcher", "Uni", frozenset({Role.RESEARCHER}), "t")
    with pytest.raises(PolicyDenied, match="no grant of yours covers"):
        authorize(bundle, stranger, "enterprise-registration", "credit_assessment", NOW)
    with pytest.raises(PolicyDenied, match="is not valid before"):
        authorize(bundle, BANK, "enterprise-registration", "credit_assessment", datetime(2025, 1, 1, tzinfo=UTC))
    with pytest.raises(PolicyDenied, match="expired at"):
        authorize(bundle, BANK, "enterprise-registration", "credit_assessment", datetime(2031, 1, 1, tzinfo=UTC))
    assert authorize(bundle, BANK, "tax-compliance", "credit_assessment", NOW)[0] == gid


def test_a_grant_needs_a_zoned_term_in_order(tmp_path: Path) -> None:
    def naive(b: dict[str, Any]) -> None:
        b["grants"]["bank-sme-credit-2026"].update(not_before="2026-01-01T00:00:00", expires="2025-01-01T00:00:00Z")

    errors = _errors(policy_copy(tmp_path / "p", naive))
    assert any("need a time zone" in e for e in errors), errors


def test_policy_check_cli(tmp_path: Path, session_installation: Installation) -> None:
    runner = CliRunner()
    config = ["--config", str(session_installation.root / "veilgate.toml")]
    good = runner.invoke(cli, ["policy", "check", str(REPO / "policies"), *config])
    assert good.exit_code == 0, good.output
    assert good.stdout.startswith(f"bundle {_demo().version}: 2 verification service(s)")
    broken = policy_copy(tmp_path / "p", lambda b: b["grants"]["bank-sme-credit-2026"].update(consumer="ghost"))
    bad = runner.invoke(cli, ["policy", "check", str(broken), *config])
    assert bad.exit_code == 1
    assert "bundle.yaml:" in bad.output and "unknown consumer ghost" in bad.output


def test_an_invalid_bundle_stops_the_gateway_from_starting(tmp_path: Path, installation: Installation) -> None:
    from gateway.services.runtime import Runtime

    broken = policy_copy(tmp_path / "p", lambda b: b["grants"]["bank-sme-credit-2026"].update(consumer="ghost"))
    with pytest.raises(PolicyInvalid, match="unknown consumer ghost"):
        Runtime.open(installation.settings.model_copy(update={"policy_dir": broken}))


def test_yaml_is_read_safely(tmp_path: Path) -> None:
    unsafe = tmp_path / "p"
    unsafe.mkdir()
    (unsafe / "x.yaml").write_text("purposes: !!python/object/apply:os.system ['echo pwned']\n")
    errors = _errors(unsafe)
    assert errors and "not valid YAML" in errors[0]
    assert yaml.safe_load("a: 1") == {"a": 1}


def test_the_committed_json_schema_is_the_one_the_code_validates_with() -> None:
    import json

    committed = json.loads((REPO / "policies" / "schema.json").read_text())
    assert committed == PolicyBundle.model_json_schema(), (
        "policies/schema.json is stale; regenerate it with: python -c 'import json; "
        "from gateway.domain.policy import PolicyBundle; "
        "print(json.dumps(PolicyBundle.model_json_schema(), indent=2, sort_keys=True))' > policies/schema.json"
    )


def test_a_verification_key_is_a_text_column(session_installation: Installation) -> None:
    """A caller's key is text: against an integer lookup key it never matched in memory, and
    DuckDB's refusal to convert it quoted the key into the server's log."""
    from gateway.domain.policy import check_against_catalog
    from gateway.services.policy_check import entries

    bundle, _ = read_bundle(REPO / "policies")
    assert bundle is not None
    catalogue = dict(entries(CatalogStore(session_installation.settings.data_path)))
    registry = catalogue["enterprise_registry"]
    catalogue["enterprise_registry"] = registry.model_copy(
        update={"lookup_keys": ["credit_code", "registered_capital"]}
    )
    service = bundle.verification_services["enterprise-registration"]
    changed = bundle.model_copy(
        update={
            "verification_services": {
                "enterprise-registration": service.model_copy(update={"keys": ["registered_capital"]})
            }
        }
    )
    messages = [issue.message for issue in check_against_catalog(changed, catalogue)]
    assert "registered_capital is integer: a lookup key of a service is text" in messages


def test_a_negative_listed_column_is_no_models_order_either(tmp_path: Path, session_installation: Installation) -> None:
    """A feature's `order_by` is read to choose the newest rows, so the score depends on it."""

    def banned(b: dict[str, Any]) -> None:
        b["negative_list"]["columns"].append("tax_compliance.tax_year")
        b["verification_services"]["tax-compliance"].pop("latest_by")  # only the model reads it now
        b["verification_services"].pop("tax-compliance")

    errors = _errors(policy_copy(tmp_path / "p", banned), session_installation)
    assert any("models" in e and "tax_compliance.tax_year is on the negative list" in e for e in errors), errors


def test_a_scorecard_bin_compares_numbers_only(tmp_path: Path, session_installation: Installation) -> None:
    """A `below` bin on a date could not compare it: scoring a known entity failed (a 500,
    uncounted) where an unknown one answered not_found. The policy check refuses it."""

    def raw_date(b: dict[str, Any]) -> None:
        feature = b["models"]["enterprise-credit-risk"]["features"]["years_established"]
        feature.pop("transform")

    errors = _errors(policy_copy(tmp_path / "p", raw_date), session_installation)
    assert any("a `below` bin compares numbers: years_established is a date" in e for e in errors), errors
