"""The MFA store: per-user enrolment, behind a Protocol with memory and SQL implementations."""

from __future__ import annotations

from mfa_guard.stores.base import Enrolment, MFAStore
from mfa_guard.stores.memory import MemoryStore

__all__ = ["Enrolment", "MFAStore", "MemoryStore"]
