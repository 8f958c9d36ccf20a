"""Enrolment and verification: core rules + store + throttling + audit events.

Expected refusals are data (:class:`mfa_guard.errors.Denied`), not exceptions; only an
unreachable backend raises (:class:`mfa_guard.errors.StoreUnavailable`).
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
import secrets
from collections import OrderedDict
from collections.abc import Awaitable, Coroutine
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, TypeVar

import anyio.to_thread
import segno

from mfa_guard.clock import Clock
from mfa_guard.core import recovery, sms_wording, totp, webauthn
from mfa_guard.core import sms as sms_codes
from mfa_guard.core.marker import STRONG_METHODS
from mfa_guard.crypto import SecretBox
from mfa_guard.errors import ConfigurationError, Denied, Reason, StoreUnavailable
from mfa_guard.events import AuditEvent, EventKind, EventSink, with_user_agent
from mfa_guard.ratelimit import FailureLimiter, reset_all
from mfa_guard.send_limits import Reservation, SendLimiter
from mfa_guard.settings import SMSSettings
from mfa_guard.sms import SMSError, SMSProvider
from mfa_guard.stores.base import (
    Authenticator,
    CeremonyPurpose,
    Enrolment,
    FactorKind,
    MFAStore,
    SMSChallenge,
    SMSPurpose,
    WebAuthnChallenge,
)
from mfa_guard.stores.sites import SiteDirectory

logger = logging.getLogger("mfa_guard")
A = TypeVar("A")
B = TypeVar("B")


async def concurrently(first: Awaitable[A], second: Awaitable[B]) -> tuple[A, B]:
    """Both results; if one fails, the other is cancelled and the first error is raised as is."""
    one = asyncio.ensure_future(first)
    two = asyncio.ensure_future(second)
    try:
        return await one, await two
    except BaseException:
        one.cancel()
        two.cancel()
        await asyncio.gather(one, two, return_exceptions=True)
        raise


class Method(StrEnum):
    """A second factor a code is checked as."""

    TOTP = "totp"
    RECOVERY = "recovery"
    SMS = "sms"
    # A passkey or security key: an assertion, not a code (MFAService.verify_passkey).
    WEBAUTHN = "webauthn"


# The longest name a user may give an authenticator.
MAX_NAME = 64
DEFAULT_NAMES = {FactorKind.TOTP: "Authenticator app", FactorKind.WEBAUTHN: "Security key"}


def new_authenticator_id() -> str:
    """A new authenticator's public id: 16 URL-safe characters (96 random bits)."""
    return secrets.token_urlsafe(12)


def clean_name(raw: str) -> str | None:
    """A name the user gave, trimmed; ``None`` if it is empty, longer than :data:`MAX_NAME` or
    holds a control character."""
    name = " ".join(raw.split())
    if not 0 < len(name) <= MAX_NAME or not name.isprintable():
        return None
    return name


def default_name(enrolment: Enrolment, kind: FactorKind, base: str | None = None) -> str:
    """``base`` (the kind's usual name), numbered when the user already has one so called:
    "Authenticator app", "Authenticator app 2", ..."""
    base = base or DEFAULT_NAMES[kind]
    taken = {a.name for a in enrolment.authenticators}
    if base not in taken:
        return base
    number = 2
    while f"{base} {number}" in taken:
        number += 1
    return f"{base} {number}"


@dataclass(frozen=True, slots=True)
class TextSent:
    """A code texted to ``phone``, valid until ``expires_at``."""

    phone: str
    expires_at: float
    # The code's lifetime as the text said it (sms.code_ttl_seconds).
    ttl_seconds: int


@dataclass(frozen=True, slots=True)
class Setup:
    """A set-up waiting for its first code: the new secret, its ``otpauth://`` URI and the QR
    code of it (inline SVG)."""

    secret: str
    otpauth_uri: str
    qr_svg: str

    @property
    def grouped_secret(self) -> str:
        return totp.grouped(self.secret)


@dataclass(frozen=True, slots=True)
class Verified:
    """A code accepted: how, the user's epoch now, the recovery codes a new enrolment shows
    once, and the authenticator a set-up added."""

    method: Method
    epoch: int
    recovery_codes: tuple[str, ...] = ()
    # The authenticator a set-up added.
    authenticator: Authenticator | None = None


@dataclass(frozen=True, slots=True)
class SMSChannel:
    """What sending SMS codes needs; absent when SMS is off."""

    provider: SMSProvider
    limiter: SendLimiter
    settings: SMSSettings


# Modules of white around the code (ISO/IEC 18004: at least 4), which readers need to find it.
QR_QUIET_ZONE = 4


def qr_svg(uri: str, issuer: str) -> str:
    """The enrolment QR code of ``uri``, as inline SVG. segno chooses the mask by scoring all
    eight (ISO/IEC 18004 7.8.3): about 7 ms of the 8 ms this takes, hence :class:`QRCodes`.

    One unit a module and no fixed size, only a ``viewBox``: the page's CSS scales it whole,
    4-module quiet zone included, where a squeezed fixed-size drawing gets clipped. Dark
    modules on a white square of its own, whatever the page's colours."""
    svg = segno.make(uri, error="m").svg_inline(
        scale=1,
        border=QR_QUIET_ZONE,
        omitsize=True,
        dark="#000",
        light="#fff",
        title=f"QR code for {issuer}",
        svgclass="mfa-qr",
        lineclass=None,
    )
    return str(svg)


class QRCodes:
    """The QR codes of pending set-ups, each drawn once and shown again from here (a reload of
    the set-up page, the page after the API call), by secret. The SVG draws the secret, so
    entries are few and short-lived: at most ``size``, for ``max_age`` seconds, and a set-up's
    code goes as soon as it is confirmed in this process."""

    def __init__(self, size: int = 64, max_age: float = 600.0) -> None:
        self._size = size
        self._max_age = max_age
        self._codes: OrderedDict[str, tuple[float, str, str]] = OrderedDict()

    def get(self, secret: str, uri: str, now: float) -> str | None:
        found = self._codes.get(secret)
        if found is None:
            return None
        drawn_at, drawn_uri, svg = found
        if drawn_uri != uri or not 0 <= now - drawn_at < self._max_age:
            del self._codes[secret]
            return None
        return svg

    def put(self, secret: str, uri: str, svg: str, now: float) -> str:
        self._codes[secret] = (now, uri, svg)
        self._codes.move_to_end(secret)
        while len(self._codes) > self._size:
            self._codes.popitem(last=False)
        return svg

    def forget(self, secret: str) -> None:
        self._codes.pop(secret, None)


class MFAService:
    """Each user's second factor: enrolment, verification, recovery codes, the phone, turning
    2FA off; the rules of :mod:`mfa_guard.core` applied with the store, the failure limits and
    the audit events. The guard builds one, ``guard.service``; the kit's pages and JSON API
    work through it.

    Expected refusals are returned, as :class:`~mfa_guard.Denied`; only a backend that does not
    answer raises (:class:`~mfa_guard.StoreUnavailable`). A ``session`` argument is the
    session's :attr:`Marker.nonce <mfa_guard.Marker.nonce>` (``guard.session_marker(scope)``),
    which binds a set-up and a texted code to the session that asked for them. The service
    never writes a session's marker: a session that verifies a code through the kit's pages or
    API is marked verified by them, not by a call made here. An app calls it for the rest:
    reading a user's :meth:`enrolment`, beginning the set-up the kit's enrolment page then
    shows (:meth:`begin_setup`), naming the sites that require 2FA of a user
    (:meth:`enforcing_sites`).

    New recovery-code sets are hashed at ``recovery_kdf`` (:class:`~mfa_guard.ScryptCost`; a
    cost under its floor raises :class:`~mfa_guard.ConfigurationError`), and each set is
    checked at the cost it was stored with.
    """

    def __init__(
        self,
        *,
        store: MFAStore,
        box: SecretBox,
        limiter: FailureLimiter,
        recovery_limiter: FailureLimiter,
        events: EventSink,
        clock: Clock,
        issuer: str,
        params: totp.TOTPParameters,
        sms: SMSChannel | None = None,
        require_phone: bool = False,
        sites: SiteDirectory | None = None,
        everyone_required: bool = False,
        recovery_kdf: recovery.ScryptCost = recovery.DEFAULT_COST,
        relying_party: webauthn.RelyingParty | None = None,
    ) -> None:
        problem = recovery.cost_problem(recovery_kdf)
        if problem is not None:
            raise ConfigurationError(problem)
        # What new recovery-code sets are hashed at; each set is checked at its own stored cost.
        self._recovery_kdf = recovery_kdf
        self.store = store
        self.sites = sites
        # MFAGuardSettings.everyone: 2FA required of every account, so never turned off.
        self.everyone_required = everyone_required
        self._box = box
        # Two budgets of failed attempts per user: codes (TOTP, SMS) and recovery codes, so
        # that an attacker who used one up leaves the owner the other path (docs/security.md).
        self._limiter = limiter
        self._recovery_limiter = recovery_limiter
        self._events = events
        self._clock = clock
        self._issuer = issuer
        self._params = params
        self.sms = sms
        self._require_phone = require_phone
        self._pending: set[asyncio.Task[None]] = set()
        self._qr_codes = QRCodes()
        # Passkeys and security keys: off without a relying party (settings.webauthn.rp_id).
        self.relying_party = relying_party

    def sms_offered(self, enrolment: Enrolment) -> bool:
        """SMS is a fallback for enrolled users with a verified phone, never the only method."""
        return (
            self.sms is not None and enrolment.enrolled and enrolment.phone_verified_at is not None
        )

    async def enrolment(self, user_id: str) -> Enrolment:
        return await self.store.get(user_id) or Enrolment(user_id=user_id)

    async def begin_setup(
        self, user_id: str, account: str, ip: str | None, *, session: str
    ) -> Setup | Denied:
        """A new pending secret with its URI and QR code, bound to ``session`` (the session's
        nonce): only that session is shown it and may confirm it. The newest set-up wins: it
        replaces an unconfirmed one, whichever session began that. An enrolled user sets up
        another authenticator app this way (the kit's routes ask for a recent second factor
        first)."""
        enrolment = await self.enrolment(user_id)
        if self._require_phone and not enrolment.enrolled and enrolment.phone_verified_at is None:
            return Denied(Reason.PHONE_REQUIRED)
        secret = totp.new_secret()
        await self.store.begin_enrolment(
            user_id, self._box.encrypt(secret), binding=self._setup_binding(session)
        )
        await self._emit(EventKind.ENROLMENT_STARTED, user_id, Method.TOTP, ip)
        return self.setup_view(secret, account)

    async def pending_setup(self, user_id: str, account: str, *, session: str) -> Setup | None:
        """The set-up ``session`` began and that waits for confirmation, to show its QR code
        again; another session's is never shown."""
        enrolment = await self.enrolment(user_id)
        pending = enrolment.pending_secret
        if pending is None or not self.setup_pending(enrolment, session):
            return None
        return self.setup_view(self._box.decrypt(pending), account)

    def setup_pending(self, enrolment: Enrolment, session: str) -> bool:
        """Whether a set-up ``session`` began waits for its first code (``status``'s
        ``enrolment_pending``: another session's set-up is not this one's business)."""
        binding = enrolment.pending_binding
        return (
            enrolment.pending_secret is not None
            and binding is not None
            and hmac.compare_digest(binding, self._setup_binding(session))
        )

    def _setup_binding(self, session: str) -> str:
        """A keyed hash of the session's nonce: the store learns which session began a set-up,
        not the nonce (which the session cookie carries)."""
        message = b"mfa_guard set-up binding\x00" + session.encode()
        return hmac.new(self._box.marker_key, message, hashlib.sha256).hexdigest()[:32]

    def setup_view(self, secret: str, account: str) -> Setup:
        uri = totp.provisioning_uri(secret, self._params, account=account, issuer=self._issuer)
        svg = self._qr_codes.get(secret, uri, self._clock())
        if svg is None:
            svg = self._qr_codes.put(secret, uri, qr_svg(uri, self._issuer), self._clock())
        return Setup(secret=secret, otpauth_uri=uri, qr_svg=svg)

    async def confirm_setup(
        self,
        user_id: str,
        raw_code: str,
        ip: str | None,
        *,
        session: str,
        name: str | None = None,
        epoch: int | None = None,
    ) -> Verified | Denied:
        """Adds the authenticator app ``session`` set up, with its first valid code, under
        ``name`` (the kind's usual name when ``None``). The user's first factor turns 2FA on
        and comes with the recovery codes (returned, shown once); another one is added only
        while the user's epoch is still ``epoch`` (the one the asking session verified at).
        Another session's set-up is no set-up here."""
        code = totp.normalise_code(raw_code, self._params.digits)
        if code is None:
            return Denied(Reason.INVALID_CODE)
        enrolment = await self.enrolment(user_id)
        if enrolment.pending_secret is None or not self.setup_pending(enrolment, session):
            return Denied(Reason.NO_PENDING_ENROLMENT)
        if (locked := await self._acquire(user_id, ip)) is not None:
            return locked
        now = self._clock()
        secret = self._box.decrypt(enrolment.pending_secret)
        step = totp.matching_step(secret, self._params, code, now)
        if step is None:
            await self._emit(EventKind.VERIFICATION_FAILED, user_id, Method.TOTP, ip)
            return Denied(Reason.INVALID_CODE)
        app = Authenticator(
            id=new_authenticator_id(),
            kind=FactorKind.TOTP,
            name=name or default_name(enrolment, FactorKind.TOTP),
            created_at=now,
            last_used_at=now,
            secret=enrolment.pending_secret,
            last_step=step,
        )
        added = await self._add(
            enrolment, app, ip, pending_secret=enrolment.pending_secret, epoch=epoch
        )
        if isinstance(added, Denied):
            return added
        self._qr_codes.forget(secret)
        await self._forget_failures(user_id)
        return Verified(Method.TOTP, added[0], added[1], authenticator=app)

    async def _add(
        self,
        enrolment: Enrolment,
        authenticator: Authenticator,
        ip: str | None,
        *,
        pending_secret: str | None = None,
        epoch: int | None,
    ) -> tuple[int, tuple[str, ...]] | Denied:
        """Stores a new authenticator: the user's first comes with recovery codes (returned),
        another needs the user's epoch to be ``epoch`` still. The new epoch, and the codes."""
        user_id = enrolment.user_id
        codes: list[str] = []
        hashed = None
        if not enrolment.enrolled:
            codes = recovery.generate()
            hashed = await anyio.to_thread.run_sync(recovery.hash_set, codes, self._recovery_kdf)
        new_epoch = await self.store.add_authenticator(
            user_id,
            authenticator,
            now=authenticator.created_at,
            recovery=hashed,
            pending_secret=pending_secret,
            expected_epoch=None if hashed is not None else epoch,
        )
        if new_epoch is None:
            expected = None if hashed is not None else epoch
            return await self._not_added(user_id, authenticator, expected)
        kind = EventKind.ENROLLED if hashed is not None else EventKind.AUTHENTICATOR_ADDED
        await self._emit(kind, user_id, Method(authenticator.kind.value), ip)
        return new_epoch, tuple(codes)

    async def _not_added(
        self, user_id: str, authenticator: Authenticator, expected: int | None
    ) -> Denied:
        """Why the store added a passkey or security key not: another request changed the
        user's factors (a first factor meanwhile, or the epoch moved from ``expected``), or
        else its credential is already registered (to another account: a credential
        registers once)."""
        if authenticator.credential_id is None:
            return Denied(Reason.CONFLICT)
        now = await self.enrolment(user_id)
        unchanged = not now.enrolled if expected is None else now.epoch == expected
        return Denied(Reason.AUTHENTICATOR_ALREADY_REGISTERED if unchanged else Reason.CONFLICT)

    async def rename_authenticator(
        self, user_id: str, authenticator_id: str, raw_name: str, ip: str | None
    ) -> Authenticator | Denied:
        """Gives one of the user's authenticators a new name."""
        name = clean_name(raw_name)
        if name is None:
            return Denied(Reason.INVALID_NAME, params={"max_length": MAX_NAME})
        if not await self.store.rename_authenticator(user_id, authenticator_id, name):
            return Denied(Reason.AUTHENTICATOR_NOT_FOUND)
        await self._emit(EventKind.AUTHENTICATOR_RENAMED, user_id, None, ip)
        found = (await self.enrolment(user_id)).authenticator(authenticator_id)
        return found if found is not None else Denied(Reason.AUTHENTICATOR_NOT_FOUND)

    async def remove_authenticator(
        self, user_id: str, authenticator_id: str, ip: str | None, *, epoch: int
    ) -> int | Denied:
        """Removes one of the user's authenticators (the kit's routes ask for a recent second
        factor first); returns the new epoch, which every other session must verify again at.
        The last one turns 2FA off, under the rules of :meth:`disable`: refused while the app
        or a site of the user requires 2FA. ``epoch`` is the one the asking session verified
        at: a change since (a revocation) wins."""
        enrolment = await self.enrolment(user_id)
        removed = enrolment.authenticator(authenticator_id)
        if removed is None:
            return Denied(Reason.AUTHENTICATOR_NOT_FOUND)
        method = Method(removed.kind.value)
        if len(enrolment.authenticators) == 1:
            refused = await self._may_turn_off(user_id, method, ip)
            if refused is not None:
                return refused
            if enrolment.epoch != epoch:
                return Denied(Reason.CONFLICT)
            # Turning 2FA off removes whatever the user holds by then, as disable does.
            turned_off = await self.store.disable(user_id)
            await self._emit(EventKind.DISABLED, user_id, method, ip)
            return turned_off
        new_epoch = await self.store.remove_authenticator(
            user_id, authenticator_id, expected_epoch=epoch
        )
        if new_epoch is None:
            return Denied(Reason.CONFLICT)
        await self._emit(EventKind.AUTHENTICATOR_REMOVED, user_id, method, ip)
        return new_epoch

    # -- passkeys and security keys (WebAuthn) ---------------------------------------------

    async def passkey_registration(
        self, user_id: str, account: str, *, session: str
    ) -> dict[str, Any] | Denied:
        """The options of ``navigator.credentials.create`` for a new passkey or security key of
        the user, with a challenge bound to ``session``, single use, for the relying party's
        ``challenge_seconds``. The user's keys are excluded (an authenticator registers once).
        For an enrolled user, the kit's routes ask for a recent second factor first."""
        rp = self.relying_party
        if rp is None:
            return Denied(Reason.PASSKEYS_DISABLED)
        enrolment = await self.enrolment(user_id)
        if self._require_phone and not enrolment.enrolled and enrolment.phone_verified_at is None:
            return Denied(Reason.PHONE_REQUIRED)
        challenge = await self._new_challenge(rp, user_id, CeremonyPurpose.REGISTER, session)
        return webauthn.registration_options(
            rp,
            user_handle=self._user_handle(user_id),
            user_name=account,
            display_name=account,
            exclude=enrolment.keys,
            challenge=challenge,
        )

    async def register_passkey(
        self,
        user_id: str,
        credential: object,
        ip: str | None,
        *,
        session: str,
        name: str | None = None,
        epoch: int | None = None,
    ) -> Verified | Denied:
        """Adds the passkey or security key of the browser's answer to
        :meth:`passkey_registration` (``credential.toJSON()``), under ``name`` ("Passkey" or
        "Security key" when ``None``). The answer's challenge must be the one issued to
        ``session``, unused and unexpired (it is used up either way). As with an app: the
        user's first factor turns 2FA on and comes with the recovery codes; another one is
        added only while the user's epoch is still ``epoch``."""
        rp = self.relying_party
        if rp is None:
            return Denied(Reason.PASSKEYS_DISABLED)
        challenge = webauthn.challenge_of(credential)
        if challenge is None:
            return Denied(Reason.WEBAUTHN_REJECTED)
        if (locked := await self._acquire(user_id, ip)) is not None:
            return locked
        if not await self._use_challenge(user_id, CeremonyPurpose.REGISTER, challenge, session):
            await self._emit(EventKind.VERIFICATION_FAILED, user_id, Method.WEBAUTHN, ip)
            return Denied(Reason.WEBAUTHN_CHALLENGE_EXPIRED)
        try:
            key = webauthn.verify_registration(rp, credential, challenge=challenge)
        except webauthn.WebAuthnRejected as exc:
            logger.info("mfa_guard refused a passkey registration: %s", exc.why)
            await self._emit(EventKind.VERIFICATION_FAILED, user_id, Method.WEBAUTHN, ip)
            return Denied(Reason.WEBAUTHN_REJECTED)
        enrolment = await self.enrolment(user_id)
        if any(held.credential_id == key.credential_id for held in enrolment.keys):
            return Denied(Reason.AUTHENTICATOR_ALREADY_REGISTERED)
        now = self._clock()
        usual = "Passkey" if key.backed_up or "internal" in key.transports else None
        added_key = Authenticator(
            id=new_authenticator_id(),
            kind=FactorKind.WEBAUTHN,
            name=name or default_name(enrolment, FactorKind.WEBAUTHN, usual),
            created_at=now,
            last_used_at=now,
            credential_id=key.credential_id,
            public_key=key.public_key,
            sign_count=key.sign_count,
            transports=key.transports,
            aaguid=key.aaguid,
            backed_up=key.backed_up,
        )
        added = await self._add(enrolment, added_key, ip, epoch=epoch)
        if isinstance(added, Denied):
            return added
        await self._forget_failures(user_id)
        return Verified(Method.WEBAUTHN, added[0], added[1], authenticator=added_key)

    async def passkey_sign_in(self, user_id: str, *, session: str) -> dict[str, Any] | Denied:
        """The options of ``navigator.credentials.get`` for the user's passkeys and security
        keys, with a challenge bound to ``session`` (single use, short-lived)."""
        rp = self.relying_party
        if rp is None:
            return Denied(Reason.PASSKEYS_DISABLED)
        enrolment = await self.enrolment(user_id)
        if not enrolment.keys:
            return Denied(Reason.NO_PASSKEY)
        challenge = await self._new_challenge(rp, user_id, CeremonyPurpose.SIGN_IN, session)
        return webauthn.authentication_options(rp, allow=enrolment.keys, challenge=challenge)

    async def verify_passkey(
        self, user_id: str, credential: object, ip: str | None, *, session: str
    ) -> Verified | Denied:
        """Checks the browser's answer to :meth:`passkey_sign_in`: throttled with the codes,
        its challenge issued to ``session`` and used once, signed by one of the user's keys
        (not a removed one, not another user's), its counter going up (compare-and-set)."""
        rp = self.relying_party
        if rp is None:
            return Denied(Reason.PASSKEYS_DISABLED)
        challenge = webauthn.challenge_of(credential)
        credential_id = webauthn.credential_id_of(credential)
        if challenge is None or credential_id is None:
            return Denied(Reason.WEBAUTHN_REJECTED)
        # One round trip for the three: the enrolment, the attempt's slot, the challenge.
        (enrolment, locked), fresh = await concurrently(
            concurrently(self.enrolment(user_id), self._acquire(user_id, ip, Method.WEBAUTHN)),
            self._use_challenge(user_id, CeremonyPurpose.SIGN_IN, challenge, session),
        )
        if not enrolment.enrolled:
            return Denied(Reason.NOT_ENROLLED)
        if locked is not None:
            return locked
        if fresh:
            outcome = await self._check_assertion(
                rp, enrolment, credential, credential_id, challenge
            )
        else:
            # Not issued to this session, used already or expired: nothing more is looked at.
            outcome = Denied(Reason.WEBAUTHN_CHALLENGE_EXPIRED)
        if outcome is not None:
            await self._emit(EventKind.VERIFICATION_FAILED, user_id, Method.WEBAUTHN, ip)
            return outcome
        self._background(self._forget_failures(user_id))
        await self._emit(EventKind.VERIFIED, user_id, Method.WEBAUTHN, ip)
        return Verified(Method.WEBAUTHN, enrolment.epoch)

    async def _check_assertion(
        self,
        rp: webauthn.RelyingParty,
        enrolment: Enrolment,
        credential: object,
        credential_id: bytes,
        challenge: bytes,
    ) -> Denied | None:
        key = next((k for k in enrolment.keys if k.credential_id == credential_id), None)
        if key is None:
            # Another user's credential, a removed key's, or none at all.
            return Denied(Reason.WEBAUTHN_REJECTED)
        try:
            # No user handle to compare: the key is found by its credential id among this
            # user's own keys, the binding WebAuthn asks for (7.2 step 6). The handle only
            # names the account inside the authenticator, and changes when the oldest
            # encryption key is retired, while the keys registered before stay the user's.
            assertion = webauthn.verify_authentication(rp, credential, challenge=challenge, key=key)
        except webauthn.CounterRegressed as exc:
            logger.warning("mfa_guard refused a passkey: %s", exc.why)
            return Denied(Reason.WEBAUTHN_COUNTER_REGRESSED)
        except webauthn.WebAuthnRejected as exc:
            logger.info("mfa_guard refused a passkey: %s", exc.why)
            return Denied(Reason.WEBAUTHN_REJECTED)
        now = self._clock()
        if not await self.store.accept_assertion(
            enrolment.user_id, key.id, assertion.sign_count, now
        ):
            # Another request recorded this count or a higher one first: a replay or a clone.
            return Denied(Reason.WEBAUTHN_COUNTER_REGRESSED)
        return None

    async def _new_challenge(
        self, rp: webauthn.RelyingParty, user_id: str, purpose: CeremonyPurpose, session: str
    ) -> bytes:
        challenge = webauthn.new_challenge()
        now = self._clock()
        pending = WebAuthnChallenge(
            purpose=purpose,
            challenge_hash=webauthn.hash_challenge(challenge),
            binding=self._setup_binding(session),
            expires_at=now + rp.challenge_seconds,
        )
        await self.store.start_webauthn_challenge(user_id, pending, now)
        return challenge

    async def _use_challenge(
        self, user_id: str, purpose: CeremonyPurpose, challenge: bytes, session: str
    ) -> bool:
        return await self.store.consume_webauthn_challenge(
            user_id,
            purpose,
            webauthn.hash_challenge(challenge),
            self._setup_binding(session),
            self._clock(),
        )

    def _user_handle(self, user_id: str) -> bytes:
        return webauthn.user_handle(self._box.marker_key, user_id)

    async def verify(
        self, user_id: str, method: Method, raw_code: str, ip: str | None, *, session: str = ""
    ) -> Verified | Denied:
        """Checks a second factor: throttled per user, a TOTP step, recovery or SMS code used
        once. ``session`` is the session's nonce an SMS code is bound to."""
        if method is Method.WEBAUTHN:
            # A passkey answers with an assertion (verify_passkey), never a code.
            return Denied(Reason.INVALID_METHOD)
        if method is Method.TOTP:
            code = totp.normalise_code(raw_code, self._params.digits)
        elif method is Method.SMS:
            code = totp.normalise_code(raw_code, sms_codes.CODE_DIGITS)
        else:
            code = recovery.normalise(raw_code)
        if code is None:
            return Denied(Reason.INVALID_CODE)
        # One round trip for both: the enrolment read and the attempt's throttling slot.
        enrolment, locked = await concurrently(
            self.enrolment(user_id), self._acquire(user_id, ip, method)
        )
        if not enrolment.enrolled:
            return Denied(Reason.NOT_ENROLLED)
        if method is Method.SMS and not self.sms_offered(enrolment):
            return Denied(Reason.SMS_DISABLED if self.sms is None else Reason.NO_VERIFIED_PHONE)
        if locked is not None:
            return locked
        if method is Method.TOTP:
            outcome = await self._check_totp(enrolment, code)
        elif method is Method.SMS:
            outcome = await self._check_text(user_id, SMSPurpose.SIGN_IN, code, session)
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
        # The success is stored: clearing the failure count need not delay the answer.
        self._background(self._forget_failures(user_id))
        if method is Method.RECOVERY:
            await self._emit(EventKind.RECOVERY_CODE_USED, user_id, method, ip)
        await self._emit(EventKind.VERIFIED, user_id, method, ip)
        return Verified(method, enrolment.epoch)

    async def _check_totp(self, enrolment: Enrolment, code: str) -> Denied | None:
        """The code of one of the user's apps, each with its own replay step: the first app
        whose window holds the code takes it."""
        now = self._clock()
        for app in enrolment.apps:
            if app.secret is None:
                continue
            step = totp.matching_step(self._box.decrypt(app.secret), self._params, code, now)
            if step is None:
                continue
            if await self.store.accept_step(enrolment.user_id, app.id, step, now):
                return None
            return Denied(Reason.CODE_ALREADY_USED)
        return Denied(Reason.INVALID_CODE)

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

    async def _check_text(
        self, user_id: str, purpose: SMSPurpose, code: str, session: str
    ) -> Denied | None:
        challenge = await self.store.consume_sms_challenge(
            user_id, purpose, self._text_hash(code, session), self._clock()
        )
        return Denied(Reason.INVALID_CODE) if challenge is None else None

    def _text_hash(self, code: str, session: str) -> str:
        binding = sms_codes.binding_of(self._box.sms_key, session)
        return sms_codes.code_hash(self._box.sms_key, code, binding)

    # -- SMS ---------------------------------------------------------------------------------

    async def register_phone(
        self, user_id: str, raw_phone: str, ip: str | None, *, session: str
    ) -> TextSent | Denied:
        """Texts a code to a new number; the number counts once the code comes back."""
        if self.sms is None:
            return Denied(Reason.SMS_DISABLED)
        phone = sms_codes.normalise_phone(raw_phone, self.sms.settings.allowed_regions)
        if isinstance(phone, Denied):
            return phone
        return await self._send_text(user_id, phone, SMSPurpose.PHONE, ip, session)

    async def verify_phone(
        self, user_id: str, raw_code: str, ip: str | None, *, session: str, epoch: int
    ) -> int | Denied:
        """Marks the texted number verified; returns the new epoch. ``epoch`` is the one the
        session was (re-)checked at: if anything moved it since (a revocation), nothing is
        written and the answer is ``conflict``."""
        if self.sms is None:
            return Denied(Reason.SMS_DISABLED)
        code = totp.normalise_code(raw_code, sms_codes.CODE_DIGITS)
        if code is None:
            return Denied(Reason.INVALID_CODE)
        if (locked := await self._acquire(user_id, ip)) is not None:
            return locked
        challenge = await self.store.consume_sms_challenge(
            user_id, SMSPurpose.PHONE, self._text_hash(code, session), self._clock()
        )
        if challenge is None:
            await self._emit(EventKind.VERIFICATION_FAILED, user_id, Method.SMS, ip)
            return Denied(Reason.INVALID_CODE)
        changed = await self.store.set_phone(
            user_id, challenge.phone, self._clock(), expected_epoch=epoch
        )
        if changed is None:
            return Denied(Reason.CONFLICT)
        await self._forget_failures(user_id)
        await self._emit(EventKind.PHONE_VERIFIED, user_id, Method.SMS, ip)
        return changed

    async def send_sign_in_code(
        self, user_id: str, ip: str | None, *, session: str
    ) -> TextSent | Denied:
        enrolment = await self.enrolment(user_id)
        if self.sms is None:
            return Denied(Reason.SMS_DISABLED)
        if not enrolment.enrolled:
            return Denied(Reason.NOT_ENROLLED)
        if enrolment.phone is None or enrolment.phone_verified_at is None:
            return Denied(Reason.NO_VERIFIED_PHONE)
        phone = sms_codes.normalise_phone(enrolment.phone, self.sms.settings.allowed_regions)
        if isinstance(phone, Denied):
            # The number was allowed when verified: a send policy refuses it now, like a budget
            # of zero (every limit on sending answers 429), until the list changes.
            await self._emit(EventKind.SMS_LIMITED, user_id, Method.SMS, ip)
            return Denied(Reason.TEXTS_TO_COUNTRY_REFUSED, retry_at=self._clock() + 3600)
        return await self._send_text(user_id, phone, SMSPurpose.SIGN_IN, ip, session)

    async def _send_text(
        self, user_id: str, phone: str, purpose: SMSPurpose, ip: str | None, session: str
    ) -> TextSent | Denied:
        if self.sms is None:
            return Denied(Reason.SMS_DISABLED)
        now = self._clock()
        reservation = await self.sms.limiter.reserve(user_id, phone, ip, now)
        if not isinstance(reservation, Reservation):
            await self._emit(EventKind.SMS_LIMITED, user_id, Method.SMS, ip)
            return Denied(Reason.TOO_MANY_TEXTS, retry_at=reservation)
        code = sms_codes.new_code()
        ttl = self.sms.settings.code_ttl_seconds
        text = sms_wording.text_body(code, self._issuer, ttl)
        try:
            await self.sms.provider.send(phone, text)
        except SMSError:
            # Nothing was sent: the user's budget is given back and the old code stays valid.
            await reservation.release()
            await self._emit(EventKind.SMS_FAILED, user_id, Method.SMS, ip)
            raise
        challenge = SMSChallenge(
            purpose=purpose,
            code_hash=self._text_hash(code, session),
            phone=phone,
            expires_at=now + ttl,
        )
        await self.store.start_sms_challenge(user_id, challenge)
        await self._emit(EventKind.SMS_SENT, user_id, Method.SMS, ip)
        return TextSent(phone=phone, expires_at=challenge.expires_at, ttl_seconds=ttl)

    async def regenerate_recovery_codes(self, user_id: str, ip: str | None) -> list[str] | Denied:
        codes = recovery.generate()
        hashed = await anyio.to_thread.run_sync(recovery.hash_set, codes, self._recovery_kdf)
        if not await self.store.replace_recovery_codes(user_id, hashed):
            return Denied(Reason.NOT_ENROLLED)
        await self._emit(EventKind.RECOVERY_CODES_REGENERATED, user_id, None, ip)
        return codes

    async def disable(
        self, user_id: str, method: Method, raw_code: str, ip: str | None, *, session: str = ""
    ) -> int | Denied:
        """Turns 2FA off after a valid current code of the authenticator app or a recovery code
        (a texted code is not enough: SMS is the restricted fallback); returns the new epoch.
        The phone goes too. Refused, before the code is checked, for ``sms``, while the app
        requires 2FA of every account, and while a site of the user enforces it (deadline passed
        or not)."""
        if method.value not in STRONG_METHODS or method is Method.WEBAUTHN:
            # Like an unknown method: refused as asked, before anything is read or counted.
            # (A passkey turns 2FA off by removing the last authenticator, after a step-up.)
            return Denied(Reason.STRONG_FACTOR_REQUIRED)
        if (refused := await self._may_turn_off(user_id, method, ip)) is not None:
            return refused
        outcome = await self.verify(user_id, method, raw_code, ip, session=session)
        if isinstance(outcome, Denied):
            return outcome
        epoch = await self.store.disable(user_id)
        await self._emit(EventKind.DISABLED, user_id, method, ip)
        return epoch

    async def _may_turn_off(self, user_id: str, method: Method, ip: str | None) -> Denied | None:
        """Refused while the app requires 2FA of everyone or a site of the user enforces it
        (deadline passed or not)."""
        if self.everyone_required:
            await self._emit(EventKind.DISABLE_REFUSED, user_id, method, ip)
            return Denied(Reason.REQUIRED_FOR_EVERYONE)
        enforcing = await self.enforcing_sites(user_id)
        if enforcing:
            await self._emit(EventKind.DISABLE_REFUSED, user_id, method, ip)
            return Denied(Reason.ENFORCED_BY_SITE, params={"names": ", ".join(enforcing)})
        return None

    async def revoke_other_sessions(self, user_id: str, ip: str | None) -> int | Denied:
        """Ends the verified state of every session of the user (at its next re-check): the
        new epoch, which the asking session adopts to stay verified."""
        enrolment = await self.enrolment(user_id)
        if not enrolment.enrolled:
            return Denied(Reason.NOT_ENROLLED)
        epoch = await self.store.revoke_sessions(user_id)
        await self._emit(EventKind.SESSIONS_REVOKED, user_id, None, ip)
        return epoch

    async def enforcing_sites(self, user_id: str) -> list[str]:
        """The names of the user's sites that enforce 2FA (grace period or not)."""
        if self.sites is None:
            return []
        return [
            membership.site.name
            for membership in await self.sites.memberships(user_id)
            if membership.site.policy.enforce
        ]

    def _background(self, work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(work)
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)

    def publish_later(self, event: AuditEvent) -> None:
        """Hands ``event`` to the sink off the request's critical path (the middleware's
        refusals: a security log that cannot be reached must not slow a 503 down)."""
        self._background(publish(self._events, event))

    def forget_failures_later(self, user_id: str) -> None:
        """After a success outside the service (a remembered browser signing in): both counts
        cleared, off the request's critical path, as after a verified code."""
        self._background(self._forget_failures(user_id))

    async def drain(self) -> None:
        """Waits for background work (clearing failure counts) to finish."""
        while pending := [task for task in self._pending if not task.done()]:
            await asyncio.gather(*pending, return_exceptions=True)

    async def _forget_failures(self, user_id: str) -> None:
        """After a success that is already stored: both counts are cleared (a success on any
        path proves the owner is there) if the storage answers. Failing the request now would
        hide a committed change (new recovery codes never shown); a count left behind only
        makes the next failures refuse a little sooner."""
        try:
            # One call (one DEL on Redis) for both budgets.
            await reset_all(user_id, [self._limiter, self._recovery_limiter])
        except StoreUnavailable:
            logger.warning("mfa_guard could not clear the failure counts after a success")

    async def _acquire(
        self, user_id: str, ip: str | None, method: Method | None = None
    ) -> Denied | None:
        """A slot in the budget of ``method``: recovery codes have their own; codes (TOTP, SMS,
        and the set-up's and a new phone's, which pass no method) share the other."""
        limiter = self._recovery_limiter if method is Method.RECOVERY else self._limiter
        wait = await limiter.acquire(user_id, self._clock())
        if wait is None:
            return None
        await self._emit(EventKind.LOCKED_OUT, user_id, method, ip)
        if wait.in_a_row:
            return Denied(Reason.LOCKED_AFTER_FAILURES, retry_at=wait.retry_at)
        return Denied(Reason.TOO_MANY_ATTEMPTS, retry_at=wait.retry_at)

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
        await publish(self._events, event)


async def publish(events: EventSink, event: AuditEvent) -> None:
    """Hands ``event`` to the sink; a broken sink is logged, never raised into the request."""
    try:
        await events.emit(with_user_agent(event))
    except Exception:
        logger.exception("mfa_guard event sink failed on %s", event.kind.value)
