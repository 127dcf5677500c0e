"""Pages anyone may read: the catalogue, disclosure with the annual report, the audit log's
signed checkpoints, the receipt checker; and, for a logged-in client, filing an objection.

Each page reads through the services the public JSON routes use (`catalog_view`, `disclosure`,
`disclosure_report`); filing an objection calls the API's own route function, so the console
is no second path around its rules.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated

from fastapi import APIRouter, Depends, Form, Query, Request, Response
from fastapi.responses import RedirectResponse

from gateway.api.deps import runtime
from gateway.api.routes import audit as audit_routes
from gateway.api.routes import objections as objection_routes
from gateway.api.routes import public as public_routes
from gateway.api.schemas import DatasetPath
from gateway.console import session
from gateway.console.forms import parsed, shown
from gateway.console.rendering import page
from gateway.domain.principal import Role
from gateway.services import authentication, catalog_view, disclosure, disclosure_report, policy_admin
from gateway.services.runtime import Runtime

router = APIRouter(prefix="/console", include_in_schema=False)
RuntimeDep = Annotated[Runtime, Depends(runtime)]
Text = Annotated[str, Form(max_length=4000)]


@router.get("")
def home(request: Request) -> Response:
    return page(request, "home.html")


@router.get("/catalogue")
def catalogue(request: Request, rt: RuntimeDep) -> Response:
    return page(request, "catalogue.html", datasets=catalog_view.list_public(rt.catalog))


@router.get("/catalogue/{dataset}")
def dataset(request: Request, rt: RuntimeDep, dataset: DatasetPath) -> Response:
    return shown(request, lambda: page(request, "dataset.html", d=catalog_view.detail(rt.catalog.get(dataset))))


@router.get("/disclosure")
def disclosure_page(
    request: Request, rt: RuntimeDep, year: Annotated[int | None, Query(ge=2000, le=2100)] = None
) -> Response:
    """The annual report of a year that has ended only (the last one by default). SECURITY: the
    report names each operator's fees; rebuilt live for the current year, polling it showed a
    named consumer's use as it happened, where usage is otherwise published per service only."""
    ended = datetime.now(UTC).year - 1
    chosen = year or ended
    return page(
        request,
        "disclosure.html",
        policy_version=policy_admin.current(rt).version,
        authorizations=disclosure.authorizations(rt),
        services=disclosure.services(rt),
        usage=disclosure.usage(rt),
        report=disclosure_report.build(rt, chosen) if chosen <= ended else None,
        year=chosen,
    )


SHOWN_CHECKPOINTS = 50


@router.get("/checkpoints")
def checkpoints(request: Request, rt: RuntimeDep) -> Response:
    """The newest checkpoints, through the public route: it lists the smallest first after a
    size, so the window before the end of the log widens until enough are in it."""
    window = 1024
    while True:
        size = rt.audit.size()
        found = audit_routes.checkpoints(rt, after_size=max(-1, size - window), limit=1000)
        if len(found.checkpoints) >= SHOWN_CHECKPOINTS or window > size:
            break
        window *= 8
    newest = sorted(found.checkpoints, key=lambda c: c.size, reverse=True)[:SHOWN_CHECKPOINTS]
    return page(request, "checkpoints.html", tree_size=found.tree_size, checkpoints=newest)


@router.get("/receipt")
def receipt(request: Request) -> Response:
    return page(request, "receipt.html")


@router.get("/objections")
def objections(request: Request, rt: RuntimeDep) -> Response:
    who = session.current(request)
    mine = rt.objections.list(who.client_id) if who is not None else []
    datasets = [d["dataset"] for d in catalog_view.list_public(rt.catalog)]
    # SECURITY: the notice names one of the viewer's own objections or nothing; any text in
    # `filed` would otherwise read as the site's own message on its own origin.
    asked = request.query_params.get("filed")
    filed = next((o["id"] for o in mine if o["id"] == asked), None)
    return page(request, "objection.html", mine=mine, datasets=datasets, filed=filed)


@router.post("/objections")
def file_objection(
    *,
    request: Request,
    rt: RuntimeDep,
    about: Annotated[str, Form(max_length=16)],
    subject: Annotated[str, Form(max_length=128)],
    text: Text,
    csrf: Annotated[str, Form(max_length=128)] = "",
) -> Response:
    def build() -> Response:
        who = session.require(request)
        session.check_csrf(request, csrf)
        body = parsed(objection_routes.ObjectionRequest, {"about": about, "subject": subject, "text": text})
        filed = objection_routes.file_objection(rt, who, body)
        return RedirectResponse(f"/console/objections?filed={filed['id']}", status_code=303)

    return shown(request, build)


@router.get("/login")
def login_form(request: Request) -> Response:
    token = session.login_token(request)
    response = page(request, "login.html", login_csrf=token)
    session.remember_login_token(request, response, token)
    return response


@router.post("/login")
def login(
    request: Request,
    rt: RuntimeDep,
    client_id: Annotated[str, Form(max_length=128)],
    client_secret: Annotated[str, Form(max_length=256)],
    login_csrf: Annotated[str, Form(max_length=128)] = "",
) -> Response:
    def build() -> Response:
        session.check_login_token(request, login_csrf)
        # As the token route: its throttle (before scrypt), its checks, its audit note; for the
        # console's own audience (see `authentication.console_audience`).
        audience = authentication.console_audience(rt.settings.audience)
        grant = public_routes.grant_token(request, rt, client_id, client_secret, audience=audience)
        who = session.principal_of(request, grant.access_token)
        staff = who is not None and (who.has_role(Role.ADMIN) or who.has_role(Role.AUDITOR))
        response = RedirectResponse("/console/admin" if staff else "/console/objections", status_code=303)
        session.start(request, response, grant.access_token, grant.expires_in)
        return response

    return shown(request, build)


@router.post("/logout")
def logout(request: Request, csrf: Annotated[str, Form(max_length=128)] = "") -> Response:
    def build() -> Response:
        session.check_csrf(request, csrf)
        response = RedirectResponse("/console", status_code=303)
        session.end(request, response)
        return response

    return shown(request, build)
