"""Small HTTP helpers shared by the middleware and the routes."""

from __future__ import annotations

import logging
from urllib.parse import quote

from starlette.datastructures import Headers
from starlette.responses import JSONResponse, PlainTextResponse, RedirectResponse, Response
from starlette.types import Scope

from mfa_guard.core.policy import Decision
from mfa_guard.errors import Denied, MFAGuardError, Reason, StoreUnavailable
from mfa_guard.settings import MFAGuardSettings
from mfa_guard.web.schemas import Error, ErrorDetail, Member, json_response

logger = logging.getLogger("mfa_guard")

NAVIGATION_METHODS = frozenset({"GET", "HEAD"})
# Where a guarded route sends a page navigation it refuses (and back, with ``next``).
_NAVIGATE_TO = {
    Reason.MFA_REQUIRED_TO_CONTINUE: "challenge",
    Reason.STRONGER_FACTOR_REQUIRED: "challenge",
    Reason.RECENT_MFA_REQUIRED: "challenge",
    Reason.ENROLMENT_REQUIRED: "enrol",
    Reason.ENROLMENT_REQUIRED_FOR_STEP_UP: "enrol",
}


def json_error(
    status_code: int,
    code: str,
    message: str,
    *,
    retry_after: int | None = None,
    members: list[Member] | None = None,
) -> JSONResponse:
    """``{"error": {"code", "message"}}`` (the :class:`~mfa_guard.web.schemas.Error` model),
    never cached; ``members`` tells who still lacks 2FA when that is the refusal."""
    detail = ErrorDetail(code=code, message=message)
    if members is not None:
        detail = ErrorDetail(code=code, message=message, members=members)
    return json_response(Error(error=detail), status_code, retry_after=retry_after)


def report_failure(exc: MFAGuardError) -> None:
    """Logs why a request failed closed; the client only learns that the service is down."""
    if isinstance(exc, StoreUnavailable):
        cause = exc.__cause__
        logger.warning(
            "mfa_guard failed closed: a backing store is unavailable (%s)",
            type(cause).__name__ if cause is not None else "no cause",
        )
    else:
        logger.error("mfa_guard failed closed: %s", exc.message)


def denied_json(denied: Denied, now: float, *, members: list[Member] | None = None) -> JSONResponse:
    """A refusal as the JSON API answers it: its row's status and code, its message (with the
    wait, from ``now``) and its ``Retry-After``."""
    return json_error(
        denied.status,
        denied.code,
        denied.message_at(now),
        retry_after=denied.retry_after(now),
        members=members,
    )


def refusal_json(reason: Reason, **params: str | int) -> JSONResponse:
    """A refusal that has no time of its own (no ``retry_at``) as the JSON API answers it."""
    return denied_json(Denied(reason, params=params), 0.0)


def unavailable_json(exc: MFAGuardError) -> JSONResponse:
    report_failure(exc)
    return refusal_json(Reason.SERVICE_UNAVAILABLE)


def app_path(scope: Scope) -> str:
    """The request path inside the app (without a ``root_path`` the app is served under)."""
    path: str = scope["path"]
    root: str | None = scope.get("root_path")
    if root and path.startswith(root):
        return path[len(root) :] or "/"
    return path


def wants_json(scope: Scope, settings: MFAGuardSettings) -> bool:
    """API requests get JSON errors; browser navigations get redirects.

    An API request is one under ``api_prefixes``, one with a method other than ``GET`` or
    ``HEAD``, one carrying ``Authorization: Bearer …`` (whatever its ``Accept``: curl and httpx
    send ``*/*``, and a browser never adds a bearer token to a navigation), or one whose
    ``Accept`` asks for JSON and not HTML. Called on refusals only, never on the hot path.
    """
    if settings.is_api_path(app_path(scope)):
        return True
    if scope.get("method", "GET") not in NAVIGATION_METHODS:
        return True
    accept = ""
    for name, value in scope.get("headers", ()):
        if name == b"authorization" and value[:7].lower() == b"bearer ":
            return True
        if name == b"accept":
            accept = value.decode("latin-1")
    return "application/json" in accept and "text/html" not in accept


def page_url(scope: Scope, settings: MFAGuardSettings, page: str, next_path: str | None) -> str:
    url = f"{scope.get('root_path', '')}{settings.mount_path}/{page}"
    if next_path:
        url += "?next=" + quote(next_path, safe="/")
    return url


def requested_path(scope: Scope) -> str:
    """Path and query of this request, to come back to after the challenge."""
    path = scope.get("root_path", "") + app_path(scope)
    query = scope.get("query_string", b"").decode("latin-1")
    return f"{path}?{query}" if query else path


def same_origin(scope: Scope, settings: MFAGuardSettings) -> bool:
    """CSRF defence for state-changing requests (ASVS 4.2.2).

    A browser's ``Origin`` must be this app's own (scheme, host and port) or a trusted origin,
    and its ``Sec-Fetch-Site`` must not say another site. Clients that send neither (curl,
    servers) are not browsers and cannot be forged into sending a user's cookies. Behind a TLS
    proxy the app must see the ``https`` scheme (uvicorn ``--proxy-headers``).
    """
    headers = Headers(scope=scope)
    origin = headers.get("origin")
    if origin is not None and origin.lower() in settings.trusted_origins:
        return True
    if headers.get("sec-fetch-site") not in (None, "same-origin", "none"):
        return False
    if origin is None:
        return True
    host = headers.get("host", "").lower()
    scheme = {"ws": "http", "wss": "https"}.get(scope.get("scheme", "http"), scope.get("scheme"))
    return bool(host) and origin.lower() == f"{scheme}://{host}"


def see_other(url: str) -> Response:
    """A ``303`` the browser must not cache (it depends on the session)."""
    response = RedirectResponse(url, status_code=303)
    response.headers["Cache-Control"] = "no-store"
    return response


def guarded_refusal(scope: Scope, settings: MFAGuardSettings, reason: Reason) -> Response:
    """What a guarded route (the middleware, ``require_recent_mfa``, the FastAPI dependencies)
    answers a request it refuses: the refusal's JSON error for an API call; for a page
    navigation, a ``303`` to the challenge or to enrolment (and back), to ``home_path`` when
    nobody is signed in, or plain text when the store is down."""
    if wants_json(scope, settings):
        return refusal_json(reason)
    if reason is Reason.SERVICE_UNAVAILABLE:
        return PlainTextResponse(
            reason.message,
            status_code=reason.status,
            headers={"Retry-After": str(reason.retry_after)},
        )
    if reason is Reason.NOT_AUTHENTICATED:
        return see_other(settings.home_path)
    next_path = requested_path(scope) if scope["method"] in NAVIGATION_METHODS else None
    return see_other(page_url(scope, settings, _NAVIGATE_TO[reason], next_path))


def unavailable_response(
    scope: Scope, settings: MFAGuardSettings, exc: StoreUnavailable
) -> Response:
    """A guarded route's answer when the store does not answer (and the log line saying why)."""
    report_failure(exc)
    return guarded_refusal(scope, settings, Reason.SERVICE_UNAVAILABLE)


def decision_refusal(decision: Decision) -> Reason:
    """The refusal of a request the access decision does not allow: enrol first when a site of
    the user enforces 2FA, else the second factor."""
    if decision is Decision.ENROL:
        return Reason.ENROLMENT_REQUIRED
    if decision is Decision.STRONGER:
        return Reason.STRONGER_FACTOR_REQUIRED
    return Reason.MFA_REQUIRED_TO_CONTINUE
