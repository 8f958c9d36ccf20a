"""Enrolment and verification: core rules + store + throttling + audit events.

Expected refusals are data (:class:`Denied`), not exceptions; only an unreachable backend raises
(:class:`mfa_guard.errors.StoreUnavailable`).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from enum import StrEnum

import anyio.to_thread
import segno

from mfa_guard.clock import Clock
from mfa_guard.core import recovery, totp
from mfa_guard.crypto import SecretBox
from mfa_guard.events import AuditEvent, EventKind, EventSink
from mfa_guard.ratelimit import FailureLimiter
from mfa_guard.stores.base import Enrolment, MFAStore

logger = logging.getLogger("mfa_guard")


class Reason(StrEnum):
    INVALID_CODE = "invalid_code"
    CODE_ALREADY_USED = "code_already_used"
    TOO_MANY_ATTEMPTS = "too_many_attempts"
    NOT_ENROLLED = "not_enrolled"
    ALREADY_ENROLLED = "already_enrolled"
    NO_PENDING_ENROLMENT = "no_pending_enrolment"
    CONFLICT = "conflict"


_MESSAGES = {
    Reason.INVALID_CODE: "That code is not valid. Check your authenticator app and try again.",
    Reason.CODE_ALREADY_USED: "That code was already used. Wait for the next code and try again.",
    Reason.TOO_MANY_ATTEMPTS: "Too many attempts. Wait a moment before trying again.",
    Reason.NOT_ENROLLED: "Two-factor authentication is not enabled for this account.",
    Reason.ALREADY_ENROLLED: "Two-factor authentication is already enabled for this account.",
    Reason.NO_PENDING_ENROLMENT: "Start the set-up first: no authenticator key is waiting.",
    Reason.CONFLICT: "Another request changed your two-factor settings. Please start again.",
}


class Method(StrEnum):
    TOTP = "totp"
    RECOVERY = "recovery"


@dataclass(frozen=True, slots=True)
class Denied:
    reason: Reason
    retry_at: float | None = None

    @property
    def message(self) -> str:
        return _MESSAGES[self.reason]


@dataclass(frozen=True, slots=True)
class Setup:
    secret: str
    otpauth_uri: str
    qr_svg: str

    @property
    def grouped_secret(self) -> str:
        return totp.grouped(self.secret)


@dataclass(frozen=True, slots=True)
class Verified:
    method: Method
    epoch: int
    recovery_codes: tuple[str, ...] = ()


class MFAService:
    def __init__(
        self,
        *,
        store: MFAStore,
        box: SecretBox,
        limiter: FailureLimiter,
        events: EventSink,
        clock: Clock,
        issuer: str,
        params: totp.TOTPParameters,
    ) -> None:
        self.store = store
        self._box = box
        self._limiter = limiter
        self._events = events
        self._clock = clock
        self._issuer = issuer
        self._params = params

    async def enrolment(self, user_id: str) -> Enrolment:
        return await self.store.get(user_id) or Enrolment(user_id=user_id)

    async def begin_setup(self, user_id: str, account: str, ip: str | None) -> Setup | Denied:
        """A new pending secret with its URI and QR code; replaces an unconfirmed one."""
        if (await self.enrolment(user_id)).enrolled:
            return Denied(Reason.ALREADY_ENROLLED)
        secret = totp.new_secret()
        await self.store.begin_enrolment(user_id, self._box.encrypt(secret))
        await self._emit(EventKind.ENROLMENT_STARTED, user_id, Method.TOTP, ip)
        return self.setup_view(secret, account)

    async def pending_setup(self, user_id: str, account: str) -> Setup | None:
        """The set-up waiting for confirmation, to show its QR code again."""
        enrolment = await self.enrolment(user_id)
        if enrolment.enrolled or enrolment.pending_secret is None:
            return None
        return self.setup_view(self._box.decrypt(enrolment.pending_secret), account)

    def setup_view(self, secret: str, account: str) -> Setup:
        uri = totp.provisioning_uri(secret, self._params, account=account, issuer=self._issuer)
        svg = segno.make(uri, error="m").svg_inline(
            scale=5, title=f"QR code for {self._issuer}", svgclass="mfa-qr", lineclass=None
        )
        return Setup(secret=secret, otpauth_uri=uri, qr_svg=str(svg))

    async def confirm_setup(self, user_id: str, raw_code: str, ip: str | None) -> Verified | Denied:
        """Activates the pending secret with its first valid code; returns the recovery codes."""
        code = totp.normalise_code(raw_code, self._params.digits)
        if code is None:
            return Denied(Reason.INVALID_CODE)
        enrolment = await self.enrolment(user_id)
        if enrolment.enrolled:
            return Denied(Reason.ALREADY_ENROLLED)
        if enrolment.pending_secret is None:
            return Denied(Reason.NO_PENDING_ENROLMENT)
        if (locked := await self._acquire(user_id, ip)) is not None:
            return locked
        now = self._clock()
        step = totp.matching_step(
            self._box.decrypt(enrolment.pending_secret), self._params, code, now
        )
        if step is None:
            await self._emit(EventKind.VERIFICATION_FAILED, user_id, Method.TOTP, ip)
            return Denied(Reason.INVALID_CODE)
        codes = recovery.generate()
        hashed = await anyio.to_thread.run_sync(recovery.hash_set, codes)
        epoch = await self.store.confirm_enrolment(
            user_id, enrolment.pending_secret, step=step, recovery=hashed, now=now
        )
        if epoch is None:
            return Denied(Reason.CONFLICT)
        await self._limiter.reset(user_id)
        await self._emit(EventKind.ENROLLED, user_id, Method.TOTP, ip)
        return Verified(Method.TOTP, epoch, tuple(codes))

    async def verify(
        self, user_id: str, method: Method, raw_code: str, ip: str | None
    ) -> Verified | Denied:
        """Checks a second factor: throttled per user, a TOTP step or recovery code used once."""
        if method is Method.TOTP:
            code = totp.normalise_code(raw_code, self._params.digits)
        else:
            code = recovery.normalise(raw_code)
        if code is None:
            return Denied(Reason.INVALID_CODE)
        enrolment = await self.enrolment(user_id)
        if not enrolment.enrolled or enrolment.secret is None:
            return Denied(Reason.NOT_ENROLLED)
        if (locked := await self._acquire(user_id, ip)) is not None:
            return locked
        if method is Method.TOTP:
            outcome = await self._check_totp(enrolment, enrolment.secret, code)
        else:
            outcome = await self._check_recovery(enrolment, code)
        if outcome is not None:
            kind = (
                EventKind.CODE_REUSED
                if outcome.reason is Reason.CODE_ALREADY_USED
                else EventKind.VERIFICATION_FAILED
            )
            await self._emit(kind, user_id, method, ip)
            return outcome
        await self._limiter.reset(user_id)
        if method is Method.RECOVERY:
            await self._emit(EventKind.RECOVERY_CODE_USED, user_id, method, ip)
        await self._emit(EventKind.VERIFIED, user_id, method, ip)
        return Verified(method, enrolment.epoch)

    async def _check_totp(self, enrolment: Enrolment, secret: str, code: str) -> Denied | None:
        step = totp.matching_step(self._box.decrypt(secret), self._params, code, self._clock())
        if step is None:
            return Denied(Reason.INVALID_CODE)
        if not await self.store.accept_step(enrolment.user_id, step):
            return Denied(Reason.CODE_ALREADY_USED)
        return None

    async def _check_recovery(self, enrolment: Enrolment, code: str) -> Denied | None:
        if enrolment.recovery is None or not enrolment.recovery.hashes:
            return Denied(Reason.INVALID_CODE)
        stored = enrolment.recovery
        candidate = await anyio.to_thread.run_sync(
            recovery.hash_code, code, stored.salt, stored.params
        )
        found = recovery.find(candidate, stored.hashes)
        if found is None or not await self.store.use_recovery_code(enrolment.user_id, found):
            return Denied(Reason.INVALID_CODE)
        return None

    async def regenerate_recovery_codes(self, user_id: str, ip: str | None) -> list[str] | Denied:
        codes = recovery.generate()
        hashed = await anyio.to_thread.run_sync(recovery.hash_set, codes)
        if not await self.store.replace_recovery_codes(user_id, hashed):
            return Denied(Reason.NOT_ENROLLED)
        await self._emit(EventKind.RECOVERY_CODES_REGENERATED, user_id, None, ip)
        return codes

    async def disable(
        self, user_id: str, method: Method, raw_code: str, ip: str | None
    ) -> int | Denied:
        """Turns 2FA off after a valid current code; returns the new epoch."""
        outcome = await self.verify(user_id, method, raw_code, ip)
        if isinstance(outcome, Denied):
            return outcome
        epoch = await self.store.disable(user_id)
        await self._emit(EventKind.DISABLED, user_id, method, ip)
        return epoch

    async def _acquire(self, user_id: str, ip: str | None) -> Denied | None:
        retry_at = await self._limiter.acquire(user_id, self._clock())
        if retry_at is None:
            return None
        await self._emit(EventKind.LOCKED_OUT, user_id, None, ip)
        return Denied(Reason.TOO_MANY_ATTEMPTS, retry_at=retry_at)

    async def _emit(
        self, kind: EventKind, user_id: str, method: Method | None, ip: str | None
    ) -> None:
        event = AuditEvent(
            kind=kind,
            user_id=user_id,
            at=self._clock(),
            method=None if method is None else method.value,
            client_ip=ip,
        )
        try:
            await self._events.emit(event)
        except Exception:
            logger.exception("mfa_guard event sink failed on %s", kind.value)
