"""Requests built from the OpenAPI document with a hostile value in one place at a time.

The sweeps in `test_hostile_inputs.py` use these to reach every parameter of every route: each
path parameter, each query parameter, and each leaf of each JSON body (object property, list
item, dictionary key and dictionary value), the rest of the body filled with plausible values so
that the request gets past the framework and into the gateway's own checks.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

CANARY = "zqcanary7"
"""Shaped like a valid name, so that it passes the edge and reaches the gateway's own checks."""

CANARY_STRINGS = (
    CANARY,
    f"' OR 1=1--{CANARY}",
    f"../../{CANARY}",
    f"{CANARY}\x00",
    f"<script>{CANARY}</script>",
    CANARY + "x" * 300,
    f"{CANARY.upper()}\u200b",
)
"""Every one carries the canary; a refusal that shows any of it repeated the caller's value."""

KEY = ("<key>",)
"""A target path ending here puts the hostile value in a dictionary's key."""


@dataclass(frozen=True)
class Call:
    method: str
    url: str
    params: dict[str, Any] = field(default_factory=dict)
    body: Any = None
    form: dict[str, str] | None = None
    where: str = ""


def _resolve(doc: dict[str, Any], schema: dict[str, Any]) -> dict[str, Any]:
    while "$ref" in schema:
        node: Any = doc
        for part in schema["$ref"].removeprefix("#/").split("/"):
            node = node[part]
        schema = node
    return schema


def _local_definitions(node: Any) -> dict[str, Any]:
    """Bodies documented from a model's own JSON schema refer to `#/$defs/...` inside it."""
    found: dict[str, Any] = {}
    if isinstance(node, dict):
        found.update(node.get("$defs", {}))
        for value in node.values():
            found.update(_local_definitions(value))
    elif isinstance(node, list):
        for value in node:
            found.update(_local_definitions(value))
    return found


def _choice(doc: dict[str, Any], schema: dict[str, Any]) -> dict[str, Any]:
    schema = _resolve(doc, schema)
    for combinator in ("anyOf", "oneOf", "allOf"):
        options = [_resolve(doc, o) for o in schema.get(combinator, [])]
        options = [o for o in options if o.get("type") != "null"]
        if options:
            strings = [o for o in options if o.get("type") == "string"]
            return _choice(doc, (strings or options)[0])
    return schema


def leaves(
    doc: dict[str, Any], schema: dict[str, Any], path: tuple[Any, ...] = (), depth: int = 0
) -> Iterator[tuple[Any, ...]]:
    """Every place in a body a value can go."""
    schema = _choice(doc, schema)
    yield path
    if depth > 5:
        return
    if schema.get("type") == "object" or "properties" in schema:
        for name, sub in schema.get("properties", {}).items():
            yield from leaves(doc, sub, (*path, name), depth + 1)
        extra = schema.get("additionalProperties")
        if isinstance(extra, dict):
            yield (*path, *KEY)
            yield from leaves(doc, extra, (*path, "*"), depth + 1)
    elif schema.get("type") == "array" and isinstance(schema.get("items"), dict):
        yield from leaves(doc, schema["items"], (*path, 0), depth + 1)


def build(
    doc: dict[str, Any], schema: dict[str, Any], target: tuple[Any, ...], value: Any, path: tuple[Any, ...] = ()
) -> Any:
    """A plausible body with `value` at `target` (or as the key of the dictionary there)."""
    if path == target:
        return value
    schema = _choice(doc, schema)
    if "enum" in schema:
        return schema["enum"][0]
    if "const" in schema:
        return schema["const"]
    kind = schema.get("type")
    if kind == "object" or "properties" in schema:
        properties = schema.get("properties", {})
        required = set(schema.get("required", []))
        made = {
            name: build(doc, sub, target, value, (*path, name))
            for name, sub in properties.items()
            if name in required or target[: len(path) + 1] == (*path, name)
        }
        extra = schema.get("additionalProperties")
        if isinstance(extra, dict):
            key = value if target == (*path, *KEY) and isinstance(value, str) else "name"
            made[key] = build(doc, extra, target, value, (*path, "*"))
        return made
    if kind == "array":
        items = schema.get("items")
        return [build(doc, items, target, value, (*path, 0))] if isinstance(items, dict) else []
    if kind == "integer":
        return max(1, int(schema.get("minimum", 1)))
    if kind == "number":
        return 0.5
    if kind == "boolean":
        return True
    return "plausible"


def calls(doc: dict[str, Any], values: tuple[Any, ...]) -> Iterator[Call]:
    """Every operation, with each value in each parameter and each body leaf in turn."""
    doc = {**doc, "$defs": _local_definitions(doc)}
    for route, operations in doc["paths"].items():
        for method, op in operations.items():
            params = [_resolve(doc, p) for p in op.get("parameters", [])]
            path_names = [p["name"] for p in params if p["in"] == "path"]
            query = {p["name"]: _choice(doc, p.get("schema", {})) for p in params if p["in"] == "query"}
            plain_query = {n: build(doc, s, ("-",), None) for n, s in query.items()}
            content = op.get("requestBody", {}).get("content", {})

            def url(
                hostile: Any = None,
                target: str | None = None,
                route: str = route,
                names: tuple[str, ...] = tuple(path_names),
            ) -> str:
                filled = route
                for name in names:
                    text = str(hostile) if target in (name, "*") else "plausible"
                    filled = filled.replace("{" + name + "}", quote(text, safe=""))
                return filled

            json_schema = content.get("application/json", {}).get("schema")
            form_schema = content.get("application/x-www-form-urlencoded", {}).get("schema")
            plain_body = None if json_schema is None else build(doc, json_schema, ("-",), None)
            plain_form = None if form_schema is None else build(doc, form_schema, ("-",), None)
            for value in values:
                for name in [*path_names, "*"] if path_names else []:
                    yield Call(method, url(value, name), plain_query, plain_body, plain_form, f"path {name}")
                for name in query:
                    yield Call(method, url(), {**plain_query, name: value}, plain_body, plain_form, f"query {name}")
                if json_schema is not None:
                    for target in leaves(doc, json_schema):
                        body = build(doc, json_schema, target, value)
                        yield Call(method, url(), plain_query, body, None, f"body {target}")
                if form_schema is not None:
                    for name in _resolve(doc, form_schema).get("properties", {}):
                        form = {**(plain_form or {}), name: value}
                        yield Call(method, url(), plain_query, None, form, f"form {name}")
