"""Bearer tokens with a server-side session each: where the kit keeps its marker for API clients.

The kit keeps what a session knows of its second factor in ``scope["session"]["mfa_guard"]``. A
browser carries that session in its cookie; a client sending ``Authorization: Bearer <token>``
has no cookie. :class:`TokenSessionMiddleware` gives each bearer token a session of its own,
kept on the server under the token's SHA-256 (never the token itself), for tokens the app issues
or a library issues for it (a JWT of fastapi-users, authx, ...):

- it does not validate the token: the app's ``AuthenticationBackend`` does, and sets
  ``scope["user"]`` as for a cookie. The middleware only keeps the session, so a made-up token
  gets an empty session of its own, never another token's;
- a session is written back when the request changed it (the kit's marker after a verification
  or a re-check, the app's own keys): a request that changes nothing costs one read;
- a session lives ``lifetime`` seconds from its first write (absolute, not sliding: a JWT's own
  ``exp`` cannot be read without validating it, and a sliding lifetime would cost a write on
  every request), and ends sooner when the app clears it (``request.session.clear()``, as for a
  cookie) or calls :meth:`TokenSessions.end`;
- the cookie ``SessionMiddleware`` outside keeps its own session and sets no cookie on a bearer
  request: the app below sees a copy of the scope with the token's session.

Order, outermost first: ``SessionMiddleware`` (if browsers sign in too), then
``TokenSessionMiddleware``, then ``AuthenticationMiddleware``, then the guard's middleware.
Sessions live in a :class:`TokenSessionStore`: :class:`MemoryTokenSessionStore` for one process,
:class:`RedisTokenSessionStore` for several workers or hosts. A store that does not answer fails
closed: ``503 service_unavailable`` (a websocket is closed with ``1013``).
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol, Self

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from mfa_guard.clock import Clock, system_clock
from mfa_guard.errors import ConfigurationError, StoreUnavailable
from mfa_guard.redis_clients import closed_connections_raise_connection_error, connection_retry
from mfa_guard.settings import STORAGE_TIMEOUT
from mfa_guard.web.http import report_failure, unavailable_json

if TYPE_CHECKING:
    from redis.asyncio import Redis

__all__ = [
    "TOKEN_SESSION_LIFETIME",
    "MemoryTokenSessionStore",
    "OpenSession",
    "RedisTokenSessionStore",
    "TokenSessionMiddleware",
    "TokenSessionStore",
    "TokenSessions",
    "bearer_token",
    "token_key",
]

# 12 hours, in seconds: the kit's default verified lifetime; set it to your tokens' lifetime.
TOKEN_SESSION_LIFETIME = 12 * 3600
# Longer than any token a library issues; longer values are not tokens (and not hashed).
MAX_TOKEN_LENGTH = 8192
# RFC 6455 7.4.1: try again later.
WS_TRY_AGAIN_LATER = 1013
_SESSION_SCOPES = frozenset({"http", "websocket"})
_FIRST_MESSAGES = frozenset({"http.response.start", "websocket.accept", "websocket.close"})


def bearer_token(scope: Scope) -> str | None:
    """The token of an ``Authorization: Bearer <token>`` header; ``""`` for a bearer header
    whose token is empty, too long or holds spaces; ``None`` without a bearer header."""
    for name, value in scope.get("headers", ()):
        if name == b"authorization":
            if value[:7].lower() != b"bearer ":
                return None
            token: str = value[7:].strip().decode("latin-1")
            if not token or len(token) > MAX_TOKEN_LENGTH or any(c.isspace() for c in token):
                return ""
            return token
    return None


def token_key(token: str) -> str:
    """What a token's session is filed under: its SHA-256, in hex. A copy of the store reveals
    no token (tokens are random or signed: no salt or slow hash is needed, as for a password)."""
    return hashlib.sha256(token.encode("latin-1")).hexdigest()


class TokenSessionStore(Protocol):
    """Where the token sessions live: opaque text values under a key, each with a time to live.

    Every method raises :class:`~mfa_guard.errors.StoreUnavailable` when the backend does not
    answer. ``ttl`` is in seconds (more than 0).
    """

    async def get(self, key: str) -> str | None:
        """The value under ``key``, or ``None`` (never set, deleted or expired)."""
        ...

    async def add(self, key: str, value: str, ttl: float) -> bool:
        """Sets ``key`` only if it has no value; ``False`` if it had one (left as it was)."""
        ...

    async def replace(self, key: str, value: str, ttl: float) -> bool:
        """Sets ``key`` only if it has a value; ``False`` if it had none (a session ended in
        between is not brought back)."""
        ...

    async def delete(self, key: str) -> bool:
        """Removes ``key``; ``True`` if it had a value."""
        ...

    async def aclose(self) -> None:
        """Releases connections."""
        ...


class MemoryTokenSessionStore:
    """The sessions in this process's memory: one worker (a restart ends every session)."""

    def __init__(self, *, clock: Clock = system_clock) -> None:
        self._clock = clock
        self._values: dict[str, tuple[str, float]] = {}

    def __len__(self) -> int:
        now = self._clock()
        return sum(1 for _, until in self._values.values() if until > now)

    async def get(self, key: str) -> str | None:
        entry = self._values.get(key)
        if entry is None:
            return None
        if entry[1] <= self._clock():
            del self._values[key]
            return None
        return entry[0]

    async def add(self, key: str, value: str, ttl: float) -> bool:
        if await self.get(key) is not None:
            return False
        self._prune()
        self._values[key] = (value, self._clock() + ttl)
        return True

    async def replace(self, key: str, value: str, ttl: float) -> bool:
        if await self.get(key) is None:
            return False
        self._values[key] = (value, self._clock() + ttl)
        return True

    async def delete(self, key: str) -> bool:
        return self._values.pop(key, None) is not None

    async def aclose(self) -> None:
        return None

    def _prune(self) -> None:
        # Expired sessions leave as new ones come in: the table never outgrows the live ones.
        now = self._clock()
        for key in [key for key, (_, until) in self._values.items() if until <= now]:
            del self._values[key]


class RedisTokenSessionStore:
    """The sessions in Redis (redis-py's asyncio client, the ``redis`` extra), shared by every
    worker and host; Redis expires them. ``prefix`` keeps them apart from other keys."""

    def __init__(self, client: Redis, *, prefix: str = "mfa_guard:token_session:") -> None:
        self._client = client
        self._prefix = prefix

    @classmethod
    def from_url(
        cls,
        url: str,
        *,
        prefix: str = "mfa_guard:token_session:",
        timeout: float = STORAGE_TIMEOUT,
    ) -> Self:
        """A store on a client of its own: ``timeout`` bounds connecting and each answer, in
        seconds (a Redis that stops answering fails requests closed, 503, instead of holding
        them; ``socket_timeout`` and ``socket_connect_timeout`` in the URL win), a broken
        connection is retried once at once, and a connection closed under a command is
        redis-py's ``ConnectionError`` (see :mod:`mfa_guard.redis_clients`)."""
        try:
            from redis.asyncio import Redis
        except ImportError as exc:  # pragma: no cover - the redis extra is missing
            raise ConfigurationError(
                "RedisTokenSessionStore needs redis-py: pip install 'mfa-guard[redis]'"
            ) from exc
        client: Redis = Redis.from_url(
            url,
            decode_responses=True,
            **connection_retry(),
            socket_timeout=timeout,
            socket_connect_timeout=timeout,
        )
        closed_connections_raise_connection_error(client)
        return cls(client, prefix=prefix)

    async def get(self, key: str) -> str | None:
        from redis.exceptions import RedisError

        try:
            value = await self._client.get(self._prefix + key)
        except RedisError as exc:
            raise StoreUnavailable() from exc
        if value is None:
            return None
        return value.decode() if isinstance(value, bytes) else str(value)

    async def add(self, key: str, value: str, ttl: float) -> bool:
        return await self._set(key, value, ttl, nx=True)

    async def replace(self, key: str, value: str, ttl: float) -> bool:
        return await self._set(key, value, ttl, xx=True)

    async def _set(
        self, key: str, value: str, ttl: float, *, nx: bool = False, xx: bool = False
    ) -> bool:
        from redis.exceptions import RedisError

        try:
            done = await self._client.set(
                self._prefix + key, value, px=max(1, math.ceil(ttl * 1000)), nx=nx, xx=xx
            )
        except RedisError as exc:
            raise StoreUnavailable() from exc
        return bool(done)

    async def delete(self, key: str) -> bool:
        from redis.exceptions import RedisError

        try:
            return bool(await self._client.delete(self._prefix + key))
        except RedisError as exc:
            raise StoreUnavailable() from exc

    async def aclose(self) -> None:
        await self._client.aclose()


@dataclass(slots=True)
class OpenSession:
    """A token's session as one request read it."""

    key: str
    data: dict[str, Any]
    stored: str | None  # the session's JSON as read, None for a new session
    expires_at: float


def _dumps(data: Mapping[str, Any]) -> str:
    try:
        return json.dumps(data, separators=(",", ":"))
    except (TypeError, ValueError) as exc:
        raise ConfigurationError(
            f"a token session holds only JSON values, as a cookie session does: {exc}"
        ) from exc


class TokenSessions:
    """The token sessions: what :class:`TokenSessionMiddleware` reads and writes, and what the
    app calls to start a session for a token it issues or to end one (sign-out).

    ``lifetime`` (seconds, at least 60) counts from a session's first write and is never
    extended. Each stored value is ``"<expires_at>\\n<session JSON>"``: the expiry is checked
    with ``clock`` on every read, whatever the store's own clock says.
    """

    def __init__(
        self,
        store: TokenSessionStore | None = None,
        *,
        lifetime: int = TOKEN_SESSION_LIFETIME,
        clock: Clock = system_clock,
    ) -> None:
        if lifetime < 60:
            raise ConfigurationError("TokenSessions: lifetime must be at least 60 seconds")
        self.store: TokenSessionStore = (
            store if store is not None else MemoryTokenSessionStore(clock=clock)
        )
        self.lifetime = lifetime
        self.clock = clock

    async def start(self, token: str, data: Mapping[str, Any]) -> None:
        """Starts the session of a token the app has just issued, holding ``data`` (say
        ``{"user": email}`` for the app's authentication backend to read). Raises
        ``ConfigurationError`` if the token already has one: tokens must be unique."""
        now = self.clock()
        value = f"{now + self.lifetime!r}\n{_dumps(data)}"
        if not await self.store.add(token_key(token), value, self.lifetime):
            raise ConfigurationError("TokenSessions.start: this token already has a session")

    async def open(self, token: str) -> OpenSession:
        """The token's session, or a new empty one (not stored until it is written to)."""
        key = token_key(token)
        now = self.clock()
        value = await self.store.get(key)
        if value is not None:
            expires, _, stored = value.partition("\n")
            try:
                expires_at = float(expires)
                data = json.loads(stored)
            except ValueError:
                data = None  # not one of ours: treated as no session
            if isinstance(data, dict) and expires_at > now:
                return OpenSession(key, data, stored, expires_at)
        return OpenSession(key, {}, None, now + self.lifetime)

    async def save(self, session: OpenSession) -> None:
        """Writes the session back if it changed: replaced (if it still exists), added (if it is
        new), or deleted once emptied."""
        data = session.data
        if not data:
            if session.stored is not None:
                await self.store.delete(session.key)
                session.stored = None
            return
        current = _dumps(data)
        if current == session.stored:
            return
        ttl = session.expires_at - self.clock()
        if ttl <= 0:
            return  # expired during the request: it ends as it would have
        value = f"{session.expires_at!r}\n{current}"
        if session.stored is None:
            # A session made by a concurrent request of the same token first is kept.
            await self.store.add(session.key, value, ttl)
        else:
            # A session ended in between (sign-out) stays ended.
            await self.store.replace(session.key, value, ttl)
        session.stored = current

    async def end(self, token: str) -> bool:
        """Ends the token's session (the app's sign-out): the second factor verified with it is
        gone. ``True`` if it had one."""
        return await self.store.delete(token_key(token))

    async def aclose(self) -> None:
        await self.store.aclose()


class TokenSessionMiddleware:
    """Gives a request that carries ``Authorization: Bearer <token>`` the token's server-side
    session in ``scope["session"]``; other requests pass as they came. Place it after (inside)
    ``SessionMiddleware`` and before ``AuthenticationMiddleware``."""

    def __init__(self, app: ASGIApp, *, sessions: TokenSessions) -> None:
        self.app = app
        self.sessions = sessions

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in _SESSION_SCOPES:
            await self.app(scope, receive, send)
            return
        token = bearer_token(scope)
        if token is None:
            await self.app(scope, receive, send)
            return
        if not token:
            # A malformed bearer header: an empty session of its own, never stored (the app's
            # authentication refuses the token).
            await self.app({**scope, "session": {}}, receive, send)
            return
        try:
            session = await self.sessions.open(token)
        except StoreUnavailable as exc:
            await _unavailable(scope, receive, send, exc)
            return
        # A copy: the cookie SessionMiddleware outside keeps its own session and sets no cookie.
        inner: Scope = {**scope, "session": session.data}
        state = _Saving(self.sessions, session, inner, scope, receive, send)
        await self.app(inner, receive, state.send)
        if scope["type"] == "websocket" and state.started and not state.failed:
            # What the socket's handler wrote after accept.
            await state.save()


class _Saving:
    """The send of the app below: writes the session back before the response starts."""

    __slots__ = ("_send", "failed", "inner", "receive", "scope", "session", "sessions", "started")

    def __init__(
        self,
        sessions: TokenSessions,
        session: OpenSession,
        inner: Scope,
        scope: Scope,
        receive: Receive,
        send: Send,
    ) -> None:
        self.sessions = sessions
        self.session = session
        self.inner = inner
        self.scope = scope
        self.receive = receive
        self._send = send
        self.started = False
        self.failed = False

    async def save(self) -> None:
        if self.inner.get("session") is not self.session.data:
            raise ConfigurationError(
                "TokenSessionMiddleware must sit after (inside) SessionMiddleware: another "
                "middleware replaced the token's session; list SessionMiddleware first"
            )
        await self.sessions.save(self.session)

    async def send(self, message: Message) -> None:
        if self.failed:
            return  # the 503 was sent instead of the app's answer
        if not self.started and message["type"] in _FIRST_MESSAGES:
            self.started = True
            try:
                await self.save()
            except StoreUnavailable as exc:
                # A sign-out or a verification that was not stored must not look done.
                self.failed = True
                await _unavailable(self.scope, self.receive, self._send, exc)
                return
        await self._send(message)


async def _unavailable(scope: Scope, receive: Receive, send: Send, exc: StoreUnavailable) -> None:
    if scope["type"] == "websocket":
        report_failure(exc)
        await send({"type": "websocket.close", "code": WS_TRY_AGAIN_LATER, "reason": ""})
        return
    await unavailable_json(exc)(scope, receive, send)
