"""The demo inbox driven as a browser without JavaScript drives it: signed in, 2FA turned on
through the pages, the challenge answered; and the demo started with its sites."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
from examples.inbox import DEMO_PASSWORD, create_app
from starlette.applications import Starlette

from mfa_guard.stores.sites import SitePolicy
from mfa_guard.testing import FrozenClock, current_code

USER = "solo@example.test"
OWNER = "owner@acme.test"
CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')
MANUAL_KEY = re.compile(r'id="manual-key">([^<]+)<')


@asynccontextmanager
async def running_inbox(data_dir: Path, clock: FrozenClock) -> AsyncIterator[httpx.AsyncClient]:
    """The demo app with its lifespan (which closes the store), and a client for it."""
    app = create_app(data_dir, clock=clock)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://testserver"
        ) as client,
    ):
        yield client


def csrf_token(html: str) -> str:
    match = CSRF.search(html)
    assert match is not None, html
    return match.group(1)


async def sign_in(client: httpx.AsyncClient, email: str = USER) -> httpx.Response:
    return await client.post("/login", data={"email": email, "password": DEMO_PASSWORD})


async def turn_on_two_factor(client: httpx.AsyncClient, clock: FrozenClock) -> str:
    """Enrols the signed-in operator through the HTML pages; returns the authenticator key."""
    page = await client.get("/mfa/enrol")
    assert page.status_code == 200
    started = await client.post(
        "/mfa/enrol", data={"csrf_token": csrf_token(page.text), "next": "/inbox"}
    )
    assert started.status_code == 200
    key = MANUAL_KEY.search(started.text)
    assert key is not None, started.text
    secret = key.group(1).replace(" ", "")
    confirmed = await client.post(
        "/mfa/enrol/confirm",
        data={
            "csrf_token": csrf_token(started.text),
            "next": "/inbox",
            "code": current_code(secret, clock()),
        },
    )
    assert confirmed.status_code == 200
    assert 'id="recovery-codes"' in confirmed.text
    return secret


async def answer_challenge(
    client: httpx.AsyncClient, secret: str, clock: FrozenClock
) -> httpx.Response:
    page = await client.get("/mfa/challenge", params={"next": "/inbox"})
    assert page.status_code == 200
    return await client.post(
        "/mfa/challenge",
        data={
            "csrf_token": csrf_token(page.text),
            "next": "/inbox",
            "method": "totp",
            "code": current_code(secret, clock()),
        },
    )


async def challenge(
    client: httpx.AsyncClient, secret: str, clock: FrozenClock, *, remember: bool
) -> httpx.Response:
    """The challenge answered with the next step's code, ticking "Remember this browser" or
    not."""
    clock.advance(30)  # each time step's code is accepted once
    page = await client.get("/mfa/challenge", params={"next": "/inbox"})
    assert page.status_code == 200
    form = {
        "csrf_token": csrf_token(page.text),
        "next": "/inbox",
        "method": "totp",
        "code": current_code(secret, clock()),
    }
    if remember:
        assert "Remember this browser for 30 days" in page.text
        form["remember"] = "1"
    return await client.post("/mfa/challenge", data=form)


@dataclass
class Demo:
    """The demo app, started (its sites seeded); each person gets a browser of their own."""

    app: Starlette
    clock: FrozenClock

    def browser(self) -> httpx.AsyncClient:
        return httpx.AsyncClient(
            transport=httpx.ASGITransport(app=self.app), base_url="http://testserver"
        )

    async def policy(self, site_id: str = "acme") -> SitePolicy:
        site = await self.app.state.sites.site(site_id)
        assert site is not None
        policy: SitePolicy = site.policy
        return policy


@asynccontextmanager
async def running_demo(data_dir: Path, clock: FrozenClock) -> AsyncIterator[Demo]:
    app = create_app(data_dir, clock=clock)
    async with app.router.lifespan_context(app):
        yield Demo(app, clock)


async def owner_with_2fa(demo: Demo, browser: httpx.AsyncClient) -> str:
    """Acme's owner, signed in with 2FA turned on (and so verified) in this session."""
    signed_in = await sign_in(browser, OWNER)
    assert signed_in.status_code == 303, signed_in.text
    return await turn_on_two_factor(browser, demo.clock)


async def post_policy(
    browser: httpx.AsyncClient,
    *,
    enforce: bool,
    grace: str = "now",
    site: str = "acme",
) -> httpx.Response:
    page = await browser.get(f"/sites/{site}/settings")
    assert page.status_code == 200, page.text
    data = {"csrf_token": csrf_token(page.text), "grace": grace}
    if enforce:
        data["enforce"] = "on"
    return await browser.post(f"/sites/{site}/settings", data=data)
