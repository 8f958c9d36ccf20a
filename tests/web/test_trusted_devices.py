"""Trusted devices: "remember this browser" skips the challenge, server-side, revocable.

Told through the JSON API and the guarded app's own routes, with an injected clock."""

from __future__ import annotations

import hashlib
from collections import Counter
from collections.abc import Iterator
from http.cookies import SimpleCookie
from typing import Any

import httpx
import pytest

from mfa_guard.events import EventKind
from mfa_guard.notifications import MemoryNotifier, Notice
from mfa_guard.stores.devices import MemoryDeviceStore, TrustedDevice
from mfa_guard.stores.memory import MemoryStore
from mfa_guard.stores.sql import SQLDeviceStore
from mfa_guard.testing import CountingStore
from tests.apps import GuardedApp, build_app, enrol, sign_in
from tests.databases import POSTGRES_URL, fresh_schema

USER = "solo@example.test"
RECHECK = 60
DAY = 86_400
FIREFOX = "Mozilla/5.0 (X11; Ubuntu; Linux x86_64; rv:133.0) Gecko/20100101 Firefox/133.0"
IPHONE = (
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_0 like Mac OS X) AppleWebKit/605.1.15 "
    "(KHTML, like Gecko) Version/17.0 Mobile/15E148 Safari/604.1"
)
COOKIE = "mfa_guard_device"


@pytest.fixture(scope="module")
def devices_schema() -> Iterator[str]:
    with fresh_schema("mfa_guard_device_api_test") as schema:
        yield schema


def devices_app(**overrides: Any) -> GuardedApp:
    settings: dict[str, Any] = {"recheck_seconds": RECHECK, "trusted_devices": {"enabled": True}}
    settings.update(overrides)
    return build_app(**settings)


def browser(ga: GuardedApp, user_agent: str = FIREFOX) -> httpx.AsyncClient:
    # https: the device cookie is Secure by default, and a client sends it back over TLS only.
    return ga.client(base_url="https://testserver", headers={"user-agent": user_agent})


async def remember(ga: GuardedApp, client: httpx.AsyncClient, secret: str) -> httpx.Response:
    ga.clock.advance(30)
    response = await client.post(
        "/mfa/api/verify", json={"code": ga.code(secret), "remember_device": True}
    )
    assert response.status_code == 200, response.text
    return response


async def enrolled_and_remembered(ga: GuardedApp, client: httpx.AsyncClient) -> str:
    """Signs in, enrols, signs in again and verifies with "remember this browser"."""
    await sign_in(client, USER)
    secret, _ = await enrol(ga, client)
    await sign_in(client, USER)  # a new session: not verified
    await remember(ga, client, secret)
    return secret


async def test_remembering_a_browser_is_off_by_default_and_the_code_not_spent() -> None:
    ga = build_app()
    async with ga.client() as client:
        await sign_in(client, USER)
        secret, _ = await enrol(ga, client)
        await sign_in(client, USER)
        ga.clock.advance(30)
        code = ga.code(secret)

        refused = await client.post("/mfa/api/verify", json={"code": code, "remember_device": True})

        assert (refused.status_code, refused.json()["error"]["code"]) == (
            409,
            "trusted_devices_disabled",
        )
        assert COOKIE not in refused.headers.get("set-cookie", "")
        # The code was not checked, so not spent: it still verifies.
        assert (await client.post("/mfa/api/verify", json={"code": code})).status_code == 200
        assert (await client.get("/mfa/api/devices")).status_code == 404


async def test_the_device_cookie_is_httponly_secure_lax_and_lasts_the_configured_days() -> None:
    ga = devices_app(trusted_devices={"enabled": True, "days": 7})
    async with browser(ga) as client:
        await sign_in(client, USER)
        secret, _ = await enrol(ga, client)
        await sign_in(client, USER)

        response = await remember(ga, client, secret)

    assert response.json() == {"verified": True, "method": "totp", "device_remembered": True}
    (header,) = [h for h in response.headers.get_list("set-cookie") if h.startswith(COOKIE)]
    cookie = SimpleCookie(header)[COOKIE]
    assert cookie["httponly"] is True
    assert cookie["secure"] is True
    assert cookie["samesite"] == "lax"
    assert cookie["path"] == "/"
    assert cookie["max-age"] == str(7 * DAY)
    # The server keeps a hash of the token, never the token.
    (device,) = await ga.guard.trusted_devices.devices.devices(USER)  # type: ignore[union-attr]
    assert device.token_hash == hashlib.sha256(cookie.value.encode()).hexdigest()
    assert cookie.value not in repr(device)
    assert device.name == "Firefox on Ubuntu"
    # And the User-Agent, which the settings page names the browser from in its language.
    assert device.user_agent == FIREFOX
    assert device.expires_at == ga.clock() + 7 * DAY


async def test_a_long_user_agent_is_kept_cut_to_1024_characters() -> None:
    ga = devices_app()
    long_agent = FIREFOX + " " + "x" * 2000
    async with browser(ga, long_agent) as client:
        await enrolled_and_remembered(ga, client)
        listed = (await client.get("/mfa/api/devices")).json()["devices"]
    (device,) = await ga.guard.trusted_devices.devices.devices(USER)  # type: ignore[union-attr]
    assert device.user_agent == long_agent[:1024]
    assert device.name == "Firefox on Ubuntu"
    # The JSON API gives the English name, never the User-Agent.
    assert [d["name"] for d in listed] == ["Firefox on Ubuntu"]
    assert "user_agent" not in listed[0]


async def test_a_remembered_browser_skips_the_challenge_at_its_next_sign_in() -> None:
    ga = devices_app()
    async with browser(ga) as client:
        await enrolled_and_remembered(ga, client)
        await client.post("/logout")
        await sign_in(client, USER)
        ga.clock.advance(3600)

        assert (await client.get("/protected")).status_code == 200
        status = (await client.get("/mfa/api/status")).json()
        # For JSON callers too, on the app's own API.
        assert (await client.get("/api/data")).status_code == 200

    assert (status["verified"], status["verified_method"]) == (True, "device")
    assert EventKind.DEVICE_RECOGNISED in ga.events.kinds()


async def test_another_browser_still_gets_the_challenge() -> None:
    ga = devices_app()
    async with browser(ga) as laptop, browser(ga, IPHONE) as phone:
        await enrolled_and_remembered(ga, laptop)
        await sign_in(phone, USER)

        challenged = await phone.get("/protected")

    assert challenged.headers["location"] == "/mfa/challenge?next=/protected"


async def test_a_device_token_works_only_for_the_user_who_remembered_it() -> None:
    ga = devices_app()
    async with browser(ga) as client:
        await enrolled_and_remembered(ga, client)
        await sign_in(client, "mallory@example.test")
        await enrol(ga, client)
        await sign_in(client, "mallory@example.test")

        challenged = await client.get("/protected")

    assert challenged.status_code == 303


@pytest.mark.parametrize(
    "value",
    ["", "not a token", "x" * 43 + "!", "A" * 44, "A" * 43],
    ids=["empty", "spaces", "bad-character", "too-long", "unknown"],
)
async def test_a_malformed_or_unknown_device_cookie_is_the_challenge(value: str) -> None:
    ga = devices_app()
    async with browser(ga) as client:
        await sign_in(client, USER)
        await enrol(ga, client)
        await sign_in(client, USER)
        client.cookies.set(COOKIE, value, domain="testserver")

        challenged = await client.get("/protected")

    assert challenged.status_code == 303
    assert challenged.headers["location"].startswith("/mfa/challenge")


class CountingDevices(MemoryDeviceStore):
    def __init__(self) -> None:
        super().__init__()
        self.recognised = 0

    async def recognise(self, user_id: str, token_hash: str, now: float) -> TrustedDevice | None:
        self.recognised += 1
        return await super().recognise(user_id, token_hash, now)


async def test_a_verified_session_makes_no_device_call_and_a_challenged_one_one_round_trip() -> (
    None
):
    store = CountingStore(MemoryStore())
    devices = CountingDevices()
    ga = devices_app(store=store, devices=devices)
    async with browser(ga) as client:
        await enrolled_and_remembered(ga, client)
        store.calls.clear()
        assert (await client.get("/protected")).status_code == 200
        assert (store.total, devices.recognised) == (0, 0)

        await sign_in(client, USER)
        store.calls.clear()
        assert (await client.get("/protected")).status_code == 200
        # The new session's re-check; then its device, with the enrolment read beside it.
        assert (store.calls, devices.recognised) == (Counter(summary=2), 1)
        store.calls.clear()
        assert (await client.get("/protected")).status_code == 200
        assert (store.total, devices.recognised) == (0, 1)


async def test_a_remembered_browser_is_not_a_recent_second_factor() -> None:
    ga = devices_app()
    async with browser(ga) as client:
        await enrolled_and_remembered(ga, client)
        await sign_in(client, USER)
        assert (await client.get("/protected")).status_code == 200

        step_up = await client.post("/mfa/api/recovery-codes", json={})

    assert (step_up.status_code, step_up.json()["error"]["code"]) == (
        401,
        "mfa_reauthentication_required",
    )


async def test_the_user_lists_their_browsers_with_this_one_marked() -> None:
    ga = devices_app()
    async with browser(ga) as laptop, browser(ga, IPHONE) as phone:
        secret = await enrolled_and_remembered(ga, laptop)
        await sign_in(phone, USER)
        ga.clock.advance(60)
        await remember(ga, phone, secret)

        listed = (await laptop.get("/mfa/api/devices")).json()["devices"]

    assert [(d["name"], d["current"]) for d in listed] == [
        ("Mobile Safari on iOS (iPhone)", False),
        ("Firefox on Ubuntu", True),
    ]
    assert set(listed[0]) == {"id", "name", "created_at", "last_used_at", "expires_at", "current"}
    assert listed[0]["created_at"].endswith("Z")


async def test_forgetting_a_browser_ends_its_session_at_the_next_recheck() -> None:
    ga = devices_app()
    async with browser(ga) as laptop, browser(ga, IPHONE) as phone:
        secret = await enrolled_and_remembered(ga, laptop)
        await sign_in(phone, USER)
        await remember(ga, phone, secret)
        # The laptop's new session gets in by its device.
        await sign_in(laptop, USER)
        assert (await laptop.get("/protected")).status_code == 200
        checked_at = ga.clock()
        (laptop_device,) = [
            d for d in (await phone.get("/mfa/api/devices")).json()["devices"] if not d["current"]
        ]

        forgotten = await phone.delete(f"/mfa/api/devices/{laptop_device['id']}")
        assert (forgotten.status_code, forgotten.json()) == (200, {"forgotten": 1})
        again = await phone.delete(f"/mfa/api/devices/{laptop_device['id']}")
        assert (again.status_code, again.json()["error"]["code"]) == (404, "device_not_found")

        ga.clock.now = checked_at + RECHECK - 1
        assert (await laptop.get("/protected")).status_code == 200
        ga.clock.now = checked_at + RECHECK
        assert (await laptop.get("/protected")).status_code == 303
        # The phone's own device still works.
        await sign_in(phone, USER)
        assert (await phone.get("/protected")).status_code == 200
    assert EventKind.DEVICE_REVOKED in ga.events.kinds()


async def test_forgetting_every_browser() -> None:
    ga = devices_app()
    async with browser(ga) as laptop, browser(ga, IPHONE) as phone:
        secret = await enrolled_and_remembered(ga, laptop)
        await sign_in(phone, USER)
        await remember(ga, phone, secret)

        forgotten = await phone.delete("/mfa/api/devices")

        assert (forgotten.status_code, forgotten.json()) == (200, {"forgotten": 2})
        await sign_in(laptop, USER)
        assert (await laptop.get("/protected")).status_code == 303
        assert (await phone.get("/mfa/api/devices")).json() == {"devices": []}


async def test_nobody_forgets_another_users_browser() -> None:
    ga = devices_app()
    async with browser(ga) as alice, browser(ga) as mallory:
        await enrolled_and_remembered(ga, alice)
        (device,) = (await alice.get("/mfa/api/devices")).json()["devices"]
        await sign_in(mallory, "mallory@example.test")

        refused = await mallory.delete(f"/mfa/api/devices/{device['id']}")

        assert (refused.status_code, refused.json()["error"]["code"]) == (404, "device_not_found")
        assert len((await alice.get("/mfa/api/devices")).json()["devices"]) == 1


@pytest.mark.parametrize(
    "change",
    ["sign_out_others", "disable", "new_recovery_codes"],
)
async def test_a_factor_change_or_an_epoch_bump_forgets_every_browser(change: str) -> None:
    ga = devices_app()
    async with browser(ga) as laptop, browser(ga, IPHONE) as phone:
        secret = await enrolled_and_remembered(ga, laptop)
        await sign_in(phone, USER)
        await remember(ga, phone, secret)  # recent: may step up

        if change == "sign_out_others":
            response = await phone.post("/mfa/api/sessions/revoke", json={})
        elif change == "disable":
            ga.clock.advance(30)
            response = await phone.post("/mfa/api/disable", json={"code": ga.code(secret)})
        else:
            response = await phone.post("/mfa/api/recovery-codes", json={})
        assert response.status_code == 200, response.text

        await sign_in(laptop, USER)
        assert (await laptop.get("/protected")).status_code == (
            200 if change == "disable" else 303  # without 2FA nothing is challenged
        )
        if change != "disable":
            assert (await phone.get("/mfa/api/devices")).json() == {"devices": []}
    assert await ga.guard.trusted_devices.devices.devices(USER) == []  # type: ignore[union-attr]


async def test_a_remembered_browser_expires_after_the_configured_days() -> None:
    ga = devices_app(trusted_devices={"enabled": True, "days": 2})
    async with browser(ga) as client:
        await enrolled_and_remembered(ga, client)
        remembered_at = ga.clock()

        ga.clock.now = remembered_at + 2 * DAY - 1
        await sign_in(client, USER)
        assert (await client.get("/protected")).status_code == 200
        ga.clock.now = remembered_at + 2 * DAY
        await sign_in(client, USER)
        assert (await client.get("/protected")).status_code == 303


async def test_past_the_limit_the_least_recently_used_browser_is_forgotten() -> None:
    ga = devices_app(trusted_devices={"enabled": True, "max_per_user": 2})
    async with browser(ga) as first, browser(ga) as second, browser(ga, IPHONE) as third:
        secret = await enrolled_and_remembered(ga, first)
        for client in (second, third):
            await sign_in(client, USER)
            await remember(ga, client, secret)

        await sign_in(first, USER)
        assert (await first.get("/protected")).status_code == 303
        await sign_in(second, USER)
        assert (await second.get("/protected")).status_code == 200


async def test_remember_device_must_be_a_boolean() -> None:
    ga = devices_app()
    async with browser(ga) as client:
        await sign_in(client, USER)
        secret, _ = await enrol(ga, client)
        await sign_in(client, USER)
        ga.clock.advance(30)

        refused = await client.post(
            "/mfa/api/verify", json={"code": ga.code(secret), "remember_device": "yes"}
        )

    assert (refused.status_code, refused.json()["error"]["code"]) == (400, "invalid_input")


async def test_device_routes_need_a_verified_session_and_refuse_cross_site_changes() -> None:
    ga = devices_app()
    async with browser(ga) as client:
        assert (await client.get("/mfa/api/devices")).status_code == 401
        await enrolled_and_remembered(ga, client)
        cross_site = await client.delete(
            "/mfa/api/devices", headers={"origin": "https://evil.example"}
        )
        assert cross_site.status_code == 403
        wrong_method = await client.post("/mfa/api/devices", json={})
        assert (wrong_method.status_code, wrong_method.headers["allow"]) == (
            405,
            "DELETE, GET, HEAD",
        )
    async with ga.client(base_url="https://testserver") as other:  # no device cookie
        await sign_in(other, USER)
        refused = await other.get("/mfa/api/devices")
        assert (refused.status_code, refused.json()["error"]["code"]) == (401, "mfa_required")
    assert len(await ga.guard.trusted_devices.devices.devices(USER)) == 1  # type: ignore[union-attr]


async def test_the_user_is_told_of_a_newly_remembered_browser() -> None:
    notifier = MemoryNotifier()
    ga = devices_app(notifier=notifier)
    async with browser(ga) as client:
        await enrolled_and_remembered(ga, client)

    (told,) = [n for n in notifier.notifications if n.notice is Notice.DEVICE_TRUSTED]
    assert told.user_id == USER
    assert told.detail == "Firefox on Ubuntu"


@pytest.mark.postgres
@pytest.mark.parametrize("device_id", ["bad%00id", "a%09b", "x" * 65, "%E2%80%AE"])
async def test_an_id_no_store_can_hold_is_the_same_404_on_postgresql(
    device_id: str, devices_schema: str
) -> None:
    devices = SQLDeviceStore(
        POSTGRES_URL, connect_args={"server_settings": {"search_path": devices_schema}}
    )
    await devices.remove_all(USER)
    ga = devices_app(devices=devices)
    try:
        async with browser(ga) as client:
            await enrolled_and_remembered(ga, client)

            refused = await client.delete(f"/mfa/api/devices/{device_id}")

            listed = (await client.get("/mfa/api/devices")).json()["devices"]
    finally:
        await devices.close()
    assert (refused.status_code, refused.json()["error"]["code"]) == (404, "device_not_found")
    assert len(listed) == 1
