"""HTML out: Jinja2 templates with autoescaping on, the security headers of every page, the
console's static files, and console errors as pages instead of problem+json.

SECURITY: everything shown is escaped by the template engine (names, reasons, code, diffs come
from people); no page has inline script (the policy below allows scripts of this origin only),
and pages are never cached nor framed.
"""

from __future__ import annotations

from importlib.resources import files
from typing import Any

from fastapi import APIRouter, Request, Response
from fastapi.responses import HTMLResponse
from jinja2 import Environment, PackageLoader, StrictUndefined, select_autoescape
from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from gateway.console import i18n, session
from gateway.errors import NotFound, VeilgateError

POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
    "form-action 'self'; base-uri 'none'; frame-ancestors 'none'"
)
HEADERS = {
    "Content-Security-Policy": POLICY,
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "same-origin",  # no-referrer would make browsers send `Origin: null` on forms
    "Cache-Control": "no-store",
}
_ENV = Environment(
    loader=PackageLoader("gateway.console", "templates"),
    autoescape=select_autoescape(default=True, default_for_string=True),
    undefined=StrictUndefined,
    trim_blocks=True,
    lstrip_blocks=True,
)
_STATIC = files("gateway.console") / "static"
_TYPES = {".js": "text/javascript; charset=utf-8", ".css": "text/css; charset=utf-8"}
STATIC_FILES = ("console.css", "console.js", "receipt.js")

static_router = APIRouter(include_in_schema=False)
PREFIXES = ("/console", "/docs")


class PageHeaders:
    """Pure ASGI: every response under /console and /docs carries the headers above unless it
    set its own (the docs page its policy, static files their caching), so a redirect, a 404, a
    405 or a refusal rendered as problem+json is never framed, sniffed or cached either. Other
    paths pass straight through."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not str(scope["path"]).startswith(PREFIXES):
            await self.app(scope, receive, send)
            return

        async def sending(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                for name, value in HEADERS.items():
                    if name not in headers:
                        headers[name] = value
            await send(message)

        await self.app(scope, receive, sending)


@static_router.get("/console/static/{name}")
def static_file(name: str) -> Response:
    """Only the files named above: nothing else under the package is reachable."""
    if name not in STATIC_FILES:
        raise NotFound("no such console file")
    media = _TYPES[name[name.rfind(".") :]]
    body = (_STATIC / name).read_bytes()
    return Response(body, media_type=media, headers={**HEADERS, "Cache-Control": "public, max-age=300"})


def page(
    request: Request, template: str, *, status: int = 200, keep_query: bool = True, **context: Any
) -> HTMLResponse:
    """Render `template` in the request's language, with the session and its CSRF token; the
    language switch keeps the query unless `keep_query` is false."""
    language = i18n.choose(request)
    other = "zh" if language == "en" else "en"
    query = request.url.include_query_params(lang=other).query if keep_query else f"lang={other}"
    who = getattr(request.state, "principal", None) or session.current(request)
    body = _ENV.get_template(template).render(
        t=i18n.Translator(language),
        lang=language,
        other_lang=other,
        switch_url=f"{request.url.path}?{query}",
        path=request.url.path,
        who=who,
        csrf=session.csrf_token(request),
        **context,
    )
    response = HTMLResponse(body, status_code=status, headers=HEADERS)
    if request.query_params.get("lang") in i18n.LANGUAGES:
        response.set_cookie(i18n.COOKIE, language, max_age=365 * 86400, samesite="strict", path="/")
    return response


def error_page(request: Request, error: VeilgateError) -> HTMLResponse:
    """A refusal as a page: its status and detail (which never carries a value sent)."""
    request.state.problem = error.type_slug  # the reason its audit leaf records
    # SECURITY: the refused query is not echoed, not even in the language switch's link.
    return page(request, "error.html", status=error.status, keep_query=False, error=error)
