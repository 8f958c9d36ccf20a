"""The session marker: what one session knows of its second factor, without PII or secrets.

Starlette's cookie session is signed, not encrypted, so the marker holds only a keyed hash of the
user id (``subject``), timestamps, the method name, a random nonce, the user's epoch and the
earliest instant a site of theirs or the app requires 2FA (``enrol_by``).

In the session it is a JSON array, ``[VERSION, subject, nonce, checked_at, epoch, enrolled,
verified_at, method, enrol_by, no_sms_by, passkey_by]``: read on every guarded request, so one
unpacking, not eleven lookups. An array of the first nine alone (written before the policies of
methods) is read with neither of the last two. A marker of another version is not read at all:
the session is re-checked (one store call) and, if the user has 2FA, challenged once.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, NamedTuple

# 2: a JSON array, and a keyed BLAKE2b subject (1 was an object with an HMAC-SHA256 subject).
VERSION = 2
# "device": verified by a remembered browser (mfa_guard.devices); "webauthn": by a passkey or
# a security key.
METHODS = ("totp", "recovery", "sms", "device", "webauthn")
# What may change the factors themselves (turn 2FA off, new recovery codes, a new phone, add or
# remove an authenticator): an authenticator app, a passkey or security key, or a recovery code.
# A texted code signs in and no more, SMS being the restricted fallback (NIST SP 800-63B
# 5.1.3.3); a remembered browser asked for no code at all.
STRONG_METHODS = ("totp", "recovery", "webauthn")
SMS_METHOD = "sms"
WEBAUTHN_METHOD = "webauthn"
# The subject: 18 bytes (144 bits) of keyed BLAKE2b, as 36 hex digits.
SUBJECT_BYTES = 18


def subject_of(user_id: str, key: bytes) -> str:
    """A keyed hash of the user id: binds the marker to one user without revealing who."""
    return subject_hasher(key)(user_id)


def subject_hasher(key: bytes) -> Callable[[str], str]:
    """``subject_of`` for one key: BLAKE2b in its keyed mode (RFC 7693), a MAC in itself, with
    its key block set up once. It runs on every guarded request (about 0.4 µs): no cache, so
    what a request costs does not grow with the number of users."""
    if not 16 <= len(key) <= hashlib.blake2b.MAX_KEY_SIZE:
        raise ValueError("the marker key must be 16 to 64 bytes")
    # A closure over the bound method, not an object with __call__: cheaper to call.
    start = hashlib.blake2b(key=key, digest_size=SUBJECT_BYTES).copy

    def subject(user_id: str) -> str:
        mac = start()
        mac.update(user_id.encode())
        return mac.hexdigest()

    return subject


def new_nonce() -> str:
    return secrets.token_urlsafe(12)


@dataclass(frozen=True, slots=True)
class EnrolmentSummary:
    """What the middleware's one store call returns when a marker is stale."""

    enrolled: bool
    epoch: int


class Marker(NamedTuple):
    """What one session knows of its second factor, as its session keeps it (no user id, no
    secret): its user as a keyed hash (``subject``), a random ``nonce`` (new at each
    verification), when the stores were last read for it (``checked_at``) and the user's
    ``epoch`` then, whether the user is ``enrolled``, when and how this session verified
    (``verified_at``; ``method``: ``totp``, ``recovery``, ``sms``, ``device`` or
    ``webauthn``), and from when
    the app or a site of the user requires 2FA of them (``enrol_by``).

    ``guard.session_marker(scope)`` reads a request's; the kit alone writes it."""

    # A NamedTuple, not a frozen dataclass: one is built on every guarded request, at a third
    # of the cost.
    subject: str
    nonce: str
    checked_at: float
    epoch: int
    enrolled: bool
    verified_at: float | None = None
    method: str | None = None
    # The earliest grace deadline among the user's sites that enforce 2FA and the app-wide one
    # (settings.everyone; None: nothing requires 2FA of the user). Kept in the marker so a
    # deadline passing is honoured to the second with no store call.
    enrol_by: float | None = None
    # From when a site of the user (or the app) refuses a texted code, and anything but a
    # passkey or security key (None: never); the same way.
    no_sms_by: float | None = None
    passkey_by: float | None = None

    @classmethod
    def fresh(
        cls,
        subject: str,
        summary: EnrolmentSummary,
        now: float,
        enrol_by: float | None = None,
        no_sms_by: float | None = None,
        passkey_by: float | None = None,
    ) -> Marker:
        return cls(
            subject=subject,
            nonce=new_nonce(),
            checked_at=now,
            epoch=summary.epoch,
            enrolled=summary.enrolled,
            enrol_by=enrol_by,
            no_sms_by=no_sms_by,
            passkey_by=passkey_by,
        )

    def is_stale(self, now: float, recheck_seconds: int) -> bool:
        # A clock that went backwards also forces a re-check. A sum, not a difference: the
        # same float as ``policy.admitted_until``.
        checked_at = self.checked_at
        return not (checked_at <= now < checked_at + recheck_seconds)

    def refreshed(
        self,
        summary: EnrolmentSummary,
        now: float,
        enrol_by: float | None = None,
        no_sms_by: float | None = None,
        passkey_by: float | None = None,
    ) -> Marker:
        """Re-stamped from the stores; another epoch (a revocation) ends the verified state."""
        if summary.epoch != self.epoch or not summary.enrolled:
            return self._replace(
                checked_at=now,
                epoch=summary.epoch,
                enrolled=summary.enrolled,
                verified_at=None,
                method=None,
                enrol_by=enrol_by,
                no_sms_by=no_sms_by,
                passkey_by=passkey_by,
            )
        return self._replace(
            checked_at=now,
            enrolled=True,
            enrol_by=enrol_by,
            no_sms_by=no_sms_by,
            passkey_by=passkey_by,
        )

    def refused_from(self) -> float | None:
        """From when the policies the marker holds refuse the method this session verified
        with (``None``: never): :meth:`refuses_from` of that method."""
        return self.refuses_from(self.method)

    def refuses_from(self, method: str | None) -> float | None:
        """From when the policies the marker holds refuse ``method`` (``None``: never): a
        passkey always passes; a texted code from ``no_sms_by`` or ``passkey_by``, anything
        else from ``passkey_by``."""
        if method == WEBAUTHN_METHOD:
            return None
        passkey_by = self.passkey_by
        if method == SMS_METHOD:
            no_sms_by = self.no_sms_by
            if no_sms_by is not None and (passkey_by is None or no_sms_by < passkey_by):
                return no_sms_by
        return passkey_by

    def verified(self, method: str, epoch: int, now: float) -> Marker:
        """After a successful second factor: a new nonce (ASVS 3.2.1) and a fresh check."""
        return self._replace(
            nonce=new_nonce(),
            checked_at=now,
            epoch=epoch,
            enrolled=True,
            verified_at=now,
            method=method,
        )

    def is_verified(self, now: float, lifetime_seconds: int) -> bool:
        return self.verified_at is not None and now < self.verified_at + lifetime_seconds

    def dump(self) -> list[Any]:
        return [VERSION, *self]

    @staticmethod
    def load(raw: object, subject: str) -> Marker | None:
        """The marker stored in a session, or ``None`` if absent, malformed, of another version
        or another user's."""
        # A static method: a class method makes a bound method on every call, and this one
        # runs on every guarded request whose marker was not let in before.
        # Exact type checks: the session comes from JSON, and a bool must not pass for a number.
        if type(raw) is not list:
            return None
        if len(raw) == 11:
            # One unpacking of all eleven: a starred target would build a list.
            (
                version,
                sub,
                nonce,
                checked,
                epoch,
                enrolled,
                verified_at,
                method,
                enrol_by,
                no_sms_by,
                passkey_by,
            ) = raw
            if no_sms_by is not None and type(no_sms_by) not in _NUMBERS:
                return None
            if passkey_by is not None and type(passkey_by) not in _NUMBERS:
                return None
        elif len(raw) == 9:
            version, sub, nonce, checked, epoch, enrolled, verified_at, method, enrol_by = raw
            no_sms_by = passkey_by = None
        else:
            return None
        if version != VERSION or type(version) is not int or type(sub) is not str:
            return None
        try:
            if not hmac.compare_digest(sub, subject):
                return None
        except TypeError:  # non-ASCII text, which compare_digest refuses: not ours either
            return None
        if type(nonce) is not str or type(epoch) is not int or type(enrolled) is not bool:
            return None
        if type(checked) not in _NUMBERS:
            return None
        if verified_at is not None and type(verified_at) not in _NUMBERS:
            return None
        # A tuple, not a set: a string fresh from JSON has no cached hash, so comparing it
        # with three names is cheaper than hashing it.
        if method is not None and (type(method) is not str or method not in METHODS):
            return None
        if enrol_by is not None and type(enrol_by) not in _NUMBERS:
            return None
        # From the checked values: ``Marker(...)`` would add a Python-level __new__.
        marker: Marker = tuple.__new__(
            Marker,
            (
                sub,
                nonce,
                checked,
                epoch,
                enrolled,
                verified_at,
                method,
                enrol_by,
                no_sms_by,
                passkey_by,
            ),
        )
        return marker


_NUMBERS = (float, int)
