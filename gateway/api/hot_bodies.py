"""The bodies of the two hot paths (verification, scoring), decoded and validated by msgspec.

The same rules as the pydantic models of `schemas.py` had (lengths, patterns, strict types: `true`
is not 1, unknown fields refused), in one pass of C from the request bytes. Refusals keep the
shape every route has (`problems.py`): a location under `body` and a rule.

SECURITY: msgspec's messages are passed on only when they are known to hold nothing of the
input (type names, our own bounds and patterns); an unknown field's name, which the caller chose,
is never shown, and anything unrecognised becomes a fixed message.
"""

from __future__ import annotations

import copy
import re
from typing import Annotated, Any, TypeVar

import msgspec
import msgspec.inspect
from fastapi.exceptions import RequestValidationError

from gateway.domain.names import MAX_POSITION

PURPOSE_PATTERN = r"^[a-z][a-z0-9_-]{0,62}$"

Key = Annotated[str, msgspec.Meta(max_length=64)]
Purpose = Annotated[str, msgspec.Meta(pattern=PURPOSE_PATTERN, description="One of the purposes your grant allows.")]
CheckText = Annotated[str, msgspec.Meta(max_length=200)]
CheckInteger = Annotated[int, msgspec.Meta(ge=-MAX_POSITION, le=MAX_POSITION)]


class ClaimRequest(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    keys: Annotated[
        dict[Key, Key],
        msgspec.Meta(
            min_length=1, max_length=3, description="Every key column of the service, in full: exact match only."
        ),
    ]
    checks: Annotated[
        dict[Key, CheckText | bool | CheckInteger],
        msgspec.Meta(
            min_length=1,
            max_length=16,
            description="Field -> the value to compare (equals), true (fixed condition) or a threshold from its list.",
        ),
    ]
    consent_ref: (
        Annotated[str, msgspec.Meta(max_length=128, description="Reference of the person's authorization.")] | None
    ) = None


class VerifyRequest(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    purpose: Purpose
    claims: Annotated[list[ClaimRequest], msgspec.Meta(min_length=1, max_length=1000)]


class ScoreRequest(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    purpose: Purpose
    keys: Annotated[
        list[Key], msgspec.Meta(min_length=1, max_length=1000, description="Entity keys, in full (one or a batch).")
    ]


Body = TypeVar("Body", VerifyRequest, ScoreRequest)
_DECODERS: dict[type[Any], msgspec.json.Decoder[Any]] = {
    VerifyRequest: msgspec.json.Decoder(VerifyRequest),
    ScoreRequest: msgspec.json.Decoder(ScoreRequest),
}


def decode(kind: type[Body], data: bytes) -> Body:
    """The body of `kind` from the request bytes; a 422 (`RequestValidationError`) otherwise."""
    try:
        found: Body = _DECODERS[kind].decode(data)
    except msgspec.ValidationError as exc:
        # msgspec stops at the first error; a missing field is reported too, as pydantic did.
        first: dict[str, Any] = refusal(str(exc))
        raise RequestValidationError([first, *(e for e in _missing(kind, data) if e["loc"] != first["loc"])]) from None
    except msgspec.DecodeError:
        raise RequestValidationError(
            [{"loc": ("body",), "msg": "the body is not valid JSON", "type": "json_invalid"}]
        ) from None
    return found


def _missing(kind: type[Any], data: bytes) -> list[dict[str, Any]]:
    """The required top-level fields absent from `data` (only on the refusal path)."""
    try:
        raw = msgspec.json.decode(data)
    except msgspec.DecodeError:
        return []
    if not isinstance(raw, dict):
        return []
    info = msgspec.inspect.type_info(kind)
    if not isinstance(info, msgspec.inspect.StructType):  # pragma: no cover - both bodies are structs
        return []
    required = [f.encode_name for f in info.fields if f.required and f.encode_name not in raw]
    return [{"loc": ("body", name), "msg": "Field required", "type": "missing"} for name in required]


_AT = re.compile(r"^(?P<message>.*?)(?: - at `(?P<key>key)` in `(?P<keyed>[^`]*)`| - at `(?P<path>[^`]*)`)?$", re.S)
_STEP = re.compile(r"\.([A-Za-z_][A-Za-z0-9_]*)|\[(\d+)\]|\[\.\.\.\]")
_SAFE = re.compile(
    r"^Expected `[a-z |]+`"
    r"(?: of length [<>]=? \d+| [<>]=? -?\d+| matching regex '[^']*')?"
    r"(?:, got `[a-z]+`)?$"
)
_MISSING = re.compile(r"^Object missing required field `([a-z_]+)`$")
A_KEY = "[key]"
"""The location step of a key the caller chose: shown as `<key>` (`problems._location`)."""


def _steps(path: str) -> list[str | int]:
    steps: list[str | int] = []
    for name, index in _STEP.findall(path.removeprefix("$")):
        steps.append(name if name else int(index) if index else A_KEY)
    return steps


def refusal(text: str) -> dict[str, Any]:
    """A msgspec validation message as a located error in pydantic's shape (`loc`, `msg`, `type`)."""
    found = _AT.match(text)
    message = found.group("message") if found else ""
    path = (found.group("path") or found.group("keyed") or "") if found else ""
    steps = _steps(path)
    if found and found.group("key"):
        steps.append(A_KEY)
    if message.startswith("Object contains unknown field"):
        # Located at its parent: its own name is the caller's (`problems._where`).
        return {"loc": ("body", *steps, A_KEY), "msg": "unknown field", "type": "extra_forbidden"}
    missing = _MISSING.match(message)
    if missing:
        return {"loc": ("body", *steps, missing.group(1)), "msg": "Field required", "type": "missing"}
    if _SAFE.match(message):
        return {"loc": ("body", *steps), "msg": message, "type": "value_error"}
    return {"loc": ("body", *steps), "msg": "invalid value", "type": "value_error"}


def openapi_body(kind: type[Any]) -> dict[str, Any]:
    """The OpenAPI `requestBody` for a route whose body is `kind`: msgspec's own JSON Schema of it,
    with its definitions inlined (a route's schema must stand alone in the document) and without
    null values, as FastAPI writes the document."""
    (schema,), definitions = msgspec.json.schema_components([kind], ref_template="#/$defs/{name}")
    return {
        "requestBody": {"required": True, "content": {"application/json": {"schema": _inline(schema, definitions)}}}
    }


def _inline(node: Any, definitions: dict[str, Any]) -> Any:
    if isinstance(node, dict):
        ref = node.get("$ref")
        if isinstance(ref, str) and ref.startswith("#/$defs/"):
            return _inline(copy.deepcopy(definitions[ref.removeprefix("#/$defs/")]), definitions)
        # FastAPI writes the document without null values (a `"default": null` would be dropped).
        return {key: _inline(value, definitions) for key, value in node.items() if value is not None}
    if isinstance(node, list):
        return [_inline(value, definitions) for value in node]
    return node
