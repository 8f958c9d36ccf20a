"""The faults, on a schedule: each kind in turn, one at a time, with calm between them and at the
end. Each is recorded as a :class:`Window`, from the moment it is injected to the moment its
backend serves again (Redis answers, the restarted worker is healthy); a 503 or a dropped request
is allowed only while a window is open (and a short grace after).
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from enum import StrEnum

from bench.faults_net import FaultProxy, RedisServer
from bench.soak.cluster import Workers


class Fault(StrEnum):
    REDIS_RESTART = "Redis restarted"
    POSTGRES_CUT = "PostgreSQL connections cut"
    WORKER_KILL = "worker SIGKILLed and restarted"
    SLOW_STORE = "slow store"


@dataclass(frozen=True, slots=True)
class Planned:
    fault: Fault
    at: float  # seconds after the start
    seconds: float  # how long it lasts (a restart: the time down)


@dataclass(frozen=True, slots=True)
class Schedule:
    """A fault every ``every`` seconds from ``first``, none in the last ``calm`` seconds; how
    long each lasts; the latency the slow store adds to every packet, each way."""

    first: float
    every: float
    calm: float
    lasting: dict[Fault, float]
    latency: float

    def plan(self, seconds: float) -> list[Planned]:
        kinds = list(Fault)
        planned: list[Planned] = []
        at = self.first
        while at + self.lasting[kinds[len(planned) % len(kinds)]] <= seconds - self.calm:
            fault = kinds[len(planned) % len(kinds)]
            planned.append(Planned(fault, at, self.lasting[fault]))
            at += self.every
        return planned


# For `make soak`: every kind of fault about every three minutes in ten.
STANDARD = Schedule(
    first=45.0,
    every=45.0,
    calm=60.0,
    lasting={
        Fault.REDIS_RESTART: 5.0,
        Fault.POSTGRES_CUT: 10.0,
        Fault.WORKER_KILL: 3.0,
        Fault.SLOW_STORE: 30.0,
    },
    latency=0.1,
)
# For a run of a minute (the suite's): each kind once, short.
COMPRESSED = Schedule(
    first=10.0,
    every=9.0,
    calm=14.0,
    lasting={
        Fault.REDIS_RESTART: 3.0,
        Fault.POSTGRES_CUT: 4.0,
        Fault.WORKER_KILL: 1.0,
        Fault.SLOW_STORE: 6.0,
    },
    latency=0.05,
)


def schedule_for(seconds: float) -> Schedule:
    return STANDARD if seconds >= 300 else COMPRESSED


@dataclass(frozen=True, slots=True)
class Window:
    fault: Fault
    start: float  # seconds since the epoch
    end: float

    def covers(self, sent: float, received: float, grace: float) -> bool:
        """Whether a request sent and answered then overlaps the window (or its grace)."""
        return sent <= self.end + grace and received >= self.start


async def inject(
    planned: list[Planned],
    schedule: Schedule,
    started: float,
    *,
    redis: RedisServer,
    proxy: FaultProxy,
    workers: Workers,
    windows: list[Window],
) -> None:
    """Injects each fault at its time (after ``started``, on the epoch clock) and lifts it."""
    for fault in planned:
        await asyncio.sleep(max(0.0, started + fault.at - time.time()))
        start = time.time()
        if fault.fault is Fault.REDIS_RESTART:
            await redis.stop()
            await asyncio.sleep(fault.seconds)
            await redis.start()
        elif fault.fault is Fault.POSTGRES_CUT:
            proxy.cut()
            await asyncio.sleep(fault.seconds)
            proxy.restore()
        elif fault.fault is Fault.WORKER_KILL:
            victim = workers.all[-1]
            await workers.kill(victim)
            await asyncio.sleep(fault.seconds)
            await workers.start(victim)
        else:
            proxy.latency = schedule.latency
            await asyncio.sleep(fault.seconds)
            proxy.latency = 0.0
        windows.append(Window(fault.fault, start, time.time()))
