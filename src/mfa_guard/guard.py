"""The composition root an app wires in: ``guard.middleware()`` and ``guard.mount()``."""

from __future__ import annotations

import functools
import logging
import re
from collections.abc import Awaitable, Callable
from pathlib import Path

from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.routing import BaseRoute, Mount
from starlette.types import Scope

from mfa_guard.clock import Clock, system_clock
from mfa_guard.core.marker import Marker, subject_hasher
from mfa_guard.core.recovery import DEFAULT_COST, ScryptCost
from mfa_guard.core.totp import TOTPParameters
from mfa_guard.core.webauthn import RelyingParty
from mfa_guard.crypto import SecretBox
from mfa_guard.devices import TrustedDevices
from mfa_guard.enforcement import EnrolmentNotice, SiteService
from mfa_guard.errors import ConfigurationError
from mfa_guard.events import EventSink, LoggingEventSink
from mfa_guard.identity import (
    AccountNameGetter,
    IdentityGetter,
    SignOutFields,
    user_display_name,
    user_identity,
)
from mfa_guard.metrics import Metrics, MetricsSink
from mfa_guard.ratelimit import FailureLimiter, failure_limiters, storage_from_uri
from mfa_guard.readiness import PROBE_USER, Readiness, probe_all
from mfa_guard.resets import ResetDone, Resets
from mfa_guard.send_limits import SendLimiter
from mfa_guard.services import MFAService, SMSChannel
from mfa_guard.session import SessionGate
from mfa_guard.settings import MFAGuardSettings
from mfa_guard.sms import SMSProvider, provider_from_settings
from mfa_guard.stores.base import MFAStore
from mfa_guard.stores.devices import DeviceStore
from mfa_guard.stores.events import EventStore, StoringSink
from mfa_guard.stores.memory import MemoryStore
from mfa_guard.stores.sites import SiteDirectory
from mfa_guard.web import i18n
from mfa_guard.web.context import Kit
from mfa_guard.web.i18n import LanguageGetter
from mfa_guard.web.middleware import MFAGuardMiddleware
from mfa_guard.web.routes import build_routes

logger = logging.getLogger("mfa_guard")


class MFAGuard:
    """Two-factor authentication for one ASGI app: wires the settings, the stores and the
    services once, and hands the app its middleware (:meth:`middleware`) and its pages and JSON
    API (:meth:`mount`).

    ``store`` holds the enrolments; ``sites`` (a site directory) turns on site enforcement;
    ``devices`` (a device store) is needed when trusted devices are on; ``sms`` overrides the
    provider the settings name; ``events`` receives the audit events (logged by default);
    ``clock`` tells the time (tests pass one they move). ``identity`` and ``account_name`` read
    the signed-in user from the request's scope (``scope["user"]`` by default);
    ``sign_out_fields`` gives the hidden fields of the app's sign-out form; ``event_store``
    keeps the security log (every audit event, for site owners and each user's own activity);
    ``language`` gives the user's language when the app keeps one (a tag such as ``de``, or
    ``None`` to follow the browser's ``Accept-Language``), among ``settings.languages``;
    ``metrics`` counts the events and times each verify (:class:`~mfa_guard.OpenTelemetryMetrics`);
    ``template_directory`` holds templates that replace the pages' own. Construction refuses a
    configuration that would be unsafe (:class:`~mfa_guard.ConfigurationError`).

    For the app's own code: ``settings``, ``store``, ``sites``, ``events``, ``clock``,
    ``identity``, ``account_name`` and ``sms`` (the provider in use, if SMS is on); ``service``,
    the :class:`~mfa_guard.MFAService`, and :attr:`site_service`; :meth:`session_marker` and
    the enrolment notice for the app's templates (:meth:`enrolment_notice`,
    :meth:`named_enrolment_notice`); :meth:`page_language` for the app's own pages to speak the
    kit's pages' language; :meth:`check` for a readiness probe. :meth:`aclose` goes in
    the app's lifespan. The guard's
    other attributes are the kit's own wiring.

    ``recovery_kdf`` is the scrypt cost of new recovery-code sets (:class:`~mfa_guard.ScryptCost`,
    whose default is also its floor: it may be raised, and lowered only to
    ``mfa_guard.testing.CHEAP_KDF`` in tests); sets already stored keep the cost they were made
    with.
    """

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
        event_store: EventStore | None = None,
        language: LanguageGetter | None = None,
        metrics: Metrics | None = None,
    ) -> None:
        self.settings = settings
        self.store = store
        self.sites = sites
        self.clock = clock
        self.identity = identity
        self.account_name = account_name
        self.event_store = event_store
        self.events: EventSink = events or LoggingEventSink()
        if event_store is not None:
            # The security log keeps every event, after the app's own sink heard of it.
            self.events = StoringSink(self.events, event_store)
        if metrics is not None:
            # Every event counted once, then passed on to the sinks above.
            self.events = MetricsSink(self.events, metrics)
        if settings.encryption_keys:
            box = SecretBox(settings.encryption_keys)
        elif settings.debug:
            box = SecretBox.ephemeral()
        else:
            raise ConfigurationError("MFAGuard needs MFA_GUARD_ENCRYPTION_KEYS outside debug mode")
        _check_shared_state(settings, store)
        storage = storage_from_uri(settings.storage_uri, timeout=settings.storage_timeout)
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
            relying_party=RelyingParty.from_settings(settings),
            metrics=metrics,
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
        self.gate = SessionGate(
            settings=settings,
            store=store,
            sites=sites,
            trusted_devices=self.trusted_devices,
            subject=subject_hasher(box.marker_key),
            identity=identity,
            clock=clock,
            on_device_verified=self.service.forget_failures_later,
        )
        self.resets = Resets(
            store=store,
            devices=devices,
            limiters=(self.limiter, recovery_limiter),
            events=self.events,
            clock=clock,
        )
        site_service = None
        if sites is not None:
            cooldown = settings.member_reset_cooldown_seconds
            site_service = SiteService(
                store=store,
                sites=sites,
                events=self.events,
                clock=clock,
                settings=settings,
                resets=self.resets,
                reset_cooldown=(
                    FailureLimiter(storage, f"1 per {cooldown} second", budget="member_reset")
                    if cooldown
                    else None
                ),
                log=event_store,
                log_key=box.marker_key,
            )
        self.kit = Kit(
            settings=settings,
            gate=self.gate,
            service=self.service,
            trusted_devices=self.trusted_devices,
            sites=site_service,
            account_name=account_name,
            template_directory=template_directory,
            sign_out_fields=sign_out_fields,
            event_store=event_store,
            language=language,
        )

    async def aclose(self) -> None:
        """Closes the rate-limit storage's and the SMS provider's connections; call it from the
        app's lifespan. The store is the app's own to close."""
        await self.service.drain()
        await self.limiter.aclose()
        close = getattr(self.sms, "aclose", None)
        if close is not None:
            await close()

    async def check(self, within: float = 2.0) -> Readiness:
        """Readiness: each backend the kit decides requests with (the store, the site directory
        and the trusted devices' store when there are, the rate-limit storage) pinged at once,
        each within ``within`` seconds; no user's data is read or written. Serve it to the
        load balancer's health check (``Readiness.as_json()``; ``503`` unless ``ready``)."""
        pings: dict[str, Callable[[], Awaitable[object]]] = {
            "store": lambda: self.store.summary(PROBE_USER),
            "rate_limits": self.limiter.ping,
        }
        sites = self.sites
        if sites is not None:
            pings["sites"] = lambda: sites.requirements(PROBE_USER)
        devices = self.trusted_devices
        if devices is not None:
            pings["devices"] = lambda: devices.devices.devices(PROBE_USER)
        return await probe_all(pings, within)

    async def reset_two_factor(
        self, user_id: str, *, by: str | None = None, ip: str | None = None
    ) -> ResetDone | None:
        """For the app's own support tools: resets the user's second factor (they lost their
        phone; see :mod:`mfa_guard.resets` for what goes), telling them through the guard's
        event sink (``admin_reset``). ``by`` names who asked, in the audit event. ``None``
        when the user has nothing to reset. No check of who asks: that is the app's (a site's
        owner goes through ``site_service.reset_member``, which makes them)."""
        if not await self.resets.has_anything(user_id):
            return None
        return await self.resets.reset(user_id, by=by, ip=ip)

    @property
    def site_service(self) -> SiteService:
        """Members' 2FA status and site policies; needs ``MFAGuard(sites=...)``."""
        return self.kit.site_service

    async def session_marker(
        self, scope: Scope, *, recheck: bool = False, user_id: str | None = None
    ) -> Marker | None:
        """The signed-in user's marker for this request (``None`` when nobody is signed in):
        the one the session holds while fresh, else re-read; with ``recheck``, re-read from the
        stores now and saved (before a sensitive change, as the kit's own routes do).
        ``user_id`` names the user the scope does not name yet: one this very request signed
        in (or up), whose ``scope["user"]`` is still the anonymous one."""
        return await self.gate.marker(scope, recheck=recheck, user_id=user_id)

    def enrolment_notice(self, scope: Scope) -> EnrolmentNotice | None:
        """For the app's templates: the banner to show when the app (``everyone``) or a site of
        the signed-in user requires 2FA and they have not turned it on, read from the request's
        marker with no I/O. It names the sites only when ``named_enrolment_notice`` looked them
        up earlier in this request."""
        return self.gate.enrolment_notice(scope)

    async def named_enrolment_notice(self, scope: Scope) -> EnrolmentNotice | None:
        """``enrolment_notice``, naming the sites that require 2FA ("Acme requires…"): one
        directory read, made only when a site's requirement is what the notice tells. If the
        directory cannot be reached the notice comes without names."""
        return await self.gate.named_enrolment_notice(scope)

    def page_language(self, scope: Scope) -> str:
        """The language the kit's pages speak for this request (``en``, ``fr``, ``pt_BR``, ...):
        the app's choice for the user (``language``), else the best of the browser's
        ``Accept-Language``, among ``settings.languages``. For the app's own pages, so that
        they speak it too (:mod:`mfa_guard.i18n`)."""
        return i18n.request_language(Request(scope), self.settings.languages, self.kit.language)

    def middleware(self) -> Middleware:
        """The middleware to list after the app's session and authentication middleware."""
        return Middleware(MFAGuardMiddleware, guard=self)

    @functools.cached_property
    def routes(self) -> list[BaseRoute]:
        return build_routes(self.kit)

    def mount(self) -> Mount:
        """The kit's pages and JSON API, at ``settings.mount_path``."""
        mount = Mount(self.settings.mount_path, routes=self.routes, name="mfa_guard")
        # Starlette's "{path:path}" is ".*", which stops at a newline: a path with "%0A" would
        # miss the kit and get the app's plain-text 404 instead of the API's JSON errors.
        mount.path_regex = re.compile(mount.path_regex.pattern, re.DOTALL)
        return mount


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
