"""The databases the tests reach: PostgreSQL (a schema or a database of a test's own), SQLite
files, the test Redis, and a SQL store seeded with Acme and Solo. Each server is a skip on a
developer's machine without it and a failure when ``CI=true``, where it must run."""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import NoReturn

import pytest
from sqlalchemy import exc as sa_exc
from sqlalchemy import text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import create_async_engine

from mfa_guard.core.recovery import RecoveryCodeSet
from mfa_guard.stores.base import Authenticator, FactorKind
from mfa_guard.stores.sites import Role, SitePolicy
from mfa_guard.stores.sql import SQLSiteDirectory, SQLStore

POSTGRES_URL = os.environ.get(
    "MFA_GUARD_TEST_POSTGRES_URL", "postgresql+asyncpg://postgres@127.0.0.1:5432/test"
)
UNREACHABLE_POSTGRES_URL = "postgresql+asyncpg://postgres@127.0.0.1:1/test"


def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite+aiosqlite:///{tmp_path}/mfa.db"


async def _execute(url: str, statement: str) -> None:
    engine = create_async_engine(url, connect_args={"timeout": 5})
    try:
        async with engine.begin() as conn:
            await conn.execute(text(statement))
    finally:
        await engine.dispose()


def _unreachable(exc: Exception) -> NoReturn:
    """A failure when CI=true, a skip elsewhere: the PostgreSQL server is not there."""
    where = make_url(POSTGRES_URL).render_as_string(hide_password=True)
    reason = f"PostgreSQL at {where} is unreachable: {type(exc).__name__}: {exc}"
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"{reason} (CI=true: the PostgreSQL tests must run)")
    pytest.skip(f"{reason} (start it or set MFA_GUARD_TEST_POSTGRES_URL)")


@contextlib.contextmanager
def fresh_schema(prefix: str) -> Iterator[str]:
    """A PostgreSQL schema of its own (dropped after), so parallel runs share the server safely;
    a failure when CI=true, a skip elsewhere, if the server is not there."""
    schema = f"{prefix}_{uuid.uuid4().hex[:12]}"
    try:
        asyncio.run(_execute(POSTGRES_URL, f"CREATE SCHEMA {schema}"))
    except (OSError, sa_exc.DBAPIError) as exc:
        _unreachable(exc)
    yield schema
    asyncio.run(_execute(POSTGRES_URL, f"DROP SCHEMA {schema} CASCADE"))


async def _execute_outside_a_transaction(url: str, statement: str) -> None:
    engine = create_async_engine(url, connect_args={"timeout": 5}, isolation_level="AUTOCOMMIT")
    try:
        async with engine.connect() as conn:
            await conn.execute(text(statement))
    finally:
        await engine.dispose()


@contextlib.contextmanager
def fresh_database(prefix: str) -> Iterator[str]:
    """The URL of a PostgreSQL database of its own (dropped after), for what takes a URL alone
    and so cannot be put in a schema (the command line); as :func:`fresh_schema` when the
    server is not there."""
    name = f"{prefix}_{uuid.uuid4().hex[:12]}"
    try:
        asyncio.run(_execute_outside_a_transaction(POSTGRES_URL, f"CREATE DATABASE {name}"))
    except (OSError, sa_exc.DBAPIError) as exc:
        _unreachable(exc)
    yield make_url(POSTGRES_URL).set(database=name).render_as_string(hide_password=False)
    drop = f"DROP DATABASE {name} WITH (FORCE)"
    asyncio.run(_execute_outside_a_transaction(POSTGRES_URL, drop))


async def empty_postgres_store(schema: str) -> SQLStore:
    store = SQLStore(POSTGRES_URL, connect_args={"server_settings": {"search_path": schema}})
    await store.create_all()
    async with store.engine.begin() as conn:
        await conn.execute(
            text(
                "TRUNCATE mfa_guard_recovery_codes, mfa_guard_authenticators, "
                "mfa_guard_webauthn_challenges, mfa_guard_enrolments"
            )
        )
    return store


REDIS_URL = os.environ.get("MFA_GUARD_TEST_REDIS_URL", "redis://127.0.0.1:6379/11")


def redis_or_skip() -> str:
    """The test Redis; a skip only outside CI, where it must run."""
    if os.environ.get("CI") == "true":
        return REDIS_URL
    try:
        with socket.create_connection(("127.0.0.1", int(REDIS_URL.split(":")[2].split("/")[0])), 1):
            pass
    except OSError as exc:  # pragma: no cover - only without a local Redis
        pytest.skip(f"Redis at {REDIS_URL} is not reachable: {exc}")
    return REDIS_URL


async def seeded(url: str) -> None:
    """Acme (an owner with 2FA, an operator without) and Solo, in the SQL store at ``url``."""
    store = SQLStore(url)
    try:
        directory = SQLSiteDirectory.sharing(store)
        await directory.save_site("acme", "Acme")
        await directory.add_member("acme", "owner@acme.test", Role.OWNER)
        await directory.add_member("acme", "agent@acme.test", Role.OPERATOR)
        await directory.save_site("solo", "Solo")
        await directory.add_member("solo", "solo@example.test", Role.OWNER)
        policy = SitePolicy(enforce=True, grace_deadline=1_800_000_000.0, changed_at=0.0)
        assert await directory.set_policy("acme", policy)
        recovery = RecoveryCodeSet(salt="00", hashes=("11",))
        for n, user in enumerate(("owner@acme.test", "solo@example.test")):
            app = Authenticator(
                id=f"seeded-app-{n}",
                kind=FactorKind.TOTP,
                name="Authenticator app",
                created_at=1.0,
                secret="token",
                last_step=1,
            )
            await store.begin_enrolment(user, "token")
            added = await store.add_authenticator(
                user, app, now=1.0, recovery=recovery, pending_secret="token"
            )
            assert added == 1
    finally:
        await store.close()
