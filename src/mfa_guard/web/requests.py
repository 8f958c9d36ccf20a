"""Reading what a route needs from a request: the user, the session marker, a JSON body."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from starlette.requests import Request
from starlette.types import Scope

from mfa_guard.core.marker import STRONG_METHODS, Marker, new_nonce
from mfa_guard.core.policy import is_recent
from mfa_guard.errors import Reason, Refused
from mfa_guard.events import request_user_agent
from mfa_guard.identity import client_ip
from mfa_guard.session import MARKER_SCOPE_KEY, Session, SessionGate, session_of

MAX_BODY_BYTES = 4096
# A passkey's or security key's answer: a few hundred bytes of keys and signatures, and
# certificates with an attestation.
MAX_WEBAUTHN_BODY_BYTES = 16384


@dataclass(slots=True)
class Caller:
    """The signed-in user behind a request to the kit's own routes, and their session's marker
    as this request left it."""

    gate: SessionGate
    user_id: str
    session: Session
    marker: Marker
    ip: str | None
    scope: Scope

    def is_verified(self) -> bool:
        settings = self.gate.settings
        return self.marker.is_verified(self.gate.clock(), settings.verified_lifetime_seconds)

    def is_recently_verified(self) -> bool:
        settings = self.gate.settings
        return is_recent(
            self.marker,
            self.gate.clock(),
            lifetime_seconds=settings.verified_lifetime_seconds,
            max_age=settings.recent_mfa_seconds,
        )

    def is_strongly_verified(self) -> bool:
        """Whether the session's last second factor may change factors: the authenticator app
        or a recovery code, not a texted code (``STRONG_METHODS``)."""
        return self.marker.method in STRONG_METHODS

    def mark_verified(self, method: str, epoch: int) -> None:
        self._adopt(self.marker.verified(method, epoch, self.gate.clock()))

    def adopt_epoch(self, epoch: int) -> None:
        """After a change this session made itself (a new phone, "sign out my other sessions"),
        from the epoch it was re-checked at just before: ``epoch`` is what the store answered.
        Epochs go up by one per change, so only the next one is this change alone: the session
        stays verified (with a new nonce). Any other epoch means another change landed in
        between (a revocation from another session): the session takes the epoch, verified no
        more."""
        now = self.gate.clock()
        if epoch == self.marker.epoch + 1:
            marker = self.marker._replace(nonce=new_nonce(), epoch=epoch, checked_at=now)
        else:
            marker = self.marker._replace(
                nonce=new_nonce(), epoch=epoch, checked_at=now, verified_at=None, method=None
            )
        self._adopt(marker)

    async def recheck(self) -> None:
        """Re-read the enrolment now (after a change this request made)."""
        gate = self.gate
        self.marker = await gate.recheck(
            self.session, self.user_id, self.marker, gate.clock(), scope=self.scope
        )
        self.scope[MARKER_SCOPE_KEY] = self.marker

    def _adopt(self, marker: Marker) -> None:
        self.marker = marker
        self.gate.save(self.session, marker)
        self.scope[MARKER_SCOPE_KEY] = marker


async def caller_of(request: Request, gate: SessionGate) -> Caller | None:
    user_id = gate.identity(request.scope)
    if user_id is None:
        return None
    session = session_of(request.scope)
    marker = await gate.current(session, user_id, scope=request.scope)
    # As the middleware does for the app's routes: templates read the marker from the scope.
    request.scope[MARKER_SCOPE_KEY] = marker
    # Which browser, for the security log's events of this request.
    request_user_agent.set(request.headers.get("user-agent"))
    return Caller(
        gate=gate,
        user_id=user_id,
        session=session,
        marker=marker,
        ip=client_ip(request.scope, gate.settings),
        scope=request.scope,
    )


def declared_too_large(request: Request, limit: int = MAX_BODY_BYTES) -> bool:
    """Whether ``Content-Length`` announces more than the kit reads (or is no plain number)."""
    declared = request.headers.get("content-length")
    if declared is None:
        return False
    if not (declared.isascii() and declared.isdigit()) or len(declared) > 9:
        return True
    return int(declared) > limit


async def json_body(request: Request, limit: int = MAX_BODY_BYTES) -> dict[str, Any]:
    """The JSON object of the body (at most ``limit`` bytes); anything else is
    :class:`~mfa_guard.errors.Refused`."""
    content_type = request.headers.get("content-type", "")
    if content_type.split(";")[0].strip().lower() != "application/json":
        raise Refused(Reason.UNSUPPORTED_MEDIA_TYPE)
    if declared_too_large(request, limit):
        raise Refused(Reason.PAYLOAD_TOO_LARGE)
    body = bytearray()
    async for chunk in request.stream():
        body.extend(chunk)
        if len(body) > limit:
            raise Refused(Reason.PAYLOAD_TOO_LARGE)
    if not body.strip():
        return {}
    try:
        data = json.loads(body)
    except (ValueError, RecursionError) as exc:
        raise Refused(Reason.INVALID_JSON) from exc
    if not isinstance(data, dict):
        raise Refused(Reason.NOT_A_JSON_OBJECT)
    return data
