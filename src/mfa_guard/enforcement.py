"""Enforcement: owners turn on "every member must have 2FA", with a grace period; the app can
require it of every account (``MFAGuardSettings.everyone``).

An operator must have 2FA as soon as any site they belong to enforces it and its grace deadline
has passed, and every user once the app-wide deadline has (the earliest counts). Sessions learn
of a policy change within ``recheck_seconds``: the earliest deadline rides in each session's
marker (see :class:`mfa_guard.core.marker.Marker`), so the middleware decides without a store
call in between.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from mfa_guard.clock import Clock
from mfa_guard.core.marker import Marker
from mfa_guard.core.policy import is_recent
from mfa_guard.errors import Denied, Reason
from mfa_guard.events import AuditEvent, EventKind, EventSink
from mfa_guard.services import publish
from mfa_guard.settings import MFAGuardSettings
from mfa_guard.stores.base import FactorKind, MFAStore
from mfa_guard.stores.sites import Membership, Role, Site, SiteDirectory, SitePolicy


@dataclass(frozen=True, slots=True)
class MemberStatus:
    """One member of a site and their second factor: the green padlock."""

    user_id: str
    role: Role
    two_factor: bool
    phone_verified: bool
    # The kinds of the member's authenticators ("webauthn", "totp"), each once.
    factors: tuple[FactorKind, ...] = ()

    @property
    def method(self) -> str | None:
        """The member's strongest kind of factor: a passkey or security key, else the app."""
        if not self.two_factor:
            return None
        return FactorKind.WEBAUTHN.value if FactorKind.WEBAUTHN in self.factors else "totp"


@dataclass(frozen=True, slots=True)
class MembersWithoutMFA:
    """Enforcing at once was refused: these members would be locked out of the site."""

    members: tuple[MemberStatus, ...]


@dataclass(frozen=True, slots=True)
class Enforcement:
    """What a user is told about who requires 2FA of them: the app-wide policy
    (``everyone_from``: from when, 0.0 for at once) and the sites of theirs that enforce it."""

    sites: tuple[Site, ...] = ()
    everyone_from: float | None = None

    @property
    def everyone(self) -> bool:
        return self.everyone_from is not None

    @property
    def required(self) -> bool:
        return self.everyone or bool(self.sites)

    @property
    def deadline(self) -> float | None:
        """The earliest instant 2FA is required of the user (maybe already past); ``None`` when
        nothing requires it, or when it is required with no deadline at all (at once)."""
        deadlines = [site.policy.requires_by() or 0.0 for site in self.sites]
        if self.everyone_from is not None:
            deadlines.append(self.everyone_from)
        earliest = min(deadlines, default=None)
        return None if earliest == 0.0 else earliest


@dataclass(frozen=True, slots=True)
class EnrolmentNotice:
    """The banner for a user without 2FA whom the app or a site requires it of: by when, or
    now, and why: ``everyone`` (the app-wide policy) or the ``sites`` named (empty when their
    names were not looked up: see ``MFAGuard.named_enrolment_notice``)."""

    deadline: float
    overdue: bool
    everyone: bool = False
    sites: tuple[str, ...] = ()

    @property
    def iso(self) -> str:
        return iso(self.deadline) or ""

    @property
    def text(self) -> str:
        """The deadline for people: ``27 Nov 2026, 20:45 UTC``."""
        return datetime.fromtimestamp(self.deadline, UTC).strftime("%d %b %Y, %H:%M UTC")


def enrolment_notice(
    marker: Marker | None,
    now: float,
    *,
    everyone_from: float | None = None,
    sites: Sequence[Site] | None = None,
) -> EnrolmentNotice | None:
    """What to tell the user of ``marker``: ``None`` unless the app (``everyone_from``, from
    the settings) or a site of theirs requires 2FA and they have not turned it on. No I/O: the
    deadline rides in the marker.

    The notice names the reason that applies first: the app-wide policy when its deadline is
    the earliest, or once it is in force (it holds whatever sites the user belongs to); else
    the sites whose deadline has come by then, from ``sites`` (the user's enforcing sites,
    looked up by the caller; without them the notice names none)."""
    if marker is None or marker.enrolled or marker.enrol_by is None:
        return None
    deadline = marker.enrol_by
    if everyone_from is not None and (everyone_from <= deadline or now >= everyone_from):
        # The marker may predate the setting (a restart within recheck_seconds): the app-wide
        # deadline is told, as it will be decided at the next re-check.
        deadline = min(deadline, everyone_from)
        return EnrolmentNotice(deadline=deadline, overdue=now >= deadline, everyone=True)
    names = () if sites is None else site_names(sites, max(deadline, now))
    return EnrolmentNotice(deadline=deadline, overdue=now >= deadline, sites=names)


def site_names(sites: Sequence[Site], by: float) -> tuple[str, ...]:
    """The names of the enforcing ``sites`` that require 2FA by ``by``; all the enforcing ones
    if none does (the directory changed since the session's marker was re-checked)."""
    enforcing = [site for site in sites if site.policy.enforce]
    due = [site.name for site in enforcing if (site.policy.requires_by() or 0.0) <= by]
    return tuple(due or (site.name for site in enforcing))


async def member_statuses(
    store: MFAStore, sites: SiteDirectory, site_id: str
) -> list[MemberStatus]:
    """Each member of the site with their 2FA status: two round trips, whatever the size."""
    members = await sites.members(site_id)
    statuses = await store.statuses([m.user_id for m in members])
    return [
        MemberStatus(
            user_id=m.user_id,
            role=m.role,
            two_factor=statuses[m.user_id].enrolled,
            phone_verified=statuses[m.user_id].phone_verified,
            factors=statuses[m.user_id].kinds,
        )
        for m in members
    ]


def iso(timestamp: float | None) -> str | None:
    """A UTC ISO 8601 instant (``2026-11-27T20:45:00Z``), as the JSON API writes them."""
    if timestamp is None:
        return None
    moment = datetime.fromtimestamp(timestamp, UTC).replace(microsecond=0)
    return moment.isoformat().replace("+00:00", "Z")


class SiteService:
    """Members' 2FA status and site policies, with the owner checks and audit events."""

    def __init__(
        self,
        *,
        store: MFAStore,
        sites: SiteDirectory,
        events: EventSink,
        clock: Clock,
        settings: MFAGuardSettings,
    ) -> None:
        self.store = store
        self.sites = sites
        self._events = events
        self._clock = clock
        self._settings = settings
        self.max_grace_hours = settings.max_grace_hours

    async def memberships(self, user_id: str) -> list[Membership]:
        return await self.sites.memberships(user_id)

    async def enforcement(self, user_id: str) -> Enforcement:
        memberships = await self.sites.memberships(user_id)
        return Enforcement(
            tuple(m.site for m in memberships if m.site.policy.enforce),
            self._settings.everyone.required_from(),
        )

    async def members(
        self, actor: str, site_id: str, ip: str | None
    ) -> list[MemberStatus] | Denied:
        """Each member with their 2FA status; for the site's owners only."""
        refused = await self._owner_only(actor, site_id, ip, "members")
        if refused is not None:
            return refused
        return await self.member_statuses(site_id)

    async def set_policy(
        self,
        actor: str,
        site_id: str,
        *,
        enforce: bool,
        grace_hours: float | None,
        marker: Marker,
        ip: str | None,
    ) -> Site | MembersWithoutMFA | Denied:
        """Turn enforcement on (``grace_hours``: from when; ``None`` = at once, refused while
        members lack 2FA) or off. For the site's owners; ``marker`` is the owner's session state,
        read fresh (``guard.session_marker(scope, recheck=True)``): turning enforcement on needs
        the owner's own 2FA, and an owner who has 2FA must have verified it within
        ``recent_mfa_seconds`` for any change (step-up, as for new recovery codes)."""
        refused = await self._owner_only(actor, site_id, ip, "policy")
        if refused is not None:
            return refused
        if grace_hours is not None and not (
            math.isfinite(grace_hours) and 0 <= grace_hours <= self.max_grace_hours
        ):
            return Denied(Reason.INVALID_GRACE, params={"max_hours": self.max_grace_hours})
        now = self._clock()
        if not marker.enrolled:
            if enforce:
                return Denied(Reason.OWNER_MFA_REQUIRED)
        elif not self._recently_verified(marker, now):
            return Denied(Reason.REAUTHENTICATION_REQUIRED)
        if not enforce:
            policy = SitePolicy(enforce=False, changed_by=actor, changed_at=now)
        else:
            if grace_hours is None:
                missing = [m for m in await self.member_statuses(site_id) if not m.two_factor]
                if missing:
                    return MembersWithoutMFA(tuple(missing))
                grace_hours = 0
            policy = SitePolicy(
                enforce=True,
                grace_deadline=now + grace_hours * 3600,
                changed_by=actor,
                changed_at=now,
            )
        if not await self.sites.set_policy(site_id, policy):
            return Denied(Reason.SITE_NOT_FOUND)
        detail = "enforce=off"
        if policy.enforce:
            detail = f"enforce=on deadline={iso(policy.grace_deadline)}"
        await self._emit(EventKind.SITE_POLICY_CHANGED, actor, site_id, ip, detail)
        site = await self.sites.site(site_id)
        return site if site is not None else Denied(Reason.SITE_NOT_FOUND)

    def _recently_verified(self, marker: Marker, now: float) -> bool:
        settings = self._settings
        return is_recent(
            marker,
            now,
            lifetime_seconds=settings.verified_lifetime_seconds,
            max_age=settings.recent_mfa_seconds,
        )

    async def add_member(self, site_id: str, user_id: str, role: Role, *, by: str) -> bool:
        """For the app (sign-up, invitations): adds the member with an audit event. A member
        who joins an enforcing site after its deadline must enrol at once."""
        if not await self.sites.add_member(site_id, user_id, role):
            return False
        await self._emit(
            EventKind.SITE_MEMBER_ADDED, by, site_id, None, f"member={user_id} role={role}"
        )
        return True

    async def remove_member(self, site_id: str, user_id: str, *, by: str) -> bool:
        if not await self.sites.remove_member(site_id, user_id):
            return False
        await self._emit(EventKind.SITE_MEMBER_REMOVED, by, site_id, None, f"member={user_id}")
        return True

    async def member_statuses(self, site_id: str) -> list[MemberStatus]:
        """Each member with their 2FA status, with no owner check: for the app's own admin
        views (an empty list for an unknown site)."""
        return await member_statuses(self.store, self.sites, site_id)

    async def _owner_only(
        self, actor: str, site_id: str, ip: str | None, what: str
    ) -> Denied | None:
        role = await self.sites.role(site_id, actor)
        if role is Role.OWNER:
            return None
        await self._emit(EventKind.SITE_ACCESS_DENIED, actor, site_id, ip, f"wanted={what}")
        # A non-member learns nothing, not even that the site exists.
        return Denied(Reason.SITE_NOT_FOUND if role is None else Reason.NOT_SITE_OWNER)

    async def _emit(
        self, kind: EventKind, actor: str, site_id: str, ip: str | None, detail: str
    ) -> None:
        event = AuditEvent(
            kind=kind, user_id=actor, at=self._clock(), client_ip=ip, site=site_id, detail=detail
        )
        await publish(self._events, event)
