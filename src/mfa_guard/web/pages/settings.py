"""The settings page and its forms: the user's authenticators (listed, renamed, removed, another
app added; a passkey or security key is added by the page's script through the JSON API),
recovery codes, turning 2FA off, other sessions, the mobile number, remembered browsers, and the
user's recent activity (with a security log: ``MFAGuard(event_store=...)``). Each form runs its
flow and shows the settings page again, with a notice or the refusal; a session that must
verify (again) first is sent to the challenge."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from mfa_guard.core import sms as sms_codes
from mfa_guard.core.marker import WEBAUTHN_METHOD
from mfa_guard.devices import Browser, browsers
from mfa_guard.errors import Denied, Reason
from mfa_guard.events import EventKind
from mfa_guard.security_log import SecurityLogEntry, entries
from mfa_guard.services import concurrently
from mfa_guard.sms import SMSError
from mfa_guard.stores.base import Authenticator, Enrolment, FactorKind, SMSPurpose
from mfa_guard.stores.events import EventQuery
from mfa_guard.stores.sites import Membership
from mfa_guard.web.i18n import N_
from mfa_guard.web.pages.base import PageBase, form_field, form_method
from mfa_guard.web.pages.policy import Advice, PasskeyRequirement, named
from mfa_guard.web.requests import Caller
from mfa_guard.web.schemas import Device

# Echoed back into the form after a refusal; longer input is no phone number anyway.
MAX_PHONE_ECHO = 64
# A refused name is echoed back up to this length (it was refused for being longer, maybe).
MAX_NAME_ECHO = 128
# Refusals that send the session to the challenge, and back to the settings: it has not
# completed its second factor, or not recently enough for a new factor.
VERIFY_FIRST = frozenset(
    {
        Reason.MFA_REQUIRED,
        Reason.RECENT_MFA_FOR_RECOVERY_CODES,
        Reason.RECENT_MFA_FOR_PHONE,
        Reason.RECENT_MFA_FOR_FACTORS,
    }
)
# The notices of ``/settings?added=…``, where the passkey script goes once a key is added.
ADDED_NOTICES = {"passkey": N_("Your passkey or security key is added.")}


# "Recent activity": what the user would want to hear of if it was not them, the last few.
ACTIVITY_ROWS = 10
ACTIVITY = {
    EventKind.VERIFIED: N_("Signed in"),
    EventKind.VERIFICATION_FAILED: N_("Failed sign-in attempt"),
    EventKind.CODE_REUSED: N_("A code already used was entered again"),
    EventKind.LOCKED_OUT: N_("Sign-in locked after too many wrong codes"),
    EventKind.RECOVERY_CODE_USED: N_("Recovery code used"),
    EventKind.DEVICE_TRUSTED: N_("Browser remembered"),
    EventKind.AUTHENTICATOR_ADDED: N_("Authenticator added"),
    EventKind.AUTHENTICATOR_REMOVED: N_("Authenticator removed"),
    EventKind.ENROLLED: N_("Two-factor authentication turned on"),
    EventKind.DISABLED: N_("Two-factor authentication turned off"),
    EventKind.ADMIN_RESET: N_("Two-factor authentication reset by an administrator"),
}
RESET_BY_OWNER = N_("Two-factor authentication reset by an owner of %(site)s")
# The second factor an event was about, in words; not said where the event says it already.
METHOD_WORDS = {
    "totp": N_("Authenticator app"),
    "recovery": N_("Recovery code"),
    "sms": N_("Text message"),
    "webauthn": N_("Passkey or security key"),
}
WITHOUT_METHOD = frozenset(
    {EventKind.RECOVERY_CODE_USED, EventKind.DEVICE_TRUSTED, EventKind.ADMIN_RESET}
)


@dataclass(frozen=True, slots=True)
class ActivityRow:
    """One event of the user's recent activity, as the settings page lists it: what happened
    (an English msgid; ``site`` fills in the site of a reset by its owner), when, with which
    second factor (a msgid too) and from which browser."""

    kind: str
    what: str
    at: datetime
    method: str | None
    browser: Browser | None
    site: str | None = None

    @classmethod
    def of(cls, entry: SecurityLogEntry, site_names: dict[str, str]) -> ActivityRow:
        event = entry.event
        what, site = ACTIVITY[event.kind], None
        if event.kind is EventKind.ADMIN_RESET and event.site is not None:
            # A site the user has left since is named by its id.
            what, site = RESET_BY_OWNER, site_names.get(event.site, event.site)
        method = None if event.kind in WITHOUT_METHOD else METHOD_WORDS.get(event.method or "")
        return cls(
            kind=event.kind.value,
            what=what,
            at=datetime.fromtimestamp(event.at, UTC),
            method=method,
            # A reset came from the browser of whoever did it: not the user's to see.
            browser=None if event.kind is EventKind.ADMIN_RESET else entry.browser,
            site=site,
        )


@dataclass(frozen=True, slots=True)
class DeviceRow:
    """One remembered browser as the settings page lists it: the JSON API's row, and the
    browser its User-Agent names, which the page shows in its language; ``None`` for one
    remembered before the kit kept the User-Agent, whose English ``name`` is shown."""

    id: str
    name: str
    created_at: datetime
    last_used_at: datetime
    expires_at: datetime
    current: bool
    browser: Browser | None

    @classmethod
    def of(cls, row: Device, browser: Browser | None) -> DeviceRow:
        return cls(
            id=row.id,
            name=row.name,
            created_at=row.created_at,
            last_used_at=row.last_used_at,
            expires_at=row.expires_at,
            current=row.current,
            browser=browser,
        )


@dataclass(frozen=True, slots=True)
class AuthenticatorRow:
    """One authenticator as the settings page lists it."""

    id: str
    name: str
    # "app", "passkey" (on a phone or computer, or synced) or "security-key" (one to plug in
    # or tap).
    kind: str
    created_at: datetime
    last_used_at: datetime | None

    @classmethod
    def of(cls, authenticator: Authenticator) -> AuthenticatorRow:
        last_used = authenticator.last_used_at
        return cls(
            id=authenticator.id,
            name=authenticator.name,
            kind=kind_of(authenticator),
            created_at=datetime.fromtimestamp(authenticator.created_at, UTC),
            last_used_at=None if last_used is None else datetime.fromtimestamp(last_used, UTC),
        )


def kind_of(authenticator: Authenticator) -> str:
    """What the page calls an authenticator: a WebAuthn credential synced between devices or
    held by the device itself (``internal``) is a passkey, as the service names it when it is
    added; any other, a security key."""
    if authenticator.kind is FactorKind.TOTP:
        return "app"
    if authenticator.backed_up or "internal" in authenticator.transports:
        return "passkey"
    return "security-key"


def _pending_text(enrolment: Enrolment, purpose: SMSPurpose, now: float) -> str | None:
    """The masked number a code of ``purpose`` was texted to, while that code is valid."""
    challenge = enrolment.sms_challenge
    if challenge is None or challenge.purpose is not purpose or now >= challenge.expires_at:
        return None
    return sms_codes.mask_phone(challenge.phone)


class SettingsPages(PageBase):
    """The settings page and its forms."""

    async def settings(self, request: Request, caller: Caller) -> Response:
        notice = ADDED_NOTICES.get(request.query_params.get("added", ""))
        if notice is None:
            return await self._settings_page(request, caller)
        return await self._settings_page(request, caller, notice=notice)

    async def _settings_refused(
        self,
        request: Request,
        caller: Caller,
        denied: Denied,
        *,
        step_up: bool = False,
        **context: Any,
    ) -> Response:
        """The settings page again, with the refusal's message, status and Retry-After; or the
        challenge, for a session that must verify first. ``step_up``: the form changes a
        factor, and a ``strong_factor_required`` refusal is the session's (verified by a text),
        which a code of the app or a recovery code at the challenge lifts."""
        if denied.reason in VERIFY_FIRST:
            return self._to_challenge(request)
        if step_up and denied.reason is Reason.STRONG_FACTOR_REQUIRED:
            return self._to_challenge(request, strong=True)
        return await self._settings_page(
            request,
            caller,
            denied.status,
            self._retry_after(denied),
            error=self._refusal(request, denied),
            **context,
        )

    async def _settings_page(
        self,
        request: Request,
        caller: Caller,
        status_code: int = 200,
        headers: dict[str, str] | None = None,
        **context: Any,
    ) -> Response:
        if await self.flows.verified(caller) is not None:
            return self._to_challenge(request)
        (enrolment, devices), recent = await concurrently(
            concurrently(self.service.enrolment(caller.user_id), self._remembered(caller)),
            self._recent_activity(caller),
        )
        # One directory read: the sites that require 2FA, those that accept only a passkey,
        # and the names of the sites whose owner reset the user's 2FA.
        memberships = await self._memberships(caller)
        site_names = {m.site.id: m.site.name for m in memberships}
        phone: dict[str, Any] | None = None
        phone_context = context.pop("phone", {})
        if self.service.sms is not None:
            verified = enrolment.phone if enrolment.phone_verified_at is not None else None
            phone = {
                "verified": None if verified is None else sms_codes.mask_phone(verified),
                "pending": _pending_text(enrolment, SMSPurpose.PHONE, self.kit.clock()),
                "input": "",
                "sms_offered": self.service.sms_offered(enrolment)
                and not self.flows.texts_refused(caller),
            }
            phone.update(phone_context)
        requirement = self._settings_requirement(caller, enrolment, memberships)
        # Where the passkey script goes once a key is added: back here, or, for a session the
        # app refuses until it uses a passkey, to the challenge to use it (and on to next).
        added = f"{self._base(request)}/settings?added=passkey"
        continue_url = None
        if requirement is not None and requirement.advice in (Advice.ADD, Advice.REPLACE):
            continue_url = self._challenge_url(
                request, self._next(request.query_params.get("next"))
            )
            added = f"{continue_url}&added=passkey"
        return self._render(
            request,
            "settings.html",
            {
                "enrolment": enrolment,
                "authenticators": [AuthenticatorRow.of(a) for a in enrolment.authenticators],
                "passkeys": self._passkeys(request, naming=True),
                "name_input": "",
                "phone": phone,
                "active_form": "",
                "enforced_by": [m.site.name for m in memberships if m.site.policy.enforce],
                "passkey_required": requirement,
                "passkey_added_url": added,
                "continue_url": continue_url,
                "required_for_everyone": self.service.everyone_required,
                "devices": devices if enrolment.enrolled else None,
                "trusted_devices": self.kit.trusted_devices is not None,
                "device_days": self._device_days(),
                "activity": None
                if recent is None
                else [ActivityRow.of(entry, site_names) for entry in recent],
                **context,
            },
            status_code,
            headers,
        )

    async def _recent_activity(self, caller: Caller) -> tuple[SecurityLogEntry, ...] | None:
        """The user's last events of :data:`ACTIVITY`, newest first, with their browsers named:
        one read of the security log (``None``, and no read, without one)."""
        log = self.kit.event_store
        if log is None:
            return None
        query = EventQuery(users=(caller.user_id,), kinds=frozenset(ACTIVITY), limit=ACTIVITY_ROWS)
        return await entries(await log.events(query))

    async def _memberships(self, caller: Caller) -> list[Membership]:
        sites = self.service.sites
        return [] if sites is None else await sites.memberships(caller.user_id)

    def _settings_requirement(
        self, caller: Caller, enrolment: Enrolment, memberships: list[Membership]
    ) -> PasskeyRequirement | None:
        """The notice of a passkey requirement, for a user with 2FA: coming and no passkey yet
        (add one now); in force and no passkey (add one to continue); in force and this
        session not verified by one (use it, or, if it is lost, add another)."""
        requirement = self._passkey_requirement(caller)
        if requirement is None or not enrolment.enrolled:
            return None
        keys = bool(enrolment.keys)
        if not requirement.in_force:
            advice = None if keys else Advice.ADD_NOW
        elif not keys:
            advice = Advice.ADD
        else:
            advice = None if caller.marker.method == WEBAUTHN_METHOD else Advice.REPLACE
        if advice is None:
            return None
        requirement = dataclasses.replace(requirement, advice=advice)
        return named(requirement, memberships, self.kit.clock())

    def _device_days(self) -> int | None:
        devices = self.kit.trusted_devices
        return None if devices is None else devices.settings.days

    async def _remembered(self, caller: Caller) -> list[DeviceRow] | None:
        """The settings page's list of remembered browsers (``None`` when there is none to
        show: trusted devices off, or the user has no 2FA), each with the browser its
        User-Agent names: worked out in one thread for them all, none without a User-Agent."""
        devices = self.kit.trusted_devices
        if devices is None or not caller.marker.enrolled:
            return None
        listed = await devices.trusted(caller.user_id)
        named = await browsers(device.user_agent for device in listed)
        return [
            DeviceRow.of(
                self.flows.device_row(caller, device),
                None if device.user_agent is None else named[device.user_agent],
            )
            for device in listed
        ]

    async def new_recovery_codes(self, request: Request, caller: Caller) -> Response:
        await self._form(request)
        result = await self.flows.regenerate_recovery_codes(caller)
        if isinstance(result, Denied):
            return await self._settings_refused(request, caller, result, step_up=True)
        notice = N_("Your old recovery codes no longer work.")
        if self.kit.trusted_devices is not None:
            notice = N_(
                "Your old recovery codes no longer work, and every remembered browser must "
                "enter a code again."
            )
        return self._render(
            request,
            "recovery_codes.html",
            {"next": f"{self._base(request)}/settings", "codes": result, "notice": notice},
        )

    async def revoke_sessions(self, request: Request, caller: Caller) -> Response:
        """Every other session of the user verifies again at its next re-check."""
        await self._form(request)
        result = await self.flows.revoke_other_sessions(caller)
        if isinstance(result, Denied):
            return await self._settings_refused(request, caller, result)
        notice = N_("Your other sessions must enter a code again to continue.")
        if self.kit.trusted_devices is not None:
            # The new epoch forgets every remembered browser too, this one included.
            notice = N_(
                "Your other sessions must enter a code again to continue, and every "
                "remembered browser is forgotten."
            )
        return await self._settings_page(request, caller, notice=notice)

    async def forget_device(self, request: Request, caller: Caller) -> Response:
        """Forgets one remembered browser (the form's ``device``): it must enter a code again."""
        form = await self._form(request)
        result = await self.flows.forget_device(caller, form_field(form, "device"))
        if isinstance(result, Denied):
            return await self._settings_refused(request, caller, result)
        response = await self._settings_page(request, caller, notice=N_("Browser forgotten."))
        if result:  # this browser
            self.flows.drop_device_cookie(response)
        return response

    async def forget_devices(self, request: Request, caller: Caller) -> Response:
        """Forgets every remembered browser of the user."""
        await self._form(request)
        result = await self.flows.forget_devices(caller)
        if isinstance(result, Denied):
            return await self._settings_refused(request, caller, result)
        response = await self._settings_page(
            request, caller, notice=N_("Every remembered browser must enter a code again.")
        )
        if self.kit.gate.device_token(request.scope) is not None:
            self.flows.drop_device_cookie(response)
        return response

    async def disable(self, request: Request, caller: Caller) -> Response:
        form = await self._form(request)
        # A texted code is refused by the service (a code of the app or a recovery code only).
        method = form_method(form_field(form, "method"))
        result = await self.flows.disable(caller, method, form_field(form, "code"))
        if isinstance(result, Denied):
            return await self._settings_refused(request, caller, result, active_form="disable")
        return await self._settings_page(
            request, caller, notice=N_("Two-factor authentication is off.")
        )

    async def phone(self, request: Request, caller: Caller) -> Response:
        """Texts a code to a new mobile number; the number counts once the code comes back."""
        form = await self._form(request)
        raw = form_field(form, "phone")
        try:
            result = await self.flows.register_phone(caller, raw)
        except SMSError as exc:
            return self._text_failed(request, exc, f"{self._base(request)}/settings")
        if isinstance(result, Denied):
            return await self._settings_refused(
                request,
                caller,
                result,
                step_up=True,
                active_form="phone",
                phone={"input": raw[:MAX_PHONE_ECHO]},
            )
        return await self._settings_page(
            request, caller, notice=self._sent_notice(request, result), active_form="phone-code"
        )

    async def phone_verify(self, request: Request, caller: Caller) -> Response:
        form = await self._form(request)
        result = await self.flows.verify_phone(caller, form_field(form, "code"))
        if isinstance(result, Denied):
            # After a conflict (a revocation landed meanwhile) the settings page re-checks the
            # session, and sends it to the challenge.
            return await self._settings_refused(request, caller, result, active_form="phone-code")
        return await self._settings_page(
            request, caller, notice=N_("Your mobile number is verified.")
        )

    # -- the user's authenticators -------------------------------------------------------------

    async def add_app(self, request: Request, caller: Caller) -> Response:
        """Another authenticator app: its QR code, on the enrolment page in "add" mode."""
        await self._form(request)
        result = await self.flows.begin_setup(caller)
        if isinstance(result, Denied):
            return await self._settings_refused(request, caller, result, step_up=True)
        return self._adding_page(request, {"setup": result})

    async def confirm_app(self, request: Request, caller: Caller) -> Response:
        """The other app added with its first code, under the name given (or the usual one,
        numbered)."""
        form = await self._form(request)
        raw_name = form_field(form, "name")
        result = await self.flows.confirm_setup(
            caller, form_field(form, "code"), raw_name if raw_name.strip() else None
        )
        if isinstance(result, Denied):
            if result.reason in VERIFY_FIRST or result.reason is Reason.STRONG_FACTOR_REQUIRED:
                return await self._settings_refused(request, caller, result, step_up=True)
            setup = await self.flows.pending_setup(caller)
            if setup is None:  # the set-up is gone (replaced, or voided): start again
                return await self._settings_refused(request, caller, result)
            context = {
                "setup": setup,
                "name_input": raw_name[:MAX_NAME_ECHO],
                "error_field": "name" if result.reason is Reason.INVALID_NAME else "code",
            }
            return self._denied(request, "enrol.html", result, self._adding_context(context))
        return await self._settings_page(
            request, caller, notice=N_("Your authenticator app is added.")
        )

    def _adding_page(self, request: Request, context: dict[str, Any]) -> Response:
        return self._render(request, "enrol.html", self._adding_context(context))

    def _adding_context(self, context: dict[str, Any]) -> dict[str, Any]:
        defaults = {
            "adding": True,
            "next": "",
            "phone_required": False,
            "name_input": "",
            "error_field": None,
        }
        return {**defaults, **context}

    async def rename_authenticator(self, request: Request, caller: Caller) -> Response:
        form = await self._form(request)
        authenticator_id = form_field(form, "authenticator")
        raw_name = form_field(form, "name")
        result = await self.flows.rename_authenticator(caller, authenticator_id, raw_name)
        if isinstance(result, Denied):
            return await self._settings_refused(
                request,
                caller,
                result,
                step_up=True,
                active_form=f"rename-{authenticator_id}",
                name_input=raw_name[:MAX_NAME_ECHO],
            )
        return await self._settings_page(
            request, caller, notice=N_("The authenticator is renamed.")
        )

    async def remove_authenticator(self, request: Request, caller: Caller) -> Response:
        """One authenticator removed; the last one turns 2FA off (under the disable rules)."""
        form = await self._form(request)
        result = await self.flows.remove_authenticator(caller, form_field(form, "authenticator"))
        if isinstance(result, Denied):
            return await self._settings_refused(request, caller, result, step_up=True)
        if not caller.marker.enrolled:
            notice = N_("Your last authenticator is removed: two-factor authentication is off.")
        else:
            notice = N_("The authenticator is removed.")
        return await self._settings_page(request, caller, notice=notice)
