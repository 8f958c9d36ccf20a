"""Enforcement: owners turn on "every member must have 2FA", with a grace period; the app can
require it of every account (``MFAGuardSettings.everyone``).

An operator must have 2FA as soon as any site they belong to enforces it and its grace deadline
has passed, and every user once the app-wide deadline has (the earliest counts). A site that
enforces 2FA may also limit the factors it accepts (``methods``: no texted code, or only a
passkey or security key), from a deadline of its own. Sessions learn of a policy change within
``recheck_seconds``: the earliest deadlines ride in each session's marker (see
:class:`mfa_guard.core.marker.Marker`), so the middleware decides without a store call in
between.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from mfa_guard.clock import Clock
from mfa_guard.core.ids import MAX_USER_ID, valid_id
from mfa_guard.core.marker import STRONG_METHODS, Marker
from mfa_guard.core.policy import is_recent
from mfa_guard.errors import ConfigurationError, Denied, Reason
from mfa_guard.events import AuditEvent, EventKind, EventSink, field
from mfa_guard.ratelimit import FailureLimiter
from mfa_guard.resets import ResetDone, Resets
from mfa_guard.security_log import DEFAULT_EVENTS_PER_PAGE, Cursors, SecurityLogPage, read_page
from mfa_guard.services import publish
from mfa_guard.settings import MFAGuardSettings
from mfa_guard.stores.base import FactorKind, MFAStore
from mfa_guard.stores.events import MAX_EVENTS_PER_PAGE, EventQuery, EventStore
from mfa_guard.stores.sites import (
    Membership,
    MethodPolicy,
    Role,
    Site,
    SiteDirectory,
    SitePolicy,
)


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
    """A policy at once was refused: these members lack what it requires and would be locked
    out of the site. ``reason`` says what: ``MEMBERS_WITHOUT_MFA`` (2FA at all),
    ``MEMBERS_WITHOUT_ALLOWED_FACTOR`` (a passkey or security key, for ``phishing_resistant``),
    or ``OWNER_WITHOUT_ALLOWED_FACTOR`` (the owner who asked, alone in ``members``, has none)."""

    members: tuple[MemberStatus, ...]
    reason: Reason = Reason.MEMBERS_WITHOUT_MFA

    @property
    def denied(self) -> Denied:
        """The refusal the JSON API answers, with ``members`` beside it."""
        return Denied(self.reason, params={"count": len(self.members)})


def accepts(methods: MethodPolicy, member: MemberStatus) -> bool:
    """Whether the member has a factor ``methods`` accepts: any second factor (an app or a
    passkey: a texted code is only ever a fallback beside one), or for ``phishing_resistant``
    a passkey or security key."""
    if methods is MethodPolicy.PHISHING_RESISTANT:
        return FactorKind.WEBAUTHN in member.factors
    return member.two_factor


def verified_as_accepted(methods: MethodPolicy, session_method: str | None) -> bool:
    """Whether a session verified by ``session_method`` (the marker's) meets ``methods``."""
    if methods is MethodPolicy.PHISHING_RESISTANT:
        return session_method == FactorKind.WEBAUTHN.value
    if methods is MethodPolicy.NO_SMS:
        return session_method != "sms"
    return True


def next_policy(
    current: SitePolicy,
    *,
    methods: MethodPolicy,
    grace_hours: float | None,
    changed_by: str,
    now: float,
) -> SitePolicy:
    """The enforcing policy an owner's change makes of ``current``: ``grace_hours`` (``None``:
    at once) gives time for what the change brings, enforcement or new methods.

    New methods never postpone the 2FA deadline in force (the earlier is kept), and the same
    methods again keep their own deadline; the same methods with another grace period move
    the 2FA deadline as enforcing alone does."""
    start = now + (grace_hours or 0) * 3600
    grace_deadline = start
    methods_deadline = None if methods is MethodPolicy.ANY else start
    if current.enforce:
        if methods is current.methods:
            if methods is not MethodPolicy.ANY:
                methods_deadline = current.methods_deadline
        else:
            grace_deadline = min(start, current.requires_by() or 0.0)
    return SitePolicy(
        enforce=True,
        grace_deadline=grace_deadline,
        changed_by=changed_by,
        changed_at=now,
        methods=methods,
        methods_deadline=methods_deadline,
    )


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
    def at(self) -> datetime:
        """The deadline as a UTC ``datetime`` (the pages write it in their language)."""
        return datetime.fromtimestamp(self.deadline, UTC)

    @property
    def text(self) -> str:
        """The deadline for people, in English: ``27 Nov 2026, 20:45 UTC``."""
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


def policy_detail(policy: SitePolicy) -> str:
    """A policy as its audit event tells it: ``enforce=off``, or ``enforce=on deadline=…
    methods=…`` with ``methods_deadline=…`` for methods other than ``any``."""
    if not policy.enforce:
        return "enforce=off"
    detail = f"enforce=on deadline={iso(policy.requires_by())} methods={policy.methods}"
    if policy.methods is not MethodPolicy.ANY:
        detail += f" methods_deadline={iso(policy.methods_from(policy.methods))}"
    return detail


def iso(timestamp: float | None) -> str | None:
    """A UTC ISO 8601 instant (``2026-11-27T20:45:00Z``), as the JSON API writes them."""
    if timestamp is None:
        return None
    moment = datetime.fromtimestamp(timestamp, UTC).replace(microsecond=0)
    return moment.isoformat().replace("+00:00", "Z")


class SiteService:
    """Members' 2FA status, site policies and the sites' security logs, with the owner checks
    and audit events. ``log`` keeps the security log (``MFAGuard(event_store=...)``);
    ``log_key`` signs its cursors (the guard's: every worker reads the others')."""

    def __init__(
        self,
        *,
        store: MFAStore,
        sites: SiteDirectory,
        events: EventSink,
        clock: Clock,
        settings: MFAGuardSettings,
        resets: Resets | None = None,
        reset_cooldown: FailureLimiter | None = None,
        log: EventStore | None = None,
        log_key: bytes | None = None,
    ) -> None:
        self.store = store
        self.sites = sites
        self._events = events
        self._clock = clock
        self._settings = settings
        self._log = log
        self._cursors = Cursors(log_key)
        self.max_grace_hours = settings.max_grace_hours
        self._resets = resets or Resets(
            store=store, devices=None, limiters=(), events=events, clock=clock
        )
        # One reset per member per ``member_reset_cooldown_seconds``, counted across workers.
        self._reset_cooldown = reset_cooldown

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

    async def events(
        self,
        actor: str,
        site_id: str,
        *,
        kinds: frozenset[EventKind] | None = None,
        member: str | None = None,
        since: float | None = None,
        until: float | None = None,
        cursor: str | None = None,
        limit: int = DEFAULT_EVENTS_PER_PAGE,
        ip: str | None = None,
    ) -> SecurityLogPage | Denied:
        """The site's security log, newest first, for its owners: the site's own events
        (policy changes, members added, access refused) and the events naming no site of its
        current members (sign-ins, failures, lock-outs, factors), as
        :class:`~mfa_guard.stores.events.EventQuery` reads them. Narrowed to ``kinds``, one
        ``member``, ``since`` (included) and ``until`` (excluded); ``cursor`` is the
        ``next_cursor`` of the page before; ``limit`` events at most (1 to
        :data:`~mfa_guard.stores.events.MAX_EVENTS_PER_PAGE`).

        A cursor this site's log did not give is refused (``INVALID_CURSOR``) before the owner
        check, as any other bad input; the owner check is :meth:`members`' (a non-member: no
        such site)."""
        if self._log is None:
            raise ConfigurationError("the security log needs MFAGuard(event_store=an EventStore)")
        if not 1 <= limit <= MAX_EVENTS_PER_PAGE:
            return Denied(Reason.INVALID_EVENTS_LIMIT, params={"max": MAX_EVENTS_PER_PAGE})
        scope = f"site:{site_id}"
        before = None
        if cursor is not None and (before := self._cursors.read(scope, cursor)) is None:
            return Denied(Reason.INVALID_CURSOR)
        refused = await self._owner_only(actor, site_id, ip, "events")
        if refused is not None:
            return refused
        members = await self.sites.members(site_id)
        query = EventQuery(
            users=tuple(m.user_id for m in members),
            site=site_id,
            member=member,
            kinds=kinds,
            since=since,
            until=until,
            before=before,
            limit=limit,
        )
        return await read_page(self._log, query, self._cursors, scope)

    async def set_policy(
        self,
        actor: str,
        site_id: str,
        *,
        enforce: bool,
        grace_hours: float | None,
        marker: Marker,
        ip: str | None,
        methods: MethodPolicy = MethodPolicy.ANY,
    ) -> Site | MembersWithoutMFA | Denied:
        """Turn enforcement on (``grace_hours``: from when; ``None`` = at once, refused while
        members lack 2FA) or off, and choose the factors the site accepts (``methods``, only
        with ``enforce``; see :func:`next_policy` for its deadline). For the site's owners;
        ``marker`` is the owner's session state, read fresh
        (``guard.session_marker(scope, recheck=True)``): turning enforcement on needs the
        owner's own 2FA, and an owner who has 2FA must have verified it within
        ``recent_mfa_seconds`` for any change (step-up, as for new recovery codes).

        Methods that apply at once hold the owner first: ``phishing_resistant`` is refused
        while the owner has no passkey or security key (grace ``0`` too), and either is refused
        unless the owner's session was verified by a factor the policy accepts (a passkey; not
        a texted code), so that the owner's own session is not challenged again the next
        instant. Without ``grace_hours``, ``phishing_resistant`` is refused while any member
        lacks a passkey or security key."""
        refused = await self._owner_only(actor, site_id, ip, "policy")
        if refused is not None:
            return refused
        if grace_hours is not None and not (
            math.isfinite(grace_hours) and 0 <= grace_hours <= self.max_grace_hours
        ):
            return Denied(Reason.INVALID_GRACE, params={"max_hours": self.max_grace_hours})
        if methods is not MethodPolicy.ANY and not enforce:
            return Denied(Reason.METHODS_NEED_ENFORCEMENT)
        if methods is MethodPolicy.PHISHING_RESISTANT and self._settings.webauthn.rp_id is None:
            return Denied(Reason.PASSKEYS_NOT_OFFERED)
        now = self._clock()
        if not marker.enrolled:
            if enforce:
                return Denied(Reason.OWNER_MFA_REQUIRED)
        elif not self._recently_verified(marker, now):
            return Denied(Reason.REAUTHENTICATION_REQUIRED)
        if not enforce:
            policy = SitePolicy(enforce=False, changed_by=actor, changed_at=now)
        else:
            current = await self.sites.site(site_id)
            if current is None:  # removed since the owner check
                return Denied(Reason.SITE_NOT_FOUND)
            policy = next_policy(
                current.policy,
                methods=methods,
                grace_hours=grace_hours,
                changed_by=actor,
                now=now,
            )
            unready = await self._unready(actor, site_id, policy, marker, now, grace_hours)
            if unready is not None:
                return unready
        if not await self.sites.set_policy(site_id, policy):
            return Denied(Reason.SITE_NOT_FOUND)
        await self._emit(EventKind.SITE_POLICY_CHANGED, actor, site_id, ip, policy_detail(policy))
        site = await self.sites.site(site_id)
        return site if site is not None else Denied(Reason.SITE_NOT_FOUND)

    async def _unready(
        self,
        actor: str,
        site_id: str,
        policy: SitePolicy,
        marker: Marker,
        now: float,
        grace_hours: float | None,
    ) -> MembersWithoutMFA | Denied | None:
        """Why ``policy`` cannot apply now, if it cannot: members it would lock out (asked
        without a grace period), the owner without a passkey it requires at once, or the
        owner's session verified by a factor it refuses at once."""
        methods = policy.methods
        methods_from = policy.methods_from(methods)  # None for any
        at_once = methods_from is not None and methods_from <= now
        # What members need now: 2FA (at once, with no grace period), and the methods' factor
        # if they apply now too (same methods kept a deadline that may be later).
        needed = methods if at_once else MethodPolicy.ANY
        if grace_hours is None:
            # No grace period: nobody may be locked out, the owner included.
            members = await self.member_statuses(site_id)
            lacking = tuple(m for m in members if not accepts(needed, m))
            if lacking:
                if needed is MethodPolicy.PHISHING_RESISTANT:
                    return MembersWithoutMFA(lacking, Reason.MEMBERS_WITHOUT_ALLOWED_FACTOR)
                return MembersWithoutMFA(lacking)
        elif needed is MethodPolicy.PHISHING_RESISTANT:
            status = (await self.store.statuses([actor]))[actor]
            owner = MemberStatus(
                actor, Role.OWNER, status.enrolled, status.phone_verified, status.kinds
            )
            if not accepts(methods, owner):
                return MembersWithoutMFA((owner,), Reason.OWNER_WITHOUT_ALLOWED_FACTOR)
        if not verified_as_accepted(needed, marker.method):
            if needed is MethodPolicy.PHISHING_RESISTANT:
                return Denied(Reason.PASSKEY_REQUIRED_FOR_POLICY)
            return Denied(Reason.STRONG_FACTOR_REQUIRED_FOR_POLICY)
        return None

    def _recently_verified(self, marker: Marker, now: float) -> bool:
        settings = self._settings
        return is_recent(
            marker,
            now,
            lifetime_seconds=settings.verified_lifetime_seconds,
            max_age=settings.recent_mfa_seconds,
        )

    async def reset_member(
        self, actor: str, site_id: str, member: str, *, marker: Marker, ip: str | None
    ) -> ResetDone | Denied:
        """An owner resets a member who lost their second factor (see :mod:`mfa_guard.resets`
        for what goes). ``marker`` is the owner's session state, read fresh: the owner must
        have 2FA and have verified it within ``recent_mfa_seconds`` with an app, a passkey or
        a recovery code (step-up; a texted code is not enough).

        Refused for anyone but the site's owners; for the owner themselves (their own factors
        change on their settings page, under its rules); for a user who is not a member; for
        a member who also belongs to a site the owner does not own (the reset is
        account-wide: it would turn 2FA off there too; the refusal gives their number, never
        their names); when the member has nothing to reset; and within
        ``member_reset_cooldown_seconds`` of the member's last reset by an owner."""
        refused = await self._owner_only(actor, site_id, ip, "reset")
        if refused is not None:
            return refused
        denied = await self._reset_refusal(actor, site_id, member, marker)
        if denied is None and not await self._resets.has_anything(member):
            denied = Denied(Reason.NOTHING_TO_RESET)
        if denied is None and self._reset_cooldown is not None:
            wait = await self._reset_cooldown.acquire(member, self._clock())
            if wait is not None:
                denied = Denied(Reason.RESET_COOLDOWN, retry_at=wait.retry_at)
        if denied is not None:
            detail = f"member={field(member)} refused={denied.reason.value.code}"
            await self._emit(EventKind.MEMBER_RESET_REFUSED, actor, site_id, ip, detail)
            return denied
        return await self._resets.reset(member, by=actor, site=site_id, ip=ip)

    async def _reset_refusal(
        self, actor: str, site_id: str, member: str, marker: Marker
    ) -> Denied | None:
        """Why the owner ``actor`` may not reset ``member`` of ``site_id``, if they may not."""
        if not valid_id(member, MAX_USER_ID):
            # No store holds such an id (PostgreSQL refuses a NUL): no member, without a lookup.
            return Denied(Reason.MEMBER_NOT_FOUND)
        if member == actor:
            return Denied(Reason.CANNOT_RESET_SELF)
        if not marker.enrolled:
            return Denied(Reason.OWNER_MFA_REQUIRED_FOR_RESET)
        if not self._recently_verified(marker, self._clock()):
            return Denied(Reason.RECENT_MFA_FOR_RESET)
        if marker.method not in STRONG_METHODS:
            return Denied(Reason.STRONG_FACTOR_FOR_RESET)
        theirs, mine = await self.sites.memberships(member), await self.sites.memberships(actor)
        if not any(m.site.id == site_id for m in theirs):
            return Denied(Reason.MEMBER_NOT_FOUND)
        owned = {m.site.id for m in mine if m.role is Role.OWNER}
        elsewhere = [m.site.id for m in theirs if m.site.id not in owned]
        if elsewhere:
            return Denied(Reason.MEMBER_OF_OTHER_SITES, params={"count": len(elsewhere)})
        return None

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
