"""The access decision: a pure function of the session marker and the clock."""

from __future__ import annotations

from enum import StrEnum

from mfa_guard.core.marker import Marker


class Decision(StrEnum):
    ALLOW = "allow"
    CHALLENGE = "challenge"
    ENROL = "enrol"


def decide(marker: Marker, now: float, *, verified_lifetime_seconds: int) -> Decision:
    """An enrolled user passes while their second factor is verified, else is challenged. A
    user without 2FA passes, unless a site of theirs enforces it and its grace period is over:
    then they must enrol."""
    if marker.enrolled:
        if marker.is_verified(now, verified_lifetime_seconds):
            return Decision.ALLOW
        return Decision.CHALLENGE
    if marker.enrol_by is not None and now >= marker.enrol_by:
        return Decision.ENROL
    return Decision.ALLOW
