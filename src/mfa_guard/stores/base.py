from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Protocol

from mfa_guard.core.marker import EnrolmentSummary
from mfa_guard.core.recovery import RecoveryCodeSet


class SMSPurpose(StrEnum):
    """What a texted code is for: signing in, or verifying a new mobile number."""

    SIGN_IN = "sign_in"
    PHONE = "phone"


@dataclass(frozen=True, slots=True)
class SMSChallenge:
    """The one pending SMS code of a user: a keyed hash bound to the session that asked."""

    purpose: SMSPurpose
    code_hash: str
    phone: str
    expires_at: float


@dataclass(frozen=True, slots=True)
class FactorStatus:
    """What a site's member list shows of one user: the green padlock, and the SMS fallback."""

    enrolled: bool
    phone_verified: bool = False


@dataclass(frozen=True, slots=True)
class StoredSecrets:
    """A user's encrypted TOTP secrets, as key rotation reads and rewrites them."""

    user_id: str
    secret: str | None
    pending_secret: str | None


@dataclass(frozen=True, slots=True)
class Enrolment:
    """One user's second-factor state. Secrets are Fernet tokens, recovery codes hashes."""

    user_id: str
    epoch: int = 0
    secret: str | None = None
    confirmed_at: float | None = None
    last_step: int | None = None
    pending_secret: str | None = None
    # Which session began the pending set-up: a keyed hash of its nonce (no other session is
    # shown the pending secret, nor may confirm it).
    pending_binding: str | None = None
    recovery: RecoveryCodeSet | None = None
    phone: str | None = None
    phone_verified_at: float | None = None
    sms_challenge: SMSChallenge | None = None

    @property
    def enrolled(self) -> bool:
        return self.secret is not None and self.confirmed_at is not None

    @property
    def recovery_codes_left(self) -> int:
        return 0 if self.recovery is None else len(self.recovery.hashes)

    def summary(self) -> EnrolmentSummary:
        return EnrolmentSummary(enrolled=self.enrolled, epoch=self.epoch)


class MFAStore(Protocol):
    """Where enrolments live. Every method is one round trip and atomic on its own.

    The epoch goes up by exactly one at each change that bumps it (enrolling, turning 2FA off,
    a new phone, revoking sessions): a session that made a change from epoch ``n`` and got
    ``n + 1`` back knows nothing else moved it in between. Every bump also voids what was
    pending, so nothing begun under an old epoch completes under a new one: the pending SMS
    code and the unconfirmed set-up (with its binding) go with it.

    Implementations raise :class:`mfa_guard.StoreUnavailable` when the backend cannot be reached,
    so the kit fails closed with a 503. ``mfa_guard.testing.contract.MFAStoreContract`` is the
    suite an implementation must pass.
    """

    async def get(self, user_id: str) -> Enrolment | None:
        """The user's enrolment, or ``None`` if the store has never seen the user."""
        ...

    async def summary(self, user_id: str) -> EnrolmentSummary:
        """What the middleware needs when a session's marker is stale: a single cheap read.
        A user the store has never seen is not enrolled, at epoch 0."""
        ...

    async def statuses(self, user_ids: Sequence[str]) -> dict[str, FactorStatus]:
        """The factor status of each of ``user_ids`` in one round trip; every id given has an
        entry (a user the store has never seen is not enrolled)."""
        ...

    async def begin_enrolment(
        self, user_id: str, pending_secret: str, *, binding: str | None = None
    ) -> None:
        """Store (or replace) the encrypted secret waiting for its first code, with the
        ``binding`` of the session that began it (``pending_binding``; ``None``: no session's).
        Does not touch a confirmed enrolment."""
        ...

    async def confirm_enrolment(
        self,
        user_id: str,
        pending_secret: str,
        *,
        step: int,
        recovery: RecoveryCodeSet,
        now: float,
    ) -> int | None:
        """Make ``pending_secret`` the active secret, if it is still the pending one and the user
        is not enrolled: set ``last_step``, store the recovery codes, drop the binding and any
        pending SMS code, bump the epoch. Returns the new epoch, or ``None`` when another request
        changed the enrolment first."""
        ...

    async def accept_step(self, user_id: str, step: int) -> bool:
        """Compare-and-set: record ``step`` as the last accepted time step if the user is enrolled
        and it is newer than the last one. ``False`` means a replay (or an older step)."""
        ...

    async def use_recovery_code(self, user_id: str, code_hash: str) -> bool:
        """Remove one unused recovery code by its hash; ``False`` if it was not there (any more)."""
        ...

    async def replace_recovery_codes(self, user_id: str, recovery: RecoveryCodeSet) -> bool:
        """Replace the whole set of an enrolled user; ``False`` if the user is not enrolled."""
        ...

    async def disable(self, user_id: str) -> int:
        """Remove the secret, pending secret, recovery codes, any pending SMS code and the phone,
        bump the epoch, return it. The phone goes too: a number that was a second factor comes
        back only verified again (an admin reset after a lost or stolen phone included)."""
        ...

    async def start_sms_challenge(self, user_id: str, challenge: SMSChallenge) -> None:
        """Store ``challenge`` as the user's only pending SMS code; a resend replaces it."""
        ...

    async def consume_sms_challenge(
        self, user_id: str, purpose: SMSPurpose, code_hash: str, now: float
    ) -> SMSChallenge | None:
        """Atomically remove and return the pending challenge if it has this purpose and hash and
        has not expired at ``now``; ``None`` otherwise (the pending challenge then stays)."""
        ...

    async def stored_secrets(self, after: str | None, limit: int) -> list[StoredSecrets]:
        """Up to ``limit`` users holding a secret or a pending secret, ordered by user id,
        after the user id ``after`` (``None``: from the first): key rotation pages through
        them."""
        ...

    async def replace_secrets(self, old: StoredSecrets, new: StoredSecrets) -> bool:
        """Compare-and-set: write ``new``'s secrets if the user's are still ``old``'s; ``False``
        when another request changed them in between (nothing written)."""
        ...

    async def revoke_sessions(self, user_id: str) -> int:
        """Bump the user's epoch and return it: every session verified under the old epoch must
        verify again ("sign out my other sessions"). What a session had pending dies with it:
        the pending SMS code (a phone change or sign-in in flight) and the unconfirmed set-up.
        The secret, recovery codes and phone stay."""
        ...

    async def set_phone(
        self, user_id: str, phone: str, now: float, *, expected_epoch: int | None = None
    ) -> int | None:
        """Record ``phone`` (E.164) as the user's verified number. A new number is a new
        authenticator: the epoch is bumped (other sessions re-verify) and an unconfirmed set-up
        is dropped. Returns the epoch.

        With ``expected_epoch``, a compare-and-set: written only while the user's epoch is
        still that one (the epoch the asking session was verified at), else nothing is written
        and ``None`` returned: a revocation that landed meanwhile wins."""
        ...
