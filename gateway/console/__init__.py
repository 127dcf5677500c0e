"""The web console and the offline API docs, served by the gateway itself.

Part of the HTTP edge (the api layer): pages call the same services and role checks as the
JSON routes, never a store directly, so no page is a second path around a rule.
"""

from __future__ import annotations

from fastapi import FastAPI

from gateway.console import admin_pages, docs, openapi, public_pages, rendering, review_pages, trail_pages


def install(app: FastAPI) -> None:
    """Mount `/docs` and its assets, the OpenAPI document with its security and problems, the
    console's pages under `/console`, and the security headers of everything under both."""
    openapi.install(app)
    docs.install(app)
    app.include_router(rendering.static_router)
    for module in (public_pages, admin_pages, review_pages, trail_pages):
        app.include_router(module.router)
    app.add_middleware(rendering.PageHeaders)  # innermost: the hot paths never reach it
