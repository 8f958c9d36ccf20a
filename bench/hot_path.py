"""Figure 1: the hot path in process — the same app bare and guarded, through raw ASGI calls."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from dataclasses import dataclass

from starlette.types import ASGIApp, Scope

from bench.apps import (
    BenchApp,
    Variant,
    build,
    enrolled_session,
    exchange,
    expect,
    recorded_metrics,
    recorded_points,
    scope_for,
    settled_cookie,
    sign_session,
    timed_batch,
    verified_session,
)
from bench.report import Line, Ratio, Report, Verdict, alternate, at_most
from mfa_guard.web.middleware import ADMITTED_LIMIT

# Each batch runs this long, so a batch spans many scheduler ticks and few GC cycles matter.
BATCH_SECONDS = 0.004
CALIBRATION_REQUESTS = 300
VERIFIED_USER = "verified@acme.test"
# Time ratios guarded / bare: a session sent again (its marker let in before), a request that
# leaves the guard at its first tests (anonymous, exempt path), a marker read and checked.
SAME_SESSION_BUDGET = 1.05
PASS_THROUGH_BUDGET = 1.03
ANOTHER_SESSION_BUDGET = 1.10
# Time ratio metrics on / off on the verified session's hot path: a request let in reports
# nothing, so the two run the same code; the budget is the pass-through's.
METRICS_BUDGET = PASS_THROUGH_BUDGET


@dataclass(frozen=True, slots=True)
class Side:
    """One side of a comparison: an app and the requests it gets, in order."""

    app: ASGIApp
    scopes: Iterator[Scope]


async def batch_size(side: Side, status: int = 200) -> int:
    """Requests per batch so a batch lasts about ``BATCH_SECONDS`` (after a warm-up)."""
    await timed_batch(side.app, side.scopes, CALIBRATION_REQUESTS, status)
    seconds = await timed_batch(side.app, side.scopes, CALIBRATION_REQUESTS, status)
    return max(20, int(BATCH_SECONDS / (seconds / CALIBRATION_REQUESTS)))


async def side_by_side(a: Side, b: Side, pairs: int, status: int = 200) -> Ratio:
    """B's time over A's for the same number of requests, batch by batch."""
    count = await batch_size(a, status)
    await timed_batch(b.app, b.scopes, CALIBRATION_REQUESTS, status)

    async def run_a() -> float:
        return await timed_batch(a.app, a.scopes, count, status)

    async def run_b() -> float:
        return await timed_batch(b.app, b.scopes, count, status)

    return await alternate(run_a, run_b, pairs)


def repeat(scope: Scope) -> Iterator[Scope]:
    return itertools.repeat(scope)


async def run(report: Report, *, pairs: int) -> None:
    bare = build(Variant.BARE)
    floor = build(Variant.FLOOR)
    guarded = build(Variant.GUARDED)

    verified, _ = await enrolled_session(guarded, VERIFIED_USER)
    # A signed-in user without 2FA: the guard writes a marker on the first request, which the
    # browser then sends back with every request.
    plain = await settled_cookie(guarded, sign_session({"user": "plain@acme.test"}))

    control = await side_by_side(
        Side(bare.app, repeat(scope_for("/", verified))),
        Side(build(Variant.BARE).app, repeat(scope_for("/", verified))),
        pairs,
    )
    report.add(Line("hot path control: bare vs bare", f"time ratio {control}", "", Verdict.INFO))
    for name, cookie in (("verified session", verified), ("anonymous", None)):
        ratio = await side_by_side(
            Side(bare.app, repeat(scope_for("/", cookie))),
            Side(floor.app, repeat(scope_for("/", cookie))),
            pairs,
        )
        report.add(
            Line(
                f"hot path floor: pass-through, {name}",
                f"time ratio {ratio}",
                "",
                Verdict.INFO,
            )
        )

    # The guard is really in the path: the same user, signed in again without the second
    # factor, is sent to the challenge.
    unverified = await exchange(guarded.app, scope_for("/", sign_session({"user": VERIFIED_USER})))
    expect(unverified.status == 303, f"an unverified session got {unverified.status}, not 303")

    cases: list[tuple[str, Scope, float]] = [
        ("verified session", scope_for("/", verified), SAME_SESSION_BUDGET),
        ("signed in, no 2FA", scope_for("/", plain), SAME_SESSION_BUDGET),
        ("anonymous", scope_for("/", None), PASS_THROUGH_BUDGET),
        ("exempt path /health", scope_for("/health", None), PASS_THROUGH_BUDGET),
    ]
    for name, scope, budget in cases:
        await guarded_line(report, name, bare, guarded, scope, pairs, budget)
    await metrics_line(report, guarded, scope_for("/", verified), pairs)

    # What the first request of a session costs (and every request, in a process serving more
    # sessions than the guard remembers): verified sessions of the same user, each with its
    # own marker, in turn, more of them than the middleware keeps.
    guard = guarded.the_guard()
    sessions = [
        scope_for("/", sign_session(verified_session(guard, VERIFIED_USER, epoch=1)))
        for _ in range(ADMITTED_LIMIT + 1000)
    ]
    await guarded_line(
        report,
        "each request another session",
        bare,
        guarded,
        sessions,
        pairs,
        ANOTHER_SESSION_BUDGET,
    )
    report.note(
        f"{len(sessions):,} verified sessions in turn, more than the {ADMITTED_LIMIT:,} markers "
        "the middleware keeps: each marker is read and checked (keyed hash, types, window)"
    )


async def metrics_line(report: Report, off: BenchApp, scope: Scope, pairs: int) -> None:
    """The verified session's hot path, the guard's metrics off and on (the OpenTelemetry SDK
    recording), side by side; a store call on either side fails the line, as a metric recorded
    on the way does."""
    metrics, reader = recorded_metrics()
    on = build(Variant.GUARDED, metrics=metrics)
    # The same keys and frozen clock: the session verified on one guard is verified on both.
    reached = await exchange(on.app, scope)
    expect(reached.status == 200, f"the verified session got {reached.status} with metrics on")
    off_store, on_store = off.the_store(), on.the_store()
    off_store.calls.clear()
    on_store.calls.clear()
    ratio = await side_by_side(Side(off.app, repeat(scope)), Side(on.app, repeat(scope)), pairs)
    calls = off_store.total + on_store.total
    recorded = recorded_points(reader)
    verdict = Verdict.FAIL if calls or recorded else at_most(ratio.median, METRICS_BUDGET)
    report.add(
        Line(
            "hot path, verified session, metrics on / off",
            f"time ratio {ratio}",
            f"<= {METRICS_BUDGET:.2f}",
            verdict,
        )
    )
    if calls:
        report.note(f"{calls} store calls during the run, budget 0")
    if recorded:
        report.note(f"the hot path recorded {recorded} data points: it must report nothing")


async def guarded_line(
    report: Report,
    name: str,
    bare: BenchApp,
    guarded: BenchApp,
    requests: Scope | list[Scope],
    pairs: int,
    budget: float,
) -> None:
    """One line: the guarded app against the bare one on the same requests (one scope again
    and again, or a list in turn), against ``budget``. The hot path makes no store call: one
    during the run fails the line."""
    store = guarded.the_store()

    def scopes() -> Iterator[Scope]:
        return itertools.cycle(requests) if isinstance(requests, list) else repeat(requests)

    store.calls.clear()
    ratio = await side_by_side(Side(bare.app, scopes()), Side(guarded.app, scopes()), pairs)
    calls = store.total
    verdict = Verdict.FAIL if calls else at_most(ratio.median, budget)
    report.add(Line(f"hot path, {name}", f"time ratio {ratio}", f"<= {budget:.2f}", verdict))
    if calls:
        report.note(f"{calls} store calls during the run, budget 0: {dict(store.calls)}")
