"""SMS codes over the JSON API: phone registration, SMS sign-in, and the send limits that stop
SMS pumping, each refusing before the provider is called (docs/security.md checklist 5 and 6)."""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import math
import time
import uuid
from typing import Any

import httpx
import pytest
from itsdangerous import TimestampSigner
from pydantic import ValidationError
from redis.asyncio import Redis

from mfa_guard import EventKind
from mfa_guard.core import totp
from mfa_guard.crypto import SecretBox
from mfa_guard.settings import SMSSettings
from mfa_guard.stores.base import SMSPurpose
from tests.apps import SESSION_SECRET, build_app, enrol, settings_for, sign_in, store_app
from tests.databases import redis_or_skip
from tests.scenarios import State, arrive, recovery_code_set
from tests.sms_apps import CODE, PEER, SMSApp, build_sms_app

USER = "solo@example.test"
OTHER_USER = "other@example.test"
MOBILE = "+33612345678"
TYPED_MOBILE = "+33 6 12 34 56 78"
MASKED = "+33 •••• ••78"
OTHER_MOBILE = "+33699887766"
UK_MOBILE = "+447400123456"  # Great Britain (+44 7911 is Guernsey)


@pytest.fixture
def sms_app() -> SMSApp:
    return build_sms_app()


def error_code(response: httpx.Response) -> str:
    code: str = response.json()["error"]["code"]
    return code


def session_strings(client: httpx.AsyncClient) -> list[str]:
    """Every key and string value of the (signed, not encrypted) session cookie."""
    payload = TimestampSigner(SESSION_SECRET).unsign(client.cookies["session"].encode())
    found: list[str] = []

    def walk(value: object) -> None:
        if isinstance(value, str):
            found.append(value)
        elif isinstance(value, dict):
            for key, item in value.items():
                found.append(str(key))
                walk(item)
        elif isinstance(value, list):
            for item in value:
                walk(item)

    walk(json.loads(base64.b64decode(payload)))
    return found


def assert_too_many_texts(response: httpx.Response) -> None:
    assert response.status_code == 429, response.text
    assert error_code(response) == "too_many_texts"
    assert int(response.headers["Retry-After"]) >= 1


async def challenged_with_phone(
    sms_app: SMSApp, client: httpx.AsyncClient, user: str = USER, phone: str | None = MOBILE
) -> str:
    """Enrols ``user`` with ``phone`` verified, straight in the store (no text sent), and signs
    the client in: its session waits for the second factor. Returns the TOTP secret."""
    secret = totp.new_secret()
    encrypted = SecretBox(sms_app.ga.guard.settings.encryption_keys).encrypt(secret)
    now = sms_app.ga.clock()
    epoch = await store_app(
        sms_app.ga.store,
        user,
        encrypted,
        step=int(now // 30),
        recovery=recovery_code_set(),
        now=now,
    )
    assert epoch is not None
    if phone is not None:
        await sms_app.ga.store.set_phone(user, phone, now)
    await sign_in(client, user)
    sms_app.ga.clock.advance(30)  # the enrolment used this step
    return secret


async def send(client: httpx.AsyncClient) -> httpx.Response:
    return await client.post("/mfa/api/sms/send", json={})


async def verify_sms(client: httpx.AsyncClient, code: str) -> httpx.Response:
    return await client.post("/mfa/api/verify", json={"method": "sms", "code": code})


async def register(client: httpx.AsyncClient, phone: str) -> httpx.Response:
    return await client.post("/mfa/api/phone", json={"phone": phone})


async def signed_in_register(
    sms_app: SMSApp, user: str, phone: str, ip: str = PEER
) -> httpx.Response:
    """A user who is not enrolled asks for a code to ``phone`` from ``ip``."""
    async with sms_app.client(ip) as client:
        await sign_in(client, user)
        return await register(client, phone)


def wrong(code: str) -> str:
    return str((int(code) + 1) % 1_000_000).zfill(6)


# -- Phone registration ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("phone", "code"),
    [
        pytest.param("", "invalid_phone", id="empty"),
        pytest.param("06 12 34 56 78", "invalid_phone", id="national-format"),
        pytest.param("+33 6 12", "invalid_phone", id="too-short"),
        pytest.param("+33 6 12 34 56 78 90 12", "invalid_phone", id="too-long"),
        pytest.param("call me", "invalid_phone", id="letters"),
        pytest.param("+" + "6" * 40, "invalid_phone", id="oversized"),
        pytest.param("+33 1 42 68 53 00", "not_a_mobile", id="french-landline"),
        pytest.param("+49 151 23456789", "phone_country_not_allowed", id="german-mobile"),
        pytest.param("+1 415 555 2671", "phone_country_not_allowed", id="us-number"),
    ],
)
async def test_a_number_that_cannot_get_texts_is_refused_before_sending(
    sms_app: SMSApp, phone: str, code: str
) -> None:
    async with sms_app.client() as client:
        await sign_in(client)
        response = await register(client, phone)
        assert response.status_code == 400, response.text
        assert error_code(response) == code
        assert response.json()["error"]["message"]
        status = (await client.get("/mfa/api/status")).json()
    assert (status["phone"], status["phone_verified"]) == (None, False)
    assert sms_app.sent() == 0


# Mobiles that share a calling code with an allowed country, and are not it (the
# allow-list went by calling code, so +1 let the Caribbean in and +44 the Crown Dependencies).
SHARED_CODE_MOBILES = [
    pytest.param("+1 876 210 1234", id="jamaica"),
    pytest.param("+1 809 234 5678", id="dominican-republic"),
    pytest.param("+1 242 359 1234", id="bahamas"),
    pytest.param("+44 7797 712345", id="jersey"),
    pytest.param("+44 7781 123456", id="guernsey"),
    pytest.param("+44 7624 123456", id="isle-of-man"),
]
NORTH_AMERICA_AND_UK = ["US", "CA", "GB"]


@pytest.mark.parametrize("phone", SHARED_CODE_MOBILES)
async def test_the_allow_list_goes_by_country_not_by_calling_code(phone: str) -> None:
    sms_app = build_sms_app(allowed_regions=NORTH_AMERICA_AND_UK)
    async with sms_app.client() as client:
        await sign_in(client)
        refused = await register(client, phone)
        assert refused.status_code == 400, refused.text
        assert error_code(refused) == "phone_country_not_allowed"
        assert "cannot be sent to numbers of this country" in refused.json()["error"]["message"]
    assert sms_app.sent() == 0


@pytest.mark.parametrize(
    "phone",
    [
        pytest.param("+1 201 555 0123", id="united-states"),
        pytest.param("+1 506 234 5678", id="canada"),
        pytest.param("+44 7400 123456", id="united-kingdom"),
    ],
)
async def test_the_allowed_countries_get_their_texts(phone: str) -> None:
    sms_app = build_sms_app(allowed_regions=NORTH_AMERICA_AND_UK)
    assert (await signed_in_register(sms_app, USER, phone)).status_code == 202
    assert sms_app.sent() == 1


async def test_the_old_calling_code_list_still_works_for_the_main_countries_with_a_warning() -> (
    None
):
    """``allowed_calling_codes`` is deprecated: each code allows its main country only (1: the
    United States and Canada; 44: the United Kingdom), and the warning says so."""
    with pytest.warns(FutureWarning, match=r"allowed_regions") as warned:
        sms_app = build_sms_app(allowed_regions=[], allowed_calling_codes=[1, 44])
    message = str(warned[0].message)
    assert "+1: US, CA" in message
    assert "+44: GB" in message
    assert sms_app.ga.guard.settings.sms.allowed_regions == ["CA", "GB", "US"]
    assert (await signed_in_register(sms_app, USER, "+1 201 555 0123")).status_code == 202
    refused = await signed_in_register(sms_app, OTHER_USER, "+1 876 210 1234")
    assert error_code(refused) == "phone_country_not_allowed"


@pytest.mark.parametrize(
    ("sms", "message"),
    [
        pytest.param({"allowed_regions": ["XX"]}, "XX", id="no-such-region"),
        pytest.param({"allowed_regions": ["001"]}, "001", id="non-geographic"),
        pytest.param({"allowed_calling_codes": [800]}, "800", id="non-geographic-code"),
        pytest.param({"allowed_calling_codes": [999]}, "999", id="no-such-code"),
        pytest.param({"allowed_regions": []}, "allowed_regions", id="empty"),
    ],
)
def test_an_allow_list_that_names_no_country_is_refused(sms: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        SMSSettings(enabled=True, **sms)


def test_region_codes_are_read_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MFA_GUARD_SMS__ALLOWED_REGIONS", "fr, gb,US")
    monkeypatch.setenv("MFA_GUARD_SMS__ENABLED", "true")
    assert settings_for().sms.allowed_regions == ["FR", "GB", "US"]


async def test_a_mobile_number_is_verified_with_the_texted_code(sms_app: SMSApp) -> None:
    async with sms_app.client() as client:
        await sign_in(client)
        response = await register(client, TYPED_MOBILE)
        assert response.status_code == 202, response.text
        assert response.json() == {"sent": True, "phone": MASKED, "expires_in": 600}
        assert [m.to for m in sms_app.outbox.messages] == [MOBILE]
        # Not the user's number until the code comes back.
        status = (await client.get("/mfa/api/status")).json()
        assert (status["phone"], status["phone_verified"]) == (None, False)

        verified = await client.post("/mfa/api/phone/verify", json={"code": sms_app.last_code()})
        assert verified.status_code == 200, verified.text
        assert verified.json() == {"phone": MASKED, "phone_verified": True}
        status = (await client.get("/mfa/api/status")).json()
    assert (status["phone"], status["phone_verified"]) == (MASKED, True)
    enrolment = await sms_app.ga.store.get(USER)
    assert enrolment is not None
    assert enrolment.phone == MOBILE
    assert EventKind.PHONE_VERIFIED in sms_app.ga.events.kinds()


async def test_a_wrong_phone_code_leaves_the_number_unverified(sms_app: SMSApp) -> None:
    async with sms_app.client() as client:
        await sign_in(client)
        await register(client, TYPED_MOBILE)
        refused = await client.post(
            "/mfa/api/phone/verify", json={"code": wrong(sms_app.last_code())}
        )
        assert refused.status_code == 422
        assert error_code(refused) == "invalid_code"
        assert (await client.get("/mfa/api/status")).json()["phone_verified"] is False
        # The texted code still works.
        verified = await client.post("/mfa/api/phone/verify", json={"code": sms_app.last_code()})
    assert verified.status_code == 200


async def test_a_phone_code_is_refused_in_another_session(sms_app: SMSApp) -> None:
    async with sms_app.client() as asking, sms_app.client() as other:
        await sign_in(asking)
        await sign_in(other)
        await register(asking, TYPED_MOBILE)
        refused = await other.post("/mfa/api/phone/verify", json={"code": sms_app.last_code()})
        assert refused.status_code == 422
        accepted = await asking.post("/mfa/api/phone/verify", json={"code": sms_app.last_code()})
    assert accepted.status_code == 200


async def test_changing_the_phone_needs_a_recent_second_factor(sms_app: SMSApp) -> None:
    async with sms_app.client() as client:
        secret = await challenged_with_phone(sms_app, client)
        refused = await register(client, OTHER_MOBILE)
        assert refused.status_code == 401
        assert error_code(refused) == "mfa_reauthentication_required"
        assert sms_app.sent() == 0

        await client.post("/mfa/api/verify", json={"code": sms_app.ga.code(secret)})
        assert (await register(client, OTHER_MOBILE)).status_code == 202
        assert sms_app.sent() == 1

        sms_app.ga.clock.advance(sms_app.ga.guard.settings.recent_mfa_seconds + 1)
        stale = await register(client, OTHER_MOBILE)
    assert stale.status_code == 401
    assert error_code(stale) == "mfa_reauthentication_required"
    assert sms_app.sent() == 1


async def test_a_new_number_makes_the_other_sessions_verify_again(sms_app: SMSApp) -> None:
    async with sms_app.client() as changing, sms_app.client() as other:
        secret = await challenged_with_phone(sms_app, changing)
        await sign_in(other)
        assert (
            await changing.post("/mfa/api/verify", json={"code": sms_app.ga.code(secret)})
        ).is_success
        sms_app.ga.clock.advance(30)
        assert (
            await other.post("/mfa/api/verify", json={"code": sms_app.ga.code(secret)})
        ).is_success

        await register(changing, OTHER_MOBILE)
        await changing.post("/mfa/api/phone/verify", json={"code": sms_app.last_code()})

        sms_app.ga.clock.advance(sms_app.ga.guard.settings.recheck_seconds)
        assert (await changing.get("/protected")).status_code == 200
        assert (await other.get("/protected")).status_code == 303


async def test_a_phone_code_is_not_a_sign_in_code(sms_app: SMSApp) -> None:
    async with sms_app.client() as client:
        secret = await challenged_with_phone(sms_app, client)
        await client.post("/mfa/api/verify", json={"code": sms_app.ga.code(secret)})
        await register(client, OTHER_MOBILE)
        phone_code = sms_app.last_code()

        assert (await verify_sms(client, phone_code)).status_code == 422
        verified = await client.post("/mfa/api/phone/verify", json={"code": phone_code})
    assert verified.status_code == 200


async def test_phone_numbers_need_a_signed_in_user(sms_app: SMSApp) -> None:
    async with sms_app.client() as client:
        for path, body in [
            ("/mfa/api/phone", {"phone": TYPED_MOBILE}),
            ("/mfa/api/phone/verify", {"code": "123456"}),
            ("/mfa/api/sms/send", {}),
        ]:
            response = await client.post(path, json=body)
            assert response.status_code == 401, path
            assert error_code(response) == "not_authenticated"
    assert sms_app.sent() == 0


async def test_enrolment_can_require_a_verified_phone_first() -> None:
    sms_app = build_sms_app(settings={"require_phone_for_enrolment": True})
    async with sms_app.client() as client:
        await sign_in(client)
        refused = await client.post("/mfa/api/totp/setup", json={})
        assert refused.status_code == 409
        assert error_code(refused) == "phone_required"

        await register(client, TYPED_MOBILE)
        assert (await client.post("/mfa/api/totp/setup", json={})).status_code == 409
        await client.post("/mfa/api/phone/verify", json={"code": sms_app.last_code()})

        await enrol(sms_app.ga, client)
        status = (await client.get("/mfa/api/status")).json()
    assert (status["enrolled"], status["phone_verified"]) == (True, True)


# -- SMS sign-in ----------------------------------------------------------------------------


async def test_a_texted_code_completes_the_second_factor(sms_app: SMSApp) -> None:
    async with sms_app.client() as client:
        await challenged_with_phone(sms_app, client)
        assert (await client.get("/mfa/api/status")).json()["methods"] == [
            "totp",
            "recovery",
            "sms",
        ]

        sent = await send(client)
        assert sent.status_code == 202, sent.text
        assert sent.json() == {"sent": True, "phone": MASKED, "expires_in": 600}
        assert [m.to for m in sms_app.outbox.messages] == [MOBILE]

        verified = await verify_sms(client, sms_app.last_code())
    assert verified.status_code == 200, verified.text
    assert verified.json() == {"verified": True, "method": "sms", "device_remembered": False}
    assert sms_app.ga.events.kinds()[-2:] == [EventKind.SMS_SENT, EventKind.VERIFIED]


async def test_the_session_stays_verified_after_an_sms_sign_in(sms_app: SMSApp) -> None:
    async with sms_app.client() as client:
        await challenged_with_phone(sms_app, client)
        await send(client)
        assert (await verify_sms(client, sms_app.last_code())).status_code == 200

        status = (await client.get("/mfa/api/status")).json()
        protected = await client.get("/protected")
    assert (status["verified"], status["verified_method"]) == (True, "sms")
    assert protected.status_code == 200


async def test_an_sms_code_is_used_once(sms_app: SMSApp) -> None:
    async with sms_app.client() as client:
        await challenged_with_phone(sms_app, client)
        await send(client)
        code = sms_app.last_code()
        assert (await verify_sms(client, code)).status_code == 200

        again = await verify_sms(client, code)
    assert again.status_code == 422
    assert error_code(again) == "invalid_code"


@pytest.mark.parametrize(("elapsed", "status_code"), [(599, 200), (600, 422)])
async def test_an_sms_code_expires_after_its_lifetime(
    sms_app: SMSApp, elapsed: int, status_code: int
) -> None:
    async with sms_app.client() as client:
        await challenged_with_phone(sms_app, client)
        await send(client)
        sms_app.ga.clock.advance(elapsed)
        response = await verify_sms(client, sms_app.last_code())
    assert response.status_code == status_code, response.text


async def test_a_shorter_lifetime_can_be_set() -> None:
    sms_app = build_sms_app(code_ttl_seconds=120)
    async with sms_app.client() as client:
        await challenged_with_phone(sms_app, client)
        assert (await send(client)).json()["expires_in"] == 120
        sms_app.ga.clock.advance(120)
        response = await verify_sms(client, sms_app.last_code())
    assert response.status_code == 422


async def test_a_resend_invalidates_the_previous_code(sms_app: SMSApp) -> None:
    async with sms_app.client() as client:
        await challenged_with_phone(sms_app, client)
        await send(client)
        first = sms_app.last_code()
        assert (await send(client)).status_code == 202
        second = sms_app.last_code()

        if first != second:  # one chance in a million that the CSPRNG draws the same code
            assert (await verify_sms(client, first)).status_code == 422
        assert (await verify_sms(client, second)).status_code == 200


async def test_an_sms_code_is_refused_in_another_session_of_the_same_user(sms_app: SMSApp) -> None:
    async with sms_app.client() as asking, sms_app.client() as other:
        await challenged_with_phone(sms_app, asking)
        await sign_in(other)
        await send(asking)
        code = sms_app.last_code()

        assert (await verify_sms(other, code)).status_code == 422
        assert (await verify_sms(asking, code)).status_code == 200


async def test_the_store_holds_only_a_keyed_hash_of_the_code(sms_app: SMSApp) -> None:
    async with sms_app.client() as client:
        await challenged_with_phone(sms_app, client)
        await send(client)
    code = sms_app.last_code()
    enrolment = await sms_app.ga.store.get(USER)
    assert enrolment is not None
    assert enrolment.sms_challenge is not None
    assert enrolment.sms_challenge.purpose is SMSPurpose.SIGN_IN
    assert enrolment.sms_challenge.phone == MOBILE
    assert code not in repr(enrolment)


async def test_wrong_sms_and_totp_codes_share_one_failure_limit() -> None:
    sms_app = build_sms_app(settings={"rate_limits": {"failures": "4/hour"}})
    async with sms_app.client() as client:
        secret = await challenged_with_phone(sms_app, client)
        await send(client)
        assert (await verify_sms(client, wrong(sms_app.last_code()))).status_code == 422
        wrong_totp = {"method": "totp", "code": sms_app.ga.code(secret, steps=10)}
        assert (await client.post("/mfa/api/verify", json=wrong_totp)).status_code == 422
        # A new text does not give the attacker new guesses.
        assert (await send(client)).status_code == 202
        assert (await verify_sms(client, wrong(sms_app.last_code()))).status_code == 422
        assert (await client.post("/mfa/api/verify", json=wrong_totp)).status_code == 422

        locked = await verify_sms(client, sms_app.last_code())
        assert locked.status_code == 429
        assert error_code(locked) == "too_many_attempts"
        assert int(locked.headers["Retry-After"]) >= 1
        right_totp = {"method": "totp", "code": sms_app.ga.code(secret)}
        assert (await client.post("/mfa/api/verify", json=right_totp)).status_code == 429


async def test_no_text_without_a_verified_phone(sms_app: SMSApp) -> None:
    async with sms_app.client() as client:
        secret = await challenged_with_phone(sms_app, client, phone=None)
        for response in [await send(client), await verify_sms(client, "123456")]:
            assert response.status_code == 409
            assert error_code(response) == "no_verified_phone"
        assert "sms" not in (await client.get("/mfa/api/status")).json()["methods"]

        # A number waiting for its code is not verified either.
        await client.post("/mfa/api/verify", json={"code": sms_app.ga.code(secret)})
        await register(client, TYPED_MOBILE)
        refused = await send(client)
    assert refused.status_code == 409
    assert error_code(refused) == "no_verified_phone"
    assert sms_app.sent() == 1


async def test_sms_is_refused_while_disabled() -> None:
    guarded = build_app()
    async with guarded.client() as client:
        await arrive(guarded, client, State.VERIFIED)
        for path, body in [
            ("/mfa/api/phone", {"phone": TYPED_MOBILE}),
            ("/mfa/api/phone/verify", {"code": "123456"}),
            ("/mfa/api/sms/send", {}),
            ("/mfa/api/verify", {"method": "sms", "code": "123456"}),
        ]:
            response = await client.post(path, json=body)
            assert response.status_code == 409, path
            assert error_code(response) == "sms_disabled", path
        status = (await client.get("/mfa/api/status")).json()
    assert status["methods"] == ["totp", "recovery"]


async def test_sms_is_not_offered_to_users_who_are_not_enrolled(sms_app: SMSApp) -> None:
    async with sms_app.client() as client:
        await sign_in(client)
        await register(client, TYPED_MOBILE)
        await client.post("/mfa/api/phone/verify", json={"code": sms_app.last_code()})
        status = (await client.get("/mfa/api/status")).json()
        assert (status["phone_verified"], status["methods"]) == (True, [])

        for response in [await send(client), await verify_sms(client, "123456")]:
            assert response.status_code == 409
            assert error_code(response) == "not_enrolled"
    assert sms_app.sent() == 1


async def test_a_texted_code_cannot_turn_2fa_off(sms_app: SMSApp) -> None:
    async with sms_app.client() as client:
        secret = await challenged_with_phone(sms_app, client)
        await client.post("/mfa/api/verify", json={"code": sms_app.ga.code(secret)})
        await send(client)
        response = await client.post(
            "/mfa/api/disable", json={"method": "sms", "code": sms_app.last_code()}
        )
        status = (await client.get("/mfa/api/status")).json()
    # SMS is the restricted fallback: it signs in, it does not turn 2FA off.
    assert (response.status_code, error_code(response)) == (403, "strong_factor_required")
    assert status["enrolled"] is True


async def test_sms_is_never_the_only_method(sms_app: SMSApp) -> None:
    async with sms_app.client() as client:
        secret = await challenged_with_phone(sms_app, client)
        assert (await client.get("/mfa/api/status")).json()["methods"] == [
            "totp",
            "recovery",
            "sms",
        ]
        await client.post("/mfa/api/verify", json={"code": sms_app.ga.code(secret)})
        sms_app.ga.clock.advance(30)
        disabled = await client.post("/mfa/api/disable", json={"code": sms_app.ga.code(secret)})
        assert disabled.status_code == 200, disabled.text
        status = (await client.get("/mfa/api/status")).json()
        # The phone went with the rest; verified again, alone it is no second factor.
        assert (status["phone_verified"], status["methods"]) == (False, [])
        assert (await register(client, MOBILE)).status_code == 202
        verified = await client.post("/mfa/api/phone/verify", json={"code": sms_app.last_code()})
        assert verified.status_code == 200, verified.text
        status = (await client.get("/mfa/api/status")).json()
    assert (status["phone_verified"], status["methods"]) == (True, [])


# -- SMS pumping: every limit refuses before the provider is called -------------------------


async def test_the_fourth_text_to_one_number_in_a_row_is_refused(sms_app: SMSApp) -> None:
    async with sms_app.client() as client:
        await challenged_with_phone(sms_app, client)
        for _ in range(3):
            assert (await send(client)).status_code == 202
        code = sms_app.last_code()

        refused = await send(client)
        assert_too_many_texts(refused)
        assert "Wait" in refused.json()["error"]["message"]
        assert sms_app.sent() == 3
        # The refused resend left the last code valid.
        assert (await verify_sms(client, code)).status_code == 200
    assert EventKind.SMS_LIMITED in sms_app.ga.events.kinds()


async def test_texts_per_number_are_limited_across_users() -> None:
    sms_app = build_sms_app(per_number="1/hour", per_user="1/hour")
    assert (await signed_in_register(sms_app, USER, MOBILE)).status_code == 202

    assert_too_many_texts(await signed_in_register(sms_app, OTHER_USER, MOBILE))
    assert sms_app.sent() == 1
    # The refused send gave back the slot it took of the user's own budget.
    assert (await signed_in_register(sms_app, OTHER_USER, OTHER_MOBILE)).status_code == 202
    assert sms_app.sent() == 2


async def test_texts_per_user_are_limited_across_numbers() -> None:
    sms_app = build_sms_app(per_user="2/hour", per_number="1/hour")
    async with sms_app.client() as client:
        await sign_in(client)
        assert (await register(client, MOBILE)).status_code == 202
        assert (await register(client, OTHER_MOBILE)).status_code == 202

        assert_too_many_texts(await register(client, UK_MOBILE))
    assert sms_app.sent() == 2
    # The refused send took no slot of the number it was for.
    assert (await signed_in_register(sms_app, OTHER_USER, UK_MOBILE)).status_code == 202


async def test_texts_per_client_ip_are_limited_across_users() -> None:
    sms_app = build_sms_app(per_ip="2/hour", per_user="1/hour")
    assert (await signed_in_register(sms_app, "a@example.test", MOBILE, "198.51.100.1")).is_success
    assert (
        await signed_in_register(sms_app, "b@example.test", OTHER_MOBILE, "198.51.100.1")
    ).is_success

    assert_too_many_texts(await signed_in_register(sms_app, USER, UK_MOBILE, "198.51.100.1"))
    assert sms_app.sent() == 2
    # From another address the same user may: the refusal took no slot of theirs.
    assert (await signed_in_register(sms_app, USER, UK_MOBILE, "198.51.100.2")).status_code == 202


async def test_a_resend_must_wait_for_the_cooldown() -> None:
    sms_app = build_sms_app(resend_cooldown="1/minute")
    async with sms_app.client() as client, sms_app.client() as another:
        await challenged_with_phone(sms_app, client)
        assert (await send(client)).status_code == 202
        code = sms_app.last_code()

        assert_too_many_texts(await send(client))
        assert sms_app.sent() == 1
        # The cooldown is the user's: someone else may still get a text.
        await challenged_with_phone(sms_app, another, OTHER_USER, OTHER_MOBILE)
        assert (await send(another)).status_code == 202
        assert (await verify_sms(client, code)).status_code == 200


def wait_message(seconds: int) -> str:
    unit = "second" if seconds == 1 else "seconds"
    return (
        f"You cannot get another text message yet. Wait {seconds} {unit} before asking for a "
        "new code."
    )


async def test_a_resend_inside_the_cooldown_says_how_long_to_wait() -> None:
    sms_app = build_sms_app(resend_cooldown="1/30 seconds")  # the default
    async with sms_app.client() as client:
        await challenged_with_phone(sms_app, client)
        before = time.time()
        assert (await send(client)).status_code == 202
        refused = await send(client)
        elapsed = time.time() - before

    assert_too_many_texts(refused)
    wait = int(refused.headers["Retry-After"])
    assert 30 - math.ceil(elapsed) <= wait <= 30
    assert refused.json() == {"error": {"code": "too_many_texts", "message": wait_message(wait)}}


async def test_the_wait_is_the_whole_wait_when_several_limits_are_spent() -> None:
    """The cooldown refuses first, but the user's hourly budget is spent too: the wait said is
    the hour's, so asking again after it is not refused once more."""
    sms_app = build_sms_app(resend_cooldown="1/30 seconds", per_user="1/hour")
    async with sms_app.client() as client:
        await challenged_with_phone(sms_app, client)
        assert (await send(client)).status_code == 202
        refused = await send(client)

    assert_too_many_texts(refused)
    wait = int(refused.headers["Retry-After"])
    assert 3540 < wait <= 3600
    said = "1 hour" if wait == 3600 else "60 minutes"  # rounded up, as Retry-After is
    assert refused.json()["error"]["message"] == (
        f"You cannot get another text message yet. Wait {said} before asking for a new code."
    )


@pytest.mark.redis
async def test_the_wait_is_what_is_left_of_the_limiters_window() -> None:
    """The wait comes from the send limiter's own window, read from the storage: a cooldown
    window with 23 s left (as if the text went 7 s ago) says 23 s, not the cooldown's 30."""
    url = redis_or_skip()
    user = f"user-{uuid.uuid4()}@example.test"
    # The number, the address and the global budget are shared with other tests on this Redis:
    # only this user's own windows (a fresh user) are counted here.
    sms_app = build_sms_app(
        settings={"storage_uri": url},
        resend_cooldown="1/30 seconds",
        per_number="1000/minute",
        per_number_daily="1000000/day",
        per_ip="1000/minute",
        global_hourly="1000000/hour",
        global_daily="1000000/day",
    )
    redis = Redis.from_url(url)
    try:
        async with sms_app.client() as client:
            await challenged_with_phone(sms_app, client, user)
            assert (await send(client)).status_code == 202
            # Shared storages see the user's hash, never the address.
            hashed = hashlib.sha256(user.encode()).hexdigest()[:32]
            [window] = await redis.keys(f"*mfa_guard:sms/cooldown/{hashed}*")
            before = time.time()
            assert await redis.pexpire(window, 23_000)
            refused = await send(client)
            elapsed = time.time() - before
    finally:
        await redis.aclose()
        await sms_app.ga.guard.aclose()

    assert_too_many_texts(refused)
    wait = int(refused.headers["Retry-After"])
    assert 23 - math.ceil(elapsed) <= wait <= 23
    assert refused.json()["error"]["message"] == wait_message(wait)


@pytest.mark.parametrize(
    "budget", [{"global_hourly": "2/hour"}, {"global_daily": "2/day"}], ids=["hourly", "daily"]
)
async def test_a_global_budget_caps_texts_from_everyone(budget: dict[str, Any]) -> None:
    sms_app = build_sms_app(**budget)
    assert (await signed_in_register(sms_app, "a@example.test", MOBILE, "198.51.100.1")).is_success
    assert (
        await signed_in_register(sms_app, "b@example.test", OTHER_MOBILE, "198.51.100.2")
    ).is_success

    assert_too_many_texts(await signed_in_register(sms_app, USER, UK_MOBILE, "198.51.100.3"))
    assert sms_app.sent() == 2


async def test_a_country_taken_off_the_allow_list_gets_no_more_texts() -> None:
    before = build_sms_app()
    async with before.client() as client:
        await challenged_with_phone(before, client, phone=UK_MOBILE)
        assert (await send(client)).status_code == 202
    after = build_sms_app(before.ga.store, allowed_regions=["FR"])

    async with after.client() as client:
        await sign_in(client)
        refused = await send(client)
    # Every pumping limit, the country allow-list included, answers 429 (checklist 6).
    assert refused.status_code == 429
    assert error_code(refused) == "sms_country_not_allowed"
    assert int(refused.headers["retry-after"]) >= 1
    assert after.sent() == 0


# -- Provider failures ---------------------------------------------------------------------


async def test_a_provider_failure_answers_503_and_keeps_the_previous_code(sms_app: SMSApp) -> None:
    async with sms_app.client() as client:
        await challenged_with_phone(sms_app, client)
        await send(client)
        code = sms_app.last_code()
        pending = await sms_app.ga.store.get(USER)

        sms_app.outbox.fail_next = 1
        failed = await send(client)
        assert failed.status_code == 503
        assert error_code(failed) == "sms_unavailable"
        message = failed.json()["error"]["message"]
        assert "authenticator app" in message
        assert CODE.search(failed.text) is None
        assert "612345678" not in failed.text
        assert await sms_app.ga.store.get(USER) == pending
        assert sms_app.sent() == 1

        assert (await verify_sms(client, code)).status_code == 200
    assert EventKind.SMS_FAILED in sms_app.ga.events.kinds()


async def test_a_failed_send_takes_no_slot_of_any_limit() -> None:
    sms_app = build_sms_app(
        per_user="1/hour",
        per_number="1/hour",
        per_ip="1/hour",
        resend_cooldown="1/hour",
        global_hourly="1/hour",
        global_daily="1/day",
    )
    async with sms_app.client() as client:
        await challenged_with_phone(sms_app, client)
        sms_app.outbox.fail_next = 1
        assert (await send(client)).status_code == 503

        assert (await send(client)).status_code == 202
        assert_too_many_texts(await send(client))
    assert sms_app.sent() == 1


async def test_a_failed_phone_text_leaves_no_pending_code(sms_app: SMSApp) -> None:
    sms_app.outbox.fail_next = 1
    async with sms_app.client() as client:
        await sign_in(client)
        failed = await register(client, TYPED_MOBILE)
        assert failed.status_code == 503
        assert error_code(failed) == "sms_unavailable"
        status = (await client.get("/mfa/api/status")).json()
    assert (status["phone"], status["phone_verified"]) == (None, False)
    enrolment = await sms_app.ga.store.get(USER)
    assert enrolment is None or enrolment.sms_challenge is None


# -- Client IP behind a proxy ---------------------------------------------------------------


async def test_behind_a_trusted_proxy_the_forwarded_address_is_counted() -> None:
    sms_app = build_sms_app(per_ip="1/hour", settings={"trusted_proxies": ["10.0.0.0/8"]})

    async def from_proxy(proxy: str, forwarded: str, user: str, phone: str) -> httpx.Response:
        async with sms_app.client(proxy, headers={"X-Forwarded-For": forwarded}) as client:
            await sign_in(client, user)
            return await register(client, phone)

    assert (await from_proxy("10.0.0.5", "198.51.100.7", "a@example.test", MOBILE)).is_success
    assert sms_app.ga.events.events[-1].client_ip == "198.51.100.7"
    # Another proxy of the same network, the same client: its one text is spent.
    assert_too_many_texts(
        await from_proxy("10.0.0.6", "198.51.100.7", "b@example.test", OTHER_MOBILE)
    )
    # The same proxy for another client: a text of its own.
    assert (await from_proxy("10.0.0.5", "198.51.100.8", USER, UK_MOBILE)).is_success
    assert sms_app.sent() == 2


async def test_from_an_untrusted_peer_the_forwarded_header_is_ignored() -> None:
    sms_app = build_sms_app(per_ip="1/hour", settings={"trusted_proxies": ["10.0.0.0/8"]})

    async def forged(forwarded: str, user: str, phone: str) -> httpx.Response:
        async with sms_app.client(PEER, headers={"X-Forwarded-For": forwarded}) as client:
            await sign_in(client, user)
            return await register(client, phone)

    assert (await forged("198.51.100.7", "a@example.test", MOBILE)).is_success
    assert sms_app.ga.events.events[-1].client_ip == PEER
    assert_too_many_texts(await forged("198.51.100.9", "b@example.test", OTHER_MOBILE))
    assert sms_app.sent() == 1


# -- The phone stays out of cookies and logs ------------------------------------------------


async def test_the_phone_never_goes_into_the_session_cookie(sms_app: SMSApp) -> None:
    seen: list[str] = []
    async with sms_app.client() as client:
        await sign_in(client)
        await register(client, TYPED_MOBILE)
        seen += session_strings(client)
        await client.post("/mfa/api/phone/verify", json={"code": sms_app.last_code()})
        seen += session_strings(client)
        await enrol(sms_app.ga, client)
        await client.post("/logout")
        await sign_in(client)
        await send(client)
        seen += session_strings(client)
        await verify_sms(client, sms_app.last_code())
        seen += session_strings(client)
        await client.get("/mfa/api/status")
        seen += session_strings(client)
    assert USER in seen  # the test app's own sign-in: the cookie was read
    for value in seen:
        assert "612345678" not in value
        assert "+33" not in value
        assert "••" not in value
        for code in sms_app.codes():
            assert code not in value


async def test_no_number_or_code_is_ever_logged(
    sms_app: SMSApp, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    async with sms_app.client() as client:
        await sign_in(client)
        await register(client, TYPED_MOBILE)
        await client.post("/mfa/api/phone/verify", json={"code": wrong(sms_app.last_code())})
        await client.post("/mfa/api/phone/verify", json={"code": sms_app.last_code()})
        await enrol(sms_app.ga, client)
        await client.post("/logout")
        await sign_in(client)
        await send(client)
        await verify_sms(client, wrong(sms_app.last_code()))
        sms_app.outbox.fail_next = 1
        assert (await send(client)).status_code == 503
        for _ in range(3):
            await send(client)
        await verify_sms(client, sms_app.last_code())
    assert any(r.name == "mfa_guard.audit" for r in caplog.records)
    logged = caplog.text + "".join(repr(r.args) for r in caplog.records)
    for number in (MOBILE, TYPED_MOBILE, "612345678", "6 12 34 56 78"):
        assert number not in logged
    assert len(sms_app.codes()) == 3  # the phone check, a sign-in code, a resend (then 429s)
    for code in sms_app.codes():
        assert code not in logged
