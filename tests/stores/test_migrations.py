"""The kit's Alembic migrations: the previous release's database, with rows in every table, comes
to this release's layout on SQLite and PostgreSQL with every row found; the models and the
migrations agree (a database migrated to the head has no difference from ``schema.metadata``);
a database behind is refused until migrated, and several workers starting at once on one end at
the head; ``mfa-guard migrate`` (and ``--sql``); an application's own Alembic that includes the
kit's branch; the columns docs/stores.md lists are the models'."""

from __future__ import annotations

import asyncio
import copy
import dataclasses
import re
import sqlite3
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import Column, MetaData, String, event, inspect, select, text
from sqlalchemy import exc as sa_exc
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from mfa_guard.cli import main
from mfa_guard.errors import ConfigurationError, StoreUnavailable
from mfa_guard.stores.base import Authenticator, FactorKind
from mfa_guard.stores.sites import Member, MethodPolicy, Site, SitePolicy
from mfa_guard.stores.sql import SQLDeviceStore, SQLSiteDirectory, SQLStore, migrations
from mfa_guard.stores.sql.migrations import legacy
from mfa_guard.stores.sql.schema import authenticators, metadata
from tests.databases import POSTGRES_URL, fresh_database, fresh_schema, sqlite_url
from tests.previous_release import (
    BOX,
    DEVICES,
    ENROLLED,
    LEGACY_APP_NAME,
    MEMBERS,
    NOW,
    PREVIOUS,
    SITES,
    USERS,
    make_previous_release_database,
)

ROOT = Path(__file__).resolve().parents[2]
HEAD = migrations.head()
# The remembered browsers' table as every revision before mfa_guard_0006 has it.
PREVIOUS_DEVICES = PREVIOUS.tables["mfa_guard_trusted_devices"]
FIREFOX = "Mozilla/5.0 (X11; Ubuntu; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0"
# Worker processes starting at the same moment, each with an engine of its own.
WORKERS = 4


@dataclass(frozen=True, slots=True)
class Database:
    """A database of the test's own: a SQLite file, or a PostgreSQL schema."""

    url: str
    connect_args: dict[str, Any]

    @property
    def postgres(self) -> bool:
        return self.url.startswith("postgresql")

    def store(self, **options: Any) -> SQLStore:
        return SQLStore(self.url, connect_args=self.connect_args, **options)

    def engine(self, **connect_args: Any) -> AsyncEngine:
        return create_async_engine(self.url, connect_args={**self.connect_args, **connect_args})


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def database(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Database]:
    if request.param == "sqlite":
        yield Database(sqlite_url(tmp_path), {})
        return
    with fresh_schema("mfa_guard_migrations") as schema:
        yield Database(POSTGRES_URL, {"server_settings": {"search_path": schema}})


@pytest.fixture
async def previous(database: Database) -> Database:
    """The previous release's database, with its rows."""
    await make_previous_release_database(database.url, database.connect_args)
    return database


async def on(database: Database, work: Any, *args: Any) -> Any:
    """``work(connection, *args)`` in one transaction on the database."""
    engine = database.engine()
    try:
        async with engine.begin() as conn:
            return await conn.run_sync(work, *args)
    finally:
        await engine.dispose()


def kit_tables(name: str | None, type_: str, parent_names: Any) -> bool:
    return type_ != "table" or (name or "").startswith("mfa_guard_")


def differences(conn: Connection, models: MetaData) -> list[Any]:
    """What autogenerate would change to make the database's tables (the kit's: an app's share
    the database in one test) ``models``: types and server defaults compared too; the kit's
    version table is no model's."""
    context = MigrationContext.configure(
        conn,
        opts={
            "compare_server_default": True,
            "version_table": migrations.VERSION_TABLE,
            "include_name": kit_tables,
        },
    )
    return list(compare_metadata(context, models))


def upgraded_to(conn: Connection, revision: str, models: MetaData) -> list[Any]:
    migrations.run_command(conn, "upgrade", revision)
    return differences(conn, models)


def columns_of(conn: Connection, table: str) -> list[str]:
    return [column["name"] for column in inspect(conn).get_columns(table)]


async def version(database: Database) -> str | None:
    state = await on(database, migrations.read_state)
    assert isinstance(state, migrations.SchemaState)
    return state.version


# -- the models and the migrations agree --------------------------------------------------------


async def test_the_baseline_is_the_previous_releases_layout(database: Database) -> None:
    assert await on(database, upgraded_to, "mfa_guard_0001", PREVIOUS) == []


async def test_revision_0004_is_the_layout_the_releases_before_migrations_made(
    database: Database,
) -> None:
    """What a database without a version is completed to before it is stamped 0004."""
    assert await on(database, upgraded_to, legacy.REVISION, legacy.LAYOUT) == []


async def test_the_models_and_the_migrations_agree(database: Database) -> None:
    """Fails as soon as a model changes without its migration (or the other way round)."""
    assert await on(database, upgraded_to, "head", metadata) == []
    # It can fail: a column the migrations do not make is a difference.
    changed = copy.deepcopy(metadata)
    changed.tables["mfa_guard_sites"].append_column(Column("colour", String(7)))
    [(kind, *_)] = await on(database, differences, changed)
    assert kind == "add_column"


async def test_a_database_made_on_first_use_is_the_migrations_head(database: Database) -> None:
    """An empty database gets the models' tables, stamped at the head: the same layout."""
    store = database.store()
    try:
        assert not (await store.summary("alice")).enrolled
    finally:
        await store.close()
    assert await version(database) == HEAD
    assert await on(database, differences, metadata) == []


# -- the previous release's database ------------------------------------------------------------


async def test_the_previous_releases_database_is_migrated_and_every_row_found(
    previous: Database,
) -> None:
    store = previous.store()
    try:
        outcome = await store.migrate()
        assert outcome == migrations.Outcome("upgraded", None, HEAD)
        await every_row_is_found(store)
    finally:
        await store.close()
    assert await version(previous) == HEAD
    assert "secret" not in await on(previous, columns_of, "mfa_guard_enrolments")
    assert await on(previous, differences, metadata) == []


async def every_row_is_found(store: SQLStore) -> None:
    """Every row the previous release held, read back through the adapters."""
    for user in USERS:
        enrolment = await store.get(user.user_id)
        assert enrolment is not None, user.user_id
        assert (enrolment.epoch, enrolment.enrolled) == (user.epoch, user.enrolled)
        assert (enrolment.phone, enrolment.phone_verified_at) == (
            user.phone,
            user.phone_verified_at,
        )
        pending = enrolment.pending_secret
        assert (pending and BOX.decrypt(pending), enrolment.pending_binding) == (
            user.pending,
            user.binding,
        )
        assert (enrolment.sms_challenge is not None) == bool(user.sms)
        assert enrolment.recovery_codes_left == len(user.codes)
        if user.enrolled:
            # The secret, moved to the user's first app, still opens with the app's key.
            [app] = enrolment.authenticators
            assert (app.kind, app.name, app.created_at) == (
                FactorKind.TOTP,
                LEGACY_APP_NAME,
                user.confirmed_at,
            )
            assert app.secret is not None
            assert (BOX.decrypt(app.secret), app.last_step) == (user.secret, user.last_step)
        else:
            assert enrolment.authenticators == ()
    directory = SQLSiteDirectory.sharing(store)
    acme, solo = SITES
    assert await directory.site("acme") == Site(
        "acme",
        "Acme",
        SitePolicy(
            enforce=True,
            grace_deadline=acme["grace_deadline"],
            changed_by=acme["policy_changed_by"],
            changed_at=acme["policy_changed_at"],
            methods=MethodPolicy.ANY,
        ),
    )
    assert await directory.site("solo") == Site("solo", solo["name"])
    for site in ("acme", "solo"):
        assert await directory.members(site) == [
            Member(user, role) for s, user, role in sorted(MEMBERS) if s == site
        ]
    devices = SQLDeviceStore.sharing(store)
    for device in DEVICES:
        # Remembered before the kit kept the User-Agent: none (its English name is shown).
        assert device.user_agent is None
        assert await devices.devices(device.user_id) == [device]


async def test_workers_starting_at_once_on_the_previous_releases_database_end_at_the_head(
    previous: Database,
) -> None:
    """One migrates, the others wait for its lock and find the head: no error, each secret
    moved once."""
    workers = [previous.store(auto_migrate=True) for _ in range(WORKERS)]
    try:
        summaries = await asyncio.gather(
            *(worker.summary(user.user_id) for worker in workers for user in USERS)
        )
        assert [s.enrolled for s in summaries] == [user.enrolled for user in USERS] * WORKERS
        async with workers[0].engine.connect() as conn:
            owners = (await conn.execute(select(authenticators.c.user_id))).scalars().all()
        assert sorted(owners) == sorted(user.user_id for user in ENROLLED)
        await every_row_is_found(workers[0])
    finally:
        for worker in workers:
            await worker.close()
    assert await version(previous) == HEAD


async def test_a_migration_in_flight_holds_another_worker_off(previous: Database) -> None:
    """While one worker holds the migration lock, another cannot begin migrating (here it gives
    up after a short wait); once the lock is free, it finds the work to do and does it."""
    impatient = (
        {"server_settings": {**previous.connect_args["server_settings"], "lock_timeout": "50ms"}}
        if previous.postgres
        else {"timeout": 0.05}
    )
    holder = previous.engine()
    store = SQLStore(previous.url, auto_migrate=True, connect_args=impatient)
    try:
        async with holder.connect() as conn:
            await conn.begin()
            if previous.postgres:
                lock = text("SELECT pg_advisory_xact_lock(:key)")
                await conn.execute(lock, {"key": migrations.LOCK_KEY})
            else:
                await conn.exec_driver_sql("BEGIN IMMEDIATE")
            # SQLite: "database is locked", a StoreUnavailable (503); PostgreSQL: the lock
            # timeout the test set, as the driver says it.
            with pytest.raises((StoreUnavailable, sa_exc.DBAPIError)) as refused:
                await store.summary("alice@acme.test")
            cause = refused.value.__cause__ or refused.value
            assert re.search("database is locked|lock timeout", str(cause))
            await conn.rollback()
        assert (await store.summary("alice@acme.test")).enrolled
    finally:
        await store.close()
        await holder.dispose()
    assert await version(previous) == HEAD


async def test_a_database_behind_is_refused_until_migrated(previous: Database) -> None:
    """Without auto_migrate (PostgreSQL's default) every call fails closed, naming the command,
    and nothing is changed; once migrated, the same store works on its next call."""
    store = previous.store() if previous.postgres else previous.store(auto_migrate=False)
    try:
        for _ in range(2):
            with pytest.raises(ConfigurationError, match="run `mfa-guard migrate`"):
                await store.summary("alice@acme.test")
        assert await version(previous) is None
        assert "secret" in await on(previous, columns_of, "mfa_guard_enrolments")

        other = previous.store()
        try:
            assert (await other.migrate()).action == "upgraded"
        finally:
            await other.close()
        assert (await store.summary("alice@acme.test")).enrolled
    finally:
        await store.close()


async def test_sqlite_migrates_on_first_use_by_default(tmp_path: Path) -> None:
    """SQLite is one host's file, most often a development or demo database: migrated by the
    first store that opens it."""
    url = sqlite_url(tmp_path)
    await make_previous_release_database(url, {})
    store = SQLStore(url)
    try:
        assert (await store.summary("alice@acme.test")).enrolled
    finally:
        await store.close()
    assert await version(Database(url, {})) == HEAD


async def test_sqlite_with_foreign_keys_on_loses_no_row_to_the_copy_of_a_table(
    tmp_path: Path,
) -> None:
    """An app's engine with ``PRAGMA foreign_keys=ON``: dropping the enrolments table SQLite
    copied to drop two columns would delete every recovery code and authenticator through
    ``ON DELETE CASCADE``; the kit turns the pragma off for its run, and back on."""
    url = sqlite_url(tmp_path)
    await make_previous_release_database(url, {})
    engine = create_async_engine(url)

    @event.listens_for(engine.sync_engine, "connect")
    def foreign_keys_on(dbapi_connection: Any, record: Any) -> None:
        dbapi_connection.execute("PRAGMA foreign_keys=ON")

    store = SQLStore(engine=engine)
    try:
        assert (await store.migrate()).action == "upgraded"
        await every_row_is_found(store)
        async with engine.connect() as conn:
            assert (await conn.exec_driver_sql("PRAGMA foreign_keys")).scalar() == 1
    finally:
        await store.close()
        await engine.dispose()


async def test_the_copy_of_a_table_refuses_to_run_with_foreign_keys_on(tmp_path: Path) -> None:
    """An application's own Alembic running mfa_guard_0005 with the pragma on is stopped before
    it copies anything."""
    database = Database(sqlite_url(tmp_path), {})
    await on(database, migrations.run_command, "upgrade", "mfa_guard_0004")

    def upgrade_with_foreign_keys(conn: Connection) -> None:
        conn.exec_driver_sql("PRAGMA foreign_keys=ON")
        migrations.run_command(conn, "upgrade", "head")

    with pytest.raises(RuntimeError, match="PRAGMA foreign_keys=OFF"):
        await on(database, upgrade_with_foreign_keys)
    assert await version(database) == "mfa_guard_0004"


async def test_a_database_behind_at_a_revision_is_migrated_from_it(database: Database) -> None:
    await on(database, migrations.run_command, "upgrade", "mfa_guard_0003")
    store = database.store()
    try:
        assert await store.migrate() == migrations.Outcome("upgraded", "mfa_guard_0003", HEAD)
        assert await store.migrate() == migrations.Outcome("none", HEAD, HEAD)
    finally:
        await store.close()
    assert await on(database, differences, metadata) == []


async def test_the_browsers_remembered_before_0006_stay_without_a_user_agent(
    database: Database,
) -> None:
    """A database at mfa_guard_0005 with remembered browsers: upgraded, each is kept as it was,
    its ``user_agent`` NULL (its English name is shown); one remembered after keeps its
    User-Agent. Downgraded to 0005, every browser stays remembered, the column gone."""

    def remember_before(conn: Connection) -> None:
        rows = [
            {column.name: getattr(device, column.name) for column in PREVIOUS_DEVICES.columns}
            for device in DEVICES
        ]
        conn.execute(PREVIOUS_DEVICES.insert(), rows)

    await on(database, migrations.run_command, "upgrade", "mfa_guard_0005")
    await on(database, remember_before)
    store = database.store()
    try:
        assert await store.migrate() == migrations.Outcome("upgraded", "mfa_guard_0005", HEAD)
        devices = SQLDeviceStore.sharing(store)
        for device in DEVICES:
            [kept] = await devices.devices(device.user_id)
            assert kept == device
            assert kept.user_agent is None
        firefox = dataclasses.replace(
            DEVICES[0], id="a" * 32, token_hash="a" * 64, last_seen_at=NOW, user_agent=FIREFOX
        )
        await devices.add(firefox, keep=10)
        assert (await devices.devices(firefox.user_id))[0] == firefox
    finally:
        await store.close()
    assert await on(database, differences, metadata) == []

    await on(database, migrations.run_command, "downgrade", "mfa_guard_0005")
    assert "user_agent" not in await on(database, columns_of, "mfa_guard_trusted_devices")

    def remembered(conn: Connection) -> list[str]:
        return list(conn.execute(select(PREVIOUS_DEVICES.c.id)).scalars())

    assert sorted(await on(database, remembered)) == sorted([firefox.id, *(d.id for d in DEVICES)])


async def test_tables_of_this_release_but_one_without_a_version_are_completed(
    database: Database,
) -> None:
    """Made from the models by another tool, the security log left out: completed as a
    database made before migrations is, and upgraded to the head; the devices table has its
    ``user_agent`` already, which mfa_guard_0006 keeps rather than add twice."""
    tables = [t for t in metadata.sorted_tables if t.name != "mfa_guard_events"]
    await on(database, lambda conn: metadata.create_all(conn, tables=tables))
    store = database.store()
    try:
        assert await store.migrate() == migrations.Outcome("upgraded", None, HEAD)
    finally:
        await store.close()
    assert await on(database, differences, metadata) == []


async def test_tables_in_this_releases_layout_without_a_version_are_stamped(
    database: Database,
) -> None:
    """Made from the models by another tool (an application's own migrations, create_all): no
    migration is needed, and none is run, with auto_migrate off."""
    await on(database, metadata.create_all)
    store = database.store(auto_migrate=False)
    try:
        assert not (await store.summary("alice")).enrolled
    finally:
        await store.close()
    assert await version(database) == HEAD


async def test_a_revision_of_a_later_release_is_refused(database: Database) -> None:
    """The app was rolled back after a later release migrated its tables: refused, migrate
    too, rather than run on tables it does not know."""
    store = database.store()
    try:
        await store.create_all()
    finally:
        await store.close()
    later_release = "UPDATE mfa_guard_alembic_version SET version_num = 'mfa_guard_9999'"
    await on(database, lambda conn: conn.execute(text(later_release)))
    later = database.store(auto_migrate=True)
    try:
        with pytest.raises(ConfigurationError, match="mfa_guard_9999, which this release does"):
            await later.summary("alice")
        with pytest.raises(ConfigurationError, match="a later mfa_guard migrated them"):
            await later.migrate()
    finally:
        await later.close()


async def test_a_downgrade_to_the_baseline_gives_each_user_their_oldest_app_back(
    previous: Database,
) -> None:
    """The downgrades run too: back at the previous release's layout, each enrolled user's
    oldest app is the one secret it reads (the other authenticators go); up again, it moves
    back."""
    store = previous.store()
    try:
        await store.migrate()
        alice = await store.get("alice@acme.test")
        assert alice is not None
        [moved] = alice.apps
        second = Authenticator(
            id="2" * 32,
            kind=FactorKind.TOTP,
            name="Tablet",
            created_at=NOW,
            secret="t",
            last_step=3,
        )
        assert await store.add_authenticator("alice@acme.test", second, now=NOW)
    finally:
        await store.close()

    await on(previous, migrations.run_command, "downgrade", "mfa_guard_0001")
    assert await on(previous, differences, PREVIOUS) == []

    def secrets(conn: Connection) -> dict[str, tuple[Any, Any]]:
        rows = conn.execute(text("SELECT user_id, secret, last_step FROM mfa_guard_enrolments"))
        return {row.user_id: (row.secret, row.last_step) for row in rows}

    back = await on(previous, secrets)
    assert back["alice@acme.test"] == (moved.secret, moved.last_step)
    for user in USERS:
        secret, step = back[user.user_id]
        assert (secret and BOX.decrypt(secret), step) == (user.secret, user.last_step)

    again = previous.store()
    try:
        assert (await again.migrate()).before == "mfa_guard_0001"
        alice = await again.get("alice@acme.test")
        assert alice is not None
        assert [app.secret for app in alice.apps] == [moved.secret]
    finally:
        await again.close()


# -- mfa-guard migrate ---------------------------------------------------------------------------


def test_migrate_brings_the_previous_releases_sqlite_database_to_the_head(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    url = sqlite_url(tmp_path)
    asyncio.run(make_previous_release_database(url, {}))

    assert main(["migrate", "--database-url", url]) == 0
    assert f"migrated from a release before migrations to {HEAD}" in capsys.readouterr().out
    assert main(["migrate", "--database-url", url]) == 0
    assert main(["init-db", "--database-url", url]) == 0
    out = capsys.readouterr().out
    assert out.count(f"at revision {HEAD}, this release's: nothing to do") == 2
    with sqlite3.connect(tmp_path / "mfa.db") as db:
        [(stamped,)] = db.execute("SELECT version_num FROM mfa_guard_alembic_version")
        apps = db.execute("SELECT count(*) FROM mfa_guard_authenticators").fetchone()
    assert (stamped, apps) == (HEAD, (len(ENROLLED),))


@pytest.mark.postgres
def test_migrate_brings_the_previous_releases_postgres_database_to_the_head(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with fresh_database("mfa_guard_migrate") as url:
        asyncio.run(make_previous_release_database(url, {}))
        assert main(["migrate", "--database-url", url]) == 0
        assert "migrated from a release before migrations" in capsys.readouterr().out

        async def check() -> None:
            store = SQLStore(url, create_tables=True)
            try:
                await every_row_is_found(store)
            finally:
                await store.close()

        asyncio.run(check())


def test_migrate_says_when_it_is_refused_or_the_database_is_down(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["migrate", "--database-url", "postgresql+asyncpg://postgres@127.0.0.1:1/x"]) == 1
    assert "the database is unavailable" in capsys.readouterr().err
    url = sqlite_url(tmp_path)
    assert main(["migrate", "--database-url", url]) == 0
    with sqlite3.connect(tmp_path / "mfa.db") as db:
        db.execute("UPDATE mfa_guard_alembic_version SET version_num = 'mfa_guard_9999'")
    assert main(["migrate", "--database-url", url]) == 1
    assert "a later mfa_guard migrated them" in capsys.readouterr().err


def test_migrate_sql_prints_the_upgrade_for_a_dba(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # From nothing, on PostgreSQL, without reaching the server.
    unreachable = "postgresql+asyncpg://postgres@127.0.0.1:1/x"
    assert main(["migrate", "--sql", "--from", "base", "--database-url", unreachable]) == 0
    sql = capsys.readouterr().out
    assert "CREATE TABLE mfa_guard_enrolments" in sql
    assert "INSERT INTO mfa_guard_alembic_version (version_num) VALUES ('mfa_guard_0001')" in sql
    assert "ALTER TABLE mfa_guard_enrolments DROP COLUMN secret" in sql
    # From the revision the database is at (read only): the rest.
    url = sqlite_url(tmp_path)
    asyncio.run(on(Database(url, {}), migrations.run_command, "upgrade", "mfa_guard_0004"))
    assert main(["migrate", "--sql", "--database-url", url]) == 0
    sql = capsys.readouterr().out
    assert "INSERT INTO mfa_guard_authenticators" in sql
    assert "ALTER TABLE mfa_guard_trusted_devices ADD COLUMN user_agent VARCHAR(1024)" in sql
    assert "CREATE TABLE mfa_guard_events" not in sql
    assert asyncio.run(version(Database(url, {}))) == "mfa_guard_0004"


@pytest.mark.parametrize(
    ("arguments", "code", "problem"),
    [
        (["--from", "mfa_guard_0001"], 2, "--from goes with --sql"),
        (["--sql", "--from", "nothing"], 2, "nothing is no revision of mfa_guard's"),
        (["--sql"], 2, "run mfa-guard migrate once"),
    ],
)
def test_migrate_refuses_what_it_cannot_do(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    arguments: list[str],
    code: int,
    problem: str,
) -> None:
    url = sqlite_url(tmp_path)
    asyncio.run(make_previous_release_database(url, {}))
    assert main(["migrate", *arguments, "--database-url", url]) == code
    assert problem in capsys.readouterr().err


# -- an application's own Alembic ----------------------------------------------------------------

APP_INI = """\
[alembic]
script_location = %(here)s/migrations
# The application's revisions, and the kit's branch from the installed package.
version_locations = %(here)s/migrations/versions mfa_guard.stores.sql.migrations:versions
path_separator = space
sqlalchemy.url = {url}
"""

APP_REVISION = '''\
"""notes

Revision ID: app_0001
"""

import sqlalchemy as sa
from alembic import op

revision = "app_0001"
down_revision = None
branch_labels = ("app",)
depends_on = None


def upgrade():
    op.create_table("app_notes", sa.Column("id", sa.Integer, primary_key=True))


def downgrade():
    op.drop_table("app_notes")
'''


APP_MODELS = """\
import sqlalchemy as sa
from sqlalchemy.orm import DeclarativeBase


class Base(DeclarativeBase):
    pass


sa.Table("app_notes", Base.metadata, sa.Column("id", sa.Integer, primary_key=True))
"""


def app_env() -> str:
    """The env.py docs/deployment.md shows an application."""
    page = (ROOT / "docs" / "deployment.md").read_text(encoding="utf-8")
    match = re.search(r"```python\n(# migrations/env\.py.*?)```", page, re.S)
    assert match, "docs/deployment.md shows the application's env.py"
    return match.group(1)


@pytest.fixture
def app_alembic(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[Any, str]]:
    """An application's Alembic (a sync SQLite engine, as its template makes), with a revision
    of its own and the kit's branch in its version_locations; its Config and the async URL."""
    from alembic.config import Config

    (tmp_path / "migrations" / "versions").mkdir(parents=True)
    (tmp_path / "migrations" / "env.py").write_text(app_env())
    (tmp_path / "migrations" / "versions" / "app_0001_notes.py").write_text(APP_REVISION)
    (tmp_path / "myapp").mkdir()
    (tmp_path / "myapp" / "__init__.py").write_text("")
    (tmp_path / "myapp" / "models.py").write_text(APP_MODELS)
    ini = tmp_path / "alembic.ini"
    ini.write_text(APP_INI.format(url=f"sqlite:///{tmp_path}/mfa.db"))
    config = Config(str(ini))
    monkeypatch.syspath_prepend(str(tmp_path))  # the app's models, as its env.py imports them
    yield config, sqlite_url(tmp_path)
    for module in ("myapp.models", "myapp"):
        sys.modules.pop(module, None)


async def test_an_applications_alembic_includes_the_kits_branch(
    app_alembic: tuple[Any, str],
) -> None:
    from alembic import command

    config, url = app_alembic
    command.upgrade(config, "heads")

    database = Database(url, {})
    state = await on(database, migrations.read_state)
    assert (state.version, state.app_version) == (None, HEAD)
    assert await on(database, differences, metadata) == []
    # The app's autogenerate leaves the kit's tables alone (its include_name): nothing to do.
    command.check(config)
    # The store finds its revision in the application's table, and adds no table of its own.
    store = SQLStore(url)
    try:
        assert not (await store.summary("alice")).enrolled
    finally:
        await store.close()
    tables = await on(database, lambda conn: inspect(conn).get_table_names())
    assert migrations.VERSION_TABLE not in tables
    assert {"app_notes", "mfa_guard_enrolments"} <= set(tables)

    # The kit's branch behind in the app's table: refused, naming the app's migrations, and
    # never migrated by the store, even with auto_migrate.
    command.downgrade(config, "mfa_guard_0004")
    behind = SQLStore(url, auto_migrate=True)
    try:
        with pytest.raises(ConfigurationError, match="alembic upgrade heads"):
            await behind.summary("alice")
    finally:
        await behind.close()
    command.upgrade(config, "heads")
    assert (await on(database, migrations.read_state)).app_version == HEAD


# -- the docs ----------------------------------------------------------------------------------


def test_docs_stores_lists_every_column_of_every_table() -> None:
    """docs/stores.md's table of the tables names each one's columns in the models' order."""
    page = (ROOT / "docs" / "stores.md").read_text(encoding="utf-8")
    section = page.split("\n### The tables\n", 1)[1].split("\n#", 1)[0]
    rows = re.findall(r"^\| `(mfa_guard_\w+)` \| ([^|]+) \|", section, re.M)
    listed = {name: re.findall(r"`(\w+)`", cells) for name, cells in rows}
    assert len(rows) == len(listed), "each table listed once"
    assert listed == {name: list(table.c.keys()) for name, table in metadata.tables.items()}
