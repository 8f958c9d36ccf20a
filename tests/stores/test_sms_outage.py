"""SECURITY.md checklist 12 for texts: Redis stopped mid-run refuses every SMS path with a generic
503 and sends nothing (the send budget cannot be counted, so nothing is sent on a guess), a
verified session keeps working, nothing is lost, and texts flow again once Redis is back.

Redis is a throwaway ``redis-server`` this module starts and stops (its own process only)."""

from __future__ import annotations

import re

import httpx
import pytest

from mfa_guard.core import totp
from mfa_guard.crypto import SecretBox
from mfa_guard.events import EventKind
from mfa_guard.sms import OutboxSMS
from tests.apps import GuardedApp, build_app, sign_in
from tests.scenarios import USER, State, assert_refused_page, page_token, recovery_code_set
from tests.stores.test_outages import RedisServer, redis_server  # noqa: F401 (the fixture)

MOBILE = "+33612345678"
OTHER_MOBILE = "+33699887766"
SMS = {
    "enabled": True,
    "provider": "outbox",
    "allowed_regions": ["FR", "GB"],
    # The resend cooldown runs on the real clock of `limits`: widened so a test never waits.
    "resend_cooldown": "100/second",
}
TEXTED_CODE = re.compile(r"\b(\d{6}) is your ")
RECHECK_SECONDS = 60
TIMEOUT = 10.0
# What a 503 must never show the client: the cause is for the operator's log only.
LEAKS = ("Traceback", 'File "', "redis", "coredis", "limits", "127.0.0.1")


def last_texted_code(outbox: OutboxSMS) -> str:
    assert outbox.messages, "a text was sent"
    match = TEXTED_CODE.search(outbox.messages[-1].text)
    assert match is not None, outbox.messages[-1].text
    return match.group(1)


def assert_unavailable_json(response: httpx.Response) -> None:
    assert response.status_code == 503, (response.status_code, response.text)
    assert response.json()["error"]["code"] == "service_unavailable"
    assert int(response.headers["Retry-After"]) > 0
    for leak in LEAKS:
        assert leak.lower() not in response.text.lower(), (leak, response.text)


async def enrolled_with_a_phone(ga: GuardedApp) -> str:
    """The user enrolled with a verified phone, straight in the store; returns the TOTP key."""
    secret = totp.new_secret()
    encrypted = SecretBox(ga.guard.settings.encryption_keys).encrypt(secret)
    now = ga.clock()
    await ga.store.begin_enrolment(USER, encrypted)
    epoch = await ga.store.confirm_enrolment(
        USER, encrypted, step=int(now // 30), recovery=recovery_code_set(), now=now
    )
    assert epoch is not None
    await ga.store.set_phone(USER, MOBILE, now)
    return secret


@pytest.mark.redis
async def test_a_redis_outage_refuses_every_text_with_503_and_sends_none(
    redis_server: RedisServer,  # noqa: F811 (the fixture imported above)
) -> None:
    outbox = OutboxSMS()
    ga = build_app(
        sms_provider=outbox,
        sms=SMS,
        storage_uri=redis_server.url,
        recheck_seconds=RECHECK_SECONDS,
    )
    try:
        async with ga.client() as verified, ga.client() as challenged:
            secret = await enrolled_with_a_phone(ga)
            await sign_in(verified)
            await sign_in(challenged)
            ga.clock.advance(30)  # the enrolment used this step
            done = await verified.post("/mfa/api/verify", json={"code": ga.code(secret)})
            assert done.status_code == 200, done.text
            sent = await challenged.post("/mfa/api/sms/send", json={})
            assert sent.status_code == 202, sent.text
            code = last_texted_code(outbox)
            token = await page_token(challenged, State.CHALLENGED)
            before = await ga.store.get(USER)

            await redis_server.stop()

            # The send budget cannot be counted: no text goes out on a guess.
            assert_unavailable_json(await challenged.post("/mfa/api/sms/send", json={}))
            assert_unavailable_json(
                await verified.post("/mfa/api/phone", json={"phone": OTHER_MOBILE})
            )
            page = await challenged.post("/mfa/sms", data={"csrf_token": token})
            assert_refused_page(page, 503)
            # Nor can the failure count: the texted code is not tried, so not spent.
            assert_unavailable_json(
                await challenged.post("/mfa/api/verify", json={"method": "sms", "code": code})
            )
            assert (await challenged.get("/protected")).status_code == 303
            assert len(outbox.messages) == 1
            assert EventKind.SMS_SENT in ga.events.kinds()

            # The verified session works on, from its marker and then its store re-check.
            assert (await verified.get("/protected")).status_code == 200
            ga.clock.advance(RECHECK_SECONDS + 1)
            assert (await verified.get("/api/data")).json() == {"data": 42}
            assert await ga.store.get(USER) == before  # nothing lost, nothing spent

            # Redis is back (empty): the waiting code signs in, and texts go out again.
            await redis_server.start()
            signed_in = await challenged.post(
                "/mfa/api/verify", json={"method": "sms", "code": code}
            )
            assert signed_in.status_code == 200, signed_in.text
            assert (await challenged.get("/protected")).status_code == 200
            again = await verified.post("/mfa/api/sms/send", json={})
            assert again.status_code == 202, again.text
            assert len(outbox.messages) == 2
    finally:
        await ga.guard.aclose()
