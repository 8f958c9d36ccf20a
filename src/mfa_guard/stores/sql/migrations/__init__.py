"""The kit's tables under Alembic: its own migrations, and how a database gets to their head.

The revisions (``versions/``) are one lineage with the branch label ``mfa_guard``, each named
``mfa_guard_NNNN``, kept in a version table of their own, ``mfa_guard_alembic_version``, so they
never meet an application's ``alembic_version``. An application whose own Alembic includes the
branch (its ``version_locations`` lists ``mfa_guard.stores.sql.migrations:versions``) keeps them
in its own table instead; the kit finds its revision there too, by the name, and then leaves the
upgrade to the application.

:func:`prepare` is what an adapter runs on first use and ``mfa-guard migrate`` runs on demand,
in one transaction under a lock every worker takes (PostgreSQL: an advisory transaction lock;
SQLite: ``BEGIN IMMEDIATE``), each reading the state again once it holds it:

- at this release's head: nothing to do (the one read every later start makes);
- no table of the kit's: the tables are created as the models say and stamped at the head (the
  compare test proves the models and the migrations agree);
- made before migrations (tables, no version): if the layout is already the head's, stamped;
  else, when upgrading, completed as those releases did (:mod:`.legacy`), stamped
  ``mfa_guard_0004`` and upgraded; when not, refused;
- behind: upgraded when asked (``upgrade``), else refused with the command to run;
- a revision this release does not know (a later release migrated), or the branch in the
  application's own version table behind the head: refused.

A refusal is a :class:`~mfa_guard.errors.ConfigurationError` naming what to run: the adapters
fail closed until the database is migrated, and find it so on the next call.
"""

from __future__ import annotations

import functools
import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal, TextIO

from sqlalchemy import String, column, inspect, select, table, text
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from mfa_guard.errors import ConfigurationError
from mfa_guard.stores.sql.migrations import legacy
from mfa_guard.stores.sql.schema import metadata

if TYPE_CHECKING:
    from alembic.config import Config
    from alembic.script import ScriptDirectory

logger = logging.getLogger("mfa_guard")

BRANCH = "mfa_guard"
VERSION_TABLE = "mfa_guard_alembic_version"
# Alembic's default name, which an application that includes the branch keeps it in.
APP_VERSION_TABLE = "alembic_version"
# Every revision of the kit's is named so: how its row is told apart in another version table,
# and one this release does not know is known as a later release's.
REVISION_PREFIX = "mfa_guard_"
SCRIPT_LOCATION = "mfa_guard.stores.sql:migrations"
VERSION_LOCATION = "mfa_guard.stores.sql.migrations:versions"
# The key of the advisory lock every worker takes on PostgreSQL before it reads the state
# again ("mfa_guar" in ASCII): the same for every schema of the database, which costs a wait
# at most.
LOCK_KEY = 0x6D66615F67756172
KIT_TABLES = frozenset(legacy.LAYOUT.tables) | frozenset(metadata.tables)

Action = Literal["none", "created", "stamped", "upgraded"]


@dataclass(frozen=True, slots=True)
class Outcome:
    """What :func:`prepare` did: from which revision (``None``: none, the database was empty or
    made before migrations) to which."""

    action: Action
    before: str | None
    after: str


@dataclass(frozen=True, slots=True)
class SchemaState:
    """The kit's tables present, and its revision in its own version table and in the
    application's (each ``None`` where there is none)."""

    tables: frozenset[str]
    version: str | None
    app_version: str | None

    @property
    def empty(self) -> bool:
        return not self.tables and self.version is None and self.app_version is None


def alembic_config(url: str | None = None, *, output: TextIO | None = None) -> Config:
    """An Alembic configuration of the kit's environment (``env.py``); ``url`` is only read
    offline (``--sql``), online the kit passes its connection."""
    from alembic.config import Config

    config = Config(output_buffer=output)
    config.set_main_option("script_location", SCRIPT_LOCATION)
    if url is not None:
        # The configuration is a ConfigParser: a percent sign of the URL is written doubled.
        config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return config


@functools.cache
def script() -> ScriptDirectory:
    from alembic.script import ScriptDirectory

    return ScriptDirectory.from_config(alembic_config())


def head() -> str:
    """The revision this release's tables are at."""
    found = script().get_current_head()
    if found is None:  # pragma: no cover - the package ships its revisions
        raise ConfigurationError("mfa_guard's migrations are missing from the package")
    return found


def known(revision: str) -> bool:
    return revision in {each.revision for each in script().walk_revisions()}


def read_state(conn: Connection) -> SchemaState:
    names = set(inspect(conn).get_table_names())
    version = app_version = None
    if VERSION_TABLE in names:
        version = next(iter(_versions(conn, VERSION_TABLE)), None)
    if APP_VERSION_TABLE in names:
        app_version = next(
            (v for v in _versions(conn, APP_VERSION_TABLE) if v.startswith(REVISION_PREFIX)),
            None,
        )
    return SchemaState(frozenset(names & KIT_TABLES), version, app_version)


def _versions(conn: Connection, name: str) -> list[str]:
    query = select(column("version_num", String)).select_from(table(name))
    return list(conn.execute(query).scalars())


async def prepare(engine: AsyncEngine, *, upgrade: bool) -> Outcome:
    """Gets the database of ``engine`` to this release's head, or refuses (module docstring);
    ``upgrade`` allows migrating tables that exist. Safe with any number of workers at once."""
    async with engine.connect() as conn:
        state = await conn.run_sync(read_state)
        await conn.rollback()
        target = head()
        if target in (state.version, state.app_version):
            return Outcome("none", target, target)
        if engine.dialect.name == "sqlite":
            return await _on_sqlite(conn, upgrade)
        async with conn.begin():
            await conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": LOCK_KEY})
            # A statement timeout meant for requests (the engine's, the role's) may stop a wait
            # for the lock, not the migration it guards: all of its work would roll back.
            await conn.execute(text("SET LOCAL statement_timeout = 0"))
            return await conn.run_sync(_prepare_locked, upgrade)


async def _on_sqlite(conn: AsyncConnection, upgrade: bool) -> Outcome:
    """SQLite: the write lock from the transaction's start (a second worker waits for it, its
    busy timeout long), and ``foreign_keys`` off meanwhile, which cannot change within a
    transaction: copying a table to alter it drops the old one, which with the pragma on
    would delete every row referring to it."""
    foreign_keys = (await conn.exec_driver_sql("PRAGMA foreign_keys")).scalar()
    if foreign_keys:
        await conn.exec_driver_sql("PRAGMA foreign_keys=OFF")
    await conn.commit()
    try:
        async with conn.begin():
            await conn.exec_driver_sql("BEGIN IMMEDIATE")
            return await conn.run_sync(_prepare_locked, upgrade)
    finally:
        if foreign_keys:
            await conn.exec_driver_sql("PRAGMA foreign_keys=ON")
            await conn.commit()


def _prepare_locked(conn: Connection, upgrade: bool) -> Outcome:
    state = read_state(conn)
    target = head()
    if target in (state.version, state.app_version):
        return Outcome("none", target, target)
    if state.app_version is not None:
        raise ConfigurationError(
            f"the mfa_guard tables of this database are at revision {state.app_version} in "
            f"the application's {APP_VERSION_TABLE}, and this release needs {target}: run the "
            "application's migrations (alembic upgrade heads)"
        )
    if state.version is not None and not known(state.version):
        raise ConfigurationError(
            f"the mfa_guard tables of this database are at revision {state.version}, which "
            f"this release does not know (it knows up to {target}): a later mfa_guard migrated "
            "them; run that release (or downgrade the database with its mfa-guard migrate)"
        )
    if state.empty:
        metadata.create_all(conn)
        _stamp(conn, target)
        return Outcome("created", None, target)
    if state.version is None:
        if _has_head_layout(conn):
            _stamp(conn, target)
            return Outcome("stamped", None, target)
        if not upgrade:
            raise ConfigurationError(
                "the mfa_guard tables of this database were made by a release before "
                f"migrations, and this release needs them at {target}: run `mfa-guard "
                "migrate` (or set MFA_GUARD_DATABASE_AUTO_MIGRATE=true)"
            )
        legacy.complete(conn)
        _stamp(conn, legacy.REVISION)
    elif not upgrade:
        raise ConfigurationError(
            f"the mfa_guard tables of this database are at revision {state.version}, and this "
            f"release needs {target}: run `mfa-guard migrate` (or set "
            "MFA_GUARD_DATABASE_AUTO_MIGRATE=true)"
        )
    run_command(conn, "upgrade", "head")
    logger.warning(
        "mfa_guard migrated its tables from %s to %s",
        state.version or "a release before migrations",
        target,
    )
    return Outcome("upgraded", state.version, target)


def _has_head_layout(conn: Connection) -> bool:
    """Every table of the models there, each with exactly the models' columns."""
    inspector = inspect(conn)
    names = set(inspector.get_table_names())
    return all(
        name in names
        and {column["name"] for column in inspector.get_columns(name)} == set(model.c.keys())
        for name, model in metadata.tables.items()
    )


def _stamp(conn: Connection, revision: str) -> None:
    run_command(conn, "stamp", revision)


def run_command(
    conn: Connection, command_name: Literal["upgrade", "downgrade", "stamp"], revision: str
) -> None:
    """An Alembic command on ``conn``, within its transaction (``env.py`` joins it)."""
    from alembic import command

    config = alembic_config()
    config.attributes["connection"] = conn
    getattr(command, command_name)(config, revision)


def offline_sql(url: str, start: str | None, output: TextIO) -> None:
    """Writes to ``output`` the SQL that upgrades a database of ``url``'s dialect from
    ``start`` (``None``: an empty one) to the head, for a DBA to run."""
    from alembic import command

    command.upgrade(
        alembic_config(url, output=output), f"{start}:head" if start else "head", sql=True
    )
