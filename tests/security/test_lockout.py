"""Lockout without denial of service (docs/security.md "lockout abuse", docs/security.md).

Wrong codes are counted per account in two budgets: codes (authenticator app and text message)
and recovery codes. An attacker who holds the password and uses one budget up leaves the owner
the other path; a success on any path clears both counts; each budget still stops at its limit
with 429 and Retry-After, and the owner is told (a ``locked_out`` event).
"""

from __future__ import annotations

import asyncio
import functools
import secrets
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from cryptography.fernet import Fernet
from pydantic import ValidationError

from mfa_guard import EventKind
from mfa_guard.cli import main
from mfa_guard.core import recovery, totp
from mfa_guard.crypto import SecretBox
from mfa_guard.ratelimit import FailureLimiter, storage_from_uri
from mfa_guard.settings import RateLimitSettings
from mfa_guard.sms import OutboxSMS
from mfa_guard.stores.sql import SQLStore
from mfa_guard.testing import CHEAP_KDF
from tests.apps import GuardedApp, build_app, enrol, settings_for, sign_in, store_app
from tests.databases import redis_or_skip
from tests.scenarios import USER, State, arrive, wrong_code

# Small budgets, so a test reaches each limit in a few requests.
CODES = "3/minute;100/day"
RECOVERY = "2/hour;10/day"
WRONG_RECOVERY_CODE = "aaaa-bbbb-cccc-dddd"
IN_A_ROW = 4
RECOVERY_IN_A_ROW = 3
YEAR = 360 * 86_400  # limits' year


@functools.cache
def recovery_codes() -> tuple[tuple[str, ...], recovery.RecoveryCodeSet]:
    # One set for the module, at the tests' cost (each recovery attempt hashes at it).
    codes = recovery.generate()
    return tuple(codes), recovery.hash_set(codes, CHEAP_KDF)


@dataclass
class Account:
    """An enrolled owner, with a verified mobile number, on a guarded app."""

    ga: GuardedApp
    outbox: OutboxSMS
    user: str
    secret: str
    codes: tuple[str, ...]

    def session(self) -> httpx.AsyncClient:
        return self.ga.client()

    async def signed_in(self, client: httpx.AsyncClient) -> httpx.AsyncClient:
        """The password typed: the session waits for the second factor."""
        await sign_in(client, self.user)
        return client

    def code(self) -> str:
        return self.ga.code(self.secret)

    def wrong_code(self) -> str:
        return str((int(self.code()) + 500_000) % 1_000_000).zfill(6)


async def verify(client: httpx.AsyncClient, code: str, method: str = "totp") -> httpx.Response:
    return await client.post("/mfa/api/verify", json={"method": method, "code": code})


def assert_locked(response: httpx.Response, longest: int) -> None:
    """429, the machine code, and a Retry-After within the window that refused."""
    assert response.status_code == 429, response.text
    assert response.json()["error"]["code"] == "too_many_attempts"
    assert 1 <= int(response.headers["Retry-After"]) <= longest


def lockouts(ga: GuardedApp) -> list[str | None]:
    return [event.method for event in ga.events.events if event.kind is EventKind.LOCKED_OUT]


@pytest.fixture(
    params=[
        pytest.param("memory://", id="memory"),
        pytest.param("redis", id="redis", marks=pytest.mark.redis),
    ]
)
async def account(request: pytest.FixtureRequest) -> AsyncIterator[Account]:
    storage_uri = redis_or_skip() if request.param == "redis" else request.param
    made = await new_account(storage_uri, {"failures": CODES, "recovery_failures": RECOVERY})
    try:
        yield made
    finally:
        await made.ga.guard.aclose()


@pytest.fixture(
    params=[
        pytest.param("memory://", id="memory"),
        pytest.param("redis", id="redis", marks=pytest.mark.redis),
    ]
)
async def account_in_a_row(request: pytest.FixtureRequest) -> AsyncIterator[Account]:
    """Windows too wide to matter; four wrong codes or three wrong recovery codes in a row."""
    storage_uri = redis_or_skip() if request.param == "redis" else request.param
    limits = {
        "failures": "50/minute;100/day",
        "recovery_failures": "50/minute;100/day",
        "consecutive_failures": IN_A_ROW,
        "consecutive_recovery_failures": RECOVERY_IN_A_ROW,
    }
    made = await new_account(storage_uri, limits)
    try:
        yield made
    finally:
        await made.ga.guard.aclose()


async def new_account(storage_uri: str, rate_limits: dict[str, object]) -> Account:
    outbox = OutboxSMS()
    # Redis is shared with other tests and runs: an account and a number of this test's own, and
    # send budgets that others' texts cannot use up (the send budget is not what is tested).
    plenty = "1000/hour"
    ga = build_app(
        storage_uri=storage_uri,
        rate_limits=rate_limits,
        sms_provider=outbox,
        sms={
            "enabled": True,
            "allowed_regions": ["FR"],
            "provider": "outbox",
            "resend_cooldown": "100/second",
            "per_user": plenty,
            "per_number": plenty,
            "per_ip": plenty,
            "global_hourly": plenty,
            "global_daily": "10000/day",
        },
    )
    user = f"owner-{uuid.uuid4().hex[:12]}@acme.test"
    mobile = f"+3361234{secrets.randbelow(10**4):04d}"  # a valid French mobile range
    secret = totp.new_secret()
    codes, hashed = recovery_codes()
    encrypted = SecretBox(ga.guard.settings.encryption_keys).encrypt(secret)
    now = ga.clock()
    assert await store_app(ga.store, user, encrypted, step=int(now // 30), recovery=hashed, now=now)
    await ga.store.set_phone(user, mobile, now)
    ga.clock.advance(30)  # the enrolment used this step
    return Account(ga, outbox, user, secret, codes)


@pytest.fixture(
    params=[
        pytest.param("memory://", id="memory"),
        pytest.param("redis", id="redis", marks=pytest.mark.redis),
    ]
)
async def account_on_defaults(request: pytest.FixtureRequest) -> AsyncIterator[Account]:
    """An owner whose budgets are the defaults."""
    storage_uri = redis_or_skip() if request.param == "redis" else request.param
    made = await new_account(storage_uri, {})
    try:
        yield made
    finally:
        await made.ga.guard.aclose()


async def test_a_burst_of_wrong_codes_spends_only_the_attempts_that_were_checked(
    account_on_defaults: Account,
) -> None:
    """95 wrong codes at once: 5 are checked, 90 refused, and the refused ones count nowhere,
    neither in the hour, the day nor the failures in a row (they did, and an hour
    later the right code met a lock of a year)."""
    account = account_on_defaults
    async with account.session() as attacker, account.session() as owner:
        await account.signed_in(attacker)
        burst = await asyncio.gather(*(verify(attacker, account.wrong_code()) for _ in range(95)))
        statuses = sorted(response.status_code for response in burst)
        assert statuses == [422] * 5 + [429] * 90
        assert {r.json()["error"]["code"] for r in burst if r.status_code == 429} == {
            "too_many_attempts"
        }
        assert all(1 <= int(r.headers["Retry-After"]) <= 60 for r in burst if r.status_code == 429)

        account.ga.clock.advance(3600)
        await account.signed_in(owner)
        signed = await verify(owner, account.code())
        assert signed.status_code == 200, signed.text


async def test_a_burst_of_wrong_recovery_codes_spends_only_the_attempts_that_were_checked(
    account_on_defaults: Account,
) -> None:
    account = account_on_defaults
    async with account.session() as attacker, account.session() as owner:
        await account.signed_in(attacker)
        burst = await asyncio.gather(
            *(verify(attacker, WRONG_RECOVERY_CODE, "recovery") for _ in range(15))
        )
        assert sorted(response.status_code for response in burst) == [422] * 3 + [429] * 12

        account.ga.clock.advance(3601)  # the hour of the 3 checked ones has passed
        await account.signed_in(owner)
        signed = await verify(owner, account.codes[3], "recovery")
        assert signed.status_code == 200, signed.text


async def test_an_attacker_who_used_up_the_codes_leaves_the_owner_their_recovery_codes(
    account: Account,
) -> None:
    async with account.session() as attacker, account.session() as owner:
        await account.signed_in(attacker)
        for _ in range(3):
            assert (await verify(attacker, account.wrong_code())).status_code == 422
        assert_locked(await verify(attacker, account.wrong_code()), 60)

        # The budget is the account's: the owner's right code waits too, in any session …
        await account.signed_in(owner)
        assert_locked(await verify(owner, account.code()), 60)
        # … but their recovery code, counted apart, signs them in.
        signed = await verify(owner, account.codes[0], "recovery")
        assert signed.status_code == 200, signed.text
        assert (await owner.get("/protected")).status_code == 200
        assert lockouts(account.ga) == ["totp", "totp"]

        # The success cleared both counts (after the answer).
        await account.ga.guard.service.drain()
        for _ in range(3):
            assert (await verify(attacker, account.wrong_code())).status_code == 422
        for _ in range(2):
            assert (await verify(attacker, WRONG_RECOVERY_CODE, "recovery")).status_code == 422


async def test_an_attacker_who_used_up_the_recovery_codes_leaves_the_owner_their_app(
    account: Account,
) -> None:
    async with account.session() as attacker, account.session() as owner:
        await account.signed_in(attacker)
        for _ in range(2):
            assert (await verify(attacker, WRONG_RECOVERY_CODE, "recovery")).status_code == 422
        # Even a right recovery code waits for the hour, and is not spent.
        assert_locked(await verify(attacker, account.codes[1], "recovery"), 3600)
        assert lockouts(account.ga) == ["recovery"]

        await account.signed_in(owner)
        assert_locked(await verify(owner, account.codes[1], "recovery"), 3600)
        signed = await verify(owner, account.code())
        assert signed.status_code == 200, signed.text
        assert (await owner.get("/protected")).status_code == 200

        await account.ga.guard.service.drain()
        for _ in range(3):
            assert (await verify(attacker, account.wrong_code())).status_code == 422
        assert (await verify(attacker, WRONG_RECOVERY_CODE, "recovery")).status_code == 422
        async with account.session() as later:
            await account.signed_in(later)
            used = await verify(later, account.codes[1], "recovery")
            assert used.status_code == 200, used.text


async def test_wrong_text_message_codes_use_up_the_codes_budget_not_the_recovery_one(
    account: Account,
) -> None:
    async with account.session() as attacker:
        await account.signed_in(attacker)
        sent = await attacker.post("/mfa/api/sms/send", json={})
        assert sent.status_code == 202, sent.text
        for _ in range(3):
            assert (await verify(attacker, account.wrong_code(), "sms")).status_code == 422
        assert_locked(await verify(attacker, account.wrong_code(), "sms"), 60)
        assert_locked(await verify(attacker, account.code()), 60)
        assert lockouts(account.ga) == ["sms", "totp"]
        signed = await verify(attacker, account.codes[2], "recovery")
        assert signed.status_code == 200, signed.text


async def enrolled_and_remembered(
    ga: GuardedApp, owner: httpx.AsyncClient
) -> tuple[str, list[str]]:
    """The owner turns 2FA on, signs in again and ticks "Remember this browser": their secret
    and recovery codes."""
    await sign_in(owner)
    secret, codes = await enrol(ga, owner)
    await sign_in(owner)
    ga.clock.advance(30)
    remembered = await owner.post(
        "/mfa/api/verify", json={"code": ga.code(secret), "remember_device": True}
    )
    assert remembered.status_code == 200, remembered.text
    await ga.guard.service.drain()
    return secret, codes


async def test_a_remembered_browser_stays_a_way_in_when_both_budgets_are_spent() -> None:
    ga = build_app(
        rate_limits={"failures": CODES, "recovery_failures": RECOVERY},
        trusted_devices={"enabled": True},
    )
    # https: the device cookie is Secure, and a client sends it back over TLS only.
    async with (
        ga.client(base_url="https://testserver") as owner,
        ga.client(base_url="https://testserver") as attacker,
    ):
        secret, codes = await enrolled_and_remembered(ga, owner)

        await sign_in(attacker)
        wrong = str((int(ga.code(secret)) + 500_000) % 1_000_000).zfill(6)
        for _ in range(3):
            assert (await verify(attacker, wrong)).status_code == 422
        assert_locked(await verify(attacker, wrong), 60)
        for _ in range(2):
            assert (await verify(attacker, WRONG_RECOVERY_CODE, "recovery")).status_code == 422
        assert_locked(await verify(attacker, codes[0], "recovery"), 3600)

        # Both code paths are closed; the owner's remembered browser asks for no code.
        await owner.post("/logout")
        await sign_in(owner)
        assert (await owner.get("/protected")).status_code == 200
        assert (await owner.get("/mfa/api/status")).json()["verified_method"] == "device"


async def test_a_remembered_browser_signing_in_lifts_the_failures_in_a_row() -> None:
    """As `consecutive_failures` says: a success on another path, a remembered browser
    included, clears both counts, so the owner's app works again in a new browser."""
    ga = build_app(
        rate_limits={
            "failures": "50/minute;100/day",
            "recovery_failures": "50/minute;100/day",
            "consecutive_failures": IN_A_ROW,
            "consecutive_recovery_failures": RECOVERY_IN_A_ROW,
        },
        trusted_devices={"enabled": True},
    )
    async with (
        ga.client(base_url="https://testserver") as owner,
        ga.client(base_url="https://testserver") as attacker,
        ga.client(base_url="https://testserver") as new_browser,
    ):
        secret, _ = await enrolled_and_remembered(ga, owner)

        await sign_in(attacker)
        wrong = str((int(ga.code(secret)) + 500_000) % 1_000_000).zfill(6)
        for _ in range(IN_A_ROW):
            assert (await verify(attacker, wrong)).status_code == 422
        for _ in range(RECOVERY_IN_A_ROW):
            assert (await verify(attacker, WRONG_RECOVERY_CODE, "recovery")).status_code == 422
        locked = await verify(attacker, wrong)
        assert locked.json()["error"]["code"] == "locked_after_failures"

        await owner.post("/logout")
        await sign_in(owner)
        assert (await owner.get("/protected")).status_code == 200
        await ga.guard.service.drain()

        await sign_in(new_browser)
        ga.clock.advance(30)
        signed = await verify(new_browser, ga.code(secret))
        assert signed.status_code == 200, signed.text


@pytest.mark.parametrize(
    ("method", "allowed", "longest"),
    [
        pytest.param("totp", 5, 60, id="codes-5-a-minute"),
        pytest.param("recovery", 3, 3600, id="recovery-codes-3-an-hour"),
    ],
)
async def test_each_default_budget_stops_at_its_limit(
    method: str, allowed: int, longest: int
) -> None:
    ga = build_app()
    settings = ga.guard.settings.rate_limits
    assert (settings.failures, settings.recovery_failures) == (
        "5/minute;20/hour;30/day",
        "3/hour;4/day",
    )
    secret = totp.new_secret()
    encrypted = SecretBox(ga.guard.settings.encryption_keys).encrypt(secret)
    _, hashed = recovery_codes()
    now = ga.clock()
    assert await store_app(
        ga.store, "solo@example.test", encrypted, step=int(now // 30), recovery=hashed, now=now
    )
    ga.clock.advance(30)
    wrong = WRONG_RECOVERY_CODE if method == "recovery" else "000000"
    async with ga.client() as attacker:
        await sign_in(attacker)
        for _ in range(allowed):
            assert (await verify(attacker, wrong, method)).status_code == 422
        assert_locked(await verify(attacker, wrong, method), longest)
    assert lockouts(ga) == [method]


TOO_MANY = "at most 100"


@pytest.mark.parametrize(
    ("budget", "value", "refusal"),
    [
        ("failures", "100/day", None),
        ("failures", "5/minute;20/hour;100/day", None),
        ("failures", "101/day", TOO_MANY),  # one window over NIST's 100
        ("failures", "5/minute;101/year", TOO_MANY),
        ("failures", "100/second", TOO_MANY),  # 8,640,000 a day
        ("failures", "10/minute", TOO_MANY),  # 14,400 a day
        ("recovery_failures", "5/hour;10/day", None),
        ("recovery_failures", "100/day", None),
        ("recovery_failures", "101/day", TOO_MANY),
        ("recovery_failures", "10/minute", TOO_MANY),
        ("recovery_failures", "", "at least one limit"),
        ("recovery_failures", "lots", "limits notation"),
    ],
)
def test_no_failure_budget_lets_more_than_a_hundred_attempts_a_day_through(
    budget: str, value: str, refusal: str | None
) -> None:
    """Neither budget, codes nor recovery codes, may allow more than 100 failures in one window
    or in a day, whatever its windows (NIST SP 800-63B); the refusal names the setting."""
    if refusal is None:
        assert getattr(settings_for(rate_limits={budget: value}).rate_limits, budget) == value
    else:
        with pytest.raises(ValidationError, match=rf"rate_limits\.{budget} .*{refusal}"):
            settings_for(rate_limits={budget: value})


def test_the_recovery_budget_is_read_from_its_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MFA_GUARD_RATE_LIMITS__RECOVERY_FAILURES", "3/hour;6/day")
    assert settings_for().rate_limits.recovery_failures == "3/hour;6/day"


@pytest.mark.redis
def test_reset_user_clears_both_counts(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """An administrator's reset (a lost phone) leaves no lock on either path."""
    uri = redis_or_skip()
    database = f"sqlite+aiosqlite:///{tmp_path}/mfa.db"
    user = f"owner-{uuid.uuid4().hex[:12]}@acme.test"
    monkeypatch.setenv("MFA_GUARD_ENCRYPTION_KEYS", Fernet.generate_key().decode())
    monkeypatch.setenv("MFA_GUARD_STORAGE_URI", uri)
    monkeypatch.setenv("MFA_GUARD_RATE_LIMITS__FAILURES", CODES)
    monkeypatch.setenv("MFA_GUARD_RATE_LIMITS__RECOVERY_FAILURES", RECOVERY)
    monkeypatch.delenv("MFA_GUARD_DEBUG", raising=False)

    async def enrolled() -> None:
        store = SQLStore(database)
        try:
            assert await store_app(
                store, user, "token", step=1, recovery=recovery_codes()[1], now=1.0
            )
        finally:
            await store.close()

    async def attempts() -> tuple[bool, bool]:
        """Whether each budget (codes, recovery codes) refuses, after using it up."""
        storage = storage_from_uri(uri)
        codes = FailureLimiter(storage, CODES)
        recovery_budget = FailureLimiter(storage, RECOVERY, budget="recovery")
        try:
            return (
                await codes.acquire(user, time.time()) is not None,
                await recovery_budget.acquire(user, time.time()) is not None,
            )
        finally:
            await codes.aclose()

    asyncio.run(enrolled())
    for _ in range(3):
        asyncio.run(attempts())
    assert asyncio.run(attempts()) == (True, True)
    assert main(["reset-user", user, "--database-url", database]) == 0
    assert asyncio.run(attempts()) == (False, False)


async def test_failures_in_a_row_lock_a_path_until_a_success_on_another(
    account_in_a_row: Account,
) -> None:
    account = account_in_a_row
    async with account.session() as attacker, account.session() as owner:
        await account.signed_in(attacker)
        for _ in range(IN_A_ROW):
            assert (await verify(attacker, account.wrong_code())).status_code == 422
        # No window is full: the failures in a row are. The path stays locked (NIST SP 800-63B:
        # at most 100 in a row on the account) until a success elsewhere, however long.
        locked = await verify(attacker, account.code())
        assert locked.status_code == 429
        assert locked.json()["error"]["code"] == "locked_after_failures"
        assert "recovery code" in locked.json()["error"]["message"]
        assert YEAR - 60 <= int(locked.headers["Retry-After"]) <= YEAR
        await account.signed_in(owner)
        assert (await verify(owner, account.code())).status_code == 429

        signed = await verify(owner, account.codes[0], "recovery")
        assert signed.status_code == 200, signed.text
        await account.ga.guard.service.drain()
        ga = account.ga
        ga.clock.advance(30)
        assert (await verify(attacker, account.code())).status_code == 200


async def test_recovery_codes_in_a_row_lock_only_recovery_codes(
    account_in_a_row: Account,
) -> None:
    account = account_in_a_row
    async with account.session() as attacker:
        await account.signed_in(attacker)
        for _ in range(RECOVERY_IN_A_ROW):
            wrong = await verify(attacker, WRONG_RECOVERY_CODE, "recovery")
            assert wrong.status_code == 422
        locked = await verify(attacker, account.codes[1], "recovery")
        assert (locked.status_code, locked.json()["error"]["code"]) == (
            429,
            "locked_after_failures",
        )
        assert (await verify(attacker, account.code())).status_code == 200


def test_the_failures_in_a_row_of_both_paths_are_at_most_a_hundred() -> None:
    assert RateLimitSettings(consecutive_failures=90, consecutive_recovery_failures=10)
    with pytest.raises(ValidationError, match="at most 100 failed attempts in a row"):
        RateLimitSettings(consecutive_failures=95, consecutive_recovery_failures=10)
    with pytest.raises(ValidationError):
        RateLimitSettings(consecutive_failures=0)
    defaults = RateLimitSettings()
    assert defaults.consecutive_failures + defaults.consecutive_recovery_failures == 100


# -- throttling: at most 100 failures -----------------------------------------------------------


async def test_after_ninety_failures_in_a_row_even_the_right_code_waits_for_another_path() -> None:
    # By default the codes' path locks after 90 failures in a row and the recovery codes' after
    # 10: at most 100 on the account (NIST SP 800-63B), whatever the windows allow.
    ga = build_app(rate_limits={"failures": "100/day"})
    async with ga.client() as client:
        secret = await arrive(ga, client, State.CHALLENGED)
        wrong = wrong_code(ga, secret)
        for _ in range(90):
            refused = await client.post("/mfa/api/verify", json={"code": wrong})
            assert refused.status_code == 422, refused.text
        locked = await client.post("/mfa/api/verify", json={"code": ga.code(secret)})
    assert locked.status_code == 429, locked.text
    assert locked.json()["error"]["code"] == "locked_after_failures"
    # Not a window that reopens in a day: only a success on another path (or an admin) does.
    assert int(locked.headers["retry-after"]) > 300 * 86_400
    assert (await ga.store.get(USER)) is not None
    assert EventKind.LOCKED_OUT in ga.events.kinds()
