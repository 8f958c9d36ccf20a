"""Token apps: a bearer request is an API call, and each token keeps the kit's state in a
server-side session of its own (``mfa_guard.tokens``), in memory or in a Redis shared by workers.

The app here issues its own random tokens (``POST /token``) and signs them in through the same
``AuthenticationBackend`` as cookies; ``tests/web/test_fastapi.py`` plays the story with tokens a
third-party library issues (fastapi-users' JWT strategy).
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import secrets
import socket
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
from redis.asyncio import Redis
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.authentication import AuthenticationMiddleware
from starlette.middleware.sessions import SessionMiddleware
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route, WebSocketRoute
from starlette.types import Scope

from mfa_guard import ConfigurationError, MemoryStore, MFAGuard
from mfa_guard.stores.sites import MemorySiteDirectory, Role, SitePolicy
from mfa_guard.testing import CHEAP_KDF, FrozenClock, current_code
from mfa_guard.tokens import (
    MemoryTokenSessionStore,
    RedisTokenSessionStore,
    TokenSessionMiddleware,
    TokenSessions,
    TokenSessionStore,
    bearer_token,
    token_key,
)
from mfa_guard.web.http import json_error, wants_json
from tests.apps import SESSION_SECRET, SessionAuth, login, settings_for, websocket_echo
from tests.scenarios import open_websocket

REDIS_URL = os.environ.get("MFA_GUARD_TEST_REDIS_URL_TOKENS", "redis://127.0.0.1:6379/13")
LIFETIME = 3600
# Beyond this, a request is hung (a client without a timeout waits for ever).
HANG = 30.0


def redis_or_skip() -> str:
    """The test Redis; a skip only outside CI, where it must run."""
    if os.environ.get("CI") != "true":
        try:
            with socket.create_connection(("127.0.0.1", 6379), 1):
                pass
        except OSError as exc:  # pragma: no cover - only without a local Redis
            pytest.skip(f"Redis is not reachable: {exc}")
    return REDIS_URL


@dataclass
class TokenApp:
    """A Starlette app with cookie sessions for browsers and bearer tokens for API clients."""

    app: Starlette
    guard: MFAGuard
    sessions: TokenSessions
    clock: FrozenClock

    def client(self) -> httpx.AsyncClient:
        return httpx.AsyncClient(
            transport=httpx.ASGITransport(app=self.app), base_url="http://testserver"
        )

    def code(self, secret: str) -> str:
        return current_code(secret, self.clock())


def token_app(
    store: TokenSessionStore | None = None,
    *,
    clock: FrozenClock | None = None,
    sites: MemorySiteDirectory | None = None,
    mfa: MemoryStore | None = None,
    order: str = "right",
    **overrides: Any,
) -> TokenApp:
    clock = clock or FrozenClock()
    guard = MFAGuard(
        settings=settings_for(**overrides),
        store=mfa or MemoryStore(),
        clock=clock,
        sites=sites,
        recovery_kdf=CHEAP_KDF,
    )
    sessions = TokenSessions(store, lifetime=LIFETIME, clock=clock)

    async def issue(request: Request) -> Response:
        user = (await request.json())["user"]
        token = secrets.token_urlsafe(32)
        await sessions.start(token, {"user": user})
        return JSONResponse({"access_token": token, "token_type": "bearer"})

    async def logout(request: Request) -> Response:
        request.session.clear()  # as for a cookie: the token's session ends
        return Response(status_code=204)

    async def protected(request: Request) -> Response:
        # The app's own sign-in check: the guard lets anonymous requests through to it.
        if not request.user.is_authenticated:
            return json_error(401, "not_authenticated", "Sign in first.")
        return PlainTextResponse(f"protected content of {request.user.display_name}")

    async def session_keys(request: Request) -> Response:
        return JSONResponse(sorted(request.session))

    cookie = Middleware(SessionMiddleware, secret_key=SESSION_SECRET)
    tokens = Middleware(TokenSessionMiddleware, sessions=sessions)
    stack = [cookie, tokens] if order == "right" else [tokens, cookie]
    app = Starlette(
        routes=[
            Route("/login", login, methods=["POST"]),
            Route("/token", issue, methods=["POST"]),
            Route("/logout", logout, methods=["POST"]),
            Route("/protected", protected),
            Route("/session-keys", session_keys),
            WebSocketRoute("/ws", websocket_echo),
            guard.mount(),
        ],
        middleware=[
            *stack,
            Middleware(AuthenticationMiddleware, backend=SessionAuth()),
            guard.middleware(),
        ],
    )
    return TokenApp(app=app, guard=guard, sessions=sessions, clock=clock)


async def new_token(client: httpx.AsyncClient, user: str) -> dict[str, str]:
    response = await client.post("/token", json={"user": user})
    assert response.status_code == 200, response.text
    return {"Authorization": f"Bearer {response.json()['access_token']}"}


async def enrol(ta: TokenApp, client: httpx.AsyncClient, token: dict[str, str]) -> str:
    setup = await client.post("/mfa/api/totp/setup", json={}, headers=token)
    assert setup.status_code == 200, setup.text
    secret: str = setup.json()["secret"]
    confirm = await client.post(
        "/mfa/api/totp/confirm", json={"code": ta.code(secret)}, headers=token
    )
    assert confirm.status_code == 200, confirm.text
    return secret


def error_code(response: httpx.Response) -> tuple[int, str]:
    assert response.headers["content-type"] == "application/json", response.text
    return response.status_code, response.json()["error"]["code"]


# A bearer request is an API call, whatever it accepts

ACCEPTS = {
    "curl and httpx": "*/*",
    "html": "text/html",
    "a browser's navigation": "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8",
    "none": None,
}


@pytest.mark.parametrize("accept", list(ACCEPTS.values()), ids=list(ACCEPTS))
async def test_a_bearer_request_for_a_page_gets_json_401_never_a_redirect(
    accept: str | None,
) -> None:
    ta = token_app()
    async with ta.client() as client:
        token = await new_token(client, "owner@acme.test")
        secret = await enrol(ta, client, token)
        laptop = await new_token(client, "owner@acme.test")
        headers = {**laptop, **({"Accept": accept} if accept else {})}
        refused = await client.get("/protected", headers=headers)
        assert error_code(refused) == (401, "mfa_required")
        assert "location" not in refused.headers
        ta.clock.advance(30)
        await client.post("/mfa/api/verify", json={"code": ta.code(secret)}, headers=laptop)
        allowed = await client.get("/protected", headers=headers)
    assert allowed.text == "protected content of owner@acme.test"


@pytest.mark.parametrize("accept", list(ACCEPTS.values()), ids=list(ACCEPTS))
async def test_a_bearer_request_held_at_enrolment_gets_json_403(accept: str | None) -> None:
    sites = MemorySiteDirectory()
    await sites.save_site("acme", "Acme")
    await sites.add_member("acme", "agent@acme.test", Role.OPERATOR)
    await sites.set_policy("acme", SitePolicy(enforce=True, grace_deadline=None))
    ta = token_app(sites=sites)
    async with ta.client() as client:
        token = await new_token(client, "agent@acme.test")
        headers = {**token, **({"Accept": accept} if accept else {})}
        refused = await client.get("/protected", headers=headers)
        assert error_code(refused) == (403, "mfa_enrolment_required")
        await enrol(ta, client, token)
        assert (await client.get("/protected", headers=headers)).status_code == 200


async def test_a_browser_navigation_with_a_cookie_is_still_sent_to_the_challenge_page() -> None:
    ta = token_app()
    async with ta.client() as client:
        token = await new_token(client, "owner@acme.test")
        await enrol(ta, client, token)
        await client.post("/login", data={"user": "owner@acme.test"})  # the cookie session
        page = await client.get("/protected", headers={"Accept": "text/html"})
    assert page.status_code == 303
    assert page.headers["location"] == "/mfa/challenge?next=/protected"


def scope_with(headers: list[tuple[bytes, bytes]], method: str = "GET") -> Scope:
    return {"type": "http", "method": method, "path": "/protected", "headers": headers}


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ([(b"authorization", b"Bearer abc"), (b"accept", b"text/html")], True),
        ([(b"authorization", b"bearer abc"), (b"accept", b"*/*")], True),
        ([(b"authorization", b"BEARER abc")], True),
        ([(b"authorization", b"Basic abc"), (b"accept", b"text/html")], False),
        ([(b"accept", b"text/html")], False),
        ([(b"accept", b"*/*")], False),
        ([(b"accept", b"application/json")], True),
        ([(b"accept", b"application/json, text/html")], False),
        ([(b"authorization", b"Bearerabc"), (b"accept", b"text/html")], False),
    ],
)
def test_wants_json_for_bearer_tokens_and_json_accepts(
    headers: list[tuple[bytes, bytes]], expected: bool
) -> None:
    assert wants_json(scope_with(headers), settings_for()) is expected


def test_a_json_only_app_may_set_api_prefixes_to_the_root() -> None:
    settings = settings_for(api_prefixes=["/"])
    assert settings.api_prefixes == ["/"]
    assert all(settings.is_api_path(path) for path in ("/", "/protected", "/a/b/c"))
    assert wants_json(scope_with([(b"accept", b"text/html")]), settings)
    # From the environment too, beside another prefix.
    assert settings_for(api_prefixes="/, /v1/").api_prefixes == ["/", "/v1"]
    with pytest.raises(ValueError, match="must start with '/'"):
        settings_for(api_prefixes=["api"])
    # Exempting every path stays refused.
    with pytest.raises(ValueError, match="not be '/'"):
        settings_for(exempt_paths=["/"])


async def test_with_api_prefixes_at_the_root_a_browser_gets_json_too() -> None:
    ta = token_app(api_prefixes=["/"])
    async with ta.client() as client:
        token = await new_token(client, "owner@acme.test")
        await enrol(ta, client, token)
        laptop = await new_token(client, "owner@acme.test")
        refused = await client.get("/protected", headers={**laptop, "Accept": "text/html"})
    assert error_code(refused) == (401, "mfa_required")


# One session per token


async def test_two_tokens_of_one_user_verify_separately() -> None:
    ta = token_app()
    async with ta.client() as client:
        phone = await new_token(client, "owner@acme.test")
        secret = await enrol(ta, client, phone)
        laptop = await new_token(client, "owner@acme.test")
        assert (await client.get("/protected", headers=phone)).status_code == 200
        assert error_code(await client.get("/protected", headers=laptop)) == (401, "mfa_required")
        status = (await client.get("/mfa/api/status", headers=laptop)).json()
        assert (status["enrolled"], status["verified"]) == (True, False)
        ta.clock.advance(30)
        verified = await client.post(
            "/mfa/api/verify", json={"code": ta.code(secret)}, headers=laptop
        )
        assert verified.status_code == 200
        assert (await client.get("/protected", headers=laptop)).status_code == 200
        # Ending one ends only that one.
        assert (await client.post("/logout", headers=laptop)).status_code == 204
        assert (await client.get("/protected", headers=phone)).status_code == 200
        assert error_code(await client.get("/protected", headers=laptop)) == (
            401,
            "not_authenticated",
        )


async def test_a_bearer_client_never_gets_a_cookie() -> None:
    ta = token_app()
    async with ta.client() as client:
        token = await new_token(client, "owner@acme.test")
        secret = await enrol(ta, client, token)
        laptop = await new_token(client, "owner@acme.test")
        ta.clock.advance(30)
        answers = [
            await client.get("/protected", headers=laptop),
            await client.post("/mfa/api/verify", json={"code": ta.code(secret)}, headers=laptop),
            await client.get("/protected", headers=laptop),
            await client.get("/mfa/api/status", headers=laptop),
        ]
        assert not client.cookies
    assert not [answer for answer in answers if "set-cookie" in answer.headers]
    # The marker the kit wrote lives in the token's session, on the server.
    assert "mfa_guard" in (await ta.sessions.open(laptop["Authorization"][7:])).data


async def test_a_bearer_request_does_not_touch_the_browsers_cookie_session() -> None:
    ta = token_app()
    async with ta.client() as client:
        client.cookies.set("session", "not-a-valid-cookie")
        token = await new_token(client, "solo@example.test")
        keys = await client.get("/session-keys", headers=token)
    assert "user" in keys.json()  # the token's session, not the cookie's
    assert "set-cookie" not in keys.headers


async def test_a_session_ends_with_its_lifetime_on_the_injected_clock() -> None:
    ta = token_app()
    async with ta.client() as client:
        token = await new_token(client, "owner@acme.test")
        await enrol(ta, client, token)
        ta.clock.advance(LIFETIME - 1)
        assert (await client.get("/protected", headers=token)).status_code == 200
        ta.clock.advance(1)
        # The session, its user and its verified second factor are gone: absolute, not sliding.
        expired = await client.get("/protected", headers=token)
    assert error_code(expired) == (401, "not_authenticated")
    assert (await ta.sessions.open(token["Authorization"][7:])).data == {}


async def test_the_app_ends_a_session_by_clearing_it_or_by_the_token() -> None:
    ta = token_app()
    async with ta.client() as client:
        first = await new_token(client, "owner@acme.test")
        second = await new_token(client, "owner@acme.test")
        assert (await client.post("/logout", headers=first)).status_code == 204
        assert await ta.sessions.end(second["Authorization"][7:]) is True
        assert await ta.sessions.end(second["Authorization"][7:]) is False
        for token in (first, second):
            answer = await client.get("/protected", headers=token)
            assert error_code(answer) == (401, "not_authenticated")


async def test_an_unknown_token_gets_an_empty_session_and_nothing_is_stored() -> None:
    store = MemoryTokenSessionStore()
    ta = token_app(store)
    async with ta.client() as client:
        token = await new_token(client, "owner@acme.test")
        await enrol(ta, client, token)
        stored = len(store)
        for forged in (
            "Bearer " + secrets.token_urlsafe(32),
            "Bearer " + token["Authorization"][7:-1],  # one character short
            "Bearer ",
            "Bearer two words",
            "Bearer " + "a" * 9000,
        ):
            answer = await client.get("/protected", headers={"Authorization": forged})
            assert error_code(answer) == (401, "not_authenticated"), forged[:20]
            keys = await client.get("/session-keys", headers={"Authorization": forged})
            assert keys.json() == [], forged[:20]
    assert len(store) == stored


def test_the_bearer_header_is_read_strictly() -> None:
    def scope(value: bytes) -> Scope:
        return {"type": "http", "headers": [(b"authorization", value)]}

    assert bearer_token(scope(b"Bearer abc.def-ghi_~+/=")) == "abc.def-ghi_~+/="
    assert bearer_token(scope(b"bearer  abc ")) == "abc"
    assert bearer_token(scope(b"Basic abc")) is None
    assert bearer_token({"type": "http", "headers": []}) is None
    assert bearer_token(scope(b"Bearer ")) == ""
    assert bearer_token(scope(b"Bearer a b")) == ""
    assert token_key("abc") == hashlib.sha256(b"abc").hexdigest()


async def test_the_store_holds_the_tokens_hash_never_the_token() -> None:
    store = MemoryTokenSessionStore()
    ta = token_app(store)
    async with ta.client() as client:
        token = (await new_token(client, "owner@acme.test"))["Authorization"][7:]
    assert await store.get(token) is None
    value = await store.get(hashlib.sha256(token.encode()).hexdigest())
    assert value is not None
    assert token not in value


async def test_a_token_issued_twice_is_refused_a_second_session() -> None:
    sessions = TokenSessions(clock=FrozenClock())
    await sessions.start("tok", {"user": "a"})
    with pytest.raises(ConfigurationError, match="already has a session"):
        await sessions.start("tok", {"user": "b"})
    assert (await sessions.open("tok")).data == {"user": "a"}


def test_a_lifetime_under_a_minute_is_refused() -> None:
    with pytest.raises(ConfigurationError, match="at least 60"):
        TokenSessions(lifetime=59)


async def test_the_wrong_order_is_refused_on_the_first_bearer_request() -> None:
    ta = token_app(order="wrong")
    async with ta.client() as client:
        with pytest.raises(ConfigurationError, match="after \\(inside\\) SessionMiddleware"):
            await client.post("/token", json={"user": "x"}, headers={"Authorization": "Bearer x"})


async def test_a_websocket_with_a_token_opens_only_once_the_token_is_verified() -> None:
    ta = token_app()
    async with ta.client() as client:
        phone = await new_token(client, "owner@acme.test")
        secret = await enrol(ta, client, phone)
        laptop = await new_token(client, "owner@acme.test")
        assert await open_websocket(ta.app, laptop) == [
            {"type": "websocket.close", "code": 1008, "reason": ""}
        ]
        ta.clock.advance(30)
        await client.post("/mfa/api/verify", json={"code": ta.code(secret)}, headers=laptop)
    assert [message["type"] for message in await open_websocket(ta.app, laptop)] == [
        "websocket.accept",
        "websocket.send",
        "websocket.close",
    ]


# The stores: memory, and Redis shared by several workers


@dataclass
class Backend:
    """A token session store under test, and how a second worker reaches the same sessions."""

    store: TokenSessionStore
    clock: FrozenClock
    url: str | None = None
    prefix: str = ""
    others: list[TokenSessionStore] = field(default_factory=list)

    def another(self) -> TokenSessionStore:
        """Another worker's store: its own Redis connection, or (memory) the same object, the
        only way two apps share a process's memory."""
        if self.url is None:
            return self.store
        other = RedisTokenSessionStore.from_url(self.url, prefix=self.prefix)
        self.others.append(other)
        return other


@pytest.fixture(params=["memory", pytest.param("redis", marks=pytest.mark.redis)])
async def backend(request: pytest.FixtureRequest) -> AsyncIterator[Backend]:
    clock = FrozenClock()
    if request.param == "memory":
        yield Backend(MemoryTokenSessionStore(clock=clock), clock)
        return
    url, prefix = redis_or_skip(), f"test:{uuid.uuid4().hex}:"
    store = RedisTokenSessionStore.from_url(url, prefix=prefix)
    backend = Backend(store, clock, url, prefix)
    yield backend
    for other in backend.others:
        await other.aclose()
    client: Redis = Redis.from_url(url)
    keys = [key async for key in client.scan_iter(match=prefix + "*")]
    if keys:
        await client.delete(*keys)
    await client.aclose()
    await store.aclose()


class TestStores:
    async def test_add_replace_get_delete(self, backend: Backend) -> None:
        store = backend.store
        key = token_key(secrets.token_urlsafe(16))
        assert await store.get(key) is None
        assert await store.replace(key, "v0", 60) is False
        assert await store.get(key) is None
        assert await store.add(key, "v1", 60) is True
        assert await store.add(key, "v2", 60) is False
        assert await store.get(key) == "v1"
        assert await store.replace(key, "v3", 60) is True
        assert await store.get(key) == "v3"
        assert await store.delete(key) is True
        assert await store.delete(key) is False
        assert await store.get(key) is None

    async def test_sessions_expire_on_the_kits_clock(self, backend: Backend) -> None:
        clock = backend.clock
        sessions = TokenSessions(backend.store, lifetime=LIFETIME, clock=clock)
        await sessions.start("tok", {"user": "a"})
        clock.advance(LIFETIME / 2)
        session = await sessions.open("tok")
        session.data["mfa_guard"] = [1]
        await sessions.save(session)  # a write does not extend the lifetime
        clock.advance(LIFETIME / 2 - 1)
        assert (await sessions.open("tok")).data == {"user": "a", "mfa_guard": [1]}
        clock.advance(1)
        assert (await sessions.open("tok")).data == {}

    async def test_a_sign_out_during_another_request_is_not_undone_by_it(
        self, backend: Backend
    ) -> None:
        worker = TokenSessions(backend.store, lifetime=LIFETIME, clock=backend.clock)
        other = TokenSessions(backend.another(), lifetime=LIFETIME, clock=backend.clock)
        await worker.start("tok", {"user": "owner@acme.test"})
        slow = await worker.open("tok")  # a request in flight
        slow.data["mfa_guard"] = ["marker"]
        assert await other.end("tok")  # the sign-out, meanwhile, on another worker
        await worker.save(slow)  # the slow request writes back
        assert (await worker.open("tok")).data == {}
        assert (await other.open("tok")).data == {}

    async def test_the_first_write_of_a_new_session_wins(self, backend: Backend) -> None:
        worker = TokenSessions(backend.store, lifetime=LIFETIME, clock=backend.clock)
        other = TokenSessions(backend.another(), lifetime=LIFETIME, clock=backend.clock)
        first, second = await worker.open("jwt"), await other.open("jwt")
        first.data["mfa_guard"] = ["first"]
        second.data["mfa_guard"] = ["second"]
        await worker.save(first)
        await other.save(second)
        assert (await other.open("jwt")).data == {"mfa_guard": ["first"]}

    async def test_two_workers_share_the_sessions(self, backend: Backend) -> None:
        clock = backend.clock
        mfa = MemoryStore()  # the enrolments, shared too (a database in production)
        first = token_app(backend.store, clock=clock, mfa=mfa)
        second = token_app(backend.another(), clock=clock, mfa=mfa)
        async with first.client() as one, second.client() as two:
            phone = await new_token(one, "owner@acme.test")
            secret = await enrol(first, one, phone)
            laptop = await new_token(two, "owner@acme.test")
            assert error_code(await one.get("/protected", headers=laptop)) == (401, "mfa_required")
            clock.advance(30)
            await two.post("/mfa/api/verify", json={"code": second.code(secret)}, headers=laptop)
            # Verified on one worker, the token passes on the other.
            assert (await one.get("/protected", headers=laptop)).status_code == 200
            await one.post("/logout", headers=laptop)
            assert error_code(await two.get("/protected", headers=laptop)) == (
                401,
                "not_authenticated",
            )
            assert (await two.get("/protected", headers=phone)).status_code == 200


@pytest.mark.redis
async def test_redis_expires_the_sessions_it_holds() -> None:
    prefix = f"test:{uuid.uuid4().hex}:"
    store = RedisTokenSessionStore.from_url(redis_or_skip(), prefix=prefix)
    sessions = TokenSessions(store, lifetime=LIFETIME)
    await sessions.start("tok", {"user": "a"})
    client: Redis = Redis.from_url(REDIS_URL)
    try:
        ttl = await client.pttl(prefix + token_key("tok"))
        assert 0 < ttl <= LIFETIME * 1000
        assert await client.get(prefix + "tok") is None
    finally:
        await client.delete(prefix + token_key("tok"))
        await client.aclose()
        await store.aclose()


@pytest.mark.redis
async def test_a_redis_that_does_not_answer_fails_closed_with_503() -> None:
    ta = token_app(RedisTokenSessionStore.from_url("redis://127.0.0.1:1/0"))
    async with ta.client() as client:
        answer = await client.get("/protected", headers={"Authorization": "Bearer abc"})
        assert error_code(answer) == (503, "service_unavailable")
        assert answer.headers["retry-after"] == "5"
        assert "Traceback" not in answer.text
        closed = await open_websocket(ta.app, {"Authorization": "Bearer abc"})
    await ta.sessions.aclose()
    assert closed == [{"type": "websocket.close", "code": 1013, "reason": ""}]


@pytest.mark.redis
async def test_a_redis_that_stops_answering_fails_closed_within_the_timeout() -> None:
    """A Redis that takes the connection and never says a word (hung, or behind a frozen
    proxy): the request answers 503 once ``timeout`` has run out, where a client without one
    waited for ever."""
    held: list[asyncio.StreamWriter] = []

    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        held.append(writer)

    server = await asyncio.start_server(silent, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    ta = token_app(RedisTokenSessionStore.from_url(f"redis://127.0.0.1:{port}/0", timeout=0.5))
    try:
        async with ta.client() as client:
            answer = await asyncio.wait_for(
                client.get("/protected", headers={"Authorization": "Bearer abc"}), HANG
            )
        assert error_code(answer) == (503, "service_unavailable")
        assert held, "the request never reached the silent Redis"
    finally:
        for writer in held:
            writer.close()
        server.close()
        await ta.sessions.aclose()


@pytest.mark.redis
async def test_a_connection_closed_under_a_command_is_retried_not_a_crash(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """redis-py writes a command in a task of its own (under the socket timeout), and another
    task may close the connection first: the write met ``AttributeError`` ('NoneType' object
    has no attribute 'writelines'), a 500. The store's client makes it redis-py's
    ``ConnectionError``, which its retry sends again on a new connection."""
    prefix = f"test:{uuid.uuid4().hex}:"
    store = RedisTokenSessionStore.from_url(redis_or_skip(), prefix=prefix)
    sessions = TokenSessions(store, lifetime=LIFETIME)
    connection_class: Any = store._client.connection_pool.connection_class
    write = connection_class._send_packed_command
    closed_under: list[object] = []

    async def closed_by_another_task(connection: Any, command: Any) -> None:
        if not closed_under:
            closed_under.append(connection)
            await connection.disconnect(nowait=True)
        await write(connection, command)

    try:
        await sessions.start("tok", {"user": "a"})
        monkeypatch.setattr(connection_class, "_send_packed_command", closed_by_another_task)
        assert await store.get(token_key("tok")) is not None
        assert closed_under
    finally:
        monkeypatch.undo()
        await store.delete(token_key("tok"))
        await store.aclose()


class FlakyStore(MemoryTokenSessionStore):
    """Answers reads, then fails every write: a Redis gone down during a request."""

    async def delete(self, key: str) -> bool:
        from mfa_guard.errors import StoreUnavailable

        raise StoreUnavailable()


async def test_a_sign_out_the_store_did_not_record_answers_503_not_204() -> None:
    store = FlakyStore()
    ta = token_app(store)
    async with ta.client() as client:
        token = await new_token(client, "owner@acme.test")
        answer = await client.post("/logout", headers=token)
        assert error_code(answer) == (503, "service_unavailable")
        # The session is still there, and the client knows it was not signed out.
        assert (await client.get("/protected", headers=token)).status_code == 200


async def test_concurrent_requests_of_one_token_all_see_its_session() -> None:
    ta = token_app()
    async with ta.client() as client:
        token = await new_token(client, "owner@acme.test")
        answers = await asyncio.gather(
            *(client.get("/protected", headers=token) for _ in range(20))
        )
    assert {answer.status_code for answer in answers} == {200}
