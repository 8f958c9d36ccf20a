"""The site directory: which sites a user belongs to, with what role, and each site's 2FA policy.

A site (a workspace, a team, an organisation, a website) has members, each an
``owner`` or an ``operator``, and a policy: whether it enforces two-factor authentication and from
when (the grace deadline). The kit reads the directory when a session's marker is re-checked and
on the enforcement routes; the app writes memberships as its users join and leave sites.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from enum import StrEnum
from typing import Protocol


class Role(StrEnum):
    """A member's role on a site: its owners set its 2FA policy, every member is held to it."""

    OWNER = "owner"
    OPERATOR = "operator"


class MethodPolicy(StrEnum):
    """Which second factors a site accepts of its members, beyond requiring one."""

    # Any the kit offers.
    ANY = "any"
    # Not a text message (a session verified by a texted code is challenged again).
    NO_SMS = "no_sms"
    # Only a passkey or security key (WebAuthn): bound to the site's origin, it cannot be
    # relayed by a look-alike page as a code can (NIST SP 800-63B 5.2.5).
    PHISHING_RESISTANT = "phishing_resistant"


@dataclass(frozen=True, slots=True)
class SitePolicy:
    """Whether a site enforces 2FA, from when on (``grace_deadline``), which factors it accepts
    (``methods``) from when on (``methods_deadline``), who changed it and when.

    While ``enforce`` is on, ``grace_deadline`` is always set: a member without 2FA is sent to
    enrolment from that instant on (it equals ``changed_at`` for "at once"). ``methods`` other
    than ``any`` needs ``enforce``, and has its own deadline: from it, a session verified by a
    factor the policy does not accept is challenged again, and a member without an accepted
    factor is confined to adding one."""

    enforce: bool = False
    grace_deadline: float | None = None
    changed_by: str | None = None
    changed_at: float | None = None
    methods: MethodPolicy = MethodPolicy.ANY
    methods_deadline: float | None = None

    def __post_init__(self) -> None:
        # Its value as text ("phishing_resistant", from an app's own row) is the member: the
        # rules compare members, and text would pass for "any" where it must not.
        object.__setattr__(self, "methods", MethodPolicy(self.methods))

    def requires_by(self) -> float | None:
        """From when members must have 2FA, or ``None`` if the site does not enforce it (an
        enforcing policy without a deadline enforces at once)."""
        if not self.enforce:
            return None
        return 0.0 if self.grace_deadline is None else self.grace_deadline

    def methods_from(self, methods: MethodPolicy) -> float | None:
        """From when the policy refuses what ``methods`` refuses (``no_sms``: texted codes;
        ``phishing_resistant``: everything but a passkey), or ``None`` if it never does."""
        if not self.enforce or self.methods is MethodPolicy.ANY:
            return None
        if methods is MethodPolicy.PHISHING_RESISTANT and self.methods is not methods:
            return None
        return 0.0 if self.methods_deadline is None else self.methods_deadline


@dataclass(frozen=True, slots=True)
class Requirements:
    """What the user's sites (and the app) require of the user, each from when (``None``:
    never): a second factor at all (``enrol_by``), no texted code (``no_sms_by``), a passkey or
    security key (``passkey_by``). The earliest deadline of each among the user's sites; the
    session marker keeps them, so a deadline passing is honoured with no store call."""

    enrol_by: float | None = None
    no_sms_by: float | None = None
    passkey_by: float | None = None

    def combined(self, other: Requirements) -> Requirements:
        """The earlier deadline of each."""
        return Requirements(
            _earlier(self.enrol_by, other.enrol_by),
            _earlier(self.no_sms_by, other.no_sms_by),
            _earlier(self.passkey_by, other.passkey_by),
        )


def _earlier(one: float | None, two: float | None) -> float | None:
    if one is None:
        return two
    if two is None:
        return one
    return one if one < two else two


def requirements_of(policies: list[SitePolicy]) -> Requirements:
    """What these policies (the user's sites') require, each from its earliest deadline."""
    found = Requirements()
    for policy in policies:
        found = found.combined(
            Requirements(
                policy.requires_by(),
                policy.methods_from(MethodPolicy.NO_SMS),
                policy.methods_from(MethodPolicy.PHISHING_RESISTANT),
            )
        )
    return found


@dataclass(frozen=True, slots=True)
class Site:
    """A site of the directory: its id, the name its members see, and its 2FA policy."""

    id: str
    name: str
    policy: SitePolicy = SitePolicy()


@dataclass(frozen=True, slots=True)
class Membership:
    """One site of a user, with the user's role there."""

    site: Site
    role: Role


@dataclass(frozen=True, slots=True)
class Member:
    """One member of a site."""

    user_id: str
    role: Role


class SiteDirectory(Protocol):
    """Where sites, their members and their 2FA policies live. Every method is one round trip.

    Implementations raise :class:`mfa_guard.StoreUnavailable` when the backend cannot be reached.
    ``mfa_guard.testing.sites_contract.SiteDirectoryContract`` is the suite an implementation
    must pass. An app that already keeps memberships in its own tables implements this Protocol over
    them (``memberships``, ``members``, ``role``) and keeps the policy columns next to its sites.
    """

    async def deadline(self, user_id: str) -> float | None:
        """The earliest grace deadline among the user's sites that enforce 2FA, or ``None`` if
        none does."""
        ...

    async def requirements(self, user_id: str) -> Requirements:
        """What the user's sites require of the user, each from its earliest deadline
        (:func:`requirements_of` of their policies), in one round trip: what a session's marker
        re-reads every ``recheck_seconds``."""
        ...

    async def memberships(self, user_id: str) -> list[Membership]:
        """The user's sites (with their policies) and roles, ordered by site name then id."""
        ...

    async def site(self, site_id: str) -> Site | None: ...

    async def role(self, site_id: str, user_id: str) -> Role | None:
        """The user's role in the site, ``None`` if not a member (or no such site)."""
        ...

    async def members(self, site_id: str) -> list[Member]:
        """The site's members, ordered by user id (empty for an unknown site)."""
        ...

    async def set_policy(self, site_id: str, policy: SitePolicy) -> bool:
        """Replace the site's policy; ``False`` if there is no such site."""
        ...

    async def save_site(self, site_id: str, name: str) -> Site:
        """Create the site (policy off) or rename it; its policy and members stay."""
        ...

    async def add_member(self, site_id: str, user_id: str, role: Role) -> bool:
        """Add the user to the site, or change their role; ``False`` if there is no such site."""
        ...

    async def remove_member(self, site_id: str, user_id: str) -> bool:
        """``False`` if the user was not a member."""
        ...


class MemorySiteDirectory:
    """In-process directory for tests and single-process demos; each method is atomic on the
    event loop (no ``await`` inside)."""

    def __init__(self) -> None:
        self._sites: dict[str, Site] = {}
        self._members: dict[str, dict[str, Role]] = {}
        self._sites_of: dict[str, set[str]] = {}

    async def deadline(self, user_id: str) -> float | None:
        deadlines = [
            by
            for site_id in self._sites_of.get(user_id, ())
            if (by := self._sites[site_id].policy.requires_by()) is not None
        ]
        return min(deadlines, default=None)

    async def requirements(self, user_id: str) -> Requirements:
        return requirements_of(
            [self._sites[site_id].policy for site_id in self._sites_of.get(user_id, ())]
        )

    async def memberships(self, user_id: str) -> list[Membership]:
        found = [
            Membership(self._sites[site_id], self._members[site_id][user_id])
            for site_id in self._sites_of.get(user_id, ())
        ]
        return sorted(found, key=lambda m: (m.site.name, m.site.id))

    async def site(self, site_id: str) -> Site | None:
        return self._sites.get(site_id)

    async def role(self, site_id: str, user_id: str) -> Role | None:
        return self._members.get(site_id, {}).get(user_id)

    async def members(self, site_id: str) -> list[Member]:
        members = self._members.get(site_id, {})
        return [Member(user_id, members[user_id]) for user_id in sorted(members)]

    async def set_policy(self, site_id: str, policy: SitePolicy) -> bool:
        site = self._sites.get(site_id)
        if site is None:
            return False
        self._sites[site_id] = dataclasses.replace(site, policy=policy)
        return True

    async def save_site(self, site_id: str, name: str) -> Site:
        current = self._sites.get(site_id)
        site = Site(site_id, name) if current is None else dataclasses.replace(current, name=name)
        self._sites[site_id] = site
        self._members.setdefault(site_id, {})
        return site

    async def add_member(self, site_id: str, user_id: str, role: Role) -> bool:
        if site_id not in self._sites:
            return False
        self._members[site_id][user_id] = role
        self._sites_of.setdefault(user_id, set()).add(site_id)
        return True

    async def remove_member(self, site_id: str, user_id: str) -> bool:
        if self._members.get(site_id, {}).pop(user_id, None) is None:
            return False
        self._sites_of[user_id].discard(site_id)
        return True
