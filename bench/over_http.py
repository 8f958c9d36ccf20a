"""Figure 2: the hot path over HTTP — uvicorn, one worker each for the bare and the guarded app,
a load generator in a separate process (``wrk`` if installed, else ``bench.loadgen``), runs
alternating bare, guarded, bare, guarded …; a verified session's cookie on every request."""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx

from bench.apps import FROZEN_NOW, Variant, expect, sign_session
from bench.faults_net import free_port
from bench.report import Line, Ratio, Report, Verdict, at_least
from mfa_guard.testing import current_code

ROOT = Path(__file__).resolve().parent.parent
BUDGET = 0.95
CONNECTIONS = 16
# Seconds of load before counting, in each run.
WARMUP = 0.3
START_TIMEOUT = 30.0
TICKS = os.sysconf("SC_CLK_TCK")


@dataclass
class Server:
    variant: Variant
    port: int
    process: subprocess.Popen[bytes]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def cpu_seconds(self) -> float:
        """User + system CPU time of the server process so far."""
        fields = Path(f"/proc/{self.process.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / TICKS


@dataclass(frozen=True, slots=True)
class Throughput:
    per_second: float
    errors: int
    server_cpu: float


@contextlib.contextmanager
def serving(variant: Variant) -> Iterator[Server]:
    port = free_port()
    process = subprocess.Popen(  # noqa: S603 (the suite's own module, no outside input)
        [sys.executable, "-m", "bench.server", variant.value, str(port)], cwd=ROOT
    )
    server = Server(variant, port, process)
    try:
        wait_ready(server)
        yield server
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def wait_ready(server: Server) -> None:
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            raise RuntimeError(f"the {server.variant} server exited ({server.process.returncode})")
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(f"{server.url}/health", timeout=1).status_code == 200:
                return
        time.sleep(0.1)
    raise RuntimeError(f"the {server.variant} server did not answer in {START_TIMEOUT:.0f} s")


def verified_cookie(guarded: Server) -> str:
    """Signs in and enrols over HTTP, as a browser would: the session is then verified."""
    with httpx.Client(base_url=guarded.url, timeout=10) as client:
        expect(client.post("/login", data={"user": "http@acme.test"}).status_code == 303, "login")
        setup = client.post("/mfa/api/totp/setup", json={})
        expect(setup.status_code == 200, f"setup answered {setup.status_code}")
        code = current_code(str(setup.json()["secret"]), FROZEN_NOW)
        confirm = client.post("/mfa/api/totp/confirm", json={"code": code})
        expect(confirm.status_code == 200, f"confirm answered {confirm.status_code}")
        cookie = str(client.cookies["session"])
        expect(client.get("/").status_code == 200, "the verified session was not let through")
    # The guard is in the path: the same user signed in again, unverified, is challenged.
    unverified = httpx.get(
        f"{guarded.url}/",
        cookies={"session": sign_session({"user": "http@acme.test"})},
        timeout=10,
    )
    expect(unverified.status_code == 303, f"an unverified session got {unverified.status_code}")
    return cookie


def load(server: Server, cookie: str, seconds: float, warmup: float) -> Throughput:
    cpu_before, wall_before = server.cpu_seconds(), time.monotonic()
    wrk = shutil.which("wrk")
    if wrk is not None:
        requests, took, errors = _wrk(wrk, server, cookie, seconds + warmup)
    else:
        requests, took, errors = _python(server, cookie, seconds, warmup)
    cpu = (server.cpu_seconds() - cpu_before) / (time.monotonic() - wall_before)
    return Throughput(requests / took, errors, cpu)


def _wrk(wrk: str, server: Server, cookie: str, seconds: float) -> tuple[float, float, int]:
    output = subprocess.run(  # noqa: S603 (fixed arguments, a server of the suite's own)
        [
            wrk,
            "-t1",
            f"-c{CONNECTIONS}",
            f"-d{seconds:.0f}s",
            "-H",
            f"Cookie: session={cookie}",
            "-H",
            "Accept: text/html",
            f"{server.url}/",
        ],
        capture_output=True,
        text=True,
        check=True,
        timeout=seconds + 30,
    ).stdout
    total = re.search(r"(\d+) requests in ([\d.]+)(m?s)", output)
    if total is None:
        raise RuntimeError(f"wrk printed no total:\n{output}")
    took = float(total.group(2)) / (1000 if total.group(3) == "ms" else 1)
    bad = re.search(r"Non-2xx or 3xx responses: (\d+)", output)
    return float(total.group(1)), took, int(bad.group(1)) if bad else 0


def _python(server: Server, cookie: str, seconds: float, warmup: float) -> tuple[float, float, int]:
    output = subprocess.run(  # noqa: S603 (the suite's own module, no outside input)
        [
            sys.executable,
            "-m",
            "bench.loadgen",
            f"--port={server.port}",
            f"--cookie={cookie}",
            f"--connections={CONNECTIONS}",
            f"--seconds={seconds}",
            f"--warmup={warmup}",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
        timeout=seconds + warmup + 30,
    ).stdout
    result = json.loads(output)
    return float(result["requests"]), float(result["seconds"]), int(result["errors"])


def run(report: Report, *, pairs: int, seconds: float) -> None:
    tool = "wrk" if shutil.which("wrk") else "bench.loadgen (Python)"
    with serving(Variant.BARE) as bare, serving(Variant.GUARDED) as guarded:
        cookie = verified_cookie(guarded)
        for server in (bare, guarded):
            load(server, cookie, 1.0, 0.5)
        ratios: list[float] = []
        runs: dict[Variant, list[Throughput]] = {Variant.BARE: [], Variant.GUARDED: []}
        for _ in range(pairs):
            a = load(bare, cookie, seconds, WARMUP)
            b = load(guarded, cookie, seconds, WARMUP)
            runs[Variant.BARE].append(a)
            runs[Variant.GUARDED].append(b)
            ratios.append(b.per_second / a.per_second)
    ratio = Ratio.of(ratios)
    errors = sum(t.errors for side in runs.values() for t in side)
    verdict = at_least(ratio.median, BUDGET) if errors == 0 else Verdict.FAIL
    report.add(
        Line(
            "hot path over HTTP, guarded / bare",
            f"throughput ratio {ratio}",
            f">= {BUDGET:.2f}",
            verdict,
        )
    )
    bare_rps = sorted(t.per_second for t in runs[Variant.BARE])[len(ratios) // 2]
    guarded_rps = sorted(t.per_second for t in runs[Variant.GUARDED])[len(ratios) // 2]
    cpu = [t.server_cpu for side in runs.values() for t in side]
    # Requests per CPU-second of the server: what other processes on the machine take away
    # from the server cancels out.
    per_cpu = Ratio.of(
        [
            (b.per_second / b.server_cpu) / (a.per_second / a.server_cpu)
            for a, b in zip(runs[Variant.BARE], runs[Variant.GUARDED], strict=True)
        ]
    )
    report.note(
        f"uvicorn, 1 worker each, {CONNECTIONS} keep-alive connections, {seconds:.1f} s runs, "
        f"load by {tool}: bare {bare_rps:,.0f} req/s, guarded {guarded_rps:,.0f} req/s "
        f"(medians); server CPU {min(cpu):.0%}-{max(cpu):.0%} of a core"
    )
    report.note(f"requests per server CPU-second, guarded / bare: {per_cpu}")
    if errors:
        report.note(f"{errors} responses were not 200")
