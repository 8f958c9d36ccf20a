from __future__ import annotations

from collections.abc import Awaitable, MutableMapping
from dataclasses import dataclass
from typing import Any

from starlette.types import ASGIApp, Receive, Scope, Send

from mfa_guard.core.marker import Marker
from mfa_guard.core.policy import ALLOW, CHALLENGE, Decision, admitted_until, decide
from mfa_guard.errors import ConfigurationError, StoreUnavailable
from mfa_guard.events import MAX_USER_AGENT, AuditEvent, EventKind
from mfa_guard.identity import IdentityGetter, client_ip
from mfa_guard.session import MARKER_SCOPE_KEY, SESSION_KEY, SESSION_TYPES, session_of
from mfa_guard.web.context import HasKit
from mfa_guard.web.http import (
    decision_refusal,
    guarded_refusal,
    report_failure,
    unavailable_response,
)
from mfa_guard.web.wiring import (
    WS_INTERNAL_ERROR,
    check_wiring,
    misconfigured_response,
    report_miswiring,
)

# RFC 6455 7.4.1: policy violation.
WS_POLICY_VIOLATION = 1008
_GUARDED = frozenset({"http", "websocket"})
# How many admitted markers a middleware keeps (about 0.7 kB each, 3 MB in all), and how many
# nonces of markers let in once (about 0.1 kB each), before it forgets them all at once: more
# than the sessions one process serves within ``recheck_seconds``. A forgotten one is read and
# checked again.
ADMITTED_LIMIT = 4096
# A stopped request is an audit event (challenged, sent to enrolment, refused in an outage) at
# most once per user, kind and worker in this many seconds: a page polling from a session
# that has not verified yet would otherwise write a row of the security log per request.
REPORT_QUIET_SECONDS = 60.0
_REPORTED_KINDS = {
    Decision.CHALLENGE: EventKind.CHALLENGED,
    Decision.STRONGER: EventKind.CHALLENGED,
    Decision.ENROL: EventKind.ENROLMENT_REQUIRED,
}


@dataclass(slots=True)
class Admitted:
    """A session marker this process read, checked and let in twice: the same marker of the
    same user is let in again until ``until``, with no hash, type check or decision."""

    raw: list[Any]  # a copy: the session's own list belongs to the app
    user_id: str
    since: float
    until: float
    marker: Marker


class MFAGuardMiddleware:
    """Sends authenticated sessions without a verified second factor to the challenge.

    Place it after ``SessionMiddleware`` and ``AuthenticationMiddleware``: it reads
    ``scope["session"]`` and the identity (``scope["user"]`` by default). A session whose marker
    was re-checked within ``recheck_seconds`` is decided without any store call; a marker it let
    in twice, sent again unchanged by the same user, is let in without being read again until
    its re-check or the end of its verified state.

    Wired wrong (``mfa_guard.web.wiring``) it refuses, closed: the lifespan's start-up fails,
    or each request gets a generic ``500`` (a websocket is closed, ``1011``) and the log an
    ``ERROR`` naming the fix. A ``ConfigurationError`` from the identity getter is answered so.
    """

    def __init__(self, app: ASGIApp, *, guard: HasKit) -> None:
        self.app = app
        self.guard = guard
        self.kit = kit = guard.kit
        self.gate = gate = kit.gate
        settings = kit.settings
        # Every request is matched against these: sets and a tuple, built once.
        prefixes = [settings.mount_path, *settings.exempt_paths]
        self._exempt = frozenset(prefixes)
        self._exempt_under = tuple(prefix + "/" for prefix in prefixes)
        self._lifetime = settings.verified_lifetime_seconds
        self._recheck = settings.recheck_seconds
        # By nonce: each session of a user has its own marker. A marker read from the session
        # and let in is remembered the second time; the first time, only its nonce is noted (a
        # string, which the garbage collector does not track). An entry is three objects it
        # does track (the entry, the copy of the list, the Marker), and a process meeting a new
        # session on every request spent more collecting them than checking the markers. A
        # marker a re-check or a remembered browser wrote is read by the next request.
        self._admitted: dict[str, Admitted] = {}
        self._seen: set[str] = set()
        # (user, event kind) -> when this worker last reported a request of theirs it stopped.
        self._reported: dict[tuple[str, EventKind], float] = {}
        # Until a request has shown the app wired right, the identity is read through the
        # check (once it passes, the guard's own getter: nothing more on every request).
        self._identity: IdentityGetter = self._checked_identity
        self._clock = gate.clock
        self._subject = gate.subject
        # The kit's class and this one's (a subclass, or a copy of the class loaded apart from
        # the package, as a module reloaded by a development server): another of them inside
        # or beside it is a miswiring.
        self._kinds = (MFAGuardMiddleware, type(self))

    def __call__(self, scope: Scope, receive: Receive, send: Send) -> Awaitable[None]:
        # Every request of the app comes through here. Not a coroutine: a request that may
        # pass gets the app's own awaitable, so passing through costs no frame of the guard's
        # own; only a re-check, a refusal or an outage makes one. The identity comes first: an
        # anonymous request passes wherever it goes.
        if scope["type"] in _GUARDED:
            try:
                user_id = self._identity(scope)
            except ConfigurationError as exc:
                return self._misconfigured(scope, receive, send, exc)
            if user_id is None:
                return self.app(scope, receive, send)
            # The very marker let in before (the same values), of the same user, within its
            # window: let in again as it was then, wherever it goes. Anything else goes the
            # whole way: exempt paths, the marker read and checked, the decision.
            session: Any = scope.get("session")
            try:
                raw = session[SESSION_KEY]
                admitted = self._admitted.get(raw[2])
            except (KeyError, IndexError, TypeError):  # no marker, or not one of ours
                raw = admitted = None
            if (
                admitted is not None
                and admitted.user_id == user_id
                and admitted.raw == raw
                and admitted.since <= self._clock() < admitted.until
            ):
                scope[MARKER_SCOPE_KEY] = admitted.marker
                return self.app(scope, receive, send)
            # The whole way, here rather than in a method: a marker read for the first time
            # takes it (every request, in a process meeting more sessions than it keeps), and a
            # method call cost it about 1 % of a request.
            path: str = scope["path"]  # app_path(scope), inlined
            root = scope.get("root_path")
            if root and path.startswith(root):
                path = path[len(root) :] or "/"
            if path in self._exempt or path.startswith(self._exempt_under):
                return self.app(scope, receive, send)
            if type(session) not in SESSION_TYPES:
                try:
                    session = session_of(scope)
                except ConfigurationError as exc:  # no session: the app is wired wrong
                    return self._misconfigured(scope, receive, send, exc)
            now = self._clock()
            marker = Marker.load(raw, self._subject(user_id))
            if marker is None:
                return self._recheck_then_admit(scope, receive, send, session, user_id, marker, now)
            # Fresh and allowed is the window admitted_until gives (a property test holds
            # them equal): one call where is_stale and decide would be two. Outside it, the
            # marker is stale, or refused.
            until = admitted_until(marker, self._recheck, self._lifetime)
            if until is not None and marker.checked_at <= now < until:
                # Remembered the second time it is read and let in; the first, only its nonce.
                nonce = marker.nonce
                seen = self._seen
                if nonce in seen:
                    remembered = self._admitted
                    if len(remembered) >= ADMITTED_LIMIT:
                        remembered.clear()
                    remembered[nonce] = Admitted(
                        list(raw), user_id, marker.checked_at, until, marker
                    )
                else:
                    if len(seen) >= ADMITTED_LIMIT:
                        seen.clear()
                    seen.add(nonce)
                scope[MARKER_SCOPE_KEY] = marker
                return self.app(scope, receive, send)
            if marker.is_stale(now, self._recheck):
                return self._recheck_then_admit(scope, receive, send, session, user_id, marker, now)
            decision = decide(marker, now, verified_lifetime_seconds=self._lifetime)
            return self._refuse_or_admit(
                scope, receive, send, decision, session, user_id, marker, now
            )
        if scope["type"] == "lifespan":
            return self._start(scope, receive, send)
        return self.app(scope, receive, send)

    def _checked_identity(self, scope: Scope) -> str | None:
        """The identity of a request before one showed the wiring right: checked first."""
        check_wiring(scope, self.guard, self._kinds, self.app)
        self._identity = identity = self.gate.identity
        return identity(scope)

    async def _start(self, scope: Scope, receive: Receive, send: Send) -> None:
        """The lifespan: an app wired wrong does not start (the server logs why and exits)."""
        try:
            check_wiring(scope, self.guard, self._kinds, self.app)
        except ConfigurationError as exc:
            report_miswiring(exc)
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.failed", "message": exc.message})
            raise
        await self.app(scope, receive, send)

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
            marker = await self.gate.recheck(session, user_id, marker, now, scope=scope)
        except StoreUnavailable as exc:
            await self._unavailable(scope, receive, send, exc, user_id)
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
        gate = self.gate
        if decision is CHALLENGE and gate.trusted_devices is not None:
            try:
                admitted = await gate.admit_by_device(scope, session, user_id, marker, now)
            except StoreUnavailable as exc:
                await self._unavailable(scope, receive, send, exc, user_id)
                return
            if admitted is not None:
                scope[MARKER_SCOPE_KEY] = admitted
                await self.app(scope, receive, send)
                return
        await self._refuse(scope, receive, send, decision, user_id)

    async def _refuse(
        self, scope: Scope, receive: Receive, send: Send, decision: Decision, user_id: str
    ) -> None:
        """To the challenge, or to enrolment when a site of the user enforces 2FA."""
        detail = "factor=stronger" if decision is Decision.STRONGER else None
        self._report(scope, user_id, _REPORTED_KINDS[decision], detail)
        if scope["type"] == "websocket":
            await send({"type": "websocket.close", "code": WS_POLICY_VIOLATION, "reason": ""})
            return
        response = guarded_refusal(scope, self.kit.settings, decision_refusal(decision))
        await response(scope, receive, send)

    async def _misconfigured(
        self, scope: Scope, receive: Receive, send: Send, exc: ConfigurationError
    ) -> None:
        """Closed, and loud: the log names the fix; the client learns nothing of it."""
        report_miswiring(exc)
        if scope["type"] == "websocket":
            await send({"type": "websocket.close", "code": WS_INTERNAL_ERROR, "reason": ""})
            return
        response = misconfigured_response(scope, self.kit.settings)
        await response(scope, receive, send)

    async def _unavailable(
        self, scope: Scope, receive: Receive, send: Send, exc: StoreUnavailable, user_id: str
    ) -> None:
        self._report(scope, user_id, EventKind.FAILED_CLOSED)
        if scope["type"] == "websocket":
            report_failure(exc)
            # 1013: try again later.
            await send({"type": "websocket.close", "code": 1013, "reason": ""})
            return
        await unavailable_response(scope, self.kit.settings, exc)(scope, receive, send)

    def _report(
        self, scope: Scope, user_id: str, kind: EventKind, detail: str | None = None
    ) -> None:
        """The audit event of a request stopped here, once per ``REPORT_QUIET_SECONDS`` per
        user and kind, published off the response's path."""
        now = self._clock()
        key = (user_id, kind)
        last = self._reported.get(key)
        if last is not None and 0 <= now - last < REPORT_QUIET_SECONDS:
            return
        if len(self._reported) >= ADMITTED_LIMIT:
            self._reported.clear()
        self._reported[key] = now
        agent = next((v for k, v in scope.get("headers", ()) if k == b"user-agent"), None)
        event = AuditEvent(
            kind=kind,
            user_id=user_id,
            at=now,
            client_ip=client_ip(scope, self.kit.settings),
            detail=detail,
            user_agent=None if agent is None else agent[:MAX_USER_AGENT].decode("latin-1"),
        )
        self.kit.service.publish_later(event)
