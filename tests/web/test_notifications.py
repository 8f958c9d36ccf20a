"""Users hear about what happens to their second factor: the notifier hook."""

from __future__ import annotations

import logging

import pytest

from mfa_guard.events import AuditEvent, EventKind, MemoryEventSink
from mfa_guard.notifications import (
    LoggingNotifier,
    MemoryNotifier,
    Notice,
    Notification,
    NotifyingSink,
)
from tests.apps import build_app, enrol, sign_in

USER = "solo@example.test"


async def test_factor_changes_and_new_recovery_codes_are_notified() -> None:
    notifier = MemoryNotifier()
    ga = build_app(notifier=notifier)
    async with ga.client() as client:
        await sign_in(client, USER)
        secret, _ = await enrol(ga, client)
        ga.clock.advance(30)
        await client.post("/mfa/api/recovery-codes", json={})
        disabled = await client.post("/mfa/api/disable", json={"code": ga.code(secret)})
        assert disabled.status_code == 200
    assert [n.notice for n in notifier.notifications] == [
        Notice.FACTOR_ADDED,
        Notice.RECOVERY_CODES_REPLACED,
        Notice.FACTOR_REMOVED,
    ]
    assert {(n.user_id, n.client_ip) for n in notifier.notifications} == {(USER, "203.0.113.7")}
    # Every audit event still reaches the wrapped sink.
    assert EventKind.VERIFIED in ga.events.kinds()


async def test_a_lockout_is_notified_once_however_many_attempts_it_refuses() -> None:
    notifier = MemoryNotifier()
    ga = build_app(notifier=notifier, rate_limits={"failures": "2/minute;100/day"})
    async with ga.client() as client:
        await sign_in(client, f"locked-{id(notifier)}@example.test")
        await enrol(ga, client)
        await sign_in(client, f"locked-{id(notifier)}@example.test")
        answers = [
            (await client.post("/mfa/api/verify", json={"code": "000000"})).status_code
            for _ in range(5)
        ]
    assert answers == [422, 422, 429, 429, 429]
    assert [n.notice for n in notifier.notifications] == [Notice.FACTOR_ADDED, Notice.LOCKED_OUT]


async def test_a_used_recovery_code_is_notified() -> None:
    notifier = MemoryNotifier()
    ga = build_app(notifier=notifier)
    async with ga.client() as client:
        await sign_in(client, USER)
        _, codes = await enrol(ga, client)
        await sign_in(client, USER)
        used = await client.post("/mfa/api/verify", json={"method": "recovery", "code": codes[0]})
        assert used.status_code == 200
    assert [n.notice for n in notifier.notifications][-1] is Notice.RECOVERY_CODE_USED


class BrokenNotifier:
    async def notify(self, notification: Notification) -> None:
        raise RuntimeError("the mail server is down")


async def test_a_failing_notifier_never_blocks_a_sign_in(caplog: pytest.LogCaptureFixture) -> None:
    ga = build_app(notifier=BrokenNotifier())
    async with ga.client() as client:
        await sign_in(client, USER)
        secret, _ = await enrol(ga, client)
        await sign_in(client, USER)
        ga.clock.advance(30)
        assert (await client.post("/mfa/api/verify", json={"code": ga.code(secret)})).is_success
    assert "mfa_guard notifier failed on factor_added" in caplog.text


async def test_lockouts_are_told_again_after_the_quiet_period() -> None:
    inner = MemoryEventSink()
    notifier = MemoryNotifier()
    sink = NotifyingSink(inner, notifier, lockout_quiet_seconds=600)
    for at in (0.0, 10.0, 599.0, 600.0, 650.0):
        await sink.emit(AuditEvent(EventKind.LOCKED_OUT, "alice", at))
    await sink.emit(AuditEvent(EventKind.LOCKED_OUT, "bob", 5.0))
    told = [(n.user_id, n.at) for n in notifier.notifications]
    assert told == [("alice", 0.0), ("alice", 600.0), ("bob", 5.0)]
    assert len(inner.events) == 6


async def test_the_logging_notifier_logs_no_code(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="mfa_guard.notifications")
    await LoggingNotifier().notify(Notification(Notice.FACTOR_ADDED, USER, 0.0, "totp"))
    assert caplog.messages == [
        "would notify solo@example.test: Two-factor authentication was turned on for your account."
    ]
