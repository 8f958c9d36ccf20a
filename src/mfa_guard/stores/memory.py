from __future__ import annotations

import dataclasses
import hmac
from collections.abc import Sequence

from mfa_guard.core.marker import EnrolmentSummary
from mfa_guard.core.recovery import RecoveryCodeSet
from mfa_guard.stores.base import (
    Authenticator,
    CeremonyPurpose,
    Enrolment,
    FactorKind,
    FactorStatus,
    SMSChallenge,
    SMSPurpose,
    StoredSecrets,
    WebAuthnChallenge,
)


class MemoryStore:
    """In-process store for tests and single-process demos. Each method runs without an
    ``await`` inside, so it is atomic on the event loop."""

    def __init__(self) -> None:
        self._users: dict[str, Enrolment] = {}
        # Pending WebAuthn challenges of each user, by challenge hash.
        self._challenges: dict[str, dict[str, WebAuthnChallenge]] = {}

    async def get(self, user_id: str) -> Enrolment | None:
        return self._users.get(user_id)

    async def summary(self, user_id: str) -> EnrolmentSummary:
        enrolment = self._users.get(user_id)
        return EnrolmentSummary(False, 0) if enrolment is None else enrolment.summary()

    async def statuses(self, user_ids: Sequence[str]) -> dict[str, FactorStatus]:
        found = {}
        for user_id in user_ids:
            enrolment = self._users.get(user_id)
            found[user_id] = FactorStatus(
                enrolled=enrolment is not None and enrolment.enrolled,
                phone_verified=enrolment is not None and enrolment.phone_verified_at is not None,
                kinds=() if enrolment is None else enrolment.kinds,
            )
        return found

    async def begin_enrolment(
        self, user_id: str, pending_secret: str, *, binding: str | None = None
    ) -> None:
        current = self._users.get(user_id) or Enrolment(user_id=user_id)
        self._users[user_id] = dataclasses.replace(
            current, pending_secret=pending_secret, pending_binding=binding
        )

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
        current = self._users.get(user_id) or Enrolment(user_id=user_id)
        if pending_secret is not None and current.pending_secret != pending_secret:
            return None
        if not current.enrolled and recovery is None:
            return None
        if expected_epoch is not None and current.epoch != expected_epoch:
            return None
        if self._taken(authenticator):
            return None
        updated = dataclasses.replace(
            current,
            authenticators=(*current.authenticators, authenticator),
            sms_challenge=None,
            epoch=current.epoch + 1,
        )
        if pending_secret is not None:
            updated = dataclasses.replace(updated, pending_secret=None, pending_binding=None)
        if not current.enrolled:
            updated = dataclasses.replace(updated, recovery=recovery, confirmed_at=now)
        self._users[user_id] = updated
        self._challenges.pop(user_id, None)
        return updated.epoch

    def _taken(self, new: Authenticator) -> bool:
        for enrolment in self._users.values():
            for held in enrolment.authenticators:
                if held.id == new.id or (
                    new.credential_id is not None and held.credential_id == new.credential_id
                ):
                    return True
        return False

    def _with(self, user_id: str, changed: Authenticator) -> None:
        current = self._users[user_id]
        self._users[user_id] = dataclasses.replace(
            current,
            authenticators=tuple(
                changed if held.id == changed.id else held for held in current.authenticators
            ),
        )

    async def accept_step(self, user_id: str, authenticator_id: str, step: int, now: float) -> bool:
        current = self._users.get(user_id)
        app = None if current is None else current.authenticator(authenticator_id)
        if app is None or app.kind is not FactorKind.TOTP:
            return False
        if app.last_step is not None and step <= app.last_step:
            return False
        self._with(user_id, dataclasses.replace(app, last_step=step, last_used_at=now))
        return True

    async def accept_assertion(
        self, user_id: str, authenticator_id: str, sign_count: int, now: float
    ) -> bool:
        current = self._users.get(user_id)
        key = None if current is None else current.authenticator(authenticator_id)
        if key is None or key.kind is not FactorKind.WEBAUTHN:
            return False
        if not (sign_count > key.sign_count or sign_count == key.sign_count == 0):
            return False
        self._with(user_id, dataclasses.replace(key, sign_count=sign_count, last_used_at=now))
        return True

    async def rename_authenticator(self, user_id: str, authenticator_id: str, name: str) -> bool:
        current = self._users.get(user_id)
        found = None if current is None else current.authenticator(authenticator_id)
        if found is None:
            return False
        self._with(user_id, dataclasses.replace(found, name=name))
        return True

    async def remove_authenticator(
        self, user_id: str, authenticator_id: str, *, expected_epoch: int | None = None
    ) -> int | None:
        current = self._users.get(user_id)
        if current is None or current.authenticator(authenticator_id) is None:
            return None
        if len(current.authenticators) == 1:
            return None
        if expected_epoch is not None and current.epoch != expected_epoch:
            return None
        epoch = current.epoch + 1
        self._users[user_id] = dataclasses.replace(
            current,
            authenticators=tuple(a for a in current.authenticators if a.id != authenticator_id),
            epoch=epoch,
            pending_secret=None,
            pending_binding=None,
            sms_challenge=None,
        )
        self._challenges.pop(user_id, None)
        return epoch

    async def start_webauthn_challenge(
        self, user_id: str, challenge: WebAuthnChallenge, now: float
    ) -> None:
        pending = self._challenges.setdefault(user_id, {})
        for challenge_hash, held in list(pending.items()):
            if now >= held.expires_at or (
                held.binding == challenge.binding and held.purpose is challenge.purpose
            ):
                del pending[challenge_hash]
        pending[challenge.challenge_hash] = challenge

    async def consume_webauthn_challenge(
        self,
        user_id: str,
        purpose: CeremonyPurpose,
        challenge_hash: str,
        binding: str,
        now: float,
    ) -> bool:
        pending = self._challenges.get(user_id, {})
        held = pending.get(challenge_hash)
        if held is None or held.purpose is not purpose or held.binding != binding:
            return False
        del pending[challenge_hash]
        return now < held.expires_at

    async def use_recovery_code(self, user_id: str, code_hash: str) -> bool:
        current = self._users.get(user_id)
        if current is None or current.recovery is None or code_hash not in current.recovery.hashes:
            return False
        left = tuple(h for h in current.recovery.hashes if h != code_hash)
        recovery = dataclasses.replace(current.recovery, hashes=left)
        self._users[user_id] = dataclasses.replace(current, recovery=recovery)
        return True

    async def replace_recovery_codes(self, user_id: str, recovery: RecoveryCodeSet) -> bool:
        current = self._users.get(user_id)
        if current is None or not current.enrolled:
            return False
        self._users[user_id] = dataclasses.replace(current, recovery=recovery)
        return True

    async def disable(self, user_id: str) -> int:
        current = self._users.get(user_id) or Enrolment(user_id=user_id)
        epoch = current.epoch + 1
        self._users[user_id] = Enrolment(user_id=user_id, epoch=epoch)
        self._challenges.pop(user_id, None)
        return epoch

    async def start_sms_challenge(self, user_id: str, challenge: SMSChallenge) -> None:
        current = self._users.get(user_id) or Enrolment(user_id=user_id)
        self._users[user_id] = dataclasses.replace(current, sms_challenge=challenge)

    async def consume_sms_challenge(
        self, user_id: str, purpose: SMSPurpose, code_hash: str, now: float
    ) -> SMSChallenge | None:
        current = self._users.get(user_id)
        challenge = None if current is None else current.sms_challenge
        if (
            current is None
            or challenge is None
            or challenge.purpose is not purpose
            or not hmac.compare_digest(challenge.code_hash, code_hash)
            or now >= challenge.expires_at
        ):
            return None
        self._users[user_id] = dataclasses.replace(current, sms_challenge=None)
        return challenge

    async def stored_secrets(self, after: str | None, limit: int) -> list[StoredSecrets]:
        found = sorted(
            (
                self._secrets_of(e)
                for e in self._users.values()
                if (e.apps or e.pending_secret is not None) and (after is None or e.user_id > after)
            ),
            key=lambda stored: stored.user_id,
        )
        return found[:limit]

    @staticmethod
    def _secrets_of(enrolment: Enrolment) -> StoredSecrets:
        apps = sorted((a.id, a.secret) for a in enrolment.apps if a.secret is not None)
        return StoredSecrets(enrolment.user_id, enrolment.pending_secret, tuple(apps))

    async def replace_secrets(self, old: StoredSecrets, new: StoredSecrets) -> bool:
        current = self._users.get(old.user_id)
        if current is None or self._secrets_of(current) != old:
            return False
        if [app_id for app_id, _ in new.apps] != [app_id for app_id, _ in old.apps]:
            return False
        secrets = dict(new.apps)
        self._users[old.user_id] = dataclasses.replace(
            current,
            pending_secret=new.pending_secret,
            authenticators=tuple(
                dataclasses.replace(a, secret=secrets[a.id]) if a.id in secrets else a
                for a in current.authenticators
            ),
        )
        return True

    async def revoke_sessions(self, user_id: str) -> int:
        current = self._users.get(user_id) or Enrolment(user_id=user_id)
        self._users[user_id] = dataclasses.replace(
            current,
            epoch=current.epoch + 1,
            pending_secret=None,
            pending_binding=None,
            sms_challenge=None,
        )
        self._challenges.pop(user_id, None)
        return current.epoch + 1

    async def set_phone(
        self, user_id: str, phone: str, now: float, *, expected_epoch: int | None = None
    ) -> int | None:
        current = self._users.get(user_id) or Enrolment(user_id=user_id)
        if expected_epoch is not None and current.epoch != expected_epoch:
            return None
        epoch = current.epoch + 1
        self._users[user_id] = dataclasses.replace(
            current,
            phone=phone,
            phone_verified_at=now,
            epoch=epoch,
            pending_secret=None,
            pending_binding=None,
            sms_challenge=None,
        )
        self._challenges.pop(user_id, None)
        return epoch
