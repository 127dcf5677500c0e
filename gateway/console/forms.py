"""What the console's pages share: running a page so that a refusal becomes an error page, and
turning form fields into the API's own request models (the same validation, the same rules)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import TypeVar

from fastapi import Request, Response
from pydantic import BaseModel, ValidationError

from gateway.console.rendering import error_page
from gateway.errors import InvalidRequest, VeilgateError

Model = TypeVar("Model", bound=BaseModel)


def shown(request: Request, build: Callable[[], Response]) -> Response:
    """`build()`, or the error page of the refusal it raised."""
    try:
        return build()
    except VeilgateError as exc:
        return error_page(request, exc)


def parsed(model: type[Model], values: Mapping[str, object]) -> Model:
    """`values` as the API's request model; a refusal names the field and the rule, never the value."""
    try:
        return model.model_validate(values)
    except ValidationError as exc:
        first = exc.errors(include_url=False, include_input=False)[0]
        where = ".".join(str(p) for p in first.get("loc", ())) or "form"
        raise InvalidRequest(f"{where}: {first.get('msg', 'invalid')}") from None
