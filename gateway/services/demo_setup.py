"""Set up the demo data domain: data, registration, keys, clients, config. Idempotent.

Layout under the demo directory:
  veilgate.toml                    the config `veilgate serve --config` reads
  source/                          generated Parquet files and catalogue entries
  state/                           keys, client accounts, the data domain
  state/demo-credentials.json      the demo clients' secrets (mode 0600)
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pyarrow.parquet as pq

from gateway import demo_data
from gateway.catalog import CatalogStore
from gateway.domain.principal import Role
from gateway.services import registration
from gateway.settings import Settings, load_settings
from gateway.signing import KeyRing
from gateway.state.backend import open_accounts, open_log

DEMO_CLIENTS = (
    # (client id, organisation, role, person): two approvals come from two different people
    ("demo-business", "Demo Commercial Bank", Role.CONSUMER, None),
    ("demo-researcher", "Demo University Institute of Labour Economics", Role.RESEARCHER, None),
    ("demo-admin", "Demo Public Data Administration", Role.ADMIN, "Demo Administrator"),
    ("demo-approver", "Demo Public Data Administration", Role.ADMIN, "Demo Approver"),
    ("demo-auditor", "Demo Audit Office", Role.AUDITOR, "Demo Auditor"),
)


@dataclass(frozen=True, slots=True)
class DemoSetup:
    config_file: Path
    settings: Settings
    credentials: dict[str, str]
    credentials_file: Path


def setup(
    demo_dir: Path,
    policy_dir: Path,
    *,
    scale: float = 1.0,
    canary: str | None = None,
    say: Callable[[str], None] = lambda _m: None,
    data_progress: demo_data.ProgressFn = lambda _d, _n, _t: None,
) -> DemoSetup:
    demo_dir = demo_dir.resolve()
    # 1. Config: the state lives beside it, the policy bundle is the repository's.
    config_file = demo_dir / "veilgate.toml"
    demo_dir.mkdir(parents=True, exist_ok=True)
    config_file.write_text(
        "# Written by `veilgate demo setup`; safe to edit.\n"
        'state_dir = "state"\n'
        f'policy_dir = "{policy_dir.resolve()}"\n',
        encoding="utf-8",
    )
    settings = load_settings(config_file)
    settings.state_dir.mkdir(parents=True, exist_ok=True)
    os.chmod(settings.state_dir, 0o700)
    # 2. Data: generated once; a second run reuses it.
    source = demo_dir / "source"
    if not all((source / f"{name}.parquet").exists() for name in demo_data.DATASETS):
        say(f"generating demo data (scale {scale:g})")
        demo_data.generate(source, scale=scale, canary=canary, progress=data_progress)
    # 3. Registration: unchanged files are recognised by their content version.
    catalog = CatalogStore(settings.data_path)
    for name in demo_data.DATASETS:
        outcome = registration.register(
            catalog,
            settings.data_path,
            source / f"{name}.yaml",
            source / f"{name}.parquet",
            note="demo data",
            limits=registration.build_limits(settings),
        )
        state = "unchanged" if outcome.unchanged else "registered"
        say(
            f"{name}: {state}, version {outcome.record.version}, "
            f"{outcome.rows_dropped_by_contribution_bound} row(s) dropped by the contribution bound"
        )
    # 4. Keys: one ring for access tokens, one for receipts.
    KeyRing.create(settings.token_keys_dir)
    KeyRing.create(settings.receipt_keys_dir)
    # 5. The audit log and its secret for pseudonyms, so that `veilgate doctor` finds them.
    open_log(settings.audit_dir, dsn=settings.database_dsn, schema=settings.database_schema).close()
    # 6. Clients: made once; their secrets are kept in a 0600 file for the demo only.
    credentials_file = settings.state_dir / "demo-credentials.json"
    credentials: dict[str, str] = {}
    with contextlib.closing(open_accounts(settings, listen=False)) as clients:
        if credentials_file.exists():
            credentials = json.loads(credentials_file.read_text(encoding="utf-8"))
        for client_id, organisation, role, person in DEMO_CLIENTS:
            if client_id in credentials and clients.find(client_id) is not None:
                continue
            if clients.find(client_id) is not None:
                raise RuntimeError(f"{client_id} exists but its secret is lost; delete {settings.state_dir} and rerun")
            credentials[client_id] = clients.add(client_id, organisation, [role], person=person)
    fd = os.open(credentials_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        json.dump(credentials, handle, indent=2)
    return DemoSetup(config_file, settings, credentials, credentials_file)


def tour(setup_result: DemoSetup, base_url: str) -> str:
    """Ready-to-paste requests for every service that exists, with the demo's real secrets."""
    creds = setup_result.credentials
    lines = [
        "Veilgate demo data domain",
        f"  config:       {setup_result.config_file}",
        f"  credentials:  {setup_result.credentials_file}",
        "",
        "Clients (id / secret / role):",
    ]
    for client_id, _org, role, _person in DEMO_CLIENTS:
        lines.append(f"  {client_id:16} {creds[client_id]}  ({role.value})")
    lines += [
        "",
        f"Web console:  {base_url}/console   (log in with demo-admin, then demo-approver for the second approval)",
        f"API docs:     {base_url}/docs",
        "",
        "Public data resource directory (no token needed):",
        f"  curl -s {base_url}/v1/catalog",
        f"  curl -s {base_url}/v1/catalog/enterprise_registry",
        f"  curl -s '{base_url}/v1/catalog/social_insurance/sample?rows=5'",
        "",
        "Get an access token (OAuth2 client credentials) and use it:",
        f"  TOKEN=$(curl -s {base_url}/v1/token -d grant_type=client_credentials \\",
        f"      -d client_id=demo-admin -d client_secret={creds['demo-admin']} \\",
        "      | python3 -c 'import json,sys; print(json.load(sys.stdin)[\"access_token\"])')",
        f'  curl -s {base_url}/v1/me -H "Authorization: Bearer $TOKEN"',
        f'  curl -s {base_url}/v1/admin/datasets -H "Authorization: Bearer $TOKEN"',
        f'  curl -s "{base_url}/v1/admin/audit?limit=5" -H "Authorization: Bearer $TOKEN"',
        "",
        *_verification_tour(setup_result, base_url),
        *_aggregate_tour(setup_result, base_url),
        "Trust: keys that sign receipts and checkpoints, and the audit log's signed tree heads:",
        f"  curl -s {base_url}/.well-known/jwks.json",
        f"  curl -s {base_url}/v1/audit/checkpoints",
        f"  veilgate audit witness {base_url} --store witness.jws    # run it again later: nothing was rewritten",
        f"  veilgate audit verify --config {setup_result.config_file}",
        "",
        f"Or mint a token locally:  veilgate token --client demo-business --config {setup_result.config_file}",
        f"Health: curl -s {base_url}/healthz ; curl -s {base_url}/readyz",
        f"API reference: {base_url}/docs",
    ]
    return "\n".join(lines)


def _aggregate_tour(setup_result: DemoSetup, base_url: str) -> list[str]:
    """A researcher previews and releases a DP mean, then looks at the budget."""
    # At the default scale its intervals are a few percent of the values (README, the tour).
    body = json.dumps({"purpose": "public_research", "parameters": {"group_by": ["region"]}, "epsilon": "1"})
    secret = setup_result.credentials["demo-researcher"]
    post = f"-H \"Authorization: Bearer $TOKEN\" -H 'Content-Type: application/json' -d '{body}'"
    return [
        "Ask an aggregate question as the researcher (demo-researcher): preview cost and accuracy (free),",
        "release DP statistics with 95% intervals (signed, charged once), and see the budget:",
        f"  TOKEN=$(curl -s {base_url}/v1/token -d grant_type=client_credentials \\",
        f"      -d client_id=demo-researcher -d client_secret={secret} \\",
        "      | python3 -c 'import json,sys; print(json.load(sys.stdin)[\"access_token\"])')",
        f"  curl -s {base_url}/v1/aggregate/wage-base-mean/preview {post}",
        f"  curl -s {base_url}/v1/aggregate/wage-base-mean {post}",
        f'  curl -s {base_url}/v1/budget -H "Authorization: Bearer $TOKEN"',
        "",
    ]


def _verification_tour(setup_result: DemoSetup, base_url: str) -> list[str]:
    """A bank verifies a real enterprise of the demo data: its legal representative, and that it is active."""
    source = setup_result.config_file.parent / "source" / "enterprise_registry.parquet"
    table = pq.read_table(source, columns=["credit_code", "legal_representative", "status"])
    # The first row carries the canary, if any; the tour shows a match, so an active enterprise.
    rows = [r for r in table.slice(1, 200).to_pylist() if r["status"] == "active"][:1]
    if not rows:
        return []
    claim = {
        "keys": {"credit_code": rows[0]["credit_code"]},
        "checks": {"legal_representative": rows[0]["legal_representative"], "active": True},
    }
    body = json.dumps({"purpose": "credit_assessment", "claims": [claim]}, ensure_ascii=False)
    secret = setup_result.credentials["demo-business"]
    return [
        "Verify a claim as the bank (demo-business): match or no match per field, and a signed receipt:",
        f"  TOKEN=$(curl -s {base_url}/v1/token -d grant_type=client_credentials \\",
        f"      -d client_id=demo-business -d client_secret={secret} \\",
        "      | python3 -c 'import json,sys; print(json.load(sys.stdin)[\"access_token\"])')",
        f'  curl -s {base_url}/v1/verify/enterprise-registration -H "Authorization: Bearer $TOKEN" \\',
        f"      -H 'Content-Type: application/json' -d '{body}'",
        "",
    ]
