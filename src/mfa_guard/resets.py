"""Resetting a user's second factor for them: the user who lost their phone.

One reset, whoever asks for it: a site's owner (:meth:`mfa_guard.SiteService.reset_member`,
``POST api/sites/{site}/members/{member}/reset``), the app's own admin page
(:meth:`mfa_guard.MFAGuard.reset_two_factor`) or support staff on the command line
(``mfa-guard reset-user``). What goes: every authenticator (apps, passkeys, security keys),
the recovery codes, the phone number, a pending set-up, every remembered browser, the failure
counts (a user who lost their device has often locked themselves out trying), and the verified
state of every session of theirs (a new epoch: each one is challenged again, or sent to
enrolment, at its next re-check, within ``recheck_seconds``). The user is told: an
``admin_reset`` event, which a :class:`~mfa_guard.notifications.NotifyingSink` turns into a
notification.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

from mfa_guard.clock import Clock
from mfa_guard.errors import StoreUnavailable
from mfa_guard.events import AuditEvent, EventKind, EventSink, field
from mfa_guard.ratelimit import FailureLimiter, reset_all
from mfa_guard.services import publish
from mfa_guard.stores.base import MFAStore
from mfa_guard.stores.devices import DeviceStore

logger = logging.getLogger("mfa_guard")


@dataclass(frozen=True, slots=True)
class ResetDone:
    """A reset that happened: whose, the epoch every session of theirs must now match (none
    does), and how many remembered browsers were forgotten."""

    user_id: str
    epoch: int
    devices_forgotten: int


class Resets:
    """Resets second factors (see the module's docstring), with the audit event."""

    def __init__(
        self,
        *,
        store: MFAStore,
        devices: DeviceStore | None,
        limiters: Sequence[FailureLimiter],
        events: EventSink,
        clock: Clock,
    ) -> None:
        self.store = store
        self.devices = devices
        self._limiters = limiters
        self._events = events
        self._clock = clock

    async def has_anything(self, user_id: str) -> bool:
        """Whether the user has a second factor, a phone or a set-up to reset."""
        enrolment = await self.store.get(user_id)
        return enrolment is not None and bool(
            enrolment.enrolled or enrolment.pending_secret or enrolment.phone
        )

    async def reset(
        self,
        user_id: str,
        *,
        by: str | None,
        site: str | None = None,
        ip: str | None = None,
    ) -> ResetDone:
        """Resets ``user_id``'s second factor; ``by`` (who asked) and ``site`` (whose owner
        did) go in the audit event. The store's change is made first: the rest (remembered
        browsers, failure counts) only tidies what the new epoch already refuses, so a
        storage that cannot be reached then is logged, and the reset stands."""
        # The phone goes too: a number that was a second factor (lost or stolen with the
        # device, often) comes back only verified again.
        epoch = await self.store.disable(user_id)
        forgotten = 0
        if self.devices is not None:
            # The new epoch already makes every remembered browser untrusted: remove the rows.
            forgotten = await self.devices.remove_all(user_id)
        try:
            # Both budgets, so the new enrolment does not wait for the window.
            await reset_all(user_id, self._limiters)
        except StoreUnavailable:
            logger.warning("mfa_guard could not clear the failure counts of a reset user")
        event = AuditEvent(
            kind=EventKind.ADMIN_RESET,
            user_id=user_id,
            at=self._clock(),
            client_ip=ip,
            site=site,
            detail=None if by is None else f"by={field(by)}",
        )
        await publish(self._events, event)
        return ResetDone(user_id=user_id, epoch=epoch, devices_forgotten=forgotten)
