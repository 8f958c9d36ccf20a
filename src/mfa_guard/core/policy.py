"""The access decision: a pure function of the session marker and the clock."""

from __future__ import annotations

from enum import StrEnum

from mfa_guard.core.marker import Marker


class Decision(StrEnum):
    ALLOW = "allow"
    CHALLENGE = "challenge"


def decide(marker: Marker, now: float, *, verified_lifetime_seconds: int) -> Decision:
    """Allow a user without 2FA, or one whose second factor is still verified; else challenge."""
    if not marker.enrolled or marker.is_verified(now, verified_lifetime_seconds):
        return Decision.ALLOW
    return Decision.CHALLENGE
