"""``python -m bench [FIGURE …] [--quick]``: run the figures (all by default), one line each.

Figures: hot (in process), http (uvicorn), verify (with the enrolment page), growth (users),
memory (rate-limit storage). Exits 1 if a budget is missed, 2 if a figure could not be set up.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import shutil
import sys
import time
from collections.abc import Callable
from pathlib import Path

from bench import growth, hot_path, over_http, verify
from bench.apps import BenchError
from bench.report import Report


def machine() -> str:
    model = "unknown CPU"
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    load = ", ".join(f"{value:.2f}" for value in os.getloadavg())
    return (
        f"{os.cpu_count()} cores ({model}), Python {platform.python_version()}, "
        f"load average {load}, load generator {'wrk' if shutil.which('wrk') else 'Python'}"
    )


def figures(quick: bool) -> dict[str, Callable[[Report], None]]:
    scale = 4 if quick else 1
    return {
        "hot": lambda report: asyncio.run(hot_path.run(report, pairs=150 // scale)),
        "http": lambda report: over_http.run(report, pairs=3 if quick else 12, seconds=1.5),
        "verify": lambda report: asyncio.run(
            verify.run(report, verifies=300 // scale, warmup=30 // scale)
        ),
        "growth": lambda report: asyncio.run(
            growth.hot_path(report, pairs=100 // scale, sessions=100_000 // scale)
        ),
        "memory": lambda report: asyncio.run(
            growth.ratelimit_memory(report, users=100_000 // scale)
        ),
    }


def main() -> int:
    table = figures(quick="--quick" in sys.argv)
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("figures", nargs="*", metavar="FIGURE", help=", ".join(table))
    parser.add_argument("--quick", action="store_true", help="fewer pairs: a smoke run")
    args = parser.parse_args()
    chosen = args.figures or list(table)
    unknown = [name for name in chosen if name not in table]
    if unknown:
        parser.error(f"unknown figure {', '.join(unknown)}: choose from {', '.join(table)}")
    print(f"mfa_guard bench: {machine()}", flush=True)
    report = Report()
    started = time.monotonic()
    for name in chosen:
        try:
            table[name](report)
        except BenchError as exc:
            print(f"{name}: could not be set up: {exc}", file=sys.stderr)
            return 2
    failed = report.failed
    print(
        f"{len(report.lines)} figures in {time.monotonic() - started:.0f} s; "
        f"{len(failed)} budgets missed; load average now "
        + ", ".join(f"{value:.2f}" for value in os.getloadavg()),
        flush=True,
    )
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
