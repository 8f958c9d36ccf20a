"""Side-by-side measurement and the one-line-per-figure report."""

from __future__ import annotations

import math
import statistics
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from enum import StrEnum


class Verdict(StrEnum):
    PASS = "PASS"  # noqa: S105 (a verdict, not a password)
    FAIL = "FAIL"
    INFO = "info"
    NA = "n/a"


@dataclass(frozen=True, slots=True)
class Ratio:
    """The median of per-pair ratios B/A, with the spread over the pairs."""

    median: float
    low: float
    high: float
    pairs: int

    @classmethod
    def of(cls, ratios: Sequence[float]) -> Ratio:
        if not ratios:
            raise ValueError("no pairs were measured")
        return cls(statistics.median(ratios), min(ratios), max(ratios), len(ratios))

    def __str__(self) -> str:
        return f"{self.median:.3f} (min {self.low:.3f}, max {self.high:.3f}, {self.pairs} pairs)"


@dataclass(frozen=True, slots=True)
class Line:
    figure: str
    value: str
    budget: str
    verdict: Verdict

    def __str__(self) -> str:
        budget = f"budget {self.budget}" if self.budget else ""
        return f"{self.figure:<48} {self.value:<64} {budget:<18} {self.verdict.value}"


@dataclass
class Report:
    lines: list[Line] = field(default_factory=list)

    def add(self, line: Line) -> None:
        self.lines.append(line)
        print(line, flush=True)

    def note(self, text: str) -> None:
        """A detail under the last line (a breakdown, a caveat): indented, no verdict."""
        print(f"    {text}", flush=True)

    @property
    def failed(self) -> list[Line]:
        return [line for line in self.lines if line.verdict is Verdict.FAIL]


def at_most(value: float, budget: float) -> Verdict:
    return Verdict.PASS if value <= budget else Verdict.FAIL


def at_least(value: float, budget: float) -> Verdict:
    return Verdict.PASS if value >= budget else Verdict.FAIL


async def alternate(
    run_a: Callable[[], Awaitable[float]],
    run_b: Callable[[], Awaitable[float]],
    pairs: int,
    *,
    ratio: Callable[[float, float], float] = lambda a, b: b / a,
) -> Ratio:
    """Runs A, B, A, B … ``pairs`` times; each run returns its figure (seconds, requests/s …)."""
    ratios = []
    for _ in range(pairs):
        a = await run_a()
        b = await run_b()
        ratios.append(ratio(a, b))
    return Ratio.of(ratios)


def percentile(samples: Sequence[float], fraction: float) -> float:
    """The nearest-rank percentile (``fraction`` 0.5 is the median, 0.99 the p99)."""
    ordered = sorted(samples)
    rank = max(1, math.ceil(fraction * len(ordered)))
    return ordered[rank - 1]
