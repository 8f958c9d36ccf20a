"""The security log's stores: the contract on memory, SQLite (a file, and a store's shared
in-memory engine) and PostgreSQL; then what only the SQL one has: its table on a database an
earlier release made, rows of a kind a later release wrote, a site of many members, an
unreachable server."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import insert, inspect, text
from sqlalchemy.ext.asyncio import create_async_engine

from mfa_guard.errors import StoreUnavailable
from mfa_guard.events import AuditEvent, EventKind
from mfa_guard.stores.events import EventQuery, MemoryEventStore
from mfa_guard.stores.sites import Role
from mfa_guard.stores.sql import SQLEventStore, SQLSiteDirectory, SQLStore, metadata
from mfa_guard.stores.sql.schema import event_log
from mfa_guard.testing.events_contract import NOW, EventStoreContract
from tests.databases import POSTGRES_URL, UNREACHABLE_POSTGRES_URL, fresh_schema, sqlite_url


def in_schema(schema: str) -> dict[str, Any]:
    """asyncpg's connect arguments putting the session in ``schema``."""
    return {"server_settings": {"search_path": schema}}


@pytest.fixture(scope="session")
def events_schema() -> Iterator[str]:
    """A schema of its own, apart from the other store tests' and from parallel runs."""
    with fresh_schema("mfa_guard_events_test") as schema:
        yield schema


class TestMemoryEventStore(EventStoreContract):
    @pytest.fixture
    def store(self) -> MemoryEventStore:
        return MemoryEventStore()


class TestSQLiteEventStore(EventStoreContract):
    @pytest.fixture
    async def store(self, tmp_path: Path) -> AsyncIterator[SQLEventStore]:
        events = SQLEventStore(sqlite_url(tmp_path))
        yield events
        await events.close()


class TestSQLiteInMemoryEventStore(EventStoreContract):
    """Sharing a store's engine: one connection (StaticPool) for the store and the log."""

    @pytest.fixture
    async def store(self) -> AsyncIterator[SQLEventStore]:
        mfa_store = SQLStore("sqlite+aiosqlite://")
        yield SQLEventStore.sharing(mfa_store)
        await mfa_store.close()


@pytest.mark.postgres
class TestPostgresEventStore(EventStoreContract):
    @pytest.fixture
    async def store(self, events_schema: str) -> AsyncIterator[SQLEventStore]:
        events = SQLEventStore(POSTGRES_URL, connect_args=in_schema(events_schema))
        await events.create_all()
        async with events.engine.begin() as conn:
            # The ids go on from the last test's: the contract counts on their order only.
            await conn.execute(text("TRUNCATE mfa_guard_events"))
        yield events
        await events.close()


@dataclass(frozen=True, slots=True)
class Database:
    url: str
    connect_args: dict[str, Any]


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def database(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Database]:
    """An empty database of the test's own: a SQLite file, or a PostgreSQL schema."""
    if request.param == "sqlite":
        yield Database(sqlite_url(tmp_path), {})
        return
    with fresh_schema("mfa_guard_events_db") as schema:
        yield Database(POSTGRES_URL, in_schema(schema))


async def make_tables(database: Database, *, with_events: bool) -> None:
    """The kit's tables, as this release makes them, or as the one before the log did."""
    tables = [table for table in metadata.sorted_tables if with_events or table is not event_log]
    engine = create_async_engine(database.url, connect_args=database.connect_args)
    try:
        async with engine.begin() as conn:
            await conn.run_sync(metadata.create_all, tables=tables)
    finally:
        await engine.dispose()


async def test_the_log_is_made_on_a_database_of_the_release_before_it(
    database: Database,
) -> None:
    """An app upgrading: its tables are there, with its sites, and no log yet. The store it
    shares its engine with makes the log's table on first use, and keeps the rest."""
    await make_tables(database, with_events=False)
    store = SQLStore(database.url, auto_migrate=True, connect_args=database.connect_args)
    try:
        directory = SQLSiteDirectory.sharing(store)
        await directory.save_site("acme", "Acme")  # first use: the missing table is made
        await directory.add_member("acme", "owner@acme.test", Role.OWNER)
        log = SQLEventStore.sharing(store)

        first = await log.append(AuditEvent(EventKind.SITE_MEMBER_ADDED, "owner@acme.test", NOW))

        async with store.engine.connect() as conn:
            tables = await conn.run_sync(lambda sync: inspect(sync).get_table_names())
            indexes = await conn.run_sync(
                lambda sync: {i["name"] for i in inspect(sync).get_indexes("mfa_guard_events")}
            )
        assert "mfa_guard_events" in tables
        assert indexes == {
            "ix_mfa_guard_events_site_id",
            "ix_mfa_guard_events_user_id_id",
            "ix_mfa_guard_events_at",
        }
        read = await log.events(EventQuery(users=("owner@acme.test",)))
        assert [each.id for each in read] == [first]
        assert [m.user_id for m in await directory.members("acme")] == ["owner@acme.test"]
    finally:
        await store.close()


async def test_sqlite_never_gives_a_purged_id_again(tmp_path: Path) -> None:
    """SQLite's AUTOINCREMENT: without it, the next rowid is the highest one left plus one,
    so the id of the newest event purged would come again, and a cursor kept would skip."""
    log = SQLEventStore(sqlite_url(tmp_path))
    try:
        ids = [await log.append(AuditEvent(EventKind.VERIFIED, "a", NOW + n)) for n in range(3)]
        await log.purge(NOW + 10)
        assert await log.append(AuditEvent(EventKind.VERIFIED, "a", NOW + 20)) == ids[-1] + 1
        async with log.engine.connect() as conn:
            ddl = await conn.scalar(
                text("SELECT sql FROM sqlite_master WHERE name = 'mfa_guard_events'")
            )
        assert "INTEGER NOT NULL PRIMARY KEY AUTOINCREMENT" in ddl
    finally:
        await log.close()


async def test_a_kind_a_later_release_wrote_is_left_out_of_full_pages(
    database: Database,
) -> None:
    """The app was rolled back after a later release logged kinds this one does not know: the
    log still reads, its pages still full, and the cursor walks past those rows."""
    await make_tables(database, with_events=True)
    log = SQLEventStore(database.url, connect_args=database.connect_args)
    try:
        known = []
        for n in range(4):
            known.append(await log.append(AuditEvent(EventKind.VERIFIED, "alice", NOW + n)))
            async with log.engine.begin() as conn:
                await conn.execute(
                    insert(event_log).values(kind="from_the_future", user_id="alice", at=NOW + n)
                )

        first = await log.events(EventQuery(users=("alice",), limit=2))
        second = await log.events(EventQuery(users=("alice",), before=first[-1].id, limit=2))

        assert [each.id for each in first + second] == known[::-1]
        assert await log.events(EventQuery(users=("alice",), before=known[0])) == []
        assert await log.purge(NOW + 10) == 8  # the purge removes them all the same
    finally:
        await log.close()


async def test_a_site_of_many_members_is_read_in_one_statement(database: Database) -> None:
    """More members than a statement may have parameters (32767 for asyncpg, 32766 for
    SQLite): they go as one parameter."""
    members = tuple(f"user{n}@acme.test" for n in range(40_000))
    log = SQLEventStore(database.url, connect_args=database.connect_args)
    try:
        own = await log.append(AuditEvent(EventKind.VERIFIED, members[-1], NOW))
        site = await log.append(AuditEvent(EventKind.SITE_MEMBER_ADDED, "x", NOW, site="acme"))
        await log.append(AuditEvent(EventKind.VERIFIED, "not-a-member", NOW))

        read = await log.events(EventQuery(users=members, site="acme"))

        assert [each.id for each in read] == [site, own]
    finally:
        await log.close()


async def test_an_unreachable_database_is_reported_as_unavailable() -> None:
    log = SQLEventStore(UNREACHABLE_POSTGRES_URL, connect_args={"timeout": 2})
    try:
        with pytest.raises(StoreUnavailable):
            await log.append(AuditEvent(EventKind.VERIFIED, "alice", NOW))
        with pytest.raises(StoreUnavailable):
            await log.events(EventQuery(users=("alice",)))
        with pytest.raises(StoreUnavailable):
            await log.purge(NOW)
    finally:
        await log.close()
