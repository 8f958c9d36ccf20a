"""The failure limits and the text budget on a real Redis Cluster and a real Sentinel set-up, and
a master crashed while attempts and texts keep coming (docs/deployment.md, "Redis Cluster and
Sentinel").

tests/redis_topologies.py starts both once for the module: three masters with a replica each, and
a master, a replica and three sentinels (quorum 2). Over each, the budgets hold as on one Redis,
in sequence, in parallel and through HTTP. Then the master holding a user's keys is killed
(SIGKILL): while no master holds them every attempt and text answers 503 and the readiness probe
says so; once a replica has taken over, the counts are those of before the crash and the same
limits hold. Replication is asynchronous: only what the master took in its last moments, before
its replica had it, may be forgotten, which docs/deployment.md bounds.
"""

from __future__ import annotations

import asyncio
import gc
import hashlib
import itertools
import time
import warnings
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from limits import parse_many
from limits.aio.storage import MemoryStorage, Storage
from limits.aio.strategies import FixedWindowRateLimiter
from limits.errors import StorageError

from mfa_guard.errors import StoreUnavailable
from mfa_guard.ratelimit import (
    FailureLimiter,
    Wait,
    _key,
    failure_limiters,
    reset_all,
    storage_from_uri,
)
from mfa_guard.send_limits import Reservation, SendLimiter, SendRefused
from mfa_guard.settings import RateLimitSettings, SMSSettings
from mfa_guard.stores.sql import SQLStore
from tests.apps import GuardedApp, build_app, enrol, sign_in
from tests.databases import redis_or_skip
from tests.redis_topologies import Cluster, Sentinels, Server, Topology, running, until
from tests.scenarios import wrong_code

pytestmark = pytest.mark.redis

NOW = 1_800_000_000.0
PEER = "203.0.113.7"
# Texts: a user's budget, every other limit out of the way (and the cooldown, which counts on
# the real clock).
TEXTS = SMSSettings(
    per_user="5/hour",
    per_number="1000/hour",
    per_number_daily="1000/day",
    per_ip="1000/hour",
    resend_cooldown="1000/second",
    global_hourly="100000/hour",
    global_daily="100000/day",
)
CODES = {"failures": "6/minute;30/day"}
# Every wait for the traffic has a deadline; a failover is waited for by the topology.
TRAFFIC_TIMEOUT = 20.0
# Replication is asynchronous: what a master took in its last moments may not have reached its
# replica when it dies. Here a replica streaming from its master has every write within
# milliseconds (none lost in 34 crashes, docs/deployment.md); what a master took this long
# before dying is on its replica, whatever the machine's load.
REPLICATION_LAG = 1.0
UNAVAILABLE_PAUSE = 0.02


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    topology = Cluster(tmp_path_factory.mktemp("cluster"))
    with running(topology):
        yield topology


@pytest.fixture(scope="module")
def sentinels(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sentinels]:
    topology = Sentinels(tmp_path_factory.mktemp("sentinel"))
    with running(topology):
        yield topology


@pytest.fixture(params=["cluster", "sentinel"])
def topology(request: pytest.FixtureRequest) -> Topology:
    started: Topology = request.getfixturevalue(
        "cluster" if request.param == "cluster" else "sentinels"
    )
    return started


# -- keys and users -------------------------------------------------------------------------


def failure_key(user: str) -> str:
    """A key of the user's failure windows: each is in the same hash slot (the ``{…}``)."""
    return f"LIMITS:mfa_guard/failures/{_key(user)}"


def text_key(scope: str, value: str, spec: str) -> str:
    """The key of one limit of the text budget (``limits``' fixed window), as Redis holds it."""
    hashed = hashlib.sha256(value.encode("utf-8")).hexdigest()[:32]
    (item,) = parse_many(spec)
    return "LIMITS:" + item.key_for("mfa_guard:sms", scope, hashed)


async def first(template: str, wanted: Callable[[str], Awaitable[bool]]) -> str:
    """The first of ``template`` with ``n`` = 0, 1 … that is ``wanted``: the tests pick users
    (and numbers) whose keys are on the master they mean to kill, or not."""
    for n in range(1000):
        if await wanted(candidate := template.format(n=n)):
            return candidate
    pytest.fail(f"none of a thousand {template} fits")


async def on(topology: Topology, master: Server, key: str) -> bool:
    return await topology.master_for(key) is master


async def elsewhere(topology: Topology, master: Server, key: str) -> bool:
    """On a master other than ``master`` (on the cluster; the sentinels have one master)."""
    return topology.masters == 1 or await topology.master_for(key) is not master


async def closed(storage: Storage) -> None:
    """Closes a storage's connections (through a limiter: the kit's storages close there)."""
    await FailureLimiter(storage, "1/minute").aclose()


# -- the budgets, as on one Redis -----------------------------------------------------------


async def test_the_failure_budgets_hold_as_on_one_redis(topology: Topology) -> None:
    settings = RateLimitSettings(
        failures="3/minute;10/hour;30/day", recovery_failures="2/hour;4/day"
    )
    codes, recovery = failure_limiters(storage_from_uri(topology.uri), settings)
    user = "budgets@example.test"
    try:
        assert [await codes.acquire(user, NOW) for _ in range(3)] == [None, None, None]
        assert await codes.acquire(user, NOW) == Wait(NOW + 60)
        # The recovery codes are counted apart, with their own limit.
        assert [await recovery.acquire(user, NOW) for _ in range(2)] == [None, None]
        assert await recovery.acquire(user, NOW) == Wait(NOW + 3600)
        # The refused attempts took no slot in the hour: a minute later, three more (6 of 10).
        later = NOW + 61
        assert [await codes.acquire(user, later) for _ in range(3)] == [None, None, None]
        assert await codes.acquire(user, later) == Wait(later + 60)
        # A success clears both budgets, in one call.
        await reset_all(user, [codes, recovery])
        assert await codes.acquire(user, later) is None
        assert await recovery.acquire(user, later) is None
    finally:
        await reset_all(user, [codes, recovery])
        await codes.aclose()


async def test_parallel_attempts_from_two_guards_never_take_more_than_the_budget(
    topology: Topology,
) -> None:
    """Users on every master of the cluster (on the one master of the sentinels), 60 attempts
    each at once from two guards: each user gets exactly the minute's 3."""
    first_guard = FailureLimiter(storage_from_uri(topology.uri), "3/minute;5/hour")
    second_guard = FailureLimiter(storage_from_uri(topology.uri), "3/minute;5/hour")
    masters: dict[int, list[str]] = {}
    for n in itertools.count():
        user = f"parallel-{topology.__class__.__name__}-{n}@example.test"
        masters.setdefault((await topology.master_for(failure_key(user))).port, []).append(user)
        if len(masters) == topology.masters and all(len(u) >= 2 for u in masters.values()):
            break
    users = [user for on_master in masters.values() for user in on_master]
    try:
        outcomes = await asyncio.gather(
            *(
                (first_guard if n % 2 else second_guard).acquire(user, NOW)
                for user in users
                for n in range(60)
            )
        )
        accepted = {user: 0 for user in users}
        for n, outcome in enumerate(outcomes):
            accepted[users[n // 60]] += outcome is None
        assert accepted == {user: 3 for user in users}
    finally:
        for user in users:
            await first_guard.reset(user)
        await first_guard.aclose()
        await second_guard.aclose()


async def test_the_text_budget_holds_as_on_one_redis(topology: Topology) -> None:
    """Each limit of the budget is a key of its own, which a cluster keeps wherever the key's
    hash puts it: one send counts on several masters, one command each."""
    storage = storage_from_uri(topology.uri)
    texts = SendLimiter(storage, TEXTS)
    user, phone = "texts@example.test", "+33600000001"
    try:
        if isinstance(topology, Cluster):
            keys = [
                text_key("user", user, TEXTS.per_user),
                text_key("number", phone, TEXTS.per_number),
                text_key("ip", PEER, TEXTS.per_ip),
            ]
            holders = {(await topology.master_for(key)).port for key in keys}
            assert len(holders) > 1, "the budget's keys are on several masters"
        taken = [await texts.reserve(user, phone, PEER, NOW) for _ in range(5)]
        assert all(isinstance(reservation, Reservation) for reservation in taken)
        assert isinstance(await texts.reserve(user, phone, PEER, NOW), SendRefused)
        # A send that did not happen gives its slots back: one more, and no more.
        released = taken[0]
        assert isinstance(released, Reservation)
        await released.release()
        assert isinstance(await texts.reserve(user, phone, PEER, NOW), Reservation)
        assert isinstance(await texts.reserve(user, phone, PEER, NOW), SendRefused)

        # Forty sends at once for another user: five get through, and the count says five.
        other = "texts-parallel@example.test"
        outcomes = await asyncio.gather(
            *(texts.reserve(other, "+33600000002", PEER, NOW) for _ in range(40))
        )
        assert sum(isinstance(outcome, Reservation) for outcome in outcomes) == 5
        (per_user,) = parse_many(TEXTS.per_user)
        stats = await FixedWindowRateLimiter(storage).get_window_stats(
            per_user, "mfa_guard:sms", "user", hashlib.sha256(other.encode()).hexdigest()[:32]
        )
        assert stats.remaining == 0
    finally:
        await closed(storage)


async def test_wrong_codes_lock_a_user_out_at_the_limit_over_http(
    topology: Topology, tmp_path: Path
) -> None:
    store = SQLStore(f"sqlite+aiosqlite:///{tmp_path}/mfa.db")
    ga = guarded_app(store, topology)
    user = f"http-{topology.__class__.__name__}@example.test"
    try:
        async with ga.client() as owner, ga.client() as attacker:
            secret = await enrolled(ga, owner, user)
            await sign_in(attacker, user)
            # Twenty wrong codes at once: six are checked (the minute's budget), the rest
            # refused before their code is looked at.
            guesses = await asyncio.gather(
                *(
                    attacker.post("/mfa/api/verify", json={"code": wrong_code(ga, secret)})
                    for _ in range(20)
                )
            )
            statuses = sorted(response.status_code for response in guesses)
            assert statuses == [422] * 6 + [429] * 14
            # Even the right code waits, and the wait is told.
            locked = await attacker.post("/mfa/api/verify", json={"code": ga.code(secret)})
            assert locked.status_code == 429
            assert int(locked.headers["Retry-After"]) > 0
            ga.clock.advance(61)
            assert (
                await attacker.post("/mfa/api/verify", json={"code": ga.code(secret)})
            ).status_code == 200
            assert (await attacker.get("/protected")).status_code == 200
            readiness = await ga.guard.check()
            assert readiness.ready, readiness.as_json()
    finally:
        await ga.guard.aclose()
        await store.close()


async def test_closing_the_guard_closes_every_connection(topology: Topology) -> None:
    """The guard's ``aclose`` closes the storage's every connection: on Sentinel the master's,
    the replica's and the sentinels' (asked where the master is); on a cluster every node's."""

    async def used_and_closed() -> None:
        ga = build_app(storage_uri=topology.uri, rate_limits=CODES)
        user = f"closed-{type(topology).__name__}@example.test"
        assert await ga.guard.limiter.acquire(user, ga.clock()) is None
        await ga.guard.limiter.reset(user)
        texts = SendLimiter(storage_from_uri(topology.uri), TEXTS)
        reserved = await texts.reserve(user, "+33600000004", PEER, NOW)
        assert isinstance(reserved, Reservation)
        await reserved.release()
        assert (await ga.guard.check()).ready
        await closed(texts._storage)
        await ga.guard.aclose()

    await used_and_closed()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        gc.collect()
    assert [str(warning.message) for warning in caught] == []


async def test_a_sentinel_that_is_down_costs_no_wait(sentinels: Sentinels) -> None:
    """The first sentinel of the URI is down: the storage asks the next one at once (redis-py's
    own retries would back off for seconds, 7 on average, before giving up on it)."""
    down = sentinels.sentinels[0]
    down.kill()
    limiter = FailureLimiter(storage_from_uri(sentinels.uri), "3/minute;30/day")
    try:
        started = time.monotonic()
        assert await limiter.acquire("sentinel-down@example.test", NOW) is None
        assert time.monotonic() - started < 1.0
        await limiter.reset("sentinel-down@example.test")
    finally:
        await limiter.aclose()
        down.spawn()
        await down.ready()
        await sentinels.healthy()


async def test_a_replica_promoted_since_the_scripts_were_loaded_runs_them(
    cluster: Cluster,
) -> None:
    """A replica takes over (``CLUSTER FAILOVER``) and has none of the scripts its master ran
    (a replica never loads them); then the client's connections drop, and it reads the cluster
    again. redis-py 7.2 to 7.4 then load a missing script on the masters they knew, which the
    new one is not among: without the kit's fallback to ``EVAL``, every attempt and text whose
    keys are on it would fail from then on."""
    user = "promoted@example.test"
    master = await cluster.master_for(failure_key(user))
    texted = await first(
        "texted-promoted-{n}@example.test",
        lambda u: on(cluster, master, text_key("user", u, TEXTS.per_user)),
    )
    limiter = FailureLimiter(storage_from_uri(cluster.uri), "3/minute;30/day")
    text_storage = storage_from_uri(cluster.uri)
    texts = SendLimiter(text_storage, TEXTS)
    try:
        assert [await limiter.acquire(user, NOW) for _ in range(2)] == [None, None]
        assert isinstance(await texts.reserve(texted, "+33600000005", PEER, NOW), Reservation)

        (replica,) = await cluster.replicas_of(master)
        assert await replica.command("CLUSTER FAILOVER")
        assert await cluster.failed_over(master, failure_key(user)) is replica
        await master.command("CLIENT KILL TYPE normal")

        # The count came across (2 of 3), and the scripts run on the new master.
        assert await limiter.acquire(user, NOW) is None
        assert await limiter.acquire(user, NOW) == Wait(NOW + 60)
        assert isinstance(await texts.reserve(texted, "+33600000005", PEER, NOW), Reservation)
    finally:
        await limiter.reset(user)
        await limiter.aclose()
        await closed(text_storage)


async def test_a_master_short_of_replicas_refuses_attempts_and_texts(topology: Topology) -> None:
    """docs/deployment.md advises ``min-replicas-to-write``: a master that has not heard from
    enough replicas lately refuses writes (NOREPLICAS), so it takes no attempt a failover could
    lose. The kit answers that with 503, and counts nothing."""
    user = f"short-{type(topology).__name__}@example.test"
    master = await topology.master_for(failure_key(user))
    texted = await first(
        f"texted-short-{type(topology).__name__}-{{n}}@example.test",
        lambda u: on(topology, master, text_key("user", u, TEXTS.per_user)),
    )
    limiter = FailureLimiter(storage_from_uri(topology.uri), "3/minute;30/day")
    text_storage = storage_from_uri(topology.uri)
    texts = SendLimiter(text_storage, TEXTS)
    try:
        assert await limiter.acquire(user, NOW) is None  # the scripts are loaded
        await limiter.reset(user)
        # One replica each: two are more than any master has.
        await master.command("CONFIG SET", "min-replicas-to-write", 2)
        for _ in range(3):
            with pytest.raises(StoreUnavailable):
                await limiter.acquire(user, NOW)
            with pytest.raises(StoreUnavailable):
                await texts.reserve(texted, "+33600000006", PEER, NOW)
        await master.command("CONFIG SET", "min-replicas-to-write", 0)
        assert [await limiter.acquire(user, NOW) for _ in range(3)] == [None] * 3
        assert await limiter.acquire(user, NOW) is not None
        assert isinstance(await texts.reserve(texted, "+33600000006", PEER, NOW), Reservation)
    finally:
        await master.command("CONFIG SET", "min-replicas-to-write", 0)
        await limiter.reset(user)
        await limiter.aclose()
        await closed(text_storage)


# -- a connection closed under a command ----------------------------------------------------


@pytest.fixture(params=["redis", "cluster", "sentinel"])
def any_redis(request: pytest.FixtureRequest) -> str:
    """The URI of one Redis, of the cluster or of the Sentinel set-up."""
    if request.param == "redis":
        return redis_or_skip()
    started: Topology = request.getfixturevalue(
        "cluster" if request.param == "cluster" else "sentinels"
    )
    return started.uri


def command_connection_classes(storage: Storage) -> set[type[Any]]:
    """The classes of the connections the storage sends its commands on: the pool's (one Redis,
    the Sentinel master's) or every cluster node's, the ones learnt since start-up included."""
    client: Any = storage.bridge.get_connection()  # type: ignore[attr-defined]
    manager = getattr(client, "nodes_manager", None)
    if manager is None:
        return {client.connection_pool.connection_class}
    return {node.connection_class for node in manager.nodes_cache.values()}


async def test_a_connection_closed_under_a_command_is_retried_not_a_crash(
    any_redis: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """redis-py closes connections that other tasks are using (a cluster client closes every
    connection of its nodes on CLUSTERDOWN or repeated MOVED). The command caught between its
    connection check and its write met ``AttributeError: 'NoneType' object has no attribute
    'writelines'``, which no ``except`` of redis-py, ``limits`` or the kit took for a lost
    connection: it went past them all (the failover test below failed so in CI, a 500 in
    production). Now it is redis-py's ``ConnectionError``: the command is sent again on a new
    connection, and the attempt counts once."""
    storage = storage_from_uri(any_redis)
    limiter = FailureLimiter(storage, "3/minute")
    user = f"closed-under-{hashlib.sha256(any_redis.encode()).hexdigest()[:8]}@example.test"
    try:
        await limiter.reset(user)  # connected, and the cluster's layout learnt
        classes = command_connection_classes(storage)
        closed_under: list[object] = []

        for connection_class in classes:
            # redis-py writes in a task of its own (under the socket timeout): another task's
            # close of the connection may run first.
            write = connection_class._send_packed_command

            async def closed_by_another_task(
                connection: Any, command: Any, write: Any = write
            ) -> None:
                if not closed_under:
                    closed_under.append(connection)
                    await connection.disconnect(nowait=True)
                await write(connection, command)

            monkeypatch.setattr(connection_class, "_send_packed_command", closed_by_another_task)
        assert await limiter.acquire(user, NOW) is None
        assert closed_under, "no command went through the closed connection"
        monkeypatch.undo()
        # The attempt counted once: two more, then the minute's limit.
        assert [await limiter.acquire(user, NOW) for _ in range(2)] == [None, None]
        assert await limiter.acquire(user, NOW) == Wait(NOW + 60)
    finally:
        monkeypatch.undo()
        await limiter.reset(user)
        await limiter.aclose()


# -- a master crashes mid-traffic -------------------------------------------------------------


class Traffic:
    """Calls repeated in the background, each stream one after another, until the block ends;
    every outcome is kept in order, with the phase of the failover it came back in.
    ``StoreUnavailable`` is an outcome (the stream pauses a moment, as a client given a 503
    would); any other error fails the test."""

    def __init__(self) -> None:
        self.outcomes: list[tuple[str, str, object, float]] = []
        self.phase = "before"
        self._stop = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []

    def send(self, name: str, call: Callable[[], Awaitable[object]]) -> None:
        self._tasks.append(asyncio.create_task(self._repeat(name, call)))

    def of(self, name: str, phase: str | None = None, before: float | None = None) -> list[object]:
        """The outcomes of stream ``name`` (in ``phase``, back before the monotonic time
        ``before``)."""
        return [
            outcome
            for n, p, outcome, at in self.outcomes
            if n == name and (phase is None or p == phase) and (before is None or at < before)
        ]

    async def until(self, condition: Callable[[], bool], what: str) -> None:
        async def reached() -> bool:
            for task in self._tasks:
                if task.done():
                    task.result()  # re-raises what broke the stream
            return condition()

        await until(reached, what, TRAFFIC_TIMEOUT)

    async def _repeat(self, name: str, call: Callable[[], Awaitable[object]]) -> None:
        while not self._stop.is_set():
            try:
                outcome = await call()
            except StoreUnavailable as exc:
                outcome = exc
            # The phase it came back in: a call sent before the crash may meet it.
            self.outcomes.append((name, self.phase, outcome, time.monotonic()))
            if outcome_is_unavailable(outcome):
                await asyncio.sleep(UNAVAILABLE_PAUSE)
            await asyncio.sleep(0)  # a call that needed no I/O gave no other task a turn

    async def __aenter__(self) -> Traffic:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        self._stop.set()
        done, pending = await asyncio.wait(self._tasks, timeout=TRAFFIC_TIMEOUT)
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
        for task in done:
            task.result()
        assert not pending, "a call of the background traffic did not finish"


def responses(outcomes: list[object]) -> list[httpx.Response]:
    return [outcome for outcome in outcomes if isinstance(outcome, httpx.Response)]


def outcome_is_unavailable(outcome: object) -> bool:
    if isinstance(outcome, httpx.Response):
        return outcome.status_code == 503
    return isinstance(outcome, StoreUnavailable)


def assert_unavailable(response: httpx.Response) -> None:
    """The generic 503: a stable code, a Retry-After, nothing of the cause."""
    assert response.status_code == 503, (response.status_code, response.text)
    assert response.json()["error"]["code"] == "service_unavailable"
    assert int(response.headers["Retry-After"]) > 0
    for leak in ("redis", "cluster", "sentinel", "127.0.0.1", "Traceback"):
        assert leak not in response.text.lower(), response.text


# redis-py 7.2 to 7.4 drop cluster node objects with their connections open when they refresh
# the topology after a failover (redis/redis-py#4057, fixed in 8.0.1, which ``limits`` does not
# allow yet): collected, they warn (ResourceWarning) and close. Ignored in the cluster's failover
# alone, and collected before it ends, never in a later test; closing the guard otherwise closes
# every connection (test_closing_the_guard_closes_every_connection).
REDIS_PY_DROPPED_NODES = pytest.mark.filterwarnings("ignore::ResourceWarning")


@pytest.mark.parametrize(
    "topology",
    [pytest.param("cluster", marks=REDIS_PY_DROPPED_NODES), "sentinel"],
    indirect=True,
)
async def test_a_master_killed_mid_traffic_answers_503_until_a_replica_takes_over(
    topology: Topology, tmp_path: Path
) -> None:
    """The master holding a user's keys is killed while an attacker guesses their code, texts
    are sent and attempts are counted without end. Until a replica takes over (held back while
    the test looks), every attempt and text answers 503 and the readiness probe says the limits
    are down; after, the counts are those of before the crash, the same limits hold, and the
    probe is up again. Replication being asynchronous, only attempts of the master's last
    moments may be forgotten (docs/deployment.md bounds them)."""
    kind = type(topology).__name__
    store = SQLStore(f"sqlite+aiosqlite:///{tmp_path}/mfa.db")
    ga = guarded_app(store, topology)
    text_storage = storage_from_uri(topology.uri)
    texts = SendLimiter(text_storage, TEXTS)
    # Attempts without end, to count what the master acknowledged before it died.
    counted = FailureLimiter(storage_from_uri(topology.uri), "1000000/day")

    # The attacker's target: the master holding their failure count is the one to die. Every
    # other user below has a key on it too.
    target = f"target-{kind}@example.test"
    victim = await topology.master_for(failure_key(target))
    halfway = await first(
        f"halfway-{kind}-{{n}}@example.test", lambda u: on(topology, victim, failure_key(u))
    )
    endless = await first(
        f"endless-{kind}-{{n}}@example.test", lambda u: on(topology, victim, failure_key(u))
    )
    texted = await first(
        f"texted-{kind}-{{n}}@example.test",
        lambda u: on(topology, victim, text_key("user", u, TEXTS.per_user)),
    )
    # Half-way through their texts: on the cluster, their own count is on a live master and
    # their number's on the dying one, so a send refused for the number must give the user's
    # slot back.
    phone = "+33600000010"
    other_phone = await first(
        "+3361{n:07d}", lambda p: on(topology, victim, text_key("number", p, TEXTS.per_number))
    )
    texted_halfway = await first(
        f"texted-halfway-{kind}-{{n}}@example.test",
        lambda u: elsewhere(topology, victim, text_key("user", u, TEXTS.per_user)),
    )

    try:
        async with ga.client() as owner, ga.client() as attacker:
            secret = await enrolled(ga, owner, target)
            await sign_in(attacker, target)
            limiter = ga.guard.limiter
            assert [await limiter.acquire(halfway, ga.clock()) for _ in range(3)] == [None] * 3
            for _ in range(3):
                assert isinstance(await texts.reserve(texted, phone, PEER, NOW), Reservation)
                assert isinstance(
                    await texts.reserve(texted_halfway, other_phone, PEER, NOW), Reservation
                )
            assert (await ga.guard.check()).ready

            async with Traffic() as traffic:
                for _ in range(3):
                    traffic.send(
                        "guess",
                        lambda: attacker.post(
                            "/mfa/api/verify", json={"code": wrong_code(ga, secret)}
                        ),
                    )
                traffic.send("text", lambda: texts.reserve(texted, phone, PEER, NOW))
                traffic.send("counted", lambda: counted.acquire(endless, NOW))
                await traffic.until(
                    lambda: (
                        all(len(traffic.of(n)) >= 5 for n in STREAMS)
                        and any(o.status_code == 429 for o in responses(traffic.of("guess")))
                    ),
                    "the traffic to get going, and the target's budget to be spent",
                )
                # The target's budget was spent a while before the crash, which the failover
                # must not forget; the endless attempts go on to the last moment.
                await asyncio.sleep(REPLICATION_LAG)

                crash = time.monotonic()
                async with topology.failover_held(victim):
                    victim.kill()
                    traffic.phase = "outage"
                    # While no master holds the keys: the right code is not tried, nothing is
                    # counted or sent, the probe says so.
                    assert_unavailable(
                        await attacker.post("/mfa/api/verify", json={"code": ga.code(secret)})
                    )
                    with pytest.raises(StoreUnavailable):
                        await limiter.acquire(halfway, ga.clock())
                    with pytest.raises(StoreUnavailable):
                        await texts.reserve(texted_halfway, other_phone, PEER, NOW)
                    readiness = await ga.guard.check()
                    assert readiness.as_json()["checks"]["rate_limits"]["ok"] is False
                    await traffic.until(
                        lambda: all(
                            sum(map(outcome_is_unavailable, traffic.of(n, "outage"))) >= 3
                            for n in STREAMS
                        ),
                        "every stream to meet the outage",
                    )

                master = await topology.failed_over(victim, failure_key(target))
                assert master is not victim
                traffic.phase = "after"
                await traffic.until(
                    lambda: all(
                        not all(map(outcome_is_unavailable, traffic.of(n, "after")))
                        for n in STREAMS
                    ),
                    "every stream to get answers again",
                )

            # Every guess was checked against the budget, refused by it, or refused for the
            # outage (the generic 503): six checked in all, across the failover.
            guesses = responses(traffic.of("guess"))
            assert len(guesses) == len(traffic.of("guess"))
            assert {r.status_code for r in guesses} <= {422, 429, 503}
            assert not any(map(outcome_is_unavailable, traffic.of("guess", "before")))
            for response in guesses:
                if response.status_code == 503:
                    assert_unavailable(response)
            assert sum(r.status_code == 422 for r in guesses) <= 6
            # The count of the user half-way through came through the crash: three more (of the
            # minute's six), then refused.
            outcomes = [await limiter.acquire(halfway, ga.clock()) for _ in range(4)]
            assert outcomes[:3] == [None] * 3
            assert outcomes[3] is not None
            # The same limit after the failover: even the right code waits, then signs in.
            locked = await attacker.post("/mfa/api/verify", json={"code": ga.code(secret)})
            assert locked.status_code == 429, locked.text
            ga.clock.advance(61)
            signed_in = await attacker.post("/mfa/api/verify", json={"code": ga.code(secret)})
            assert signed_in.status_code == 200, signed_in.text

            # Of the endless attempts, the new master holds every one the old took before its
            # last moments (and possibly some it took then, or counted and died before
            # answering: refused with a 503), never more than were made.
            (day,) = parse_many("1000000/day")
            held = await master.command(
                "LLEN", "LIMITS:" + day.key_for("mfa_guard", "failures", _key(endless))
            )
            settled = traffic.of("counted", before=crash - REPLICATION_LAG)
            assert held >= sum(outcome is None for outcome in settled)
            assert held <= len(traffic.of("counted"))

            # Texts: never more than five for the user texted in a loop, still refused after;
            # the user half-way sends their last two, and no more.
            sent = sum(isinstance(outcome, Reservation) for outcome in traffic.of("text"))
            assert 3 + sent <= 5
            assert isinstance(await texts.reserve(texted, phone, PEER, NOW), SendRefused)
            for _ in range(2):
                assert isinstance(
                    await texts.reserve(texted_halfway, other_phone, PEER, NOW), Reservation
                )
            assert isinstance(
                await texts.reserve(texted_halfway, other_phone, PEER, NOW), SendRefused
            )

            readiness = await ga.guard.check()
            assert readiness.ready, readiness.as_json()
            if isinstance(topology, Sentinels):
                # Every sentinel is still there to ask, should the one that answers go down.
                assert sentinels_known(ga) == {s.port for s in topology.sentinels}
    finally:
        if not victim.alive:
            await topology.restore(victim)
        await closed(text_storage)
        await counted.aclose()
        await ga.guard.aclose()
        await store.close()
        await asyncio.sleep(0.1)  # the client's own disconnects, in tasks of its own, end
        gc.collect()


STREAMS = ("guess", "text", "counted")


# -- a storage partly down ----------------------------------------------------------------------


class _PartlyDown(MemoryStorage):
    """``limits``' memory storage whose global keys (on a master that is down) refuse every
    hit."""

    async def incr(self, key: str, expiry: float, amount: int = 1) -> int:
        if "/global/" in key and amount > 0:
            raise StorageError(ConnectionError("the master of this key is down"))
        return await super().incr(key, expiry, amount)


async def test_a_text_refused_by_a_storage_partly_down_gives_back_the_slots_it_took() -> None:
    """On a cluster the text budget's keys are on several masters: with one down, the limits
    checked before its key count the send, the send fails with 503, and the user must not have
    spent their texts on it."""
    storage = _PartlyDown()
    texts = SendLimiter(storage, TEXTS)
    for _ in range(10):
        with pytest.raises(StoreUnavailable):
            await texts.reserve("partly@example.test", "+33600000003", PEER, NOW)
    (per_user,) = parse_many(TEXTS.per_user)
    stats = await FixedWindowRateLimiter(storage).get_window_stats(
        per_user,
        "mfa_guard:sms",
        "user",
        hashlib.sha256(b"partly@example.test").hexdigest()[:32],
    )
    assert stats.remaining == 5


# -- helpers -------------------------------------------------------------------------------


def guarded_app(store: SQLStore, topology: Topology) -> GuardedApp:
    """The guard as it runs with several workers on shared state: limits on the topology."""
    return build_app(
        store=store,
        storage_uri=topology.uri,
        workers=2,
        require_shared_state=True,
        rate_limits=CODES,
    )


def sentinels_known(ga: GuardedApp) -> set[int]:
    """The ports of the sentinels the guard's storage asks where the master is."""
    storage: Any = ga.guard.limiter._storage
    return {
        client.connection_pool.connection_kwargs["port"]
        for client in storage.bridge.sentinel.sentinels
    }


async def enrolled(ga: GuardedApp, owner: httpx.AsyncClient, user: str) -> str:
    """``user`` enrols an authenticator app; the TOTP secret. The clock is then on a step no
    code was given in."""
    await sign_in(owner, user)
    secret, _ = await enrol(ga, owner)
    ga.clock.advance(30)
    return secret
