from __future__ import annotations

import dataclasses
import hmac
from collections.abc import Sequence

from mfa_guard.core.marker import EnrolmentSummary
from mfa_guard.core.recovery import RecoveryCodeSet
from mfa_guard.stores.base import (
    Enrolment,
    FactorStatus,
    SMSChallenge,
    SMSPurpose,
    StoredSecrets,
)


class MemoryStore:
    """In-process store for tests and single-process demos. Each method runs without an
    ``await`` inside, so it is atomic on the event loop."""

    def __init__(self) -> None:
        self._users: dict[str, Enrolment] = {}

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
            )
        return found

    async def begin_enrolment(
        self, user_id: str, pending_secret: str, *, binding: str | None = None
    ) -> None:
        current = self._users.get(user_id) or Enrolment(user_id=user_id)
        self._users[user_id] = dataclasses.replace(
            current, pending_secret=pending_secret, pending_binding=binding
        )

    async def confirm_enrolment(
        self,
        user_id: str,
        pending_secret: str,
        *,
        step: int,
        recovery: RecoveryCodeSet,
        now: float,
    ) -> int | None:
        current = self._users.get(user_id)
        if current is None or current.enrolled or current.pending_secret != pending_secret:
            return None
        self._users[user_id] = dataclasses.replace(
            current,
            secret=pending_secret,
            pending_secret=None,
            pending_binding=None,
            sms_challenge=None,
            confirmed_at=now,
            last_step=step,
            recovery=recovery,
            epoch=current.epoch + 1,
        )
        return current.epoch + 1

    async def accept_step(self, user_id: str, step: int) -> bool:
        current = self._users.get(user_id)
        if current is None or not current.enrolled:
            return False
        if current.last_step is not None and step <= current.last_step:
            return False
        self._users[user_id] = dataclasses.replace(current, last_step=step)
        return True

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
                StoredSecrets(e.user_id, e.secret, e.pending_secret)
                for e in self._users.values()
                if (e.secret is not None or e.pending_secret is not None)
                and (after is None or e.user_id > after)
            ),
            key=lambda stored: stored.user_id,
        )
        return found[:limit]

    async def replace_secrets(self, old: StoredSecrets, new: StoredSecrets) -> bool:
        current = self._users.get(old.user_id)
        if current is None or (current.secret, current.pending_secret) != (
            old.secret,
            old.pending_secret,
        ):
            return False
        self._users[old.user_id] = dataclasses.replace(
            current, secret=new.secret, pending_secret=new.pending_secret
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
        return epoch
