"""Outages (checklist 12): a rate-limit or store backend that goes down while requests
run fails closed with a generic 503, loses nothing, and the same app recovers once it is back;
with Redis down, no text is sent.

Redis is a throwaway ``redis-server`` the test starts and kills; PostgreSQL is reached through
an in-process TCP proxy whose ``cut()`` is the network failing and ``restore()`` its return.
"""

from __future__ import annotations

import asyncio
import dataclasses
import inspect
import os
import shutil
import socket
import subprocess
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import NoReturn

import httpx
import pytest
from sqlalchemy import exc as sa_exc
from sqlalchemy import text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import create_async_engine

from bench.faults_net import (
    FaultProxy,
    RedisServer,
    RedisServerMissing,
    free_port,
    running_proxy,
)
from mfa_guard.core import totp
from mfa_guard.core.marker import EnrolmentSummary
from mfa_guard.core.recovery import SCRYPT_PARAMS, RecoveryCodeSet
from mfa_guard.crypto import SecretBox
from mfa_guard.errors import StoreUnavailable
from mfa_guard.events import EventKind
from mfa_guard.ratelimit import FailureLimiter, storage_from_uri
from mfa_guard.send_limits import Reservation, SendLimiter
from mfa_guard.settings import SMSSettings
from mfa_guard.sms import OutboxSMS
from mfa_guard.stores.base import (
    Authenticator,
    CeremonyPurpose,
    FactorKind,
    MFAStore,
    SMSChallenge,
    SMSPurpose,
    StoredSecrets,
    WebAuthnChallenge,
)
from mfa_guard.stores.sql import SQLStore
from tests.apps import GuardedApp, build_app, enrol, sign_in
from tests.scenarios import (
    TOKEN,
    USER,
    State,
    assert_refused_page,
    page_token,
    recovery_code_set,
    wrong_code,
)
from tests.sms_apps import SMS, texted_code

POSTGRES_URL = os.environ.get(
    "MFA_GUARD_TEST_POSTGRES_URL", "postgresql+asyncpg://postgres@127.0.0.1:5432/test"
)
# Every wait is bounded: a server coming up, going down, a condition the traffic must reach.
START_TIMEOUT = 10.0
STOP_TIMEOUT = 10.0
WAIT_TIMEOUT = 10.0
POLL_INTERVAL = 0.01
RECHECK_SECONDS = 60
PHONE = "+33612345678"
OTHER_MOBILE = "+33699887766"
# What a 503 must never show the client: the cause is for the operator's log only.
LEAKS = (
    "Traceback",
    'File "',
    "redis",
    "coredis",
    "limits",
    "asyncpg",
    "postgres",
    "sqlalchemy",
    "127.0.0.1",
)


def unavailable(reason: str) -> NoReturn:
    """A skip on a developer's machine without the server; a failure in CI, where it must run."""
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"{reason} (CI=true: the outage tests must run)")
    pytest.skip(reason)


async def deadline_for(condition: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + WAIT_TIMEOUT
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {WAIT_TIMEOUT} s waiting for {what}")
        await asyncio.sleep(POLL_INTERVAL)


# -- the servers ---------------------------------------------------------------------------


@pytest.fixture
async def redis_server(tmp_path: Path) -> AsyncIterator[RedisServer]:
    try:
        server = RedisServer(tmp_path)
    except RedisServerMissing as exc:
        unavailable(str(exc))
    try:
        await server.start()
        yield server
    finally:
        await server.stop()


async def _execute(url: str, statement: str) -> None:
    """Straight to the server, not through the proxy (as tests/stores/test_mfa_store.py does)."""
    engine = create_async_engine(url, connect_args={"timeout": 5, "command_timeout": 30})
    try:
        async with engine.begin() as conn:
            await conn.execute(text(statement))
    finally:
        await engine.dispose()


@pytest.fixture
async def postgres_schema() -> AsyncIterator[str]:
    """A schema of this test's own, so parallel runs share the server safely."""
    schema = f"mfa_guard_outage_{uuid.uuid4().hex[:12]}"
    try:
        await _execute(POSTGRES_URL, f"CREATE SCHEMA {schema}")
    except (OSError, sa_exc.DBAPIError) as exc:
        where = make_url(POSTGRES_URL).render_as_string(hide_password=True)
        unavailable(f"PostgreSQL at {where} is unreachable: {type(exc).__name__}: {exc}")
    try:
        yield schema
    finally:
        await _execute(POSTGRES_URL, f"DROP SCHEMA {schema} CASCADE")


@pytest.fixture
async def postgres_proxy() -> AsyncIterator[FaultProxy]:
    url = make_url(POSTGRES_URL)
    async with running_proxy((url.host or "127.0.0.1", url.port or 5432)) as proxy:
        yield proxy


@pytest.fixture
async def proxied_store(
    postgres_proxy: FaultProxy, postgres_schema: str
) -> AsyncIterator[SQLStore]:
    """A store on PostgreSQL through the proxy, its tables created while the network is up."""
    url = make_url(POSTGRES_URL).set(host="127.0.0.1", port=postgres_proxy.port)
    store = SQLStore(
        url.render_as_string(hide_password=False),
        connect_args={"server_settings": {"search_path": postgres_schema}},
    )
    try:
        await store.create_all()
        yield store
    finally:
        postgres_proxy.restore()
        await store.close()


# -- the scenario's pieces -----------------------------------------------------------------


class Traffic:
    """Requests sent in the background, each stream one after another, until the block ends;
    every response is kept in order. A request that raises (a 500 from the app) fails the test."""

    def __init__(self) -> None:
        self.responses: list[tuple[str, httpx.Response]] = []
        self._stop = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []

    def send(self, name: str, request: Callable[[], Awaitable[httpx.Response]]) -> None:
        self._tasks.append(asyncio.create_task(self._repeat(name, request)))

    def statuses(self, name: str, since: int = 0) -> list[int]:
        return [r.status_code for n, r in self.responses[since:] if n == name]

    async def until(self, condition: Callable[[], bool], what: str) -> None:
        def reached() -> bool:
            for task in self._tasks:
                if task.done():
                    task.result()  # re-raises what broke the stream
            return condition()

        await deadline_for(reached, what)

    async def _repeat(self, name: str, request: Callable[[], Awaitable[httpx.Response]]) -> None:
        while not self._stop.is_set():
            self.responses.append((name, await request()))
            # A request that needed no I/O never gave the other tasks a turn.
            await asyncio.sleep(0)

    async def __aenter__(self) -> Traffic:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        self._stop.set()
        if not self._tasks:
            return
        done, pending = await asyncio.wait(self._tasks, timeout=STOP_TIMEOUT)
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
        for task in done:
            task.result()
        assert not pending, "a request of the background traffic did not finish"


async def three_sessions(
    ga: GuardedApp,
    owner: httpx.AsyncClient,
    verified: httpx.AsyncClient,
    challenged: httpx.AsyncClient,
) -> str:
    """The operator enrols in one session, completes 2FA in a second and signs in a third,
    which is challenged. Returns the TOTP secret; the clock is on a step no code was given in."""
    await sign_in(owner)
    secret, _ = await enrol(ga, owner)
    await sign_in(verified)
    await sign_in(challenged)
    ga.clock.advance(30)  # the confirmation used this step
    response = await verified.post("/mfa/api/verify", json={"code": ga.code(secret)})
    assert response.status_code == 200, response.text
    ga.clock.advance(30)
    assert (await verified.get("/protected")).status_code == 200
    assert (await challenged.get("/protected")).status_code == 303
    return secret


async def csrf_token(client: httpx.AsyncClient) -> str:
    page = await client.get("/mfa/challenge")
    assert page.status_code == 200, page.text
    match = TOKEN.search(page.text)
    assert match is not None
    return match.group(1)


def assert_nothing_leaks(response: httpx.Response) -> None:
    for leak in LEAKS:
        assert leak.lower() not in response.text.lower(), (leak, response.text)


def assert_unavailable_json(response: httpx.Response) -> None:
    """The generic JSON 503: a stable code, a Retry-After, no cause."""
    assert response.status_code == 503, (response.status_code, response.text)
    assert response.headers["content-type"] == "application/json"
    error = response.json()["error"]
    assert error["code"] == "service_unavailable"
    assert error["message"] == StoreUnavailable().message
    assert int(response.headers["Retry-After"]) > 0
    assert_nothing_leaks(response)


def assert_unavailable_navigation(response: httpx.Response) -> None:
    """What the middleware answers a browser: a 503 with a Retry-After, neither JSON nor cause."""
    assert response.status_code == 503, (response.status_code, response.text)
    assert not response.headers["content-type"].startswith("application/json")
    assert int(response.headers["Retry-After"]) > 0
    assert_nothing_leaks(response)


def assert_unavailable_page(response: httpx.Response) -> None:
    """The kit's own HTML error page, with the reason in an alert."""
    assert_refused_page(response, 503)
    assert_nothing_leaks(response)


# -- Redis: the failure limiter's storage --------------------------------------------------


@pytest.mark.redis
async def test_a_redis_outage_fails_closed_and_the_same_app_recovers(
    redis_server: RedisServer, tmp_path: Path
) -> None:
    store = SQLStore(f"sqlite+aiosqlite:///{tmp_path}/mfa.db")
    ga = build_app(
        store=store,
        storage_uri=redis_server.url,
        rate_limits={"failures": "3/minute;100/day"},
        recheck_seconds=RECHECK_SECONDS,
    )
    try:
        async with (
            ga.client() as owner,
            ga.client() as verified,
            ga.client() as challenged,
            ga.client() as attacker,
        ):
            secret = await three_sessions(ga, owner, verified, challenged)
            await sign_in(attacker)  # holds the password, guesses the second factor
            token = await csrf_token(challenged)
            before = await store.get(USER)
            assert before is not None
            assert before.enrolled

            # Redis dies while an attacker guesses and the verified operator keeps working.
            async with Traffic() as traffic:
                for _ in range(3):
                    traffic.send(
                        "guess",
                        lambda: attacker.post(
                            "/mfa/api/verify", json={"code": wrong_code(ga, secret)}
                        ),
                    )
                traffic.send("work", lambda: verified.get("/protected"))
                await traffic.until(
                    lambda: min(len(traffic.statuses(n)) for n in ("guess", "work")) >= 3,
                    "the traffic to get going",
                )
                await redis_server.stop()
                stopped = len(traffic.responses)
                await traffic.until(
                    lambda: traffic.statuses("guess", stopped).count(503) >= 3,
                    "guesses to be refused with 503",
                )
            for name, response in traffic.responses:
                assert response.status_code in {"guess": {422, 429, 503}, "work": {200}}[name]
                assert_nothing_leaks(response)
            assert set(traffic.statuses("guess", stopped)[-3:]) == {503}
            for _, response in traffic.responses:
                if response.status_code == 503:
                    assert_unavailable_json(response)

            # The operator with the right code is refused too: the limit cannot hold, so no
            # verification goes ahead, over JSON and over the HTML form.
            assert_unavailable_json(
                await challenged.post("/mfa/api/verify", json={"code": ga.code(secret)})
            )
            assert_unavailable_page(
                await challenged.post(
                    "/mfa/challenge",
                    data={"csrf_token": token, "next": "/protected", "code": ga.code(secret)},
                )
            )
            assert (await challenged.get("/protected")).status_code == 303
            # The hot path needs no Redis: from the marker alone, and with the store re-check.
            assert (await verified.get("/protected")).status_code == 200
            ga.clock.advance(RECHECK_SECONDS + 1)
            assert (await verified.get("/protected")).status_code == 200
            assert (await verified.get("/api/data")).json() == {"data": 42}
            assert await store.get(USER) == before  # nothing lost, no step accepted

            # Redis is back (empty): the same app verifies again, and limits again.
            await redis_server.start()
            response = await challenged.post("/mfa/api/verify", json={"code": ga.code(secret)})
            assert response.status_code == 200, response.text
            assert (await challenged.get("/protected")).status_code == 200
            guesses = [
                await attacker.post("/mfa/api/verify", json={"code": wrong_code(ga, secret)})
                for _ in range(4)
            ]
            assert [r.status_code for r in guesses] == [422, 422, 422, 429]
            assert int(guesses[-1].headers["Retry-After"]) > 0
            ga.clock.advance(30)  # a step no one used: even the right code waits now
            locked = await attacker.post("/mfa/api/verify", json={"code": ga.code(secret)})
            assert locked.status_code == 429
            after = await store.get(USER)
            assert after is not None
            assert [a.secret for a in after.apps] == [a.secret for a in before.apps]
            assert after.recovery == before.recovery
    finally:
        await ga.guard.aclose()
        await store.close()


@pytest.mark.redis
@pytest.mark.parametrize("method", ["acquire", "reset", "reserve", "release"])
async def test_a_redis_that_went_away_is_unavailable_to_every_limit(
    redis_server: RedisServer, method: str
) -> None:
    storage = storage_from_uri(redis_server.url)
    failures = FailureLimiter(storage, "3/minute")
    texts = SendLimiter(storage, SMSSettings(resend_cooldown="100/second"))
    try:
        assert await failures.acquire(USER, 0.0) is None  # a pooled connection is open
        reservation = await texts.reserve(USER, PHONE, "203.0.113.7", 0.0)
        assert isinstance(reservation, Reservation)
        calls: dict[str, Callable[[], Awaitable[object]]] = {
            "acquire": lambda: failures.acquire(USER, 0.0),
            "reset": lambda: failures.reset(USER),
            "reserve": lambda: texts.reserve(USER, PHONE, "203.0.113.7", 0.0),
            "release": reservation.release,
        }
        await redis_server.stop()
        for _ in range(2):  # on the pooled connection, then on a new one
            with pytest.raises(StoreUnavailable):
                await calls[method]()
    finally:
        await failures.aclose()  # the storage's connections, shared by both


def restart_at_once(port: int, process: subprocess.Popen[bytes] | None) -> subprocess.Popen[bytes]:
    """Stops (if given) and starts a redis-server without yielding to the event loop, so the
    client still holds the dead server's connections, as after a restart between requests."""
    if process is not None:
        process.terminate()
        process.wait(STOP_TIMEOUT)
    executable = shutil.which("redis-server")
    if executable is None:
        unavailable("redis-server is not installed (apt-get install redis-server)")
    started = subprocess.Popen(  # noqa: S603 (the machine's own redis-server)
        [
            executable,
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
        ],
        stdout=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), 0.2).close()
            return started
        except OSError:
            time.sleep(POLL_INTERVAL)
    started.kill()
    pytest.fail(f"redis-server did not answer within {START_TIMEOUT} s")


@pytest.mark.redis
async def test_a_quiet_redis_restart_costs_no_request() -> None:
    port = free_port()
    server = restart_at_once(port, None)
    url = f"redis://127.0.0.1:{port}/0"
    failures = FailureLimiter(storage_from_uri(url), "5/minute;20/hour;100/day")
    try:
        assert await failures.acquire(USER, 0.0) is None  # pooled connections are open
        await failures.reset(USER)
        server = restart_at_once(port, server)
        # The pooled connections died with the old server: the next call reconnects.
        assert await failures.acquire(USER, 0.0) is None
        await failures.reset(USER)
    finally:
        await failures.aclose()
        server.terminate()
        server.wait(STOP_TIMEOUT)


@pytest.mark.redis
async def test_a_redis_that_lost_its_scripts_still_counts_every_attempt(
    redis_server: RedisServer,
) -> None:
    """A Redis whose script cache was emptied (``SCRIPT FLUSH``, a failover to a replica that
    never ran them) answers NOSCRIPT to the kit's pipelined windows: loaded again, each runs
    once, so no attempt is lost or counted twice."""
    failures = FailureLimiter(storage_from_uri(redis_server.url), "3/minute;5/hour")
    try:
        assert await failures.acquire(USER, 0.0) is None
        reader, writer = await asyncio.open_connection("127.0.0.1", redis_server.port)
        writer.write(b"SCRIPT FLUSH\r\n")
        assert await reader.readline() == b"+OK\r\n"
        writer.close()
        await writer.wait_closed()
        assert [await failures.acquire(USER, 0.0) for _ in range(2)] == [None, None]
        # The first attempt after the flush was counted: the fourth is over 3 a minute.
        assert await failures.acquire(USER, 0.0) is not None
    finally:
        await failures.aclose()


# -- Redis: the send budget of texts ------------------------------------------------------
#
# The send budget cannot be counted, so nothing is sent on a guess: every SMS path answers the
# generic 503 and sends nothing, a verified session keeps working, nothing is lost, and texts
# flow again once Redis is back.


async def enrolled_with_a_phone(ga: GuardedApp) -> str:
    """The user enrolled with a verified phone, straight in the store; returns the TOTP key."""
    secret = totp.new_secret()
    encrypted = SecretBox(ga.guard.settings.encryption_keys).encrypt(secret)
    now = ga.clock()
    await ga.store.begin_enrolment(USER, encrypted)
    app = Authenticator(
        id="outage-app",
        kind=FactorKind.TOTP,
        name="Phone",
        created_at=now,
        secret=encrypted,
        last_step=int(now // 30),
    )
    epoch = await ga.store.add_authenticator(
        USER, app, now=now, recovery=recovery_code_set(), pending_secret=encrypted
    )
    assert epoch is not None
    await ga.store.set_phone(USER, PHONE, now)
    return secret


@pytest.mark.redis
async def test_a_redis_outage_refuses_every_text_with_503_and_sends_none(
    redis_server: RedisServer,
) -> None:
    outbox = OutboxSMS()
    ga = build_app(
        sms_provider=outbox,
        sms=SMS,
        storage_uri=redis_server.url,
        recheck_seconds=RECHECK_SECONDS,
    )
    try:
        async with ga.client() as verified, ga.client() as challenged:
            secret = await enrolled_with_a_phone(ga)
            await sign_in(verified)
            await sign_in(challenged)
            ga.clock.advance(30)  # the enrolment used this step
            done = await verified.post("/mfa/api/verify", json={"code": ga.code(secret)})
            assert done.status_code == 200, done.text
            sent = await challenged.post("/mfa/api/sms/send", json={})
            assert sent.status_code == 202, sent.text
            code = texted_code(outbox)
            token = await page_token(challenged, State.CHALLENGED)
            before = await ga.store.get(USER)

            await redis_server.stop()

            # The send budget cannot be counted: no text goes out on a guess.
            assert_unavailable_json(await challenged.post("/mfa/api/sms/send", json={}))
            assert_unavailable_json(
                await verified.post("/mfa/api/phone", json={"phone": OTHER_MOBILE})
            )
            page = await challenged.post("/mfa/sms", data={"csrf_token": token})
            assert_unavailable_page(page)
            # Nor can the failure count: the texted code is not tried, so not spent.
            assert_unavailable_json(
                await challenged.post("/mfa/api/verify", json={"method": "sms", "code": code})
            )
            assert (await challenged.get("/protected")).status_code == 303
            assert len(outbox.messages) == 1
            assert EventKind.SMS_SENT in ga.events.kinds()

            # The verified session works on, from its marker and then its store re-check.
            assert (await verified.get("/protected")).status_code == 200
            ga.clock.advance(RECHECK_SECONDS + 1)
            assert (await verified.get("/api/data")).json() == {"data": 42}
            assert await ga.store.get(USER) == before  # nothing lost, nothing spent

            # Redis is back (empty): the waiting code signs in, and texts go out again.
            await redis_server.start()
            signed_in = await challenged.post(
                "/mfa/api/verify", json={"method": "sms", "code": code}
            )
            assert signed_in.status_code == 200, signed_in.text
            assert (await challenged.get("/protected")).status_code == 200
            again = await verified.post("/mfa/api/sms/send", json={})
            assert again.status_code == 202, again.text
            assert len(outbox.messages) == 2
    finally:
        await ga.guard.aclose()


# -- PostgreSQL: the enrolment store ---------------------------------------------------------


@pytest.mark.postgres
async def test_a_postgres_outage_fails_closed_and_the_same_app_recovers(
    proxied_store: SQLStore, postgres_proxy: FaultProxy
) -> None:
    store = proxied_store
    ga = build_app(store=store, recheck_seconds=RECHECK_SECONDS)
    try:
        async with (
            ga.client() as owner,
            ga.client() as verified,
            ga.client() as challenged,
        ):
            secret = await three_sessions(ga, owner, verified, challenged)
            token = await csrf_token(challenged)
            ga.clock.advance(RECHECK_SECONDS + 1)  # every session's re-check is due ...
            assert (await verified.get("/protected")).status_code == 200  # ... this one's done
            before = await store.get(USER)
            assert before is not None
            assert before.enrolled

            # The network to the database fails while the operator's sessions are busy.
            async with Traffic() as traffic:
                traffic.send("status", lambda: owner.get("/mfa/api/status"))  # reads the store
                traffic.send("work", lambda: verified.get("/protected"))  # a fresh marker
                await traffic.until(
                    lambda: min(len(traffic.statuses(n)) for n in ("status", "work")) >= 3,
                    "the traffic to get going",
                )
                postgres_proxy.cut()
                cut = len(traffic.responses)
                await traffic.until(
                    lambda: traffic.statuses("status", cut).count(503) >= 3,
                    "store reads to be refused with 503",
                )
            for name, response in traffic.responses:
                assert response.status_code in {"status": {200, 503}, "work": {200}}[name]
                assert_nothing_leaks(response)
                if response.status_code == 503:
                    assert_unavailable_json(response)
            assert set(traffic.statuses("status", cut)[-3:]) == {503}

            # The challenged session's re-check cannot be made: it is refused everywhere.
            assert_unavailable_navigation(
                await challenged.get("/protected", headers={"Accept": "text/html"})
            )
            assert_unavailable_json(await challenged.get("/api/data"))
            assert_unavailable_json(
                await challenged.post("/mfa/api/verify", json={"code": ga.code(secret)})
            )
            assert_unavailable_page(
                await challenged.post(
                    "/mfa/challenge",
                    data={"csrf_token": token, "next": "/protected", "code": ga.code(secret)},
                )
            )
            # A verified session with a fresh marker works on, without the store ...
            assert (await verified.get("/protected")).status_code == 200
            assert (await verified.get("/api/data")).json() == {"data": 42}
            # ... until its re-check is due: then it fails closed as well.
            ga.clock.advance(RECHECK_SECONDS + 1)
            assert_unavailable_navigation(await verified.get("/protected"))
            assert_unavailable_json(await verified.get("/api/data"))

            # The network is back: the same app, its pool pinging out the dead connections.
            postgres_proxy.restore()
            assert await store.get(USER) == before  # nothing lost, no step accepted
            response = await challenged.post("/mfa/api/verify", json={"code": ga.code(secret)})
            assert response.status_code == 200, response.text
            assert (await challenged.get("/protected")).status_code == 200
            assert (await verified.get("/api/data")).json() == {"data": 42}
            status = (await owner.get("/mfa/api/status")).json()
            assert (status["enrolled"], status["recovery_codes_left"]) == (True, 10)

            # A blip no request saw kills the pooled connections: the first request after it
            # works all the same (the pool pings each connection before handing it out).
            postgres_proxy.cut()
            postgres_proxy.restore()
            assert (await owner.get("/mfa/api/status")).status_code == 200
    finally:
        await ga.guard.aclose()


RECOVERY = RecoveryCodeSet(salt="00" * 16, hashes=("11" * 32, "22" * 32), params=SCRYPT_PARAMS)
SMS_CHALLENGE = SMSChallenge(
    purpose=SMSPurpose.SIGN_IN, code_hash="33" * 32, phone=PHONE, expires_at=600.0
)
APP = Authenticator(
    id="outage-app", kind=FactorKind.TOTP, name="Phone", created_at=30.0, secret="pending"
)
KEY = Authenticator(
    id="outage-key",
    kind=FactorKind.WEBAUTHN,
    name="Key",
    created_at=30.0,
    credential_id=b"credential",
    public_key=b"cose",
)
WEBAUTHN_CHALLENGE = WebAuthnChallenge(
    purpose=CeremonyPurpose.SIGN_IN, challenge_hash="44" * 32, binding="55" * 16, expires_at=600.0
)
# One call of each MFAStore method, as the kit makes it.
STORE_CALLS: dict[str, Callable[[MFAStore], Awaitable[object]]] = {
    "get": lambda store: store.get(USER),
    "summary": lambda store: store.summary(USER),
    "statuses": lambda store: store.statuses([USER]),
    "begin_enrolment": lambda store: store.begin_enrolment(USER, "pending"),
    "add_authenticator": lambda store: store.add_authenticator(
        USER, APP, now=30.0, recovery=RECOVERY, pending_secret="pending"
    ),
    "accept_step": lambda store: store.accept_step(USER, APP.id, 2, 60.0),
    "accept_assertion": lambda store: store.accept_assertion(USER, KEY.id, 1, 60.0),
    "rename_authenticator": lambda store: store.rename_authenticator(USER, APP.id, "Phone"),
    "remove_authenticator": lambda store: store.remove_authenticator(USER, KEY.id),
    "start_webauthn_challenge": lambda store: store.start_webauthn_challenge(
        USER, WEBAUTHN_CHALLENGE, 60.0
    ),
    "consume_webauthn_challenge": lambda store: store.consume_webauthn_challenge(
        USER,
        WEBAUTHN_CHALLENGE.purpose,
        WEBAUTHN_CHALLENGE.challenge_hash,
        WEBAUTHN_CHALLENGE.binding,
        60.0,
    ),
    "use_recovery_code": lambda store: store.use_recovery_code(USER, RECOVERY.hashes[0]),
    "replace_recovery_codes": lambda store: store.replace_recovery_codes(USER, RECOVERY),
    "disable": lambda store: store.disable(USER),
    "start_sms_challenge": lambda store: store.start_sms_challenge(USER, SMS_CHALLENGE),
    "consume_sms_challenge": lambda store: store.consume_sms_challenge(
        USER, SMSPurpose.SIGN_IN, SMS_CHALLENGE.code_hash, 60.0
    ),
    "set_phone": lambda store: store.set_phone(USER, SMS_CHALLENGE.phone, 60.0),
    "revoke_sessions": lambda store: store.revoke_sessions(USER),
    "stored_secrets": lambda store: store.stored_secrets(None, 10),
    "replace_secrets": lambda store: store.replace_secrets(
        StoredSecrets(USER, "old", ((APP.id, "old"),)),
        StoredSecrets(USER, "new", ((APP.id, "new"),)),
    ),
}


def test_the_outage_check_covers_every_store_method() -> None:
    protocol = {
        name for name, value in vars(MFAStore).items() if inspect.iscoroutinefunction(value)
    }
    assert set(STORE_CALLS) == protocol


@pytest.mark.postgres
@pytest.mark.parametrize("method", list(STORE_CALLS))
async def test_a_database_behind_a_cut_network_is_unavailable_to_every_store_method(
    proxied_store: SQLStore, postgres_proxy: FaultProxy, method: str
) -> None:
    await proxied_store.summary(USER)  # a pooled connection is open
    postgres_proxy.cut()
    for _ in range(2):  # on the pooled connection, then on a new one
        with pytest.raises(StoreUnavailable):
            await STORE_CALLS[method](proxied_store)


@pytest.mark.postgres
async def test_dead_pooled_connections_cost_no_failed_call(
    proxied_store: SQLStore, postgres_proxy: FaultProxy
) -> None:
    """A blip (or a server restart) between requests kills the pooled connections. The next
    calls work, with no ping before each: a connection asyncpg has seen close is replaced as
    the pool hands it out; one it has not (the statement meets a dead socket) is run again on
    a new connection, as reads and compare-and-set writes may be."""
    store = proxied_store
    await store.begin_enrolment(USER, "pending")
    assert await store.add_authenticator(
        USER, APP, now=30.0, recovery=RECOVERY, pending_secret="pending"
    )
    step = 1
    for seen in (False, True):
        await asyncio.gather(*(store.summary(USER) for _ in range(3)))  # pooled connections
        postgres_proxy.cut()
        postgres_proxy.restore()
        if seen:
            await asyncio.sleep(0.1)  # the client's event loop sees the sockets close
        step += 1
        assert await store.accept_step(USER, APP.id, step, 60.0)
        enrolment = await store.get(USER)
        assert enrolment is not None
        assert enrolment.apps[0].last_step == step
        assert await store.summary(USER) == EnrolmentSummary(enrolled=True, epoch=1)


@pytest.mark.postgres
async def test_a_step_whose_answer_is_lost_is_still_accepted_at_most_once(
    postgres_proxy: FaultProxy, postgres_schema: str
) -> None:
    """The network fails after the server accepted a step, before its answer comes back. The
    store runs the compare-and-set again on a new connection, which finds the step taken: the
    code is refused (the user waits for the next one), never accepted twice."""
    url = make_url(POSTGRES_URL).set(host="127.0.0.1", port=postgres_proxy.port)
    store = SQLStore(
        url.render_as_string(hide_password=False),
        connect_args={"server_settings": {"search_path": postgres_schema}},
        pool_size=1,
        max_overflow=0,
    )
    try:
        await store.begin_enrolment(USER, "pending")
        app = dataclasses.replace(APP, last_step=1)
        assert await store.add_authenticator(
            USER, app, now=30.0, recovery=RECOVERY, pending_secret="pending"
        )
        # The statement is prepared on the connection.
        assert not await store.accept_step(USER, APP.id, 1, 60.0)
        postgres_proxy.lose_next_reply()
        assert not await store.accept_step(USER, APP.id, 2, 60.0)
        enrolment = await store.get(USER)
        assert enrolment is not None
        assert enrolment.apps[0].last_step == 2  # the first run's write stands, alone
        assert not await store.accept_step(USER, APP.id, 2, 60.0)
        assert await store.accept_step(USER, APP.id, 3, 60.0)
    finally:
        postgres_proxy.restore()
        await store.close()
