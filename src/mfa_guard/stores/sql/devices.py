"""The device store on SQL (:class:`SQLDeviceStore`): the browsers a user chose to remember,
in the table :data:`~mfa_guard.stores.sql.schema.trusted_devices` beside the enrolments.

Adding a device and trimming the user's oldest beyond ``keep`` is one transaction; recognising
one is a single ``UPDATE … RETURNING`` that also marks it seen.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import delete, or_, select, update

from mfa_guard.stores.devices import TrustedDevice
from mfa_guard.stores.sql.adapter import SQLAdapter
from mfa_guard.stores.sql.engine import read_all, read_first, read_rowcount
from mfa_guard.stores.sql.schema import trusted_devices

_COLUMNS = (
    trusted_devices.c.id,
    trusted_devices.c.user_id,
    trusted_devices.c.token_hash,
    trusted_devices.c.name,
    trusted_devices.c.created_at,
    trusted_devices.c.last_seen_at,
    trusted_devices.c.expires_at,
    trusted_devices.c.epoch,
    trusted_devices.c.user_agent,
)
_NEWEST_FIRST = (
    trusted_devices.c.last_seen_at.desc(),
    trusted_devices.c.created_at.desc(),
    trusted_devices.c.id.desc(),
)


class SQLDeviceStore(SQLAdapter):
    """Trusted devices through SQLAlchemy's asyncio engine.

    Built like :class:`~mfa_guard.stores.sql.SQLStore` (a ``url`` with engine options, or a
    shared ``engine``), or with :meth:`sharing` to use a store's engine. Backend failures raise
    :class:`~mfa_guard.errors.StoreUnavailable`.
    """

    async def add(self, device: TrustedDevice, *, keep: int) -> None:
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
                    user_agent=device.user_agent,
                )
            )

    async def recognise(self, user_id: str, token_hash: str, now: float) -> TrustedDevice | None:
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
        row = await self._db.run(statement, {}, read_first, retry=True)
        return None if row is None else _device(row)

    async def devices(self, user_id: str) -> list[TrustedDevice]:
        query = select(*_COLUMNS).where(trusted_devices.c.user_id == user_id)
        rows = await self._db.run(query.order_by(*_NEWEST_FIRST), {}, read_all, retry=True)
        return [_device(row) for row in rows]

    async def remove(self, user_id: str, device_id: str) -> bool:
        statement = delete(trusted_devices).where(
            trusted_devices.c.user_id == user_id, trusted_devices.c.id == device_id
        )
        # Not retried: a second run would report "no such device" of one it just removed.
        return await self._db.run(statement, {}, read_rowcount, retry=False) == 1

    async def remove_all(self, user_id: str) -> int:
        statement = delete(trusted_devices).where(trusted_devices.c.user_id == user_id)
        return await self._db.run(statement, {}, read_rowcount, retry=False)

    async def remove_untrusted(self, user_id: str, epoch: int, now: float) -> int:
        statement = delete(trusted_devices).where(
            trusted_devices.c.user_id == user_id,
            or_(trusted_devices.c.epoch != epoch, trusted_devices.c.expires_at <= now),
        )
        return await self._db.run(statement, {}, read_rowcount, retry=False)


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
        user_agent=row.user_agent,
    )
