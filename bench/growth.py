"""Figure 4, growth: the hot path with 10 enrolled users in 1 site and with 100,000 in 1,000
sites that enforce 2FA, and the memory of the in-memory rate-limit storage after failures from
100,000 distinct users, then after their windows expired."""

from __future__ import annotations

import asyncio
import random
import time
import tracemalloc
from collections.abc import Iterator
from dataclasses import dataclass

from limits.aio.storage import MemoryStorage
from starlette.types import Scope

from bench.apps import (
    ENCRYPTION_KEY,
    BenchApp,
    Variant,
    build,
    scope_for,
    sign_session,
    timed_batch,
    verified_session,
)
from bench.hot_path import Side, side_by_side
from bench.report import Line, Report, Verdict, at_most
from mfa_guard import MemoryStore
from mfa_guard.core.recovery import RecoveryCodeSet
from mfa_guard.crypto import SecretBox
from mfa_guard.ratelimit import FailureLimiter, storage_from_uri
from mfa_guard.stores.base import Authenticator, FactorKind
from mfa_guard.stores.sites import MemorySiteDirectory, Role, SitePolicy
from mfa_guard.web.middleware import ADMITTED_LIMIT

GROWTH_BUDGET = 1.05
# Enough requests before timing for the interpreter's specialisation and the allocator to settle.
WARMUP_REQUESTS = 30_000
# A short window, so the suite can wait for it to pass.
SHORT_WINDOW = "5/2 seconds"
# What may stay allocated after every window expired, as a share of what the failures took.
RESIDUE_BUDGET = 0.25


@dataclass(frozen=True, slots=True)
class Population:
    """A guarded app whose store holds ``users`` enrolments, and one verified session cookie
    per session to spread requests over."""

    bench: BenchApp
    cookies: list[str]


async def populate(users: int, sessions: int, sites: int) -> Population:
    store = MemoryStore()
    directory = MemorySiteDirectory()
    bench = build(Variant.GUARDED, store=store, sites=directory)
    guard = bench.the_guard()
    # Every site enforces 2FA, and its deadline has passed: each user is in one of them.
    deadline = bench.clock() - 3600
    policy = SitePolicy(enforce=True, grace_deadline=deadline, changed_at=deadline)
    for site in range(sites):
        await directory.save_site(f"site{site:04d}", f"Site {site}")
        await directory.set_policy(f"site{site:04d}", policy)
    # The store keeps what it is given; one encrypted secret serves every user.
    token = SecretBox([ENCRYPTION_KEY]).encrypt("JBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXP")
    recovery = RecoveryCodeSet(salt="bench", hashes=())
    for index in range(users):
        user_id = _user(index)
        app = Authenticator(
            id=f"app-{index:06d}",
            kind=FactorKind.TOTP,
            name="Authenticator app",
            created_at=bench.clock(),
            secret=token,
            last_step=0,
        )
        await store.begin_enrolment(user_id, token)
        epoch = await store.add_authenticator(
            user_id, app, now=bench.clock(), recovery=recovery, pending_secret=token
        )
        if epoch != 1:
            raise RuntimeError(f"enrolling {user_id} gave epoch {epoch}")
        await directory.add_member(f"site{index % sites:04d}", user_id, Role.OPERATOR)
    cookies = [
        sign_session(verified_session(guard, _user(index % users), epoch=1, enrol_by=deadline))
        for index in range(sessions)
    ]
    return Population(bench, cookies)


def _user(index: int) -> str:
    return f"operator{index:06d}@acme.test"


def spread(cookies: list[str], seed: int) -> Iterator[Scope]:
    """Requests from sessions drawn at random (with replacement), forever."""
    chooser = random.Random(seed)  # noqa: S311 (an order of requests, not a secret)
    order = [chooser.randrange(len(cookies)) for _ in range(200_003)]
    scopes = (scope_for("/", cookies[i]) for i in order)
    while True:
        yield from scopes
        scopes = (scope_for("/", cookies[i]) for i in order)


async def hot_path(report: Report, *, pairs: int, sessions: int) -> None:
    few = await populate(10, sessions, sites=1)
    many = await populate(100_000, sessions, sites=1_000)
    a = Side(few.bench.app, spread(few.cookies, 1))
    b = Side(many.bench.app, spread(many.cookies, 2))
    for side in (a, b):
        await timed_batch(side.app, side.scopes, WARMUP_REQUESTS, 200)
    for population in (few, many):
        population.bench.the_store().calls.clear()
        population.bench.the_sites().calls.clear()
    ratio = await side_by_side(a, b, pairs)
    calls = sum(
        population.bench.the_store().total + population.bench.the_sites().total
        for population in (few, many)
    )
    verdict = at_most(ratio.median, GROWTH_BUDGET) if calls == 0 else Verdict.FAIL
    report.add(
        Line(
            "growth, 100,000 users in 1,000 enforcing sites vs 10 in 1",
            f"time ratio {ratio}",
            f"<= {GROWTH_BUDGET:.2f}",
            verdict,
        )
    )
    report.note(
        f"{sessions:,} verified sessions each, requests drawn at random; the guard keeps no "
        f"per-user cache, and remembers at most {ADMITTED_LIMIT:,} markers it let in twice "
        "(most of these requests read and check theirs, hashing the user id)"
    )
    if calls:
        report.note(f"{calls} store and directory calls during the run, budget 0")


async def ratelimit_memory(report: Report, *, users: int) -> None:
    """Bytes the ``memory://`` storage holds (tracemalloc) before, after ``users`` distinct
    users each failed once, and after their windows expired."""
    tracemalloc.start()
    try:
        storage = storage_from_uri("memory://")
        limiter = FailureLimiter(storage, SHORT_WINDOW)
        await limiter.acquire("first@acme.test", time.time())
        await _expire(storage)
        baseline = _traced()
        for index in range(users):
            await limiter.acquire(_user(index), time.time())
        full = _traced()
        sweep = await _expire(storage)
        after = _traced()
    finally:
        tracemalloc.stop()
    grown, residue = full - baseline, after - baseline
    report.add(
        Line(
            f"rate-limit memory, {users:,} users failing",
            f"+{_mb(grown)} after the failures, +{_mb(residue)} after expiry "
            f"({residue / max(1, grown):.0%} left)",
            f"<= {RESIDUE_BUDGET:.0%} left",
            at_most(residue / max(1, grown), RESIDUE_BUDGET),
        )
    )
    report.note(
        f"limits memory://, window {SHORT_WINDOW}, over a baseline of {_mb(baseline)}; its "
        f"expiry sweep took {sweep:.1f} s (one thread hop per key)"
    )


async def _expire(storage: object, *, limit: float = 120.0) -> float:
    """Waits out the short window, then for the storage's expiry sweeps until nothing is left
    to expire (each sweep is started by a call to the storage); returns the sweeps' time."""
    await asyncio.sleep(2.2)
    started = time.monotonic()
    deadline = started + limit
    previous = -1
    while time.monotonic() < deadline:
        if isinstance(storage, MemoryStorage):
            await storage.get("bench-trigger")
            await storage.acquire_entry("bench-trigger", 1_000_000, 1)
            await storage.clear("bench-trigger")
            timer = storage.timer
            if timer is not None:
                await timer
        current = _traced()
        if current == previous:
            break
        previous = current
        await asyncio.sleep(0.1)
    return time.monotonic() - started


def _traced() -> int:
    current, _ = tracemalloc.get_traced_memory()
    return current


def _mb(size: int) -> str:
    return f"{size / 1_000_000:.1f} MB"
