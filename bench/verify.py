"""Figure 3, verify: the latency of ``POST {mount}/api/verify`` and its backend round trips,
on memory, SQLite and PostgreSQL + Redis, verify by verify in turn. Figure 5, enrolment: the
enrolment page with its QR code against one verify on PostgreSQL + Redis, side by side.

Requests go in process through ``httpx.ASGITransport``, in one session per backend that keeps
its cookie like a browser; the frozen clock moves 30 s before each verify (a time step is
accepted once), so every verify is a success that is timed and counted.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from time import perf_counter, thread_time
from typing import Any

import httpx

from bench.apps import (
    BenchApp,
    Variant,
    build,
    csrf_token_in,
    enrol,
    expect,
    recorded_metrics,
    recorded_points,
)
from bench.backends import (
    SERVERS,
    Backend,
    Call,
    CallTrace,
    FlightProxy,
    NoKitTurns,
    available,
    critical_path,
    describe_waves,
    memory,
    postgres_floor,
    postgres_redis,
    sqlite,
    summary,
    time_inside,
    waves,
)
from bench.report import Line, Ratio, Report, Verdict, at_most, percentile
from mfa_guard import Metrics
from mfa_guard.core import totp
from mfa_guard.core.totp import TOTPParameters
from mfa_guard.services import qr_svg
from mfa_guard.testing import current_code
from mfa_guard.testing.webauthn import SoftAuthenticator

ROUND_TRIP_BUDGET = 2
# The kit's p50 on PostgreSQL + Redis over the floor measured in the same run: the same two
# turns on the drivers alone, plus memory's verify without its backends' own time.
FLOOR_BUDGET = 1.15
# A verify on memory with the metrics on over off (two counters' and a histogram's recording):
# the hot path's budget, on the backend where the kit's own time weighs most.
METRICS_BUDGET = 1.05
METRICS_BATCH = 10
USER = "verify@acme.test"
PASSKEY_USER = "passkey@acme.test"
# Passkeys on for the bench's app: the software authenticator answers as the page at this
# origin would (the relying party checks it against its settings, not the request's host).
PASSKEY_ORIGIN = "http://localhost"
PASSKEYS = {"rp_id": "localhost", "origins": [PASSKEY_ORIGIN]}


@dataclass
class Subject:
    """One backend's guarded app and the signed-in, enrolled session verifying on it."""

    backend: Backend
    bench: BenchApp
    client: httpx.AsyncClient
    secret: str
    latencies: list[float] = field(default_factory=list)
    # CPU time of the event loop's thread while each verify was in flight: the kit's and the
    # libraries' own work, which a busy machine or a slow disk does not change.
    cpu: list[float] = field(default_factory=list)
    in_request: list[list[Call]] = field(default_factory=list)
    after_answer: list[list[Call]] = field(default_factory=list)
    # The calls before the answer, from the pass where every call is answered a turn later.
    structure: list[list[Call]] = field(default_factory=list)
    last_cpu: float = 0.0
    # Verifies with this passkey instead of a code (its options asked for untimed).
    passkey: SoftAuthenticator | None = None

    async def verify(self, trace: CallTrace) -> float:
        """One timed verify; the calls it made are kept."""
        bench = self.bench
        bench.clock.advance(30)
        body: dict[str, Any]
        if self.passkey is None:
            path, body = "/mfa/api/verify", {"code": current_code(self.secret, bench.clock())}
        else:
            options = await self.client.post("/mfa/api/webauthn/authenticate/options", json={})
            expect(options.status_code == 200, f"passkey options answered {options.text}")
            answer = self.passkey.get(options.json()["publicKey"], origin=PASSKEY_ORIGIN)
            path, body = "/mfa/api/webauthn/authenticate", {"credential": answer}
        started, cpu_started = perf_counter(), thread_time()
        response = await self.client.post(path, json=body)
        answered, cpu_answered = perf_counter(), thread_time()
        self.last_cpu = cpu_answered - cpu_started
        # Work the verify left running after its answer (clearing the failure count).
        await bench.the_guard().service.drain()
        ended = perf_counter()
        expect(
            response.status_code == 200,
            f"a verify on {self.backend.name} answered {response.status_code}: {response.text}",
        )
        self.in_request.append(trace.between(started, answered))
        self.after_answer.append(trace.between(answered, ended))
        return answered - started


@contextlib.asynccontextmanager
async def subject(
    backend: Backend, *, passkey: bool = False, metrics: Metrics | None = None
) -> AsyncIterator[Subject]:
    """An enrolled, verified session on ``backend``; with ``passkey``, one that has also added a
    passkey and verifies with it; with ``metrics``, a guard that reports to them."""
    passkeys: dict[str, Any] = {"webauthn": PASSKEYS} if passkey else {}
    bench = build(
        Variant.GUARDED,
        store=backend.store,
        storage_uri=backend.storage_uri,
        metrics=metrics,
        **passkeys,
    )
    guard = bench.the_guard()
    try:
        async with bench.client() as client:
            secret = await enrol(client, bench, PASSKEY_USER if passkey else USER)
            one = Subject(backend, bench, client, secret)
            if passkey:
                one.passkey = SoftAuthenticator()
                options = await client.post("/mfa/api/webauthn/register/options", json={})
                answer = one.passkey.create(options.json()["publicKey"], origin=PASSKEY_ORIGIN)
                added = await client.post("/mfa/api/webauthn/register", json={"credential": answer})
                expect(added.status_code == 200, f"adding a passkey answered {added.text}")
            yield one
    finally:
        await guard.aclose()


async def run(report: Report, *, verifies: int, warmup: int) -> None:
    missing = [
        f"{name}: {reason}"
        for name in ("postgres", "redis")
        if (reason := await available(name)) is not None
    ]
    if missing:
        report.add(Line("verify", "PostgreSQL or Redis unreachable", "", Verdict.FAIL))
        for reason in missing:
            report.note(reason)
        return
    wire = await wire_round_trips(verifies=max(20, verifies // 10), warmup=10)
    trace = CallTrace()
    with trace.patched():
        async with contextlib.AsyncExitStack() as stack:
            subjects = [
                await stack.enter_async_context(subject(await stack.enter_async_context(b())))
                for b in (memory, sqlite, postgres_redis)
            ]
            floor = await measure(subjects, trace, verifies=verifies, warmup=warmup)
            await measure_structure(subjects, trace, verifies=max(10, verifies // 15))
            mem, _, pg = subjects
            for one in subjects:
                report_subject(report, one, wire if one.backend.servers else None)
            pairs = [b / a for a, b in zip(mem.latencies, pg.latencies, strict=True)]
            ratio = Ratio.of(pairs)
            p50_mem, p50_pg = percentile(mem.latencies, 0.5), percentile(pg.latencies, 0.5)
            report.add(
                Line(
                    "verify p50, PostgreSQL + Redis / memory",
                    f"{p50_pg / p50_mem:.2f} ({_ms(p50_pg)} / {_ms(p50_mem)}); per pair {ratio}",
                    "",
                    Verdict.INFO,
                )
            )
            report_floor(report, floor, mem, pg)
            await enrolment_page(report, mem, pg, trace, pairs=max(50, verifies // 3))
            await passkey_verifies(report, trace, verifies=max(50, verifies // 3), warmup=warmup)
    await metrics_cost(report, verifies=verifies, warmup=warmup)


async def passkey_verifies(report: Report, trace: CallTrace, *, verifies: int, warmup: int) -> None:
    """A passkey's verify on memory and on PostgreSQL + Redis, counted as the code's is: its
    latency, and the calls it waits for one after another."""
    async with contextlib.AsyncExitStack() as stack:
        subjects = [
            await stack.enter_async_context(
                subject(await stack.enter_async_context(b()), passkey=True)
            )
            for b in (memory, postgres_redis)
        ]
        trace.clear()
        for round_ in range(warmup + verifies):
            for one in subjects:
                latency = await one.verify(trace)
                if round_ >= warmup:
                    one.latencies.append(latency)
                    one.cpu.append(one.last_cpu)
                else:
                    one.in_request.clear()
                    one.after_answer.clear()
            trace.clear()
        await measure_structure(subjects, trace, verifies=max(10, verifies // 5))
        for one in subjects:
            report_subject(report, one, None, what="passkey verify")


async def metrics_cost(report: Report, *, verifies: int, warmup: int) -> None:
    """A verify on memory with the guard's metrics off and on (the OpenTelemetry SDK
    recording), in batches of :data:`METRICS_BATCH` verifies in turn, which side goes first
    changing each pair; no call traced. A batch's CPU time is the figure: what the metrics add
    is the kit's own work, which a busy machine changes little, and a batch smooths a verify's
    own jitter (a collection, a tick) that a ratio of single verifies makes the spread of."""
    metrics, reader = recorded_metrics()
    untraced = CallTrace()
    ratios: list[float] = []
    async with contextlib.AsyncExitStack() as stack:
        off = await stack.enter_async_context(subject(await stack.enter_async_context(memory())))
        on = await stack.enter_async_context(
            subject(await stack.enter_async_context(memory()), metrics=metrics)
        )

        async def batch(one: Subject) -> float:
            cpu = 0.0
            for _ in range(METRICS_BATCH):
                one.latencies.append(await one.verify(untraced))
                cpu += one.last_cpu
                untraced.clear()
            return cpu

        for _ in range(max(1, warmup // METRICS_BATCH)):
            await batch(off)
            await batch(on)
        off.latencies.clear()
        on.latencies.clear()
        for pair in range(max(10, verifies // METRICS_BATCH)):
            if pair % 2:
                cpu_off, cpu_on = await batch(off), await batch(on)
            else:
                cpu_on, cpu_off = await batch(on), await batch(off)
            ratios.append(cpu_on / cpu_off)
    expect(recorded_points(reader) > 0, "the metrics recorded nothing")
    ratio = Ratio.of(ratios)
    p50_off, p50_on = percentile(off.latencies, 0.5), percentile(on.latencies, 0.5)
    report.add(
        Line(
            "verify, memory, metrics on / off",
            f"CPU {ratio}; p50 {_ms(p50_on)} / {_ms(p50_off)}",
            f"<= {METRICS_BUDGET:.2f}",
            at_most(ratio.median, METRICS_BUDGET),
        )
    )


@dataclass
class Floor:
    """What the PostgreSQL + Redis backend's servers and drivers take with no kit, measured
    between the verifies on the backend's own connections."""

    # PostgreSQL alone: a one-row SELECT, a committed one-row UPDATE.
    selects: list[float] = field(default_factory=list)
    commits: list[float] = field(default_factory=list)
    # A verify's two turns on asyncpg and redis-py alone (NoKitTurns).
    turns: list[float] = field(default_factory=list)
    # The same two turns through SQLAlchemy's async Core on the store's engine (information).
    sqlalchemy_turns: list[float] = field(default_factory=list)
    redis_keys: int = 0


async def measure(
    subjects: list[Subject], trace: CallTrace, *, verifies: int, warmup: int
) -> Floor:
    """Verify on each backend in turn, so a busy moment of the machine hits all of them; after
    each turn, PostgreSQL's own time for a read and a committed write, and a verify's two
    turns on the drivers alone (the floor)."""
    floor = Floor()
    servers = next(one for one in subjects if one.backend.servers)
    no_kit = await NoKitTurns.prepare(servers.backend.store, servers.bench.the_guard(), USER)
    floor.redis_keys = len(no_kit.windows)
    for round_ in range(warmup + verifies):
        for one in subjects:
            latency = await one.verify(trace)
            if round_ >= warmup:
                one.latencies.append(latency)
                one.cpu.append(one.last_cpu)
            else:
                one.in_request.clear()
                one.after_answer.clear()
        trace.clear()
        select, commit = await postgres_floor(servers.backend.store, USER)
        turns = await no_kit.measure()
        sqlalchemy_turns = await no_kit.measure_sqlalchemy()
        if round_ >= warmup:
            floor.selects.append(select)
            floor.commits.append(commit)
            floor.turns.append(turns)
            floor.sqlalchemy_turns.append(sqlalchemy_turns)
    return floor


def report_floor(report: Report, floor: Floor, mem: Subject, pg: Subject) -> None:
    """The kit's p50 on PostgreSQL + Redis against the floor of a verify there, measured in the
    same run: memory's verify without its backends' own time, plus the same two turns on the
    drivers alone. Then PostgreSQL alone."""
    # Wall time inside the memory store's and the memory limiter's calls, verify by verify.
    own = [time_inside(calls) for calls in mem.in_request]
    p50_mem, own_p50 = percentile(mem.latencies, 0.5), percentile(own, 0.5)
    p50_pg, turns_p50 = percentile(pg.latencies, 0.5), percentile(floor.turns, 0.5)
    lowest = p50_mem - own_p50 + turns_p50
    report.add(
        Line(
            "verify p50, PostgreSQL + Redis / no-kit floor",
            f"{p50_pg / lowest:.2f} ({_ms(p50_pg)} / {_ms(lowest)})",
            f"<= {FLOOR_BUDGET:.2f}",
            at_most(p50_pg / lowest, FLOOR_BUDGET),
        )
    )
    report.note(
        "the floor: the same two turns on asyncpg and redis-py alone p50 "
        f"{_ms(turns_p50)} (SELECT ‖ Redis pipeline of {floor.redis_keys} EVALSHA, then "
        f"committed UPDATE), plus memory's p50 {_ms(p50_mem)} without its backends' own "
        f"{_ms(own_p50)}"
    )
    sqlalchemy_p50 = percentile(floor.sqlalchemy_turns, 0.5)
    on_sqlalchemy = p50_mem - own_p50 + sqlalchemy_p50
    report.add(
        Line(
            "verify p50, PostgreSQL + Redis / SQLAlchemy",
            f"{p50_pg / on_sqlalchemy:.2f} ({_ms(p50_pg)} / {_ms(on_sqlalchemy)} SQLAlchemy "
            f"floor); SQLAlchemy floor / no-kit floor {on_sqlalchemy / lowest:.2f}",
            "",
            Verdict.INFO,
        )
    )
    report.note(
        "the SQLAlchemy floor: the same two turns through SQLAlchemy's async Core on the "
        "store's engine, each statement on its own autocommit connection (engine.connect()) "
        f"as the store runs one, p50 {_ms(sqlalchemy_p50)} ({sqlalchemy_p50 / turns_p50:.2f} times "
        "the drivers alone), plus the same share of memory's verify"
    )
    select_p50, commit_p50 = percentile(floor.selects, 0.5), percentile(floor.commits, 0.5)
    report.note(
        "PostgreSQL alone, between the verifies (asyncpg, no kit, no SQLAlchemy): a "
        f"one-row SELECT p50 {_ms(select_p50)}, a committed one-row UPDATE p50 "
        f"{_ms(commit_p50)} (the WAL flush)"
    )


async def measure_structure(subjects: list[Subject], trace: CallTrace, *, verifies: int) -> None:
    """The same verifies with every call answered a turn of the event loop later, as by a
    server: which calls a verify waits for one after another (latencies not kept)."""
    trace.answer_later = True
    try:
        for _ in range(verifies):
            for one in subjects:
                before = len(one.in_request)
                await one.verify(trace)
                one.structure.append(one.in_request.pop())
                del one.in_request[before:], one.after_answer[before:]
            trace.clear()
    finally:
        trace.answer_later = False


def report_subject(
    report: Report, one: Subject, wire: Wire | None, *, what: str = "verify"
) -> None:
    name = one.backend.name
    p50, p99 = percentile(one.latencies, 0.5), percentile(one.latencies, 0.99)
    report.add(
        Line(
            f"{what} latency, {name}",
            f"p50 {_ms(p50)}, p99 {_ms(p99)}, CPU p50 {_ms(percentile(one.cpu, 0.5))} "
            f"({len(one.latencies)} verifies)",
            "",
            Verdict.INFO,
        )
    )
    during = max(one.in_request, key=len)
    after = max(one.after_answer, key=len)
    total = len(during) + len(after)
    longest = max(one.structure, key=critical_path)
    chain = critical_path(longest)
    report.add(
        Line(
            f"{what} round trips, {name}",
            f"critical path {chain} ({total} calls: {len(during)} before the answer, "
            f"{len(after)} after it)",
            f"<= {ROUND_TRIP_BUDGET}",
            at_most(chain, ROUND_TRIP_BUDGET),
        )
    )
    report.note(f"waited for before the answer: {describe_waves(waves(longest))}")
    report.note(f"calls before the answer: {summary(during)}")
    report.note(f"after the answer (not waited for): {summary(after)}")
    if wire is not None:
        report.note(f"on the wire (TCP proxies, info): {wire}")
    counts = {len(calls) for calls in one.in_request}
    if len(counts) > 1:
        report.note(f"calls before the answer varied between verifies: {sorted(counts)}")


async def enrolment_page(
    report: Report, mem: Subject, pg: Subject, trace: CallTrace, *, pairs: int
) -> None:
    """GET {mount}/enrol with a pending set-up (its QR code rendered by segno each time), on
    the memory backend, against a verify on PostgreSQL + Redis, in turn."""
    bench = mem.bench
    async with bench.client() as client:
        signed_in = await client.post("/login", data={"user": "enrol@acme.test"})
        expect(signed_in.status_code == 303, "the enrolment user could not sign in")
        page = await client.get("/mfa/enrol")
        token = csrf_token_in(page.text)
        started = await client.post("/mfa/enrol", data={"csrf_token": token})
        expect(started.status_code == 200 and "<svg" in started.text, "no QR code after POST")
        pages: list[float] = []
        verifies: list[float] = []
        for round_ in range(pairs + 5):
            verify = await pg.verify(trace)
            before = perf_counter()
            response = await client.get("/mfa/enrol")
            took = perf_counter() - before
            expect(response.status_code == 200 and "<svg" in response.text, "no QR code on GET")
            if round_ >= 5:
                verifies.append(verify)
                pages.append(took)
            trace.clear()
    uri = totp.provisioning_uri(
        totp.new_secret(), TOTPParameters(), account="enrol@acme.test", issuer="Bench Inbox"
    )
    qr: list[float] = []
    for _ in range(pairs):
        before = perf_counter()
        qr_svg(uri, "Bench Inbox")
        qr.append(perf_counter() - before)
    ratio = Ratio.of([p / v for p, v in zip(pages, verifies, strict=True)])
    page_p50, verify_p50 = percentile(pages, 0.5), percentile(verifies, 0.5)
    report.add(
        Line(
            "enrolment page / verify on PostgreSQL + Redis",
            f"{page_p50 / verify_p50:.2f} ({_ms(page_p50)} / {_ms(verify_p50)}); per pair {ratio}",
            "< 1.00",
            Verdict.PASS if page_p50 < verify_p50 else Verdict.FAIL,
        )
    )
    report.note(
        "the set-up's QR code is drawn once, when the set-up starts (POST), and shown again "
        f"from memory; that first drawing (segno, mask search): p50 {_ms(percentile(qr, 0.5))}"
    )


@dataclass(frozen=True, slots=True)
class Wire:
    """Round trips per verify on the wire, before the answer and after it, by server."""

    labels: tuple[str, ...]
    before: tuple[float, ...]
    after: tuple[float, ...]
    opened: int

    def __str__(self) -> str:
        def part(counts: tuple[float, ...]) -> str:
            by_server = ", ".join(
                f"{label} {n:.1f}" for label, n in zip(self.labels, counts, strict=True)
            )
            return f"{sum(counts):.1f} ({by_server})"

        text = f"{part(self.before)} before the answer, {part(self.after)} after it, per verify"
        if self.opened:
            text += f"; {self.opened} connections opened during the count"
        return text


async def wire_round_trips(*, verifies: int, warmup: int) -> Wire:
    """The same verify through proxies that count round trips on the wire (latency not
    measured here: the proxy adds its own)."""
    proxies: list[FlightProxy] = []
    async with contextlib.AsyncExitStack() as stack:
        for _, host, port in SERVERS:
            proxy = FlightProxy(host, port)
            await proxy.start()
            stack.push_async_callback(proxy.close)
            proxies.append(proxy)
        postgres, redis_ = proxies
        backend = await stack.enter_async_context(
            postgres_redis(postgres_port=postgres.port, redis_port=redis_.port)
        )
        one = await stack.enter_async_context(subject(backend))
        trace = CallTrace()
        for _ in range(warmup):
            await one.verify(trace)
        connections = sum(proxy.connections for proxy in proxies)
        before = [0] * len(proxies)
        after = [0] * len(proxies)
        guard = one.bench.the_guard()
        for _ in range(verifies):
            one.bench.clock.advance(30)
            code = current_code(one.secret, one.bench.clock())
            start = [proxy.flights for proxy in proxies]
            response = await one.client.post("/mfa/api/verify", json={"code": code})
            answered = [proxy.flights for proxy in proxies]
            await guard.service.drain()
            ended = [proxy.flights for proxy in proxies]
            expect(response.status_code == 200, f"a proxied verify answered {response.status_code}")
            for i in range(len(proxies)):
                before[i] += answered[i] - start[i]
                after[i] += ended[i] - answered[i]
        opened = sum(proxy.connections for proxy in proxies) - connections
    return Wire(
        tuple(label for label, _, _ in SERVERS),
        tuple(n / verifies for n in before),
        tuple(n / verifies for n in after),
        opened,
    )


def _ms(seconds: float) -> str:
    return f"{seconds * 1000:.2f} ms"
