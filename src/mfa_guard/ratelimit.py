"""Failed-attempt throttling per user, across sessions, IPs and workers, through ``limits``."""

from __future__ import annotations

import asyncio
import hashlib
import inspect
import time
from collections.abc import Awaitable, Iterable, Sequence
from typing import Any, NamedTuple, TypeVar, cast
from urllib.parse import urlsplit

from limits import RateLimitItem, RateLimitItemPerYear, parse_many
from limits.aio.storage import MemoryStorage, RedisStorage, Storage
from limits.aio.strategies import MovingWindowRateLimiter
from limits.errors import ConfigurationError as LimitsConfigurationError
from limits.errors import StorageError
from limits.storage import storage_from_string

from mfa_guard.errors import ConfigurationError, StoreUnavailable
from mfa_guard.settings import RateLimitSettings

_NAMESPACE = "mfa_guard"
T = TypeVar("T")
# One limit of a budget, as ``limits``' moving window takes it: (key, amount, seconds).
Window = tuple[str, int, int]


class _MemoryStorage(MemoryStorage):
    """``limits``' memory storage, whose ``clear`` can pull a key from under its own expiry
    sweep (a KeyError in a background task). Clearing leaves an empty entry the sweep removes."""

    async def clear(self, key: str) -> None:
        self.storage.pop(key, None)
        self.expirations.pop(key, None)
        if key in self.events:
            self.events[key] = []

    async def acquire_entries(self, windows: Sequence[Window]) -> list[bool]:
        """A slot in each moving window (see :meth:`_RedisStorage.acquire_entries`)."""
        return [await self.acquire_entry(key, amount, expiry) for key, amount, expiry in windows]

    async def clear_keys(self, keys: Sequence[str]) -> None:
        for key in keys:
            await self.clear(key)


class _RedisStorage(RedisStorage):
    """``limits``' Redis storage on redis-py, taking several windows in one round trip.

    ``limits`` takes one moving window per call, so a budget of three windows
    (``5/minute;20/hour;100/day``) costs three scripts sent and answered one by one. Here the
    same script of ``limits`` (``acquire_moving_window.lua``, each run atomic on its own key,
    as when called one by one) runs on every key in one pipeline: one write, one read, the
    keys and the algorithm unchanged, so ``limits`` still reads and clears them.
    """

    async def acquire_entries(self, windows: Sequence[Window]) -> list[bool]:
        from redis.exceptions import NoScriptError

        bridge = self.bridge
        script = bridge.lua_acquire_moving_window  # type: ignore[attr-defined]
        client = bridge.get_connection()  # type: ignore[attr-defined]
        now = time.time()
        calls = [(bridge.prefixed_key(key), now, amount, expiry) for key, amount, expiry in windows]
        try:
            replies = await self._run(client, script.sha, calls)
            missing = [i for i, reply in enumerate(replies) if isinstance(reply, NoScriptError)]
            if missing:
                # Redis restarted (or flushed its scripts): none of those ran. Load, run them.
                await client.script_load(script.script)
                again = await self._run(client, script.sha, [calls[i] for i in missing])
                for i, reply in zip(missing, again, strict=True):
                    replies[i] = reply
        except self.base_exceptions as exc:
            raise StorageError(exc) from exc
        for reply in replies:
            if isinstance(reply, Exception):
                raise StorageError(reply) from reply
        return [bool(reply) for reply in replies]

    async def clear_keys(self, keys: Sequence[str]) -> None:
        """Every key in one ``DEL``."""
        bridge = self.bridge
        try:
            await bridge.get_connection().delete(  # type: ignore[attr-defined]
                *(bridge.prefixed_key(key) for key in keys)
            )
        except self.base_exceptions as exc:
            raise StorageError(exc) from exc

    @staticmethod
    async def _run(client: Any, sha: str, calls: list[tuple[str, float, int, int]]) -> list[Any]:
        pipeline = client.pipeline(transaction=False)
        for key, now, amount, expiry in calls:
            pipeline.evalsha(sha, 1, key, now, amount, expiry, 1)
        return cast("list[Any]", await pipeline.execute(raise_on_error=False))


_BATCHED = (_MemoryStorage, _RedisStorage)


def storage_from_uri(uri: str) -> Storage:
    """An async ``limits`` storage from ``memory://``, ``redis://`` … (``async+`` implied).

    Redis goes through redis-py (``limits``' ``implementation="redispy"``): less CPU per call
    than coredis, and pipelines (see :class:`_RedisStorage`)."""
    full = uri if uri.startswith("async+") else f"async+{uri}"
    if full == "async+memory://":
        return _MemoryStorage(full, wrap_exceptions=True)
    scheme = urlsplit(full).scheme
    options: dict[str, Any] = {}
    if scheme.startswith("async+redis"):
        options = {"implementation": "redispy", "retry": _redis_retry()}
    try:
        if scheme in ("async+redis", "async+rediss", "async+redis+unix"):
            storage: Any = _RedisStorage(full, wrap_exceptions=True, **options)
        else:
            storage = storage_from_string(full, wrap_exceptions=True, **options)
    except (LimitsConfigurationError, ValueError) as exc:
        raise ConfigurationError(f"MFA_GUARD_STORAGE_URI {uri!r} is not usable: {exc}") from exc
    if not isinstance(storage, Storage):
        raise ConfigurationError(f"MFA_GUARD_STORAGE_URI {uri!r} is not an async storage")
    return storage


def _redis_retry() -> Any:
    """One immediate retry on a broken connection: after a Redis restart the pooled connections
    are dead, and the first command should reconnect rather than fail the request. A Redis that
    is really down fails the retry too, and the request fails closed (redis-py's own default,
    ten retries backing off up to a second each, would hold it for seconds)."""
    from redis.asyncio.retry import Retry
    from redis.backoff import NoBackoff

    return Retry(NoBackoff(), retries=1)


class FailureLimiter:
    """Counts second-factor attempts since the last success; refuses past any limit.

    Every attempt takes a slot *before* the code is checked, atomically in the storage, so
    concurrent guesses cannot slip past the limit; a success clears the count. ``budget``
    names the count, so that several budgets of one user (codes, recovery codes) are kept
    apart in one storage.
    """

    def __init__(
        self,
        storage: Storage,
        spec: str,
        *,
        budget: str = "failures",
        consecutive: int | None = None,
    ) -> None:
        self._storage = storage
        self._limiter = MovingWindowRateLimiter(storage)
        self._items: list[RateLimitItem] = parse_many(spec)
        self._in_a_row: RateLimitItem | None = None
        if consecutive is not None:
            # Failures in a row, whatever the time between them: a window of a year, which
            # only a success (clearing every window) empties before it runs out.
            self._in_a_row = RateLimitItemPerYear(consecutive)
            self._items.append(self._in_a_row)
        self._budget = budget

    async def aclose(self) -> None:
        """Closes the storage's connections (``limits`` has no close of its own)."""
        client = getattr(getattr(self._storage, "bridge", None), "storage", None)
        close = getattr(client, "aclose", None)
        if close is None:
            close = getattr(getattr(client, "connection_pool", None), "disconnect", None)
        if callable(close):
            result = close()
            if inspect.isawaitable(result):
                await result

    async def acquire(self, user_id: str, now: float) -> Wait | None:
        """``None`` if the attempt may go ahead, else when it may be retried (and whether the
        failures-in-a-row limit refused it). Every limit takes its slot at once: one round trip
        to the storage, not one per limit."""
        key = _key(user_id)
        storage = self._storage
        if isinstance(storage, _BATCHED):
            windows = [
                (window_key, item.amount, item.get_expiry())
                for window_key, item in zip(self._keys(user_id), self._items, strict=True)
            ]
            try:
                taken = await storage.acquire_entries(windows)
            except (StorageError, OSError) as exc:
                raise StoreUnavailable() from exc
        else:
            taken = await self._all(
                self._limiter.hit(item, _NAMESPACE, self._budget, key) for item in self._items
            )
        for item, ok in zip(self._items, taken, strict=True):
            if not ok:
                try:
                    stats = await self._limiter.get_window_stats(
                        item, _NAMESPACE, self._budget, key
                    )
                except (StorageError, OSError) as exc:
                    raise StoreUnavailable() from exc
                return Wait(retry_at(stats.reset_time, now), in_a_row=item is self._in_a_row)
        return None

    async def reset(self, user_id: str) -> None:
        await reset_all(user_id, [self])

    def _keys(self, user_id: str) -> list[str]:
        key = _key(user_id)
        return [item.key_for(_NAMESPACE, self._budget, key) for item in self._items]

    @staticmethod
    async def _all(calls: Iterable[Awaitable[T]]) -> list[T]:
        results = await asyncio.gather(*calls, return_exceptions=True)
        for result in results:
            if isinstance(result, StorageError | OSError):
                raise StoreUnavailable() from result
            if isinstance(result, BaseException):
                raise result
        return cast("list[T]", results)


class Wait(NamedTuple):
    """A refused attempt: when it may be retried, and whether the failures-in-a-row limit (not
    a window) refused it, which only a success on another path or an admin reset lifts."""

    retry_at: float
    in_a_row: bool = False


def failure_limiters(
    storage: Storage, settings: RateLimitSettings
) -> tuple[FailureLimiter, FailureLimiter]:
    """The two budgets of every user, in ``storage``: authenticator and text-message codes, and
    recovery codes (docs/security.md, "Lockout without denial of service")."""
    codes = FailureLimiter(storage, settings.failures, consecutive=settings.consecutive_failures)
    recovery = FailureLimiter(
        storage,
        settings.recovery_failures,
        budget="recovery",
        consecutive=settings.consecutive_recovery_failures,
    )
    return codes, recovery


async def reset_all(user_id: str, limiters: Sequence[FailureLimiter]) -> None:
    """Clears the user's count in every budget of ``limiters``: one call (one ``DEL`` on
    Redis) for the budgets that share one of the kit's storages."""
    batched: dict[int, tuple[_MemoryStorage | _RedisStorage, list[str]]] = {}
    others: list[FailureLimiter] = []
    for limiter in limiters:
        storage = limiter._storage
        if isinstance(storage, _BATCHED):
            batched.setdefault(id(storage), (storage, []))[1].extend(limiter._keys(user_id))
        else:
            others.append(limiter)
    try:
        for storage, keys in batched.values():
            await storage.clear_keys(keys)
    except (StorageError, OSError) as exc:
        raise StoreUnavailable() from exc
    key = _key(user_id)
    await FailureLimiter._all(
        limiter._limiter.clear(item, _NAMESPACE, limiter._budget, key)
        for limiter in others
        for item in limiter._items
    )


def retry_at(reset_time: float, now: float) -> float:
    """When a window reopens, on the caller's clock: ``limits`` counts on the system clock,
    the kit on its injected one, so only the time left is carried over (at least a second)."""
    return now + max(1.0, reset_time - time.time())


def _key(user_id: str) -> str:
    # Shared storages (Redis) see a hash, not the user's id or e-mail address.
    return hashlib.sha256(user_id.encode("utf-8")).hexdigest()[:32]
