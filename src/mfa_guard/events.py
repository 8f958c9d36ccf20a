"""Audit events: typed, and free of codes and secrets by construction."""

from __future__ import annotations

import logging
from contextvars import ContextVar
from dataclasses import dataclass, replace
from enum import StrEnum
from typing import Protocol

logger = logging.getLogger("mfa_guard.audit")


class EventKind(StrEnum):
    """What an audit event reports; its value is the ``event=`` of the audit log's line."""

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
    AUTHENTICATOR_ADDED = "authenticator_added"
    AUTHENTICATOR_RENAMED = "authenticator_renamed"
    AUTHENTICATOR_REMOVED = "authenticator_removed"
    # What the middleware answered a request of a signed-in user it stopped: sent to the
    # second step, confined to enrolment, or refused because a store could not be reached.
    CHALLENGED = "challenged"
    ENROLMENT_REQUIRED = "enrolment_required"
    FAILED_CLOSED = "failed_closed"
    MEMBER_RESET_REFUSED = "member_reset_refused"


_WARNINGS = frozenset(
    {
        EventKind.VERIFICATION_FAILED,
        EventKind.CODE_REUSED,
        EventKind.LOCKED_OUT,
        EventKind.SMS_LIMITED,
        EventKind.SMS_FAILED,
        EventKind.SITE_ACCESS_DENIED,
        EventKind.ADMIN_RESET,
        EventKind.FAILED_CLOSED,
        EventKind.MEMBER_RESET_REFUSED,
    }
)


@dataclass(frozen=True, slots=True)
class AuditEvent:
    """Something that happened to a user's second factor, or to a site: what (``kind``), to
    whom (``user_id``; for a site event, who did it), when (``at``, the kit's clock), with which
    method and from which address. Never a code, a secret or a phone number."""

    kind: EventKind
    user_id: str
    at: float
    method: str | None = None
    client_ip: str | None = None
    # Site events: the site, and what changed (``enforce=on deadline=…``, ``role=owner``).
    site: str | None = None
    detail: str | None = None
    # The browser's User-Agent (its first 256 characters), for the security log's "which
    # browser"; filled in by :func:`publish` from the request being served.
    user_agent: str | None = None


# The User-Agent of the request being served, set by the kit's routes (``caller_of``) and by the
# middleware before it reports a stopped request; read by :func:`publish`.
request_user_agent: ContextVar[str | None] = ContextVar("mfa_guard_user_agent", default=None)
MAX_USER_AGENT = 256


def with_user_agent(event: AuditEvent) -> AuditEvent:
    """``event`` with the User-Agent of the request being served, if it has none yet."""
    if event.user_agent is not None:
        return event
    agent = request_user_agent.get()
    return event if agent is None else replace(event, user_agent=agent[:MAX_USER_AGENT])


class EventSink(Protocol):
    """Receives every audit event. Called after the change it reports has been stored; must not
    raise (an exception is logged and swallowed so a broken sink never blocks a sign-in)."""

    async def emit(self, event: AuditEvent) -> None: ...


def field(value: str | None) -> str:
    """``value`` as one logfmt value: as it is when it is plain, else in double quotes with
    ``\\`` and ``"`` escaped; control characters escaped either way; ``-`` for none (``"-"``
    for a dash). A user id or a site id that came from a request can neither start a forged
    line of the audit log (CWE-117) nor read as more fields (``acme ip=10.0.0.1 event=…``)."""
    if value is None:
        return "-"
    if value not in ("", "-") and value.isprintable() and not any(c in _QUOTED for c in value):
        return value
    quoted = value.replace("\\", "\\\\").replace('"', '\\"')
    if not quoted.isprintable():
        quoted = "".join(
            c if c.isprintable() else c.encode("unicode_escape").decode("ascii") for c in quoted
        )
    return f'"{quoted}"'


# Besides control characters, what makes a value more than one plain logfmt value.
_QUOTED = frozenset(' ="\\')


def _one_line(value: str) -> str:
    """Kit-written ``key=value`` pairs (``detail``) with control characters escaped."""
    return value if value.isprintable() else value.encode("unicode_escape").decode("ascii")


class LoggingEventSink:
    """The default sink: one logfmt line per event on the ``mfa_guard.audit`` logger, every
    value quoted when needed (:func:`field`), and the same values, as they are, in the record's
    ``audit`` attribute (a dict) for structured (JSON) formatters.

    ``detail`` is the kit's own ``key=value`` pairs (``enforce=on deadline=…``, ``by=…``),
    written as they are; a value in it that came from outside is quoted where it is made."""

    async def emit(self, event: AuditEvent) -> None:
        level = logging.WARNING if event.kind in _WARNINGS else logging.INFO
        audit = {
            "event": event.kind.value,
            "user": event.user_id,
            "method": event.method,
            "site": event.site,
            "detail": event.detail,
            "ip": event.client_ip,
        }
        detail = None if event.detail is None else _one_line(event.detail)
        if event.site is None:
            logger.log(
                level,
                "mfa_guard event=%s user=%s method=%s%s ip=%s",
                event.kind.value,
                field(event.user_id),
                field(event.method),
                "" if detail is None else " " + detail,
                field(event.client_ip),
                extra={"audit": audit},
            )
            return
        logger.log(
            level,
            "mfa_guard event=%s user=%s site=%s %s ip=%s",
            event.kind.value,
            field(event.user_id),
            field(event.site),
            detail or "-",
            field(event.client_ip),
            extra={"audit": audit},
        )


class MemoryEventSink:
    """Keeps the events, for tests and demos."""

    def __init__(self) -> None:
        self.events: list[AuditEvent] = []

    async def emit(self, event: AuditEvent) -> None:
        self.events.append(event)

    def kinds(self) -> list[EventKind]:
        return [event.kind for event in self.events]
