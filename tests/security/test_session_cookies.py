"""The session cookie ("sessions", checklist 10): completing the second factor gives
the session a new nonce, and a cookie the client rewrote, without the app's secret, is no
session."""

from __future__ import annotations

import base64
import json
from collections.abc import Callable
from typing import Any

import httpx
import pytest
from itsdangerous import TimestampSigner

from mfa_guard.core import recovery
from mfa_guard.core.marker import Marker
from mfa_guard.session import SESSION_KEY
from tests.apps import SESSION_SECRET, GuardedApp, sign_in
from tests.scenarios import USER, State, arrive, page_token


def session_of(client: httpx.AsyncClient) -> dict[str, Any]:
    """The session as the client holds it: Starlette signs the cookie, it does not encrypt it."""
    payload = TimestampSigner(SESSION_SECRET).unsign(client.cookies["session"].encode())
    data: dict[str, Any] = json.loads(base64.b64decode(payload))
    return data


def marker_of(ga: GuardedApp, client: httpx.AsyncClient, user: str = USER) -> Marker:
    """The session's marker, read as the kit reads it (whatever its stored shape)."""
    marker = Marker.load(session_of(client).get(SESSION_KEY), ga.guard.gate.subject(user))
    assert marker is not None
    return marker


@pytest.mark.parametrize("way", ["api-totp", "api-recovery", "challenge-form"])
async def test_completing_the_second_factor_gives_the_session_a_new_nonce(
    guarded: GuardedApp, client: httpx.AsyncClient, way: str
) -> None:
    secret = await arrive(guarded, client, State.CHALLENGED)
    assert (await client.get("/protected")).status_code == 303
    before = marker_of(guarded, client)
    assert before.verified_at is None
    if way == "challenge-form":
        token = await page_token(client, State.CHALLENGED)
        done = await client.post(
            "/mfa/challenge", data={"csrf_token": token, "code": guarded.code(secret)}
        )
        assert done.status_code == 303, done.text
    else:
        body = (
            {"code": guarded.code(secret)}
            if way == "api-totp"
            else {"method": "recovery", "code": await a_recovery_code(guarded, client)}
        )
        done = await client.post("/mfa/api/verify", json=body)
        assert done.status_code == 200, done.text
    after = marker_of(guarded, client)
    assert after.nonce != before.nonce
    assert after.verified_at == guarded.clock()
    assert (await client.get("/protected")).status_code == 200


async def a_recovery_code(guarded: GuardedApp, client: httpx.AsyncClient) -> str:
    """Replaces the scenario's shared recovery codes with ten this test knows."""
    codes = recovery.generate()
    assert await guarded.store.replace_recovery_codes(USER, recovery.hash_set(codes))
    return codes[0]


def forged_payload(client: httpx.AsyncClient, changes: dict[str, Any]) -> str:
    """The client's own cookie with its payload changed and its old timestamp and signature."""
    _, timestamp, signature = client.cookies["session"].rsplit(".", 2)
    payload = base64.b64encode(json.dumps(session_of(client) | changes).encode()).decode()
    return f"{payload}.{timestamp}.{signature}"


def signed_with_another_key(client: httpx.AsyncClient, changes: dict[str, Any]) -> str:
    payload = base64.b64encode(json.dumps(session_of(client) | changes).encode())
    return TimestampSigner("the attacker's own secret").sign(payload).decode()


def with_its_signature_bent(client: httpx.AsyncClient, changes: dict[str, Any]) -> str:
    """The client's own cookie, its payload as it was (``changes`` left out), the end of its
    signature changed."""
    cookie = client.cookies["session"]
    return cookie[:-3] + ("AAA" if cookie[-3:] != "AAA" else "BBB")


Forge = Callable[[httpx.AsyncClient, dict[str, Any]], str]


@pytest.mark.parametrize(
    "forge", [forged_payload, signed_with_another_key, with_its_signature_bent]
)
async def test_a_cookie_the_client_rewrote_is_no_session(guarded: GuardedApp, forge: Forge) -> None:
    """Mallory, signed in, rewrites her cookie to be Alice, with or without Alice's verified
    marker, or only bends its signature; without the app's secret the cookie is refused whole:
    no user, no marker."""
    async with guarded.client() as alice, guarded.client() as mallory:
        await arrive(guarded, alice, State.VERIFIED)
        stolen = session_of(alice)
        for changes in (
            {"user": USER},
            {"user": USER, SESSION_KEY: stolen[SESSION_KEY]},
            stolen,
        ):
            mallory.cookies.clear()
            await sign_in(mallory, "mallory@acme.test")
            forged = forge(mallory, changes)
            mallory.cookies.clear()
            mallory.cookies.set("session", forged)
            status = await mallory.get("/mfa/api/status")
            assert status.status_code == 401, status.text
            assert status.json()["error"]["code"] == "not_authenticated"
            # The app sees no user either: its home page greets nobody.
            assert (await mallory.get("/")).text == "home of anonymous"
