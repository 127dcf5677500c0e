"""`veilgate receipt verify`: check a receipt offline against published keys."""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path
from typing import Annotated

import typer

from gateway.cli.console import console, fail, guard
from gateway.services import receipts

__all__ = ["app"]

app = typer.Typer(help="Receipts: check them offline.", no_args_is_help=True)


def _read_text_argument(value: str) -> str:
    """A compact JWS given inline, as a file path, or as `-` for stdin."""
    if value == "-":
        return sys.stdin.read().strip()
    if re.fullmatch(r"[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*", value.strip()):
        return value.strip()
    path = Path(value)
    if not path.is_file():
        fail(f"{value} is neither a compact JWS nor a file")
    return path.read_text().strip()


def _saved_receipt(text: str) -> tuple[str, dict[str, object] | None]:
    """The JWS, and the document a saved file claims it signs: a client's saved Receipt
    (`"format": "veilgate-receipt"`, with `document`) or a saved response body (the body itself)."""
    if not text.startswith("{"):
        return text, None
    try:
        saved = json.loads(text)
    except ValueError:
        saved = None
    if not isinstance(saved, dict) or not isinstance(saved.get("receipt"), str):
        fail("the file is JSON but holds no `receipt`")
        return text, None
    if saved.get("format") == "veilgate-receipt":
        return saved["receipt"], saved.get("document")
    return saved["receipt"], {k: v for k, v in saved.items() if k != "receipt"}


@app.command("verify")
def receipt_verify(
    receipt: Annotated[
        str, typer.Argument(help="The receipt: a JWS, a file with one, a saved Receipt or response body, or -.")
    ],
    jwks: Annotated[str, typer.Option(help="The published keys: a file or a URL such as .../.well-known/jwks.json.")],
) -> None:
    """Check a receipt's signature, key, algorithm and shape; print its result document."""
    token_text, claimed = _saved_receipt(_read_text_argument(receipt))
    with guard("receipt verification"):
        document = receipts.verify_receipt(token_text, receipts.load_jwks(jwks))
    if claimed is not None and claimed != json.loads(receipts.signed_payload(token_text)):
        fail("the saved document differs from what its receipt signs")
    console.print(f"[green]valid receipt[/green] for request {document.request_id}, audit leaf {document.audit_seq}")
    sys.stdout.write(json.dumps(document.model_dump(mode="json"), indent=2, ensure_ascii=False) + "\n")
