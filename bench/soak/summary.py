"""The soak's report: the faults, the requests by kind and outcome, p50 and p99 per kind over
time, each worker's memory over time, and the invariants; printed, and as JSON."""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from bench.report import percentile
from bench.soak.checks import Check, Rss
from bench.soak.faults import Window
from bench.soak.load import EXPECTED, Outcome, Sample

BUCKETS = 10


@dataclass(frozen=True, slots=True)
class Soak:
    """Everything a run produced, for the report."""

    machine: str
    seconds: float
    workers: int
    users: int
    started: float
    ended: float
    samples: Sequence[Sample]
    windows: Sequence[Window]
    rss: Sequence[Rss]
    checks: Sequence[Check]
    logs: dict[str, Counter[str]]

    @property
    def ok(self) -> bool:
        return all(check.ok for check in self.checks)

    @property
    def bucket_seconds(self) -> float:
        return self.seconds / BUCKETS

    def bucket(self, at: float) -> int:
        return min(BUCKETS - 1, max(0, int((at - self.started) / self.bucket_seconds)))

    def faulted_buckets(self) -> set[int]:
        return {
            index
            for window in self.windows
            for index in range(self.bucket(window.start), self.bucket(window.end) + 1)
        }


def outcomes(soak: Soak) -> dict[str, Counter[str]]:
    table: dict[str, Counter[str]] = defaultdict(Counter)
    for sample in soak.samples:
        table[sample.kind][sample.outcome.value] += 1
    return {kind: table[kind] for kind in EXPECTED if kind in table}


def latencies(soak: Soak) -> dict[str, list[tuple[float, float] | None]]:
    """p50 and p99 in milliseconds, per kind and time bucket (``None``: no request)."""
    found: dict[str, list[list[float]]] = defaultdict(lambda: [[] for _ in range(BUCKETS)])
    for sample in soak.samples:
        if sample.outcome is not Outcome.DROPPED:
            found[sample.kind][soak.bucket(sample.sent)].append(sample.latency * 1000)
    return {
        kind: [
            (percentile(values, 0.5), percentile(values, 0.99)) if values else None
            for values in found[kind]
        ]
        for kind in EXPECTED
        if kind in found
    }


def memory(soak: Soak) -> dict[str, list[float | None]]:
    """Each worker process's resident memory in MB, the median per time bucket."""
    found: dict[str, list[list[int]]] = defaultdict(lambda: [[] for _ in range(BUCKETS)])
    for sample in soak.rss:
        found[f"worker {sample.worker} (start {sample.generation})"][soak.bucket(sample.at)].append(
            sample.bytes
        )
    return {
        name: [sorted(values)[len(values) // 2] / 2**20 if values else None for values in series]
        for name, series in sorted(found.items())
    }


def as_json(soak: Soak) -> dict[str, Any]:
    return {
        "machine": soak.machine,
        "seconds": soak.seconds,
        "workers": soak.workers,
        "users": soak.users,
        "requests": len(soak.samples),
        "per_second": len(soak.samples) / (soak.ended - soak.started),
        "rerouted": sum(1 for s in soak.samples if s.rerouted),
        "faults": [
            {"fault": w.fault.value, "start": w.start - soak.started, "end": w.end - soak.started}
            for w in soak.windows
        ],
        "outcomes": {kind: dict(counts) for kind, counts in outcomes(soak).items()},
        "bucket_seconds": soak.bucket_seconds,
        "latency_ms": latencies(soak),
        "memory_mb": memory(soak),
        "logs": {name: dict(counts) for name, counts in soak.logs.items()},
        "invariants": [{"name": c.name, "ok": c.ok, "detail": c.detail} for c in soak.checks],
        "ok": soak.ok,
    }


def render(soak: Soak) -> str:
    lines = [
        f"mfa_guard soak: {soak.seconds:.0f} s, {soak.workers} uvicorn workers on PostgreSQL "
        f"and Redis, {soak.users} users; {soak.machine}",
        "",
        "faults (seconds from the start; the window lasts until the backend serves again):",
    ]
    for window in soak.windows:
        lines.append(
            f"  {window.start - soak.started:6.1f} - {window.end - soak.started:6.1f}  "
            f"{window.fault.value}"
        )
    total = len(soak.samples)
    rerouted = sum(1 for s in soak.samples if s.rerouted)
    lines += [
        "",
        f"requests: {total:,} ({total / (soak.ended - soak.started):.0f}/s); {rerouted} passed "
        "to the next worker after a refused connection",
    ]
    columns = [outcome.value for outcome in Outcome]
    lines.append(f"  {'kind':<16}" + "".join(f"{name:>11}" for name in columns))
    table = outcomes(soak)
    for kind, counts in table.items():
        lines.append(f"  {kind:<16}" + "".join(f"{counts[name]:>11,}" for name in columns))
    sums = Counter[str]()
    for counts in table.values():
        sums.update(counts)
    lines.append(f"  {'all':<16}" + "".join(f"{sums[name]:>11,}" for name in columns))

    span = soak.bucket_seconds
    faulted = soak.faulted_buckets()
    header = "".join(
        f"{f'{i * span:.0f}-{(i + 1) * span:.0f}' + ('*' if i in faulted else ''):>12}"
        for i in range(BUCKETS)
    )
    lines += ["", f"latency, ms p50/p99 per {span:.0f} s (* a fault in that time):"]
    lines.append(f"  {'kind':<16}{header}")
    for kind, series in latencies(soak).items():
        cells = "".join(
            f"{'-' if cell is None else f'{cell[0]:.0f}/{cell[1]:.0f}':>12}" for cell in series
        )
        lines.append(f"  {kind:<16}{cells}")

    lines += ["", f"memory, resident MB per {span:.0f} s (median):"]
    for name, sizes in memory(soak).items():
        cells = "".join(f"{'-' if mb is None else f'{mb:.1f}':>8}" for mb in sizes)
        lines.append(f"  {name:<22}{cells}")

    lines += ["", "worker logs:"]
    for name, counts in soak.logs.items():
        found = ", ".join(f"{n} {what}" for what, n in counts.items()) or "nothing"
        lines.append(f"  {name}: {found}")

    lines += ["", "invariants:"]
    for check in soak.checks:
        lines.append(f"  {'PASS' if check.ok else 'FAIL'}  {check.name}: {check.detail}")
    failed = sum(1 for check in soak.checks if not check.ok)
    lines += ["", f"{len(soak.checks) - failed} invariants held, {failed} failed"]
    return "\n".join(lines)
