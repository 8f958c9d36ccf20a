"""Failure throttling on the embedded storage and on a real Redis shared by several guards."""

from __future__ import annotations

import asyncio
import time
import uuid

import pytest
from limits import parse_many
from limits.aio.storage import (
    MemoryStorage,
    RedisClusterStorage,
    RedisSentinelStorage,
    RedisStorage,
)
from limits.aio.strategies import MovingWindowRateLimiter

from mfa_guard.errors import ConfigurationError, StoreUnavailable
from mfa_guard.ratelimit import FailureLimiter, _key, failure_limiters, storage_from_uri
from mfa_guard.send_limits import SendLimiter
from mfa_guard.settings import DAY, RateLimitSettings, SMSSettings
from tests.databases import redis_or_skip


async def test_each_attempt_takes_a_slot_and_a_success_clears_them() -> None:
    limiter = FailureLimiter(storage_from_uri("memory://"), "3/minute")
    user = f"user-{uuid.uuid4()}"
    assert [await limiter.acquire(user, 0.0) for _ in range(3)] == [None, None, None]
    assert await limiter.acquire(user, 0.0) is not None
    await limiter.reset(user)
    assert await limiter.acquire(user, 0.0) is None


async def test_users_are_counted_apart() -> None:
    limiter = FailureLimiter(storage_from_uri("memory://"), "1/minute")
    assert await limiter.acquire("alice", 0.0) is None
    assert await limiter.acquire("bob", 0.0) is None
    assert await limiter.acquire("alice", 0.0) is not None


@pytest.mark.redis
async def test_two_guards_sharing_redis_hold_one_limit_in_total() -> None:
    url = redis_or_skip()
    first = FailureLimiter(storage_from_uri(url), "4/minute")
    second = FailureLimiter(storage_from_uri(url), "4/minute")
    user = f"user-{uuid.uuid4()}"
    results = [await (first if i % 2 else second).acquire(user, 0.0) for i in range(6)]
    assert results[:4] == [None] * 4
    assert all(r is not None for r in results[4:])
    await first.reset(user)
    assert await second.acquire(user, 0.0) is None
    await second.reset(user)
    await first.aclose()
    await second.aclose()


@pytest.mark.parametrize(
    "uri",
    [
        "redis://127.0.0.1:1/0",
        "redis+sentinel://127.0.0.1:1/mymaster",
        # None of its nodes answering is a RedisClusterException, not a RedisError.
        "redis+cluster://127.0.0.1:1,127.0.0.1:2",
    ],
)
async def test_an_unreachable_redis_fails_closed(uri: str) -> None:
    storage = storage_from_uri(uri)
    limiter = FailureLimiter(storage, "3/minute")
    texts = SendLimiter(storage, SMSSettings())
    try:
        with pytest.raises(StoreUnavailable):
            await limiter.acquire("alice", 0.0)
        with pytest.raises(StoreUnavailable):
            await limiter.reset("alice")
        with pytest.raises(StoreUnavailable):
            await texts.reserve("alice", "+33612345678", "203.0.113.7", 0.0)
        assert await limiter.ping() is False
    finally:
        await limiter.aclose()


def test_an_unknown_storage_scheme_is_a_configuration_error() -> None:
    with pytest.raises(ConfigurationError, match="MFA_GUARD_STORAGE_URI"):
        storage_from_uri("carrier-pigeon://loft")


@pytest.mark.parametrize(
    ("uri", "storage"),
    [
        ("redis://:secret@127.0.0.1:6379/3", RedisStorage),
        ("rediss://127.0.0.1:6380/0", RedisStorage),
        ("redis+sentinel://127.0.0.1:26379/mymaster", RedisSentinelStorage),
        ("redis+cluster://127.0.0.1:7000,127.0.0.1:7001", RedisClusterStorage),
    ],
)
def test_every_redis_deployment_limits_accepts_is_accepted(uri: str, storage: type) -> None:
    # Built without connecting: the URI alone decides the storage, on redis-py.
    built = storage_from_uri(uri)
    assert isinstance(built, storage)
    assert isinstance(built, RedisStorage)
    assert type(built.bridge).__name__ == "RedispyBridge"


@pytest.mark.redis
async def test_a_budget_taken_in_one_call_is_the_one_limits_reads() -> None:
    """The kit takes every window of a budget in one script (all or none): the keys and
    counts are those ``limits`` reads back window by window (here on the system clock, which
    is the kit's outside tests)."""
    url = redis_or_skip()
    storage = storage_from_uri(url)
    limiter = FailureLimiter(storage, "2/minute;3/hour")
    user = f"user-{uuid.uuid4()}"
    now = time.time()
    try:
        assert [await limiter.acquire(user, now) for _ in range(2)] == [None, None]
        refused = await limiter.acquire(user, now)
        assert refused is not None
        assert refused.retry_at == now + 60
        assert refused.in_a_row is False
        minute, hour = parse_many("2/minute;3/hour")
        reader = MovingWindowRateLimiter(storage)
        key = _key(user)
        minute_left = await reader.get_window_stats(minute, "mfa_guard", "failures", key)
        hour_left = await reader.get_window_stats(hour, "mfa_guard", "failures", key)
        # The refused attempt took a slot in neither window (``limits``' own hits, made
        # window by window, would have taken one in the hour).
        assert (minute_left.remaining, hour_left.remaining) == (0, 1)
        await limiter.reset(user)
        assert (await reader.get_window_stats(hour, "mfa_guard", "failures", key)).remaining == 3
    finally:
        await limiter.aclose()


@pytest.mark.parametrize("uri", ["memory://", pytest.param("redis", marks=pytest.mark.redis)])
async def test_budgets_of_one_user_are_counted_apart(uri: str) -> None:
    storage = storage_from_uri(redis_or_skip() if uri == "redis" else uri)
    codes = FailureLimiter(storage, "1/minute")
    recovery = FailureLimiter(storage, "1/minute", budget="recovery")
    user = f"user-{uuid.uuid4()}"
    try:
        assert await codes.acquire(user, 0.0) is None
        assert await codes.acquire(user, 0.0) is not None
        assert await recovery.acquire(user, 0.0) is None
        await codes.reset(user)
        assert await codes.acquire(user, 0.0) is None
        assert await recovery.acquire(user, 0.0) is not None
    finally:
        await codes.aclose()


# -- a refused attempt counts nowhere  --------------------------------------


@pytest.mark.parametrize("uri", ["memory://", pytest.param("redis", marks=pytest.mark.redis)])
async def test_a_refused_attempt_takes_no_slot_in_any_window(uri: str) -> None:
    """A burst past the minute's limit is refused there, and the refused attempts leave the
    hour and the failures in a row as they were: only the checked ones count."""
    storage = storage_from_uri(redis_or_skip() if uri == "redis" else uri)
    limiter = FailureLimiter(storage, "2/minute;10/hour", consecutive=5)
    user = f"user-{uuid.uuid4()}"
    now = 1_800_000_000.0
    try:
        outcomes = [await limiter.acquire(user, now) for _ in range(50)]
        assert outcomes[:2] == [None, None]
        refused = [wait for wait in outcomes[2:] if wait is not None]
        assert len(refused) == 48
        assert all(not wait.in_a_row for wait in refused)
        assert all(wait.retry_at == now + 60 for wait in refused)
        # A minute later: three more in a row are allowed (2 + 3 = 5), the sixth is refused by
        # the failures in a row, not by the hour (5 of 10).
        later = now + 61
        assert [await limiter.acquire(user, later) for _ in range(2)] == [None, None]
        assert await limiter.acquire(user, later + 61) is None
        locked = await limiter.acquire(user, later + 122)
        assert locked is not None
        assert locked.in_a_row
    finally:
        await limiter.reset(user)
        await limiter.aclose()


@pytest.mark.parametrize("uri", ["memory://", pytest.param("redis", marks=pytest.mark.redis)])
async def test_parallel_attempts_never_take_more_than_the_budget(uri: str) -> None:
    """All windows are checked and taken in one atomic step: 200 attempts at once from two
    guards get exactly the minute's 3 slots, and the hour counts those 3 only."""
    url = redis_or_skip() if uri == "redis" else uri
    first_storage = storage_from_uri(url)
    second_storage = first_storage if uri == "memory://" else storage_from_uri(url)
    first = FailureLimiter(first_storage, "3/minute;5/hour")
    second = FailureLimiter(second_storage, "3/minute;5/hour")
    user = f"user-{uuid.uuid4()}"
    now = 1_800_000_000.0
    try:
        outcomes = await asyncio.gather(
            *((first if i % 2 else second).acquire(user, now) for i in range(200))
        )
        assert sum(wait is None for wait in outcomes) == 3
        # Two minutes later the hour holds 3 of 5: two more go through, the third is refused.
        later = now + 120
        assert [await first.acquire(user, later) for _ in range(2)] == [None, None]
        refused = await second.acquire(user, later)
        assert refused is not None
        assert refused.retry_at == now + 3600
    finally:
        await first.reset(user)
        await first.aclose()
        await second.aclose()


@pytest.mark.parametrize("uri", ["memory://", pytest.param("redis", marks=pytest.mark.redis)])
async def test_reaching_the_failures_in_a_row_takes_days_at_the_default_budget(uri: str) -> None:
    """The documented promise (docs/security.md, "Lockout without denial of service"): an
    attacker who guesses as fast as the default budget lets them, retrying the moment each
    refusal says, needs more than two days to reach the codes' failures in a row, and more
    than a day for the recovery codes'; an owner who signs in once a day is never locked."""
    storage = storage_from_uri(redis_or_skip() if uri == "redis" else uri)
    codes, recovery = failure_limiters(storage, RateLimitSettings())
    user = f"user-{uuid.uuid4()}"
    start = 1_800_000_000.0
    try:
        for limiter, bound, at_least in (
            (codes, RateLimitSettings().consecutive_failures, 2 * DAY),
            (recovery, RateLimitSettings().consecutive_recovery_failures, 2 * DAY),
        ):
            now, checked, locked = start, 0, False
            for _ in range(10 * bound):
                wait = await limiter.acquire(user, now)
                if wait is None:
                    checked += 1  # a wrong code, checked and failed
                elif wait.in_a_row:
                    locked = True
                    break
                else:
                    now = wait.retry_at
            assert locked, (checked, now - start)
            assert checked == bound
            assert now - start > at_least, (now - start) / DAY
            await limiter.reset(user)
    finally:
        await codes.reset(user)
        await codes.aclose()


def test_a_storage_that_cannot_take_a_budget_at_once_is_refused() -> None:
    """Another ``limits`` storage (here its own memory one, as MongoDB would be) has no
    all-or-none acquire: the failure budgets refuse it at start-up rather than count loosely."""
    with pytest.raises(ConfigurationError, match="one atomic step"):
        FailureLimiter(MemoryStorage(), "3/minute")
