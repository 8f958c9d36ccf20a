"""The facade an app wires in: ``guard.middleware()`` and ``guard.mount()``."""

from __future__ import annotations

import functools
import logging
import re
from collections.abc import Callable, Mapping, MutableMapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from starlette.authentication import BaseUser, SimpleUser, UnauthenticatedUser
from starlette.middleware import Middleware
from starlette.requests import cookie_parser
from starlette.routing import BaseRoute, Mount
from starlette.types import Scope

from mfa_guard.clock import Clock, system_clock
from mfa_guard.core.marker import EnrolmentSummary, Marker, subject_hasher
from mfa_guard.core.policy import DEVICE_METHOD
from mfa_guard.core.recovery import DEFAULT_COST, ScryptCost
from mfa_guard.core.totp import TOTPParameters
from mfa_guard.crypto import SecretBox
from mfa_guard.devices import TrustedDevices, is_token, token_hash
from mfa_guard.errors import ConfigurationError, StoreUnavailable
from mfa_guard.events import EventSink, LoggingEventSink
from mfa_guard.ratelimit import failure_limiters, storage_from_uri
from mfa_guard.send_limits import SendLimiter
from mfa_guard.services import MFAService, SMSChannel, concurrently
from mfa_guard.settings import MFAGuardSettings
from mfa_guard.sms import SMSProvider, provider_from_settings
from mfa_guard.stores.base import MFAStore
from mfa_guard.stores.devices import DeviceStore, TrustedDevice
from mfa_guard.stores.memory import MemoryStore
from mfa_guard.stores.sites import SiteDirectory
from mfa_guard.web.http import client_ip
from mfa_guard.web.wiring import no_session, no_user

if TYPE_CHECKING:
    from mfa_guard.enforcement import EnrolmentNotice, SiteService

logger = logging.getLogger("mfa_guard")

SESSION_KEY = "mfa_guard"
# Where ``named_enrolment_notice`` leaves the user's enforcing sites for this request.
NOTICE_SITES_KEY = "mfa_guard.enforcing_sites"
IdentityGetter = Callable[[Scope], str | None]
AccountNameGetter = Callable[[Scope], str]
# The hidden fields the app's sign-out form needs (its CSRF token), for the request's scope.
SignOutFields = Callable[[Scope], Mapping[str, str]]


def user_identity(scope: Scope) -> str | None:
    """The default identity: ``scope["user"].identity`` when authenticated (a
    :class:`~starlette.authentication.SimpleUser`: its ``username``). No ``user`` in the scope
    at all is a wiring error, and so is a user class with no ``identity`` of its own: both
    raise :class:`ConfigurationError`."""
    user: Any = scope.get("user")
    kind = type(user)
    if kind is SimpleUser:  # Starlette's own: always authenticated, named by its username
        name = user.username
        if type(name) is str:
            return name or None
        return str(name) if name else None
    if kind is UnauthenticatedUser:
        return None
    if user is None:
        if "user" not in scope:  # not anonymous: nobody set it (the guard sits too early)
            raise no_user()
        return None
    # How to read any other user is decided once per class: this runs on every request.
    read = _IDENTITY_READERS.get(kind)
    if read is None:
        read = _IDENTITY_READERS[kind] = _identity_reader(kind, user)
    return read(user)


def _identity_reader(kind: type, user: Any) -> Callable[[Any], str | None]:
    # Starlette's SimpleUser leaves ``identity`` to BaseUser, which raises: a subclass that
    # keeps SimpleUser's display_name is named by its username, as SimpleUser is.
    declared = getattr(kind, "identity", None)
    if declared is BaseUser.identity:
        if issubclass(kind, SimpleUser) and kind.display_name is SimpleUser.display_name:
            return _username
    elif declared is not None or hasattr(user, "identity"):
        return _identity
    # No identity of its own. Its display_name is a label, not a key: two users named alike
    # would share one enrolment, so it is refused rather than guessed at.
    return functools.partial(_no_identity, kind.__qualname__)


def _username(user: Any) -> str | None:
    if not user.is_authenticated:
        return None
    name = user.username
    return str(name) if name else None


def _identity(user: Any) -> str | None:
    if not user.is_authenticated:
        return None
    identity = user.identity
    if identity is None or identity == "":
        raise ConfigurationError(
            f"mfa_guard read no identity from an authenticated {type(user).__qualname__} "
            "(scope['user'].identity is empty): return the user's stable, unique id"
        )
    return str(identity)


def _no_identity(name: str, user: Any) -> str | None:
    if not user.is_authenticated:
        return None
    raise ConfigurationError(
        f"mfa_guard identifies a signed-in user by scope['user'].identity, and {name} has none "
        "of its own; its display_name need not be unique (two users named alike would share one "
        f"2FA enrolment). Give {name} an identity property returning the user's stable, unique "
        "id (a primary key), or pass MFAGuard(identity=a function of the scope). Enrolments are "
        "filed under that id: to keep those made so far, return what display_name gave."
    )


_IDENTITY_READERS: dict[type, Callable[[Any], str | None]] = {}


def user_display_name(scope: Scope) -> str:
    """The default account label in authenticator apps: ``scope["user"].display_name``."""
    user = scope.get("user")
    return str(getattr(user, "display_name", "") or "account")


class MFAGuard:
    """The kit for one app: ``guard.middleware()`` and ``guard.mount()``. ``recovery_kdf`` is the
    scrypt cost of new recovery-code sets (:class:`~mfa_guard.core.recovery.ScryptCost`, whose
    default is also its floor: it may be raised, and lowered only to
    ``mfa_guard.testing.CHEAP_KDF`` in tests); sets already stored keep the cost they were made
    with."""

    def __init__(
        self,
        *,
        settings: MFAGuardSettings,
        store: MFAStore,
        events: EventSink | None = None,
        clock: Clock = system_clock,
        identity: IdentityGetter = user_identity,
        account_name: AccountNameGetter = user_display_name,
        template_directory: str | Path | None = None,
        sms: SMSProvider | None = None,
        sites: SiteDirectory | None = None,
        devices: DeviceStore | None = None,
        sign_out_fields: SignOutFields | None = None,
        recovery_kdf: ScryptCost = DEFAULT_COST,
    ) -> None:
        self.settings = settings
        self.sign_out_fields = sign_out_fields
        self.store = store
        self.sites = sites
        self.clock = clock
        self.identity = identity
        self.account_name = account_name
        self.events = events or LoggingEventSink()
        if settings.encryption_keys:
            box = SecretBox(settings.encryption_keys)
        elif settings.debug:
            box = SecretBox.ephemeral()
        else:
            raise ConfigurationError("MFAGuard needs MFA_GUARD_ENCRYPTION_KEYS outside debug mode")
        _check_shared_state(settings, store)
        storage = storage_from_uri(settings.storage_uri)
        # Recovery codes have a budget of their own (docs/security.md), in the same storage.
        self.limiter, recovery_limiter = failure_limiters(storage, settings.rate_limits)
        self.sms: SMSProvider | None = None
        channel = None
        if settings.sms.enabled:
            if sms is None and settings.sms.provider == "console" and not settings.debug:
                raise ConfigurationError(
                    "the console SMS provider prints codes to stdout (the logs): set "
                    "MFA_GUARD_SMS__PROVIDER=twilio or pass MFAGuard(sms=...); console is for "
                    "MFA_GUARD_DEBUG=true only"
                )
            self.sms = sms or provider_from_settings(settings.sms, clock)
            channel = SMSChannel(
                provider=self.sms,
                limiter=SendLimiter(storage, settings.sms),
                settings=settings.sms,
            )
        self.service = MFAService(
            store=store,
            box=box,
            limiter=self.limiter,
            recovery_limiter=recovery_limiter,
            events=self.events,
            clock=clock,
            issuer=settings.issuer,
            params=TOTPParameters(
                digits=settings.totp.digits,
                period=settings.totp.period,
                drift_steps=settings.totp.drift_steps,
            ),
            sms=channel,
            require_phone=settings.require_phone_for_enrolment,
            sites=sites,
            everyone_required=settings.everyone.required,
            recovery_kdf=recovery_kdf,
        )
        self.trusted_devices: TrustedDevices | None = None
        if settings.trusted_devices.enabled:
            if devices is None:
                raise ConfigurationError(
                    "trusted devices (MFA_GUARD_TRUSTED_DEVICES__ENABLED) need a device store: "
                    "MFAGuard(devices=SQLDeviceStore.sharing(store)) or MemoryDeviceStore()"
                )
            self.trusted_devices = TrustedDevices(
                store=store,
                devices=devices,
                settings=settings.trusted_devices,
                events=self.events,
                clock=clock,
            )
        # One keyed hash per request, no cache: what a request costs does not grow with users.
        self.subject = subject_hasher(box.marker_key)
        self.template_directory = template_directory
        self._recheck = settings.recheck_seconds

    async def aclose(self) -> None:
        """Closes the rate-limit storage's and the SMS provider's connections; call it from the
        app's lifespan. The store is the app's own to close."""
        await self.service.drain()
        await self.limiter.aclose()
        close = getattr(self.sms, "aclose", None)
        if close is not None:
            await close()

    @functools.cached_property
    def site_service(self) -> SiteService:
        """Members' 2FA status and site policies; needs ``MFAGuard(sites=...)``."""
        from mfa_guard.enforcement import SiteService

        if self.sites is None:
            raise ConfigurationError("site enforcement needs MFAGuard(sites=a SiteDirectory)")
        return SiteService(
            store=self.store,
            sites=self.sites,
            events=self.events,
            clock=self.clock,
            settings=self.settings,
        )

    async def session_marker(self, scope: Scope, *, recheck: bool = False) -> Marker | None:
        """The signed-in user's marker for this request (``None`` when nobody is signed in):
        the one the middleware left in the scope, or the session's; with ``recheck``, re-read
        from the stores now and written back (before a sensitive change, as the kit's own
        routes do)."""
        user_id = self.identity(scope)
        if user_id is None:
            return None
        session = self.session_of(scope)
        now = self.clock()
        marker, fresh = self.fresh_marker(session, user_id, now)
        if recheck or not fresh or marker is None:
            marker = await self.recheck(session, user_id, marker, now, scope=scope)
        scope[SESSION_KEY] = marker
        return marker

    def enrolment_notice(self, scope: Scope) -> EnrolmentNotice | None:
        """For the app's templates: the banner to show when the app (``everyone``) or a site of
        the signed-in user requires 2FA and they have not turned it on, read from the request's
        marker with no I/O. It names the sites only when ``named_enrolment_notice`` looked them
        up earlier in this request."""
        from mfa_guard.enforcement import enrolment_notice

        marker = scope.get(SESSION_KEY)
        return enrolment_notice(
            marker if isinstance(marker, Marker) else None,
            self.clock(),
            everyone_from=self.settings.everyone.required_from(),
            sites=scope.get(NOTICE_SITES_KEY),
        )

    async def named_enrolment_notice(self, scope: Scope) -> EnrolmentNotice | None:
        """``enrolment_notice``, naming the sites that require 2FA ("Acme requires…"): one
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

    def middleware(self) -> Middleware:
        from mfa_guard.web.middleware import MFAGuardMiddleware

        return Middleware(MFAGuardMiddleware, guard=self)

    @functools.cached_property
    def routes(self) -> list[BaseRoute]:
        from mfa_guard.web.routes import build_routes

        return build_routes(self)

    def mount(self) -> Mount:
        mount = Mount(self.settings.mount_path, routes=self.routes, name="mfa_guard")
        # Starlette's "{path:path}" is ".*", which stops at a newline: a path with "%0A" would
        # miss the kit and get the app's plain-text 404 instead of the API's JSON errors.
        mount.path_regex = re.compile(mount.path_regex.pattern, re.DOTALL)
        return mount

    def fresh_marker(
        self, session: MutableMapping[str, Any], user_id: str, now: float
    ) -> tuple[Marker | None, bool]:
        """The session's marker for ``user_id`` (``None`` if absent, malformed or another
        user's) and whether it was re-checked within ``recheck_seconds``: the hot path, with no
        I/O and no coroutine."""
        marker = Marker.load(session.get(SESSION_KEY), self.subject(user_id))
        return marker, marker is not None and not marker.is_stale(now, self._recheck)

    async def recheck(
        self,
        session: MutableMapping[str, Any],
        user_id: str,
        marker: Marker | None,
        now: float,
        *,
        scope: Scope | None = None,
    ) -> Marker:
        """The marker re-stamped from the user's enrolment (one store call) and, with a site
        directory, their sites' earliest enforcement deadline (one directory call, at the same
        time), written back. A session verified by a remembered browser also has its device
        checked again, at the same time, from the request's cookie in ``scope``: forgotten,
        expired or absent, the session is verified no more."""
        by_device = (
            marker is not None and marker.method == DEVICE_METHOD and marker.verified_at is not None
        )
        device: TrustedDevice | None = None
        if by_device:
            token = None if scope is None else self.device_token(scope)
            (summary, enrol_by), device = await concurrently(
                self._enrolment_state(user_id), self._device(user_id, token, now)
            )
        else:
            summary, enrol_by = await self._enrolment_state(user_id)
        if marker is None:
            marker = Marker.fresh(self.subject(user_id), summary, now, enrol_by)
        else:
            marker = marker.refreshed(summary, now, enrol_by)
        if by_device and (device is None or not device.is_trusted(summary.epoch, now)):
            marker = marker._replace(verified_at=None, method=None)
        self.save_marker(session, marker)
        return marker

    async def _enrolment_state(self, user_id: str) -> tuple[EnrolmentSummary, float | None]:
        """The user's enrolment and ``enrol_by``: the earliest of their enforcing sites'
        deadlines and the app-wide one (``settings.everyone``)."""
        everyone = self.settings.everyone.required_from()
        # Once the app-wide deadline has passed, no site deadline changes the decision (every
        # user without 2FA must enrol): the directory is not read.
        if self.sites is None or (everyone is not None and everyone <= self.clock()):
            return await self.store.summary(user_id), everyone
        summary, by_site = await concurrently(
            self.store.summary(user_id), self.sites.deadline(user_id)
        )
        if everyone is None or (by_site is not None and by_site < everyone):
            return summary, by_site
        return summary, everyone

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
        self,
        scope: Scope,
        session: MutableMapping[str, Any],
        user_id: str,
        marker: Marker,
        now: float,
    ) -> Marker | None:
        """For a session about to be sent to the challenge: verified by the browser's trusted
        device instead, if it has one (one round trip, the enrolment read with it); ``None``
        otherwise. A success like a verified code: both failure counts are cleared (after the
        answer), lifting a lock of failures in a row (docs/security.md)."""
        devices = self.trusted_devices
        token = self.device_token(scope)
        if devices is None or token is None:
            return None
        recognised = await devices.recognise(user_id, token, client_ip(scope, self.settings))
        if recognised is None:
            return None
        summary = recognised.summary
        marker = marker.refreshed(summary, now, marker.enrol_by).verified(
            DEVICE_METHOD, summary.epoch, now
        )
        self.save_marker(session, marker)
        self.service.forget_failures_later(user_id)
        return marker

    async def current_marker(
        self, session: MutableMapping[str, Any], user_id: str, *, scope: Scope | None = None
    ) -> Marker:
        """This session's marker for ``user_id``: from the session while it is fresh, else
        re-checked with one store call (``scope``: the request, whose device cookie a session
        verified by a remembered browser is re-checked with)."""
        now = self.clock()
        marker, fresh = self.fresh_marker(session, user_id, now)
        if fresh and marker is not None:
            return marker
        return await self.recheck(session, user_id, marker, now, scope=scope)

    def save_marker(self, session: MutableMapping[str, Any], marker: Marker) -> None:
        session[SESSION_KEY] = marker.dump()

    def session_of(self, scope: Scope) -> MutableMapping[str, Any]:
        session: Any = scope.get("session")
        # Starlette's Session is a dict subclass: the ABC check is made once per class, as it
        # costs ten times more than the lookup.
        if type(session) not in SESSION_TYPES:
            if not isinstance(session, MutableMapping):
                raise no_session()
            SESSION_TYPES.add(type(session))
        mapping: MutableMapping[str, Any] = session
        return mapping


# The classes of session already checked to be a MutableMapping.
SESSION_TYPES: set[type] = {dict}


def _check_shared_state(settings: MFAGuardSettings, store: MFAStore) -> None:
    """Per-process state with several workers lets limits and replays hold per process only."""
    local = []
    if settings.storage_uri.startswith(("memory://", "async+memory")):
        local.append("rate limits in memory:// (set MFA_GUARD_STORAGE_URI=redis://…)")
    if isinstance(store, MemoryStore):
        local.append("enrolments in a MemoryStore (use SQLStore on PostgreSQL)")
    if not local:
        return
    if settings.require_shared_state:
        raise ConfigurationError(
            "MFA_GUARD_REQUIRE_SHARED_STATE is on, but the kit keeps " + " and ".join(local)
        )
    if settings.workers > 1:
        logger.warning(
            "mfa_guard runs with %d workers but keeps %s: each process would count failures "
            "and accept codes on its own",
            settings.workers,
            " and ".join(local),
        )
