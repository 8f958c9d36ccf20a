from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from sqlalchemy import insert, text
from sqlalchemy.ext.asyncio import create_async_engine

from mfa_guard.core.marker import EnrolmentSummary
from mfa_guard.errors import ConfigurationError, StoreUnavailable
from mfa_guard.stores.base import CeremonyPurpose
from mfa_guard.stores.memory import MemoryStore
from mfa_guard.stores.sql import SQLStore, metadata
from mfa_guard.stores.sql.migrations import legacy
from mfa_guard.testing.contract import (
    BINDING,
    CHALLENGE_HASH,
    CONCURRENT_REQUESTS,
    NOW,
    RECOVERY,
    STEP,
    MFAStoreContract,
    app_id,
    challenge,
    enrol,
    key,
)
from tests.databases import (
    POSTGRES_URL,
    UNREACHABLE_POSTGRES_URL,
    empty_postgres_store,
    fresh_schema,
    sqlite_url,
)


@pytest.fixture(scope="session")
def postgres_schema() -> Iterator[str]:
    with fresh_schema("mfa_guard_test") as schema:
        yield schema


class TestMemoryStore(MFAStoreContract):
    @pytest.fixture
    def store(self) -> MemoryStore:
        return MemoryStore()


class TestSQLiteStore(MFAStoreContract):
    @pytest.fixture
    async def store(self, tmp_path: Path) -> AsyncIterator[SQLStore]:
        store = SQLStore(sqlite_url(tmp_path))
        yield store
        await store.close()


class TestSQLiteInMemoryStore(MFAStoreContract):
    @pytest.fixture
    async def store(self) -> AsyncIterator[SQLStore]:
        store = SQLStore("sqlite+aiosqlite://")
        yield store
        await store.close()


@pytest.mark.postgres
class TestPostgresStore(MFAStoreContract):
    @pytest.fixture
    async def store(self, postgres_schema: str) -> AsyncIterator[SQLStore]:
        store = await empty_postgres_store(postgres_schema)
        yield store
        await store.close()


def test_metadata_holds_the_tables_for_migrations() -> None:
    # The site directory's two tables are on it too (tests/stores/test_site_directory.py), the
    # trusted devices' one (tests/stores/test_device_store.py) and the security log's
    # (tests/stores/test_event_store.py).
    assert set(metadata.tables) == {
        "mfa_guard_enrolments",
        "mfa_guard_recovery_codes",
        "mfa_guard_authenticators",
        "mfa_guard_webauthn_challenges",
        "mfa_guard_sites",
        "mfa_guard_site_members",
        "mfa_guard_trusted_devices",
        "mfa_guard_events",
    }
    enrolments = metadata.tables["mfa_guard_enrolments"]
    codes = metadata.tables["mfa_guard_recovery_codes"]
    authenticators = metadata.tables["mfa_guard_authenticators"]
    challenges = metadata.tables["mfa_guard_webauthn_challenges"]
    assert [c.name for c in enrolments.primary_key] == ["user_id"]
    assert [c.name for c in codes.primary_key] == ["user_id", "code_hash"]
    assert {"epoch", "confirmed_at", "pending_secret", "pending_binding"} <= set(
        enrolments.columns.keys()
    )
    # The one secret of the releases before several authenticators: gone with migration
    # mfa_guard_0005 (tests/stores/test_migrations.py).
    assert {"secret", "last_step"} & set(enrolments.columns.keys()) == set()
    assert [c.name for c in authenticators.primary_key] == ["id"]
    [owner] = authenticators.c.user_id.foreign_keys
    assert (owner.target_fullname, owner.ondelete) == ("mfa_guard_enrolments.user_id", "CASCADE")
    assert authenticators.c.credential_id.unique
    assert {tuple(c.name for c in index.columns) for index in authenticators.indexes} == {
        ("user_id",)
    }
    assert not authenticators.c.sign_count.nullable
    assert [c.name for c in challenges.primary_key] == ["challenge_hash"]
    assert {tuple(c.name for c in index.columns) for index in challenges.indexes} == {("user_id",)}


async def test_enrolments_survive_a_restart(tmp_path: Path) -> None:
    before = SQLStore(sqlite_url(tmp_path))
    try:
        await enrol(before, "alice")
        await before.add_authenticator("alice", key("k1"), now=NOW)
        assert await before.accept_step("alice", app_id("alice"), STEP + 1, NOW) is True
        assert await before.accept_assertion("alice", "k1", 4, NOW) is True
        await before.start_webauthn_challenge("alice", challenge(), NOW)
        written = await before.get("alice")
    finally:
        await before.close()

    after = SQLStore(sqlite_url(tmp_path))
    try:
        assert await after.summary("alice") == EnrolmentSummary(enrolled=True, epoch=2)
        enrolment = await after.get("alice")
        assert enrolment is not None
        assert enrolment == written
        assert enrolment.apps[0].last_step == STEP + 1
        assert enrolment.recovery_codes_left == 4
        assert await after.accept_step("alice", app_id("alice"), STEP + 1, NOW) is False
        assert await after.accept_assertion("alice", "k1", 4, NOW) is False
        assert await after.consume_webauthn_challenge(
            "alice", CeremonyPurpose.SIGN_IN, CHALLENGE_HASH, BINDING, NOW
        )
    finally:
        await after.close()


async def test_an_unreachable_database_is_unavailable_quickly() -> None:
    store = SQLStore(UNREACHABLE_POSTGRES_URL, connect_args={"timeout": 2})
    started = time.monotonic()
    try:
        with pytest.raises(StoreUnavailable):
            await store.summary("alice")
        with pytest.raises(StoreUnavailable):
            await store.accept_step("alice", "app", STEP, NOW)
    finally:
        await store.close()
    assert time.monotonic() - started < 10


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def shared_database(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A SQLite file URL, or a PostgreSQL schema (set up here, outside the event loop)."""
    if request.param == "sqlite":
        return sqlite_url(tmp_path)
    schema: str = request.getfixturevalue("postgres_schema")
    return schema


@pytest.fixture
async def two_workers(shared_database: str) -> AsyncIterator[tuple[SQLStore, SQLStore]]:
    """Two stores with an engine each on one database, as two worker processes would have."""
    if shared_database.startswith("sqlite"):
        workers = (SQLStore(shared_database), SQLStore(shared_database))
    else:
        workers = (
            await empty_postgres_store(shared_database),
            await empty_postgres_store(shared_database),
        )
    yield workers
    for worker in workers:
        await worker.close()


async def test_two_workers_accept_one_step_once(two_workers: tuple[SQLStore, SQLStore]) -> None:
    first, second = two_workers
    # Both create the tables (if missing) at the same time.
    await asyncio.gather(first.summary("alice"), second.summary("alice"))
    await enrol(first, "alice")

    results = await asyncio.gather(
        *(
            worker.accept_step("alice", app_id("alice"), STEP + 1, NOW)
            for _ in range(CONCURRENT_REQUESTS // 2)
            for worker in two_workers
        )
    )

    assert results.count(True) == 1
    assert await second.accept_step("alice", app_id("alice"), STEP + 1, NOW) is False


async def test_two_workers_accept_one_counter_once(
    two_workers: tuple[SQLStore, SQLStore],
) -> None:
    first, second = two_workers
    await first.add_authenticator("alice", key("k1"), now=NOW, recovery=RECOVERY)

    results = await asyncio.gather(
        *(
            worker.accept_assertion("alice", "k1", 1, NOW)
            for _ in range(CONCURRENT_REQUESTS // 2)
            for worker in two_workers
        )
    )

    assert results.count(True) == 1
    assert await second.accept_assertion("alice", "k1", 1, NOW) is False


async def test_two_workers_answer_one_challenge_once(
    two_workers: tuple[SQLStore, SQLStore],
) -> None:
    first, _ = two_workers
    await first.start_webauthn_challenge("alice", challenge(), NOW)

    results = await asyncio.gather(
        *(
            worker.consume_webauthn_challenge(
                "alice", CeremonyPurpose.SIGN_IN, CHALLENGE_HASH, BINDING, NOW
            )
            for _ in range(CONCURRENT_REQUESTS // 2)
            for worker in two_workers
        )
    )

    assert results.count(True) == 1


async def test_two_workers_use_one_recovery_code_once(
    two_workers: tuple[SQLStore, SQLStore],
) -> None:
    first, _ = two_workers
    await enrol(first, "alice")

    results = await asyncio.gather(
        *(
            worker.use_recovery_code("alice", "h1")
            for _ in range(CONCURRENT_REQUESTS // 2)
            for worker in two_workers
        )
    )

    assert results.count(True) == 1


async def test_a_shared_engine_is_left_open(tmp_path: Path) -> None:
    engine = create_async_engine(sqlite_url(tmp_path))
    try:
        store = SQLStore(engine=engine)
        await enrol(store, "alice")
        await store.close()

        async with engine.connect() as conn:
            count = await conn.scalar(text("SELECT count(*) FROM mfa_guard_enrolments"))
        assert count == 1
    finally:
        await engine.dispose()


async def test_a_store_needs_one_database(tmp_path: Path) -> None:
    engine = create_async_engine(sqlite_url(tmp_path))
    try:
        with pytest.raises(ConfigurationError):
            SQLStore()
        with pytest.raises(ConfigurationError):
            SQLStore(sqlite_url(tmp_path), engine=engine)
        with pytest.raises(ConfigurationError):
            SQLStore(engine=engine, pool_size=3)
    finally:
        await engine.dispose()


async def _upgrade_keeps_every_row(url: str, connect_args: dict[str, object]) -> None:
    """A database made before migrations by the release before pending set-ups were bound to
    their session: its enrolments table has no ``pending_binding``. ``mfa-guard migrate`` adds
    the column (empty), as that release's successors did, and every row is still there."""
    engine = create_async_engine(url, connect_args=connect_args)
    try:
        async with engine.begin() as conn:
            await conn.run_sync(legacy.LAYOUT.create_all)
            await conn.execute(text("ALTER TABLE mfa_guard_enrolments DROP COLUMN pending_binding"))
            await conn.execute(
                text(
                    "INSERT INTO mfa_guard_enrolments (user_id, epoch, confirmed_at) "
                    "VALUES ('alice', 1, 1.0)"
                )
            )
            await conn.execute(
                insert(legacy.authenticators).values(
                    id="a" * 32, user_id="alice", kind="totp", name="App", created_at=1.0
                )
            )
    finally:
        await engine.dispose()

    store = SQLStore(url, connect_args=connect_args)
    try:
        assert (await store.migrate()).action == "upgraded"
        summary = await store.summary("alice")
        assert summary.enrolled
        await store.begin_enrolment("bob", "sealed-key", binding="c" * 32)
        pending = await store.get("bob")
        assert pending is not None
        assert pending.pending_binding == "c" * 32
    finally:
        await store.close()


async def test_an_earlier_releases_sqlite_database_gains_the_new_column_and_keeps_its_rows(
    tmp_path: Path,
) -> None:
    await _upgrade_keeps_every_row(sqlite_url(tmp_path), {})


@pytest.fixture
def upgrade_schema() -> Iterator[str]:
    # A schema of its own: the module's shared one must keep its columns.
    with fresh_schema("mfa_guard_upgrade") as schema:
        yield schema


@pytest.mark.postgres
async def test_an_earlier_releases_postgres_database_gains_the_new_column_and_keeps_its_rows(
    upgrade_schema: str,
) -> None:
    await _upgrade_keeps_every_row(
        POSTGRES_URL, {"server_settings": {"search_path": upgrade_schema}}
    )
