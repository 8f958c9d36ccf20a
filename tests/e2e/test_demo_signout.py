"""Signing out of the demo signs out every copy of the cookie, told as a laptop whose session
cookie was copied: the laptop signs out, and the copy is a stranger again, while the user's phone
stays signed in and the laptop, remembered, signs in again without a code. On SQLite and on
PostgreSQL, where the demo keeps its sign-ins."""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path

import httpx
import pytest
from examples.inbox import create_app
from examples.inbox.app import SESSION_MAX_AGE
from sqlalchemy import exc as sa_exc
from sqlalchemy import text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import create_async_engine
from starlette.applications import Starlette

from mfa_guard.testing import FrozenClock
from tests.databases import POSTGRES_URL
from tests.demo import USER, challenge, sign_in, turn_on_two_factor

SIGNED_OUT = "/login?next=/inbox"
CHALLENGE = "/mfa/challenge?next=/inbox"


async def _postgres(statement: str) -> None:
    # CREATE and DROP DATABASE cannot run inside a transaction.
    engine = create_async_engine(
        POSTGRES_URL, isolation_level="AUTOCOMMIT", connect_args={"timeout": 5}
    )
    try:
        async with engine.connect() as conn:
            await conn.execute(text(statement))
    finally:
        await engine.dispose()


@pytest.fixture(autouse=True)
def _demo_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    # The demo reads MFA_GUARD_* from the environment; these tests use its own defaults.
    for name in os.environ:
        if name.upper().startswith("MFA_GUARD_"):
            monkeypatch.delenv(name)


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def database(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """The demo's SQLite file, or a fresh PostgreSQL database named by MFA_GUARD_DATABASE_URL
    (as a deployment's workers share it), made here, outside the event loop."""
    if request.param == "sqlite":
        yield "sqlite"
        return
    name = f"mfa_guard_signout_{uuid.uuid4().hex[:12]}"
    try:
        asyncio.run(_postgres(f"CREATE DATABASE {name}"))
    except (OSError, sa_exc.DBAPIError) as exc:
        reason = f"PostgreSQL is unreachable: {type(exc).__name__}: {exc}"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"{reason} (CI=true: the PostgreSQL tests must run)")
        pytest.skip(f"{reason} (start it or set MFA_GUARD_TEST_POSTGRES_URL)")
    url = make_url(POSTGRES_URL).set(database=name)
    monkeypatch.setenv("MFA_GUARD_DATABASE_URL", url.render_as_string(hide_password=False))
    yield name
    asyncio.run(_postgres(f"DROP DATABASE {name} WITH (FORCE)"))


@pytest.fixture
def clock() -> FrozenClock:
    return FrozenClock()


@asynccontextmanager
async def running(app: Starlette) -> AsyncIterator[Starlette]:
    async with app.router.lifespan_context(app):
        yield app


def browser(app: Starlette) -> httpx.AsyncClient:
    """One browser: a cookie jar of its own."""
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://testserver")


async def pass_challenge(
    client: httpx.AsyncClient, secret: str, clock: FrozenClock, *, remember: bool
) -> None:
    verified = await challenge(client, secret, clock, remember=remember)
    assert verified.status_code == 303
    assert verified.headers["location"] == "/inbox"


async def assert_signed_out(client: httpx.AsyncClient) -> None:
    """A stranger: the sign-in page for the inbox, not the inbox, not the challenge."""
    inbox = await client.get("/inbox")
    assert inbox.status_code == 303
    assert inbox.headers["location"] == SIGNED_OUT
    status = await client.get("/mfa/api/status")
    assert status.status_code == 401
    assert status.json()["error"]["code"] == "not_authenticated"
    assert (await client.get("/mfa/challenge", params={"next": "/inbox"})).status_code != 200
    assert (await client.get("/outbox")).status_code == 401


async def assert_in_the_inbox(client: httpx.AsyncClient) -> None:
    inbox = await client.get("/inbox")
    assert inbox.status_code == 200, inbox.headers.get("location")
    assert "Two-factor authentication is on" in inbox.text


async def test_signing_out_signs_out_a_copy_of_the_cookie_and_nothing_else(
    database: str, tmp_path: Path, clock: FrozenClock
) -> None:
    app = create_app(tmp_path / "data", clock=clock)
    async with (
        running(app),
        browser(app) as laptop,
        browser(app) as phone,
        browser(app) as thief,
    ):
        # The laptop turns 2FA on, signs in again with a code and has the browser remembered.
        assert (await sign_in(laptop)).status_code == 303
        secret = await turn_on_two_factor(laptop, clock)
        assert (await laptop.post("/logout")).status_code == 303
        assert (await sign_in(laptop)).status_code == 303
        assert (await laptop.get("/inbox")).headers["location"] == CHALLENGE
        await pass_challenge(laptop, secret, clock, remember=True)
        await assert_in_the_inbox(laptop)

        # The phone signs in on its own, with a code.
        assert (await sign_in(phone)).status_code == 303
        await pass_challenge(phone, secret, clock, remember=False)
        await assert_in_the_inbox(phone)

        # Every cookie of the laptop is copied (the session's and the remembered browser's):
        # the copy is in the inbox, verified, as the laptop is.
        thief.cookies.update(laptop.cookies)
        await assert_in_the_inbox(thief)

        signed_out = await laptop.post("/logout")
        assert signed_out.status_code == 303
        assert signed_out.headers["location"] == "/login"
        await assert_signed_out(laptop)

        # The copy is signed out with it, first factor and all; the phone is not.
        await assert_signed_out(thief)
        await assert_in_the_inbox(phone)

        # The laptop is still remembered: signed in again, no code asked.
        clock.advance(3600)
        assert (await sign_in(laptop)).status_code == 303
        await assert_in_the_inbox(laptop)
        # The copy stays out: the laptop's new sign-in is not the one it copied.
        await assert_signed_out(thief)


async def test_a_sign_in_ends_on_the_server_after_the_session_lifetime(
    database: str, tmp_path: Path, clock: FrozenClock
) -> None:
    app = create_app(tmp_path / "data", clock=clock)
    async with running(app), browser(app) as laptop:
        assert (await sign_in(laptop)).status_code == 303
        clock.advance(SESSION_MAX_AGE - 1)
        assert (await laptop.get("/inbox")).status_code == 200
        # The cookie is renewed on every answer; the sign-in is not.
        clock.advance(1)
        await assert_signed_out(laptop)


async def test_sign_ins_that_cannot_be_read_let_no_cookie_in(
    tmp_path: Path, clock: FrozenClock
) -> None:
    app = create_app(tmp_path / "data", clock=clock)
    async with running(app), browser(app) as laptop, browser(app) as stranger:
        assert (await sign_in(laptop)).status_code == 303
        assert (await laptop.get("/inbox")).status_code == 200
        # The database stops answering: its file cannot be opened (a folder stands in its way).
        engine = app.state.store.engine
        database = tmp_path / "data" / "inbox.db"
        aside = tmp_path / "inbox.db.aside"
        await engine.dispose()
        database.rename(aside)
        database.mkdir()
        try:
            for path in ("/inbox", "/mfa/settings", "/mfa/api/status", "/outbox"):
                refused = await laptop.get(path)
                assert refused.status_code == 503, path
                assert refused.headers["retry-after"] == "5"
            # Signing out cannot be done, and does not pretend to be.
            assert (await laptop.post("/logout")).status_code == 503
            # Nobody signs in meanwhile; a stranger still reads the sign-in page.
            assert (await stranger.get("/login")).status_code == 200
            assert (await sign_in(stranger)).status_code == 503
        finally:
            await engine.dispose()
            database.rmdir()
            aside.rename(database)
        # Back: the laptop's sign-in is still there.
        assert (await laptop.get("/inbox")).status_code == 200
        assert (await sign_in(stranger, USER)).status_code == 303
