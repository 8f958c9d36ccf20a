"""Helpers for testing apps that use mfa_guard, and the contract suites adapters must pass."""

from __future__ import annotations

import sys
from collections import Counter
from collections.abc import Sequence

# The contract suites are pytest classes whose asserts live here, not in the app's test module:
# rewritten as a test module's are, they say what differed when one fails, and they still run
# under ``python -O`` (which strips plain asserts: a broken store would pass every contract).
# Registered before any of them is imported (this package's __init__ runs first).
if "pytest" in sys.modules:
    import pytest

    pytest.register_assert_rewrite(
        "mfa_guard.testing.contract",
        "mfa_guard.testing.devices_contract",
        "mfa_guard.testing.events_contract",
        "mfa_guard.testing.sites_contract",
    )

from mfa_guard.core import totp
from mfa_guard.core.marker import EnrolmentSummary
from mfa_guard.core.recovery import TESTING_COST, RecoveryCodeSet
from mfa_guard.stores.base import (
    Authenticator,
    CeremonyPurpose,
    Enrolment,
    FactorStatus,
    MFAStore,
    SMSChallenge,
    SMSPurpose,
    StoredSecrets,
    WebAuthnChallenge,
)
from mfa_guard.stores.sites import (
    Member,
    Membership,
    Requirements,
    Role,
    Site,
    SiteDirectory,
    SitePolicy,
)

# The scrypt cost for recovery codes in tests: ``MFAGuard(..., recovery_kdf=CHEAP_KDF)`` hashes a
# set in microseconds instead of a tenth of a second. No protection at all: the one cost under
# the floor the kit accepts, and only as this very object; never in production.
CHEAP_KDF = TESTING_COST


class FrozenClock:
    """A clock that moves only when told to: ``clock.advance(30)``."""

    def __init__(self, now: float = 1_800_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def current_code(
    secret: str, now: float, *, digits: int = 6, period: int = 30, steps: int = 0
) -> str:
    """The TOTP code an authenticator app shows at ``now`` (``steps`` later or earlier)."""
    params = totp.TOTPParameters(digits=digits, period=period)
    return totp.code_at(secret.replace(" ", ""), params, totp.step_at(now, params) + steps)


class CountingStore:
    """Wraps a store and counts its calls: proves what a request costs (``calls["summary"]``)."""

    def __init__(self, inner: MFAStore) -> None:
        self.inner = inner
        self.calls: Counter[str] = Counter()

    @property
    def total(self) -> int:
        return sum(self.calls.values())

    async def get(self, user_id: str) -> Enrolment | None:
        self.calls["get"] += 1
        return await self.inner.get(user_id)

    async def summary(self, user_id: str) -> EnrolmentSummary:
        self.calls["summary"] += 1
        return await self.inner.summary(user_id)

    async def statuses(self, user_ids: Sequence[str]) -> dict[str, FactorStatus]:
        self.calls["statuses"] += 1
        return await self.inner.statuses(user_ids)

    async def begin_enrolment(
        self, user_id: str, pending_secret: str, *, binding: str | None = None
    ) -> None:
        self.calls["begin_enrolment"] += 1
        await self.inner.begin_enrolment(user_id, pending_secret, binding=binding)

    async def add_authenticator(
        self,
        user_id: str,
        authenticator: Authenticator,
        *,
        now: float,
        recovery: RecoveryCodeSet | None = None,
        pending_secret: str | None = None,
        expected_epoch: int | None = None,
    ) -> int | None:
        self.calls["add_authenticator"] += 1
        return await self.inner.add_authenticator(
            user_id,
            authenticator,
            now=now,
            recovery=recovery,
            pending_secret=pending_secret,
            expected_epoch=expected_epoch,
        )

    async def accept_step(self, user_id: str, authenticator_id: str, step: int, now: float) -> bool:
        self.calls["accept_step"] += 1
        return await self.inner.accept_step(user_id, authenticator_id, step, now)

    async def accept_assertion(
        self, user_id: str, authenticator_id: str, sign_count: int, now: float
    ) -> bool:
        self.calls["accept_assertion"] += 1
        return await self.inner.accept_assertion(user_id, authenticator_id, sign_count, now)

    async def rename_authenticator(self, user_id: str, authenticator_id: str, name: str) -> bool:
        self.calls["rename_authenticator"] += 1
        return await self.inner.rename_authenticator(user_id, authenticator_id, name)

    async def remove_authenticator(
        self, user_id: str, authenticator_id: str, *, expected_epoch: int | None = None
    ) -> int | None:
        self.calls["remove_authenticator"] += 1
        return await self.inner.remove_authenticator(
            user_id, authenticator_id, expected_epoch=expected_epoch
        )

    async def start_webauthn_challenge(
        self, user_id: str, challenge: WebAuthnChallenge, now: float
    ) -> None:
        self.calls["start_webauthn_challenge"] += 1
        await self.inner.start_webauthn_challenge(user_id, challenge, now)

    async def consume_webauthn_challenge(
        self,
        user_id: str,
        purpose: CeremonyPurpose,
        challenge_hash: str,
        binding: str,
        now: float,
    ) -> bool:
        self.calls["consume_webauthn_challenge"] += 1
        return await self.inner.consume_webauthn_challenge(
            user_id, purpose, challenge_hash, binding, now
        )

    async def use_recovery_code(self, user_id: str, code_hash: str) -> bool:
        self.calls["use_recovery_code"] += 1
        return await self.inner.use_recovery_code(user_id, code_hash)

    async def replace_recovery_codes(self, user_id: str, recovery: RecoveryCodeSet) -> bool:
        self.calls["replace_recovery_codes"] += 1
        return await self.inner.replace_recovery_codes(user_id, recovery)

    async def disable(self, user_id: str) -> int:
        self.calls["disable"] += 1
        return await self.inner.disable(user_id)

    async def start_sms_challenge(self, user_id: str, challenge: SMSChallenge) -> None:
        self.calls["start_sms_challenge"] += 1
        await self.inner.start_sms_challenge(user_id, challenge)

    async def consume_sms_challenge(
        self, user_id: str, purpose: SMSPurpose, code_hash: str, now: float
    ) -> SMSChallenge | None:
        self.calls["consume_sms_challenge"] += 1
        return await self.inner.consume_sms_challenge(user_id, purpose, code_hash, now)

    async def stored_secrets(self, after: str | None, limit: int) -> list[StoredSecrets]:
        self.calls["stored_secrets"] += 1
        return await self.inner.stored_secrets(after, limit)

    async def replace_secrets(self, old: StoredSecrets, new: StoredSecrets) -> bool:
        self.calls["replace_secrets"] += 1
        return await self.inner.replace_secrets(old, new)

    async def revoke_sessions(self, user_id: str) -> int:
        self.calls["revoke_sessions"] += 1
        return await self.inner.revoke_sessions(user_id)

    async def set_phone(
        self, user_id: str, phone: str, now: float, *, expected_epoch: int | None = None
    ) -> int | None:
        self.calls["set_phone"] += 1
        return await self.inner.set_phone(user_id, phone, now, expected_epoch=expected_epoch)


class CountingSiteDirectory:
    """Wraps a site directory and counts its calls, as :class:`CountingStore` does a store."""

    def __init__(self, inner: SiteDirectory) -> None:
        self.inner = inner
        self.calls: Counter[str] = Counter()

    @property
    def total(self) -> int:
        return sum(self.calls.values())

    async def deadline(self, user_id: str) -> float | None:
        self.calls["deadline"] += 1
        return await self.inner.deadline(user_id)

    async def requirements(self, user_id: str) -> Requirements:
        self.calls["requirements"] += 1
        return await self.inner.requirements(user_id)

    async def memberships(self, user_id: str) -> list[Membership]:
        self.calls["memberships"] += 1
        return await self.inner.memberships(user_id)

    async def site(self, site_id: str) -> Site | None:
        self.calls["site"] += 1
        return await self.inner.site(site_id)

    async def role(self, site_id: str, user_id: str) -> Role | None:
        self.calls["role"] += 1
        return await self.inner.role(site_id, user_id)

    async def members(self, site_id: str) -> list[Member]:
        self.calls["members"] += 1
        return await self.inner.members(site_id)

    async def set_policy(self, site_id: str, policy: SitePolicy) -> bool:
        self.calls["set_policy"] += 1
        return await self.inner.set_policy(site_id, policy)

    async def save_site(self, site_id: str, name: str) -> Site:
        self.calls["save_site"] += 1
        return await self.inner.save_site(site_id, name)

    async def add_member(self, site_id: str, user_id: str, role: Role) -> bool:
        self.calls["add_member"] += 1
        return await self.inner.add_member(site_id, user_id, role)

    async def remove_member(self, site_id: str, user_id: str) -> bool:
        self.calls["remove_member"] += 1
        return await self.inner.remove_member(site_id, user_id)


__all__ = ["CHEAP_KDF", "CountingSiteDirectory", "CountingStore", "FrozenClock", "current_code"]
