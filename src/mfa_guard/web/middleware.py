from __future__ import annotations

from typing import TYPE_CHECKING

from starlette.responses import PlainTextResponse, RedirectResponse, Response
from starlette.types import ASGIApp, Receive, Scope, Send

from mfa_guard.core.policy import Decision, decide
from mfa_guard.errors import StoreUnavailable
from mfa_guard.web.http import (
    NAVIGATION_METHODS,
    UNAVAILABLE_MESSAGE,
    app_path,
    json_error,
    page_url,
    report_failure,
    requested_path,
    unavailable_json,
    wants_json,
)
from mfa_guard.web.requests import MARKER_SCOPE_KEY

if TYPE_CHECKING:
    from mfa_guard.guard import MFAGuard

# RFC 6455 7.4.1: policy violation.
WS_POLICY_VIOLATION = 1008


class MFAGuardMiddleware:
    """Sends authenticated sessions without a verified second factor to the challenge.

    Place it after ``SessionMiddleware`` and ``AuthenticationMiddleware``: it reads
    ``scope["session"]`` and the identity (``scope["user"]`` by default). A session whose marker
    was re-checked within ``recheck_seconds`` is decided without any store call.
    """

    def __init__(self, app: ASGIApp, *, guard: MFAGuard) -> None:
        self.app = app
        self.guard = guard
        settings = guard.settings
        # Every request is matched against these: sets and a tuple, built once.
        prefixes = [settings.mount_path, *settings.exempt_paths]
        self._exempt = frozenset(prefixes)
        self._exempt_under = tuple(prefix + "/" for prefix in prefixes)
        self._lifetime = settings.verified_lifetime_seconds

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        path = app_path(scope)
        if path in self._exempt or path.startswith(self._exempt_under):
            await self.app(scope, receive, send)
            return
        guard = self.guard
        user_id = guard.identity(scope)
        if user_id is None:
            await self.app(scope, receive, send)
            return
        now = guard.clock()
        session = guard.session_of(scope)
        marker, fresh = guard.fresh_marker(session, user_id, now)
        if not fresh or marker is None:
            try:
                marker = await guard.recheck(session, user_id, marker, now)
            except StoreUnavailable as exc:
                await self._unavailable(scope, receive, send, exc)
                return
        decision = decide(marker, now, verified_lifetime_seconds=self._lifetime)
        if decision is Decision.ALLOW:
            scope[MARKER_SCOPE_KEY] = marker
            await self.app(scope, receive, send)
            return
        await self._refuse(scope, receive, send, decision)

    async def _refuse(self, scope: Scope, receive: Receive, send: Send, decision: Decision) -> None:
        """To the challenge, or to enrolment when a site of the user enforces 2FA."""
        if scope["type"] == "websocket":
            await send({"type": "websocket.close", "code": WS_POLICY_VIOLATION, "reason": ""})
            return
        settings = self.guard.settings
        response: Response
        if wants_json(scope, settings):
            if decision is Decision.ENROL:
                response = json_error(
                    403,
                    "mfa_enrolment_required",
                    "A site you belong to requires two-factor authentication: turn it on to "
                    "continue.",
                )
            else:
                response = json_error(
                    401, "mfa_required", "Complete two-factor authentication to continue."
                )
        else:
            page = "enrol" if decision is Decision.ENROL else "challenge"
            next_path = requested_path(scope) if scope["method"] in NAVIGATION_METHODS else None
            response = RedirectResponse(page_url(scope, settings, page, next_path), status_code=303)
            response.headers["Cache-Control"] = "no-store"
        await response(scope, receive, send)

    async def _unavailable(
        self, scope: Scope, receive: Receive, send: Send, exc: StoreUnavailable
    ) -> None:
        if scope["type"] == "websocket":
            report_failure(exc)
            # 1013: try again later.
            await send({"type": "websocket.close", "code": 1013, "reason": ""})
            return
        response: Response
        if wants_json(scope, self.guard.settings):
            response = unavailable_json(exc)
        else:
            report_failure(exc)
            response = PlainTextResponse(
                UNAVAILABLE_MESSAGE, status_code=503, headers={"Retry-After": "5"}
            )
        await response(scope, receive, send)
