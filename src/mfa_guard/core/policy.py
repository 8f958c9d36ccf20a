"""The access decision: a pure function of the session marker and the clock."""

from __future__ import annotations

from enum import StrEnum

from mfa_guard.core.marker import Marker


class Decision(StrEnum):
    ALLOW = "allow"
    CHALLENGE = "challenge"
    ENROL = "enrol"
    # Verified, but by a factor a policy of the user's sites no longer accepts: challenged
    # again, for an accepted one.
    STRONGER = "stronger"


def decide(marker: Marker, now: float, *, verified_lifetime_seconds: int) -> Decision:
    """An enrolled user passes while their second factor is verified, else is challenged. A
    user without 2FA passes, unless a site of theirs enforces it and its grace period is over:
    then they must enrol."""
    # Runs on every guarded request: the members are read once below, not through the Enum
    # class, and Marker.is_verified is inlined. A deadline is a sum (``now < verified_at +
    # lifetime``), not a difference: ``admitted_until`` computes the very same floats.
    if marker.enrolled:
        verified_at = marker.verified_at
        if verified_at is not None and now < verified_at + verified_lifetime_seconds:
            refused_from = marker.refused_from()
            if refused_from is not None and now >= refused_from:
                return STRONGER
            return ALLOW
        return CHALLENGE
    enrol_by = marker.enrol_by
    if enrol_by is not None and now >= enrol_by:
        return ENROL
    return ALLOW


def admitted_until(
    marker: Marker, recheck_seconds: int, verified_lifetime_seconds: int
) -> float | None:
    """Until when this marker, unchanged, is let in with no store call: from its ``checked_at``
    (included) to the first of its re-check, the end of its verified state and its enforcement
    deadline (excluded); ``None`` when ``decide`` does not allow it at all.

    For every ``now`` with ``checked_at <= now < admitted_until(...)`` the marker is fresh
    (``not marker.is_stale(now, recheck_seconds)``) and ``decide`` answers ``ALLOW``; for every
    other ``now`` it is stale, or refused. The middleware lets a marker in by this window alone,
    and calls ``decide`` only for one outside it."""
    # It runs for every marker the middleware reads: one unpacking, not five field reads;
    # comparisons, not min() (a call of its own); positional parameters (keywords cost more).
    _, _, checked_at, _, enrolled, verified_at, _, enrol_by, no_sms_by, passkey_by = marker
    until = checked_at + recheck_seconds
    if enrolled:
        if verified_at is None:
            return None
        verified_until = verified_at + verified_lifetime_seconds
        if verified_until < until:
            until = verified_until
        if no_sms_by is None and passkey_by is None:
            return until
        refused_from = marker.refused_from()
        if refused_from is not None and refused_from < until:
            return refused_from if refused_from > checked_at else None
        return until
    if enrol_by is not None and enrol_by < until:
        return enrol_by
    return until


ALLOW, CHALLENGE, ENROL, STRONGER = (
    Decision.ALLOW,
    Decision.CHALLENGE,
    Decision.ENROL,
    Decision.STRONGER,
)


# What Marker.method says of a session verified by a remembered browser (mfa_guard.devices).
DEVICE_METHOD = "device"


def is_recent(marker: Marker, now: float, *, lifetime_seconds: int, max_age: int) -> bool:
    """Whether the session's second factor was verified within ``max_age`` seconds (step-up:
    new recovery codes, a new phone, a site policy, ``require_recent_mfa``). A remembered
    browser is not a recent second factor: it asked for no code."""
    verified_at = marker.verified_at
    return (
        verified_at is not None
        and marker.method != DEVICE_METHOD
        and now - verified_at < lifetime_seconds
        and 0 <= now - verified_at <= max_age
    )
