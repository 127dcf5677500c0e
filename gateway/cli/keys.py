"""`veilgate keys ...` (the signing key rings) and `veilgate token` (a token minted with them)."""

from __future__ import annotations

from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer

from gateway.cli.console import fail, guard
from gateway.cli.host_audit import host_change
from gateway.cli.installation import ConfigOption, account_store, settings_for
from gateway.services import authentication
from gateway.settings import Settings
from gateway.signing import KeyRing

__all__ = ["KeyPurpose", "app", "token"]

app = typer.Typer(help="Signing keys: create, rotate, revoke.", no_args_is_help=True)


class KeyPurpose(StrEnum):
    TOKEN = "token"  # noqa: S105 - the name of a key ring, not a secret
    RECEIPT = "receipt"


def _key_dir(settings: Settings, purpose: KeyPurpose) -> Path:
    return settings.token_keys_dir if purpose is KeyPurpose.TOKEN else settings.receipt_keys_dir


PurposeOption = Annotated[KeyPurpose, typer.Option(help="Which key ring.")]


@app.command("init")
def keys_init(config: ConfigOption = None) -> None:
    """Create the token-signing and receipt-signing key rings if they do not exist."""
    settings = settings_for(config, creating=True)
    with guard("key creation"):
        for purpose in KeyPurpose:
            ring = KeyRing.create(_key_dir(settings, purpose))
            typer.echo(f"{purpose.value}: active key {ring.active.kid}")


@app.command("rotate")
def keys_rotate(config: ConfigOption = None, purpose: PurposeOption = KeyPurpose.RECEIPT) -> None:
    """Make a new active key; the old one is retired and stays published."""
    settings = settings_for(config)
    with host_change(settings, "keys rotate") as record, guard("rotation"):
        info = KeyRing.load(_key_dir(settings, purpose)).rotate()
        record({"purpose": purpose.value, "kid": info.kid})
    typer.echo(f"{purpose.value}: new active key {info.kid}")


@app.command("revoke")
def keys_revoke(
    kid: str,
    since: Annotated[datetime, typer.Option(help="When the key was compromised (ISO 8601; UTC if no offset).")],
    config: ConfigOption = None,
    purpose: PurposeOption = KeyPurpose.RECEIPT,
) -> None:
    """Mark a compromised key as revoked."""
    settings = settings_for(config)
    since = since if since.tzinfo is not None else since.replace(tzinfo=UTC)
    with host_change(settings, "keys revoke") as record, guard("revocation"):
        KeyRing.load(_key_dir(settings, purpose)).revoke(kid, since)
        record({"purpose": purpose.value, "kid": kid, "since": since.isoformat()})
    typer.echo(f"{purpose.value}: key {kid} revoked since {since.isoformat()}")


def token(
    client: Annotated[str, typer.Option(help="Client id to mint a token for.")],
    config: ConfigOption = None,
) -> None:
    """Print an access token for a client, for local administration (needs the key files)."""
    settings = settings_for(config)
    with host_change(settings, "token") as record, guard("token"), account_store(settings) as clients:
        found = clients.find(client)
        if found is None or found.disabled:
            fail(f"no enabled client {client!r}")
        keys = KeyRing.load(settings.token_keys_dir)
        record({"client_id": found.client_id})  # whom a token was made for from the host, never the token
        typer.echo(
            authentication.mint_token(
                keys,
                found.client_id,
                found.organisation,
                found.roles,
                issuer=settings.issuer,
                audience=settings.audience,
                ttl_seconds=settings.token_ttl_seconds,
                generation=found.token_generation,
            )
        )
