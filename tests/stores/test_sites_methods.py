"""The methods policy on SQL: a sites table an earlier release made gets its two new columns
added empty (every site reads as accepting any method), and what a user's sites require is one
statement, whatever the number of sites.

The round trip of every policy and the requirements themselves are the directory contract's
(tests/stores/test_site_directory.py, on memory, SQLite and PostgreSQL)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import (
    Boolean,
    Column,
    Double,
    MetaData,
    String,
    Table,
    event,
    false,
    insert,
    text,
)
from sqlalchemy.ext.asyncio import create_async_engine

from mfa_guard.stores.sites import (
    MemorySiteDirectory,
    MethodPolicy,
    Requirements,
    Role,
    Site,
    SitePolicy,
)
from mfa_guard.stores.sql import SQLSiteDirectory
from mfa_guard.testing import CountingSiteDirectory
from mfa_guard.testing.sites_contract import DAY, NOW, enforcing, methods, site_with
from tests.databases import POSTGRES_URL, fresh_schema, sqlite_url

# The sites table exactly as the release before the methods policy made it.
LEGACY = MetaData()
LEGACY_SITES = Table(
    "mfa_guard_sites",
    LEGACY,
    Column("id", String(255), primary_key=True),
    Column("name", String(255), nullable=False),
    Column("enforce", Boolean, nullable=False, default=False, server_default=false()),
    Column("grace_deadline", Double, nullable=True),
    Column("policy_changed_by", String(255), nullable=True),
    Column("policy_changed_at", Double, nullable=True),
)


@pytest.fixture(scope="module")
def upgrade_schema() -> Iterator[str]:
    with fresh_schema("mfa_guard_sites_upgrade") as schema:
        yield schema


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def legacy_database(request: pytest.FixtureRequest, tmp_path: Path) -> tuple[str, dict[str, Any]]:
    """A database URL and its connect arguments, holding nothing yet."""
    if request.param == "sqlite":
        return sqlite_url(tmp_path), {}
    schema: str = request.getfixturevalue("upgrade_schema")
    return POSTGRES_URL, {"server_settings": {"search_path": schema}}


@pytest.fixture
async def upgraded(legacy_database: tuple[str, dict[str, Any]]) -> AsyncIterator[SQLSiteDirectory]:
    """A directory started on the earlier release's sites table, with an enforcing site."""
    url, connect_args = legacy_database
    engine = create_async_engine(url, connect_args=connect_args)
    try:
        async with engine.begin() as conn:
            await conn.execute(text("DROP TABLE IF EXISTS mfa_guard_site_members"))
            await conn.execute(text("DROP TABLE IF EXISTS mfa_guard_sites"))
            # Made before migrations: no version (the module's schema is shared by its tests).
            await conn.execute(text("DROP TABLE IF EXISTS mfa_guard_alembic_version"))
            await conn.run_sync(LEGACY.create_all)
            await conn.execute(
                insert(LEGACY_SITES).values(
                    id="acme",
                    name="Acme",
                    enforce=True,
                    grace_deadline=NOW + DAY,
                    policy_changed_by="olivia",
                    policy_changed_at=NOW,
                )
            )
    finally:
        await engine.dispose()
    # Migrated on first use, as on SQLite by default (PostgreSQL: `mfa-guard migrate`).
    directory = SQLSiteDirectory(url, auto_migrate=True, connect_args=connect_args)
    yield directory
    await directory.close()


async def test_an_earlier_sites_table_gets_the_columns_empty(
    upgraded: SQLSiteDirectory, caplog: pytest.LogCaptureFixture
) -> None:
    site = await upgraded.site("acme")

    assert site == Site("acme", "Acme", enforcing(NOW + DAY))
    assert site.policy.methods is MethodPolicy.ANY
    added = {r.getMessage().split()[4] for r in caplog.records if "added the column" in r.message}
    assert {"mfa_guard_sites.methods", "mfa_guard_sites.methods_deadline"} <= added
    await upgraded.add_member("acme", "alice", Role.OPERATOR)
    assert await upgraded.requirements("alice") == Requirements(enrol_by=NOW + DAY)


async def test_an_upgraded_table_keeps_a_methods_policy(upgraded: SQLSiteDirectory) -> None:
    await site_with(upgraded, "acme", "Acme", alice=Role.OPERATOR)
    policy = methods(MethodPolicy.PHISHING_RESISTANT, NOW + 2 * DAY, grace_deadline=NOW + DAY)

    assert await upgraded.set_policy("acme", policy) is True

    assert await upgraded.site("acme") == Site("acme", "Acme", policy)
    assert await upgraded.requirements("alice") == Requirements(
        NOW + DAY, NOW + 2 * DAY, NOW + 2 * DAY
    )


async def test_any_is_kept_as_null(tmp_path: Path) -> None:
    directory = SQLSiteDirectory(sqlite_url(tmp_path))
    try:
        await directory.save_site("acme", "Acme")
        await directory.set_policy("acme", methods(MethodPolicy.ANY, None))
        async with directory.engine.connect() as conn:
            stored = (await conn.execute(text("SELECT methods FROM mfa_guard_sites"))).all()
        assert stored == [(None,)]
        await directory.set_policy("acme", methods(MethodPolicy.NO_SMS, NOW))
        async with directory.engine.connect() as conn:
            stored = (await conn.execute(text("SELECT methods FROM mfa_guard_sites"))).all()
        assert stored == [("no_sms",)]
    finally:
        await directory.close()


async def test_requirements_are_one_statement_whatever_the_number_of_sites(
    tmp_path: Path,
) -> None:
    directory = SQLSiteDirectory(sqlite_url(tmp_path))
    try:
        for n in range(12):
            await site_with(directory, f"site-{n:02}", f"Site {n}", alice=Role.OPERATOR)
            accepted = (MethodPolicy.ANY, MethodPolicy.NO_SMS, MethodPolicy.PHISHING_RESISTANT)
            await directory.set_policy(
                f"site-{n:02}", methods(accepted[n % 3], NOW + (12 - n) * DAY)
            )
        statements: list[str] = []

        def record(*args: Any) -> None:
            statements.append(args[2])

        event.listen(directory.engine.sync_engine, "before_cursor_execute", record)

        found = await directory.requirements("alice")

        assert found == Requirements(NOW, NOW + DAY, NOW + DAY)
        assert len(statements) == 1
        assert statements[0].lstrip().upper().startswith("SELECT")
    finally:
        await directory.close()


async def test_a_counting_directory_counts_requirements() -> None:
    directory = CountingSiteDirectory(MemorySiteDirectory())
    await site_with(directory, "acme", "Acme", alice=Role.OWNER)
    await directory.set_policy("acme", SitePolicy(enforce=True))

    assert await directory.requirements("alice") == Requirements(0.0, None, None)
    assert await directory.requirements("bob") == Requirements()

    assert directory.calls["requirements"] == 2


def test_a_policy_written_with_text_holds_the_member() -> None:
    text: Any = "phishing_resistant"
    policy = SitePolicy(enforce=True, methods=text, methods_deadline=NOW)

    assert policy.methods is MethodPolicy.PHISHING_RESISTANT
    assert policy.methods_from(MethodPolicy.PHISHING_RESISTANT) == NOW
    assert policy == SitePolicy(
        enforce=True, methods=MethodPolicy.PHISHING_RESISTANT, methods_deadline=NOW
    )
    unknown: Any = "sms"
    with pytest.raises(ValueError, match="'sms' is not a valid MethodPolicy"):
        SitePolicy(enforce=True, methods=unknown)
