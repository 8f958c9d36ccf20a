"""TOTP as every authenticator app does it (docs/security.md "TOTP", checklist 4): an app on its
defaults (RFC 6238 written out here, independent of the kit) enrols and signs in, and no time the
client gives moves the server's clock."""

from __future__ import annotations

import base64
import hashlib
import hmac
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest

from tests.apps import GuardedApp, sign_in
from tests.scenarios import State, arrive


def rfc6238_sha1_6_digits_30_seconds(base32_key: str, now: float) -> str:
    """RFC 6238 with the Key Uri Format defaults, written out here, independent of the kit."""
    key = base64.b32decode(base32_key)
    mac = hmac.new(key, int(now // 30).to_bytes(8, "big"), hashlib.sha1).digest()
    offset = mac[-1] & 0x0F
    value = (int.from_bytes(mac[offset : offset + 4], "big") & 0x7FFFFFFF) % 10**6
    return f"{value:06d}"


async def test_an_authenticator_app_on_its_defaults_enrols_and_signs_in(
    guarded: GuardedApp, client: httpx.AsyncClient
) -> None:
    await sign_in(client)
    setup = (await client.post("/mfa/api/totp/setup", json={})).json()
    query = parse_qs(urlsplit(setup["otpauth_uri"]).query)
    # Absent parameters mean SHA1, 6 digits and 30 s to an app; present ones must say so.
    assert query.get("algorithm", ["SHA1"]) == ["SHA1"]
    assert query.get("digits", ["6"]) == ["6"]
    assert query.get("period", ["30"]) == ["30"]
    key = query["secret"][0]
    confirmed = await client.post(
        "/mfa/api/totp/confirm",
        json={"code": rfc6238_sha1_6_digits_30_seconds(key, guarded.clock())},
    )
    assert confirmed.status_code == 200, confirmed.text
    await sign_in(client)
    guarded.clock.advance(30)
    verified = await client.post(
        "/mfa/api/verify", json={"code": rfc6238_sha1_6_digits_30_seconds(key, guarded.clock())}
    )
    assert verified.status_code == 200, verified.text


@pytest.mark.parametrize(
    ("send", "accepted"),
    [
        pytest.param({"headers": {"date": "Thu, 01 Jan 1970 00:00:00 GMT"}}, False, id="date"),
        pytest.param({"params": {"time": "0", "now": "0", "t": "0"}}, False, id="query"),
        pytest.param({"headers": {"x-client-time": "0"}}, False, id="header"),
        # The body claims the very time the code of ten steps ago belongs to.
        pytest.param({"json_seconds_ago": 300}, False, id="body"),
        pytest.param({"headers": {"date": "Thu, 01 Jan 1970 00:00:00 GMT"}}, True, id="date-ok"),
        pytest.param({"params": {"time": "0"}, "json_time": 0}, True, id="query-and-body-ok"),
    ],
)
async def test_no_client_supplied_time_moves_the_servers_clock(
    guarded: GuardedApp, client: httpx.AsyncClient, send: dict[str, Any], accepted: bool
) -> None:
    """A code of ten steps ago stays refused and the current one accepted, whatever time the
    client claims in a header, the query or the body."""
    secret = await arrive(guarded, client, State.CHALLENGED)
    code = guarded.code(secret) if accepted else guarded.code(secret, steps=-10)
    body: dict[str, Any] = {"code": code}
    if "json_time" in send:
        body |= {"time": send["json_time"], "timestamp": send["json_time"]}
    if "json_seconds_ago" in send:
        claimed = guarded.clock() - send["json_seconds_ago"]
        body |= {"time": claimed, "timestamp": claimed}
    response = await client.post(
        "/mfa/api/verify",
        json=body,
        headers=send.get("headers", {}),
        params=send.get("params", {}),
    )
    assert response.status_code == (200 if accepted else 422), response.text
