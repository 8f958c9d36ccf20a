"""Two-factor authentication (TOTP, recovery codes) for any ASGI application.

The public API is what this module's ``__all__`` names, and the ``__all__`` of these modules:
``mfa_guard.stores`` and ``mfa_guard.stores.sql`` (where enrolments, sites and remembered
browsers live), ``mfa_guard.sms`` (text-message providers), ``mfa_guard.notifications`` (telling
users what happened to their 2FA), ``mfa_guard.stepup`` (step-up for an app's own routes),
``mfa_guard.fastapi`` and ``mfa_guard.tokens`` (FastAPI, bearer tokens), ``mfa_guard.testing``
and its contract suites. Every other module, and every name those lists leave out, is internal
and may change in any release; docs/public-api.md lists each public name.
"""

from __future__ import annotations

from mfa_guard.clock import Clock, system_clock
from mfa_guard.core.marker import Marker
from mfa_guard.core.recovery import ScryptCost
from mfa_guard.core.redirects import safe_next
from mfa_guard.devices import Browser
from mfa_guard.enforcement import (
    Enforcement,
    EnrolmentNotice,
    MemberStatus,
    MembersWithoutMFA,
    SiteService,
)
from mfa_guard.errors import (
    ConfigurationError,
    Denied,
    MFAGuardError,
    Reason,
    SecretDecryptionError,
    StoreUnavailable,
)
from mfa_guard.events import AuditEvent, EventKind, EventSink, LoggingEventSink, MemoryEventSink
from mfa_guard.guard import MFAGuard
from mfa_guard.identity import client_ip
from mfa_guard.metrics import Metrics, OpenTelemetryMetrics
from mfa_guard.readiness import Readiness
from mfa_guard.security_log import SecurityLogEntry, SecurityLogPage
from mfa_guard.services import MFAService
from mfa_guard.settings import MFAGuardSettings
from mfa_guard.stores import Enrolment, MemoryStore, MFAStore
from mfa_guard.version import __version__
from mfa_guard.web.middleware import MFAGuardMiddleware

__all__ = [
    "AuditEvent",
    "Browser",
    "Clock",
    "ConfigurationError",
    "Denied",
    "Enforcement",
    "Enrolment",
    "EnrolmentNotice",
    "EventKind",
    "EventSink",
    "LoggingEventSink",
    "MFAGuard",
    "MFAGuardError",
    "MFAGuardMiddleware",
    "MFAGuardSettings",
    "MFAService",
    "MFAStore",
    "Marker",
    "MemberStatus",
    "MembersWithoutMFA",
    "MemoryEventSink",
    "MemoryStore",
    "Metrics",
    "OpenTelemetryMetrics",
    "Readiness",
    "Reason",
    "ScryptCost",
    "SecretDecryptionError",
    "SecurityLogEntry",
    "SecurityLogPage",
    "SiteService",
    "StoreUnavailable",
    "__version__",
    "client_ip",
    "safe_next",
    "system_clock",
]
