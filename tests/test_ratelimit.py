"""Failure throttling on the embedded storage and on a real Redis shared by several guards."""

from __future__ import annotations

import os
import socket
import uuid

import pytest
from limits import parse_many
from limits.aio.storage import RedisClusterStorage, RedisSentinelStorage, RedisStorage
from limits.aio.strategies import MovingWindowRateLimiter

from mfa_guard.errors import ConfigurationError, StoreUnavailable
from mfa_guard.ratelimit import FailureLimiter, _key, storage_from_uri

REDIS_URL = os.environ.get("MFA_GUARD_TEST_REDIS_URL", "redis://127.0.0.1:6379/11")


def redis_or_skip() -> str:
    """The test Redis; a skip only outside CI, where it must run."""
    if os.environ.get("CI") == "true":
        return REDIS_URL
    try:
        with socket.create_connection(("127.0.0.1", int(REDIS_URL.split(":")[2].split("/")[0])), 1):
            pass
    except OSError as exc:  # pragma: no cover - only without a local Redis
        pytest.skip(f"Redis at {REDIS_URL} is not reachable: {exc}")
    return REDIS_URL


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


async def test_an_unreachable_redis_fails_closed() -> None:
    limiter = FailureLimiter(storage_from_uri("redis://127.0.0.1:1/0"), "3/minute")
    with pytest.raises(StoreUnavailable):
        await limiter.acquire("alice", 0.0)
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
    """The kit takes every window of a budget in one round trip (a pipeline of ``limits``'
    own script): the keys and counts are those ``limits`` reads back window by window."""
    url = redis_or_skip()
    storage = storage_from_uri(url)
    limiter = FailureLimiter(storage, "2/minute;3/hour")
    user = f"user-{uuid.uuid4()}"
    try:
        assert [await limiter.acquire(user, 0.0) for _ in range(2)] == [None, None]
        refused = await limiter.acquire(user, 0.0)
        assert refused is not None
        assert 1.0 <= refused.retry_at <= 60.0
        assert refused.in_a_row is False
        minute, hour = parse_many("2/minute;3/hour")
        reader = MovingWindowRateLimiter(storage)
        key = _key(user)
        minute_left = await reader.get_window_stats(minute, "mfa_guard", "failures", key)
        hour_left = await reader.get_window_stats(hour, "mfa_guard", "failures", key)
        # The refused attempt took no slot in the minute, and one in the hour (as ``limits``'
        # own hits, made window by window, would).
        assert (minute_left.remaining, hour_left.remaining) == (0, 0)
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
