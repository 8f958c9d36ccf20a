"""Notifications: tell the user when something happened to their second factor.

A user should hear about a factor added or removed, a recovery code used, a new phone, a lock-out,
an admin reset or a newly remembered browser: if it was not them, that message is how they find
out. The kit does not send e-mail; it calls your :class:`Notifier` with a :class:`Notification`,
and you send it::

    guard = MFAGuard(..., events=NotifyingSink(LoggingEventSink(), MyMailer()))

:class:`NotifyingSink` is an event sink: it passes every audit event on to the sink it wraps, and
turns the ones a user must hear about into notifications. The notifier runs in the request that
caused it: queue the e-mail rather than sending it inline. A notifier that raises is logged and
ignored, never blocking a sign-in. Lock-outs are told once per ``lockout_quiet_seconds`` per user
and process (an attacker hammering the challenge would otherwise flood the user's inbox).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from enum import StrEnum
from typing import Protocol

from mfa_guard.events import AuditEvent, EventKind, EventSink

__all__ = [
    "LoggingNotifier",
    "MemoryNotifier",
    "Notice",
    "Notification",
    "Notifier",
    "NotifyingSink",
]

logger = logging.getLogger("mfa_guard")


class Notice(StrEnum):
    """What a :class:`Notification` tells the user; its value names it (for the app's own
    wording or templates)."""

    FACTOR_ADDED = "factor_added"
    FACTOR_REMOVED = "factor_removed"
    RECOVERY_CODE_USED = "recovery_code_used"
    RECOVERY_CODES_REPLACED = "recovery_codes_replaced"
    PHONE_CHANGED = "phone_changed"
    LOCKED_OUT = "locked_out"
    ADMIN_RESET = "admin_reset"
    DEVICE_TRUSTED = "device_trusted"
    AUTHENTICATOR_ADDED = "authenticator_added"
    AUTHENTICATOR_REMOVED = "authenticator_removed"


_NOTICES = {
    EventKind.ENROLLED: Notice.FACTOR_ADDED,
    EventKind.DISABLED: Notice.FACTOR_REMOVED,
    EventKind.RECOVERY_CODE_USED: Notice.RECOVERY_CODE_USED,
    EventKind.RECOVERY_CODES_REGENERATED: Notice.RECOVERY_CODES_REPLACED,
    EventKind.PHONE_VERIFIED: Notice.PHONE_CHANGED,
    EventKind.LOCKED_OUT: Notice.LOCKED_OUT,
    EventKind.ADMIN_RESET: Notice.ADMIN_RESET,
    EventKind.DEVICE_TRUSTED: Notice.DEVICE_TRUSTED,
    EventKind.AUTHENTICATOR_ADDED: Notice.AUTHENTICATOR_ADDED,
    EventKind.AUTHENTICATOR_REMOVED: Notice.AUTHENTICATOR_REMOVED,
}

_TEXTS = {
    Notice.FACTOR_ADDED: "Two-factor authentication was turned on for your account.",
    Notice.FACTOR_REMOVED: "Two-factor authentication was turned off for your account.",
    Notice.RECOVERY_CODE_USED: "A recovery code was used to sign in to your account.",
    Notice.RECOVERY_CODES_REPLACED: "New recovery codes were made; the old ones no longer work.",
    Notice.PHONE_CHANGED: "A new mobile number was verified for text-message codes.",
    Notice.LOCKED_OUT: (
        "Too many wrong codes were entered for your account; sign-in is paused for a while."
    ),
    Notice.ADMIN_RESET: "An administrator turned off two-factor authentication for your account.",
    Notice.AUTHENTICATOR_ADDED: (
        "A second factor (an authenticator app, a passkey or a security key) was added to your "
        "account. Remove it on your security settings page if it was not you."
    ),
    Notice.AUTHENTICATOR_REMOVED: "A second factor was removed from your account.",
    Notice.DEVICE_TRUSTED: (
        "A browser was remembered for your account: it skips the second step when signing in. "
        "Forget it on your security settings page if it was not you."
    ),
}


@dataclass(frozen=True, slots=True)
class Notification:
    """What to tell ``user_id``; never a code, a secret or a phone number."""

    notice: Notice
    user_id: str
    at: float
    method: str | None = None
    client_ip: str | None = None
    # The remembered browser's name, for ``device_trusted``.
    detail: str | None = None

    @property
    def text(self) -> str:
        """A default sentence for the message, in English."""
        return _TEXTS[self.notice]


class Notifier(Protocol):
    """Tells a user what happened (e-mail, push, a message in the app)."""

    async def notify(self, notification: Notification) -> None: ...


class NotifyingSink:
    """An event sink that passes every event on to ``inner`` and notifies the user of the ones
    they must hear about (see :data:`_NOTICES`)."""

    def __init__(
        self, inner: EventSink, notifier: Notifier, *, lockout_quiet_seconds: float = 3600
    ) -> None:
        self.inner = inner
        self.notifier = notifier
        self.lockout_quiet_seconds = lockout_quiet_seconds
        # user id -> when their last lock-out was told; bounded by pruning expired entries.
        self._told: dict[str, float] = {}

    async def emit(self, event: AuditEvent) -> None:
        await self.inner.emit(event)
        notice = _NOTICES.get(event.kind)
        if notice is None or not self._worth_telling(notice, event):
            return
        notification = Notification(
            notice=notice,
            user_id=event.user_id,
            at=event.at,
            method=event.method,
            client_ip=event.client_ip,
            detail=event.detail,
        )
        try:
            await self.notifier.notify(notification)
        except Exception:
            logger.exception("mfa_guard notifier failed on %s", notice.value)

    def _worth_telling(self, notice: Notice, event: AuditEvent) -> bool:
        if notice is not Notice.LOCKED_OUT:
            return True
        told = self._told.get(event.user_id)
        if told is not None and 0 <= event.at - told < self.lockout_quiet_seconds:
            return False
        if len(self._told) > 10_000:
            self._told = {
                user: at
                for user, at in self._told.items()
                if 0 <= event.at - at < self.lockout_quiet_seconds
            }
        self._told[event.user_id] = event.at
        return True


class LoggingNotifier:
    """Logs each notification on ``mfa_guard.notifications`` (the demo's "e-mail")."""

    async def notify(self, notification: Notification) -> None:
        logging.getLogger("mfa_guard.notifications").info(
            "would notify %s: %s", notification.user_id, notification.text
        )


class MemoryNotifier:
    """Keeps the notifications, for tests."""

    def __init__(self) -> None:
        self.notifications: list[Notification] = []

    async def notify(self, notification: Notification) -> None:
        self.notifications.append(notification)
