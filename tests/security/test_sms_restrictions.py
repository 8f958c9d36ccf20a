"""SMS is restricted and cannot be pumped (docs/security.md "SMS is restricted", "SMS pumping",
checklist 6): off by default, a code lives ten minutes at most, every spelling of one number
shares its send limit, and one number gets at most ten texts a day whoever asks."""

from __future__ import annotations

import uuid

import httpx
import pytest
from pydantic import ValidationError

from mfa_guard.settings import SMSSettings
from mfa_guard.sms import OutboxSMS
from tests.apps import GuardedApp, build_app, settings_for, sign_in
from tests.sms_apps import MOBILE, SMS

TYPED_MOBILE = "+33 6 12 34 56 78"

# -- the restricted defaults, and one number however it is spelt --------------------------------


def test_sms_is_off_by_default_and_a_code_lives_ten_minutes_at_most() -> None:
    settings = settings_for()
    assert settings.sms.enabled is False
    assert settings.sms.code_ttl_seconds == 600
    assert settings_for(sms={"code_ttl_seconds": 60}).sms.code_ttl_seconds == 60
    for too_long in (601, 3600):
        with pytest.raises(ValidationError, match="code_ttl_seconds"):
            settings_for(sms={"code_ttl_seconds": too_long})
    # Turned on, it needs a country allow-list (SMS pumping to premium ranges).
    with pytest.raises(ValidationError, match="allow-list"):
        settings_for(sms={"enabled": True})


async def register(ga: GuardedApp, user: str, phone: str) -> httpx.Response:
    async with ga.client() as client:
        await sign_in(client, user)
        return await client.post("/mfa/api/phone", json={"phone": phone})


async def test_every_spelling_of_one_number_shares_its_send_limit() -> None:
    """The per-number limit counts the E.164 number: another spelling is no new number."""
    outbox = OutboxSMS()
    ga = build_app(sms_provider=outbox, sms=SMS | {"per_number": "1/hour"})
    assert (await register(ga, "first@example.test", TYPED_MOBILE)).status_code == 202
    spellings = ["+33612345678", "0033 6 12 34 56 78", "+33-6-12-34-56-78", "+33 (6) 12.34.56.78"]
    for n, spelling in enumerate(spellings):
        response = await register(ga, f"user{n}@example.test", spelling)
        assert response.status_code == 429, (spelling, response.text)
        assert response.json()["error"]["code"] == "too_many_texts"
    # Spellings the kit does not guess at (an extension, other digits) are refused outright.
    for n, spelling in enumerate(["+33 6 12 34 56 78 ext 5", "+３３６１２３４５６７８"]):  # noqa: RUF001
        response = await register(ga, f"other{n}@example.test", spelling)
        assert response.status_code == 400, (spelling, response.text)
        assert response.json()["error"]["code"] == "invalid_phone"
    assert [message.to for message in outbox.messages] == [MOBILE]


# -- a number gets at most ten texts a day -------------------------------------------


async def test_one_number_gets_at_most_ten_texts_a_day_whoever_asks() -> None:
    """The 10-minute window alone (3 per 10 minutes) let 432 texts a day go to one number; the
    daily cap refuses the eleventh with 429 and Retry-After, before the provider is called."""
    assert SMSSettings().per_number_daily == "10/day"
    outbox = OutboxSMS()
    ga = build_app(
        sms_provider=outbox,
        sms={
            "enabled": True,
            "provider": "outbox",
            "allowed_regions": ["FR"],
            "per_number": "100/minute",  # the short window out of the way: the day decides
            "per_ip": "100/hour",
        },
    )
    number = f"+3361234{uuid.uuid4().int % 10**4:04d}"
    for n in range(11):
        async with ga.client() as client:
            await sign_in(client, f"user{n}@example.test")
            response = await client.post("/mfa/api/phone", json={"phone": number})
        if n < 10:
            assert response.status_code == 202, response.text
    assert response.status_code == 429, response.text
    assert response.json()["error"]["code"] == "too_many_texts"
    assert 1 <= int(response.headers["Retry-After"]) <= 86_400
    assert len(outbox.messages) == 10
