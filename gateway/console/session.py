"""The console's session: an access token in an HttpOnly, SameSite=Strict cookie, and a CSRF
token derived from it for every form.

SECURITY: the cookie is a short-lived JWT like those POST /v1/token issues, for the console's
own audience (the API refuses it), checked on every request as a bearer token is, so a disabled
client or a withdrawn role stops its session at once; logout records the token's id in the
ended sessions (`Runtime.sessions`), so a copy of the cookie taken before is refused from then on
by every process. Over https the cookies are named `__Host-...` (Secure, Path=/, no Domain): a
sibling subdomain cannot plant one, and a cookie without the prefix is ignored. Path=/ sends it
to API routes too, which read only the Authorization header. The
CSRF token is an HMAC of that token: another site can neither read it (HttpOnly, and the page
is ours) nor compute it; writes also refuse a foreign Origin. The login form has its own
double-submit token, so nobody logs a browser into another's account.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets

from fastapi import Request, Response

from gateway.domain.principal import Principal, Role
from gateway.errors import PolicyDenied, Unauthenticated
from gateway.services import authentication
from gateway.services.runtime import Runtime

COOKIE = "vg_session"
LOGIN_COOKIE = "vg_login"
HOST_PREFIX = "__Host-"
_CSRF_CONTEXT = b"veilgate-console-csrf-v1"


def origin(request: Request) -> str:
    """The origin the console's own forms come from: `console_origin` when set (a proxy in front
    ends TLS and may change the scheme), else the scheme and host this request reached us by
    (uvicorn takes X-Forwarded-Proto only from the proxies FORWARDED_ALLOW_IPS trusts)."""
    rt: Runtime = request.app.state.runtime
    return rt.settings.console_origin or f"{request.url.scheme}://{request.url.netloc}"


def _is_https(request: Request) -> bool:
    return origin(request).startswith("https://")


def cookie_name(request: Request, name: str) -> str:
    """`name` over http; `__Host-name` over https, whose browser keeps it only if it is Secure,
    for Path=/ and without Domain (so no other host, a sibling subdomain included, can set it)."""
    return HOST_PREFIX + name if _is_https(request) else name


def _cookie(request: Request, response: Response, name: str, value: str, max_age: int | None = None) -> None:
    secure = _is_https(request)
    response.set_cookie(
        cookie_name(request, name),
        value,
        max_age=max_age,
        httponly=True,
        samesite="strict",
        secure=secure,
        path="/" if secure else "/console",
    )


def current(request: Request) -> Principal | None:
    """The principal of this browser's session, or None (no cookie, expired, disabled)."""
    token = request.cookies.get(cookie_name(request, COOKIE))
    return principal_of(request, token) if token else None


def principal_of(request: Request, token: str) -> Principal | None:
    """The principal of the console session `token`; None if it does not pass or has ended."""
    rt: Runtime = request.app.state.runtime
    try:
        found = authentication.authenticate_session(
            rt.clients,
            rt.token_keys,
            rt.sessions,
            token,
            issuer=rt.settings.issuer,
            audience=rt.settings.audience,
            leeway_seconds=rt.settings.clock_leeway_seconds,
        )
    except Unauthenticated:
        return None
    request.state.principal = found  # the audit leaf names who
    return found


def require(request: Request, *roles: Role) -> Principal:
    """The session's principal holding one of `roles` (any role when none is named)."""
    found = current(request)
    if found is None:
        raise Unauthenticated("log in to the console first")
    if roles and not any(found.has_role(r) for r in roles):
        raise PolicyDenied(f"this page needs the {' or '.join(r.value for r in roles)} role")
    return found


def csrf_token(request: Request) -> str:
    """The token every form of this session carries; empty without a session."""
    token = request.cookies.get(cookie_name(request, COOKIE))
    if not token:
        return ""
    return hmac.new(token.encode(), _CSRF_CONTEXT, hashlib.sha256).hexdigest()


def _check_origin(request: Request) -> None:
    """SECURITY: a browser says where a form came from (Sec-Fetch-Site, Origin); a write from
    anywhere but this origin is refused, a sibling site on the same domain (same-site) and a
    sandboxed page (`Origin: null`) included. Clients that send neither still need the token."""
    site = request.headers.get("sec-fetch-site")
    if site is not None and site != "same-origin":
        raise PolicyDenied("csrf: this form was sent from another site")
    sent = request.headers.get("origin")
    if sent is not None and sent != origin(request):
        raise PolicyDenied("csrf: this form was sent from another site")


def check_csrf(request: Request, sent: str) -> None:
    """Refuse a write whose form token is not this session's (a forged or stale form)."""
    _check_origin(request)
    expected = csrf_token(request)
    if not expected or not hmac.compare_digest(expected, sent):
        raise PolicyDenied("csrf: the form's token does not match this session; reload the page and send it again")


def login_token(request: Request) -> str:
    """The login form's double-submit token: the browser's, or a new one (`remember_login_token`)."""
    found = request.cookies.get(cookie_name(request, LOGIN_COOKIE))
    return found if found and len(found) == 43 else secrets.token_urlsafe(32)


def remember_login_token(request: Request, response: Response, token: str) -> None:
    _cookie(request, response, LOGIN_COOKIE, token)


def check_login_token(request: Request, sent: str) -> None:
    _check_origin(request)
    expected = request.cookies.get(cookie_name(request, LOGIN_COOKIE), "")
    if not expected or not hmac.compare_digest(expected, sent):
        raise PolicyDenied("csrf: the login form's token does not match; reload the page and log in again")


def start(request: Request, response: Response, access_token: str, lifetime_seconds: int) -> None:
    _cookie(request, response, COOKIE, access_token, max_age=lifetime_seconds)


def end(request: Request, response: Response) -> None:
    """Log out: the session's token recorded as ended (for every copy of the cookie, in every
    process), then the browser's cookie deleted."""
    rt: Runtime = request.app.state.runtime
    token = request.cookies.get(cookie_name(request, COOKIE))
    if token:
        authentication.end_session(
            rt.token_keys,
            rt.sessions,
            token,
            issuer=rt.settings.issuer,
            audience=rt.settings.audience,
            leeway_seconds=rt.settings.clock_leeway_seconds,
        )
    _cookie(request, response, COOKIE, "", max_age=0)
