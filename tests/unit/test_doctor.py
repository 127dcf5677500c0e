"""`veilgate doctor` passes a good installation and names what is wrong in a bad one."""

from __future__ import annotations

from gateway.services.doctor import diagnose
from gateway.signing import KeyRing
from tests.conftest import Installation


def test_healthy_installation_passes(session_installation: Installation) -> None:
    findings = diagnose(session_installation.settings)
    assert all(f.ok for f in findings), findings
    assert {f.check for f in findings} >= {"token-signing keys", "client accounts", "dataset social_insurance"}


def test_loose_key_permissions_and_missing_data_are_named(installation: Installation) -> None:
    ring = KeyRing.load(installation.settings.token_keys_dir)
    (installation.settings.token_keys_dir / f"{ring.active.kid}.pem").chmod(0o644)
    record_file = installation.settings.data_path / "catalog" / "tax_compliance.json"
    version = __import__("json").loads(record_file.read_text())["version"]
    (installation.settings.data_path / "domain" / "tax_compliance" / f"{version}.duckdb").unlink()
    failed = {f.check: f.message for f in diagnose(installation.settings) if not f.ok}
    assert "readable by others" in failed["token-signing keys"]
    assert "register it again" in failed["dataset tax_compliance"]


def test_missing_state_directory_says_what_to_do(installation: Installation, tmp_path: object) -> None:
    settings = installation.settings.model_copy(update={"state_dir": installation.root / "nowhere"})
    findings = diagnose(settings)
    assert len(findings) == 1 and not findings[0].ok and "does not exist" in findings[0].message


def test_the_audit_log_is_checked(installation: Installation) -> None:
    log_dir = installation.settings.audit_dir
    assert {f.check for f in diagnose(installation.settings)} >= {"receipt-signing keys", "audit log"}
    (log_dir / "subject.key").chmod(0o644)
    failed = {f.check: f.message for f in diagnose(installation.settings) if not f.ok}
    assert "readable by others" in failed["audit log"]
    (log_dir / "subject.key").chmod(0o600)
    (log_dir / "log.sqlite3").write_bytes(b"this is not a database" * 100)
    for extra in ("log.sqlite3-wal", "log.sqlite3-shm"):
        (log_dir / extra).unlink(missing_ok=True)
    failed = {f.check: f.message for f in diagnose(installation.settings) if not f.ok}
    assert "cannot be opened" in failed["audit log"]
