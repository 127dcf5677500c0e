"""The command line: exit codes and messages, never a traceback."""

from __future__ import annotations

import sqlite3
from datetime import UTC, datetime, timedelta
from pathlib import Path

import jwt
from typer.testing import CliRunner

from gateway.cli import app
from gateway.domain.budget import Amount, accounts
from gateway.state.budget_sqlite import SqliteBudgetLedger
from tests.conftest import Installation

runner = CliRunner()


def _config(inst: Installation) -> str:
    return str(inst.root / "veilgate.toml")


def test_demo_data_writes_files(tmp_path: Path) -> None:
    result = runner.invoke(app, ["demo-data", "--out", str(tmp_path), "--scale", "0.01", "--canary", "CANARY-CLI"])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "social_insurance.parquet").is_file()
    assert (tmp_path / "social_insurance.yaml").is_file()


def test_register_refusal_is_one_line_and_exit_1(installation: Installation) -> None:
    entry = installation.source / "tax_compliance.yaml"
    wrong = installation.source / "enterprise_registry.parquet"
    result = runner.invoke(app, ["register", str(entry), "--source", str(wrong), "--config", _config(installation)])
    assert result.exit_code == 1
    assert "registration failed" in result.output and "missing column(s)" in result.output
    assert "Traceback" not in result.output


def test_token_command_mints_a_token_for_a_known_client(installation: Installation) -> None:
    result = runner.invoke(app, ["token", "--client", "demo-business", "--config", _config(installation)])
    assert result.exit_code == 0, result.output
    claims = jwt.decode(result.output.strip(), options={"verify_signature": False})
    assert claims["sub"] == "demo-business" and claims["roles"] == ["consumer"]
    missing = runner.invoke(app, ["token", "--client", "nobody", "--config", _config(installation)])
    assert missing.exit_code == 1


def test_doctor_exit_code(installation: Installation) -> None:
    assert runner.invoke(app, ["doctor", "--config", _config(installation)]).exit_code == 0
    (installation.settings.state_dir / "accounts.sqlite3").chmod(0o644)
    assert runner.invoke(app, ["doctor", "--config", _config(installation)]).exit_code == 1


def test_deregister_and_keys_rotate(installation: Installation) -> None:
    result = runner.invoke(
        app, ["deregister", "tax_compliance", "--note", "retired", "--config", _config(installation)]
    )
    assert result.exit_code == 0, result.output
    again = runner.invoke(app, ["deregister", "tax_compliance", "--config", _config(installation)])
    assert again.exit_code == 1 and "already cancelled" in again.output
    rotated = runner.invoke(app, ["keys", "rotate", "--purpose", "token", "--config", _config(installation)])
    assert rotated.exit_code == 0 and "new active key" in rotated.output


def test_budget_stale_lists_then_settles_what_crashed_requests_left(installation: Installation) -> None:
    """Two requests died two hours ago, one before reading data and one after."""
    ledger = SqliteBudgetLedger(installation.settings.state_dir / "ledger" / "budget.sqlite3")
    acc = accounts(
        grant="g1", consumer="c1", organisation="org", dataset="social_insurance", version="v1",
        grant_cap=Amount(1_000_000), organisation_cap=Amount(1_000_000), dataset_version_cap=Amount(1_000_000),
    )  # fmt: skip
    never_read, read = ledger.reserve(acc, Amount(100_000)), ledger.reserve(acc, Amount(200_000))
    ledger.mark_reading(read)
    assert ledger.hold_releases([("question", acc.grant)], "crashed", expired_before="").busy == ()
    assert ledger.claim_idempotency_key("c1", "retry-1", "digest") is None
    two_hours_ago = (datetime.now(UTC) - timedelta(hours=2)).isoformat()
    with sqlite3.connect(installation.settings.state_dir / "ledger" / "budget.sqlite3") as conn:
        for table in ("budget_reservations", "payer_holds", "idempotency_keys"):
            conn.execute(f"UPDATE {table} SET created = ?", (two_hours_ago,))  # noqa: S608 - fixed names
    listed = runner.invoke(app, ["budget", "stale", "--config", _config(installation)])
    assert listed.exit_code == 0, listed.output
    assert f"{never_read}\treserved\tepsilon 0.1" in listed.output and f"{read}\treading\tepsilon 0.2" in listed.output
    assert "hold\tquestion" in listed.output and "idempotency-key\tc1" in listed.output
    assert ledger.balance(acc.grant).reserved == Amount(300_000)  # listing changes nothing
    settled = runner.invoke(app, ["budget", "stale", "--settle", "--config", _config(installation)])
    assert settled.exit_code == 0, settled.output
    assert "given back (no data read): 1; committed (data read, the charge stays): 1" in settled.output
    assert "holds dropped: 1; idempotency keys freed: 1" in settled.output
    assert ledger.hold_releases([("question", acc.grant)], "next", expired_before="").busy == ()  # free again
    assert ledger.claim_idempotency_key("c1", "retry-1", "digest") is None
    balance = ledger.balance(acc.grant)
    assert balance.spent == Amount(200_000) and balance.reserved == Amount(0)
    assert "stale" not in runner.invoke(app, ["budget", "stale", "--config", _config(installation)]).output
    ledger.close()
