"""The session marker: what one session knows of its second factor, without PII or secrets.

Starlette's cookie session is signed, not encrypted, so the marker holds only a keyed hash of the
user id (``subject``), timestamps, the method name, a random nonce, the user's epoch and the
earliest instant a site of theirs requires 2FA (``enrol_by``).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
from dataclasses import dataclass
from typing import Any, NamedTuple, cast

VERSION = 1
METHODS = frozenset({"totp", "recovery", "sms"})


def subject_of(user_id: str, key: bytes) -> str:
    """A keyed hash of the user id: binds the marker to one user without revealing who."""
    return SubjectHasher(key)(user_id)


class SubjectHasher:
    """``subject_of`` with the key's HMAC state computed once (a copy per user id is cheaper
    than a new HMAC: this runs on every guarded request)."""

    def __init__(self, key: bytes) -> None:
        self._keyed = hmac.new(key, digestmod=hashlib.sha256)

    def __call__(self, user_id: str) -> str:
        mac = self._keyed.copy()
        mac.update(user_id.encode("utf-8"))
        return base64.urlsafe_b64encode(mac.digest()[:18]).decode("ascii")


def new_nonce() -> str:
    return secrets.token_urlsafe(12)


@dataclass(frozen=True, slots=True)
class EnrolmentSummary:
    """What the middleware's one store call returns when a marker is stale."""

    enrolled: bool
    epoch: int


class Marker(NamedTuple):
    # A NamedTuple, not a frozen dataclass: one is built on every guarded request, at a third
    # of the cost.
    subject: str
    nonce: str
    checked_at: float
    epoch: int
    enrolled: bool
    verified_at: float | None = None
    method: str | None = None
    # The earliest grace deadline among the user's sites that enforce 2FA (None: none does).
    # Kept in the marker so a deadline passing is honoured to the second with no store call.
    enrol_by: float | None = None

    @classmethod
    def fresh(
        cls, subject: str, summary: EnrolmentSummary, now: float, enrol_by: float | None = None
    ) -> Marker:
        return cls(
            subject=subject,
            nonce=new_nonce(),
            checked_at=now,
            epoch=summary.epoch,
            enrolled=summary.enrolled,
            enrol_by=enrol_by,
        )

    def is_stale(self, now: float, recheck_seconds: int) -> bool:
        # A clock that went backwards also forces a re-check.
        return not (0 <= now - self.checked_at < recheck_seconds)

    def refreshed(
        self, summary: EnrolmentSummary, now: float, enrol_by: float | None = None
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
            )
        return self._replace(checked_at=now, enrolled=True, enrol_by=enrol_by)

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
        return self.verified_at is not None and now - self.verified_at < lifetime_seconds

    def dump(self) -> dict[str, Any]:
        return {
            "v": VERSION,
            "sub": self.subject,
            "n": self.nonce,
            "chk": self.checked_at,
            "ep": self.epoch,
            "enr": self.enrolled,
            "vat": self.verified_at,
            "m": self.method,
            "eb": self.enrol_by,
        }

    @classmethod
    def load(cls, raw: object, subject: str) -> Marker | None:
        """The marker stored in a session, or ``None`` if absent, malformed or another user's."""
        # Exact type checks: the session comes from JSON, and bool must not pass for a number.
        if type(raw) is not dict or raw.get("v") != VERSION:
            return None
        sub = raw.get("sub")
        if type(sub) is not str or not hmac.compare_digest(sub, subject):
            return None
        nonce, checked, epoch = raw.get("n"), raw.get("chk"), raw.get("ep")
        enrolled, verified_at, method = raw.get("enr"), raw.get("vat"), raw.get("m")
        if type(nonce) is not str or type(enrolled) is not bool or type(epoch) is not int:
            return None
        if type(checked) not in _NUMBERS:
            return None
        if verified_at is not None and type(verified_at) not in _NUMBERS:
            return None
        if method is not None and method not in METHODS:
            return None
        enrol_by = raw.get("eb")
        if enrol_by is not None and type(enrol_by) not in _NUMBERS:
            return None
        return cls(
            sub, nonce, cast("float", checked), epoch, enrolled, verified_at, method, enrol_by
        )


_NUMBERS = (int, float)
