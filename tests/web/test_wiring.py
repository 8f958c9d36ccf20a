"""Wired wrong, the guard refuses, closed and loudly; wired right, it guards.

Each way an app can wire the guard wrong — its middleware before the app's authentication (listed
first, or added last with ``app.add_middleware``, which wraps), no authentication, no session, the
kit's mount missing, two guards — once let an enrolled user who never gave a second factor reach
a protected page as if anonymous, or answered ``503`` "try again" for a permanent mistake. Now the
app does not start where the start-up can tell, and every request it cannot guard gets a generic
``500`` (a websocket: closed before accept, ``1011``) with an ``ERROR`` in the log that names the
fix, for session apps and for token apps.
"""

from __future__ import annotations

import base64
import json
import logging
import socket
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
import uvicorn
from fastapi import Depends, FastAPI
from itsdangerous import TimestampSigner
from starlette.applications import Starlette
from starlette.authentication import (
    AuthCredentials,
    AuthenticationBackend,
    BaseUser,
    SimpleUser,
    UnauthenticatedUser,
)
from starlette.middleware import Middleware
from starlette.middleware.authentication import AuthenticationMiddleware
from starlette.middleware.sessions import SessionMiddleware
from starlette.requests import HTTPConnection
from starlette.routing import BaseRoute, Mount, Route, WebSocketRoute
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from mfa_guard import ConfigurationError, MemoryStore, MFAGuard
from mfa_guard.core import totp
from mfa_guard.crypto import SecretBox
from mfa_guard.fastapi import RequireMFA, include_mfa_guard
from mfa_guard.identity import user_identity
from mfa_guard.testing import FrozenClock, current_code
from mfa_guard.web.middleware import MFAGuardMiddleware
from tests.apps import (
    SESSION_SECRET,
    SessionAuth,
    api_data,
    login,
    logout,
    protected,
    settings_for,
    store_app,
    websocket_echo,
)
from tests.scenarios import open_websocket, recovery_code_set

USER = "solo@example.test"
# What names the fix in every refusal about the middleware's place or the session.
FIX_FOR_SESSION_APPS = "add the guard FIRST"
FIX_FOR_TOKEN_APPS = "mfa_guard.tokens.TokenSessionMiddleware"
TOKEN_DOCS = "docs/fastapi.md#bearer-tokens"


@dataclass
class Kit:
    guard: MFAGuard
    store: MemoryStore
    clock: FrozenClock

    def code(self, secret: str) -> str:
        return current_code(secret, self.clock())


def new_kit(**identity: Any) -> Kit:
    store = MemoryStore()
    clock = FrozenClock()
    guard = MFAGuard(settings=settings_for(), store=store, clock=clock, **identity)
    return Kit(guard, store, clock)


async def enrolled(kit: Kit, user: str = USER) -> str:
    """``user`` has an authenticator (written into the store); returns its secret."""
    secret = totp.new_secret()
    encrypted = SecretBox(kit.guard.settings.encryption_keys).encrypt(secret)
    now = kit.clock()
    step = int(now // kit.guard.settings.totp.period)
    epoch = await store_app(
        kit.store, user, encrypted, step=step, recovery=recovery_code_set(), now=now
    )
    assert epoch is not None
    kit.clock.advance(30)  # the enrolment used this step: the challenge takes the next one
    return secret


class HeaderAuth(AuthenticationBackend):
    """A first factor with no session: the user named by a header (a proxy that signs in)."""

    async def authenticate(self, conn: HTTPConnection) -> tuple[AuthCredentials, BaseUser] | None:
        user = conn.headers.get("x-user")
        if user is None:
            return None
        return AuthCredentials(["authenticated"]), SimpleUser(user)


def session_cookie(data: dict[str, Any]) -> str:
    """A session cookie as Starlette's SessionMiddleware signs it."""
    payload = base64.b64encode(json.dumps(data).encode())
    return TimestampSigner(SESSION_SECRET).sign(payload).decode()


# The signed-in user's first factor, both ways: the session cookie and the header.
SIGNED_IN = {"cookie": f"session={session_cookie({'user': USER})}", "x-user": USER}


def app_routes(kit: Kit, *, mount: bool = True) -> list[BaseRoute]:
    routes: list[BaseRoute] = [
        Route("/login", login, methods=["POST"]),
        Route("/logout", logout, methods=["POST"]),
        Route("/protected", protected),
        Route("/api/data", api_data, methods=["GET", "POST"]),
        WebSocketRoute("/ws", websocket_echo),
    ]
    return [*routes, kit.guard.mount()] if mount else routes


def session() -> Middleware:
    return Middleware(SessionMiddleware, secret_key=SESSION_SECRET)


def authentication() -> Middleware:
    return Middleware(AuthenticationMiddleware, backend=SessionAuth())


def starlette(kit: Kit, middleware: list[Middleware], *, mount: bool = True) -> Starlette:
    return Starlette(routes=app_routes(kit, mount=mount), middleware=middleware)


def fastapi(kit: Kit, *, middleware: bool = False) -> FastAPI:
    app = FastAPI()
    include_mfa_guard(app, kit.guard, middleware=middleware)
    for route in app_routes(kit, mount=False):
        app.router.routes.append(route)
    return app


# -- the wirings ---------------------------------------------------------------------------------


def guard_listed_first(kit: Kit) -> ASGIApp:
    return starlette(kit, [kit.guard.middleware(), session(), authentication()])


def guard_listed_between_session_and_authentication(kit: Kit) -> ASGIApp:
    return starlette(kit, [session(), kit.guard.middleware(), authentication()])


def add_middleware_in_the_natural_order(kit: Kit) -> ASGIApp:
    # Each call wraps the ones before: the guard, added last, runs first.
    app = starlette(kit, [])
    app.add_middleware(SessionMiddleware, secret_key=SESSION_SECRET)
    app.add_middleware(AuthenticationMiddleware, backend=SessionAuth())
    app.add_middleware(MFAGuardMiddleware, guard=kit.guard)
    return app


def fastapi_add_middleware_in_the_natural_order(kit: Kit) -> ASGIApp:
    app = fastapi(kit)
    app.add_middleware(SessionMiddleware, secret_key=SESSION_SECRET)
    app.add_middleware(AuthenticationMiddleware, backend=SessionAuth())
    app.add_middleware(MFAGuardMiddleware, guard=kit.guard)
    return app


class TokenSessionMiddleware:
    """Stands in for the kit's per-token session helper: a session for each bearer token."""

    __module__ = "mfa_guard.tokens"

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        scope.setdefault("session", {})
        await self.app(scope, receive, send)


def header_authentication() -> Middleware:
    return Middleware(AuthenticationMiddleware, backend=HeaderAuth())


def session_after_the_guard(kit: Kit) -> ASGIApp:
    return starlette(kit, [header_authentication(), kit.guard.middleware(), session()])


def token_sessions_after_the_guard(kit: Kit) -> ASGIApp:
    return starlette(
        kit,
        [header_authentication(), kit.guard.middleware(), Middleware(TokenSessionMiddleware)],
    )


def no_authentication(kit: Kit) -> ASGIApp:
    return starlette(kit, [session(), kit.guard.middleware()])


def no_session(kit: Kit) -> ASGIApp:
    return starlette(kit, [header_authentication(), kit.guard.middleware()])


def mount_missing(kit: Kit) -> ASGIApp:
    return starlette(kit, [session(), authentication(), kit.guard.middleware()], mount=False)


def guard_listed_twice(kit: Kit) -> ASGIApp:
    guarding = kit.guard.middleware()
    return starlette(kit, [session(), authentication(), guarding, guarding])


def guard_listed_and_added(kit: Kit) -> ASGIApp:
    app = starlette(kit, [session(), authentication(), kit.guard.middleware()])
    app.add_middleware(MFAGuardMiddleware, guard=kit.guard)
    return app


def fastapi_included_and_added(kit: Kit) -> ASGIApp:
    app = fastapi(kit, middleware=True)
    app.add_middleware(AuthenticationMiddleware, backend=SessionAuth())
    app.add_middleware(SessionMiddleware, secret_key=SESSION_SECRET)
    app.add_middleware(MFAGuardMiddleware, guard=kit.guard)
    return app


def guard_in_a_mounted_app_too(kit: Kit) -> ASGIApp:
    # A guarded app mounted in a guarded app (the outer guard finds the inner one).
    inner = starlette(kit, [kit.guard.middleware()])
    return Starlette(
        routes=[Mount("", app=inner)],
        middleware=[session(), authentication(), kit.guard.middleware()],
    )


@dataclass(frozen=True)
class Miswiring:
    build: Callable[[Kit], ASGIApp]
    says: str  # what the log says is wrong
    names_the_fix: bool  # the fix for session and token apps
    refused_at_start_up: bool


BEFORE_AUTHENTICATION = "runs before AuthenticationMiddleware"
MISWIRINGS = {
    "guard listed first": Miswiring(guard_listed_first, BEFORE_AUTHENTICATION, True, True),
    "guard listed between session and authentication": Miswiring(
        guard_listed_between_session_and_authentication, BEFORE_AUTHENTICATION, True, True
    ),
    "add_middleware in the natural order": Miswiring(
        add_middleware_in_the_natural_order, BEFORE_AUTHENTICATION, True, True
    ),
    "FastAPI add_middleware in the natural order": Miswiring(
        fastapi_add_middleware_in_the_natural_order, BEFORE_AUTHENTICATION, True, True
    ),
    "session after the guard": Miswiring(
        session_after_the_guard, "before the session middleware (SessionMiddleware)", True, True
    ),
    "token sessions after the guard": Miswiring(
        token_sessions_after_the_guard,
        "before the session middleware (TokenSessionMiddleware)",
        True,
        True,
    ),
    "no authentication": Miswiring(no_authentication, "found no scope['user']", True, False),
    "no session": Miswiring(no_session, "found no session", True, False),
    "mount missing": Miswiring(mount_missing, "not mounted at /mfa", False, True),
    "guard listed twice": Miswiring(guard_listed_twice, "in this app twice", False, True),
    "guard listed and added": Miswiring(guard_listed_and_added, "in this app twice", False, True),
    "FastAPI included and added": Miswiring(
        fastapi_included_and_added, "in this app twice", False, True
    ),
    "guard in a mounted app too": Miswiring(
        guard_in_a_mounted_app_too, "in this app twice", False, True
    ),
}


def guard_listed_last(kit: Kit) -> ASGIApp:
    return starlette(kit, [session(), authentication(), kit.guard.middleware()])


def add_middleware_guard_first(kit: Kit) -> ASGIApp:
    app = starlette(kit, [])
    app.add_middleware(MFAGuardMiddleware, guard=kit.guard)
    app.add_middleware(AuthenticationMiddleware, backend=SessionAuth())
    app.add_middleware(SessionMiddleware, secret_key=SESSION_SECRET)
    return app


def fastapi_included_with_middleware(kit: Kit) -> ASGIApp:
    app = fastapi(kit, middleware=True)
    app.add_middleware(AuthenticationMiddleware, backend=SessionAuth())
    app.add_middleware(SessionMiddleware, secret_key=SESSION_SECRET)
    return app


def fastapi_add_middleware_guard_first(kit: Kit) -> ASGIApp:
    app = fastapi(kit)
    app.add_middleware(MFAGuardMiddleware, guard=kit.guard)
    app.add_middleware(AuthenticationMiddleware, backend=SessionAuth())
    app.add_middleware(SessionMiddleware, secret_key=SESSION_SECRET)
    return app


def fastapi_middleware_list_guard_last(kit: Kit) -> ASGIApp:
    app = FastAPI(middleware=[session(), authentication(), kit.guard.middleware()])
    include_mfa_guard(app, kit.guard)
    for route in app_routes(kit, mount=False):
        app.router.routes.append(route)
    return app


class BannerMiddleware:
    """An app's own middleware that holds the guard (for its enrolment banner): no guard."""

    def __init__(self, app: ASGIApp, *, guard: MFAGuard) -> None:
        self.app = app
        self.guard = guard

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            scope["banner"] = self.guard.enrolment_notice(scope)
        await self.app(scope, receive, send)


def guard_beside_a_middleware_of_the_app_holding_it(kit: Kit) -> ASGIApp:
    banner = Middleware(BannerMiddleware, guard=kit.guard)
    return starlette(kit, [session(), authentication(), banner, kit.guard.middleware(), banner])


RIGHT_WIRINGS = {
    "guard listed last": guard_listed_last,
    "add_middleware, guard first": add_middleware_guard_first,
    "FastAPI include_mfa_guard(middleware=True)": fastapi_included_with_middleware,
    "FastAPI add_middleware, guard first": fastapi_add_middleware_guard_first,
    "FastAPI middleware list, guard last": fastapi_middleware_list_guard_last,
    "beside a middleware of the app holding the guard": (
        guard_beside_a_middleware_of_the_app_holding_it
    ),
}


# -- talking to an app ---------------------------------------------------------------------------


def client(app: ASGIApp) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://testserver")


async def start_up(app: ASGIApp) -> tuple[list[Message], ConfigurationError | None]:
    """Runs the app's lifespan, start-up then shutdown; returns what it sent and its error."""
    incoming: list[Message] = [{"type": "lifespan.startup"}, {"type": "lifespan.shutdown"}]
    sent: list[Message] = []

    async def receive() -> Message:
        return incoming.pop(0)

    async def send(message: Message) -> None:
        sent.append(message)

    scope: Scope = {"type": "lifespan", "asgi": {"version": "3.0"}, "state": {}}
    try:
        await app(scope, receive, send)
    except ConfigurationError as exc:
        return sent, exc
    return sent, None


def refusals(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [
        record.getMessage()
        for record in caplog.records
        if record.name == "mfa_guard" and record.levelno == logging.ERROR
    ]


def assert_names_the_fix(message: str) -> None:
    assert FIX_FOR_SESSION_APPS in message
    assert "guard.middleware()" in message
    assert "include_mfa_guard(app, guard, middleware=True)" in message
    assert FIX_FOR_TOKEN_APPS in message
    assert TOKEN_DOCS in message


def assert_generic_500(response: httpx.Response, *, json_body: bool) -> None:
    assert response.status_code == 500, response.text
    assert "retry-after" not in response.headers
    if json_body:
        assert response.json() == {
            "error": {"code": "internal_error", "message": "Something went wrong on the server."}
        }
    else:
        assert response.text == "Internal Server Error"


# -- wired wrong ---------------------------------------------------------------------------------


@pytest.mark.parametrize("miswiring", list(MISWIRINGS.values()), ids=list(MISWIRINGS))
async def test_a_miswired_app_refuses_an_unverified_user_over_http_closed_and_loudly(
    miswiring: Miswiring, caplog: pytest.LogCaptureFixture
) -> None:
    kit = new_kit()
    await enrolled(kit)
    app = miswiring.build(kit)
    async with client(app) as http:
        page = await http.get("/protected", headers=SIGNED_IN)
        api = await http.get("/api/data", headers=SIGNED_IN | {"accept": "application/json"})
    # Not a 200 as if anonymous, not a redirect to a page that may not exist.
    assert_generic_500(page, json_body=False)
    assert_generic_500(api, json_body=True)
    logged = refusals(caplog)
    assert len(logged) == 2
    assert miswiring.says in logged[0]
    if miswiring.names_the_fix:
        assert_names_the_fix(logged[0])


@pytest.mark.parametrize("miswiring", list(MISWIRINGS.values()), ids=list(MISWIRINGS))
async def test_a_miswired_app_closes_an_unverified_users_websocket_before_accept(
    miswiring: Miswiring, caplog: pytest.LogCaptureFixture
) -> None:
    kit = new_kit()
    await enrolled(kit)
    sent = await open_websocket(miswiring.build(kit), SIGNED_IN)
    assert sent == [{"type": "websocket.close", "code": 1011, "reason": ""}]
    assert miswiring.says in refusals(caplog)[0]


@pytest.mark.parametrize(
    "miswiring",
    [wiring for wiring in MISWIRINGS.values() if wiring.refused_at_start_up],
    ids=[name for name, wiring in MISWIRINGS.items() if wiring.refused_at_start_up],
)
async def test_a_miswiring_the_start_up_can_see_stops_the_app_from_starting(
    miswiring: Miswiring, caplog: pytest.LogCaptureFixture
) -> None:
    sent, error = await start_up(miswiring.build(new_kit()))
    assert error is not None
    assert miswiring.says in error.message
    assert sent == [{"type": "lifespan.startup.failed", "message": error.message}]
    assert refusals(caplog) == [f"mfa_guard is wired wrong, failing closed: {error.message}"]
    if miswiring.names_the_fix:
        assert_names_the_fix(error.message)


def test_uvicorn_does_not_serve_an_app_with_the_guard_added_last() -> None:
    kit = new_kit()
    app = fastapi_add_middleware_in_the_natural_order(kit)
    # lifespan="auto", uvicorn's default, which takes an exception in the lifespan for "no
    # lifespan support" and serves anyway: the failed start-up is what stops it.
    server = uvicorn.Server(uvicorn.Config(app, log_level="critical"))
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    exits: list[object] = []

    def run() -> None:
        try:
            server.run(sockets=[sock])
        except SystemExit as exc:  # uvicorn's exit status for a failed start-up
            exits.append(exc.code)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(timeout=10)
    sock.close()
    assert not thread.is_alive(), "uvicorn kept running"
    assert not server.started
    assert exits in ([], [3])


@pytest.mark.parametrize(
    "miswiring",
    [MISWIRINGS["no authentication"], MISWIRINGS["no session"]],
    ids=["no authentication", "no session"],
)
async def test_what_the_start_up_cannot_see_lets_the_app_start_and_is_refused_per_request(
    miswiring: Miswiring,
) -> None:
    sent, error = await start_up(miswiring.build(new_kit()))
    assert error is None
    assert sent[0] == {"type": "lifespan.startup.complete"}


async def test_without_a_session_the_kits_api_answers_a_generic_500_not_a_503(
    caplog: pytest.LogCaptureFixture,
) -> None:
    kit = new_kit()
    app = no_session(kit)
    async with client(app) as http:
        status = await http.get("/mfa/api/status", headers={"x-user": USER})
        page = await http.get("/mfa/challenge", headers={"x-user": USER})
    # A permanent mistake: not "service unavailable, retry".
    assert_generic_500(status, json_body=True)
    assert_generic_500(page, json_body=False)
    assert all("found no session" in message for message in refusals(caplog))
    assert_names_the_fix(refusals(caplog)[0])


async def test_without_a_session_a_fastapi_app_of_dependencies_answers_a_generic_500() -> None:
    kit = new_kit()
    app = FastAPI(middleware=[Middleware(AuthenticationMiddleware, backend=HeaderAuth())])
    include_mfa_guard(app, kit.guard)
    async with client(app) as http:
        status = await http.get("/mfa/api/status", headers={"x-user": USER})
    assert_generic_500(status, json_body=True)


async def test_a_dependency_of_a_fastapi_app_without_authentication_raises_not_admits() -> None:
    kit = new_kit()
    app = FastAPI(middleware=[session()])  # no AuthenticationMiddleware
    include_mfa_guard(app, kit.guard)

    @app.get("/api/reports", dependencies=[Depends(RequireMFA(kit.guard))])
    async def reports() -> list[str]:
        return ["q3"]

    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as http:
        response = await http.get("/api/reports", headers=SIGNED_IN)
    # Not a 401 "sign in first" for a user the app may well have signed in: a 500.
    assert response.status_code == 500


async def test_anonymous_requests_stay_free_where_no_session_is_needed(
    caplog: pytest.LogCaptureFixture,
) -> None:
    kit = new_kit()
    async with client(no_session(kit)) as http:
        response = await http.get("/protected")
    assert response.status_code == 200
    assert refusals(caplog) == []


async def test_a_miswired_app_refuses_every_request_until_it_is_fixed(
    caplog: pytest.LogCaptureFixture,
) -> None:
    kit = new_kit()
    async with client(add_middleware_in_the_natural_order(kit)) as http:
        for _ in range(3):
            assert (await http.get("/protected")).status_code == 500
            assert (await http.post("/login", data={"user": USER})).status_code == 500
    assert len(refusals(caplog)) == 6


async def test_a_custom_identity_getter_may_refuse_a_request_as_miswired(
    caplog: pytest.LogCaptureFixture,
) -> None:
    def identity(scope: Scope) -> str | None:
        raise ConfigurationError("the app's own check: no tenant in the scope")

    kit = new_kit(identity=identity)
    app = guard_listed_last(kit)
    async with client(app) as http:
        assert_generic_500(await http.get("/protected"), json_body=False)
    assert refusals(caplog) == [
        "mfa_guard is wired wrong, failing closed: the app's own check: no tenant in the scope"
    ]


# -- wired right ---------------------------------------------------------------------------------


@pytest.mark.parametrize("build", list(RIGHT_WIRINGS.values()), ids=list(RIGHT_WIRINGS))
async def test_a_right_wiring_starts_challenges_and_then_lets_the_verified_user_in(
    build: Callable[[Kit], ASGIApp], caplog: pytest.LogCaptureFixture
) -> None:
    kit = new_kit()
    secret = await enrolled(kit)
    app = build(kit)
    sent, error = await start_up(app)
    assert error is None
    assert sent == [{"type": "lifespan.startup.complete"}, {"type": "lifespan.shutdown.complete"}]
    async with client(app) as http:
        assert (await http.get("/protected")).status_code == 200  # anonymous
        assert (await http.post("/login", data={"user": USER})).status_code == 303
        challenged = await http.get("/protected")
        assert challenged.status_code == 303
        assert challenged.headers["location"] == "/mfa/challenge?next=/protected"
        api = await http.get("/api/data", headers={"accept": "application/json"})
        assert api.status_code == 401
        cookie = {"cookie": f"session={http.cookies['session']}"}
        assert (await open_websocket(app, cookie))[0]["code"] == 1008
        verified = await http.post("/mfa/api/verify", json={"code": kit.code(secret)})
        assert verified.status_code == 200, verified.text
        assert (await http.get("/protected")).status_code == 200
        cookie = {"cookie": f"session={http.cookies['session']}"}
        assert (await open_websocket(app, cookie))[0]["type"] == "websocket.accept"
    assert refusals(caplog) == []


# -- the identity --------------------------------------------------------------------------------


@dataclass
class NamedUser:
    """A user class of an app that names its users for display only."""

    display_name: str
    email: str = ""
    is_authenticated: bool = True


class NamedUserAuth(AuthenticationBackend):
    """Signs in ``session["user"]`` as a NamedUser called by the first name of the address."""

    async def authenticate(self, conn: HTTPConnection) -> tuple[AuthCredentials, BaseUser] | None:
        email = conn.session.get("user")
        if not isinstance(email, str):
            return None
        user: Any = NamedUser(display_name=email.split(".")[0].title(), email=email)
        return AuthCredentials(["authenticated"]), user


def named_user_app(kit: Kit) -> Starlette:
    return starlette(
        kit,
        [
            session(),
            Middleware(AuthenticationMiddleware, backend=NamedUserAuth()),
            kit.guard.middleware(),
        ],
    )


async def test_a_user_without_an_identity_is_refused_not_filed_under_its_display_name(
    caplog: pytest.LogCaptureFixture,
) -> None:
    kit = new_kit()
    async with client(named_user_app(kit)) as http:
        assert (await http.get("/protected")).status_code == 200  # anonymous: free
        await http.post("/login", data={"user": "alice.smith@acme.test"})
        assert_generic_500(await http.get("/protected"), json_body=False)
    message = refusals(caplog)[0]
    assert "NamedUser has none of its own" in message
    assert "Give NamedUser an identity property" in message
    assert "MFAGuard(identity=" in message
    assert "alice" not in message.lower()  # the user is not logged, the class is


async def test_two_users_named_alike_keep_their_own_2fa_with_the_identity_getter() -> None:
    kit = new_kit(identity=lambda scope: getattr(scope["user"], "email", None) or None)
    await enrolled(kit, "alice.smith@acme.test")
    app = named_user_app(kit)
    async with client(app) as smith, client(app) as jones:
        await smith.post("/login", data={"user": "alice.smith@acme.test"})
        await jones.post("/login", data={"user": "alice.jones@acme.test"})
        # Both are "Alice": each has her own enrolment, or none.
        assert (await smith.get("/protected")).status_code == 303
        assert (await jones.get("/protected")).status_code == 200


class BaseUserWithoutIdentity(BaseUser):
    @property
    def is_authenticated(self) -> bool:
        return True

    @property
    def display_name(self) -> str:
        return "Alice"


class SimpleUserShowingAName(SimpleUser):
    @property
    def display_name(self) -> str:
        return "Alice"


@dataclass
class EmptyIdentity:
    identity: str = ""
    display_name: str = "Alice"
    is_authenticated: bool = True


@pytest.mark.parametrize(
    ("user", "says"),
    [
        (NamedUser("Alice"), "NamedUser has none of its own"),
        (BaseUserWithoutIdentity(), "BaseUserWithoutIdentity has none of its own"),
        (EmptyIdentity(), "no identity from an authenticated EmptyIdentity"),
    ],
    ids=["no identity", "BaseUser's", "empty"],
)
def test_the_default_identity_never_falls_back_to_the_display_name(user: object, says: str) -> None:
    with pytest.raises(ConfigurationError, match=says):
        user_identity({"type": "http", "user": user})


def test_a_simple_user_showing_another_name_is_known_by_its_username_or_refused() -> None:
    scope: Scope = {"type": "http", "user": SimpleUserShowingAName("alice")}
    if SimpleUser.identity is BaseUser.identity:  # Starlette before SimpleUser.identity
        with pytest.raises(ConfigurationError, match="SimpleUserShowingAName has none"):
            user_identity(scope)
    else:
        assert user_identity(scope) == "alice"


def test_an_anonymous_user_of_a_class_without_identity_is_anonymous() -> None:
    assert user_identity({"type": "http", "user": NamedUser("", is_authenticated=False)}) is None
    assert user_identity({"type": "http", "user": UnauthenticatedUser()}) is None
    assert user_identity({"type": "http", "user": None}) is None


def test_no_user_in_the_scope_is_a_wiring_error_not_an_anonymous_request() -> None:
    with pytest.raises(ConfigurationError, match="found no scope"):
        user_identity({"type": "http"})
