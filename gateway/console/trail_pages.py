"""The auditors' pages: the audit trail searched newest first, and the privacy budgets of every
grant per dataset drawn as bar charts (inline SVG, no script).

Reads only: the audit search is the JSON route's own function, read a window at a time from the
end of the log; the budgets are `services.budget.budget_view`, the view a consumer gets of its
own, for each consumer that holds a grant.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request, Response

from gateway.api.deps import runtime
from gateway.api.routes import admin as admin_routes
from gateway.api.routes import audit as audit_routes
from gateway.console import session
from gateway.console.forms import parsed, shown
from gateway.console.rendering import page
from gateway.domain.principal import Principal, Role
from gateway.services import budget, policy_admin
from gateway.services.runtime import Runtime

router = APIRouter(prefix="/console/admin", include_in_schema=False)
RuntimeDep = Annotated[Runtime, Depends(runtime)]
READERS = (Role.ADMIN, Role.AUDITOR)
PAGE_SIZE = 100
WINDOW = 1000
MAX_WINDOWS = 200
"""The search reads at most this many windows back from the end (200,000 leaves) per page."""
FILTERS = ("since", "until", "principal", "service", "dataset", "decision")


def newest_first(rt: Runtime, who: Principal, filters: dict[str, str], before: int) -> tuple[list[Any], int | None]:
    """Up to PAGE_SIZE leaves matching `filters` below position `before`, newest first, and the
    position to continue from (None at the start of the log)."""
    found: list[Any] = []
    upper = before
    for _ in range(MAX_WINDOWS):
        if upper <= 0 or len(found) >= PAGE_SIZE:
            break
        lower = max(0, upper - WINDOW)
        query = parsed(audit_routes.AuditQuery, {**filters, "after": lower - 1, "limit": WINDOW})
        leaves = audit_routes.audit_search(rt, who, query).leaves
        found.extend(reversed([leaf for leaf in leaves if leaf.seq < upper]))
        upper = lower
    shown_leaves = found[:PAGE_SIZE]
    more = shown_leaves[-1].seq if len(found) > PAGE_SIZE or (upper > 0 and shown_leaves) else None
    return shown_leaves, more


@router.get("/audit")
def audit_page(
    request: Request, rt: RuntimeDep, before: Annotated[int | None, Query(ge=0, le=2**62)] = None
) -> Response:
    def build() -> Response:
        who = session.require(request, *READERS)
        filters = {k: v for k in FILTERS if (v := request.query_params.get(k, "").strip())}
        start = rt.audit.size() if before is None else before
        leaves, more = newest_first(rt, who, filters, start)
        return page(request, "admin/audit.html", leaves=leaves, more=more, filters=filters, size=rt.audit.size())

    return shown(request, build)


def _epsilon(level: dict[str, Any], part: str) -> Decimal:
    return Decimal(str(level[part]["epsilon"]))


def bars(levels: dict[str, Any]) -> list[dict[str, Any]]:
    """Per level, spent / reserved / remaining as fractions of the granted epsilon, for the chart."""
    out = []
    for name, level in levels.items():
        granted = _epsilon(level, "granted")
        spent, reserved = _epsilon(level, "spent"), _epsilon(level, "reserved")
        whole = granted if granted > 0 else Decimal(1)
        out.append({
            "level": name,
            "granted": level["granted"]["epsilon"],
            "spent": level["spent"]["epsilon"],
            "reserved": level["reserved"]["epsilon"],
            "remaining": level["remaining"]["epsilon"],
            "spent_width": float(min(Decimal(1), spent / whole)) * 400,
            "reserved_width": float(min(Decimal(1), reserved / whole)) * 400,
        })  # fmt: skip
    return out


@router.get("/budgets")
def budgets_page(request: Request, rt: RuntimeDep) -> Response:
    def build() -> Response:
        who = session.require(request, *READERS)
        bundle = policy_admin.current(rt).bundle
        consumers = sorted({g.consumer for g in bundle.grants.values()})
        organisations = {a["client_id"]: a["organisation"] for a in admin_routes.consumers(rt, who)["accounts"]}
        charts: dict[str, list[dict[str, Any]]] = {}
        for consumer in consumers:
            # The view a consumer gets of its own budgets (GET /v1/budget), for each holder of a grant.
            holder = Principal(consumer, organisations.get(consumer, ""), frozenset(), "console")
            for row in budget.budget_view(rt, holder)["budgets"]:
                charts.setdefault(row["dataset"], []).append({**row, "consumer": consumer, "bars": bars(row["levels"])})
        return page(request, "admin/budgets.html", charts=dict(sorted(charts.items())), viewer=who.client_id)

    return shown(request, build)
