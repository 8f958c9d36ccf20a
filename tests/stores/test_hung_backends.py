"""A backend that stops answering, rather than refusing: the TCP connection stays up and nothing
comes back. Requests must not wait for it: each answers the generic 503 within the timeouts the
settings give (``database_statement_timeout``, ``database_connect_timeout``,
``database_pool_timeout``, ``storage_timeout``), a burst of them does not pile up behind one
another, and the same app serves again once the backend answers.

The silence is a proxy (``bench.faults_net.FaultProxy``): ``freeze()`` stops passing bytes
either way on every connection, and holds new ones without forwarding them, until ``thaw()``; or
a server that accepts connections and never says a word. The timeouts are a second or less, and
the waits on them are real: a socket timeout cannot be moved by the app's clock (which the tests
still move to make a session's store re-check due).
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
from sqlalchemy.engine import make_url

from bench.faults_net import running_proxy
from mfa_guard.core.totp import new_secret
from mfa_guard.crypto import SecretBox
from mfa_guard.errors import StoreUnavailable
from mfa_guard.ratelimit import storage_from_uri
from mfa_guard.stores.sql import SQLStore
from tests.apps import (
    ENCRYPTION_KEY,
    GuardedApp,
    build_app,
    enrol,
    settings_for,
    sign_in,
    store_app,
)
from tests.databases import POSTGRES_URL, fresh_schema, redis_or_skip
from tests.scenarios import recovery_code_set, wrong_code

# The timeouts the apps here are given, in seconds.
TIMEOUT = 1.0
# What a request may take on top of the timeouts it meets (scheduling on a busy CI machine).
SLACK = 1.5
# Requests sent at once against a silent backend: more than the pool has connections.
BURST = 12
POOL_SIZE = 2
RECHECK_SECONDS = 60
CLOSE_TIMEOUT = 10.0
# Beyond this, a request is hung.
HANG = 30.0


@pytest.fixture
def schema() -> Iterator[str]:
    with fresh_schema("mfa_guard_hung") as name:
        yield name


def postgres_settings(port: int, **overrides: Any) -> dict[str, Any]:
    """The app's settings for PostgreSQL behind the proxy on ``port``, with short timeouts."""
    url = make_url(POSTGRES_URL).set(host="127.0.0.1", port=port)
    return {
        "database_url": url.render_as_string(hide_password=False),
        "database_pool_size": POOL_SIZE,
        "database_max_overflow": 0,
        "database_pool_timeout": TIMEOUT,
        "database_connect_timeout": TIMEOUT,
        "database_statement_timeout": TIMEOUT,
        "recheck_seconds": RECHECK_SECONDS,
        **overrides,
    }


def postgres_store(settings: dict[str, Any], schema: str) -> SQLStore:
    return SQLStore.from_settings(
        settings_for(**settings), connect_args={"server_settings": {"search_path": schema}}
    )


async def timed(request: Callable[[], Awaitable[httpx.Response]]) -> tuple[httpx.Response, float]:
    started = time.monotonic()
    # A request that hangs fails the test rather than holding it for ever.
    async with asyncio.timeout(HANG):
        response = await request()
    return response, time.monotonic() - started


async def burst(
    request: Callable[[], Awaitable[httpx.Response]], count: int = BURST
) -> list[tuple[httpx.Response, float]]:
    return await asyncio.gather(*(timed(request) for _ in range(count)))


def assert_unavailable(response: httpx.Response) -> None:
    assert response.status_code == 503, (response.status_code, response.text)
    assert response.json()["error"]["code"] == "service_unavailable"
    assert int(response.headers["Retry-After"]) > 0


def user() -> str:
    # Of this test alone: the shared Redis keeps failure counts by user.
    return f"hung-{uuid.uuid4().hex[:12]}@example.test"


async def enrolled_sessions(
    ga: GuardedApp, verified: httpx.AsyncClient, challenged: httpx.AsyncClient
) -> str:
    """The user enrols in ``verified`` and signs in again in ``challenged``, which is asked for
    a code; the clock is then on a step no code was given in. Returns the TOTP secret."""
    name = user()
    await sign_in(verified, name)
    secret, _ = await enrol(ga, verified)
    await sign_in(challenged, name)
    ga.clock.advance(30)
    assert (await verified.get("/api/data")).status_code == 200
    assert (await challenged.get("/api/data")).status_code == 401
    return secret


@pytest.mark.postgres
async def test_a_database_that_stops_answering_gets_503s_in_bounded_time(schema: str) -> None:
    async with running_proxy(("127.0.0.1", make_url(POSTGRES_URL).port or 5432)) as proxy:
        settings = postgres_settings(proxy.port)
        store = postgres_store(settings, schema)
        ga = build_app(store, **settings)
        try:
            async with ga.client() as verified, ga.client() as challenged:
                secret = await enrolled_sessions(ga, verified, challenged)
                # Every pooled connection is open, mid-conversation with the server.
                await burst(lambda: verified.get("/mfa/api/status"), POOL_SIZE * 2)
                ga.clock.advance(RECHECK_SECONDS + 1)  # the session's store re-check is due

                proxy.freeze()
                # More requests than connections: each meets a silent statement, a silent
                # new connection, or an empty pool, and none waits longer than one of them
                # plus the pool's wait.
                bound = TIMEOUT + TIMEOUT + SLACK
                started = time.monotonic()
                answers = await burst(lambda: verified.get("/api/data"))
                took = time.monotonic() - started
                for response, seconds in answers:
                    assert_unavailable(response)
                    assert seconds < bound, (seconds, bound)
                assert took < bound  # answered side by side, not one after another
                response, seconds = await timed(
                    lambda: challenged.post("/mfa/api/verify", json={"code": ga.code(secret)})
                )
                assert_unavailable(response)
                assert seconds < bound

                # The server answers again: the same app, with no restart.
                proxy.thaw()
                assert (await verified.get("/api/data")).json() == {"data": 42}
                verify = await challenged.post("/mfa/api/verify", json={"code": ga.code(secret)})
                assert verify.status_code == 200, verify.text
        finally:
            await ga.guard.aclose()
            await asyncio.wait_for(store.close(), CLOSE_TIMEOUT)


@pytest.mark.postgres
async def test_a_database_that_never_answers_is_unavailable_within_the_connect_timeout(
    schema: str,
) -> None:
    async with running_proxy(None) as silent:
        store = postgres_store(postgres_settings(silent.port), schema)
        try:
            for _ in range(2):
                started = time.monotonic()
                with pytest.raises(StoreUnavailable):
                    async with asyncio.timeout(HANG):
                        await store.summary(user())
                assert time.monotonic() - started < TIMEOUT + SLACK
        finally:
            await asyncio.wait_for(store.close(), CLOSE_TIMEOUT)


@pytest.mark.redis
async def test_a_redis_that_stops_answering_gets_503s_within_one_timeout() -> None:
    redis = urlsplit(redis_or_skip())
    async with running_proxy((redis.hostname or "127.0.0.1", redis.port or 6379)) as proxy:
        ga = build_app(
            storage_uri=f"redis://127.0.0.1:{proxy.port}{redis.path}",
            storage_timeout=TIMEOUT,
            recheck_seconds=RECHECK_SECONDS,
        )
        try:
            async with ga.client() as verified, ga.client() as challenged:
                secret = await enrolled_sessions(ga, verified, challenged)
                proxy.freeze()
                # Each attempt at a code waits for Redis once: a timed-out command is not
                # run again (which would double the wait).
                bound = TIMEOUT + SLACK / 2
                started = time.monotonic()
                answers = await burst(
                    lambda: challenged.post(
                        "/mfa/api/verify", json={"code": wrong_code(ga, secret)}
                    )
                )
                assert time.monotonic() - started < bound
                for response, seconds in answers:
                    assert_unavailable(response)
                    assert seconds < bound, (seconds, bound)
                readiness = await ga.guard.check(within=TIMEOUT * 3)
                assert not readiness.ready
                # A verified session never asks Redis.
                assert (await verified.get("/api/data")).json() == {"data": 42}

                proxy.thaw()
                done = await challenged.post("/mfa/api/verify", json={"code": ga.code(secret)})
                assert done.status_code == 200, done.text
                assert (await ga.guard.check()).ready
        finally:
            await ga.guard.aclose()


@pytest.mark.redis
async def test_a_redis_that_never_answers_gets_503s_within_one_timeout() -> None:
    async with running_proxy(None) as silent:
        ga = build_app(storage_uri=f"redis://127.0.0.1:{silent.port}/0", storage_timeout=TIMEOUT)
        try:
            name = user()
            token = SecretBox([ENCRYPTION_KEY]).encrypt(new_secret())
            now = ga.clock()
            assert await store_app(
                ga.store, name, token, step=0, recovery=recovery_code_set(), now=now
            )
            async with ga.client() as client:
                await sign_in(client, name)
                for _ in range(2):
                    response, seconds = await timed(
                        lambda: client.post("/mfa/api/verify", json={"code": "123456"})
                    )
                    assert_unavailable(response)
                    assert seconds < TIMEOUT + SLACK / 2
        finally:
            await ga.guard.aclose()


def test_timeouts_in_the_storage_uri_win_over_the_setting() -> None:
    pytest.importorskip("redis")
    given = storage_from_uri("redis://127.0.0.1:6379/0?socket_timeout=3", timeout=TIMEOUT)
    defaulted = storage_from_uri("redis://127.0.0.1:6379/0", timeout=TIMEOUT)
    kwargs = [
        storage.bridge.storage.connection_pool.connection_kwargs  # type: ignore[attr-defined]
        for storage in (given, defaulted)
    ]
    assert [(k["socket_timeout"], k["socket_connect_timeout"]) for k in kwargs] == [
        (3.0, TIMEOUT),
        (TIMEOUT, TIMEOUT),
    ]
