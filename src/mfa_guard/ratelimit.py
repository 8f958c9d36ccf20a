"""Failed-attempt throttling per user, across sessions, IPs and workers, through ``limits``."""

from __future__ import annotations

import asyncio
import hashlib
import inspect
import time
from collections.abc import Awaitable, Iterable
from typing import Any, TypeVar, cast

from limits import RateLimitItem, parse_many
from limits.aio.storage import MemoryStorage, Storage
from limits.aio.strategies import MovingWindowRateLimiter
from limits.errors import ConfigurationError as LimitsConfigurationError
from limits.errors import StorageError
from limits.storage import storage_from_string

from mfa_guard.errors import ConfigurationError, StoreUnavailable

_NAMESPACE = "mfa_guard"
T = TypeVar("T")


class _MemoryStorage(MemoryStorage):
    """``limits``' memory storage, whose ``clear`` can pull a key from under its own expiry
    sweep (a KeyError in a background task). Clearing leaves an empty entry the sweep removes."""

    async def clear(self, key: str) -> None:
        self.storage.pop(key, None)
        self.expirations.pop(key, None)
        if key in self.events:
            self.events[key] = []


def storage_from_uri(uri: str) -> Storage:
    """An async ``limits`` storage from ``memory://``, ``redis://`` … (``async+`` implied)."""
    full = uri if uri.startswith("async+") else f"async+{uri}"
    if full == "async+memory://":
        return _MemoryStorage(full, wrap_exceptions=True)
    options: dict[str, Any] = {}
    if full.startswith(("async+redis://", "async+rediss://")):
        options["retry_policy"] = _redis_retry_policy()
    try:
        storage = storage_from_string(full, wrap_exceptions=True, **options)
    except (LimitsConfigurationError, ValueError) as exc:
        raise ConfigurationError(f"MFA_GUARD_STORAGE_URI {uri!r} is not usable: {exc}") from exc
    if not isinstance(storage, Storage):
        raise ConfigurationError(f"MFA_GUARD_STORAGE_URI {uri!r} is not an async storage")
    return storage


def _redis_retry_policy() -> Any:
    """One immediate retry on a broken connection: after a Redis restart the pooled connections
    are dead, and the first command should reconnect rather than fail the request. A Redis that
    is really down fails the retry too, and the request fails closed."""
    from coredis.exceptions import ConnectionError as RedisConnectionError
    from coredis.retry import ConstantRetryPolicy

    return ConstantRetryPolicy((RedisConnectionError, ConnectionError), retries=1, delay=0.0)


class FailureLimiter:
    """Counts second-factor attempts since the last success; refuses past any limit.

    Every attempt takes a slot *before* the code is checked, atomically in the storage, so
    concurrent guesses cannot slip past the limit; a success clears the count.
    """

    def __init__(self, storage: Storage, spec: str) -> None:
        self._storage = storage
        self._limiter = MovingWindowRateLimiter(storage)
        self._items: list[RateLimitItem] = parse_many(spec)

    async def aclose(self) -> None:
        """Closes the storage's connections (``limits`` has no close of its own)."""
        client = getattr(getattr(self._storage, "bridge", None), "storage", None)
        pool = getattr(client, "connection_pool", None)
        disconnect = getattr(pool, "disconnect", None)
        if callable(disconnect):
            result = disconnect()
            if inspect.isawaitable(result):
                await result

    async def acquire(self, user_id: str, now: float) -> float | None:
        """``None`` if the attempt may go ahead, else the time at which it may be retried.
        Every limit takes its slot at once: one round trip to the storage, not one per limit."""
        key = _key(user_id)
        taken = await self._all(
            self._limiter.hit(item, _NAMESPACE, "failures", key) for item in self._items
        )
        for item, ok in zip(self._items, taken, strict=True):
            if not ok:
                try:
                    stats = await self._limiter.get_window_stats(item, _NAMESPACE, "failures", key)
                except (StorageError, OSError) as exc:
                    raise StoreUnavailable() from exc
                return retry_at(stats.reset_time, now)
        return None

    async def reset(self, user_id: str) -> None:
        key = _key(user_id)
        await self._all(
            self._limiter.clear(item, _NAMESPACE, "failures", key) for item in self._items
        )

    @staticmethod
    async def _all(calls: Iterable[Awaitable[T]]) -> list[T]:
        results = await asyncio.gather(*calls, return_exceptions=True)
        for result in results:
            if isinstance(result, StorageError | OSError):
                raise StoreUnavailable() from result
            if isinstance(result, BaseException):
                raise result
        return cast("list[T]", results)


def retry_at(reset_time: float, now: float) -> float:
    """When a window reopens, on the caller's clock: ``limits`` counts on the system clock,
    the kit on its injected one, so only the time left is carried over (at least a second)."""
    return now + max(1.0, reset_time - time.time())


def _key(user_id: str) -> str:
    # Shared storages (Redis) see a hash, not the user's id or e-mail address.
    return hashlib.sha256(user_id.encode("utf-8")).hexdigest()[:32]
