"""Issue 18: no secret is ever kept in the security log.

The guard of ``tests/log_guard.py`` looks through every event appended to an event store
(``MemoryEventStore``, ``SQLEventStore``) in every test of the suite, as it looks through every
log record. Here: the events of a user's whole story, kept in the log, hold none of the story's
secrets; and the guard does catch a secret put in any field of an event, and says where the event
was stored from without showing the secret.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from mfa_guard import EventKind
from mfa_guard.core import recovery, totp
from mfa_guard.core import sms as sms_codes
from mfa_guard.events import AuditEvent
from mfa_guard.sms import OutboxSMS
from mfa_guard.stores.events import EventQuery, EventStore, MemoryEventStore
from mfa_guard.stores.sql import SQLEventStore
from tests.apps import build_app, enrol, sign_in
from tests.databases import sqlite_url
from tests.log_guard import STORED_EVENTS, LogGuard, Secrets, leaks

USER = "solo@example.test"
TYPED_MOBILE = "+33 6 12 34 56 78"
SMS = {
    "enabled": True,
    "allowed_regions": ["FR"],
    "provider": "outbox",
    "resend_cooldown": "100/second",
}
TEXTED_CODE = re.compile(r"\b\d{6}\b")
NOW = 1_800_000_000.0


def looked_for(guard: LogGuard) -> Secrets:
    return guard.secrets.merged(guard.outside)


def stored(guard: LogGuard) -> list[str]:
    """The messages of the records standing for stored events."""
    return [r.getMessage() for r in guard.records if r.name.startswith(STORED_EVENTS)]


@pytest.fixture(params=["memory", "sqlite"])
async def log(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[EventStore]:
    if request.param == "memory":
        yield MemoryEventStore()
        return
    sql = SQLEventStore(sqlite_url(tmp_path))
    yield sql
    await sql.close()


async def test_a_whole_storys_events_kept_in_the_log_hold_no_secret(
    log: EventStore, no_secret_in_any_log: LogGuard
) -> None:
    """Enrolment, a phone and its texted codes, a failed text, recovery, a lock-out: every
    event the kit published, kept in the log, and looked through for each secret of the story."""
    guard = no_secret_in_any_log
    outbox = OutboxSMS()
    ga = build_app(sms_provider=outbox, sms=SMS, rate_limits={"failures": "4/minute;100/day"})
    async with ga.client(
        headers={"User-Agent": "Mozilla/5.0 (X11; Linux) Firefox/128.0"}
    ) as client:
        await sign_in(client, USER)
        secret, codes = await enrol(ga, client)
        assert (await client.post("/mfa/api/phone", json={"phone": TYPED_MOBILE})).is_success
        texted = TEXTED_CODE.search(outbox.messages[-1].text)
        assert texted is not None
        verified = await client.post("/mfa/api/phone/verify", json={"code": texted.group()})
        assert verified.status_code == 200, verified.text
        await sign_in(client, USER)
        outbox.fail_next = 1
        assert (await client.post("/mfa/api/sms/send", json={})).status_code == 503
        used = await client.post("/mfa/api/verify", json={"method": "recovery", "code": codes[0]})
        assert used.status_code == 200, used.text
        await sign_in(client, USER)
        ga.clock.advance(30)
        wrong = str((int(ga.code(secret)) + 1) % 10**6).zfill(6)
        statuses = [
            (await client.post("/mfa/api/verify", json={"code": wrong})).status_code
            for _ in range(5)
        ]
        assert statuses[-1] == 429, statuses
    published = ga.events.events
    for kind in (
        EventKind.ENROLLED,
        EventKind.PHONE_VERIFIED,
        EventKind.SMS_FAILED,
        EventKind.RECOVERY_CODE_USED,
        EventKind.LOCKED_OUT,
    ):
        assert kind in ga.events.kinds(), kind

    for event in published:
        await log.append(event)

    kept = await log.events(EventQuery(users=(USER,), limit=200))
    assert [each.event for each in kept] == published[::-1]
    assert any(each.event.user_agent for each in kept)
    secrets = looked_for(guard)
    collected = {*secrets.words.values(), *secrets.needles.values()}
    for secret_kind in ("a TOTP key", "a recovery code", "a phone number", "an SMS code"):
        assert secret_kind in collected, secret_kind
    assert len(stored(guard)) == len(published)
    assert [str(leak) for leak in leaks(guard.records, secrets)] == []


@pytest.mark.logs_secrets(reason="stores secrets in events on purpose, to see the guard find each")
async def test_the_guard_finds_a_secret_in_any_field_of_a_stored_event(
    log: EventStore, no_secret_in_any_log: LogGuard
) -> None:
    guard = no_secret_in_any_log
    key = totp.new_secret()
    (recovery_code,) = recovery.generate(1)
    texted = sms_codes.new_code()
    phone = sms_codes.normalise_phone(TYPED_MOBILE, ["FR"])
    assert isinstance(phone, str)
    plain = AuditEvent(EventKind.VERIFIED, USER, NOW)
    for field, value, kind in (
        ("detail", f"enforce=on secret={key}", "a TOTP key"),
        ("user_agent", f"Mozilla/5.0 {totp.grouped(key).lower()}", "a TOTP key"),
        ("detail", f"by={recovery_code.upper()}", "a recovery code"),
        ("method", texted, "an SMS code"),
        ("client_ip", f"{texted[:3]} {texted[3:]}", "an SMS code"),
        ("site", phone, "a phone number"),
        ("user_id", "06 12 34 56 78", "a phone number"),
    ):
        guard.records.clear()

        change: dict[str, Any] = {field: value}
        await log.append(replace(plain, **change))

        [leak] = leaks(guard.records, looked_for(guard))
        assert kind in leak.kinds, (field, kind)
        shown = str(leak)
        assert shown.startswith(f"{STORED_EVENTS} ({type(log).__name__}) INFO ({__file__}:")
        assert f"stored {kind}" in shown
        assert value not in shown  # where and what, never the secret itself
    # An event with no secret is looked through, and passes.
    guard.records.clear()
    await log.append(replace(plain, detail="enforce=on deadline=2027-01-15T08:00:00Z"))
    assert len(stored(guard)) == 1
    assert leaks(guard.records, looked_for(guard)) == []
    guard.records.clear()
