"""The demo inbox, told as an operator's story: sign in, turn on 2FA, sign in again with a code."""

from __future__ import annotations

import os
import re
import stat
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest
from examples.inbox import DEMO_PASSWORD
from examples.inbox.app import demo_settings

from mfa_guard.testing import FrozenClock, current_code
from tests.apps import demo_inbox
from tests.demo import (
    MANUAL_KEY,
    USER,
    answer_challenge,
    csrf_token,
    running_inbox,
    sign_in,
    turn_on_two_factor,
)
from tests.live import served

PHONE = "+33 6 12 34 56 78"
TEXTED_CODE = re.compile(r"\b(\d{6}) is your ")


@pytest.fixture(autouse=True)
def _demo_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    # The demo reads MFA_GUARD_* from the environment; these tests use its own defaults.
    for name in ("MFA_GUARD_ENCRYPTION_KEYS", "MFA_GUARD_ISSUER", "MFA_GUARD_DATABASE_URL"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.delenv("MFA_GUARD_EXEMPT_PATHS", raising=False)
    for name in os.environ:
        if name.upper().startswith("MFA_GUARD_SMS__"):
            monkeypatch.delenv(name)


@pytest.fixture
def clock() -> FrozenClock:
    return FrozenClock()


@pytest.fixture
async def client(tmp_path: Path, clock: FrozenClock) -> AsyncIterator[httpx.AsyncClient]:
    async with running_inbox(tmp_path, clock) as client:
        yield client


async def test_operator_turns_on_two_factor_and_signs_in_with_a_code(
    client: httpx.AsyncClient, clock: FrozenClock
) -> None:
    signed_in = await sign_in(client)
    assert signed_in.status_code == 303
    assert signed_in.headers["location"] == "/inbox"
    inbox = await client.get("/inbox")
    assert inbox.status_code == 200
    assert "Two-factor authentication is off" in inbox.text
    assert 'href="/mfa/settings"' in inbox.text

    secret = await turn_on_two_factor(client, clock)
    inbox = await client.get("/inbox")
    assert inbox.status_code == 200
    assert "Two-factor authentication is on" in inbox.text

    signed_out = await client.post("/logout")
    assert signed_out.status_code == 303
    assert signed_out.headers["location"] == "/login"
    assert (await client.get("/inbox")).headers["location"] == "/login?next=/inbox"

    assert (await sign_in(client)).status_code == 303
    challenged = await client.get("/inbox")
    assert challenged.status_code == 303
    assert challenged.headers["location"] == "/mfa/challenge?next=/inbox"

    clock.advance(30)  # the enrolment used this time step; each step is accepted once
    verified = await answer_challenge(client, secret, clock)
    assert verified.status_code == 303
    assert verified.headers["location"] == "/inbox"
    assert (await client.get("/inbox")).status_code == 200


async def test_a_used_code_does_not_pass_the_challenge_again(
    client: httpx.AsyncClient, clock: FrozenClock
) -> None:
    await sign_in(client)
    secret = await turn_on_two_factor(client, clock)
    await client.post("/logout")
    await sign_in(client)

    replayed = await answer_challenge(client, secret, clock)

    assert replayed.status_code == 422
    assert (await client.get("/inbox")).status_code == 303


@pytest.mark.parametrize(
    ("email", "password"),
    [
        pytest.param(USER, "not-demo", id="wrong-password"),
        pytest.param("nobody@acme.test", DEMO_PASSWORD, id="unknown-account"),
        pytest.param(USER, "", id="empty-password"),
        pytest.param(USER, "x" * 5000, id="huge-password"),
    ],
)
async def test_wrong_credentials_show_the_form_again(
    client: httpx.AsyncClient, email: str, password: str
) -> None:
    response = await client.post("/login", data={"email": email, "password": password})

    assert response.status_code == 400
    assert "Wrong e-mail address or password." in response.text
    assert 'autocomplete="current-password"' in response.text
    assert (await client.get("/inbox")).headers["location"] == "/login?next=/inbox"


async def test_sign_in_is_case_insensitive_on_the_address(client: httpx.AsyncClient) -> None:
    assert (await sign_in(client, "  Solo@Example.TEST ")).status_code == 303
    assert (await client.get("/inbox")).status_code == 200


@pytest.mark.parametrize(
    ("next_path", "lands_on"),
    [
        pytest.param("/mfa/settings", "/mfa/settings", id="local-path"),
        pytest.param("//evil.test", "/inbox", id="protocol-relative"),
        pytest.param("https://evil.test/", "/inbox", id="absolute-url"),
        pytest.param("/\\evil.test", "/inbox", id="backslash"),
    ],
)
async def test_sign_in_follows_only_a_local_next(
    client: httpx.AsyncClient, next_path: str, lands_on: str
) -> None:
    response = await client.post(
        "/login", data={"email": USER, "password": DEMO_PASSWORD, "next": next_path}
    )

    assert response.status_code == 303
    assert response.headers["location"] == lands_on


async def test_public_pages(client: httpx.AsyncClient) -> None:
    assert (await client.get("/")).headers["location"] == "/login"
    login = await client.get("/login")
    assert login.status_code == 200
    assert '<html lang="en" dir="ltr">' in login.text
    assert '<label for="email">' in login.text
    assert 'autocomplete="username"' in login.text
    health = await client.get("/health")
    assert (health.status_code, health.text) == (200, "ok")

    await sign_in(client)
    assert (await client.get("/")).headers["location"] == "/inbox"


async def test_restart_keeps_the_enrolment(tmp_path: Path, clock: FrozenClock) -> None:
    async with running_inbox(tmp_path, clock) as client:
        await sign_in(client)
        secret = await turn_on_two_factor(client, clock)

    async with running_inbox(tmp_path, clock) as client:
        await sign_in(client)
        challenged = await client.get("/inbox")
        assert challenged.headers["location"] == "/mfa/challenge?next=/inbox"
        clock.advance(30)
        assert (await answer_challenge(client, secret, clock)).status_code == 303
        assert (await client.get("/inbox")).status_code == 200

    for name in ("encryption.key", "session.secret"):
        assert stat.S_IMODE((tmp_path / name).stat().st_mode) == 0o600
    assert (tmp_path / "inbox.db").exists()


@pytest.fixture
def served_inbox(tmp_path: Path, clock: FrozenClock) -> Iterator[str]:
    """The demo behind a real uvicorn server on a free 127.0.0.1 port; yields its base URL."""
    with served(demo_inbox(tmp_path, clock=clock)) as url:
        yield url


def test_the_story_over_a_real_server(served_inbox: str, clock: FrozenClock) -> None:
    with httpx.Client(base_url=served_inbox) as client:
        assert client.get("/health").text == "ok"
        assert (
            client.post("/login", data={"email": USER, "password": DEMO_PASSWORD}).status_code
            == 303
        )
        page = client.get("/mfa/enrol")
        started = client.post(
            "/mfa/enrol", data={"csrf_token": csrf_token(page.text), "next": "/inbox"}
        )
        key = MANUAL_KEY.search(started.text)
        assert key is not None, started.text
        secret = key.group(1).replace(" ", "")
        confirmed = client.post(
            "/mfa/enrol/confirm",
            data={
                "csrf_token": csrf_token(started.text),
                "next": "/inbox",
                "code": current_code(secret, clock()),
            },
        )
        assert 'id="recovery-codes"' in confirmed.text

        client.post("/logout")
        client.post("/login", data={"email": USER, "password": DEMO_PASSWORD})
        challenged = client.get("/inbox")
        assert challenged.status_code == 303
        assert challenged.headers["location"] == "/mfa/challenge?next=/inbox"

        clock.advance(30)
        page = client.get("/mfa/challenge", params={"next": "/inbox"})
        verified = client.post(
            "/mfa/challenge",
            data={
                "csrf_token": csrf_token(page.text),
                "next": "/inbox",
                "method": "totp",
                "code": current_code(secret, clock()),
            },
        )
        assert verified.status_code == 303
        inbox = client.get("/inbox")
        assert inbox.status_code == 200
        assert "Two-factor authentication is on" in inbox.text


async def test_cross_site_sign_in_and_out_are_refused(client: httpx.AsyncClient) -> None:
    hostile = {"origin": "https://evil.test"}
    login = await client.post(
        "/login", data={"email": "solo@example.test", "password": "demo"}, headers=hostile
    )
    assert login.status_code == 403
    assert (await client.post("/logout", headers=hostile)).status_code == 403


# --- Codes by text message, read in the demo's outbox -----------------------------------------


@pytest.fixture
def sms_demo(monkeypatch: pytest.MonkeyPatch) -> None:
    # The resend cooldown (1 per 30 s) counts on the real clock of `limits`: widened so the
    # story needs no waiting. The per-number limit keeps its default of 3 per 10 minutes.
    monkeypatch.setenv("MFA_GUARD_SMS__RESEND_COOLDOWN", "100/second")


async def outbox(client: httpx.AsyncClient) -> list[dict[str, object]]:
    response = await client.get("/outbox")
    assert response.status_code == 200
    assert response.headers["cache-control"] == "no-store"
    messages = response.json()
    assert isinstance(messages, list)
    return messages


async def newest_code(client: httpx.AsyncClient) -> str:
    messages = await outbox(client)
    assert messages, "the outbox holds a text"
    assert messages[0]["to"] == "+33612345678"
    match = TEXTED_CODE.search(str(messages[0]["text"]))
    assert match is not None, messages[0]
    return match.group(1)


async def add_phone(client: httpx.AsyncClient) -> None:
    settings = await client.get("/mfa/settings")
    assert settings.status_code == 200
    assert "Mobile phone" in settings.text
    sent = await client.post(
        "/mfa/settings/phone", data={"csrf_token": csrf_token(settings.text), "phone": PHONE}
    )
    assert sent.status_code == 200, sent.text
    assert "We sent a code to +33 •••• ••78" in sent.text
    verified = await client.post(
        "/mfa/settings/phone/verify",
        data={"csrf_token": csrf_token(sent.text), "code": await newest_code(client)},
    )
    assert verified.status_code == 200
    assert "Your mobile number is verified" in verified.text


async def ask_for_a_text(client: httpx.AsyncClient) -> httpx.Response:
    page = await client.get("/mfa/challenge", params={"next": "/inbox"})
    assert page.status_code == 200
    return await client.post(
        "/mfa/sms", data={"csrf_token": csrf_token(page.text), "next": "/inbox"}
    )


@pytest.mark.usefixtures("sms_demo")
async def test_operator_signs_in_with_a_code_read_in_the_outbox(
    client: httpx.AsyncClient, clock: FrozenClock
) -> None:
    await sign_in(client)
    inbox = await client.get("/inbox")
    assert 'href="/outbox"' in inbox.text
    assert await outbox(client) == []
    await turn_on_two_factor(client, clock)
    await add_phone(client)  # right after enrolling: a recent verification allows it

    await client.post("/logout")
    await sign_in(client)
    assert (await client.get("/inbox")).headers["location"] == "/mfa/challenge?next=/inbox"
    challenge = await client.get("/mfa/challenge", params={"next": "/inbox"})
    assert "Get a code by text message to +33 •••• ••78" in challenge.text
    sent = await ask_for_a_text(client)
    assert sent.status_code == 200
    assert "We sent a code to +33 •••• ••78" in sent.text

    # The outbox is open to a challenged session: that is where the code is read.
    messages = await outbox(client)
    assert len(messages) == 2
    assert float(str(messages[0]["at"])) == clock()
    verified = await client.post(
        "/mfa/challenge",
        data={
            "csrf_token": csrf_token(sent.text),
            "next": "/inbox",
            "method": "sms",
            "code": await newest_code(client),
        },
    )
    assert verified.status_code == 303
    assert verified.headers["location"] == "/inbox"
    assert (await client.get("/inbox")).status_code == 200

    # The phone has had three texts in these minutes; the next one is refused.
    await client.post("/logout")
    await sign_in(client)
    assert (await ask_for_a_text(client)).status_code == 200
    refused = await ask_for_a_text(client)
    assert refused.status_code == 429
    assert 1 <= int(refused.headers["retry-after"]) <= 600
    assert 'role="alert"' in refused.text
    minutes = -(-int(refused.headers["retry-after"]) // 60)
    assert (
        f"You cannot get another text message yet. Wait {minutes} minutes before asking for a "
        "new code." in refused.text
    )
    assert len(await outbox(client)) == 3


@pytest.mark.usefixtures("sms_demo")
async def test_a_phone_added_before_enrolling_gives_a_second_way_in(
    client: httpx.AsyncClient, clock: FrozenClock
) -> None:
    await sign_in(client)
    await add_phone(client)
    await turn_on_two_factor(client, clock)
    await client.post("/logout")
    await sign_in(client)

    sent = await ask_for_a_text(client)
    verified = await client.post(
        "/mfa/challenge",
        data={
            "csrf_token": csrf_token(sent.text),
            "next": "/inbox",
            "method": "sms",
            "code": await newest_code(client),
        },
    )

    assert verified.status_code == 303
    assert (await client.get("/inbox")).status_code == 200


async def test_the_outbox_is_for_signed_in_users_only(client: httpx.AsyncClient) -> None:
    response = await client.get("/outbox")
    assert response.status_code == 401
    await sign_in(client)
    assert (await client.get("/outbox")).json() == []


def test_demo_sms_settings_yield_to_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    key = "q7oE0cIh2wXzMcvT3Y0u1tYy1u6W0cG3mZ3t0q3bZ1E="
    settings = demo_settings(key)
    assert settings.sms.enabled
    assert settings.sms.provider == "outbox"
    assert "FR" in settings.sms.allowed_regions
    assert settings.sms.per_number == "3/10 minutes"
    assert "/outbox" in settings.exempt_paths

    monkeypatch.setenv("MFA_GUARD_SMS__ALLOWED_REGIONS", "GB")
    monkeypatch.setenv("MFA_GUARD_SMS__PER_NUMBER", "2/hour")
    settings = demo_settings(key)
    assert settings.sms.enabled
    assert settings.sms.allowed_regions == ["GB"]
    assert settings.sms.per_number == "2/hour"
