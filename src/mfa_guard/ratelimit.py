"""Failed-attempt throttling per user, across sessions, IPs and workers, through ``limits``."""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections.abc import Sequence
from typing import Any, NamedTuple
from urllib.parse import urlsplit

from limits import RateLimitItem, RateLimitItemPerYear, parse_many
from limits.aio.storage import (
    MemoryStorage,
    RedisClusterStorage,
    RedisSentinelStorage,
    RedisStorage,
    Storage,
)
from limits.aio.storage.memory import Entry
from limits.errors import ConfigurationError as LimitsConfigurationError
from limits.errors import StorageError
from limits.storage import storage_from_string

from mfa_guard.errors import ConfigurationError, StoreUnavailable
from mfa_guard.redis_clients import closed_connections_raise_connection_error, connection_retry
from mfa_guard.settings import STORAGE_TIMEOUT, RateLimitSettings

_NAMESPACE = "mfa_guard"
# One limit of a budget, as ``limits``' moving window takes it: (key, amount, seconds).
Window = tuple[str, int, int]


# A refusal of an all-or-none acquire: which window was full, and when its oldest kept attempt
# leaves it (on the caller's clock).
Refusal = tuple[int, float]

# Every window of a budget checked, then every one taken, in one script: atomic on the server,
# so parallel attempts from any number of workers cannot take more than the budget, and a
# refused attempt takes a slot in no window (the failures in a row included). The keys and the
# list layout are those of ``limits``' moving window (``acquire_moving_window.lua``: a list of
# timestamps, newest first, trimmed to the limit, expiring with the window), so ``limits``
# still reads and clears them. KEYS: the windows; ARGV: now, then limit and seconds for each.
_ACQUIRE_ALL_OR_NONE = """
local now = tonumber(ARGV[1])
for i, key in ipairs(KEYS) do
    local limit = tonumber(ARGV[2 * i])
    local expiry = tonumber(ARGV[2 * i + 1])
    local oldest = redis.call('lindex', key, limit - 1)
    if oldest and tonumber(oldest) >= now - expiry then
        return {i, oldest}
    end
end
for i, key in ipairs(KEYS) do
    local limit = tonumber(ARGV[2 * i])
    local expiry = tonumber(ARGV[2 * i + 1])
    redis.call('lpush', key, ARGV[1])
    redis.call('ltrim', key, 0, limit - 1)
    redis.call('expire', key, expiry)
end
return 0
"""


class _MemoryStorage(MemoryStorage):
    """``limits``' memory storage, whose ``clear`` can pull a key from under its own expiry
    sweep (a KeyError in a background task). Clearing leaves an empty entry the sweep removes."""

    async def clear(self, key: str) -> None:
        self.storage.pop(key, None)
        self.expirations.pop(key, None)
        if key in self.events:
            self.events[key] = []

    async def acquire_all(self, windows: Sequence[Window], now: float) -> Refusal | None:
        """A slot in every window, or in none (see :data:`_ACQUIRE_ALL_OR_NONE`): the windows'
        locks held (the expiry sweep's too), checked and taken with no await between."""
        held: list[asyncio.Lock] = []
        try:
            # In one order (sorted keys), so two budgets' acquires never wait on each other.
            for key in sorted({key for key, _, _ in windows}):
                lock = self.locks[key]
                await lock.acquire()
                held.append(lock)
            for index, (key, limit, expiry) in enumerate(windows):
                events = self.events.get(key, [])
                if len(events) >= limit and events[limit - 1].atime >= now - expiry:
                    return index, events[limit - 1].atime + expiry
            for key, limit, expiry in windows:
                entry = Entry(expiry)
                # Counted on the caller's clock; the sweep (on the system clock) still drops it
                # when the window has passed.
                entry.atime = now
                events = self.events.setdefault(key, [])
                events[:0] = [entry]
                del events[limit:]
        finally:
            for lock in reversed(held):
                lock.release()
        await self._MemoryStorage__schedule_expiry()  # type: ignore[attr-defined]
        return None

    async def clear_keys(self, keys: Sequence[str]) -> None:
        for key in keys:
            await self.clear(key)

    async def aclose(self) -> None:
        """Nothing to close: the counts live in this process."""


class _AllOrNoneRedis(RedisStorage):
    """``limits``' Redis storages on redis-py, taking every window of a budget in one script
    (:data:`_ACQUIRE_ALL_OR_NONE`), one round trip."""

    _all_or_none: Any = None

    def __init__(self, uri: str, **options: Any) -> None:
        super().__init__(uri, **options)
        bridge: Any = self.bridge
        clients = [bridge.storage, getattr(bridge, "storage_replica", None)]
        sentinel = getattr(bridge, "sentinel", None)
        if sentinel is not None:
            clients += sentinel.sentinels
        for client in clients:
            if client is not None:
                closed_connections_raise_connection_error(client)

    @property
    def _client(self) -> Any:
        """redis-py's client (the master's, through Sentinel), which ``limits``' bridge holds."""
        return self.bridge.get_connection()  # type: ignore[attr-defined]

    def _script(self, text: str) -> Any:
        # redis-py's script: EVALSHA, loading the script again if Redis lost it.
        return self._client.register_script(text)

    async def acquire_all(self, windows: Sequence[Window], now: float) -> Refusal | None:
        bridge = self.bridge
        if self._all_or_none is None:
            self._all_or_none = self._script(_ACQUIRE_ALL_OR_NONE)
        keys = [bridge.prefixed_key(key) for key, _, _ in windows]
        args: list[float | int] = [now]
        for _, limit, expiry in windows:
            args += [limit, expiry]
        try:
            reply = await self._all_or_none(keys=keys, args=args)
        except self.base_exceptions as exc:
            raise StorageError(exc) from exc
        if not reply:
            return None
        index, oldest = reply
        return int(index) - 1, float(oldest) + windows[int(index) - 1][2]

    async def clear_keys(self, keys: Sequence[str]) -> None:
        """Every key in one ``DEL``."""
        bridge = self.bridge
        try:
            await bridge.get_connection().delete(  # type: ignore[attr-defined]
                *(bridge.prefixed_key(key) for key in keys)
            )
        except self.base_exceptions as exc:
            raise StorageError(exc) from exc

    async def aclose(self) -> None:
        """Closes the client's connections (``limits`` has no close of its own)."""
        await self._client.aclose()


class _RedisStorage(_AllOrNoneRedis):
    pass


class _RedisSentinelStorage(_AllOrNoneRedis, RedisSentinelStorage):
    def __init__(self, uri: str, **options: Any) -> None:
        super().__init__(uri, **options)
        sentinel: Any = self.bridge.sentinel  # type: ignore[attr-defined]
        self._sentinels = list(sentinel.sentinels)
        # redis-py moves the sentinel that answered to the head of its list, across an await:
        # lookups of the master made at once (every connection opened after a failover makes
        # one) overwrite each other's moves, and sentinels drop out of the list for good (two
        # of three left after one failover under load, in tests/stores/test_redis_ha.py). One
        # lookup at a time keeps them all.
        discover, lock = sentinel.discover_master, asyncio.Lock()

        async def discover_master(service_name: str) -> Any:
            async with lock:
                return await discover(service_name)

        sentinel.discover_master = discover_master

    async def aclose(self) -> None:
        """The master's client, and also the replica's and the sentinels' (asked where the
        master is), which ``limits`` opens beside it."""
        bridge: Any = self.bridge
        for client in (bridge.storage, bridge.storage_replica, *self._sentinels):
            await client.aclose()


class _RedisClusterStorage(_AllOrNoneRedis, RedisClusterStorage):
    """One script runs on one node: a user's windows share a hash slot (the ``{…}`` of
    :func:`_key`)."""

    @property
    def base_exceptions(self) -> tuple[type[Exception], ...]:
        # A cluster none of whose nodes answers (or whose slots are not all served) is a
        # RedisClusterException, which is not a RedisError: unavailable all the same.
        from redis.exceptions import RedisClusterException, RedisError

        return (RedisError, RedisClusterException)

    def __init__(self, uri: str, **options: Any) -> None:
        super().__init__(uri, **options)
        # ``limits``' own scripts (the text budget's counters) too.
        bridge = self.bridge
        for name in [name for name in vars(bridge) if name.startswith("lua_")]:
            setattr(bridge, name, _ClusterScript(self._client, getattr(bridge, name)))

    def _script(self, text: str) -> Any:
        return _ClusterScript(self._client, super()._script(text))

    async def check(self) -> bool:
        """Whether every master answers ``PING`` (``limits`` pings one node, which answers while
        another master is down and its slots refuse every command)."""
        from redis.asyncio.cluster import RedisCluster

        try:
            return bool(await self._client.ping(target_nodes=RedisCluster.PRIMARIES))
        except self.base_exceptions:
            return False

    async def aclose(self) -> None:
        """Every node's connections, whatever the client's state: ``RedisCluster.aclose`` does
        nothing after a connection error until a command has found the cluster again, and
        redis-py 7.2 to 7.4 route by slot through node objects of their own (fixed in 8.0.1)."""
        client = self._client
        manager = client.nodes_manager
        nodes = {
            id(node): node
            for node in (
                *manager.startup_nodes.values(),
                *manager.nodes_cache.values(),
                *(node for owners in manager.slots_cache.values() for node in owners),
            )
        }
        await client.aclose()
        # Closing a dead node's connections may fail: nothing is left open there.
        await asyncio.gather(
            *(node.disconnect() for node in nodes.values()), return_exceptions=True
        )


class _ClusterScript:
    """A script on a Redis Cluster: ``EVALSHA`` on the node of its keys, or, when that node does
    not have it, ``EVAL`` there, which runs it and keeps it for the next ``EVALSHA``. redis-py
    loads a missing script on the masters it knows; after a failover, redis-py 7.2 to 7.4 (fixed
    in 8.0.1) do not know the promoted replica as one, and the script would never reach it: every
    call to its slots would fail.

    The client reads the cluster's layout first, if it has to. redis-py 7.2 to 7.4 route a
    command sent before that (at start-up, or after a failover made it drop the layout) to a
    node of their choice, whatever its keys: a burst of them meets MOVED errors, after five of
    which the client closes every connection, under the commands still in flight (a quarter of
    bursts of 360 attempts on a new client lost some of them, each a 503)."""

    def __init__(self, client: Any, script: Any) -> None:
        self._client = client
        self._script = script

    async def __call__(self, keys: Sequence[Any] = (), args: Sequence[Any] = ()) -> Any:
        from redis.exceptions import NoScriptError

        await self._client.initialize()
        try:
            return await self._client.evalsha(self._script.sha, len(keys), *keys, *args)
        except NoScriptError:
            return await self._client.eval(self._script.script, len(keys), *keys, *args)


_BATCHED = (_MemoryStorage, _AllOrNoneRedis)
_REDIS_STORAGES: dict[str, type[_AllOrNoneRedis]] = {
    "async+redis": _RedisStorage,
    "async+rediss": _RedisStorage,
    "async+redis+unix": _RedisStorage,
    "async+redis+sentinel": _RedisSentinelStorage,
    "async+redis+cluster": _RedisClusterStorage,
}


def storage_from_uri(uri: str, *, timeout: float = STORAGE_TIMEOUT) -> Storage:
    """An async ``limits`` storage from ``memory://``, ``redis://`` … (``async+`` implied).

    Redis goes through redis-py (``limits``' ``implementation="redispy"``): less CPU per call
    than coredis, and scripts of the kit's own (see :class:`_AllOrNoneRedis`). ``timeout``
    bounds connecting to Redis and waiting for each answer, in seconds, so that a Redis that
    stops answering fails requests closed instead of holding them (redis-py waits for ever by
    default); ``socket_timeout`` and ``socket_connect_timeout`` in the URI win."""
    full = uri if uri.startswith("async+") else f"async+{uri}"
    if full == "async+memory://":
        return _MemoryStorage(full, wrap_exceptions=True)
    scheme = urlsplit(full).scheme
    options: dict[str, Any] = {}
    if scheme.startswith("async+redis"):
        options = {
            "implementation": "redispy",
            **connection_retry(),
            "socket_timeout": timeout,
            "socket_connect_timeout": timeout,
        }
    if scheme == "async+redis+sentinel":
        # The sentinels' clients (asked where the master is) too: on redis-py's own retries,
        # a sentinel that is down holds every lookup for seconds before the next one is asked;
        # one that stops answering, for ever without a timeout.
        options["sentinel_kwargs"] = {
            **connection_retry(),
            "socket_timeout": timeout,
            "socket_connect_timeout": timeout,
        }
    try:
        own = _REDIS_STORAGES.get(scheme)
        if own is not None:
            storage: Any = own(full, wrap_exceptions=True, **options)
        else:
            storage = storage_from_string(full, wrap_exceptions=True, **options)
    except (LimitsConfigurationError, ValueError) as exc:
        raise ConfigurationError(f"MFA_GUARD_STORAGE_URI {uri!r} is not usable: {exc}") from exc
    if not isinstance(storage, Storage):
        raise ConfigurationError(f"MFA_GUARD_STORAGE_URI {uri!r} is not an async storage")
    return storage


class FailureLimiter:
    """Counts second-factor attempts since the last success; refuses past any limit.

    Every attempt takes a slot *before* the code is checked, in every window at once or, when
    one is full, in none, atomically in the storage: concurrent guesses cannot slip past the
    limit, and refused ones count nowhere; a success clears the count. ``budget``
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
        if not isinstance(storage, _BATCHED):
            raise ConfigurationError(
                f"MFA_GUARD_STORAGE_URI: failed attempts are counted in memory:// or Redis, "
                f"which take every window of a budget in one atomic step; not in "
                f"{type(storage).__name__}"
            )
        self._storage: _MemoryStorage | _AllOrNoneRedis = storage
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
        await self._storage.aclose()

    async def acquire(self, user_id: str, now: float) -> Wait | None:
        """``None`` if the attempt may go ahead (it then counts as a failure until a success
        clears it), else when it may be retried and whether the failures-in-a-row limit refused
        it. All or none: a slot in every window, or, refused, in none (the failures in a row
        included), so a burst of refused attempts spends nothing. One round trip to the
        storage, counted on ``now`` (the kit's clock)."""
        windows = [
            (window_key, item.amount, item.get_expiry())
            for window_key, item in zip(self._keys(user_id), self._items, strict=True)
        ]
        try:
            refusal = await self._storage.acquire_all(windows, now)
        except (StorageError, OSError) as exc:
            raise StoreUnavailable() from exc
        if refusal is None:
            return None
        index, reopens_at = refusal
        return Wait(max(reopens_at, now + 1.0), in_a_row=self._items[index] is self._in_a_row)

    async def ping(self) -> bool:
        """Whether the storage answers (``limits``' own check: a Redis ``PING``)."""
        answered: bool = await self._storage.check()
        return answered

    async def reset(self, user_id: str) -> None:
        await reset_all(user_id, [self])

    def _keys(self, user_id: str) -> list[str]:
        key = _key(user_id)
        return [item.key_for(_NAMESPACE, self._budget, key) for item in self._items]


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
    batched: dict[int, tuple[_MemoryStorage | _AllOrNoneRedis, list[str]]] = {}
    for limiter in limiters:
        storage = limiter._storage
        batched.setdefault(id(storage), (storage, []))[1].extend(limiter._keys(user_id))
    try:
        for storage, keys in batched.values():
            await storage.clear_keys(keys)
    except (StorageError, OSError) as exc:
        raise StoreUnavailable() from exc


def retry_at(reset_time: float, now: float) -> float:
    """When a window reopens, on the caller's clock: ``limits`` counts on the system clock,
    the kit on its injected one, so only the time left is carried over (at least a second)."""
    return now + max(1.0, reset_time - time.time())


def _key(user_id: str) -> str:
    # Shared storages (Redis) see a hash, not the user's id or e-mail address. In braces: a
    # Redis Cluster keeps every window of the user on one node (a hash tag), where one script
    # can take them all.
    return "{" + hashlib.sha256(user_id.encode("utf-8")).hexdigest()[:32] + "}"
