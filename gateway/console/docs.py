"""`/docs`: Swagger UI served from this process, so it works on a network with no way out.

The Swagger UI files come from the `fastapi-offline` package (Swagger UI 5, Apache-2.0, which
reads OpenAPI 3.1); the page's own start-up script is a file of ours, so the page needs no inline
script and its Content-Security-Policy allows scripts from this origin only.
"""

from __future__ import annotations

from importlib.resources import files

from fastapi import APIRouter, FastAPI, Response
from fastapi.responses import HTMLResponse

from gateway.errors import NotFound

_SWAGGER = files("fastapi_offline") / "static"
_OURS = files("gateway.console") / "static"
_TYPES = {".js": "text/javascript; charset=utf-8", ".css": "text/css; charset=utf-8", ".png": "image/png"}
ASSETS = {
    "swagger-ui-bundle.js": _SWAGGER / "swagger-ui-bundle.js",
    "swagger-ui.css": _SWAGGER / "swagger-ui.css",
    "favicon.png": _SWAGGER / "favicon.png",
    "docs.js": _OURS / "docs.js",
}
# SECURITY: Swagger UI sets style attributes, hence 'unsafe-inline' for styles only; scripts,
# connections and images stay on this origin.
DOCS_POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; "
    "connect-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)
PAGE = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>{title} - API</title>
<link rel="icon" href="/docs/assets/favicon.png">
<link rel="stylesheet" href="/docs/assets/swagger-ui.css">
</head>
<body>
<div id="swagger-ui"></div>
<script src="/docs/assets/swagger-ui-bundle.js"></script>
<script src="/docs/assets/docs.js"></script>
</body>
</html>
"""

router = APIRouter(include_in_schema=False)


SECURITY_HEADERS = {"X-Content-Type-Options": "nosniff", "Referrer-Policy": "no-referrer", "X-Frame-Options": "DENY"}


@router.get("/docs")
def docs_page() -> HTMLResponse:
    headers = {**SECURITY_HEADERS, "Content-Security-Policy": DOCS_POLICY}
    return HTMLResponse(PAGE.format(title="Veilgate"), headers=headers)


@router.get("/docs/assets/{name}")
def docs_asset(name: str) -> Response:
    found = ASSETS.get(name)
    if found is None:
        raise NotFound("no such asset")
    media = _TYPES[name[name.rfind(".") :]]
    headers = {**SECURITY_HEADERS, "Cache-Control": "public, max-age=3600"}
    return Response(found.read_bytes(), media_type=media, headers=headers)


def install(app: FastAPI) -> None:
    app.include_router(router)
