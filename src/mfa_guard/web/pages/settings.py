"""The settings page and its forms: recovery codes, turning 2FA off, other sessions, the mobile
number, remembered browsers. Each form runs its flow and shows the settings page again, with a
notice or the refusal; a session that must verify (again) first is sent to the challenge."""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from mfa_guard.core import sms as sms_codes
from mfa_guard.errors import Denied, Reason
from mfa_guard.services import concurrently
from mfa_guard.sms import SMSError
from mfa_guard.stores.base import Enrolment, SMSPurpose
from mfa_guard.web.i18n import N_
from mfa_guard.web.pages.base import PageBase, form_field, form_method
from mfa_guard.web.requests import Caller
from mfa_guard.web.schemas import Device

# Echoed back into the form after a refusal; longer input is no phone number anyway.
MAX_PHONE_ECHO = 64
# Refusals that send the session to the challenge, and back to the settings: it has not
# completed its second factor, or not recently enough for a new factor.
VERIFY_FIRST = frozenset(
    {Reason.MFA_REQUIRED, Reason.RECENT_MFA_FOR_RECOVERY_CODES, Reason.RECENT_MFA_FOR_PHONE}
)


def _pending_text(enrolment: Enrolment, purpose: SMSPurpose, now: float) -> str | None:
    """The masked number a code of ``purpose`` was texted to, while that code is valid."""
    challenge = enrolment.sms_challenge
    if challenge is None or challenge.purpose is not purpose or now >= challenge.expires_at:
        return None
    return sms_codes.mask_phone(challenge.phone)


class SettingsPages(PageBase):
    """The settings page and its forms."""

    async def settings(self, request: Request, caller: Caller) -> Response:
        return await self._settings_page(request, caller)

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
        enrolment, devices = await concurrently(
            self.service.enrolment(caller.user_id), self._remembered(caller)
        )
        phone: dict[str, Any] | None = None
        phone_context = context.pop("phone", {})
        if self.service.sms is not None:
            verified = enrolment.phone if enrolment.phone_verified_at is not None else None
            phone = {
                "verified": None if verified is None else sms_codes.mask_phone(verified),
                "pending": _pending_text(enrolment, SMSPurpose.PHONE, self.kit.clock()),
                "input": "",
                "sms_offered": self.service.sms_offered(enrolment),
            }
            phone.update(phone_context)
        return self._render(
            request,
            "settings.html",
            {
                "enrolment": enrolment,
                "phone": phone,
                "active_form": "",
                "enforced_by": await self.service.enforcing_sites(caller.user_id),
                "required_for_everyone": self.service.everyone_required,
                "devices": devices if enrolment.enrolled else None,
                "trusted_devices": self.kit.trusted_devices is not None,
                "device_days": self._device_days(),
                **context,
            },
            status_code,
            headers,
        )

    def _device_days(self) -> int | None:
        devices = self.kit.trusted_devices
        return None if devices is None else devices.settings.days

    async def _remembered(self, caller: Caller) -> list[Device] | None:
        """The settings page's list of remembered browsers (``None`` when there is none to
        show: trusted devices off, or the user has no 2FA)."""
        if self.kit.trusted_devices is None or not caller.marker.enrolled:
            return None
        return await self.flows.device_rows(caller)

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
