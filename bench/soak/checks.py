"""The invariants, checked at the end from the load's record and from the database (straight to
PostgreSQL, not through the proxy). Each is a :class:`Check`: its name, whether it held, and what
was found.

Where the kit may have done something whose answer was lost (a worker killed mid-request, a
connection cut after the server committed), a check accepts either outcome: a step sent but
unanswered may be the one stored, a recovery code sent but unanswered may be spent. Where the
kit forgets on purpose (a restarted Redis starts its failure counts afresh; a success clears
them, just after its answer), the failure budget is counted from there again.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from limits import parse_many
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

from bench.soak.cluster import SITE
from bench.soak.faults import Fault, Window
from bench.soak.load import (
    CODE_FAILURES,
    RATE_LIMITS,
    RECOVERY_FAILURES,
    SUCCESSES,
    Account,
    Outcome,
    PolicyChange,
    Sample,
)
from mfa_guard.core.recovery import hash_code, normalise

# After a window closes, what it caused may still be answered (a request that met it).
GRACE = 2.0
# A success clears the failure counts in the background, just after its answer.
CLEAR_DELAY = 2.0
# An event is logged this long at most after the kit counted the attempt (a round trip or two
# to the database).
EVENT_SKEW = 1.0
# Steps, codes, users: at most this many named in a check's detail.
SHOWN = 5


@dataclass(frozen=True, slots=True)
class Check:
    name: str
    ok: bool
    detail: str


@dataclass(frozen=True, slots=True)
class Rss:
    at: float
    worker: int
    generation: int
    bytes: int


def _named(items: Iterable[object]) -> str:
    listed = list(items)
    shown = ", ".join(str(item) for item in listed[:SHOWN])
    return shown + (f" … ({len(listed)} in all)" if len(listed) > SHOWN else "")


def _check(name: str, problems: Sequence[object], fine: str) -> Check:
    if problems:
        return Check(name, False, _named(problems))
    return Check(name, True, fine)


# -- from the record -----------------------------------------------------------------------------


def record_checks(
    samples: Sequence[Sample], windows: Sequence[Window], *, hung_after: float
) -> list[Check]:
    errors = [s for s in samples if s.status >= 500 and s.status != 503]
    unavailable = [s for s in samples if s.outcome is Outcome.UNAVAILABLE]
    outside = [
        f"{s.kind} at {s.sent:.1f}"
        for s in unavailable
        if not any(w.covers(s.sent, s.received, GRACE) for w in windows)
    ]
    kills = [w for w in windows if w.fault is Fault.WORKER_KILL]
    dropped = [s for s in samples if s.outcome is Outcome.DROPPED]
    stray = [
        f"{s.kind} at {s.sent:.1f}"
        for s in dropped
        if not any(w.covers(s.sent, s.received, GRACE) for w in kills)
    ]
    unexpected = [
        f"{s.kind} {s.status} {s.error or ''}".strip()
        for s in samples
        if s.outcome is Outcome.UNEXPECTED
    ]
    slowest = max((s.latency for s in samples), default=0.0)
    hung = [f"{s.kind} {s.latency:.1f} s" for s in samples if s.latency > hung_after]
    return [
        _check("no 500", [f"{s.kind} {s.status}" for s in errors], "none"),
        _check(
            "every 503 inside a fault window",
            outside,
            f"{len(unavailable)} 503s, all within a window (+{GRACE:.0f} s)",
        ),
        _check(
            "no request dropped but by a killed worker",
            stray,
            f"{len(dropped)} dropped, all while a worker was down",
        ),
        _check("every answer the one its kind expects", unexpected, "all"),
        _check(
            "every request answered in bounded time",
            hung,
            f"slowest {slowest:.2f} s (bound {hung_after:.0f} s)",
        ),
        _steps_once(samples),
        _codes_once(samples),
        *_budgets(
            "no failure budget exceeded (the load's record)",
            _record_attempts(samples, windows),
        ),
    ]


def _steps_once(samples: Sequence[Sample]) -> Check:
    accepted = Counter(
        (s.user, s.detail)
        for s in samples
        if s.kind in ("confirm", "verify", "replay") and s.status == 200
    )
    twice = [f"{user} step {step}" for (user, step), n in accepted.items() if n > 1]
    return _check(
        "no time step accepted twice (the load's record)",
        twice,
        f"{len(accepted)} steps accepted, each once",
    )


def _codes_once(samples: Sequence[Sample]) -> Check:
    accepted = Counter(
        (s.user, s.detail)
        for s in samples
        if s.kind in ("recovery", "recovery_replay") and s.status == 200
    )
    twice = [user for (user, _), n in accepted.items() if n > 1]
    return _check(
        "no recovery code used twice (the load's record)",
        twice,
        f"{len(accepted)} codes used, each once",
    )


@dataclass(frozen=True, slots=True)
class Attempts:
    """The failures one user's budget counted, and when the count was cleared: each failure
    and each clearing as the span of time it happened in."""

    budget: str
    spec: str
    failures: list[tuple[float, float]]
    clears: list[tuple[float, float]]


def _record_attempts(samples: Sequence[Sample], windows: Sequence[Window]) -> list[Attempts]:
    restarts = [(w.start, w.end) for w in windows if w.fault is Fault.REDIS_RESTART]
    by_user: dict[str, list[Sample]] = defaultdict(list)
    for sample in samples:
        by_user[sample.user].append(sample)
    found = []
    for own in by_user.values():
        # A success answered, or one whose answer was lost, may have cleared the counts.
        clears = [
            (s.sent, s.received + CLEAR_DELAY)
            for s in own
            if s.kind in SUCCESSES
            and (s.status == 200 or s.outcome in (Outcome.DROPPED, Outcome.UNAVAILABLE))
        ]
        for budget, kinds, spec in (
            ("codes", CODE_FAILURES, RATE_LIMITS.failures),
            ("recovery codes", RECOVERY_FAILURES, RATE_LIMITS.recovery_failures),
        ):
            failures = [(s.sent, s.received) for s in own if s.kind in kinds and s.status == 422]
            found.append(Attempts(budget, spec, failures, clears + restarts))
    return found


def _budgets(name: str, attempts: Sequence[Attempts]) -> list[Check]:
    """No more failures than a window allows were ever counted: ``limit + 1`` failures of one
    stretch without clearing, the last of which cannot have been counted a window's length
    after the first."""
    over: list[str] = []
    counted = 0
    for user in attempts:
        for stretch in _stretches(user.failures, user.clears):
            counted += len(stretch)
            for item in parse_many(user.spec):
                limit, seconds = item.amount, item.get_expiry()
                for first, last in zip(stretch, stretch[limit:], strict=False):
                    if last[1] - first[0] < seconds:
                        over.append(f"{user.budget}: {limit + 1} failures in {seconds} s")
    return [_check(name, over, f"{counted} failures counted, none over a limit")]


def _stretches(
    failures: list[tuple[float, float]], clears: list[tuple[float, float]]
) -> list[list[tuple[float, float]]]:
    """The failures between clearings, in order; one that may have happened while a clearing
    did belongs to none (it may or may not have been cleared)."""
    stretches: dict[int, list[tuple[float, float]]] = defaultdict(list)
    for failure in sorted(failures):
        if any(start <= failure[1] and failure[0] <= end for start, end in clears):
            continue
        stretches[sum(1 for _, end in clears if end < failure[0])].append(failure)
    return [stretches[key] for key in sorted(stretches)]


# -- from the database ---------------------------------------------------------------------------


async def database_checks(
    url: str,
    accounts: Sequence[Account],
    policy: Sequence[PolicyChange],
    windows: Sequence[Window],
) -> list[Check]:
    engine = create_async_engine(url, connect_args={"timeout": 10})
    try:
        async with engine.connect() as conn:
            rows = {
                name: (await conn.execute(text(query), {"site": SITE})).mappings().all()
                for name, query in QUERIES.items()
            }
    finally:
        await engine.dispose()
    return [
        _enrolments_kept(accounts, rows),
        _steps_in_database(accounts, rows),
        _codes_in_database(accounts, rows),
        _policy_kept(policy, rows),
        *_budgets(
            "no failure budget exceeded (the security log)",
            _logged_attempts(rows["events"], windows),
        ),
    ]


QUERIES = {
    "enrolments": "SELECT user_id, epoch, confirmed_at, phone, phone_verified_at, recovery_salt, "
    "recovery_params FROM mfa_guard_enrolments",
    "apps": "SELECT id, user_id, kind, last_step FROM mfa_guard_authenticators",
    "codes": "SELECT user_id, code_hash FROM mfa_guard_recovery_codes",
    "members": "SELECT user_id, role FROM mfa_guard_site_members WHERE site_id = :site",
    "site": "SELECT enforce, grace_deadline FROM mfa_guard_sites WHERE id = :site",
    "events": "SELECT kind, user_id, at, method FROM mfa_guard_events ORDER BY at",
}


def _enrolments_kept(accounts: Sequence[Account], rows: dict[str, Any]) -> Check:
    enrolments = {row["user_id"]: row for row in rows["enrolments"]}
    apps = {row["id"]: row for row in rows["apps"]}
    members = {row["user_id"] for row in rows["members"]}
    lost = []
    for account in accounts:
        row = enrolments.get(account.user)
        if account.member and account.user not in members:
            lost.append(f"{account.user}: membership")
        if not account.enrolled:
            continue
        if row is None or row["confirmed_at"] is None or row["epoch"] < 1:
            lost.append(f"{account.user}: enrolment")
            continue
        app = apps.get(account.app_id)
        if app is None or app["user_id"] != account.user or app["kind"] != "totp":
            lost.append(f"{account.user}: authenticator app")
        if account.phone_verified and (
            row["phone"] != account.phone or row["phone_verified_at"] is None
        ):
            lost.append(f"{account.user}: phone")
    enrolled = sum(1 for account in accounts if account.enrolled)
    phones = sum(1 for account in accounts if account.phone_verified)
    return _check(
        "no enrolment or factor lost (the database)",
        lost,
        f"{enrolled} enrolments, their apps and {phones} phones all there",
    )


def _steps_in_database(accounts: Sequence[Account], rows: dict[str, Any]) -> Check:
    """Each app's last step is one the user sent, and at least the last one accepted; the
    security log holds no more successes with the app than steps were sent."""
    apps = {row["id"]: row for row in rows["apps"]}
    by_app = Counter(
        row["user_id"]
        for row in rows["events"]
        if (row["kind"] == "verified" and row["method"] == "totp") or row["kind"] == "enrolled"
    )
    wrong = []
    for account in accounts:
        app = apps.get(account.app_id) if account.enrolled else None
        if app is None:
            continue
        last = app["last_step"]
        if last not in account.steps_sent or last < max(account.steps_accepted, default=0):
            wrong.append(f"{account.user}: last step {last}")
        if by_app[account.user] > len(account.steps_sent):
            wrong.append(f"{account.user}: {by_app[account.user]} successes logged")
    return _check(
        "no time step accepted twice (the database)",
        wrong,
        f"{sum(by_app.values())} successes with an app logged, none past the steps sent",
    )


def _codes_in_database(accounts: Sequence[Account], rows: dict[str, Any]) -> Check:
    """No accepted code is still stored; the codes left are those issued less those used
    (less those sent whose answer was lost); the log holds one use per code at most."""
    enrolments = {row["user_id"]: row for row in rows["enrolments"]}
    stored: dict[str, set[str]] = defaultdict(set)
    for row in rows["codes"]:
        stored[row["user_id"]].add(row["code_hash"])
    logged = Counter(
        row["user_id"] for row in rows["events"] if row["kind"] == "recovery_code_used"
    )
    wrong = []
    checked = 0
    for account in accounts:
        row = enrolments.get(account.user)
        if row is None or row["recovery_salt"] is None:
            continue
        left = stored[account.user]
        for code in account.codes_accepted:
            canonical = normalise(code)
            assert canonical is not None
            checked += 1
            if hash_code(canonical, row["recovery_salt"], row["recovery_params"]) in left:
                wrong.append(f"{account.user}: a used code is still stored")
        if account.codes_known:
            issued = set(account.codes_issued)
            used = len(issued & set(account.codes_accepted))
            maybe = len(issued & account.codes_sent)
            if not len(issued) - maybe <= len(left) <= len(issued) - used:
                wrong.append(f"{account.user}: {len(left)} codes left of {len(issued)}")
        if logged[account.user] > len(account.codes_sent):
            wrong.append(f"{account.user}: {logged[account.user]} uses logged")
    return _check(
        "no recovery code used twice (the database)",
        wrong,
        f"{checked} used codes gone from the store, the counts left as spent",
    )


def _policy_kept(policy: Sequence[PolicyChange], rows: dict[str, Any]) -> Check:
    """The site's policy is the last one acknowledged, or one sent after it whose answer was
    lost."""
    site = rows["site"][0]
    acknowledged = [change for change in policy if change.status == 200]
    possible = {False} if not acknowledged else {acknowledged[-1].enforce}
    since = acknowledged[-1].sent if acknowledged else 0.0
    possible |= {c.enforce for c in policy if c.sent > since and c.status in (0, 503)}
    found = bool(site["enforce"])
    return _check(
        "the site's policy is the last one set (the database)",
        [] if found in possible else [f"enforce={found}, expected one of {sorted(possible)}"],
        f"{len(acknowledged)} changes acknowledged, enforce={found}",
    )


def _logged_attempts(events: Sequence[Any], windows: Sequence[Window]) -> list[Attempts]:
    """The failures the security log holds, each logged a little after the kit counted it."""
    restarts = [(w.start, w.end) for w in windows if w.fault is Fault.REDIS_RESTART]
    by_user: dict[str, list[Any]] = defaultdict(list)
    for row in events:
        by_user[row["user_id"]].append(row)
    found = []
    for own in by_user.values():
        clears = [
            (row["at"] - EVENT_SKEW, row["at"] + CLEAR_DELAY)
            for row in own
            if row["kind"] in ("verified", "enrolled", "device_recognised", "phone_verified")
        ]
        codes = [
            (row["at"] - EVENT_SKEW, row["at"])
            for row in own
            if row["kind"] == "code_reused"
            or (row["kind"] == "verification_failed" and row["method"] in ("totp", "sms"))
        ]
        recovery = [
            (row["at"] - EVENT_SKEW, row["at"])
            for row in own
            if row["kind"] == "verification_failed" and row["method"] == "recovery"
        ]
        found.append(Attempts("codes", RATE_LIMITS.failures, codes, clears + restarts))
        found.append(
            Attempts("recovery codes", RATE_LIMITS.recovery_failures, recovery, clears + restarts)
        )
    return found


# -- memory ---------------------------------------------------------------------------------------

# A worker's resident memory may still grow this much over the last third of its life: a step
# or two of the allocator (each thread hashing a recovery code with scrypt takes 8 MiB, which
# glibc keeps in that thread's arena: the resident size rises with the most hashes ever run at
# once, and stops), not a leak, which grows with the requests.
FLAT_BYTES = 16 * 2**20


def memory_growth(
    rss: Sequence[Rss], started: float, ended: float
) -> list[tuple[str, float, float]]:
    """Per worker process that lived most of the run: its growth over the middle and the last
    third of its life (bytes, medians of the samples)."""
    series: dict[tuple[int, int], list[Rss]] = defaultdict(list)
    for sample in rss:
        series[(sample.worker, sample.generation)].append(sample)
    found: list[tuple[str, float, float]] = []
    for (worker, generation), own in sorted(series.items()):
        if own[-1].at - own[0].at < 0.6 * (ended - started):
            continue
        thirds = [own[i * len(own) // 3 : (i + 1) * len(own) // 3] for i in range(3)]
        medians = [sorted(s.bytes for s in third)[len(third) // 2] for third in thirds]
        found.append(
            (
                f"worker {worker} (start {generation})",
                medians[1] - medians[0],
                medians[2] - medians[1],
            )
        )
    return found


def memory_check(growth: Sequence[tuple[str, float, float]]) -> Check:
    grew = [
        f"{name}: +{late / 2**20:.1f} MB in its last third"
        for name, early, late in growth
        if late > max(FLAT_BYTES, early / 2)
    ]
    return _check(
        "each worker's memory flattens",
        grew,
        "; ".join(
            f"{name}: +{early / 2**20:.1f} MB, then +{late / 2**20:.1f} MB"
            for name, early, late in growth
        ),
    )
