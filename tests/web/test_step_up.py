"""Step-up: a route that demands a second factor verified within the last few minutes."""

from __future__ import annotations

import httpx
import pytest
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.authentication import AuthenticationMiddleware
from starlette.middleware.sessions import SessionMiddleware
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route

from mfa_guard import ConfigurationError, MemoryStore, MFAGuard
from mfa_guard.stepup import require_recent_mfa
from mfa_guard.testing import FrozenClock, current_code
from tests.apps import SESSION_SECRET, SessionAuth, login, logout, settings_for

MAX_AGE = 300


class StepUpApp:
    def __init__(self) -> None:
        self.clock = FrozenClock()
        self.guard = MFAGuard(settings=settings_for(), store=MemoryStore(), clock=self.clock)

        @require_recent_mfa(self.guard, max_age=MAX_AGE)
        async def close_account(request: Request) -> Response:
            return PlainTextResponse(f"closing {request.method}")

        self.app = Starlette(
            routes=[
                Route("/login", login, methods=["POST"]),
                Route("/logout", logout, methods=["POST"]),
                Route("/account/close", close_account, methods=["GET", "POST"]),
                Route("/api/account/close", close_account, methods=["POST"]),
                self.guard.mount(),
            ],
            middleware=[
                Middleware(SessionMiddleware, secret_key=SESSION_SECRET),
                Middleware(AuthenticationMiddleware, backend=SessionAuth()),
                self.guard.middleware(),
            ],
        )

    def client(self) -> httpx.AsyncClient:
        return httpx.AsyncClient(
            transport=httpx.ASGITransport(app=self.app), base_url="http://testserver"
        )

    def code(self, secret: str) -> str:
        return current_code(secret, self.clock())


async def enrolled(app: StepUpApp, client: httpx.AsyncClient) -> str:
    await client.post("/login", data={"user": "owner@acme.test"})
    secret = str((await client.post("/mfa/api/totp/setup", json={})).json()["secret"])
    confirmed = await client.post("/mfa/api/totp/confirm", json={"code": app.code(secret)})
    assert confirmed.status_code == 200
    return secret


async def test_a_recent_verification_opens_the_route_and_an_older_one_steps_up() -> None:
    app = StepUpApp()
    async with app.client() as client:
        secret = await enrolled(app, client)
        assert (await client.get("/account/close")).text == "closing GET"
        app.clock.advance(MAX_AGE)
        assert (await client.post("/api/account/close")).text == "closing POST"
        app.clock.advance(1)
        page = await client.get("/account/close?confirm=1")
        assert page.status_code == 303
        assert page.headers["location"] == "/mfa/challenge?next=/account/close%3Fconfirm%3D1"
        api = await client.post("/api/account/close")
        assert api.status_code == 401
        assert api.json()["error"]["code"] == "mfa_reauthentication_required"
        # The middleware still lets the session through elsewhere: it is verified, not recent.
        verified = await client.post("/mfa/api/verify", json={"code": app.code(secret)})
        assert verified.status_code == 200
        assert (await client.post("/api/account/close")).text == "closing POST"


async def test_a_user_without_2fa_is_sent_to_enrolment_and_a_stranger_to_sign_in() -> None:
    app = StepUpApp()
    async with app.client() as client:
        anonymous = await client.get("/account/close")
        assert (anonymous.status_code, anonymous.headers["location"]) == (303, "/")
        api = await client.post("/api/account/close")
        assert (api.status_code, api.json()["error"]["code"]) == (401, "not_authenticated")
        await client.post("/login", data={"user": "agent@acme.test"})
        page = await client.get("/account/close")
        assert page.headers["location"] == "/mfa/enrol?next=/account/close"
        api = await client.post("/api/account/close")
        assert (api.status_code, api.json()["error"]["code"]) == (403, "mfa_enrolment_required")


def test_max_age_must_fit_in_the_verified_lifetime() -> None:
    guard = MFAGuard(settings=settings_for(), store=MemoryStore())
    for bad in (0, -5, guard.settings.verified_lifetime_seconds + 1):
        with pytest.raises(ConfigurationError, match="max_age"):
            require_recent_mfa(guard, max_age=bad)
