"""The adapters the kit keeps its state in, each a Protocol with an in-memory implementation
(the SQL ones are in :mod:`mfa_guard.stores.sql`): the MFA store (per-user enrolment: its
authenticators, recovery codes, phone, pending SMS code and WebAuthn challenges), the site
directory (memberships and 2FA policies) and the device store (remembered browsers), with the
values their methods take and return."""

from __future__ import annotations

from mfa_guard.core.marker import EnrolmentSummary
from mfa_guard.core.recovery import RecoveryCodeSet
from mfa_guard.stores.base import (
    Authenticator,
    CeremonyPurpose,
    Enrolment,
    FactorKind,
    FactorStatus,
    MFAStore,
    SMSChallenge,
    SMSPurpose,
    StoredSecrets,
    WebAuthnChallenge,
)
from mfa_guard.stores.devices import DeviceStore, MemoryDeviceStore, TrustedDevice
from mfa_guard.stores.events import (
    EventQuery,
    EventStore,
    MemoryEventStore,
    StoredEvent,
    StoringSink,
)
from mfa_guard.stores.memory import MemoryStore
from mfa_guard.stores.sites import (
    Member,
    Membership,
    MemorySiteDirectory,
    MethodPolicy,
    Role,
    Site,
    SiteDirectory,
    SitePolicy,
)

__all__ = [
    "Authenticator",
    "CeremonyPurpose",
    "DeviceStore",
    "Enrolment",
    "EnrolmentSummary",
    "EventQuery",
    "EventStore",
    "FactorKind",
    "FactorStatus",
    "MFAStore",
    "Member",
    "Membership",
    "MemoryDeviceStore",
    "MemoryEventStore",
    "MemorySiteDirectory",
    "MemoryStore",
    "MethodPolicy",
    "RecoveryCodeSet",
    "Role",
    "SMSChallenge",
    "SMSPurpose",
    "Site",
    "SiteDirectory",
    "SitePolicy",
    "StoredEvent",
    "StoredSecrets",
    "StoringSink",
    "TrustedDevice",
    "WebAuthnChallenge",
]
