"""Upgrading in place: a database the previous release made, whose enrolments each kept one TOTP
secret in ``mfa_guard_enrolments``, is taken over by the store of several authenticators per
user, its migrations run on first use (``auto_migrate=True``; ``mfa-guard migrate`` does the same,
tests/stores/test_migrations.py). Each confirmed secret becomes the user's first authenticator
app, once, the old columns go, and everything else stays as it was: on SQLite and on PostgreSQL,
started once, twice, or by several workers at the same moment."""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import inspect, select
from sqlalchemy.ext.asyncio import create_async_engine

from mfa_guard.core.recovery import hash_code, normalise
from mfa_guard.stores.base import Authenticator, FactorKind
from mfa_guard.stores.sql import SQLDeviceStore, SQLStore
from mfa_guard.stores.sql.migrations import legacy
from mfa_guard.stores.sql.schema import authenticators, webauthn_challenges
from tests.databases import POSTGRES_URL, fresh_schema, sqlite_url
from tests.previous_release import (
    BOX,
    DEVICES,
    ENROLLED,
    LEGACY_APP_NAME,
    NOW,
    USERS,
    make_previous_release_database,
)

# Worker processes starting at the same moment, each with an engine of its own.
WORKERS = 4


@dataclass(frozen=True, slots=True)
class Database:
    url: str
    connect_args: dict[str, Any]

    def store(self) -> SQLStore:
        return SQLStore(self.url, auto_migrate=True, connect_args=self.connect_args)


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def legacy_database(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Database]:
    """An empty database of the test's own: a SQLite file, or a PostgreSQL schema."""
    if request.param == "sqlite":
        yield Database(sqlite_url(tmp_path), {})
        return
    with fresh_schema("mfa_guard_legacy") as schema:
        yield Database(POSTGRES_URL, {"server_settings": {"search_path": schema}})


@pytest.fixture
async def upgraded(legacy_database: Database) -> AsyncIterator[SQLStore]:
    """The previous release's database, taken over by the store (which upgrades it on first
    use)."""
    await make_previous_release_database(legacy_database.url, legacy_database.connect_args)
    store = legacy_database.store()
    yield store
    await store.close()


async def app_rows(store: SQLStore) -> list[Any]:
    async with store.engine.connect() as conn:
        query = select(authenticators).order_by(authenticators.c.user_id)
        return list(await conn.execute(query))


async def enrolment_columns(store: SQLStore) -> set[str]:
    async with store.engine.connect() as conn:
        columns = await conn.run_sync(
            lambda sync: inspect(sync).get_columns("mfa_guard_enrolments")
        )
    return {column["name"] for column in columns}


async def test_each_confirmed_secret_becomes_the_users_first_app(upgraded: SQLStore) -> None:
    store = upgraded
    ids = set()
    for user in ENROLLED:
        enrolment = await store.get(user.user_id)
        assert enrolment is not None
        [app] = enrolment.authenticators
        assert (app.kind, app.name) == (FactorKind.TOTP, LEGACY_APP_NAME)
        assert re.fullmatch("[0-9a-f]{32}", app.id)
        ids.add(app.id)
        assert app.secret is not None
        assert BOX.decrypt(app.secret) == user.secret
        assert (app.created_at, app.last_step, app.last_used_at) == (
            user.confirmed_at,
            user.last_step,
            None,
        )
        assert app.credential_id is None
        assert enrolment.enrolled
        assert enrolment.confirmed_at == user.confirmed_at
        assert (await store.summary(user.user_id)).enrolled
        # The step used last before the upgrade stays used; the next one passes.
        assert user.last_step is not None
        assert not await store.accept_step(user.user_id, app.id, user.last_step, NOW)
        assert await store.accept_step(user.user_id, app.id, user.last_step + 1, NOW)
    assert len(ids) == len(ENROLLED)
    # The old columns are gone: the secrets are in the authenticators alone.
    assert {"secret", "last_step"} & await enrolment_columns(store) == set()


async def test_everything_else_stays_as_it_was(upgraded: SQLStore) -> None:
    store = upgraded
    for user in USERS:
        enrolment = await store.get(user.user_id)
        assert enrolment is not None, user.user_id
        assert enrolment.epoch == user.epoch
        assert enrolment.enrolled == user.enrolled
        assert (enrolment.phone, enrolment.phone_verified_at) == (
            user.phone,
            user.phone_verified_at,
        )
        pending = (
            None if enrolment.pending_secret is None else BOX.decrypt(enrolment.pending_secret)
        )
        assert (pending, enrolment.pending_binding) == (user.pending, user.binding)
        assert (enrolment.sms_challenge is not None) == bool(user.sms)
        assert enrolment.recovery_codes_left == len(user.codes)
        if not user.enrolled:
            assert enrolment.authenticators == ()
            assert enrolment.confirmed_at is None
    # The recovery codes still sign in, once each, as the kit hashes them.
    for user in ENROLLED:
        enrolment = await store.get(user.user_id)
        assert enrolment is not None
        assert enrolment.recovery is not None
        for code in user.codes:
            canonical = normalise(code)
            assert canonical is not None
            digest = hash_code(canonical, enrolment.recovery.salt, enrolment.recovery.params)
            assert await store.use_recovery_code(user.user_id, digest)
            assert not await store.use_recovery_code(user.user_id, digest)
    # The remembered browsers too, without the User-Agent the previous release did not keep.
    devices = SQLDeviceStore.sharing(store)
    for device in DEVICES:
        [kept] = await devices.devices(device.user_id)
        assert kept == device
        assert kept.user_agent is None
    # Bob's set-up in flight completes as a second app, beside the moved one.
    bob = await store.get("bob@acme.test")
    assert bob is not None
    assert bob.pending_secret is not None
    [moved] = bob.apps
    second = Authenticator(
        id="b" * 32,
        kind=FactorKind.TOTP,
        name="New phone",
        created_at=NOW,
        secret=bob.pending_secret,
        last_step=1,
    )
    epoch = await store.add_authenticator(
        "bob@acme.test", second, now=NOW, pending_secret=bob.pending_secret
    )
    assert epoch == 2
    after = await store.get("bob@acme.test")
    assert after is not None
    assert after.apps == (moved, second)


async def test_a_second_start_moves_nothing_again(
    upgraded: SQLStore, legacy_database: Database
) -> None:
    await upgraded.summary("alice@acme.test")  # the first start upgrades
    before = await app_rows(upgraded)
    await upgraded.close()

    again = legacy_database.store()
    try:
        await again.create_all()
        assert await app_rows(again) == before
        assert len(before) == len(ENROLLED)
    finally:
        await again.close()


@pytest.mark.parametrize("new_tables", [False, True], ids=["to-create", "made-before"])
async def test_workers_starting_at_once_move_each_secret_once(
    legacy_database: Database, new_tables: bool
) -> None:
    """With the new tables to create, the workers take turns migrating; with the tables made
    before (``init-db`` of a release before migrations run, then a worker of the previous
    release confirmed a secret the old way), the workers recognise that layout first."""
    await make_previous_release_database(legacy_database.url, legacy_database.connect_args)
    if new_tables:
        engine = create_async_engine(legacy_database.url, connect_args=legacy_database.connect_args)
        try:
            async with engine.begin() as conn:
                await conn.run_sync(
                    legacy.LAYOUT.create_all,
                    tables=[legacy.authenticators, legacy.LAYOUT.tables[webauthn_challenges.name]],
                )
        finally:
            await engine.dispose()
    workers = [legacy_database.store() for _ in range(WORKERS)]
    try:
        summaries = await asyncio.gather(
            *(worker.summary(user.user_id) for worker in workers for user in USERS)
        )

        assert [summary.enrolled for summary in summaries] == [u.enrolled for u in USERS] * WORKERS
        rows = await app_rows(workers[0])
        assert sorted(row.user_id for row in rows) == sorted(u.user_id for u in ENROLLED)
        assert {"secret", "last_step"} & await enrolment_columns(workers[0]) == set()
    finally:
        for worker in workers:
            await worker.close()
