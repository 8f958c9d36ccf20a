"""Two-factor authentication (TOTP, recovery codes) for any ASGI application."""

from __future__ import annotations

from mfa_guard.errors import ConfigurationError, MFAGuardError, StoreUnavailable
from mfa_guard.events import AuditEvent, EventKind, EventSink, LoggingEventSink, MemoryEventSink
from mfa_guard.guard import MFAGuard
from mfa_guard.settings import MFAGuardSettings
from mfa_guard.stores import Enrolment, MemoryStore, MFAStore
from mfa_guard.version import __version__

__all__ = [
    "AuditEvent",
    "ConfigurationError",
    "Enrolment",
    "EventKind",
    "EventSink",
    "LoggingEventSink",
    "MFAGuard",
    "MFAGuardError",
    "MFAGuardSettings",
    "MFAStore",
    "MemoryEventSink",
    "MemoryStore",
    "StoreUnavailable",
    "__version__",
]
