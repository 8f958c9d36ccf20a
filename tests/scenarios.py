"""Scenario helpers shared by the docs/security.md checklist tests: put a session in a state, read a
page's CSRF token, draw a code no step accepts, take a snapshot of what a refused request must
leave as it was, and check the shape of a refusal."""

from __future__ import annotations

import functools
import re
from enum import StrEnum
from typing import Any

import httpx
from starlette.types import ASGIApp, Message, Scope

from mfa_guard.core import recovery, totp
from mfa_guard.crypto import SecretBox
from mfa_guard.testing import CHEAP_KDF
from tests.apps import GuardedApp, sign_in, store_app

USER = "solo@example.test"
TOKEN = re.compile(r'name="csrf_token" value="([^"]+)"')
ALERT = re.compile(r'role="alert"[^>]*>([^<]+)<')


class State(StrEnum):
    SIGNED_OUT = "signed-out"
    SIGNED_IN = "signed-in"  # not enrolled, nothing started
    PENDING = "pending"  # an authenticator set-up waits for its first code
    CHALLENGED = "challenged"  # enrolled, no second factor yet in this session
    VERIFIED = "verified"


# The page whose form carries the session's CSRF token, in each signed-in state.
TOKEN_PAGE = {
    State.SIGNED_IN: "/mfa/enrol",
    State.PENDING: "/mfa/enrol",
    State.CHALLENGED: "/mfa/challenge",
    State.VERIFIED: "/mfa/settings",
}


@functools.cache
def recovery_code_set() -> recovery.RecoveryCodeSet:
    # One set for every scenario, hashed at the tests' cost as the apps of tests.apps hash theirs.
    return recovery.hash_set(recovery.generate(), CHEAP_KDF)


async def arrive(guarded: GuardedApp, client: httpx.AsyncClient, state: State) -> str:
    """Puts the client's session in ``state`` with the clock on a step no code was given in;
    returns the TOTP secret (signed out or merely signed in, one that nothing knows of yet).

    The enrolment is written straight into the store: the API's set-up draws a QR code and its
    confirmation hashes ten recovery codes, too slow to repeat in hundreds of scenarios. A
    pending set-up alone goes through the API, to be bound to the client's session.
    """
    secret = totp.new_secret()
    if state is State.SIGNED_OUT:
        return secret
    await sign_in(client, USER)
    if state is State.SIGNED_IN:
        return secret
    if state is State.PENDING:
        # Through the API: a set-up belongs to the session that began it, and one written
        # straight into the store would be no session's.
        setup = await client.post("/mfa/api/totp/setup", json={})
        assert setup.status_code == 200, setup.text
        return str(setup.json()["secret"])
    encrypted = SecretBox(guarded.guard.settings.encryption_keys).encrypt(secret)
    now = guarded.clock()
    step = int(now // guarded.guard.settings.totp.period)
    epoch = await store_app(
        guarded.store, USER, encrypted, step=step, recovery=recovery_code_set(), now=now
    )
    assert epoch is not None
    await sign_in(client, USER)  # a new session: enrolled, second factor not given
    # The enrolment used the current step; the challenge takes the next one.
    guarded.clock.advance(30)
    if state is State.CHALLENGED:
        return secret
    verified = await client.post("/mfa/api/verify", json={"code": guarded.code(secret)})
    assert verified.status_code == 200, verified.text
    guarded.clock.advance(30)
    return secret


async def page_token(client: httpx.AsyncClient, state: State) -> str:
    """The CSRF token of this session, read from a form page it may open in ``state``."""
    page = await client.get(TOKEN_PAGE[state])
    assert page.status_code == 200, page.text
    match = TOKEN.search(page.text)
    assert match is not None
    return match.group(1)


async def snapshot(guarded: GuardedApp, client: httpx.AsyncClient) -> tuple[Any, ...]:
    """Everything a refused request must leave as it was."""
    status = await client.get("/mfa/api/status")
    return await guarded.store.get(USER), guarded.events.kinds(), status.json()


def assert_json_error(response: httpx.Response) -> str:
    """A 4xx with ``{"error": {"code", "message"}}`` and no traceback; returns the code."""
    assert 400 <= response.status_code < 500, (response.status_code, response.text)
    assert "Traceback" not in response.text
    assert 'File "' not in response.text
    body = response.json()
    assert list(body) == ["error"]
    error = body["error"]
    assert sorted(error) == ["code", "message"]
    assert isinstance(error["code"], str)
    assert isinstance(error["message"], str)
    assert error["code"]
    assert error["message"]
    return error["code"]


def assert_refused_page(response: httpx.Response, status_code: int) -> None:
    """The form page re-rendered (or the error page) with the reason in an alert."""
    assert response.status_code == status_code, (response.status_code, response.text)
    assert response.headers["content-type"].startswith("text/html")
    assert "Traceback" not in response.text
    assert 'File "' not in response.text
    alert = ALERT.search(response.text)
    assert alert is not None
    assert alert.group(1).strip()


async def websocket_messages(ga: GuardedApp, client: httpx.AsyncClient) -> list[Message]:
    """Opens ``/ws`` with the client's cookies, as a browser would, at the ASGI level."""
    cookie = "; ".join(f"{name}={value}" for name, value in client.cookies.items())
    return await open_websocket(ga.app, {"cookie": cookie})


async def open_websocket(app: ASGIApp, headers: dict[str, str]) -> list[Message]:
    """Opens ``/ws`` at the ASGI level with ``headers``; returns what the app sent."""
    scope: Scope = {
        "type": "websocket",
        "asgi": {"version": "3.0"},
        "scheme": "ws",
        "path": "/ws",
        "raw_path": b"/ws",
        "root_path": "",
        "query_string": b"",
        "headers": [(b"host", b"testserver")]
        + [(name.lower().encode(), value.encode()) for name, value in headers.items()],
        "client": ("203.0.113.7", 4000),
        "server": ("testserver", 80),
        "subprotocols": [],
    }
    incoming: list[Message] = [{"type": "websocket.connect"}]
    sent: list[Message] = []

    async def receive() -> Message:
        return incoming.pop(0) if incoming else {"type": "websocket.disconnect", "code": 1000}

    async def send(message: Message) -> None:
        sent.append(message)

    await app(scope, receive, send)
    return sent


def wrong_code(ga: GuardedApp, secret: str) -> str:
    """Six digits that no step inside the drift window accepts."""
    valid = {ga.code(secret, steps) for steps in (-1, 0, 1)}
    return next(code for n in range(10) if (code := str(n) * 6) not in valid)


def csrf_of(page: httpx.Response) -> str:
    """The CSRF token of the form ``page`` carries."""
    found = TOKEN.search(page.text)
    assert found is not None, "the page carries a form"
    return found.group(1)


def error_of(response: httpx.Response) -> tuple[int, str]:
    """A JSON refusal's status and error code."""
    return response.status_code, response.json()["error"]["code"]
