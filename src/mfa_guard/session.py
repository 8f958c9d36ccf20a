"""The session gate: the second factor's state of a signed-in session, read, re-checked and saved.

Each session carries a :class:`~mfa_guard.core.marker.Marker` under :data:`SESSION_KEY`: whether
its user is enrolled, when the session completed its second factor and how, and when the stores
were last read for it. The gate loads it (no I/O while it is fresh), re-checks it against the
stores when it is due (one round trip), lets a remembered browser verify a session, and saves it
back. The middleware, the kit's routes, step-up and the FastAPI dependencies all go through it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, MutableMapping
from typing import Any

from starlette.requests import cookie_parser
from starlette.types import Scope

from mfa_guard.clock import Clock
from mfa_guard.core.marker import EnrolmentSummary, Marker
from mfa_guard.core.policy import DEVICE_METHOD
from mfa_guard.devices import TrustedDevices, is_token, token_hash
from mfa_guard.enforcement import EnrolmentNotice, enrolment_notice
from mfa_guard.errors import StoreUnavailable
from mfa_guard.identity import IdentityGetter, client_ip, no_session
from mfa_guard.services import concurrently
from mfa_guard.settings import MFAGuardSettings
from mfa_guard.stores.base import MFAStore
from mfa_guard.stores.devices import TrustedDevice
from mfa_guard.stores.sites import Requirements, SiteDirectory

logger = logging.getLogger("mfa_guard")

# The marker's key in the session.
SESSION_KEY = "mfa_guard"
# Where a request's marker is left in its scope, once read (for the app and its templates).
MARKER_SCOPE_KEY = "mfa_guard"
# Where ``named_enrolment_notice`` leaves the user's enforcing sites for this request.
NOTICE_SITES_KEY = "mfa_guard.enforcing_sites"
Session = MutableMapping[str, Any]

# The classes of session already checked to be a MutableMapping.
SESSION_TYPES: set[type] = {dict}


def session_of(scope: Scope) -> Session:
    """The request's session; none (or not a mapping) is a wiring error."""
    session: Any = scope.get("session")
    # Starlette's Session is a dict subclass: the ABC check is made once per class, not on
    # every request.
    if type(session) not in SESSION_TYPES:
        if not isinstance(session, MutableMapping):
            raise no_session()
        SESSION_TYPES.add(type(session))
    mapping: Session = session
    return mapping


class SessionGate:
    """Reads, re-checks and saves the marker of a signed-in session.

    ``subject`` binds a marker to its user (a keyed hash of the identity: the session holds no
    user id); ``recheck_seconds`` is how long a marker is trusted before the stores are read
    again. ``on_device_verified`` runs for a user a remembered browser has just verified (the
    failure counts are cleared after the answer, as for a verified code).
    """

    def __init__(
        self,
        *,
        settings: MFAGuardSettings,
        store: MFAStore,
        sites: SiteDirectory | None,
        trusted_devices: TrustedDevices | None,
        subject: Callable[[str], str],
        identity: IdentityGetter,
        clock: Clock,
        on_device_verified: Callable[[str], None],
    ) -> None:
        self.settings = settings
        self.store = store
        self.sites = sites
        self.trusted_devices = trusted_devices
        self.subject = subject
        self.identity = identity
        self.clock = clock
        self._on_device_verified = on_device_verified
        self._recheck = settings.recheck_seconds
        # What the app requires of every account (settings.everyone), from when.
        everyone = settings.everyone
        self._everyone = Requirements(
            everyone.required_from(),
            everyone.methods_from("no_sms"),
            everyone.methods_from("phishing_resistant"),
        )

    def fresh(self, session: Session, user_id: str, now: float) -> tuple[Marker | None, bool]:
        """The session's marker for ``user_id`` (``None`` if absent, malformed or another
        user's) and whether it was re-checked within ``recheck_seconds``: no I/O."""
        marker = Marker.load(session.get(SESSION_KEY), self.subject(user_id))
        return marker, marker is not None and not marker.is_stale(now, self._recheck)

    async def marker(
        self, scope: Scope, *, recheck: bool = False, user_id: str | None = None
    ) -> Marker | None:
        """The signed-in user's marker for this request (``None`` when nobody is signed in):
        the session's while fresh, else re-checked; with ``recheck``, re-read from the stores
        now. ``user_id``: the user, when the scope does not name them yet. Left in the scope
        under :data:`MARKER_SCOPE_KEY`."""
        if user_id is None:
            user_id = self.identity(scope)
        if user_id is None:
            return None
        session = session_of(scope)
        now = self.clock()
        marker, fresh = self.fresh(session, user_id, now)
        if recheck or not fresh or marker is None:
            marker = await self.recheck(session, user_id, marker, now, scope=scope)
        scope[MARKER_SCOPE_KEY] = marker
        return marker

    async def current(
        self, session: Session, user_id: str, *, scope: Scope | None = None
    ) -> Marker:
        """This session's marker for ``user_id``: from the session while it is fresh, else
        re-checked with one store call (``scope``: the request, whose device cookie a session
        verified by a remembered browser is re-checked with)."""
        now = self.clock()
        marker, fresh = self.fresh(session, user_id, now)
        if fresh and marker is not None:
            return marker
        return await self.recheck(session, user_id, marker, now, scope=scope)

    async def recheck(
        self,
        session: Session,
        user_id: str,
        marker: Marker | None,
        now: float,
        *,
        scope: Scope | None = None,
    ) -> Marker:
        """The marker re-stamped from the user's enrolment (one store call) and, with a site
        directory, their sites' earliest enforcement deadline (one directory call, at the same
        time), saved. A session verified by a remembered browser also has its device checked
        again, at the same time, from the request's cookie in ``scope``: forgotten, expired or
        absent, the session is verified no more."""
        by_device = (
            marker is not None and marker.method == DEVICE_METHOD and marker.verified_at is not None
        )
        device: TrustedDevice | None = None
        if by_device:
            token = None if scope is None else self.device_token(scope)
            (summary, needs), device = await concurrently(
                self._enrolment_state(user_id), self._device(user_id, token, now)
            )
        else:
            summary, needs = await self._enrolment_state(user_id)
        if marker is None:
            marker = Marker.fresh(
                self.subject(user_id),
                summary,
                now,
                needs.enrol_by,
                needs.no_sms_by,
                needs.passkey_by,
            )
        else:
            marker = marker.refreshed(
                summary, now, needs.enrol_by, needs.no_sms_by, needs.passkey_by
            )
        if by_device and (device is None or not device.is_trusted(summary.epoch, now)):
            marker = marker._replace(verified_at=None, method=None)
        self.save(session, marker)
        return marker

    async def _enrolment_state(self, user_id: str) -> tuple[EnrolmentSummary, Requirements]:
        """The user's enrolment and what is required of them: the earliest of their sites'
        deadlines and the app-wide one (``settings.everyone``), for 2FA and for its methods."""
        everyone = self._everyone
        # Once the app-wide deadlines have passed and nothing is stricter than the app's
        # policy, no site changes the decision: the directory is not read.
        if self.sites is None or (
            everyone.enrol_by is not None
            and everyone.enrol_by <= self.clock()
            and self.settings.everyone.methods == "phishing_resistant"
        ):
            return await self.store.summary(user_id), everyone
        summary, by_site = await concurrently(
            self.store.summary(user_id), self.sites.requirements(user_id)
        )
        return summary, by_site.combined(everyone)

    async def _device(self, user_id: str, token: str | None, now: float) -> TrustedDevice | None:
        devices = self.trusted_devices
        if devices is None or token is None:
            return None
        return await devices.devices.recognise(user_id, token_hash(token), now)

    def device_token(self, scope: Scope) -> str | None:
        """The device token in the request's cookie, if trusted devices are on and it has the
        shape of one (anything else is never looked up)."""
        devices = self.trusted_devices
        if devices is None:
            return None
        for name, value in scope.get("headers", ()):
            if name == b"cookie":
                token = cookie_parser(value.decode("latin-1")).get(devices.settings.cookie_name)
                if token is not None and is_token(token):
                    return token
        return None

    async def admit_by_device(
        self, scope: Scope, session: Session, user_id: str, marker: Marker, now: float
    ) -> Marker | None:
        """For a session about to be sent to the challenge: verified by the browser's trusted
        device instead, if it has one (one round trip, the enrolment read with it); ``None``
        otherwise. A success like a verified code: both failure counts are cleared (after the
        answer), lifting a lock of failures in a row."""
        devices = self.trusted_devices
        token = self.device_token(scope)
        if devices is None or token is None:
            return None
        recognised = await devices.recognise(user_id, token, client_ip(scope, self.settings))
        if recognised is None:
            return None
        summary = recognised.summary
        marker = marker.refreshed(
            summary, now, marker.enrol_by, marker.no_sms_by, marker.passkey_by
        ).verified(DEVICE_METHOD, summary.epoch, now)
        refused_from = marker.refused_from()
        if refused_from is not None and now >= refused_from:
            # A policy that accepts only a passkey accepts no remembered browser either.
            return None
        self.save(session, marker)
        self._on_device_verified(user_id)
        return marker

    def save(self, session: Session, marker: Marker) -> None:
        session[SESSION_KEY] = marker.dump()

    def enrolment_notice(self, scope: Scope) -> EnrolmentNotice | None:
        """The banner to show when the app (``everyone``) or a site of the signed-in user
        requires 2FA and they have not turned it on, read from the request's marker with no
        I/O. It names the sites only when :meth:`named_enrolment_notice` looked them up earlier
        in this request."""
        marker = scope.get(MARKER_SCOPE_KEY)
        return enrolment_notice(
            marker if isinstance(marker, Marker) else None,
            self.clock(),
            everyone_from=self.settings.everyone.required_from(),
            sites=scope.get(NOTICE_SITES_KEY),
        )

    async def named_enrolment_notice(self, scope: Scope) -> EnrolmentNotice | None:
        """:meth:`enrolment_notice`, naming the sites that require 2FA ("Acme requires…"): one
        directory read, made only when a site's requirement is what the notice tells (never
        for a user with 2FA, nor under the app-wide policy). The sites stay in the scope, so a
        later ``enrolment_notice(scope)`` in the same request names them too. If the directory
        cannot be reached the notice comes without names: a banner is no reason for a 503."""
        notice = self.enrolment_notice(scope)
        if notice is None or notice.everyone or notice.sites or self.sites is None:
            return notice
        user_id = self.identity(scope)
        if user_id is None:
            return notice
        try:
            memberships = await self.sites.memberships(user_id)
        except StoreUnavailable:
            logger.warning("mfa_guard could not read the site names for the enrolment notice")
            return notice
        scope[NOTICE_SITES_KEY] = tuple(m.site for m in memberships if m.site.policy.enforce)
        return self.enrolment_notice(scope)
