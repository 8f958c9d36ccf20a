"""The security log: the audit events kept, for a site's owners (``GET sites/{site}/events``)
and for each user's own recent activity (the settings page).

An :class:`EventStore` keeps every :class:`~mfa_guard.events.AuditEvent` the kit publishes once
``MFAGuard(event_store=...)`` is given (:class:`StoringSink` appends them); events hold no code,
secret or phone number by construction, so neither does the log. Each stored event gets an id
that grows with each append: the log reads newest first, and the id of the last event of a
page is the cursor of the next (``before``). Events older than the retention
(``MFA_GUARD_EVENTS__RETENTION_DAYS``) go with :meth:`EventStore.purge` (``mfa-guard
purge-events``).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Protocol

from mfa_guard.events import AuditEvent, EventKind, EventSink

__all__ = ["EventQuery", "EventStore", "MemoryEventStore", "StoredEvent", "StoringSink"]

# The most events one read returns.
MAX_EVENTS_PER_PAGE = 200


@dataclass(frozen=True, slots=True)
class StoredEvent:
    """One event of the log and its id (the cursor: ids grow with each append)."""

    id: int
    event: AuditEvent


@dataclass(frozen=True, slots=True)
class EventQuery:
    """Which events to read, newest first.

    With ``site``: a site's log, the events of that site (``event.site == site``) and the
    events naming no site (a user's own: sign-ins, factors, lock-outs) of the users in
    ``users`` (its members). Without ``site``: every event of the users in ``users`` (a user's
    own activity, the sites' events they caused included).

    The rest narrows it: ``member`` (only events whose ``user_id`` is this one), ``kinds``,
    ``since`` (``at >= since``), ``until`` (``at < until``), ``before`` (ids below it: the
    cursor) and ``limit`` (at most that many, 1 to :data:`MAX_EVENTS_PER_PAGE`)."""

    users: tuple[str, ...] = ()
    site: str | None = None
    member: str | None = None
    kinds: frozenset[EventKind] | None = None
    since: float | None = None
    until: float | None = None
    before: int | None = None
    limit: int = 50

    def __post_init__(self) -> None:
        if not 1 <= self.limit <= MAX_EVENTS_PER_PAGE:
            raise ValueError(f"limit must be 1 to {MAX_EVENTS_PER_PAGE}, not {self.limit}")

    def matches(self, stored: StoredEvent) -> bool:
        """Whether ``stored`` is one of the events asked for (the memory store's filter, and
        the rule the SQL one's ``WHERE`` follows)."""
        event = stored.event
        if self.site is not None:
            mine = event.site == self.site or (event.site is None and event.user_id in self.users)
        else:
            mine = event.user_id in self.users
        return (
            mine
            and (self.member is None or event.user_id == self.member)
            and (self.kinds is None or event.kind in self.kinds)
            and (self.since is None or event.at >= self.since)
            and (self.until is None or event.at < self.until)
            and (self.before is None or stored.id < self.before)
        )


class EventStore(Protocol):
    """Where the security log is kept. The kit never reads it on a request's way to the app:
    only the log's own routes and pages do."""

    async def append(self, event: AuditEvent) -> int:
        """Keeps ``event``; returns its id (greater than every id before it)."""
        ...

    async def events(self, query: EventQuery) -> list[StoredEvent]:
        """The events ``query`` asks for, newest (highest id) first, at most ``query.limit``."""
        ...

    async def purge(self, before: float) -> int:
        """Removes the events that happened before ``before``; returns how many."""
        ...


class MemoryEventStore:
    """The log in a list, for tests and demos (one process; nothing survives a restart)."""

    def __init__(self) -> None:
        self._events: list[StoredEvent] = []
        self._last_id = 0

    async def append(self, event: AuditEvent) -> int:
        self._last_id += 1
        self._events.append(StoredEvent(self._last_id, event))
        return self._last_id

    async def events(self, query: EventQuery) -> list[StoredEvent]:
        found: list[StoredEvent] = []
        for stored in reversed(self._events):
            if query.matches(stored):
                found.append(stored)
                if len(found) == query.limit:
                    break
        return found

    async def purge(self, before: float) -> int:
        kept = [stored for stored in self._events if stored.event.at >= before]
        removed = len(self._events) - len(kept)
        self._events = kept
        return removed

    def all(self) -> Iterable[AuditEvent]:
        """Every event kept, oldest first (for tests)."""
        return [stored.event for stored in self._events]


class StoringSink:
    """An event sink that keeps each event in ``store`` and passes it on to ``inner`` (the
    log lines, an app's own sink). A store that cannot be reached is logged by the publisher
    and never fails the request; ``inner`` still hears of the event first."""

    def __init__(self, inner: EventSink, store: EventStore) -> None:
        self.inner = inner
        self.store = store

    async def emit(self, event: AuditEvent) -> None:
        await self.inner.emit(event)
        await self.store.append(event)
