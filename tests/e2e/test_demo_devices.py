"""The demo inbox remembers browsers: tick "Remember this browser" at the challenge, and the next
sign-in in that browser goes straight to the inbox, until the browser is forgotten on the settings
page. Over plain http://, as the demo runs (its device cookie is not ``Secure``)."""

from __future__ import annotations

import os
import re
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from cryptography.fernet import Fernet
from examples.inbox.app import demo_settings

from mfa_guard.devices import DAY
from mfa_guard.testing import FrozenClock
from tests.demo import challenge, csrf_token, running_inbox, sign_in, turn_on_two_factor

COOKIE = "mfa_guard_device"
DEVICE_ID = re.compile(r'data-device="([^"]+)"')


@pytest.fixture(autouse=True)
def _demo_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    # The demo reads MFA_GUARD_* from the environment; these tests use its own defaults.
    for name in os.environ:
        if name.upper().startswith("MFA_GUARD_"):
            monkeypatch.delenv(name)


@pytest.fixture
def clock() -> FrozenClock:
    return FrozenClock()


@pytest.fixture
async def client(tmp_path: Path, clock: FrozenClock) -> AsyncIterator[httpx.AsyncClient]:
    async with running_inbox(tmp_path, clock) as client:
        yield client


def device_cookie(response: httpx.Response) -> str | None:
    for header in response.headers.get_list("set-cookie"):
        if header.startswith(f"{COOKIE}="):
            return header
    return None


async def sign_in_again(client: httpx.AsyncClient) -> httpx.Response:
    """Signs out and in again; the answer of the inbox."""
    assert (await client.post("/logout")).status_code == 303
    assert (await sign_in(client)).status_code == 303
    return await client.get("/inbox")


def test_the_demo_turns_trusted_devices_on_for_plain_http() -> None:
    settings = demo_settings(Fernet.generate_key().decode())
    assert settings.trusted_devices.enabled
    assert not settings.trusted_devices.cookie_secure


def test_the_environment_still_wins(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MFA_GUARD_TRUSTED_DEVICES__ENABLED", "false")
    monkeypatch.setenv("MFA_GUARD_TRUSTED_DEVICES__DAYS", "7")
    settings = demo_settings(Fernet.generate_key().decode())
    assert not settings.trusted_devices.enabled
    assert settings.trusted_devices.days == 7
    assert not settings.trusted_devices.cookie_secure


async def test_remember_sign_in_without_a_code_forget_challenged_again(
    client: httpx.AsyncClient, clock: FrozenClock, tmp_path: Path
) -> None:
    assert (await sign_in(client)).status_code == 303
    secret = await turn_on_two_factor(client, clock)

    # Signed in again: the challenge, with the box ticked.
    assert (await sign_in_again(client)).headers["location"] == "/mfa/challenge?next=/inbox"
    verified = await challenge(client, secret, clock, remember=True)
    assert verified.status_code == 303
    assert verified.headers["location"] == "/inbox"
    set_cookie = device_cookie(verified)
    assert set_cookie is not None
    assert "Secure" not in set_cookie  # the demo's plain http://
    assert "HttpOnly" in set_cookie
    assert f"Max-Age={30 * DAY}" in set_cookie

    # The next sign-in in this browser lands in the inbox, no code asked.
    clock.advance(3600)
    inbox = await sign_in_again(client)
    assert inbox.status_code == 200
    assert "Two-factor authentication is on" in inbox.text

    # The settings page lists it, as this browser; the device table is in the demo's database.
    settings = await client.get("/mfa/settings")
    assert settings.status_code == 200
    [device_id] = DEVICE_ID.findall(settings.text)
    assert '<span class="tag">This browser</span>' in settings.text
    with sqlite3.connect(tmp_path / "inbox.db") as db:
        rows = db.execute("select id from mfa_guard_trusted_devices").fetchall()
    assert rows == [(device_id,)]

    # Forgotten: this session was let in by the browser, so it is asked for a code at once.
    forgotten = await client.post(
        "/mfa/settings/devices/forget",
        data={"csrf_token": csrf_token(settings.text), "device": device_id},
    )
    assert forgotten.status_code == 303
    assert forgotten.headers["location"] == "/mfa/challenge?next=/mfa/settings"

    # And every later sign-in asks for the code again.
    assert (await sign_in_again(client)).headers["location"] == "/mfa/challenge?next=/inbox"
    verified = await challenge(client, secret, clock, remember=False)
    assert verified.status_code == 303
    assert device_cookie(verified) is None
    settings = await client.get("/mfa/settings")
    assert DEVICE_ID.findall(settings.text) == []
    assert 'id="no-remembered-browsers"' in settings.text


async def test_a_remembered_browser_outlives_a_restart(tmp_path: Path, clock: FrozenClock) -> None:
    async with running_inbox(tmp_path, clock) as client:
        assert (await sign_in(client)).status_code == 303
        secret = await turn_on_two_factor(client, clock)
        await sign_in_again(client)
        assert (await challenge(client, secret, clock, remember=True)).status_code == 303
        cookies = httpx.Cookies(client.cookies)
    async with running_inbox(tmp_path, clock) as restarted:
        restarted.cookies = cookies
        assert (await sign_in_again(restarted)).status_code == 200


async def test_forget_on_settings_from_a_code_verified_session(
    client: httpx.AsyncClient, clock: FrozenClock
) -> None:
    assert (await sign_in(client)).status_code == 303
    secret = await turn_on_two_factor(client, clock)
    await sign_in_again(client)
    assert (await challenge(client, secret, clock, remember=True)).status_code == 303
    settings = await client.get("/mfa/settings")
    forgotten = await client.post(
        "/mfa/settings/devices/forget-all", data={"csrf_token": csrf_token(settings.text)}
    )
    assert forgotten.status_code == 200
    assert "Every remembered browser must enter a code again." in forgotten.text
    dropped = device_cookie(forgotten)
    assert dropped is not None
    assert "Max-Age=0" in dropped
    assert (await sign_in_again(client)).headers["location"] == "/mfa/challenge?next=/inbox"
