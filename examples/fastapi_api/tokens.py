"""Bearer tokens, each with a server-side session: where the kit keeps its marker for API clients.

mfa_guard keeps what a session knows of its second factor (verified when, by which method, the
user's epoch) in ``scope["session"]["mfa_guard"]``. A browser carries that session in its signed
cookie; a client that signs in with ``POST /token`` and sends ``Authorization: Bearer <token>``
has no cookie at all. So each token gets a session of its own, kept here on the server:

- ``POST /token`` makes a random token (256 bits from :mod:`secrets`) and a session dict
  ``{"user": email}``, filed under the token's SHA-256 (a copy of this table reveals no token);
- :class:`TokenSessionMiddleware` puts that dict in ``scope["session"]`` for every request that
  carries the token, so the app's ``AuthenticationBackend`` reads ``session["user"]`` as it does
  for cookies, and the kit reads and writes its marker there;
- a second factor completed with one token (``POST /mfa/api/verify``) verifies that token only:
  another token of the same user (another device, another script) verifies on its own, as
  another browser would; revoking the token (``DELETE /token``) or its expiry ends its session,
  and with it the verified state.

The middleware sits between Starlette's ``SessionMiddleware`` and ``AuthenticationMiddleware``.
It hands the app a copy of the scope with the token's session, so the cookie middleware outside
still sees its own (empty) session and sets no cookie on a bearer request. A request with a
token that is unknown, revoked or expired is refused with ``401 invalid_token``, never served as
anonymous. Tokens live in this process's memory (a restart signs every client out; several
workers would keep them in a shared store such as Redis, under the same hash).
"""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import MutableMapping
from dataclasses import dataclass, field
from typing import Any

from starlette.datastructures import Headers
from starlette.types import ASGIApp, Receive, Scope, Send

from mfa_guard.clock import Clock
from mfa_guard.web.http import json_error

# 8 hours, in seconds: a working day; the second factor's own lifetime still applies within.
TOKEN_LIFETIME = 8 * 3600
_SESSION_SCOPES = frozenset({"http", "websocket"})


@dataclass(slots=True)
class TokenSession:
    user_id: str
    expires_at: float
    session: dict[str, Any] = field(default_factory=dict)


def _key(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


class TokenSessions:
    """The issued tokens and their sessions, in memory."""

    def __init__(self, clock: Clock, *, lifetime: int = TOKEN_LIFETIME) -> None:
        self._clock = clock
        self._lifetime = lifetime
        self._sessions: dict[str, TokenSession] = {}

    @property
    def lifetime(self) -> int:
        return self._lifetime

    def issue(self, user_id: str) -> str:
        """A new token for ``user_id``, with a new session holding ``{"user": user_id}``."""
        now = self._clock()
        # Expired tokens leave the table as new ones come in: it never outgrows the live ones.
        for key in [key for key, entry in self._sessions.items() if entry.expires_at <= now]:
            del self._sessions[key]
        token = secrets.token_urlsafe(32)
        self._sessions[_key(token)] = TokenSession(
            user_id=user_id, expires_at=now + self._lifetime, session={"user": user_id}
        )
        return token

    def session(self, token: str) -> MutableMapping[str, Any] | None:
        """The token's session, or ``None`` if the token is unknown, revoked or expired."""
        key = _key(token)
        entry = self._sessions.get(key)
        if entry is None:
            return None
        if entry.expires_at <= self._clock():
            del self._sessions[key]
            return None
        return entry.session

    def revoke(self, token: str) -> bool:
        return self._sessions.pop(_key(token), None) is not None


def bearer_token(scope: Scope) -> str | None:
    """The token of an ``Authorization: Bearer <token>`` header, ``""`` for a malformed one,
    ``None`` without a bearer header."""
    authorization = Headers(scope=scope).get("authorization")
    if authorization is None:
        return None
    scheme, _, token = authorization.partition(" ")
    if scheme.lower() != "bearer":
        return None
    return token.strip()


class TokenSessionMiddleware:
    """Gives a request with a bearer token the token's server-side session."""

    def __init__(self, app: ASGIApp, *, tokens: TokenSessions) -> None:
        self.app = app
        self.tokens = tokens

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in _SESSION_SCOPES:
            await self.app(scope, receive, send)
            return
        token = bearer_token(scope)
        if token is None:
            await self.app(scope, receive, send)
            return
        session = self.tokens.session(token) if token else None
        if session is None:
            if scope["type"] == "websocket":
                await send({"type": "websocket.close", "code": 1008, "reason": ""})
                return
            response = json_error(
                401, "invalid_token", "The token is unknown or expired: ask POST /token again."
            )
            response.headers["WWW-Authenticate"] = 'Bearer error="invalid_token"'
            await response(scope, receive, send)
            return
        # A copy: the cookie SessionMiddleware outside keeps its own session and scope.
        await self.app({**scope, "session": session}, receive, send)
