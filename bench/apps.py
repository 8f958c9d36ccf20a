"""The app under test, the way an app author wires it, and how the suite talks to it.

One Starlette app — SessionMiddleware, AuthenticationMiddleware, a few routes — in three
variants: bare, with a do-nothing pure-ASGI middleware (the floor any middleware costs), and
with ``guard.middleware()`` and ``guard.mount()``. Requests are raw ASGI calls: a scope dict,
a ``receive`` that returns the (empty) body and a ``send`` that keeps the status.
"""

from __future__ import annotations

import base64
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from enum import StrEnum
from time import thread_time
from typing import Any

import httpx
from itsdangerous import TimestampSigner
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from starlette.applications import Starlette
from starlette.authentication import AuthCredentials, AuthenticationBackend, BaseUser, SimpleUser
from starlette.middleware import Middleware
from starlette.middleware.authentication import AuthenticationMiddleware
from starlette.middleware.sessions import SessionMiddleware
from starlette.requests import HTTPConnection, Request
from starlette.responses import PlainTextResponse, RedirectResponse, Response
from starlette.routing import BaseRoute, Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from mfa_guard import (
    MemoryStore,
    Metrics,
    MFAGuard,
    MFAGuardSettings,
    MFAStore,
    OpenTelemetryMetrics,
)
from mfa_guard.core.marker import Marker, new_nonce
from mfa_guard.stores.sites import SiteDirectory
from mfa_guard.testing import CountingSiteDirectory, CountingStore, FrozenClock, current_code

# Fixed keys: a cookie made in one process is valid in the servers the suite starts.
ENCRYPTION_KEY = "dcBDoH527GucUHC_EeDwGCL_CILjT7xEML4Oid03-Sk="
SESSION_SECRET = "mfa-guard-bench-session-secret"  # noqa: S105 (a benchmark's own key)
# The frozen time every guard of the suite runs at: markers never go stale during a run.
FROZEN_NOW = 1_800_000_000.0
HOST = "testserver"


class Variant(StrEnum):
    BARE = "bare"
    FLOOR = "floor"
    GUARDED = "guarded"


class SessionAuth(AuthenticationBackend):
    """The first factor's result: ``session["user"]``, set by the sign-in route."""

    async def authenticate(self, conn: HTTPConnection) -> tuple[AuthCredentials, BaseUser] | None:
        user = conn.session.get("user")
        if not isinstance(user, str):
            return None
        return AuthCredentials(["authenticated"]), SimpleUser(user)


class PassThrough:
    """A do-nothing pure-ASGI middleware: what merely being a middleware costs."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self.app(scope, receive, send)


async def home(request: Request) -> Response:
    return PlainTextResponse("inbox")


async def health(request: Request) -> Response:
    return PlainTextResponse("ok")


async def login(request: Request) -> Response:
    form = await request.form()
    request.session.clear()
    request.session["user"] = str(form["user"])
    return RedirectResponse("/", status_code=303)


def settings_for(**overrides: Any) -> MFAGuardSettings:
    values: dict[str, Any] = {"encryption_keys": [ENCRYPTION_KEY], "issuer": "Bench Inbox"}
    values.update(overrides)
    return MFAGuardSettings(_env_file=None, **values)


@dataclass
class BenchApp:
    app: Starlette
    variant: Variant
    clock: FrozenClock
    guard: MFAGuard | None = None
    store: CountingStore | None = None
    sites: CountingSiteDirectory | None = None

    def the_guard(self) -> MFAGuard:
        if self.guard is None:
            raise RuntimeError(f"the {self.variant} app has no guard")
        return self.guard

    def the_store(self) -> CountingStore:
        if self.store is None:
            raise RuntimeError(f"the {self.variant} app has no store")
        return self.store

    def the_sites(self) -> CountingSiteDirectory:
        if self.sites is None:
            raise RuntimeError(f"the {self.variant} app has no site directory")
        return self.sites

    def client(self) -> httpx.AsyncClient:
        return httpx.AsyncClient(
            transport=httpx.ASGITransport(app=self.app, client=("203.0.113.7", 4000)),
            base_url=f"http://{HOST}",
        )


def build(
    variant: Variant,
    *,
    store: MFAStore | None = None,
    sites: SiteDirectory | None = None,
    metrics: Metrics | None = None,
    **overrides: Any,
) -> BenchApp:
    """The same app in each variant; a guarded one counts its store (and directory) calls,
    and reports to ``metrics`` if given."""
    clock = FrozenClock(FROZEN_NOW)
    routes: list[BaseRoute] = [
        Route("/", home),
        Route("/health", health),
        Route("/login", login, methods=["POST"]),
    ]
    middleware = [
        Middleware(SessionMiddleware, secret_key=SESSION_SECRET),
        Middleware(AuthenticationMiddleware, backend=SessionAuth()),
    ]
    if variant is Variant.FLOOR:
        middleware.append(Middleware(PassThrough))
    if variant is not Variant.GUARDED:
        return BenchApp(Starlette(routes=routes, middleware=middleware), variant, clock)
    counting = CountingStore(store if store is not None else MemoryStore())
    directory = None if sites is None else CountingSiteDirectory(sites)
    # The guard reads the clock through the bound method: a plain call, as the production
    # clock (a function) is, not an instance call through ``type(clock).__call__``, which costs
    # the hot path 0.2 % more than what it measures.
    guard = MFAGuard(
        settings=settings_for(**overrides),
        store=counting,
        clock=clock.__call__,
        sites=directory,
        metrics=metrics,
    )
    app = Starlette(routes=[*routes, guard.mount()], middleware=[*middleware, guard.middleware()])
    return BenchApp(app, variant, clock, guard, counting, directory)


def recorded_metrics() -> tuple[OpenTelemetryMetrics, InMemoryMetricReader]:
    """The kit's metrics recorded by the OpenTelemetry SDK, as in an app that exports them
    (the export runs apart, on the reader's schedule: an in-memory reader here), and the
    reader."""
    reader = InMemoryMetricReader()
    provider = MeterProvider(metric_readers=[reader], shutdown_on_exit=False)
    return OpenTelemetryMetrics(provider), reader


def recorded_points(reader: InMemoryMetricReader) -> int:
    """How many data points (a counter's or a histogram's, by attributes) ``reader`` holds."""
    data = reader.get_metrics_data()
    if data is None:
        return 0
    return sum(
        len(metric.data.data_points)
        for resource in data.resource_metrics
        for scope in resource.scope_metrics
        for metric in scope.metrics
    )


# -- sessions ------------------------------------------------------------------------------


def sign_session(data: dict[str, Any]) -> str:
    """A session cookie as Starlette's SessionMiddleware writes it (signed, not encrypted)."""
    payload = base64.b64encode(json.dumps(data).encode("utf-8"))
    return TimestampSigner(SESSION_SECRET).sign(payload).decode("ascii")


def read_session(cookie: str) -> dict[str, Any]:
    payload = TimestampSigner(SESSION_SECRET).unsign(cookie.encode("ascii"))
    data: dict[str, Any] = json.loads(base64.b64decode(payload))
    return data


def verified_session(
    guard: MFAGuard, user_id: str, *, epoch: int, enrol_by: float | None = None
) -> dict[str, Any]:
    """What a session holds after ``user_id`` completed 2FA now (forged, not earned);
    ``enrol_by``: the enforcement deadline of the user's sites."""
    now = guard.clock()
    marker = Marker(
        subject=guard.gate.subject(user_id),
        nonce=new_nonce(),
        checked_at=now,
        epoch=epoch,
        enrolled=True,
        verified_at=now,
        method="totp",
        enrol_by=enrol_by,
    )
    return {"user": user_id, "mfa_guard": marker.dump()}


async def enrol(client: httpx.AsyncClient, bench: BenchApp, user_id: str) -> str:
    """Signs ``user_id`` in and enrols them through the JSON API, as a user would: the
    client's session is then verified. Returns the TOTP secret."""
    signed_in = await client.post("/login", data={"user": user_id})
    expect(signed_in.status_code == 303, f"sign-in answered {signed_in.status_code}")
    setup = await client.post("/mfa/api/totp/setup", json={})
    expect(setup.status_code == 200, f"setup answered {setup.status_code}: {setup.text}")
    secret = str(setup.json()["secret"])
    code = current_code(secret, bench.clock())
    confirm = await client.post("/mfa/api/totp/confirm", json={"code": code})
    expect(confirm.status_code == 200, f"confirm answered {confirm.status_code}")
    return secret


async def enrolled_session(bench: BenchApp, user_id: str) -> tuple[str, str]:
    """A verified session earned through the API: its cookie and the TOTP secret."""
    async with bench.client() as client:
        secret = await enrol(client, bench, user_id)
        return str(client.cookies["session"]), secret


async def settled_cookie(bench: BenchApp, cookie: str) -> str:
    """The cookie a browser holds after one request through the guard: its marker written."""
    response = await exchange(bench.app, scope_for("/", cookie))
    expect(response.status == 200, f"the first request answered {response.status}")
    return response.cookie or cookie


def csrf_token_in(html: str) -> str:
    found = re.search(r'name="csrf_token" value="([^"]+)"', html)
    expect(found is not None, "the page carries no CSRF token")
    assert found is not None
    return found.group(1)


# -- raw ASGI ------------------------------------------------------------------------------


def scope_for(path: str, cookie: str | None, *, accept: bytes = b"text/html") -> Scope:
    """The scope of a browser navigation to ``path``, with the session cookie if any."""
    headers = [(b"host", HOST.encode("ascii")), (b"accept", accept)]
    if cookie is not None:
        headers.append((b"cookie", f"session={cookie}".encode("ascii")))
    return {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.3"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode("ascii"),
        "root_path": "",
        "query_string": b"",
        "headers": headers,
        "client": ("203.0.113.7", 4000),
        "server": (HOST, 80),
    }


async def receive() -> Message:
    return {"type": "http.request", "body": b"", "more_body": False}


class Status:
    """The ``send`` side of a timed call: keeps only the status."""

    __slots__ = ("code",)

    def __init__(self) -> None:
        self.code = 0

    async def send(self, message: Message) -> None:
        if message["type"] == "http.response.start":
            self.code = message["status"]


async def timed_batch(app: ASGIApp, scopes: Iterator[Scope], count: int, status: int) -> float:
    """CPU seconds of this thread for ``count`` requests, each on a fresh copy of the next
    scope. CPU time, not wall time: other processes on the machine do not count."""
    started = thread_time()
    for _ in range(count):
        sink = Status()
        await app(dict(next(scopes)), receive, sink.send)
        if sink.code != status:
            raise RuntimeError(f"a timed request answered {sink.code}, not {status}")
    return thread_time() - started


@dataclass(frozen=True, slots=True)
class Exchange:
    status: int
    cookie: str | None
    body: bytes


async def exchange(app: ASGIApp, scope: Scope) -> Exchange:
    """One untimed request, keeping the status, the new session cookie and the body."""
    messages: list[Message] = []

    async def send(message: Message) -> None:
        messages.append(message)

    await app(dict(scope), receive, send)
    start = next(m for m in messages if m["type"] == "http.response.start")
    cookie = None
    for name, value in start.get("headers", []):
        if name.lower() == b"set-cookie" and value.startswith(b"session="):
            cookie = value.split(b";", 1)[0].removeprefix(b"session=").decode("ascii")
    body = b"".join(m.get("body", b"") for m in messages if m["type"] == "http.response.body")
    return Exchange(start["status"], cookie, body)


class BenchError(RuntimeError):
    """The suite could not set a figure up (not a missed budget)."""


def expect(condition: bool, message: str) -> None:
    if not condition:
        raise BenchError(message)
