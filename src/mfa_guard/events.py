"""Audit events: typed, and free of codes and secrets by construction."""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass
from enum import StrEnum
from typing import Protocol

logger = logging.getLogger("mfa_guard.audit")


class EventKind(StrEnum):
    ENROLMENT_STARTED = "enrolment_started"
    ENROLLED = "enrolled"
    VERIFIED = "verified"
    VERIFICATION_FAILED = "verification_failed"
    CODE_REUSED = "code_reused"
    LOCKED_OUT = "locked_out"
    RECOVERY_CODE_USED = "recovery_code_used"
    RECOVERY_CODES_REGENERATED = "recovery_codes_regenerated"
    DISABLED = "disabled"
    SMS_SENT = "sms_sent"
    SMS_LIMITED = "sms_limited"
    SMS_FAILED = "sms_failed"
    PHONE_VERIFIED = "phone_verified"
    DISABLE_REFUSED = "disable_refused"
    ADMIN_RESET = "admin_reset"
    SESSIONS_REVOKED = "sessions_revoked"
    SITE_POLICY_CHANGED = "site_policy_changed"
    SITE_ACCESS_DENIED = "site_access_denied"
    SITE_MEMBER_ADDED = "site_member_added"
    SITE_MEMBER_REMOVED = "site_member_removed"
    DEVICE_TRUSTED = "device_trusted"
    DEVICE_RECOGNISED = "device_recognised"
    DEVICE_REVOKED = "device_revoked"


_WARNINGS = frozenset(
    {
        EventKind.VERIFICATION_FAILED,
        EventKind.CODE_REUSED,
        EventKind.LOCKED_OUT,
        EventKind.SMS_LIMITED,
        EventKind.SMS_FAILED,
        EventKind.SITE_ACCESS_DENIED,
        EventKind.ADMIN_RESET,
    }
)


@dataclass(frozen=True, slots=True)
class AuditEvent:
    kind: EventKind
    user_id: str
    at: float
    method: str | None = None
    client_ip: str | None = None
    # Site events: the site, and what changed (``enforce=on deadline=…``, ``role=owner``).
    site: str | None = None
    detail: str | None = None


class EventSink(Protocol):
    """Receives every audit event. Called after the change it reports has been stored; must not
    raise (an exception is logged and swallowed so a broken sink never blocks a sign-in)."""

    async def emit(self, event: AuditEvent) -> None: ...


def _one_line(value: str | None) -> str | None:
    """``value`` with control characters escaped: a user id or a site id that came from a
    request must not start a forged line of the audit log (CWE-117)."""
    if value is None or value.isprintable():
        return value
    return value.encode("unicode_escape").decode("ascii")


class LoggingEventSink:
    """The default sink: one line per event on the ``mfa_guard.audit`` logger."""

    async def emit(self, event: AuditEvent) -> None:
        event = dataclasses.replace(
            event,
            user_id=_one_line(event.user_id) or "",
            site=_one_line(event.site),
            detail=_one_line(event.detail),
        )
        level = logging.WARNING if event.kind in _WARNINGS else logging.INFO
        if event.site is None:
            logger.log(
                level,
                "mfa_guard event=%s user=%s method=%s%s ip=%s",
                event.kind.value,
                event.user_id,
                event.method or "-",
                "" if event.detail is None else " " + event.detail,
                event.client_ip or "-",
            )
            return
        logger.log(
            level,
            "mfa_guard event=%s user=%s site=%s %s ip=%s",
            event.kind.value,
            event.user_id,
            event.site,
            event.detail or "-",
            event.client_ip or "-",
        )


class MemoryEventSink:
    """Keeps the events, for tests and demos."""

    def __init__(self) -> None:
        self.events: list[AuditEvent] = []

    async def emit(self, event: AuditEvent) -> None:
        self.events.append(event)

    def kinds(self) -> list[EventKind]:
        return [event.kind for event in self.events]
