"""Policies of methods as the guarded app sees them: from its deadline, a session verified by a
texted code (no_sms), or by anything but a passkey (phishing_resistant), is challenged again
within ``recheck_seconds``, with no store call in between; the same from the app-wide setting."""

from __future__ import annotations

from typing import Any

import httpx

from mfa_guard.sms import OutboxSMS
from mfa_guard.stores.memory import MemoryStore
from mfa_guard.stores.sites import MethodPolicy
from mfa_guard.testing import CountingSiteDirectory, CountingStore
from mfa_guard.testing.webauthn import SoftAuthenticator
from tests.apps import GuardedApp, build_app, enrol, sign_in
from tests.passkeys import ORIGIN, PASSKEYS, add_passkey, require, site_of, with_passkey
from tests.scenarios import USER
from tests.sms_apps import MOBILE, SMS, texted_code

RECHECK = 60
JSON = {"accept": "application/json"}


def client_of(ga: GuardedApp) -> httpx.AsyncClient:
    return ga.client(base_url=ORIGIN)


async def test_from_its_deadline_a_passkey_policy_challenges_an_app_verified_session() -> None:
    directory = await site_of(USER)
    store = CountingStore(MemoryStore())
    sites = CountingSiteDirectory(directory)
    ga = build_app(store, sites=sites, webauthn=PASSKEYS, recheck_seconds=RECHECK)
    key = SoftAuthenticator()
    async with client_of(ga) as client:
        await sign_in(client, USER)
        secret, _ = await enrol(ga, client)
        await add_passkey(client, key)
        await client.post("/logout")
        await sign_in(client, USER)
        ga.clock.advance(30)
        assert (await client.post("/mfa/api/verify", json={"code": ga.code(secret)})).status_code
        deadline = ga.clock() + RECHECK + RECHECK // 2
        await require(directory, MethodPolicy.PHISHING_RESISTANT, deadline)
        assert (await client.get("/protected")).status_code == 200
        # The next re-check learns the deadline; until then and after it, no store call.
        ga.clock.advance(RECHECK)
        assert (await client.get("/protected")).status_code == 200
        store.calls.clear()
        sites.calls.clear()
        ga.clock.now = deadline - 1
        assert (await client.get("/protected")).status_code == 200
        ga.clock.now = deadline
        page = await client.get("/protected")
        assert page.status_code == 303
        assert "/mfa/challenge" in page.headers["location"]
        api = await client.get("/api/data", headers=JSON)
        assert (api.status_code, api.json()["error"]["code"]) == (
            401,
            "mfa_stronger_factor_required",
        )
        assert (store.total, sites.total) == (0, 0)
        # A passkey answers it.
        assert (await with_passkey(client, key)).status_code == 200
        assert (await client.get("/protected")).status_code == 200


async def test_a_passkey_policy_accepts_no_remembered_browser() -> None:
    directory = await site_of(USER)
    ga = build_app(
        sites=directory,
        webauthn=PASSKEYS,
        trusted_devices={"enabled": True},
        recheck_seconds=RECHECK,
    )
    async with client_of(ga) as client:
        await sign_in(client, USER)
        secret, _ = await enrol(ga, client)
        ga.clock.advance(30)
        remember = {"code": ga.code(secret), "remember_device": True}
        assert (await client.post("/mfa/api/verify", json=remember)).status_code == 200
        await client.post("/logout")
        await sign_in(client, USER)
        # The browser is remembered: no challenge.
        assert (await client.get("/protected")).status_code == 200
        await require(directory, MethodPolicy.PHISHING_RESISTANT, 0.0)
        await client.post("/logout")
        await sign_in(client, USER)
        assert (await client.get("/protected")).status_code == 303


async def test_a_no_sms_policy_challenges_a_texted_session_and_refuses_texts() -> None:
    directory = await site_of(USER)
    outbox = OutboxSMS()
    ga = build_app(sites=directory, sms=SMS, sms_provider=outbox, recheck_seconds=RECHECK)
    async with ga.client() as client:
        await sign_in(client, USER)
        secret, _ = await enrol(ga, client)
        assert (await client.post("/mfa/api/phone", json={"phone": MOBILE})).status_code == 202
        code = texted_code(outbox, MOBILE)
        assert (await client.post("/mfa/api/phone/verify", json={"code": code})).status_code == 200
        await client.post("/logout")
        await sign_in(client, USER)
        assert (await client.post("/mfa/api/sms/send", json={})).status_code == 202
        texted: dict[str, Any] = {"method": "sms", "code": texted_code(outbox, MOBILE)}
        assert (await client.post("/mfa/api/verify", json=texted)).status_code == 200
        assert (await client.get("/protected")).status_code == 200
        await require(directory, MethodPolicy.NO_SMS, 0.0)
        ga.clock.advance(RECHECK)
        api = await client.get("/api/data", headers=JSON)
        assert api.json()["error"]["code"] == "mfa_stronger_factor_required"
        refused = await client.post("/mfa/api/sms/send", json={})
        assert (refused.status_code, refused.json()["error"]["code"]) == (
            403,
            "sms_refused_by_policy",
        )
        sent = len(outbox.messages)
        again = await client.post("/mfa/api/verify", json={"method": "sms", "code": "123456"})
        assert again.json()["error"]["code"] == "sms_refused_by_policy"
        assert len(outbox.messages) == sent
        # The app's code is still accepted under no_sms.
        ga.clock.advance(30)
        assert (await client.post("/mfa/api/verify", json={"code": ga.code(secret)})).status_code
        assert (await client.get("/protected")).status_code == 200


async def test_the_app_wide_passkey_policy_applies_from_its_deadline() -> None:
    everyone = {"required": True, "methods": "phishing_resistant"}
    ga = build_app(everyone=everyone, webauthn=PASSKEYS)
    key = SoftAuthenticator()
    async with client_of(ga) as client:
        await sign_in(client, USER)
        secret, _ = await enrol(ga, client)
        # Verified by the app's first code: not what every account must use.
        assert (await client.get("/protected")).status_code == 303
        # The kit's own pages stay open: the passkey is added, then answers.
        await add_passkey(client, key)
        assert (await client.get("/protected")).status_code == 303
        assert (await with_passkey(client, key)).status_code == 200
        assert (await client.get("/protected")).status_code == 200
        assert secret


async def test_under_a_passkey_policy_an_app_code_changes_no_factor_of_a_member_with_a_key() -> (
    None
):
    directory = await site_of(USER)
    ga = build_app(sites=directory, webauthn=PASSKEYS, recheck_seconds=RECHECK)
    key = SoftAuthenticator()
    async with client_of(ga) as client:
        await sign_in(client, USER)
        secret, codes = await enrol(ga, client)
        await add_passkey(client, key)
        await require(directory, MethodPolicy.PHISHING_RESISTANT, 0.0)
        await client.post("/logout")
        await sign_in(client, USER)
        # What a look-alike page relays: the password and the app's current code.
        ga.clock.advance(30)
        assert (await client.post("/mfa/api/verify", json={"code": ga.code(secret)})).status_code
        apps = (await client.get("/mfa/api/authenticators")).json()["authenticators"]
        refused = [
            await client.post("/mfa/api/webauthn/register/options", json={}),
            await client.post("/mfa/api/totp/setup", json={}),
            await client.delete(f"/mfa/api/authenticators/{apps[1]['id']}"),
            await client.patch(f"/mfa/api/authenticators/{apps[1]['id']}", json={"name": "x"}),
        ]
        assert [(r.status_code, r.json()["error"]["code"]) for r in refused] == [
            (403, "passkey_required")
        ] * 4
        # The key, or a recovery code after losing it, may.
        assert (await with_passkey(client, key)).status_code == 200
        options = await client.post("/mfa/api/webauthn/register/options", json={})
        assert options.status_code == 200
        await client.post("/logout")
        await sign_in(client, USER)
        recovered = {"method": "recovery", "code": codes[0]}
        assert (await client.post("/mfa/api/verify", json=recovered)).status_code == 200
        await add_passkey(client, SoftAuthenticator())
        listed = (await client.get("/mfa/api/authenticators")).json()["authenticators"]
        assert [a["kind"] for a in listed] == ["totp", "webauthn", "webauthn"]
