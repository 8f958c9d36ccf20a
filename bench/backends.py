"""The backends a verify runs on, and the instruments that count its round trips.

- memory: ``MemoryStore`` and ``memory://`` rate limits;
- SQLite: ``SQLStore`` on a file in a temporary folder, ``memory://`` rate limits;
- PostgreSQL + Redis: ``SQLStore`` in a schema of its own on 127.0.0.1:5432 (dropped after),
  rate limits in Redis database 13 (emptied before and after).

Between the verifies, the floor under them: PostgreSQL alone, and a verify's two turns on asyncpg
and redis-py alone (:class:`NoKitTurns`), on the backend's own connections; the same two turns
through SQLAlchemy's async Core, for information.

Calls are counted at two levels: the methods of the store and of the ``limits`` storage (every
public coroutine method, patched on the class for the length of a figure; calls they make to
each other count once), and the round trips on the wire, through a TCP proxy that counts the
client's turns to speak.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import functools
import hashlib
import inspect
import os
import re
import tempfile
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Callable, Coroutine, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from time import perf_counter, time
from typing import Any

import redis
import redis.asyncio
from limits import RateLimitItemPerYear, parse_many
from limits.aio.storage import RedisStorage
from limits.aio.storage.base import MovingWindowSupport, SlidingWindowCounterSupport, Storage
from limits.aio.storage.redis.bridge import RedisBridge
from sqlalchemy import text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import create_async_engine
from sqlalchemy.util import greenlet_spawn

from bench.apps import expect
from mfa_guard import MemoryStore, MFAGuard, MFAStore
from mfa_guard.stores.sql import SQLStore

POSTGRES_URL = os.environ.get(
    "MFA_GUARD_BENCH_POSTGRES_URL", "postgresql+asyncpg://postgres@127.0.0.1:5432/test"
)
POSTGRES = make_url(POSTGRES_URL)
REDIS_HOST = os.environ.get("MFA_GUARD_BENCH_REDIS_HOST", "127.0.0.1")
REDIS_PORT = int(os.environ.get("MFA_GUARD_BENCH_REDIS_PORT", "6379"))
# The suite's own database: the tests use 11 and 12.
REDIS_DB = 13
SERVERS = (
    ("PostgreSQL", POSTGRES.host or "127.0.0.1", POSTGRES.port or 5432),
    ("Redis", REDIS_HOST, REDIS_PORT),
)

STORE_METHODS = tuple(name for name in vars(MFAStore) if not name.startswith("_"))
LIMITS_METHODS = tuple(
    sorted(
        {
            name
            for base in (Storage, MovingWindowSupport, SlidingWindowCounterSupport)
            for name, value in vars(base).items()
            if not name.startswith("_") and inspect.iscoroutinefunction(value)
        }
        # The kit's storages take every window of a budget in one call (mfa_guard.ratelimit).
        | {"acquire_entries", "clear_keys"}
    )
)


@dataclass(frozen=True, slots=True)
class Backend:
    name: str
    store: MFAStore
    storage_uri: str
    # Where the calls go on the wire: (label, host, port) for the proxy pass.
    servers: tuple[tuple[str, str, int], ...] = ()


@contextlib.asynccontextmanager
async def memory() -> AsyncIterator[Backend]:
    yield Backend("memory", MemoryStore(), "memory://")


@contextlib.asynccontextmanager
async def sqlite() -> AsyncIterator[Backend]:
    with tempfile.TemporaryDirectory(prefix="mfa-guard-bench-") as folder:
        store = SQLStore(f"sqlite+aiosqlite:///{Path(folder) / 'bench.db'}")
        try:
            yield Backend("SQLite", store, "memory://")
        finally:
            await store.close()


@contextlib.asynccontextmanager
async def postgres_redis(
    postgres_port: int | None = None, redis_port: int | None = None
) -> AsyncIterator[Backend]:
    """A fresh schema and an empty Redis database; the ports reroute through a proxy."""
    schema = f"mfa_guard_bench_{uuid.uuid4().hex[:12]}"
    await _postgres(f"CREATE SCHEMA {schema}")
    flush_redis()
    url = make_url(POSTGRES_URL)
    if postgres_port is not None:
        url = url.set(host="127.0.0.1", port=postgres_port)
    store = SQLStore(
        url.render_as_string(hide_password=False),
        connect_args={"server_settings": {"search_path": schema}},
    )
    redis_uri = f"redis://{REDIS_HOST}:{redis_port or REDIS_PORT}/{REDIS_DB}"
    try:
        yield Backend(
            "PostgreSQL + Redis",
            store,
            redis_uri,
            servers=SERVERS,
        )
    finally:
        await store.close()
        await _postgres(f"DROP SCHEMA {schema} CASCADE")
        flush_redis()


async def _postgres(statement: str) -> None:
    engine = create_async_engine(POSTGRES_URL, isolation_level="AUTOCOMMIT")
    try:
        async with engine.connect() as conn:
            await conn.execute(text(statement))
    finally:
        await engine.dispose()


# PostgreSQL on its own, through asyncpg on a connection of the store's pool: the statements a
# verify waits for, without the kit or SQLAlchemy. The UPDATE writes the row's own value, but is
# a write all the same: its commit waits for the WAL to reach the disk, as accept_step's does.
_FLOOR_SELECT = "SELECT epoch FROM mfa_guard_enrolments WHERE user_id = $1"
_FLOOR_COMMIT = "UPDATE mfa_guard_enrolments SET epoch = epoch WHERE user_id = $1"


async def postgres_floor(store: MFAStore, user_id: str) -> tuple[float, float]:
    """Seconds for a one-row SELECT and for a committed one-row UPDATE, on asyncpg alone."""
    if not isinstance(store, SQLStore):
        raise TypeError("the floor is measured on the PostgreSQL store")
    raw = await store.engine.raw_connection()
    try:
        driver = raw.driver_connection
        assert driver is not None
        started = perf_counter()
        await driver.fetch(_FLOOR_SELECT, user_id)
        selected = perf_counter()
        await driver.execute(_FLOOR_COMMIT, user_id)
        committed = perf_counter()
    finally:
        await greenlet_spawn(raw.close)
    return selected - started, committed - selected


# A verify's two turns with no kit: the enrolment row and its app read together with the failure
# budget's slots (limits' moving-window script on each window's key, in one redis-py pipeline, as
# mfa_guard.ratelimit._RedisStorage sends them), then accept_step's compare-and-set UPDATE. On
# rows and keys of the bench's own, so the kit's state is left alone: the rows copies of the
# verifying user's enrolment and app (in the store's schema, dropped with it), the keys of the
# same shape under a namespace of their own, cleared after each pair as the kit clears its own
# after a success.
NO_KIT_USER = "no-kit@bench.test"
NO_KIT_APP = "no-kit-app"
_NO_KIT_NAMESPACE = "mfa_guard_bench"
# The bench's rows: the verifying user's enrolment, and their app copied with no step accepted
# yet (steps 1, 2, … pass).
_NO_KIT_ROW = (
    "INSERT INTO mfa_guard_enrolments (user_id, epoch, confirmed_at, pending_secret, "
    "pending_binding, recovery_salt, recovery_params, phone, phone_verified_at, sms_purpose, "
    "sms_code_hash, sms_phone, sms_expires_at) "
    "SELECT $2, epoch, confirmed_at, pending_secret, pending_binding, recovery_salt, "
    "recovery_params, phone, phone_verified_at, sms_purpose, sms_code_hash, sms_phone, "
    "sms_expires_at FROM mfa_guard_enrolments WHERE user_id = $1"
)
_NO_KIT_APP_ROW = (
    "INSERT INTO mfa_guard_authenticators (id, user_id, kind, name, created_at, secret, "
    "last_step, sign_count, backed_up) "
    "SELECT $3, $2, kind, name, created_at, secret, NULL, sign_count, backed_up "
    "FROM mfa_guard_authenticators WHERE user_id = $1 AND kind = 'totp' "
    "ORDER BY created_at LIMIT 1"
)
# The columns that the store's get reads, of the enrolment's row and its authenticators,
# without the recovery codes: one row (the one app).
_NO_KIT_SELECT = (
    "SELECT e.epoch, e.confirmed_at, e.pending_secret, e.pending_binding, e.recovery_salt, "
    "e.recovery_params, e.phone, e.phone_verified_at, e.sms_purpose, e.sms_code_hash, "
    "e.sms_phone, e.sms_expires_at, a.id, a.kind, a.name, a.created_at, a.last_used_at, "
    "a.secret, a.last_step, a.credential_id, a.public_key, a.sign_count, a.transports, "
    "a.aaguid, a.backed_up FROM mfa_guard_enrolments e "
    "LEFT JOIN mfa_guard_authenticators a ON a.user_id = e.user_id WHERE e.user_id = $1"
)
# accept_step's statement, as the store sends it.
_NO_KIT_UPDATE = (
    "UPDATE mfa_guard_authenticators SET last_step = $2, last_used_at = $3 "
    "WHERE id = $4 AND user_id = $1 AND kind = 'totp' "
    "AND (last_step IS NULL OR last_step < $2)"
)
# The same two statements for SQLAlchemy, with its named parameters (``:p1`` for ``$1``).
_SA_SELECT = text(re.sub(r"\$(\d)", r":p\1", _NO_KIT_SELECT))
_SA_UPDATE = text(re.sub(r"\$(\d)", r":p\1", _NO_KIT_UPDATE))


@dataclass
class NoKitTurns:
    """A verify's critical path on the drivers alone, on the PostgreSQL + Redis backend's own
    connections: ``asyncio.gather`` of a one-row asyncpg SELECT and a redis-py pipeline of
    ``EVALSHA`` (limits' ``acquire_moving_window.lua``, loaded once) on as many keys, with the
    same arguments, as the kit's failure budget; then a committed one-row UPDATE. The same
    turns through SQLAlchemy's async Core as well (:meth:`measure_sqlalchemy`)."""

    store: SQLStore
    client: redis.asyncio.Redis
    sha: str
    # (key, amount, seconds) of each window, as FailureLimiter.acquire passes them.
    windows: tuple[tuple[str, int, int], ...]
    step: int = 0

    @classmethod
    async def prepare(cls, store: MFAStore, guard: MFAGuard, user_id: str) -> NoKitTurns:
        """The bench's row (a copy of ``user_id``'s), its keys and the script, on the store's
        pool and the guard's own Redis client."""
        if not isinstance(store, SQLStore):
            raise TypeError("the turns are measured on the PostgreSQL store")
        # The redis-py client (and its pool) the guard's failure limiter talks to Redis with.
        bridge = getattr(guard.limiter._storage, "bridge", None)
        client = None if bridge is None else bridge.get_connection()
        if not isinstance(client, redis.asyncio.Redis):
            raise TypeError("the turns are measured on the guard's redis-py client")
        budget = guard.settings.rate_limits
        # The budget's windows, as FailureLimiter builds them (mfa_guard.ratelimit).
        items = [*parse_many(budget.failures), RateLimitItemPerYear(budget.consecutive_failures)]
        digest = hashlib.sha256(NO_KIT_USER.encode("utf-8")).hexdigest()[:32]
        windows = tuple(
            (
                f"{RedisStorage.PREFIX}:{item.key_for(_NO_KIT_NAMESPACE, 'failures', digest)}",
                item.amount,
                item.get_expiry(),
            )
            for item in items
        )
        raw = await store.engine.raw_connection()
        try:
            driver = raw.driver_connection
            assert driver is not None
            status = await driver.execute(_NO_KIT_ROW, user_id, NO_KIT_USER)
            app_status = await driver.execute(_NO_KIT_APP_ROW, user_id, NO_KIT_USER, NO_KIT_APP)
        finally:
            await greenlet_spawn(raw.close)
        expect(status == "INSERT 0 1", f"the bench's own row was not written: {status}")
        expect(app_status == "INSERT 0 1", f"the bench's own app was not written: {app_status}")
        sha = str(await client.script_load(RedisBridge.SCRIPT_ACQUIRE_MOVING_WINDOW))
        return cls(store, client, sha, windows)

    async def measure(self) -> float:
        """Seconds for the two turns on asyncpg, from the first call made to the commit's
        answer, on one pooled connection taken before the clock starts."""
        raw = await self.store.engine.raw_connection()
        try:
            driver = raw.driver_connection
            assert driver is not None

            async def update(step: int) -> int:
                status: str = await driver.execute(
                    _NO_KIT_UPDATE, NO_KIT_USER, step, time(), NO_KIT_APP
                )
                # asyncpg answers with the command tag: ``UPDATE 1``.
                return int(status.rpartition(" ")[2])

            return await self._turns(lambda: driver.fetchrow(_NO_KIT_SELECT, NO_KIT_USER), update)
        finally:
            await greenlet_spawn(raw.close)

    async def measure_sqlalchemy(self) -> float:
        """The same two turns through SQLAlchemy's async Core alone, as the kit's store runs a
        statement on its own (``Database.run``): each statement on a connection of the store's
        engine (the kit's engine options and pool) in autocommit, checked out for it and
        returned after it, inside the timing."""
        engine = self.store.engine.execution_options(isolation_level="AUTOCOMMIT")
        params = {"p1": NO_KIT_USER}

        async def select() -> Any:
            async with engine.connect() as conn:
                return (await conn.execute(_SA_SELECT, params)).first()

        async def update(step: int) -> int:
            async with engine.connect() as conn:
                values = {**params, "p2": step, "p3": time(), "p4": NO_KIT_APP}
                return (await conn.execute(_SA_UPDATE, values)).rowcount

        return await self._turns(select, update)

    async def _turns(
        self,
        select: Callable[[], Coroutine[Any, Any, Any]],
        update: Callable[[int], Coroutine[Any, Any, int]],
    ) -> float:
        """``select`` together with the failure windows' pipeline, then ``update``: seconds
        from the first call made to the commit's answer; the keys are cleared after."""
        self.step += 1
        started = perf_counter()
        pipeline = self.client.pipeline(transaction=False)
        now = time()
        for key, amount, expiry in self.windows:
            pipeline.evalsha(self.sha, 1, key, now, amount, expiry, 1)
        row, taken = await asyncio.gather(select(), pipeline.execute())
        count = await update(self.step)
        ended = perf_counter()
        await self.client.delete(*(key for key, _, _ in self.windows))
        expect(row is not None, "the bench's own row was not read")
        expect(taken == [1] * len(self.windows), f"the bench's slots were refused: {taken}")
        expect(count == 1, f"the bench's step was not accepted: {count} rows updated")
        return ended - started


def flush_redis() -> None:
    with redis.Redis(host=REDIS_HOST, port=REDIS_PORT, db=REDIS_DB, socket_timeout=5) as client:
        client.flushdb()


async def available(backend: str) -> str | None:
    """``None`` if the server answers, else why not (the figure then says so and fails)."""
    try:
        if backend == "postgres":
            await _postgres("SELECT 1")
        else:
            with redis.Redis(
                host=REDIS_HOST, port=REDIS_PORT, db=REDIS_DB, socket_timeout=5
            ) as client:
                client.ping()
    except Exception as exc:
        return f"{type(exc).__name__}: {exc}"
    return None


# -- counting calls ------------------------------------------------------------------------

_inside = contextvars.ContextVar("bench_inside_call", default=False)
# Seconds a call waits in the structure pass: longer than it takes a request to issue the calls
# it makes together.
ANSWER_DELAY = 0.002


@dataclass(frozen=True, slots=True)
class Call:
    kind: str
    name: str
    started: float
    ended: float


@dataclass
class CallTrace:
    """Every store and ``limits`` storage call, with its start and end times.

    ``answer_later``: each call waits ``ANSWER_DELAY`` before it runs, as a call to a server
    waits for its answer. An in-process backend (memory, or SQLite's thread for a moment)
    answers at once, so calls made together would seem to run one after another; with the
    delay, the calls a request makes together overlap, and only those it makes one after
    another chain (see :func:`critical_path`). Latencies are not kept in that mode."""

    calls: list[Call] = field(default_factory=list)
    answer_later: bool = False

    def clear(self) -> None:
        self.calls.clear()

    def between(self, start: float, end: float) -> list[Call]:
        return [call for call in self.calls if start <= call.started < end]

    @contextlib.contextmanager
    def patched(self) -> Iterator[CallTrace]:
        """Wraps the methods of every store and ``limits`` storage class the suite uses."""
        patches: list[tuple[type, str, object]] = []
        # Every storage class, the kit's own subclasses included: ``limits`` copies wrapped
        # methods onto each subclass, so patching a base class would not reach them.
        targets: list[tuple[str, type, tuple[str, ...]]] = [
            *(("store", cls, STORE_METHODS) for cls in _family(MemoryStore)),
            *(("store", cls, STORE_METHODS) for cls in _family(SQLStore)),
            *(("limits", cls, LIMITS_METHODS) for cls in _family(Storage)),
        ]
        try:
            for kind, cls, names in targets:
                for name in names:
                    original = vars(cls).get(name)
                    if original is None:
                        continue
                    patches.append((cls, name, original))
                    setattr(cls, name, self._wrap(kind, name, original))
            yield self
        finally:
            for cls, name, previous in reversed(patches):
                setattr(cls, name, previous)

    def _wrap(
        self, kind: str, name: str, original: Callable[..., Coroutine[Any, Any, Any]]
    ) -> Callable[..., Coroutine[Any, Any, Any]]:
        calls = self.calls

        @functools.wraps(original)
        async def wrapper(*args: Any, **kwargs: Any) -> Any:
            if _inside.get():
                return await original(*args, **kwargs)
            token = _inside.set(True)
            started = perf_counter()
            try:
                if self.answer_later:
                    await asyncio.sleep(ANSWER_DELAY)
                return await original(*args, **kwargs)
            finally:
                _inside.reset(token)
                calls.append(Call(kind, name, started, perf_counter()))

        return wrapper


def _family(cls: type) -> list[type]:
    """``cls`` and all its subclasses, once each."""
    seen: dict[type, None] = {}
    pending = [cls]
    while pending:
        current = pending.pop()
        if current not in seen:
            seen[current] = None
            pending.extend(current.__subclasses__())
    return list(seen)


def summary(calls: list[Call]) -> str:
    """``store get 1, accept_step 1; limits acquire_entry 3`` (in the order first made)."""
    parts = []
    for kind in ("store", "limits"):
        counts = Counter(call.name for call in calls if call.kind == kind)
        if counts:
            parts.append(f"{kind} " + ", ".join(f"{n} {c}" for n, c in counts.items()))
    return "; ".join(parts) or "none"


def time_inside(calls: list[Call]) -> float:
    """Seconds of wall time inside ``calls`` (time when several ran at once counted once)."""
    total = 0.0
    reached = float("-inf")
    for call in sorted(calls, key=lambda c: c.started):
        if call.ended > reached:
            total += call.ended - max(call.started, reached)
            reached = call.ended
    return total


def critical_path(calls: list[Call]) -> int:
    """The most calls that ran one after another (each starting after the previous ended):
    the round trips a request waits for in sequence, however the rest overlap."""
    return len(waves(calls))


def waves(calls: list[Call]) -> list[list[Call]]:
    """The calls in the turns a request waits for: a longest chain of calls each starting
    after the previous one ended, every call put with the link of the chain it started
    before the end of (so calls made together share a turn)."""
    chain: list[Call] = []
    last_end = float("-inf")
    for call in sorted(calls, key=lambda c: c.ended):
        if call.started >= last_end:
            chain.append(call)
            last_end = call.ended
    turns: list[list[Call]] = [[] for _ in chain]
    for call in sorted(calls, key=lambda c: c.started):
        index = next((i for i, link in enumerate(chain) if call.started < link.ended), None)
        turns[len(chain) - 1 if index is None else index].append(call)
    return turns


def describe_waves(turns: list[list[Call]]) -> str:
    """``store get, limits acquire_entry x3 together; then store accept_step``."""
    parts = []
    for turn in turns:
        counts = Counter(f"{call.kind} {call.name}" for call in turn)
        names = ", ".join(name if n == 1 else f"{name} x{n}" for name, n in counts.items())
        parts.append(names + (" together" if len(turn) > 1 else ""))
    return "; then ".join(parts)


# -- counting round trips on the wire -------------------------------------------------------


class FlightProxy:
    """A loopback TCP proxy that counts the client's flights: each time the client speaks
    after the server answered (or first) is one round trip."""

    def __init__(self, host: str, port: int) -> None:
        self.upstream = (host, port)
        self.flights = 0
        self.connections = 0
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    @property
    def port(self) -> int:
        if self._server is None:
            raise RuntimeError("the proxy is not started")
        port: int = self._server.sockets[0].getsockname()[1]
        return port

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        up_reader, up_writer = await asyncio.open_connection(*self.upstream)
        client_turn = [False]

        async def pump(src: asyncio.StreamReader, dst: asyncio.StreamWriter, client: bool) -> None:
            try:
                while data := await src.read(65536):
                    if client and not client_turn[0]:
                        self.flights += 1
                    client_turn[0] = client
                    dst.write(data)
                    await dst.drain()
            except (ConnectionError, asyncio.CancelledError):
                pass
            finally:
                dst.close()

        tasks = [
            asyncio.ensure_future(pump(reader, up_writer, True)),
            asyncio.ensure_future(pump(up_reader, writer, False)),
        ]
        for task in tasks:
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        await asyncio.gather(*tasks, return_exceptions=True)
