"""Trusted devices in a SQL database, beside the enrolments (SQLite or PostgreSQL).

The table ``mfa_guard_trusted_devices`` lives on :data:`mfa_guard.stores.sql.metadata` once this
module is imported (``mfa-guard init-db`` imports it): an Alembic ``target_metadata`` that should
manage it imports this module too.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import Column, Double, Index, Integer, String, Table, delete, or_, select, update
from sqlalchemy.ext.asyncio import AsyncEngine

from mfa_guard.stores.devices import TrustedDevice
from mfa_guard.stores.sql import (
    SQLStore,
    _all,
    _first,
    _rowcount,
    _SQLAdapter,
    metadata,
)

trusted_devices = Table(
    "mfa_guard_trusted_devices",
    metadata,
    # The public id the user revokes a device by; never the token.
    Column("id", String(32), primary_key=True),
    Column("user_id", String(255), nullable=False),
    # SHA-256 of the cookie's token (hex).
    Column("token_hash", String(64), nullable=False, unique=True),
    Column("name", String(128), nullable=False),
    Column("created_at", Double, nullable=False),
    Column("last_seen_at", Double, nullable=False),
    Column("expires_at", Double, nullable=False),
    Column("epoch", Integer, nullable=False),
    Index("ix_mfa_guard_trusted_devices_user_id", "user_id"),
)

_COLUMNS = (
    trusted_devices.c.id,
    trusted_devices.c.user_id,
    trusted_devices.c.token_hash,
    trusted_devices.c.name,
    trusted_devices.c.created_at,
    trusted_devices.c.last_seen_at,
    trusted_devices.c.expires_at,
    trusted_devices.c.epoch,
)
_NEWEST_FIRST = (
    trusted_devices.c.last_seen_at.desc(),
    trusted_devices.c.created_at.desc(),
    trusted_devices.c.id.desc(),
)


class SQLDeviceStore(_SQLAdapter):
    """Trusted devices through SQLAlchemy's asyncio engine.

    Built like :class:`~mfa_guard.stores.sql.SQLStore` (a ``url`` with engine options, or a
    shared ``engine``), or with :meth:`sharing` to use a store's engine. Backend failures raise
    :class:`~mfa_guard.errors.StoreUnavailable`.
    """

    def __init__(
        self,
        url: str | None = None,
        *,
        engine: AsyncEngine | None = None,
        create_tables: bool = True,
        **engine_options: Any,
    ) -> None:
        super().__init__(url, engine=engine, create_tables=create_tables, **engine_options)
        self._table_ready = not create_tables

    @classmethod
    def sharing(cls, store: SQLStore) -> SQLDeviceStore:
        """The devices in ``store``'s database, on its engine (and lock and table creation);
        closing this leaves the engine to the store."""
        devices = cls._sharing(store._db)
        devices._table_ready = False
        return devices

    async def create_all(self) -> None:
        await super().create_all()
        self._table_ready = True

    async def _ready(self) -> None:
        # A store sharing its engine may have created its tables before this module was
        # imported: the devices' table is then created here, once, if tables are created at all.
        if not self._table_ready:
            if self._db._create_tables:
                await self._db.create_all()
            self._table_ready = True

    async def add(self, device: TrustedDevice, *, keep: int) -> None:
        await self._ready()
        mine = trusted_devices.c.user_id == device.user_id
        kept = (
            select(trusted_devices.c.id)
            .where(mine, trusted_devices.c.id != device.id)
            .order_by(*_NEWEST_FIRST)
            .limit(max(keep, 1) - 1)
        )
        overflow = delete(trusted_devices).where(
            mine, trusted_devices.c.id != device.id, trusted_devices.c.id.not_in(kept)
        )
        async with self._db.transaction() as conn:
            await conn.execute(overflow)
            await conn.execute(
                trusted_devices.insert().values(
                    id=device.id,
                    user_id=device.user_id,
                    token_hash=device.token_hash,
                    name=device.name,
                    created_at=device.created_at,
                    last_seen_at=device.last_seen_at,
                    expires_at=device.expires_at,
                    epoch=device.epoch,
                )
            )

    async def recognise(self, user_id: str, token_hash: str, now: float) -> TrustedDevice | None:
        await self._ready()
        statement = (
            update(trusted_devices)
            .where(
                trusted_devices.c.user_id == user_id,
                trusted_devices.c.token_hash == token_hash,
                trusted_devices.c.expires_at > now,
            )
            .values(last_seen_at=now)
            .returning(*_COLUMNS)
        )
        # Writing the same instant twice is writing it once: retried.
        row = await self._db.run(statement, {}, _first, retry=True)
        return None if row is None else _device(row)

    async def devices(self, user_id: str) -> list[TrustedDevice]:
        await self._ready()
        query = select(*_COLUMNS).where(trusted_devices.c.user_id == user_id)
        rows = await self._db.run(query.order_by(*_NEWEST_FIRST), {}, _all, retry=True)
        return [_device(row) for row in rows]

    async def remove(self, user_id: str, device_id: str) -> bool:
        await self._ready()
        statement = delete(trusted_devices).where(
            trusted_devices.c.user_id == user_id, trusted_devices.c.id == device_id
        )
        # Not retried: a second run would report "no such device" of one it just removed.
        return await self._db.run(statement, {}, _rowcount, retry=False) == 1

    async def remove_all(self, user_id: str) -> int:
        await self._ready()
        statement = delete(trusted_devices).where(trusted_devices.c.user_id == user_id)
        return await self._db.run(statement, {}, _rowcount, retry=False)

    async def remove_untrusted(self, user_id: str, epoch: int, now: float) -> int:
        await self._ready()
        statement = delete(trusted_devices).where(
            trusted_devices.c.user_id == user_id,
            or_(trusted_devices.c.epoch != epoch, trusted_devices.c.expires_at <= now),
        )
        return await self._db.run(statement, {}, _rowcount, retry=False)


def _device(row: Any) -> TrustedDevice:
    return TrustedDevice(
        id=row.id,
        user_id=row.user_id,
        token_hash=row.token_hash,
        name=row.name,
        created_at=float(row.created_at),
        last_seen_at=float(row.last_seen_at),
        expires_at=float(row.expires_at),
        epoch=int(row.epoch),
    )


__all__ = ["SQLDeviceStore", "trusted_devices"]
