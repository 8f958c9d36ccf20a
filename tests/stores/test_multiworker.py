"""Two demo processes sharing PostgreSQL and Redis serve one site, told as one browser whose
requests a load balancer spreads over both: codes, failure counts, revocations and sign-outs hold
in total, not per process.

The servers are real ``python -m examples.inbox`` processes on the real clock, so codes come from
``current_code(secret, time.time())``; a code stays valid one step either side of its own.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import subprocess
import sys
import time
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import NoReturn

import httpx
import pytest
import redis
from examples.inbox import DEMO_PASSWORD
from sqlalchemy import exc as sa_exc
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

from mfa_guard.testing import current_code

pytestmark = [pytest.mark.postgres, pytest.mark.redis]

ROOT = Path(__file__).resolve().parents[2]
POSTGRES_SERVER = "postgresql+asyncpg://postgres@127.0.0.1:5432"
REDIS_HOST, REDIS_PORT, REDIS_DB = "127.0.0.1", 6379, 12
FAILURES_PER_MINUTE = 10
# Short, so a revocation made through one server reaches a session on the other within a second.
RECHECK_SECONDS = 1
CONCURRENT_SUBMISSIONS = 50
START_TIMEOUT = 30.0
STOP_TIMEOUT = 10.0
PROPAGATION_TIMEOUT = 5.0

OWNER = "owner@acme.test"
AGENT = "agent@acme.test"
SOLO = "solo@example.test"
CHALLENGE = "/mfa/challenge?next=/inbox"


@dataclass(frozen=True, slots=True)
class Server:
    url: str
    process: subprocess.Popen[bytes]
    log: Path

    def log_tail(self) -> str:
        return self.log.read_text("utf-8", "replace")[-4000:]


@dataclass(frozen=True, slots=True)
class Site:
    """The two servers behind the load balancer: ``site.a``, ``site.b``, or ``site[i]``."""

    a: str
    b: str
    env: dict[str, str]

    def __getitem__(self, index: int) -> str:
        return (self.a, self.b)[index % 2]


def _in_ci() -> bool:
    return os.environ.get("CI", "").lower() == "true"


def _unavailable(reason: str) -> NoReturn:
    if _in_ci():
        pytest.fail(f"{reason} (CI=true: the multi-worker tests must run)")
    pytest.skip(reason)


async def _postgres(database: str, statement: str) -> None:
    # CREATE and DROP DATABASE cannot run inside a transaction.
    engine = create_async_engine(
        f"{POSTGRES_SERVER}/{database}",
        isolation_level="AUTOCOMMIT",
        connect_args={"timeout": 5},
    )
    try:
        async with engine.connect() as conn:
            await conn.execute(text(statement))
    finally:
        await engine.dispose()


def _flush_redis() -> None:
    with redis.Redis(host=REDIS_HOST, port=REDIS_PORT, db=REDIS_DB, socket_timeout=5) as client:
        client.flushdb()


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=STOP_TIMEOUT)


@contextlib.contextmanager
def _demo_process(env: dict[str, str], log: Path) -> Iterator[Server]:
    """``python -m examples.inbox`` on a free port, stopped (killed if need be) on the way out."""
    port = _free_port()
    with log.open("wb") as output:
        process = subprocess.Popen(
            [sys.executable, "-m", "examples.inbox"],
            cwd=ROOT,
            env={**env, "PORT": str(port)},
            stdout=output,
            stderr=subprocess.STDOUT,
        )
    try:
        yield Server(f"http://127.0.0.1:{port}", process, log)
    finally:
        _stop(process)


def _run_cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    """``mfa-guard …`` as an operator runs it, against the servers' database."""
    return subprocess.run(  # noqa: S603 (the kit's own CLI, arguments from the test)
        [sys.executable, "-m", "mfa_guard.cli", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def _cli(site: Site, *args: str) -> subprocess.CompletedProcess[str]:
    """With the app's settings, as an operator's shell holds them: the encryption key the
    servers generated in their data folder."""
    key = (Path(site.env["INBOX_DATA_DIR"]) / "encryption.key").read_text().strip()
    return _run_cli({**site.env, "MFA_GUARD_ENCRYPTION_KEYS": key}, *args)


def _wait_until_healthy(server: Server) -> None:
    deadline = time.monotonic() + START_TIMEOUT
    with httpx.Client(timeout=2) as client:
        while True:
            if server.process.poll() is not None:
                pytest.fail(f"the demo on {server.url} exited:\n{server.log_tail()}")
            try:
                if client.get(f"{server.url}/health").text == "ok":
                    return
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"the demo on {server.url} did not answer within {START_TIMEOUT} s")
            time.sleep(0.05)


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    """Two demo processes on one fresh PostgreSQL database, one Redis database and one data
    folder (so one session secret and one encryption key): what two workers or hosts share."""
    database = f"mfa_guard_mw_{uuid.uuid4().hex[:12]}"
    try:
        asyncio.run(_postgres("test", f"CREATE DATABASE {database}"))
    except (OSError, sa_exc.DBAPIError) as exc:
        _unavailable(f"PostgreSQL at 127.0.0.1:5432 is unreachable: {type(exc).__name__}: {exc}")
    with contextlib.ExitStack() as cleanup:
        cleanup.callback(
            lambda: asyncio.run(_postgres("test", f"DROP DATABASE {database} WITH (FORCE)"))
        )
        try:
            _flush_redis()
        except redis.RedisError as exc:
            _unavailable(f"Redis at {REDIS_HOST}:{REDIS_PORT} is unreachable: {exc}")
        cleanup.callback(_flush_redis)

        folder = tmp_path_factory.mktemp("multiworker")
        env = {
            name: value
            for name, value in os.environ.items()
            if not name.startswith("MFA_GUARD_") and name != "WEB_CONCURRENCY"
        }
        env.update(
            {
                "INBOX_DATA_DIR": str(folder / "data"),
                "MFA_GUARD_DATABASE_URL": f"{POSTGRES_SERVER}/{database}",
                "MFA_GUARD_STORAGE_URI": f"redis://{REDIS_HOST}:{REDIS_PORT}/{REDIS_DB}",
                "MFA_GUARD_RATE_LIMITS__FAILURES": f"{FAILURES_PER_MINUTE}/minute;100/day",
                "MFA_GUARD_RECHECK_SECONDS": str(RECHECK_SECONDS),
                "MFA_GUARD_REQUIRE_SHARED_STATE": "true",
                "MFA_GUARD_WORKERS": "2",
                # Texts in a burst: the per-number limit (3 per 10 minutes) is the one tested.
                "MFA_GUARD_SMS__RESEND_COOLDOWN": "100/second",
                "PYTHONUNBUFFERED": "1",
            }
        )
        # What a deployment runs once before starting its workers.
        init_db = _run_cli(env, "init-db")
        assert init_db.returncode == 0, init_db.stderr

        servers = []
        for name in ("a", "b"):
            server = cleanup.enter_context(_demo_process(env, folder / f"server-{name}.log"))
            # One after the other: the first creates the session secret and encryption key in
            # the shared folder, the second reads them (see the report on simultaneous starts).
            _wait_until_healthy(server)
            servers.append(server)
        yield Site(servers[0].url, servers[1].url, env)

        for server in servers:
            assert server.process.poll() is None, f"{server.url} died:\n{server.log_tail()}"


# One browser: a single cookie jar whose requests go to whichever server the URL names. Cookies
# are scoped to the host, 127.0.0.1, not the port, so both servers see the same session.


async def sign_in(browser: httpx.AsyncClient, server: str, email: str) -> None:
    response = await browser.post(
        f"{server}/login", data={"email": email, "password": DEMO_PASSWORD}
    )
    assert response.status_code == 303, response.text


async def sign_out(browser: httpx.AsyncClient, server: str) -> None:
    assert (await browser.post(f"{server}/logout")).status_code == 303


async def enrol(browser: httpx.AsyncClient, server: str) -> tuple[str, list[str]]:
    """Turns 2FA on through the JSON API; returns the authenticator key and recovery codes."""
    setup = await browser.post(f"{server}/mfa/api/totp/setup", json={})
    assert setup.status_code == 200, setup.text
    secret: str = setup.json()["secret"]
    confirmed = await browser.post(
        f"{server}/mfa/api/totp/confirm", json={"code": current_code(secret, time.time())}
    )
    assert confirmed.status_code == 200, confirmed.text
    recovery_codes: list[str] = confirmed.json()["recovery_codes"]
    return secret, recovery_codes


def next_code(secret: str) -> str:
    # The enrolment used the current time step, and a step is accepted once per user; the
    # drift window accepts the next one too.
    return current_code(secret, time.time(), steps=1)


def wrong_code(secret: str) -> str:
    now = time.time()
    valid = {current_code(secret, now, steps=steps) for steps in range(-3, 4)}
    return next(code for n in range(10) if (code := f"{n:06d}") not in valid)


async def verify(
    browser: httpx.AsyncClient, server: str, code: str, method: str = "totp"
) -> httpx.Response:
    return await browser.post(f"{server}/mfa/api/verify", json={"method": method, "code": code})


def error_code(response: httpx.Response) -> str:
    code: str = response.json()["error"]["code"]
    return code


async def eventually(check: Callable[[], Awaitable[bool]], what: str) -> None:
    deadline = time.monotonic() + PROPAGATION_TIMEOUT
    while not await check():
        assert time.monotonic() < deadline, f"not within {PROPAGATION_TIMEOUT} s: {what}"
        await asyncio.sleep(0.1)


async def test_texts_to_one_number_over_both_servers_count_towards_one_limit(site: Site) -> None:
    # First in the module: the owner has no second factor yet, so adding a phone needs none.
    async with httpx.AsyncClient(timeout=30) as browser:
        await sign_in(browser, site.a, OWNER)
        answers = [
            await browser.post(f"{server}/mfa/api/phone", json={"phone": "+33 6 12 34 56 78"})
            for server in (site.a, site.b, site.a, site.b)
        ]
    assert [answer.status_code for answer in answers] == [202, 202, 202, 429]
    assert error_code(answers[-1]) == "too_many_texts"
    assert int(answers[-1].headers["retry-after"]) >= 1


async def test_one_code_sent_fifty_times_over_both_servers_signs_in_once(site: Site) -> None:
    async with httpx.AsyncClient(timeout=30) as browser:
        await sign_in(browser, site.a, OWNER)
        secret, _ = await enrol(browser, site.a)
        await sign_out(browser, site.a)
        await sign_in(browser, site.b, OWNER)
        assert (await browser.get(f"{site.b}/inbox")).headers["location"] == CHALLENGE

        code = next_code(secret)
        answers = await asyncio.gather(
            *(verify(browser, site[i], code) for i in range(CONCURRENT_SUBMISSIONS))
        )

        statuses = Counter(answer.status_code for answer in answers)
        assert statuses[200] == 1, statuses
        assert set(statuses) <= {200, 422, 429}, statuses
        for answer in answers:
            if answer.status_code == 422:
                assert error_code(answer) == "code_already_used"
            if answer.status_code == 429:
                assert error_code(answer) == "too_many_attempts"
                assert int(answer.headers["retry-after"]) >= 1

        # Concurrent answers race to set the cookie, as in a browser: keep the winner's session.
        (winner,) = (answer for answer in answers if answer.status_code == 200)
        browser.cookies.clear()
        browser.cookies.update(winner.cookies)
        for server in (site.a, site.b):
            assert (await browser.get(f"{server}/inbox")).status_code == 200


async def test_wrong_codes_over_both_servers_count_towards_one_limit(site: Site) -> None:
    async with httpx.AsyncClient(timeout=30) as browser:
        await sign_in(browser, site.a, AGENT)
        secret, _ = await enrol(browser, site.a)
        await sign_out(browser, site.a)
        await sign_in(browser, site.b, AGENT)

        wrong = wrong_code(secret)
        for attempt in range(FAILURES_PER_MINUTE):
            refused = await verify(browser, site[attempt], wrong)
            assert refused.status_code == 422, refused.text
            assert error_code(refused) == "invalid_code"

        # Each process saw only half of the failures, under the limit on its own: the count is
        # one, in Redis. The right code waits too.
        right = next_code(secret)
        for server in (site.a, site.b):
            locked = await verify(browser, server, right)
            assert locked.status_code == 429, locked.text
            assert error_code(locked) == "too_many_attempts"
            assert 1 <= int(locked.headers["retry-after"]) <= 60
        assert (await browser.get(f"{site.a}/inbox")).headers["location"] == CHALLENGE


async def test_a_session_verified_on_one_server_follows_changes_made_on_the_other(
    site: Site,
) -> None:
    async with (
        httpx.AsyncClient(timeout=30) as phone,
        httpx.AsyncClient(timeout=30) as laptop,
    ):
        # The phone turns 2FA on through B; the laptop signs in through A with a code.
        await sign_in(phone, site.b, SOLO)
        secret, recovery_codes = await enrol(phone, site.b)
        await sign_in(laptop, site.a, SOLO)
        assert (await laptop.get(f"{site.a}/inbox")).headers["location"] == CHALLENGE
        verified = await verify(laptop, site.a, next_code(secret))
        assert verified.status_code == 200, verified.text

        # B accepts the laptop's session as it is: no new challenge.
        inbox = await laptop.get(f"{site.b}/inbox")
        assert inbox.status_code == 200
        assert "Two-factor authentication is on" in inbox.text

        # The phone turns 2FA off through B (with a recovery code: the time steps of the
        # window are spent); the laptop's session on A learns it at its next re-check.
        disabled = await phone.post(
            f"{site.b}/mfa/api/disable", json={"method": "recovery", "code": recovery_codes[0]}
        )
        assert disabled.status_code == 200, disabled.text

        async def laptop_sees_two_factor_off() -> bool:
            inbox = await laptop.get(f"{site.a}/inbox")
            assert inbox.status_code == 200
            return "Two-factor authentication is off" in inbox.text

        await eventually(laptop_sees_two_factor_off, "A saw the disable made through B")

        # The phone turns 2FA on again: the laptop's old verification no longer counts on A.
        await enrol(phone, site.b)

        async def laptop_is_challenged() -> bool:
            inbox = await laptop.get(f"{site.a}/inbox")
            if inbox.status_code == 200:
                return False
            assert inbox.headers["location"] == CHALLENGE
            return True

        await eventually(laptop_is_challenged, "A challenged the session after re-enrolment")
        assert (await laptop.get(f"{site.b}/inbox")).headers["location"] == CHALLENGE


async def test_a_site_policy_changed_on_one_server_reaches_sessions_on_the_other(
    site: Site,
) -> None:
    # Earlier tests enrolled both and spent their failure budgets: support resets them, as for
    # a lost phone (mfa-guard reset-user on the shared database and Redis), so the agent starts
    # without 2FA and the owner can enrol again at once.
    for user in (OWNER, AGENT):
        reset = _cli(site, "reset-user", user, "--by", "support")
        assert reset.returncode == 0, reset.stderr
        assert "failed-attempt count is cleared" in reset.stdout
    async with (
        httpx.AsyncClient(timeout=30) as owner,
        httpx.AsyncClient(timeout=30) as agent,
    ):
        await sign_in(owner, site.a, OWNER)
        await enrol(owner, site.a)
        await sign_in(agent, site.b, AGENT)
        assert (await agent.get(f"{site.b}/inbox")).status_code == 200

        # The owner forces 2FA on Acme through A, at once: the agent's session on B is sent to
        # enrolment at its next re-check, with no restart and nothing shared in process.
        forced = await owner.put(
            f"{site.a}/mfa/api/sites/acme/policy", json={"enforce": True, "grace_hours": 0}
        )
        assert forced.status_code == 200, forced.text

        async def agent_must_enrol() -> bool:
            inbox = await agent.get(f"{site.b}/inbox")
            if inbox.status_code == 200:
                return False
            assert inbox.headers["location"] == "/mfa/enrol?next=/inbox"
            return True

        await eventually(agent_must_enrol, "B sent the agent to enrolment")
        api = await agent.get(f"{site.a}/inbox", headers={"accept": "application/json"})
        assert api.status_code == 403
        assert error_code(api) == "mfa_enrolment_required"

        # Turned off through B, the agent's session on A gets the inbox back.
        lifted = await owner.put(f"{site.b}/mfa/api/sites/acme/policy", json={"enforce": False})
        assert lifted.status_code == 200, lifted.text

        async def agent_is_free() -> bool:
            return (await agent.get(f"{site.a}/inbox")).status_code == 200

        await eventually(agent_is_free, "A let the agent in again")


async def test_signing_out_through_one_server_signs_a_copied_cookie_out_on_the_other(
    site: Site,
) -> None:
    async with (
        httpx.AsyncClient(timeout=30) as laptop,
        httpx.AsyncClient(timeout=30) as phone,
        httpx.AsyncClient(timeout=30) as thief,
    ):
        await sign_in(laptop, site.a, SOLO)
        await sign_in(phone, site.b, SOLO)
        thief.cookies.update(laptop.cookies)
        for server in (site.a, site.b):
            assert (await thief.get(f"{server}/mfa/api/status")).status_code == 200

        # The sign-in is deleted in the shared database: B no longer admits the copy, at once.
        await sign_out(laptop, site.a)
        for server in (site.b, site.a):
            status = await thief.get(f"{server}/mfa/api/status")
            assert status.status_code == 401, status.text
            assert error_code(status) == "not_authenticated"
            inbox = await thief.get(f"{server}/inbox")
            assert inbox.headers["location"] == "/login?next=/inbox"
            # The user's other browser stays signed in, on both servers.
            assert (await phone.get(f"{server}/mfa/api/status")).status_code == 200
