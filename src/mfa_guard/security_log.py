"""The security log as people read it: a page of events, each with the browser it came from
named, and the cursor of the next page.

The events themselves are kept by an :class:`~mfa_guard.stores.events.EventStore`
(``MFAGuard(event_store=...)``); a site's owners read its log through
:meth:`mfa_guard.enforcement.SiteService.events` (``GET {mount}/api/sites/{site}/events``, the
demo's "Security log"), and each user their own recent activity on the kit's settings page.

A cursor is the id of the last event of a page (the store reads the events below it), with a
MAC over that id and the log it belongs to (a site's): a client can hand it back, not make one,
nor carry one from a site's log to another's. It is keyed from the guard's encryption keys, so
every worker reads the others' cursors.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import hashlib
import hmac
import re
import secrets
from collections.abc import Sequence
from dataclasses import dataclass

from mfa_guard.devices import Browser, browsers
from mfa_guard.events import AuditEvent
from mfa_guard.stores.events import MAX_EVENTS_PER_PAGE, EventQuery, EventStore, StoredEvent

__all__ = ["DEFAULT_EVENTS_PER_PAGE", "SecurityLogEntry", "SecurityLogPage"]

# The events a page holds when the reader does not say.
DEFAULT_EVENTS_PER_PAGE = 50
# 8 bytes of the id and 16 of the MAC, in URL-safe base64 without padding.
_ID_BYTES = 8
_MAC_BYTES = 16
CURSOR_LENGTH = 32
CURSOR_PATTERN = rf"^[A-Za-z0-9_-]{{{CURSOR_LENGTH}}}$"
_CURSOR = re.compile(CURSOR_PATTERN)


@dataclass(frozen=True, slots=True)
class SecurityLogEntry:
    """One event of the log, with its id and the browser it came from, read from its
    User-Agent (``browser.name``: "Firefox on Ubuntu"; ``None`` when the event has none: a
    command, a script)."""

    id: int
    event: AuditEvent
    browser: Browser | None


@dataclass(frozen=True, slots=True)
class SecurityLogPage:
    """A page of the log, newest first, and the cursor of the next page (``None`` on the
    last one)."""

    entries: tuple[SecurityLogEntry, ...]
    next_cursor: str | None


class Cursors:
    """Makes and reads the cursors of one log (``scope``: ``site:acme``), under ``key``."""

    def __init__(self, key: bytes | None) -> None:
        # Without a key (a SiteService built by hand), the cursors hold for this process only.
        base = key if key is not None else secrets.token_bytes(32)
        self._key = hmac.new(base, b"mfa_guard security log cursor", hashlib.sha256).digest()

    def _mac(self, scope: str, before: bytes) -> bytes:
        message = scope.encode() + b"\x00" + before
        return hmac.new(self._key, message, hashlib.sha256).digest()[:_MAC_BYTES]

    def make(self, scope: str, before: int) -> str:
        packed = before.to_bytes(_ID_BYTES, "big")
        return base64.urlsafe_b64encode(packed + self._mac(scope, packed)).decode().rstrip("=")

    def read(self, scope: str, cursor: str) -> int | None:
        """The id ``cursor`` stands for in ``scope``'s log; ``None`` for anything this log did
        not give (malformed, made up, another log's)."""
        if _CURSOR.fullmatch(cursor) is None:
            return None
        try:
            raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        except (binascii.Error, ValueError):
            return None
        packed, mac = raw[:_ID_BYTES], raw[_ID_BYTES:]
        if not hmac.compare_digest(mac, self._mac(scope, packed)):
            return None
        before = int.from_bytes(packed, "big")
        return before if before > 0 else None


async def read_page(
    store: EventStore, query: EventQuery, cursors: Cursors, scope: str
) -> SecurityLogPage:
    """The events ``query`` asks for, newest first, with their browsers named and the cursor
    of the next page. One read of the store, and one more only when a page of
    :data:`~mfa_guard.stores.events.MAX_EVENTS_PER_PAGE` events is full (the store reads no
    more at once): whether anything is left decides between a cursor and none."""
    wanted = query.limit
    found = await store.events(
        dataclasses.replace(query, limit=min(wanted + 1, MAX_EVENTS_PER_PAGE))
    )
    page = found[:wanted]
    more = len(found) > wanted
    if not more and page and len(page) == MAX_EVENTS_PER_PAGE:
        rest = dataclasses.replace(query, before=page[-1].id, limit=1)
        more = bool(await store.events(rest))
    next_cursor = cursors.make(scope, page[-1].id) if more else None
    return SecurityLogPage(await entries(page), next_cursor)


async def entries(stored: Sequence[StoredEvent]) -> tuple[SecurityLogEntry, ...]:
    """The events with their browsers (read off the event loop: :func:`browsers`)."""
    found = await browsers(item.event.user_agent for item in stored)
    return tuple(
        SecurityLogEntry(
            id=item.id,
            event=item.event,
            browser=None if item.event.user_agent is None else found[item.event.user_agent],
        )
        for item in stored
    )
