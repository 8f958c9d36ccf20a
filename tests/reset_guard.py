"""An app's guard for ``mfa-guard reset-user --guard tests.reset_guard:guard``: the SQL store at
``RESET_GUARD_DATABASE``, and a notifier the test reads back (what an app's e-mail would send)."""

from __future__ import annotations

import os

from cryptography.fernet import Fernet

from mfa_guard import MemoryEventSink, MFAGuard, MFAGuardSettings
from mfa_guard.notifications import MemoryNotifier, NotifyingSink
from mfa_guard.stores.sql import SQLStore

NOTIFIER = MemoryNotifier()
EVENTS = MemoryEventSink()


def guard() -> MFAGuard:
    settings = MFAGuardSettings(encryption_keys=[Fernet.generate_key().decode()])
    return MFAGuard(
        settings=settings,
        store=SQLStore(os.environ["RESET_GUARD_DATABASE"]),
        events=NotifyingSink(EVENTS, NOTIFIER),
    )


not_a_guard = 42
