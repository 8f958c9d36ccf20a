"""``python -m bench.soak [--seconds 600] [--workers 2] [--users 16] [--json FILE]``: the soak.

Exits 0 when every invariant held, 1 when one failed, 2 when the soak could not be set up (no
``redis-server``, PostgreSQL unreachable). Runs shorter than 300 s inject each fault once on a
compressed schedule and do not judge memory growth.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import sys
import tempfile
import time
from collections import Counter
from dataclasses import asdict
from pathlib import Path

from sqlalchemy.engine import make_url

from bench.__main__ import machine
from bench.apps import BenchError
from bench.backends import POSTGRES_URL
from bench.faults_net import FaultProxy, RedisServer, RedisServerError
from bench.soak.checks import (
    Check,
    Rss,
    database_checks,
    memory_check,
    memory_growth,
    record_checks,
)
from bench.soak.cluster import Workers, database, worker_env
from bench.soak.faults import Window, inject, schedule_for
from bench.soak.load import Balancer, Pace, Run, VirtualUser
from bench.soak.summary import Soak, as_json, render

# Runs at least this long judge whether the workers' memory flattens.
MEMORY_JUDGED_FROM = 300.0
SAMPLE_EVERY = 1.0
# Every kit timeout of the workers (statement, connect, pool, Redis), in seconds.
TIMEOUTS = 2.0
# No request may take longer: a few timeouts one after the other, and a busy machine.
HUNG_AFTER = 15.0
# What the workers' and Redis's logs are searched for: lines holding each text.
LOGGED = ("failed closed", "Traceback")


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.soak", description=__doc__)
    parser.add_argument("--seconds", type=float, default=600.0, help="how long (600)")
    parser.add_argument("--workers", type=int, default=2, help="uvicorn workers (2)")
    parser.add_argument("--users", type=int, default=16, help="virtual users (16)")
    parser.add_argument("--seed", type=int, default=1, help="of the users' choices (1)")
    parser.add_argument("--json", type=Path, help="also write the report as JSON here")
    parser.add_argument("--keep", action="store_true", help="keep the logs' folder")
    options = parser.parse_args(argv)
    if options.workers < 2 or options.users < 2 or options.seconds < 30:
        parser.error("at least 2 workers, 2 users and 30 seconds")
    return options


async def sample_memory(workers: Workers, rss: list[Rss], stop: asyncio.Event) -> None:
    while not stop.is_set():
        now = time.time()
        for worker in workers.all:
            size = worker.rss()
            if size is not None:
                rss.append(Rss(now, worker.index, worker.generation, size))
        await asyncio.sleep(SAMPLE_EVERY)


async def stop_after(seconds: float, stop: asyncio.Event) -> None:
    await asyncio.sleep(seconds)
    stop.set()


def read_logs(folder: Path) -> dict[str, Counter[str]]:
    found: dict[str, Counter[str]] = {}
    for log in sorted(folder.glob("*.log")):
        counts = Counter[str]()
        for line in log.read_text("utf-8", "replace").splitlines():
            for what in LOGGED:
                if what in line:
                    counts[what] += 1
        found[log.stem] = counts
    return found


async def soak(options: argparse.Namespace, folder: Path) -> Soak:
    seconds: float = options.seconds
    server = make_url(POSTGRES_URL)
    proxy = FaultProxy((server.host or "127.0.0.1", server.port or 5432))
    redis = RedisServer(folder)
    texts = folder / "texts"
    texts.mkdir()
    schedule = schedule_for(seconds)
    pace = Pace()
    if seconds < MEMORY_JUDGED_FROM:  # a short run: everything happens, only sooner
        pace = Pace(account_every=20.0, policy_every=5.0, burst_every=20.0)
    await proxy.start()
    try:
        async with database(proxy) as db:
            env = worker_env(
                database_url=db.url(proxied=True),
                redis_url=redis.url,
                texts=texts,
                workers=options.workers,
                timeouts=TIMEOUTS,
            )
            workers = Workers(env, folder)
            run = Run(Balancer(workers), texts, pace)
            windows: list[Window] = []
            rss: list[Rss] = []
            try:
                await redis.start()
                await workers.start_all(options.workers)
                users = [
                    VirtualUser(index, run, seed=options.seed * 1000 + index)
                    for index in range(options.users)
                ]
                started = time.time()
                async with asyncio.TaskGroup() as tasks:
                    for user in users:
                        tasks.create_task(user.run_until_stopped())
                    tasks.create_task(
                        inject(
                            schedule.plan(seconds),
                            schedule,
                            started,
                            redis=redis,
                            proxy=proxy,
                            workers=workers,
                            windows=windows,
                        )
                    )
                    tasks.create_task(sample_memory(workers, rss, run.stop))
                    tasks.create_task(stop_after(seconds, run.stop))
                ended = time.time()
            finally:
                await workers.stop_all()
                await redis.stop()
            checks: list[Check] = record_checks(run.samples, windows, hung_after=HUNG_AFTER)
            checks += await database_checks(
                db.url(proxied=False), run.accounts, run.policy, windows
            )
    finally:
        await proxy.close()
    growth = memory_growth(rss, started, ended)
    if seconds >= MEMORY_JUDGED_FROM:
        checks.append(memory_check(growth))
    return Soak(
        machine=machine(),
        seconds=seconds,
        workers=options.workers,
        users=options.users,
        started=started,
        ended=ended,
        samples=run.samples,
        windows=windows,
        rss=rss,
        checks=checks,
        logs=read_logs(folder),
    )


def main(argv: list[str]) -> int:
    options = parse(argv)
    folder = Path(tempfile.mkdtemp(prefix="mfa-guard-soak-"))
    try:
        result = asyncio.run(soak(options, folder))
    except (BenchError, RedisServerError) as exc:
        print(f"the soak could not be set up: {exc} (logs in {folder})", file=sys.stderr)
        return 2
    if not options.keep:
        shutil.rmtree(folder, ignore_errors=True)
    print(render(result), flush=True)
    if options.json:
        options.json.write_text(json.dumps(as_json(result), indent=2) + "\n")
    if options.keep:
        with (folder / "samples.jsonl").open("w") as output:
            for sample in result.samples:
                output.write(
                    json.dumps(
                        {
                            **asdict(sample),
                            "sent": sample.sent - result.started,
                            "received": sample.received - result.started,
                        }
                    )
                    + "\n"
                )
        print(f"logs and every request (samples.jsonl) kept in {folder}")
    return 0 if result.ok else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
