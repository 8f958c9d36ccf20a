"""Readiness: whether the backends the kit needs to decide a request answer now.

``guard.check()`` pings each of them at once (the MFA store, the site directory, the trusted
devices' store, the rate-limit storage), each within a timeout, and says which answered and how
fast. A load balancer's health check calls it (the demo serves it at ``/health/ready``): while a
backend does not answer, guarded requests of signed-in users answer ``503``, so the instance is
better taken out of rotation.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from time import perf_counter
from typing import Any

logger = logging.getLogger("mfa_guard")

# The user a probe reads (a read only: nothing is written, whoever has this id).
PROBE_USER = "mfa_guard:readiness-probe"


@dataclass(frozen=True, slots=True)
class Probe:
    """One backend's answer: whether it answered in time, after how long, and if not, why
    (the error's kind, never its message: a driver's message may name hosts or users)."""

    name: str
    ok: bool
    seconds: float
    error: str | None = None


@dataclass(frozen=True, slots=True)
class Readiness:
    """The answer of ``guard.check()``: ``ready`` when every backend answered."""

    probes: tuple[Probe, ...]

    @property
    def ready(self) -> bool:
        return all(probe.ok for probe in self.probes)

    def as_json(self) -> dict[str, Any]:
        """``{"ready": …, "checks": {name: {"ok", "ms", "error"}}}`` for a health endpoint."""
        return {
            "ready": self.ready,
            "checks": {
                probe.name: {
                    "ok": probe.ok,
                    "ms": round(probe.seconds * 1000, 1),
                    "error": probe.error,
                }
                for probe in self.probes
            },
        }


Ping = Callable[[], Awaitable[object]]


async def probe_all(pings: Mapping[str, Ping], within: float) -> Readiness:
    """Every ping at once, each within ``within`` seconds."""
    if not within > 0:
        raise ValueError("a readiness timeout is a positive number of seconds")
    probes = await asyncio.gather(*(_probe(name, ping, within) for name, ping in pings.items()))
    return Readiness(tuple(probes))


async def _probe(name: str, ping: Ping, within: float) -> Probe:
    started = perf_counter()
    try:
        answer = await asyncio.wait_for(ping(), within)
    except TimeoutError:
        return Probe(name, False, perf_counter() - started, f"no answer within {within:g} s")
    # A probe reports what went wrong, whatever it is: a health check that raised would tell
    # the load balancer nothing but a 500. The error's kind is logged with its traceback.
    except Exception as exc:
        logger.warning("mfa_guard readiness: %s did not answer", name, exc_info=True)
        return Probe(name, False, perf_counter() - started, type(exc).__name__)
    if answer is False:
        return Probe(name, False, perf_counter() - started, "not reachable")
    return Probe(name, True, perf_counter() - started)
