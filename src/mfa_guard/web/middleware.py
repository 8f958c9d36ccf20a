from __future__ import annotations

from collections.abc import Awaitable, MutableMapping
from typing import TYPE_CHECKING, Any

from starlette.responses import PlainTextResponse, Response
from starlette.types import ASGIApp, Receive, Scope, Send

from mfa_guard.core.marker import Marker
from mfa_guard.core.policy import ALLOW, CHALLENGE, Decision, decide
from mfa_guard.errors import StoreUnavailable
from mfa_guard.guard import SESSION_KEY, SESSION_TYPES
from mfa_guard.web.http import (
    UNAVAILABLE_MESSAGE,
    refusal_response,
    report_failure,
    unavailable_json,
    wants_json,
)
from mfa_guard.web.requests import MARKER_SCOPE_KEY

if TYPE_CHECKING:
    from mfa_guard.guard import MFAGuard

# RFC 6455 7.4.1: policy violation.
WS_POLICY_VIOLATION = 1008
_GUARDED = frozenset({"http", "websocket"})


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
        self._recheck = settings.recheck_seconds

    def __call__(self, scope: Scope, receive: Receive, send: Send) -> Awaitable[None]:
        # Every request of the app comes through here. Not a coroutine: a request that may
        # pass gets the app's own awaitable, so passing through costs no frame of the guard's
        # own; only a re-check, a refusal or an outage makes one. The identity comes first: an
        # anonymous request passes wherever it goes.
        if scope["type"] in _GUARDED and (user_id := self.guard.identity(scope)) is not None:
            # app_path(scope), inlined.
            path: str = scope["path"]
            root = scope.get("root_path")
            if root and path.startswith(root):
                path = path[len(root) :] or "/"
            if path not in self._exempt and not path.startswith(self._exempt_under):
                guard = self.guard
                session: Any = scope.get("session")
                if type(session) not in SESSION_TYPES:
                    session = guard.session_of(scope)
                now = guard.clock()
                marker = Marker.load(session.get(SESSION_KEY), guard.subject(user_id))
                # Not marker.is_stale(now, recheck_seconds): the same test, without the call.
                if marker is None or not 0 <= now - marker.checked_at < self._recheck:
                    return self._recheck_then_admit(
                        scope, receive, send, session, user_id, marker, now
                    )
                decision = decide(marker, now, verified_lifetime_seconds=self._lifetime)
                if decision is not ALLOW:
                    return self._refuse_or_admit(
                        scope, receive, send, decision, session, user_id, marker, now
                    )
                scope[MARKER_SCOPE_KEY] = marker
        return self.app(scope, receive, send)

    async def _recheck_then_admit(
        self,
        scope: Scope,
        receive: Receive,
        send: Send,
        session: MutableMapping[str, Any],
        user_id: str,
        marker: Marker | None,
        now: float,
    ) -> None:
        """A marker missing or due for its re-check: one store call, then the same decision."""
        try:
            marker = await self.guard.recheck(session, user_id, marker, now, scope=scope)
        except StoreUnavailable as exc:
            await self._unavailable(scope, receive, send, exc)
            return
        decision = decide(marker, now, verified_lifetime_seconds=self._lifetime)
        if decision is not ALLOW:
            await self._refuse_or_admit(
                scope, receive, send, decision, session, user_id, marker, now
            )
            return
        scope[MARKER_SCOPE_KEY] = marker
        await self.app(scope, receive, send)

    async def _refuse_or_admit(
        self,
        scope: Scope,
        receive: Receive,
        send: Send,
        decision: Decision,
        session: MutableMapping[str, Any],
        user_id: str,
        marker: Marker,
        now: float,
    ) -> None:
        """A session the decision would challenge, verified by its remembered browser if it has
        one (one round trip, made only here); else the refusal."""
        guard = self.guard
        if decision is CHALLENGE and guard.trusted_devices is not None:
            try:
                admitted = await guard.admit_by_device(scope, session, user_id, marker, now)
            except StoreUnavailable as exc:
                await self._unavailable(scope, receive, send, exc)
                return
            if admitted is not None:
                scope[MARKER_SCOPE_KEY] = admitted
                await self.app(scope, receive, send)
                return
        await self._refuse(scope, receive, send, decision)

    async def _refuse(self, scope: Scope, receive: Receive, send: Send, decision: Decision) -> None:
        """To the challenge, or to enrolment when a site of the user enforces 2FA."""
        if scope["type"] == "websocket":
            await send({"type": "websocket.close", "code": WS_POLICY_VIOLATION, "reason": ""})
            return
        response = refusal_response(scope, self.guard.settings, decision)
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
