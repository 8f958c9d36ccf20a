"""What the soak runs its app on, each with the handle a fault needs: a PostgreSQL database of its
own reached through a TCP proxy (its connections cut, or slowed) and the worker processes
(SIGKILLed, started again), whose memory is read from ``/proc``. The ``redis-server`` of its own
(restarted empty) and the proxy are :mod:`bench.faults_net`'s.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
from cryptography.fernet import Fernet
from sqlalchemy import exc as sa_exc
from sqlalchemy import text
from sqlalchemy.engine import URL, make_url
from sqlalchemy.ext.asyncio import create_async_engine

from bench.apps import BenchError
from bench.backends import POSTGRES_URL
from bench.faults_net import FaultProxy, free_port, stop_process
from mfa_guard.stores import Role
from mfa_guard.stores.sql import SQLSiteDirectory, SQLStore

ROOT = Path(__file__).resolve().parents[2]
START_TIMEOUT = 30.0
STOP_TIMEOUT = 10.0
POLL = 0.05
SITE = "soak"
OWNER = "owner@soak.test"


# -- PostgreSQL --------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Database:
    """A PostgreSQL database of the soak's own: its URL straight to the server (for setting up
    and for the checks at the end) and through the proxy (for the workers)."""

    direct: URL
    proxied: URL

    def url(self, proxied: bool) -> str:
        return (self.proxied if proxied else self.direct).render_as_string(hide_password=False)


async def _autocommit(url: str, statement: str) -> None:
    # CREATE and DROP DATABASE cannot run inside a transaction.
    engine = create_async_engine(url, isolation_level="AUTOCOMMIT", connect_args={"timeout": 5})
    try:
        async with engine.connect() as conn:
            await conn.execute(text(statement))
    finally:
        await engine.dispose()


@contextlib.asynccontextmanager
async def database(proxy: FaultProxy) -> AsyncIterator[Database]:
    """A new database with the kit's tables and the site every account joins (its owner
    seeded); dropped on the way out, whatever the soak left in it."""
    server = make_url(POSTGRES_URL)
    name = f"mfa_guard_soak_{uuid.uuid4().hex[:12]}"
    try:
        await _autocommit(POSTGRES_URL, f"CREATE DATABASE {name}")
    except (OSError, sa_exc.DBAPIError) as exc:
        where = server.render_as_string(hide_password=True)
        raise BenchError(f"PostgreSQL at {where} is unreachable: {exc}") from exc
    direct = server.set(database=name)
    try:
        store = SQLStore(direct.render_as_string(hide_password=False))
        try:
            await store.create_all()
            sites = SQLSiteDirectory.sharing(store)
            await sites.save_site(SITE, "Soak")
            await sites.add_member(SITE, OWNER, Role.OWNER)
        finally:
            await store.close()
        yield Database(direct, direct.set(host="127.0.0.1", port=proxy.port))
    finally:
        await _autocommit(POSTGRES_URL, f"DROP DATABASE {name} WITH (FORCE)")


# -- the workers -------------------------------------------------------------------------------


@dataclass
class Worker:
    """One uvicorn process of the app on its own port. ``generation`` counts its starts."""

    index: int
    port: int
    log: Path
    process: asyncio.subprocess.Process | None = None
    generation: int = 0
    up: bool = False

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int | None:
        return None if self.process is None else self.process.pid

    def rss(self) -> int | None:
        """Resident memory in bytes, or ``None`` if the process is not running."""
        pid = self.pid
        if pid is None or not self.up:
            return None
        try:
            status = Path(f"/proc/{pid}/status").read_text()
        except OSError:
            return None
        for line in status.splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
        return None


@dataclass
class Workers:
    """The app's worker processes, sharing one environment (keys, secret, backends)."""

    env: dict[str, str]
    folder: Path
    all: list[Worker] = field(default_factory=list)

    async def start_all(self, count: int) -> None:
        self.all = [
            Worker(index, free_port(), self.folder / f"worker-{index}.log")
            for index in range(count)
        ]
        await asyncio.gather(*(self.start(worker) for worker in self.all))

    async def start(self, worker: Worker) -> None:
        with worker.log.open("ab") as output:
            worker.process = await asyncio.create_subprocess_exec(
                *(sys.executable, "-m", "bench.soak.worker", str(worker.port)),
                cwd=ROOT,
                env=self.env,
                stdout=output,
                stderr=asyncio.subprocess.STDOUT,
            )
        worker.generation += 1
        await self._wait_healthy(worker)
        worker.up = True

    async def kill(self, worker: Worker) -> None:
        """SIGKILL: no shutdown, requests in flight are lost with their connections."""
        worker.up = False
        process = worker.process
        if process is not None and process.returncode is None:
            process.send_signal(signal.SIGKILL)
            await asyncio.wait_for(process.wait(), STOP_TIMEOUT)

    async def stop_all(self) -> None:
        for worker in self.all:
            worker.up = False
            await stop_process(worker.process)

    def live(self) -> list[Worker]:
        return [worker for worker in self.all if worker.up]

    async def _wait_healthy(self, worker: Worker) -> None:
        deadline = time.monotonic() + START_TIMEOUT
        async with httpx.AsyncClient(timeout=2) as client:
            while True:
                assert worker.process is not None
                if worker.process.returncode is not None:
                    raise BenchError(f"worker {worker.index} exited; see {worker.log}")
                with contextlib.suppress(httpx.TransportError):
                    if (await client.get(f"{worker.url}/health")).status_code == 200:
                        return
                if time.monotonic() > deadline:
                    raise BenchError(f"worker {worker.index} did not start; see {worker.log}")
                await asyncio.sleep(POLL)


def worker_env(
    *,
    database_url: str,
    redis_url: str,
    texts: Path,
    workers: int,
    timeouts: float,
) -> dict[str, str]:
    """The environment every worker shares: the settings of a deployment on several workers,
    limits on texts loose enough for one IP sending for everyone, short timeouts."""
    env = {
        name: value
        for name, value in os.environ.items()
        if not name.startswith(("MFA_GUARD_", "SOAK_")) and name != "WEB_CONCURRENCY"
    }
    seconds = str(timeouts)
    env.update(
        {
            "PYTHONUNBUFFERED": "1",
            "SOAK_SESSION_SECRET": uuid.uuid4().hex,
            "SOAK_TEXTS": str(texts),
            "SOAK_SITE": SITE,
            "MFA_GUARD_ISSUER": "Soak",
            "MFA_GUARD_ENCRYPTION_KEYS": Fernet.generate_key().decode("ascii"),
            "MFA_GUARD_DATABASE_URL": database_url,
            "MFA_GUARD_STORAGE_URI": redis_url,
            "MFA_GUARD_REQUIRE_SHARED_STATE": "true",
            "MFA_GUARD_WORKERS": str(workers),
            # Sessions re-check the store often: the store is on every user's path.
            "MFA_GUARD_RECHECK_SECONDS": "5",
            "MFA_GUARD_DATABASE_STATEMENT_TIMEOUT": seconds,
            "MFA_GUARD_DATABASE_CONNECT_TIMEOUT": seconds,
            "MFA_GUARD_DATABASE_POOL_TIMEOUT": seconds,
            "MFA_GUARD_STORAGE_TIMEOUT": seconds,
            "MFA_GUARD_SMS__ENABLED": "true",
            "MFA_GUARD_SMS__ALLOWED_REGIONS": "FR",
            "MFA_GUARD_SMS__PER_USER": "1000/day",
            "MFA_GUARD_SMS__PER_NUMBER": "100/10 minutes",
            "MFA_GUARD_SMS__PER_NUMBER_DAILY": "1000/day",
            "MFA_GUARD_SMS__PER_IP": "100000/hour",
            "MFA_GUARD_SMS__RESEND_COOLDOWN": "1/5 seconds",
            "MFA_GUARD_SMS__GLOBAL_HOURLY": "100000/hour",
            "MFA_GUARD_SMS__GLOBAL_DAILY": "1000000/day",
            "MFA_GUARD_TRUSTED_DEVICES__ENABLED": "true",
            "MFA_GUARD_TRUSTED_DEVICES__COOKIE_SECURE": "false",
        }
    )
    return env
