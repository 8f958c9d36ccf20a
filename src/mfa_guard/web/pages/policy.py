"""What a member is told on the kit's pages when a site of theirs (or the app) accepts only a
passkey or security key: from when, whose rule it is, and what to do about it.

The deadline rides in the session's marker (``passkey_by``): deciding whether to tell costs no
I/O. Naming the sites ("Acme accepts only…") takes one directory read, made only for a notice
that is shown; if the directory does not answer, the notice names none.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum

from mfa_guard.core.marker import Marker
from mfa_guard.errors import StoreUnavailable
from mfa_guard.stores.sites import Membership, MethodPolicy, SiteDirectory

logger = logging.getLogger("mfa_guard")


class Advice(StrEnum):
    """What the notice asks of the member, after saying what is required."""

    # The challenge of a member with a passkey: the page's own words say to use it.
    NONE = ""
    # The challenge of a member without one: confirm with the app (or a recovery code), then
    # add one.
    CONFIRM_THEN_ADD = "confirm_then_add"
    # The settings page, the requirement in force, no passkey yet.
    ADD = "add"
    # The settings page during the grace period, no passkey yet.
    ADD_NOW = "add_now"
    # The settings page, the requirement in force, this session not verified by the member's
    # passkey (a recovery code, after losing it).
    REPLACE = "replace"


@dataclass(frozen=True, slots=True)
class PasskeyRequirement:
    """A passkey or security key required of the member from ``deadline`` (maybe past:
    ``in_force``), by the app (``everyone``) or by the ``sites`` named (empty when their names
    were not read)."""

    deadline: float
    in_force: bool
    everyone: bool = False
    sites: tuple[str, ...] = ()
    advice: Advice = Advice.NONE

    @property
    def when(self) -> datetime:
        return datetime.fromtimestamp(self.deadline, UTC)


def passkey_requirement(
    marker: Marker, now: float, *, everyone_from: float | None
) -> PasskeyRequirement | None:
    """The requirement the marker holds (``None``: nothing requires a passkey of the member).

    As the enrolment notice does, it names the app-wide rule when its deadline is the earliest
    or once it is in force (``everyone_from``: from the settings; the marker may predate
    them); else the member's sites."""
    deadline = marker.passkey_by
    if deadline is None:
        return None
    if everyone_from is not None and (everyone_from <= deadline or now >= everyone_from):
        deadline = min(deadline, everyone_from)
        return PasskeyRequirement(deadline, now >= deadline, everyone=True)
    return PasskeyRequirement(deadline, now >= deadline)


def passkey_sites(memberships: Sequence[Membership], by: float) -> tuple[str, ...]:
    """The names of the member's sites that accept only a passkey by ``by``; all those that
    accept only a passkey if none does yet (the directory changed since the marker was
    re-checked)."""
    requiring = [
        (membership.site.name, since)
        for membership in memberships
        if (since := membership.site.policy.methods_from(MethodPolicy.PHISHING_RESISTANT))
        is not None
    ]
    due = [name for name, since in requiring if since <= by]
    return tuple(due or (name for name, _ in requiring))


def named(
    requirement: PasskeyRequirement, memberships: Sequence[Membership], now: float
) -> PasskeyRequirement:
    """The requirement with its sites' names (none for the app-wide rule)."""
    if requirement.everyone:
        return requirement
    names = passkey_sites(memberships, max(requirement.deadline, now))
    return dataclasses.replace(requirement, sites=names)


async def memberships_or_none(sites: SiteDirectory | None, user_id: str) -> list[Membership]:
    """The member's sites for a notice's names: none without a directory, or when it does not
    answer (a notice is no reason for a 503)."""
    if sites is None:
        return []
    try:
        return await sites.memberships(user_id)
    except StoreUnavailable:
        logger.warning("mfa_guard could not read the site names for the passkey notice")
        return []
