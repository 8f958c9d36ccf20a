from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

from mfa_guard.cli import main
from mfa_guard.errors import ConfigurationError, StoreUnavailable
from mfa_guard.stores.base import FactorKind, FactorStatus
from mfa_guard.stores.sites import Member, MemorySiteDirectory, Role, SiteDirectory
from mfa_guard.stores.sql import SQLSiteDirectory, SQLStore, metadata, site_members, sites
from mfa_guard.testing import CountingSiteDirectory
from mfa_guard.testing.contract import PHONE, enrol
from mfa_guard.testing.sites_contract import NOW, SiteDirectoryContract, enforcing, site_with
from tests.databases import (
    POSTGRES_URL,
    UNREACHABLE_POSTGRES_URL,
    fresh_schema,
    sqlite_url,
)


@pytest.fixture(scope="session")
def sites_schema() -> Iterator[str]:
    """A schema of its own, apart from the store tests' one and from parallel runs."""
    with fresh_schema("mfa_guard_sites_test") as schema:
        yield schema


def in_schema(schema: str) -> dict[str, object]:
    """asyncpg's connect arguments putting the session in ``schema``."""
    return {"server_settings": {"search_path": schema}}


async def empty_postgres_store(schema: str) -> SQLStore:
    store = SQLStore(POSTGRES_URL, connect_args=in_schema(schema))
    await store.create_all()
    async with store.engine.begin() as conn:
        await conn.execute(
            text(
                "TRUNCATE mfa_guard_site_members, mfa_guard_sites, mfa_guard_recovery_codes,"
                " mfa_guard_authenticators, mfa_guard_webauthn_challenges, mfa_guard_enrolments"
            )
        )
    return store


class TestMemorySiteDirectory(SiteDirectoryContract):
    @pytest.fixture
    def directory(self) -> MemorySiteDirectory:
        return MemorySiteDirectory()


class TestSQLiteSiteDirectory(SiteDirectoryContract):
    @pytest.fixture
    async def directory(self, tmp_path: Path) -> AsyncIterator[SQLSiteDirectory]:
        directory = SQLSiteDirectory(sqlite_url(tmp_path))
        yield directory
        await directory.close()


class TestSQLiteInMemorySiteDirectory(SiteDirectoryContract):
    """Built from a store: one connection (StaticPool) shared by the store and the directory."""

    @pytest.fixture
    async def directory(self) -> AsyncIterator[SQLSiteDirectory]:
        store = SQLStore("sqlite+aiosqlite://")
        yield SQLSiteDirectory.sharing(store)
        await store.close()


@pytest.mark.postgres
class TestPostgresSiteDirectory(SiteDirectoryContract):
    @pytest.fixture
    async def directory(self, sites_schema: str) -> AsyncIterator[SQLSiteDirectory]:
        await (await empty_postgres_store(sites_schema)).close()
        directory = SQLSiteDirectory(POSTGRES_URL, connect_args=in_schema(sites_schema))
        yield directory
        await directory.close()


@pytest.fixture(params=["memory", "sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
async def any_directory(
    request: pytest.FixtureRequest, tmp_path: Path
) -> AsyncIterator[SiteDirectory]:
    if request.param == "memory":
        yield MemorySiteDirectory()
        return
    if request.param == "sqlite":
        directory = SQLSiteDirectory(sqlite_url(tmp_path))
    else:
        schema: str = request.getfixturevalue("sites_schema")
        await (await empty_postgres_store(schema)).close()
        directory = SQLSiteDirectory(POSTGRES_URL, connect_args=in_schema(schema))
    yield directory
    await directory.close()


async def test_names_and_ids_sort_as_python_sorts_them(any_directory: SiteDirectory) -> None:
    # Upper case before lower case, accents after: the same order whatever the database locale.
    names = {"s1": "alpha", "s2": "Zulu", "s3": "Écrin", "s4": "beta", "s5": "Alpha"}
    for site_id, name in names.items():
        await site_with(any_directory, site_id, name, alice=Role.OPERATOR)
    for user_id in ("bob", "Bea", "éva", "Zed"):
        await any_directory.add_member("s1", user_id, Role.OPERATOR)

    memberships = await any_directory.memberships("alice")
    members = await any_directory.members("s1")

    assert [m.site.name for m in memberships] == sorted(names.values())
    assert [m.user_id for m in members] == sorted(["alice", "bob", "Bea", "éva", "Zed"])


def test_metadata_holds_the_site_tables() -> None:
    assert {"mfa_guard_sites", "mfa_guard_site_members"} <= set(metadata.tables)
    assert [c.name for c in sites.primary_key] == ["id"]
    assert [c.name for c in site_members.primary_key] == ["site_id", "user_id"]
    (foreign_key,) = site_members.foreign_keys
    assert foreign_key.target_fullname == "mfa_guard_sites.id"
    assert foreign_key.ondelete == "CASCADE"
    assert [[c.name for c in index.columns] for index in site_members.indexes] == [["user_id"]]
    assert {"enforce", "grace_deadline", "policy_changed_by", "policy_changed_at"} <= set(
        sites.columns.keys()
    )


async def test_a_directory_from_a_store_shares_its_database(tmp_path: Path) -> None:
    store = SQLStore(sqlite_url(tmp_path))
    directory = SQLSiteDirectory.sharing(store)
    try:
        assert directory.engine is store.engine
        await site_with(directory, "acme", "Acme", alice=Role.OWNER)
        await enrol(store, "alice")

        # The first use created every table, in the one database file.
        with sqlite3.connect(tmp_path / "mfa.db") as db:
            tables = {row[0] for row in db.execute("select name from sqlite_master")}
        assert set(metadata.tables) <= tables
        await directory.close()
        # Closing the directory left the store's engine open.
        members = await directory.members("acme")
        statuses = await store.statuses([m.user_id for m in members])
        assert statuses == {"alice": FactorStatus(enrolled=True, kinds=(FactorKind.TOTP,))}
    finally:
        await store.close()


async def test_a_store_and_its_directory_take_turns_on_one_connection() -> None:
    # SQLite :memory: has a single connection (StaticPool): the two share one lock.
    store = SQLStore("sqlite+aiosqlite://")
    directory = SQLSiteDirectory.sharing(store)
    try:
        await directory.save_site("acme", "Acme")
        user_ids = [f"user-{n:02}" for n in range(20)]

        await asyncio.gather(
            *(store.set_phone(user_id, PHONE, NOW) for user_id in user_ids),
            *(directory.add_member("acme", user_id, Role.OPERATOR) for user_id in user_ids),
        )

        assert await directory.members("acme") == [Member(u, Role.OPERATOR) for u in user_ids]
        statuses = await store.statuses(user_ids)
        assert all(status.phone_verified for status in statuses.values())
    finally:
        await store.close()


async def test_a_shared_engine_is_left_open(tmp_path: Path) -> None:
    engine = create_async_engine(sqlite_url(tmp_path))
    try:
        directory = SQLSiteDirectory(engine=engine)
        await directory.save_site("acme", "Acme")
        await directory.close()

        async with engine.connect() as conn:
            count = await conn.scalar(text("SELECT count(*) FROM mfa_guard_sites"))
        assert count == 1
    finally:
        await engine.dispose()


async def test_a_directory_needs_one_database(tmp_path: Path) -> None:
    engine = create_async_engine(sqlite_url(tmp_path))
    try:
        with pytest.raises(ConfigurationError, match="SQLSiteDirectory"):
            SQLSiteDirectory()
        with pytest.raises(ConfigurationError):
            SQLSiteDirectory(sqlite_url(tmp_path), engine=engine)
        with pytest.raises(ConfigurationError):
            SQLSiteDirectory(engine=engine, pool_size=3)
    finally:
        await engine.dispose()


async def test_tables_are_left_alone_when_asked(tmp_path: Path) -> None:
    directory = SQLSiteDirectory(sqlite_url(tmp_path), create_tables=False)
    try:
        with pytest.raises(StoreUnavailable):
            await directory.site("acme")
        await directory.create_all()
        assert await directory.site("acme") is None
    finally:
        await directory.close()


async def test_an_unreachable_database_is_unavailable_quickly() -> None:
    directory = SQLSiteDirectory(UNREACHABLE_POSTGRES_URL, connect_args={"timeout": 2})
    started = time.monotonic()
    try:
        with pytest.raises(StoreUnavailable):
            await directory.deadline("alice")
        with pytest.raises(StoreUnavailable):
            await directory.add_member("acme", "alice", Role.OWNER)
    finally:
        await directory.close()
    assert time.monotonic() - started < 10


async def test_the_directory_from_an_unreachable_store_is_unavailable() -> None:
    store = SQLStore(UNREACHABLE_POSTGRES_URL, connect_args={"timeout": 2})
    try:
        with pytest.raises(StoreUnavailable):
            await SQLSiteDirectory.sharing(store).memberships("alice")
        with pytest.raises(StoreUnavailable):
            await store.statuses(["alice"])
    finally:
        await store.close()


async def test_a_counting_directory_counts_every_call() -> None:
    directory = CountingSiteDirectory(MemorySiteDirectory())

    await site_with(directory, "acme", "Acme", alice=Role.OWNER)
    await directory.set_policy("acme", enforcing(NOW))
    assert await directory.deadline("alice") == NOW
    await directory.memberships("alice")

    assert directory.calls == {
        "save_site": 1,
        "add_member": 1,
        "set_policy": 1,
        "deadline": 1,
        "memberships": 1,
    }
    assert directory.total == 5


def test_init_db_creates_the_site_tables(tmp_path: Path) -> None:
    url = sqlite_url(tmp_path)
    assert main(["init-db", "--database-url", url]) == 0
    assert main(["init-db", "--database-url", url]) == 0

    with sqlite3.connect(tmp_path / "mfa.db") as db:
        tables = {row[0] for row in db.execute("select name from sqlite_master")}
    assert {"mfa_guard_sites", "mfa_guard_site_members"} <= tables
    assert "ix_mfa_guard_site_members_user_id" in tables
