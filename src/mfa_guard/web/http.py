"""Small HTTP helpers shared by the middleware and the routes."""

from __future__ import annotations

import logging
from typing import Any
from urllib.parse import quote

from starlette.datastructures import Headers
from starlette.responses import JSONResponse, RedirectResponse, Response
from starlette.types import Scope

from mfa_guard.core.policy import Decision
from mfa_guard.errors import MFAGuardError, StoreUnavailable
from mfa_guard.settings import MFAGuardSettings

logger = logging.getLogger("mfa_guard")
UNAVAILABLE_MESSAGE = StoreUnavailable().message

NAVIGATION_METHODS = frozenset({"GET", "HEAD"})


def json_error(
    status_code: int,
    code: str,
    message: str,
    *,
    retry_after: int | None = None,
    extra: dict[str, Any] | None = None,
) -> JSONResponse:
    """``{"error": {"code", "message", **extra}}``: ``extra`` carries what a client needs to act
    on the refusal (the members still without 2FA)."""
    headers = {"Cache-Control": "no-store"}
    if retry_after is not None:
        headers["Retry-After"] = str(retry_after)
    error: dict[str, Any] = {"code": code, "message": message}
    if extra:
        error.update(extra)
    return JSONResponse({"error": error}, status_code=status_code, headers=headers)


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


def unavailable_json(exc: MFAGuardError) -> JSONResponse:
    report_failure(exc)
    return json_error(503, StoreUnavailable.code, UNAVAILABLE_MESSAGE, retry_after=5)


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


def refusal_response(scope: Scope, settings: MFAGuardSettings, decision: Decision) -> Response:
    """What a request the decision refuses gets: to the challenge, or to enrolment when a site
    of the user enforces 2FA; JSON errors for API calls. The middleware's answer, and the
    FastAPI dependencies'."""
    enrol = decision is Decision.ENROL
    if wants_json(scope, settings):
        if enrol:
            return json_error(
                403,
                "mfa_enrolment_required",
                "A site you belong to requires two-factor authentication: turn it on to continue.",
            )
        return json_error(401, "mfa_required", "Complete two-factor authentication to continue.")
    next_path = requested_path(scope) if scope["method"] in NAVIGATION_METHODS else None
    return see_other(page_url(scope, settings, "enrol" if enrol else "challenge", next_path))
