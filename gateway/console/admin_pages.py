"""The administrators' and auditors' pages: the policy in force and its proposals as diffs with
the two-person rule shown (approve, reject, withdraw), grants, accounts, freezes, alerts and objections.

SECURITY: every read and write calls the JSON API's own route function after the same role
check its dependency makes (`admin` writes; `admin` or `auditor` reads), and every write first
checks the session's CSRF token, so the console is no second path around a rule. What people
wrote (names, reasons, notes, diffs) is only ever shown escaped.
"""

from __future__ import annotations

import json
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Form, Request, Response
from fastapi.responses import RedirectResponse

from gateway.api.deps import runtime
from gateway.api.routes import admin as admin_routes
from gateway.api.routes import objections as objection_routes
from gateway.api.routes import policy as policy_routes
from gateway.api.schemas import ClientIdPath, ConsumerCreateRequest, FreezeRequest, NamePath, RecordIdPath
from gateway.console import session
from gateway.console.forms import parsed, shown
from gateway.console.rendering import page
from gateway.domain.principal import Principal, Role
from gateway.errors import InvalidRequest
from gateway.services import policy_admin
from gateway.services.runtime import Runtime

router = APIRouter(prefix="/console/admin", include_in_schema=False)
RuntimeDep = Annotated[Runtime, Depends(runtime)]
Csrf = Annotated[str, Form(max_length=128)]
Reason = Annotated[str, Form(max_length=4000)]
READERS = (Role.ADMIN, Role.AUDITOR)


def _body(response: Response) -> dict[str, Any]:
    found: dict[str, Any] = json.loads(bytes(response.body))
    return found


def writer(request: Request, csrf: str) -> Principal:
    """The administrator behind a write, after the CSRF check."""
    who = session.require(request, Role.ADMIN)
    session.check_csrf(request, csrf)
    return who


def back(url: str, done: str) -> Response:
    return RedirectResponse(f"{url}?done={done}", status_code=303)


@router.get("")
def dashboard(request: Request, rt: RuntimeDep) -> Response:
    def build() -> Response:
        who = session.require(request, *READERS)
        policy = policy_routes.policy(rt, who)
        open_objections = [o for o in objection_routes.list_objections(rt, who)["objections"] if o["status"] == "open"]
        counts = {
            "proposals": len(policy["proposals"]),
            "alerts": len(admin_routes.alerts(rt, who)["alerts"]),
            "freezes": len(admin_routes.freezes(rt, who).active),
            "objections": len(open_objections),
        }
        return page(request, "admin/dashboard.html", counts=counts, version=policy["version"])

    return shown(request, build)


def _identity(account: dict[str, Any]) -> str:
    return str(account.get("person") or account.get("organisation"))


@router.get("/policy")
def policy_page(request: Request, rt: RuntimeDep) -> Response:
    def build() -> Response:
        who = session.require(request, *READERS)
        state = policy_routes.policy(rt, who)
        accounts = admin_routes.consumers(rt, who)["accounts"]
        admins = [a for a in accounts if "admin" in a["roles"] and not a["disabled"]]
        proposals = []
        for proposal in state["proposals"]:
            taken = set(proposal.get("identities", []))
            may = [a["client_id"] for a in admins if a["client_id"] not in proposal["approvals"]]
            may = [c for c in may if _identity(next(a for a in admins if a["client_id"] == c)) not in taken]
            mine = policy_admin.is_proposer(rt, proposal, who.client_id)
            lines = _diff_lines(proposal["diff"])
            proposals.append({**proposal, "may_approve": may, "mine": mine, "diff_lines": lines})
        history = list(reversed(state["history"]))[:50]
        bundle_text = json.dumps(state["bundle"], indent=2, ensure_ascii=False)
        return page(request, "admin/policy.html", state=state, proposals=proposals, history=history,
                    bundle_text=bundle_text, required=rt.settings.policy_approvals,
                    done=request.query_params.get("done"))  # fmt: skip

    return shown(request, build)


def _diff_lines(diff: str) -> list[tuple[str, str]]:
    """Each line of a unified diff with its kind, for colour and a marker a screen reader reads."""
    kinds = []
    for line in diff.splitlines():
        if line.startswith(("+++", "---", "@@")):
            kinds.append(("meta", line))
        elif line.startswith("+"):
            kinds.append(("add", line))
        elif line.startswith("-"):
            kinds.append(("del", line))
        else:
            kinds.append(("same", line))
    return kinds


@router.post("/policy/proposals/{proposal_id}/approve")
def approve_policy(request: Request, rt: RuntimeDep, proposal_id: RecordIdPath, csrf: Csrf = "") -> Response:
    def build() -> Response:
        who = writer(request, csrf)
        change = _body(policy_routes.approve_policy(rt, who, proposal_id))
        return back("/console/admin/policy", "activated" if change["active"] else "approved")

    return shown(request, build)


@router.post("/policy/proposals/{proposal_id}/{decision}")
def decide_policy(
    *, request: Request, rt: RuntimeDep, proposal_id: RecordIdPath, decision: NamePath, reason: Reason, csrf: Csrf = ""
) -> Response:
    """Reject another person's proposal, or withdraw one's own, through the API's own routes."""

    def build() -> Response:
        who = writer(request, csrf)
        body = parsed(policy_routes.ProposalDecision, {"reason": reason})
        if decision == "reject":
            policy_routes.reject_policy(request, rt, who, proposal_id, body)
        elif decision == "withdraw":
            policy_routes.withdraw_policy(request, rt, who, proposal_id, body)
        else:
            raise InvalidRequest("decision: approve, reject or withdraw")
        return back("/console/admin/policy", f"{decision}_policy")

    return shown(request, build)


@router.get("/grants")
def grants_page(request: Request, rt: RuntimeDep) -> Response:
    def build() -> Response:
        who = session.require(request, *READERS)
        found = policy_routes.grants(rt, who)["grants"]
        return page(request, "admin/grants.html", grants=found, done=request.query_params.get("done"))

    return shown(request, build)


@router.post("/grants")
def add_grant(request: Request, rt: RuntimeDep, grant_id: Annotated[str, Form(max_length=64)],
              grant: Annotated[str, Form(max_length=20000)], csrf: Csrf = "") -> Response:  # fmt: skip
    def build() -> Response:
        who = writer(request, csrf)
        try:
            value = json.loads(grant)
        except ValueError:
            raise InvalidRequest("grant: not JSON") from None
        body = parsed(policy_routes.GrantProposal, {"id": grant_id, "grant": value})
        change = _body(policy_routes.add_grant(rt, who, body))
        return back("/console/admin/policy", "activated" if change["active"] else "proposed")

    return shown(request, build)


@router.post("/grants/{grant_id}/revoke")
def revoke_grant(request: Request, rt: RuntimeDep, grant_id: NamePath, reason: Reason, csrf: Csrf = "") -> Response:
    def build() -> Response:
        who = writer(request, csrf)
        if not reason.strip() or len(reason) > 500:
            raise InvalidRequest("reason: between 1 and 500 characters")
        policy_routes.revoke_grant(rt, who, grant_id, reason)
        return back("/console/admin/grants", "revoked")

    return shown(request, build)


@router.get("/consumers")
def consumers_page(request: Request, rt: RuntimeDep) -> Response:
    def build() -> Response:
        who = session.require(request, *READERS)
        found = admin_routes.consumers(rt, who)
        return page(request, "admin/consumers.html", accounts=found["accounts"], proposals=found["proposals"],
                    done=request.query_params.get("done"), made=None)  # fmt: skip

    return shown(request, build)


@router.post("/consumers")
def create_consumer(
    *,
    request: Request,
    rt: RuntimeDep,
    client_id: Annotated[str, Form(max_length=128)],
    organisation: Annotated[str, Form(max_length=200)],
    role: Annotated[str, Form(max_length=16)],
    person: Annotated[str, Form(max_length=200)] = "",
    csrf: Csrf = "",
) -> Response:
    def build() -> Response:
        who = writer(request, csrf)
        values = {"client_id": client_id, "organisation": organisation, "roles": [role], "person": person or None}
        made = _body(admin_routes.create_consumer(parsed(ConsumerCreateRequest, values), rt, who))
        found = admin_routes.consumers(rt, who)
        # The secret (or its half) is shown once, on this page only; it is never stored in clear.
        return page(request, "admin/consumers.html", accounts=found["accounts"], proposals=found["proposals"],
                    done=None, made=made)  # fmt: skip

    return shown(request, build)


@router.post("/consumers/{client_id}/disable")
def disable_consumer(request: Request, rt: RuntimeDep, client_id: ClientIdPath, csrf: Csrf = "") -> Response:
    def build() -> Response:
        who = writer(request, csrf)
        answer = admin_routes.disable_consumer(client_id, rt, who)
        return back("/console/admin/consumers", "disabled" if answer.status_code == 204 else "proposed")

    return shown(request, build)


@router.post("/consumers/proposals/{proposal_id}/approve")
def approve_account(request: Request, rt: RuntimeDep, proposal_id: RecordIdPath, csrf: Csrf = "") -> Response:
    def build() -> Response:
        who = writer(request, csrf)
        made = _body(admin_routes.approve_account_change(proposal_id, rt, who))
        found = admin_routes.consumers(rt, who)
        return page(request, "admin/consumers.html", accounts=found["accounts"], proposals=found["proposals"],
                    done="approved", made=made)  # fmt: skip

    return shown(request, build)


@router.get("/freezes")
def freezes_page(request: Request, rt: RuntimeDep) -> Response:
    def build() -> Response:
        who = session.require(request, *READERS)
        found = admin_routes.freezes(rt, who)
        history = list(reversed(found.history))[:100]
        return page(request, "admin/freezes.html", active=found.active, history=history,
                    identity=rt.clients.identity_of(who.client_id), done=request.query_params.get("done"))  # fmt: skip

    return shown(request, build)


@router.post("/freezes/{action}")
def freeze(
    *,
    request: Request,
    rt: RuntimeDep,
    action: NamePath,
    kind: Annotated[str, Form(max_length=16)],
    name: Annotated[str, Form(max_length=64)],
    reason: Reason,
    csrf: Csrf = "",
) -> Response:
    def build() -> Response:
        who = writer(request, csrf)
        body = parsed(FreezeRequest, {"kind": kind, "name": name, "reason": reason})
        if action == "freeze":
            admin_routes.freeze(body, rt, who)
        elif action == "unfreeze":
            if admin_routes.unfreeze(body, rt, who).status_code == 202:
                return back("/console/admin/freezes", "lift_asked")
        else:
            raise InvalidRequest("action: freeze or unfreeze")
        return back("/console/admin/freezes", action)

    return shown(request, build)


@router.get("/alerts")
def alerts_page(request: Request, rt: RuntimeDep) -> Response:
    def build() -> Response:
        who = session.require(request, *READERS)
        return page(request, "admin/alerts.html", alerts=admin_routes.alerts(rt, who)["alerts"], done=None)

    return shown(request, build)


@router.get("/objections")
def objections_page(request: Request, rt: RuntimeDep) -> Response:
    def build() -> Response:
        who = session.require(request, *READERS)
        found = list(reversed(objection_routes.list_objections(rt, who)["objections"]))
        return page(request, "admin/objections.html", mine=found, done=request.query_params.get("done"))

    return shown(request, build)


@router.post("/objections/{objection_id}")
def answer_objection(
    *,
    request: Request, rt: RuntimeDep, objection_id: RecordIdPath, status: Annotated[str, Form(max_length=16)],
    reply: Reason, csrf: Csrf = "",
) -> Response:  # fmt: skip
    def build() -> Response:
        who = writer(request, csrf)
        body = parsed(objection_routes.ObjectionAnswer, {"status": status, "reply": reply})
        objection_routes.answer_objection(rt, who, objection_id, body)
        return back("/console/admin/objections", "answered")

    return shown(request, build)


@router.post("/policy")
def propose_policy(
    *,
    request: Request,
    rt: RuntimeDep,
    bundle: Annotated[str, Form(max_length=2_000_000)],
    note: Annotated[str, Form(max_length=500)],
    base_version: Annotated[str, Form(max_length=200)] = "",
    csrf: Csrf = "",
) -> Response:
    """A whole bundle, edited from the one in force: validated and proposed as by PUT /v1/admin/policy."""

    def build() -> Response:
        who = writer(request, csrf)
        try:
            value = json.loads(bundle)
        except ValueError:
            raise InvalidRequest("bundle: not JSON") from None
        body = parsed(
            policy_routes.PolicyProposal, {"bundle": value, "note": note, "base_version": base_version or None}
        )
        change = _body(policy_routes.propose_policy(rt, who, body))
        return back("/console/admin/policy", "activated" if change["active"] else "proposed")

    return shown(request, build)


@router.post("/consumers/{client_id}/enable")
def enable_consumer(request: Request, rt: RuntimeDep, client_id: ClientIdPath, csrf: Csrf = "") -> Response:
    def build() -> Response:
        who = writer(request, csrf)
        admin_routes.enable_consumer(client_id, rt, who)
        return back("/console/admin/consumers", "proposed")

    return shown(request, build)


@router.post("/consumers/{client_id}/roles")
def set_roles(
    request: Request, rt: RuntimeDep, client_id: ClientIdPath, roles: Annotated[list[str], Form()], csrf: Csrf = ""
) -> Response:
    def build() -> Response:
        who = writer(request, csrf)
        body = parsed(admin_routes.RolesRequest, {"roles": roles})
        answer = admin_routes.set_roles(client_id, body, rt, who)
        return back("/console/admin/consumers", "roles" if answer.status_code == 200 else "proposed")

    return shown(request, build)


@router.get("/tracker")
def tracker_page(request: Request) -> Response:
    def build() -> Response:
        session.require(request, *READERS)
        return page(request, "admin/tracker.html", found=None, done=None)

    return shown(request, build)


@router.post("/tracker")
def tracker(request: Request, rt: RuntimeDep, key: Annotated[str, Form(max_length=64)], csrf: Csrf = "") -> Response:
    """Who asked about a key (POST: the key stays out of URLs and logs, as in the API)."""

    def build() -> Response:
        who = session.require(request, *READERS)
        session.check_csrf(request, csrf)
        body = parsed(admin_routes.TrackerRequest, {"key": key})
        return page(
            request, "admin/tracker.html", found=admin_routes.tracker_lookup(body, rt, who)["requests"], done=None
        )

    return shown(request, build)
