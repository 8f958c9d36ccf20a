"""The base of the SQL adapters (store, site directory, device store, event store), and the one
way for them to share an engine: :meth:`SQLAdapter.sharing`."""

from __future__ import annotations

from typing import Any, Self

from sqlalchemy.ext.asyncio import AsyncEngine

from mfa_guard.stores.sql.engine import Database


class SQLAdapter:
    """What the SQL store, site directory, device store and event store share: built from a
    database ``url`` with engine options, or a shared ``engine`` it never disposes, or with
    :meth:`sharing` on another adapter's engine (its pool, lock and table creation)."""

    _db: Database
    _owns_db: bool

    def __init__(
        self,
        url: str | None = None,
        *,
        engine: AsyncEngine | None = None,
        create_tables: bool = True,
        **engine_options: Any,
    ) -> None:
        self._db = Database(
            type(self).__name__,
            url,
            engine,
            create_tables=create_tables,
            engine_options=engine_options,
        )
        self._owns_db = True

    @classmethod
    def sharing(cls, other: SQLAdapter) -> Self:
        """One on ``other``'s engine, with its connection pool, lock and table creation (as
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
        """Create the tables that do not exist yet (what ``create_tables`` does on first use)."""
        await self._db.create_all()

    async def close(self) -> None:
        """Dispose of the engine's connections, if this created the engine (one built with
        :meth:`sharing` leaves that to the adapter it shares with)."""
        if self._owns_db:
            await self._db.close()
