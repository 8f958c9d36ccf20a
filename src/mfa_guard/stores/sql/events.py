"""The security log on SQL (:class:`SQLEventStore`): the audit events, in the table
:data:`~mfa_guard.stores.sql.schema.event_log` (``mfa_guard_events``) beside the enrolments.

An append is one ``INSERT … RETURNING id`` built once; a read is one ``SELECT`` whose ``WHERE``
is :meth:`EventQuery.matches <mfa_guard.stores.events.EventQuery.matches>` written in SQL,
newest (highest id) first; a purge is one ``DELETE``. A row whose ``kind`` this release does
not know (a later release wrote it, and the app was rolled back) is left out by the ``WHERE``
itself, so a page is still full and the cursor walks past it.
"""

from __future__ import annotations

import json
from collections.abc import Collection
from typing import Any

from sqlalchemy import String, and_, any_, false, func, literal, or_, select
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.sql.elements import ColumnElement

from mfa_guard.events import AuditEvent, EventKind
from mfa_guard.stores.events import EventQuery, StoredEvent
from mfa_guard.stores.sql.adapter import SQLAdapter
from mfa_guard.stores.sql.engine import read_all
from mfa_guard.stores.sql.schema import APPEND_EVENT, PURGE_EVENTS, event_log

__all__ = ["SQLEventStore"]

_COLUMNS = (
    event_log.c.id,
    event_log.c.kind,
    event_log.c.user_id,
    event_log.c.at,
    event_log.c.method,
    event_log.c.client_ip,
    event_log.c.site,
    event_log.c.detail,
    event_log.c.user_agent,
)
# The kinds a read returns when it names none: every kind this release knows.
_KNOWN_KINDS = frozenset(EventKind)


class SQLEventStore(SQLAdapter):
    """The security log through SQLAlchemy's asyncio engine, on SQLite or PostgreSQL.

    Built like :class:`~mfa_guard.stores.sql.SQLStore` (a ``url`` with engine options, or a
    shared ``engine``), or with :meth:`sharing` to use a store's engine
    (``SQLEventStore.sharing(store)``); the table is made on first use with the others.
    Backend failures raise :class:`~mfa_guard.errors.StoreUnavailable`.

    Ids come from the database (SQLite's ``AUTOINCREMENT``, a PostgreSQL sequence): they grow
    with each append and are never given again, even after a purge. On PostgreSQL two appends
    at the same moment may commit in the other order than their ids; a page read in that
    instant may miss the lower one, which the next read of the newest events shows.
    """

    async def append(self, event: AuditEvent) -> int:
        params = {
            "kind": event.kind.value,
            "uid": event.user_id,
            "at": float(event.at),
            "method": event.method,
            "client_ip": event.client_ip,
            "site": event.site,
            "detail": event.detail,
            "user_agent": event.user_agent,
        }
        # Not retried: a second run after a first that reached the server keeps it twice.
        rows = await self._db.rows(APPEND_EVENT, params, retry=False)
        return int(rows[0]["id"])

    async def events(self, query: EventQuery) -> list[StoredEvent]:
        statement = (
            select(*_COLUMNS)
            .where(*self._conditions(query))
            .order_by(event_log.c.id.desc())
            .limit(query.limit)
        )
        rows = await self._db.run(statement, {}, read_all, retry=True)
        return [_stored(row) for row in rows]

    async def purge(self, before: float) -> int:
        # Not retried: a second run would report 0 of the events the first removed.
        return await self._db.count(PURGE_EVENTS, {"before": float(before)}, retry=False)

    def _conditions(self, query: EventQuery) -> list[ColumnElement[bool]]:
        """:meth:`EventQuery.matches`, as the ``WHERE`` of one ``SELECT``."""
        c = event_log.c
        users = self._among(c.user_id, query.users)
        if query.site is not None:
            mine = or_(c.site == query.site, and_(c.site.is_(None), users))
        else:
            mine = users
        kinds = _KNOWN_KINDS if query.kinds is None else query.kinds
        conditions = [mine, self._among(c.kind, sorted(kind.value for kind in kinds))]
        if query.member is not None:
            conditions.append(c.user_id == query.member)
        if query.since is not None:
            conditions.append(c.at >= query.since)
        if query.until is not None:
            conditions.append(c.at < query.until)
        if query.before is not None:
            conditions.append(c.id < query.before)
        return conditions

    def _among(self, column: ColumnElement[str], values: Collection[str]) -> ColumnElement[bool]:
        """``column`` is one of ``values``; none matches none. The values go as one parameter
        (PostgreSQL: ``= ANY`` of an array; SQLite: ``IN`` the rows of ``json_each``), so a
        site of any size is one statement within the drivers' limits of parameters (32767
        for asyncpg, 32766 for SQLite), and the same statement whatever its number of
        members."""
        if not values:
            return false()
        if self._db.is_postgresql:
            return column == any_(literal(list(values), ARRAY(String)))
        listed = func.json_each(literal(json.dumps(list(values)))).table_valued("value")
        return column.in_(select(listed.c.value))


def _stored(row: Any) -> StoredEvent:
    event = AuditEvent(
        kind=EventKind(row.kind),
        user_id=row.user_id,
        at=float(row.at),
        method=row.method,
        client_ip=row.client_ip,
        site=row.site,
        detail=row.detail,
        user_agent=row.user_agent,
    )
    return StoredEvent(int(row.id), event)
