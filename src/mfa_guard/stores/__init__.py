"""The adapters the kit keeps its state in: the MFA store (per-user enrolment) and the site
directory (memberships and 2FA policies), each a Protocol with memory and SQL implementations."""

from __future__ import annotations

from mfa_guard.stores.base import Enrolment, FactorStatus, MFAStore
from mfa_guard.stores.memory import MemoryStore
from mfa_guard.stores.sites import (
    Member,
    Membership,
    MemorySiteDirectory,
    Role,
    Site,
    SiteDirectory,
    SitePolicy,
)

__all__ = [
    "Enrolment",
    "FactorStatus",
    "MFAStore",
    "Member",
    "Membership",
    "MemorySiteDirectory",
    "MemoryStore",
    "Role",
    "Site",
    "SiteDirectory",
    "SitePolicy",
]
