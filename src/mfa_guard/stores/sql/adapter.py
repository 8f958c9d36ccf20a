"""The base of the SQL adapters (store, site directory, device store, event store), and the one
way for them to share an engine: :meth:`SQLAdapter.sharing`."""

from __future__ import annotations

from typing import Any, Self

from sqlalchemy.ext.asyncio import AsyncEngine

from mfa_guard.stores.sql.engine import Database
from mfa_guard.stores.sql.migrations import Outcome


class SQLAdapter:
    """What the SQL store, site directory, device store and event store share: built from a
    database ``url`` with engine options, or a shared ``engine`` it never disposes, or with
    :meth:`sharing` on another adapter's engine (its pool, lock and schema check).

    On first use, with ``create_tables`` (the default), the kit's tables are checked once: an
    empty database gets them; tables an earlier release made are migrated to this release's
    only with ``auto_migrate`` (``None``, the default: on SQLite, not on PostgreSQL, where
    ``mfa-guard migrate`` is a deployment step), else every call raises a
    :class:`~mfa_guard.errors.ConfigurationError` naming the command until they are. Without
    ``create_tables`` the schema is left to the application (its own Alembic including the
    kit's branch, or ``mfa-guard migrate``)."""

    _db: Database
    _owns_db: bool

    def __init__(
        self,
        url: str | None = None,
        *,
        engine: AsyncEngine | None = None,
        create_tables: bool = True,
        auto_migrate: bool | None = None,
        **engine_options: Any,
    ) -> None:
        self._db = Database(
            type(self).__name__,
            url,
            engine,
            create_tables=create_tables,
            auto_migrate=auto_migrate,
            engine_options=engine_options,
        )
        self._owns_db = True

    @classmethod
    def sharing(cls, other: SQLAdapter) -> Self:
        """One on ``other``'s engine, with its connection pool, lock and schema check (as
        ``SQLSiteDirectory.sharing(store)``, ``SQLDeviceStore.sharing(store)``); closing it
        leaves the engine to ``other``."""
        adapter = cls.__new__(cls)
        adapter._db = other._db
        adapter._owns_db = False
        return adapter

    @property
    def engine(self) -> AsyncEngine:
        return self._db.engine

    async def create_all(self) -> None:
        """The schema check of the first use, now: the tables created in an empty database,
        or found at this release's revision, or migrated with ``auto_migrate``; else a
        :class:`~mfa_guard.errors.ConfigurationError` naming ``mfa-guard migrate``. Call it in
        the app's lifespan for a start-up that fails rather than requests."""
        await self._db.create_all()

    async def migrate(self) -> Outcome:
        """Brings the database to this release's revision (``mfa-guard migrate``): creates the
        tables, recognises those a release before migrations made, or runs the migrations
        after the database's revision; under a lock every worker takes, so safe to run while
        workers start. Returns what it did."""
        return await self._db.migrate()

    async def close(self) -> None:
        """Dispose of the engine's connections, if this created the engine (one built with
        :meth:`sharing` leaves that to the adapter it shares with)."""
        if self._owns_db:
            await self._db.close()
