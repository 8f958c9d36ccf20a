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


class FactorKind(StrEnum):
    """What kind of second factor an :class:`Authenticator` is."""

    # An authenticator app (TOTP, RFC 6238): a secret shared with the app.
    TOTP = "totp"
    # A passkey or a security key (WebAuthn): a public key, whose private half never leaves it.
    WEBAUTHN = "webauthn"


@dataclass(frozen=True, slots=True)
class Authenticator:
    """One second factor of a user: an authenticator app or a passkey / security key, with
    the name the user gave it. A user has any number of them, of both kinds.

    An app holds its ``secret`` (a Fernet token, never the plain secret) and the last time
    step it accepted (``last_step``: each app refuses its own replays). A passkey or security
    key holds what WebAuthn registered: ``credential_id``, the COSE ``public_key``, the
    authenticator's signature counter (``sign_count``), its ``transports``, ``aaguid`` (the
    model), and whether it is synced between devices (``backed_up``)."""

    id: str
    kind: FactorKind
    name: str
    created_at: float
    last_used_at: float | None = None
    secret: str | None = None
    last_step: int | None = None
    credential_id: bytes | None = None
    public_key: bytes | None = None
    sign_count: int = 0
    transports: tuple[str, ...] = ()
    aaguid: str | None = None
    backed_up: bool = False


@dataclass(frozen=True, slots=True)
class FactorStatus:
    """What a site's member list shows of one user: the green padlock, the kinds of factors
    behind it, and the SMS fallback."""

    enrolled: bool
    phone_verified: bool = False
    # The kinds of the user's authenticators, each once, in FactorKind order.
    kinds: tuple[FactorKind, ...] = ()


@dataclass(frozen=True, slots=True)
class StoredSecrets:
    """A user's encrypted TOTP secrets, as key rotation reads and rewrites them: the pending
    set-up's and each authenticator app's, by authenticator id (ordered by id)."""

    user_id: str
    pending_secret: str | None
    apps: tuple[tuple[str, str], ...] = ()


class CeremonyPurpose(StrEnum):
    """What a WebAuthn challenge was issued for."""

    REGISTER = "register"
    SIGN_IN = "sign_in"


@dataclass(frozen=True, slots=True)
class WebAuthnChallenge:
    """A WebAuthn challenge waiting for its answer: a hash of the challenge, never reused, bound
    to the session that asked (a keyed hash of its nonce), until ``expires_at``."""

    purpose: CeremonyPurpose
    challenge_hash: str
    binding: str
    expires_at: float


@dataclass(frozen=True, slots=True)
class Enrolment:
    """One user's second-factor state. Secrets are Fernet tokens, recovery codes hashes."""

    user_id: str
    epoch: int = 0
    # The user's second factors, oldest first; enrolled while there is at least one.
    authenticators: tuple[Authenticator, ...] = ()
    # When the user's first factor was added (2FA turned on).
    confirmed_at: float | None = None
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
        return bool(self.authenticators)

    @property
    def apps(self) -> tuple[Authenticator, ...]:
        """The authenticator apps."""
        return tuple(a for a in self.authenticators if a.kind is FactorKind.TOTP)

    @property
    def keys(self) -> tuple[Authenticator, ...]:
        """The passkeys and security keys."""
        return tuple(a for a in self.authenticators if a.kind is FactorKind.WEBAUTHN)

    @property
    def kinds(self) -> tuple[FactorKind, ...]:
        """The kinds of the user's authenticators, each once, in FactorKind order."""
        present = {a.kind for a in self.authenticators}
        return tuple(kind for kind in FactorKind if kind in present)

    def authenticator(self, authenticator_id: str) -> Authenticator | None:
        for found in self.authenticators:
            if found.id == authenticator_id:
                return found
        return None

    @property
    def recovery_codes_left(self) -> int:
        return 0 if self.recovery is None else len(self.recovery.hashes)

    def summary(self) -> EnrolmentSummary:
        return EnrolmentSummary(enrolled=self.enrolled, epoch=self.epoch)


class MFAStore(Protocol):
    """Where enrolments live. Every method is one round trip and atomic on its own.

    The epoch goes up by exactly one at each change that bumps it (an authenticator added or
    removed, turning 2FA off, a new phone, revoking sessions): a session that made a change
    from epoch ``n`` and got ``n + 1`` back knows nothing else moved it in between. Every bump
    also voids what was pending, so nothing begun under an old epoch completes under a new one:
    the pending SMS code, the WebAuthn challenges and the unconfirmed set-up (with its binding)
    go with it.

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
        """Store (or replace) the encrypted secret of a new authenticator app waiting for its
        first code, with the ``binding`` of the session that began it (``pending_binding``;
        ``None``: no session's). The user's authenticators are not touched: an enrolled user
        adds another app this way."""
        ...

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
        """Add ``authenticator`` to the user's factors, bump the epoch, drop any pending SMS
        code and WebAuthn challenge; returns the new epoch. ``None`` (nothing written) when:

        - ``pending_secret`` is given (an app's set-up) and is not the pending secret any more;
          it is consumed with its binding otherwise;
        - the user has no factor yet and ``recovery`` is ``None``: a first factor comes with the
          recovery codes (stored, ``confirmed_at`` set to ``now``); ``recovery`` is ignored for
          a user who has one;
        - ``expected_epoch`` is given and the user's epoch is another (a revocation won);
        - its id, or its ``credential_id``, is already stored (for any user: a credential
          registers once)."""
        ...

    async def accept_step(self, user_id: str, authenticator_id: str, step: int, now: float) -> bool:
        """Compare-and-set on one authenticator app of the user: record ``step`` as its last
        accepted time step (and ``now`` as its last use) if it is newer than the last one.
        ``False`` means a replay (or an older step), or no such app."""
        ...

    async def accept_assertion(
        self, user_id: str, authenticator_id: str, sign_count: int, now: float
    ) -> bool:
        """Compare-and-set on one passkey or security key of the user: record ``sign_count``
        (and ``now`` as its last use) if it is above the stored count, or if both are 0 (an
        authenticator that does not count). ``False``: the counter went backwards or stood
        still (a cloned authenticator, WebAuthn 6.1.1), or no such key."""
        ...

    async def rename_authenticator(self, user_id: str, authenticator_id: str, name: str) -> bool:
        """Give one of the user's authenticators a new name; ``False`` if there is no such."""
        ...

    async def remove_authenticator(
        self, user_id: str, authenticator_id: str, *, expected_epoch: int | None = None
    ) -> int | None:
        """Remove one of the user's authenticators, bump the epoch (every session verifies
        again), drop what was pending (SMS code, set-up, WebAuthn challenges); returns the new
        epoch. ``None`` (nothing written) if there is no such authenticator, if it is the user's
        last one (turning 2FA off is :meth:`disable`), or if ``expected_epoch`` is given and the
        epoch moved."""
        ...

    async def start_webauthn_challenge(
        self, user_id: str, challenge: WebAuthnChallenge, now: float
    ) -> None:
        """Store ``challenge``. It replaces the one of the same session (``binding``) and
        purpose; the user's expired challenges go."""
        ...

    async def consume_webauthn_challenge(
        self,
        user_id: str,
        purpose: CeremonyPurpose,
        challenge_hash: str,
        binding: str,
        now: float,
    ) -> bool:
        """Atomically remove the user's challenge of this hash, purpose and session; ``True``
        if it was there and had not expired at ``now``. A challenge is answered once."""
        ...

    async def use_recovery_code(self, user_id: str, code_hash: str) -> bool:
        """Remove one unused recovery code by its hash; ``False`` if it was not there (any more)."""
        ...

    async def replace_recovery_codes(self, user_id: str, recovery: RecoveryCodeSet) -> bool:
        """Replace the whole set of an enrolled user; ``False`` if the user is not enrolled."""
        ...

    async def disable(self, user_id: str) -> int:
        """Remove every authenticator, the pending set-up, the recovery codes, any pending SMS
        code and WebAuthn challenge, and the phone,
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
        """Up to ``limit`` users holding an app's secret or a pending secret, ordered by user id,
        after the user id ``after`` (``None``: from the first): key rotation pages through
        them."""
        ...

    async def replace_secrets(self, old: StoredSecrets, new: StoredSecrets) -> bool:
        """Compare-and-set: write ``new``'s secrets (the pending one, and each app's by id) if
        the user's are all still ``old``'s; ``False`` when another request changed any of them
        in between, or an app came or went (nothing written)."""
        ...

    async def revoke_sessions(self, user_id: str) -> int:
        """Bump the user's epoch and return it: every session verified under the old epoch must
        verify again ("sign out my other sessions"). What a session had pending dies with it:
        the pending SMS code (a phone change or sign-in in flight), the unconfirmed set-up and
        the WebAuthn challenges. The authenticators, recovery codes and phone stay."""
        ...

    async def set_phone(
        self, user_id: str, phone: str, now: float, *, expected_epoch: int | None = None
    ) -> int | None:
        """Record ``phone`` (E.164) as the user's verified number. A new number is a new
        authenticator: the epoch is bumped (other sessions re-verify) and an unconfirmed set-up
        and the WebAuthn challenges are dropped. Returns the epoch.

        With ``expected_epoch``, a compare-and-set: written only while the user's epoch is
        still that one (the epoch the asking session was verified at), else nothing is written
        and ``None`` returned: a revocation that landed meanwhile wins."""
        ...
