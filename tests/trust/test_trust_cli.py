"""`veilgate receipt verify`, `veilgate audit verify|export|checkpoint|witness`: exit codes and messages."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

from fastapi.testclient import TestClient
from typer.testing import CliRunner

from gateway.app import create_app
from gateway.cli import app as cli
from gateway.domain import merkle
from gateway.services.receipts import sign_result
from gateway.signing import KeyRing
from gateway.state.audit_sqlite import SqliteAuditLog
from tests.conftest import Installation, get_token, serving
from tests.trust.test_receipts import document

runner = CliRunner()


def _config(inst: Installation) -> list[str]:
    return ["--config", str(inst.root / "veilgate.toml")]


def _traffic(inst: Installation, requests: int = 6) -> None:
    with TestClient(create_app(inst.settings)) as client:  # its shutdown signs a checkpoint
        get_token(client, "demo-business", inst.credentials["demo-business"])
        for _ in range(requests):
            client.get("/v1/catalog")


def test_receipt_verify_accepts_a_file_and_prints_the_document(installation: Installation, tmp_path: Path) -> None:
    keys = KeyRing.load(installation.settings.receipt_keys_dir)
    (tmp_path / "receipt.jws").write_text(sign_result(keys, document()) + "\n")
    (tmp_path / "jwks.json").write_text(json.dumps(keys.jwks()))
    result = runner.invoke(
        cli, ["receipt", "verify", str(tmp_path / "receipt.jws"), "--jwks", str(tmp_path / "jwks.json")]
    )
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["audit_seq"] == 17
    assert "valid receipt" in result.stderr


def test_receipt_verify_refuses_a_forgery_in_one_line(installation: Installation, tmp_path: Path) -> None:
    keys = KeyRing.load(installation.settings.receipt_keys_dir)
    (tmp_path / "jwks.json").write_text(json.dumps(keys.jwks()))
    forged = sign_result(KeyRing.create(tmp_path / "attacker"), document())
    result = runner.invoke(cli, ["receipt", "verify", forged, "--jwks", str(tmp_path / "jwks.json")])
    assert result.exit_code == 1
    assert "receipt verification failed: the JWS is signed by a key that the JWKS does not publish" in result.output
    assert "Traceback" not in result.output
    missing = runner.invoke(cli, ["receipt", "verify", forged, "--jwks", str(tmp_path / "nope.json")])
    assert missing.exit_code == 1 and "no JWKS file" in missing.output


def test_receipt_verify_fetches_the_jwks_from_a_live_gateway(installation: Installation) -> None:
    keys = KeyRing.load(installation.settings.receipt_keys_dir)
    token = sign_result(keys, document())
    with serving(create_app(installation.settings)) as base:
        result = runner.invoke(cli, ["receipt", "verify", "-", "--jwks", f"{base}/.well-known/jwks.json"], input=token)
    assert result.exit_code == 0, result.output


def test_audit_verify_checkpoint_and_export(installation: Installation, tmp_path: Path) -> None:
    _traffic(installation)
    _traffic(installation)
    assert runner.invoke(cli, ["audit", "checkpoint", *_config(installation)]).output.startswith(
        "the log has not grown"
    )
    verified = runner.invoke(cli, ["audit", "verify", *_config(installation)])
    assert verified.exit_code == 0, verified.output
    log = SqliteAuditLog.open(installation.settings.audit_dir)
    checkpoints, size = len(log.checkpoints()), log.size()
    log.close()
    assert checkpoints >= 2
    assert f"audit log verified: leaves {size}, checkpoints {checkpoints}," in verified.stdout
    out = tmp_path / "audit.jsonl"
    assert runner.invoke(cli, ["audit", "export", "--out", str(out), *_config(installation)]).exit_code == 0
    lines = out.read_bytes().splitlines()
    log = SqliteAuditLog.open(installation.settings.audit_dir)
    try:
        assert merkle.root([merkle.leaf_hash(line) for line in lines]) == log.root(log.size())
    finally:
        log.close()


def test_audit_verify_names_the_first_bad_record_and_exits_1(installation: Installation) -> None:
    _traffic(installation)
    with sqlite3.connect(installation.settings.audit_dir / "log.sqlite3") as db:
        (seq,) = db.execute("SELECT MAX(seq) - 2 FROM leaves").fetchone()  # a GET /v1/catalog of _traffic
        db.execute("UPDATE leaves SET record = replace(record, '\"GET\"', '\"PUT\"') WHERE seq = ?", (seq,))
    result = runner.invoke(cli, ["audit", "verify", *_config(installation)])
    assert result.exit_code == 1
    assert f"the audit log does not verify: leaf {seq} was changed after it was written" in result.output


def test_audit_commands_on_an_installation_without_a_log(tmp_path: Path) -> None:
    (tmp_path / "veilgate.toml").write_text('state_dir = "state"\n')
    result = runner.invoke(cli, ["audit", "export", "--out", "-", "--config", str(tmp_path / "veilgate.toml")])
    assert result.exit_code == 1 and "no audit log" in result.output


def test_a_witness_keeps_checkpoints_and_catches_a_rewrite(installation: Installation, tmp_path: Path) -> None:
    store = tmp_path / "witness.jws"
    _traffic(installation)
    with serving(create_app(installation.settings)) as base:
        first = runner.invoke(cli, ["audit", "witness", base, "--store", str(store)])
        assert first.exit_code == 0, first.output
        assert "first seen" in first.stdout
    _traffic(installation)
    with serving(create_app(installation.settings)) as base:
        second = runner.invoke(cli, ["audit", "witness", base, "--store", str(store)])
        assert second.exit_code == 0, second.output
        assert "extends the kept checkpoint" in second.stdout
    kept = store.read_text()
    # The operator rewrites a leaf with the signing key in hand and re-signs every checkpoint:
    # on the host, it also removes the head the signer kept out of the database.
    (installation.settings.audit_dir / "signed-head.json").unlink()
    with sqlite3.connect(installation.settings.audit_dir / "log.sqlite3") as db:
        rows = db.execute("SELECT seq, record FROM leaves ORDER BY seq").fetchall()
        db.execute("DELETE FROM checkpoints")
        target = next(seq for seq, record in rows if '"GET"' in record)  # well inside the kept checkpoint
        for seq, record in rows:
            changed = record.replace('"GET"', '"PUT"') if seq == target else record
            db.execute(
                "UPDATE leaves SET record = ?, hash = ? WHERE seq = ?",
                (changed, merkle.leaf_hash(changed.encode()), seq),
            )
    _traffic(installation)  # shutdown signs a fresh, self-consistent checkpoint of the forgery
    assert runner.invoke(cli, ["audit", "verify", *_config(installation)]).exit_code == 0
    with serving(create_app(installation.settings)) as base:
        caught = runner.invoke(cli, ["audit", "witness", base, "--store", str(store)])
    assert caught.exit_code == 1
    assert "the log was rewritten" in caught.output
    assert store.read_text() == kept  # the witness keeps the good checkpoint
    witnessed = runner.invoke(cli, ["audit", "verify", "--witness", str(store), *_config(installation)])
    assert witnessed.exit_code == 1 and "that a witness kept" in witnessed.output


def test_changes_made_from_the_host_are_in_the_audit_log(installation: Installation) -> None:
    """A command that changes the installation acts for no account, so no API route records
    it: each leaves a leaf of its own (principal `cli:<user>`, its command as route), bound by
    `result_digest` to the change it made and holding no secret it printed."""
    from gateway.domain.trail import digest
    from gateway.state.ports import LeafFilter

    log = SqliteAuditLog.open(installation.settings.audit_dir)
    before = log.size()
    commands = [
        ["freeze", "consumer", "demo-business", "--reason", "suspected abuse"],
        ["unfreeze", "consumer", "demo-business", "--reason", "cleared"],
        ["clients", "add", "host-made", "--org", "Elsewhere", "--role", "consumer"],
        ["clients", "disable", "host-made"],
        ["keys", "rotate"],
        ["token", "--client", "demo-admin"],
    ]
    outputs = []
    for command in commands:
        result = runner.invoke(cli, [*command, *_config(installation)])
        assert result.exit_code == 0, result.output
        outputs.append(result.output)
    secret = json.loads(outputs[2])["client_secret"]
    leaves = [x for x in log.find(LeafFilter(), limit=1000) if x.seq >= before]
    log.close()
    assert [leaf.route for leaf in leaves] == [
        "veilgate freeze", "veilgate unfreeze", "veilgate clients add", "veilgate clients disable",
        "veilgate keys rotate", "veilgate token",
    ]  # fmt: skip
    assert all(leaf.principal and leaf.principal.startswith("cli:") and leaf.method == "CLI" for leaf in leaves)
    added = {"client_id": "host-made", "organisation": "Elsewhere", "roles": ["consumer"], "person": None}
    assert leaves[2].result_digest == digest(added)
    assert leaves[1].result_digest == digest({"kind": "consumer", "name": "demo-business", "reason": "cleared"})
    dumped = json.dumps([leaf.model_dump(mode="json") for leaf in leaves])
    assert secret not in dumped and outputs[-1].strip() not in dumped  # neither the secret nor the token
