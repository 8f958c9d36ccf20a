"""A minimal Starlette app guarded by mfa_guard, the way an app author wires it; and the demo
inbox (examples.inbox) as the tests run it. Both hash recovery codes (and the demo passwords) at
``mfa_guard.testing.CHEAP_KDF``: the real scrypt cost is what tests/test_core.py checks."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from examples.inbox import create_app
from starlette.applications import Starlette
from starlette.authentication import (
    AuthCredentials,
    AuthenticationBackend,
    BaseUser,
    SimpleUser,
)
from starlette.middleware import Middleware
from starlette.middleware.authentication import AuthenticationMiddleware
from starlette.middleware.sessions import SessionMiddleware
from starlette.requests import HTTPConnection, Request
from starlette.responses import JSONResponse, PlainTextResponse, RedirectResponse, Response
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket

from mfa_guard import (
    AuditEvent,
    LoggingEventSink,
    MemoryEventSink,
    MemoryStore,
    Metrics,
    MFAGuard,
    MFAGuardSettings,
    MFAStore,
)
from mfa_guard.clock import Clock
from mfa_guard.core.recovery import RecoveryCodeSet, ScryptCost
from mfa_guard.identity import SignOutFields
from mfa_guard.notifications import Notifier, NotifyingSink
from mfa_guard.services import new_authenticator_id
from mfa_guard.sms import SMSProvider
from mfa_guard.stores.base import Authenticator, FactorKind
from mfa_guard.stores.devices import DeviceStore, MemoryDeviceStore
from mfa_guard.stores.events import EventStore
from mfa_guard.stores.sites import SiteDirectory
from mfa_guard.testing import CHEAP_KDF, FrozenClock, current_code
from mfa_guard.web.i18n import LanguageGetter

ENCRYPTION_KEY = "q7oE0cIh2wXzMcvT3Y0u1tYy1u6W0cG3mZ3t0q3bZ1E="
SESSION_SECRET = "test-session-secret"


def settings_for(**overrides: Any) -> MFAGuardSettings:
    values: dict[str, Any] = {"encryption_keys": [ENCRYPTION_KEY], "issuer": "Acme Inbox"}
    values.update(overrides)
    return MFAGuardSettings(_env_file=None, **values)


class SessionAuth(AuthenticationBackend):
    async def authenticate(self, conn: HTTPConnection) -> tuple[AuthCredentials, BaseUser] | None:
        user = conn.session.get("user")
        if not isinstance(user, str):
            return None
        return AuthCredentials(["authenticated"]), SimpleUser(user)


async def login(request: Request) -> Response:
    form = await request.form()
    request.session.clear()  # a new sign-in starts a new session
    request.session["user"] = str(form["user"])
    return RedirectResponse("/", status_code=303)


async def logout(request: Request) -> Response:
    request.session.clear()
    return RedirectResponse("/", status_code=303)


async def home(request: Request) -> Response:
    return PlainTextResponse(f"home of {request.user.display_name or 'anonymous'}")


async def protected(request: Request) -> Response:
    return PlainTextResponse("protected content")


async def api_data(request: Request) -> Response:
    return JSONResponse({"data": 42})


async def websocket_echo(websocket: WebSocket) -> None:
    await websocket.accept()
    await websocket.send_text("hello")
    await websocket.close()


class RecordingSink(MemoryEventSink):
    """Keeps the events for assertions and logs them as the default sink does."""

    async def emit(self, event: AuditEvent) -> None:
        await super().emit(event)
        await LoggingEventSink().emit(event)


@dataclass
class GuardedApp:
    app: Starlette
    guard: MFAGuard
    store: MFAStore
    clock: FrozenClock
    events: MemoryEventSink

    def client(self, **kwargs: Any) -> httpx.AsyncClient:
        kwargs.setdefault("base_url", "http://testserver")
        return httpx.AsyncClient(
            transport=httpx.ASGITransport(app=self.app, client=("203.0.113.7", 4000)),
            **kwargs,
        )

    def code(self, secret: str, steps: int = 0) -> str:
        settings = self.guard.settings
        return current_code(
            secret,
            self.clock(),
            digits=settings.totp.digits,
            period=settings.totp.period,
            steps=steps,
        )


def build_app(
    store: MFAStore | None = None,
    *,
    template_directory: Path | None = None,
    sms_provider: SMSProvider | None = None,
    sites: SiteDirectory | None = None,
    notifier: Notifier | None = None,
    devices: DeviceStore | None = None,
    sign_out_fields: SignOutFields | None = None,
    recovery_kdf: ScryptCost = CHEAP_KDF,
    event_store: EventStore | None = None,
    metrics: Metrics | None = None,
    language: LanguageGetter | None = None,
    **overrides: Any,
) -> GuardedApp:
    settings = settings_for(**overrides)
    clock = FrozenClock()
    events = RecordingSink()
    store = store if store is not None else MemoryStore()
    guard = MFAGuard(
        settings=settings,
        store=store,
        events=events if notifier is None else NotifyingSink(events, notifier),
        clock=clock,
        template_directory=template_directory,
        sms=sms_provider,
        sites=sites,
        # Used only with trusted_devices={"enabled": True}.
        devices=devices if devices is not None else MemoryDeviceStore(),
        sign_out_fields=sign_out_fields,
        recovery_kdf=recovery_kdf,
        event_store=event_store,
        metrics=metrics,
        language=language,
    )

    async def banner(request: Request) -> Response:
        notice = guard.enrolment_notice(request.scope)
        if notice is None:
            return JSONResponse(None)
        return JSONResponse(
            {"deadline": notice.deadline, "overdue": notice.overdue, "text": notice.text}
        )

    app = Starlette(
        routes=[
            Route("/", home),
            Route("/banner", banner),
            Route("/login", login, methods=["POST"]),
            Route("/logout", logout, methods=["POST"]),
            Route("/protected", protected),
            Route("/api/data", api_data, methods=["GET", "POST"]),
            WebSocketRoute("/ws", websocket_echo),
            guard.mount(),
        ],
        middleware=[
            Middleware(SessionMiddleware, secret_key=SESSION_SECRET),
            Middleware(AuthenticationMiddleware, backend=SessionAuth()),
            guard.middleware(),
        ],
    )
    return GuardedApp(app=app, guard=guard, store=store, clock=clock, events=events)


async def sign_in(client: httpx.AsyncClient, user: str = "solo@example.test") -> None:
    response = await client.post("/login", data={"user": user})
    assert response.status_code == 303


async def enrol(ga: GuardedApp, client: httpx.AsyncClient) -> tuple[str, list[str]]:
    """Enrols the signed-in user over the JSON API; returns the secret and recovery codes."""
    setup = await client.post("/mfa/api/totp/setup", json={})
    assert setup.status_code == 200, setup.text
    secret = setup.json()["secret"]
    confirm = await client.post("/mfa/api/totp/confirm", json={"code": ga.code(secret)})
    assert confirm.status_code == 200, confirm.text
    return secret, confirm.json()["recovery_codes"]


def demo_inbox(data_dir: Path, *, clock: Clock | None = None) -> Starlette:
    """The demo inbox in ``data_dir``, its passwords and recovery codes hashed cheaply."""
    return create_app(data_dir, clock=clock, password_kdf=CHEAP_KDF, recovery_kdf=CHEAP_KDF)


async def store_app(
    store: MFAStore,
    user_id: str,
    token: str,
    *,
    step: int,
    recovery: RecoveryCodeSet,
    now: float,
    name: str = "Authenticator app",
) -> int | None:
    """Writes an authenticator app (its secret already encrypted: ``token``) straight into
    ``store`` as the user's first factor, with ``step`` as its last accepted time step: what a
    confirmed set-up stores, without drawing a QR code and hashing recovery codes each time."""
    app = Authenticator(
        id=new_authenticator_id(),
        kind=FactorKind.TOTP,
        name=name,
        created_at=now,
        secret=token,
        last_step=step,
    )
    return await store.add_authenticator(user_id, app, now=now, recovery=recovery)
