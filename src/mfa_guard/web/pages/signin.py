"""The sign-in pages: the challenge (a passkey or security key, a code of the app, a recovery code
or a texted code), the text message's page, and enrolment (an authenticator app, or a passkey
or security key)."""

from __future__ import annotations

import dataclasses
from typing import Any

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from mfa_guard.core import sms as sms_codes
from mfa_guard.core import sms_wording
from mfa_guard.errors import Denied, Reason
from mfa_guard.services import Method
from mfa_guard.sms import SMSError
from mfa_guard.stores.base import Enrolment, SMSPurpose
from mfa_guard.web.i18n import N_
from mfa_guard.web.pages.base import PageBase, form_field, form_method
from mfa_guard.web.pages.policy import Advice
from mfa_guard.web.requests import Caller

STRONG_FACTOR_NOTICE = N_(
    "To change your two-factor settings, enter a code from your authenticator app or a "
    "recovery code: a text-message code is not enough."
)
STRONG_FACTOR_NOTICE_WITH_KEYS = N_(
    "To change your two-factor settings, use your passkey or security key, a code from your "
    "authenticator app or a recovery code: a text-message code is not enough."
)
# After a passkey or security key was added to meet a policy: the challenge, to use it.
PASSKEY_ADDED_NOTICE = N_("Your passkey or security key is added. Use it now to continue.")
# When the sign-in code this session asked for expires: the challenge keeps that code's field
# while the store's pending code is this one (the store does not say which session asked).
SMS_SESSION_KEY = "mfa_guard_sms_until"


class SignInPages(PageBase):
    """The challenge, the text message's page and enrolment."""

    # -- sign-in challenge -----------------------------------------------------------------

    async def _challenge_context(
        self, request: Request, caller: Caller, next_path: str, method: Method | None = None
    ) -> dict[str, Any]:
        """The challenge page's context. ``method`` is the one the code field is for (the
        submitted one after a refusal); ``None`` chooses: the text message while this session's
        sign-in code is pending, the authenticator app otherwise. ``sms`` is set only for a
        user SMS is offered to, ``passkeys`` only for a user with a passkey or security key
        (while they are on), ``apps``: whether the user has an authenticator app,
        ``remember_days`` only when trusted devices are on."""
        devices = self.kit.trusted_devices
        context: dict[str, Any] = {
            "next": next_path,
            "method": (method or Method.TOTP).value,
            "error_field": None,
            "sms": None,
            "send_refused": None,
            "remember_days": None if devices is None else devices.settings.days,
            "remember": False,
            "apps": True,
            "passkeys": None,
            "passkey_required": None,
        }
        if self.service.sms is not None or self.passkeys_offered:
            # Else no store call, for apps with codes of the app only.
            enrolment = await self.service.enrolment(caller.user_id)
            if enrolment.keys:
                context["apps"] = bool(enrolment.apps)
                context["passkeys"] = self._passkeys(request)
            texts = self.service.sms_offered(enrolment) and not self.flows.texts_refused(caller)
            if texts and enrolment.phone is not None:
                pending = self._pending_sign_in(caller, enrolment)
                phone = sms_codes.mask_phone(enrolment.phone)
                context["sms"] = {"phone": phone, "pending": pending}
                if method is None and pending:
                    context["method"] = Method.SMS.value
        requirement = self._passkey_requirement(caller)
        if requirement is not None and requirement.in_force:
            # Only a passkey or security key lets the user into the app now: no remembered
            # browser (it would not), and a user with a key is offered that key alone (and a
            # recovery code, should it be lost); one without confirms it is them, then adds one.
            context["remember_days"] = None
            if context["passkeys"] is not None:
                context["apps"] = False
                advice = Advice.NONE
            else:
                advice = Advice.CONFIRM_THEN_ADD
            requirement = dataclasses.replace(requirement, advice=advice)
            context["passkey_required"] = await self._named(caller, requirement)
        return context

    def _passkey_confined(self, caller: Caller) -> bool:
        """Whether the app refuses the way this session verified, by a policy of methods: the
        guarded app would send it straight back here."""
        refused_from = caller.marker.refused_from()
        return refused_from is not None and self.kit.clock() >= refused_from

    def _passkey_required_now(self, caller: Caller) -> bool:
        requirement = self._passkey_requirement(caller)
        return requirement is not None and requirement.in_force

    def _pending_sign_in(self, caller: Caller, enrolment: Enrolment) -> bool:
        """Whether the sign-in code this session asked for is still pending: the store's
        pending code is a sign-in code, valid, and the one this session was told about."""
        challenge = enrolment.sms_challenge
        asked = caller.session.get(SMS_SESSION_KEY)
        return (
            challenge is not None
            and challenge.purpose is SMSPurpose.SIGN_IN
            and self.kit.clock() < challenge.expires_at
            and isinstance(asked, int | float)
            # Stores keep the expiry as a float; one that rounds it still matches.
            and abs(asked - challenge.expires_at) < 1
        )

    async def challenge(self, request: Request, caller: Caller) -> Response:
        if request.method == "GET":
            next_path = self._next(request.query_params.get("next"))
            if not caller.marker.enrolled:
                return RedirectResponse(next_path, status_code=303)
            strong = request.query_params.get("strong") == "1"
            # Sent here to change a factor after a texted code: that is not enough.
            context = await self._challenge_context(
                request, caller, next_path, Method.TOTP if strong else None
            )
            if strong and context["passkey_required"] is None:
                context["sms"] = None
                keys = context["passkeys"] is not None
                context["notice"] = STRONG_FACTOR_NOTICE_WITH_KEYS if keys else STRONG_FACTOR_NOTICE
            if request.query_params.get("added") == "passkey":
                context["notice"] = PASSKEY_ADDED_NOTICE
            return self._render(request, "challenge.html", context)
        form = await self._form(request)
        next_path = self._next(form_field(form, "next"))
        # One code, one method, one attempt: the form says which method its code is for (a
        # radio button while a texted code is pending), and only that one is checked.
        method = form_method(form_field(form, "method"))
        # "Remember this browser", ticked: ignored when trusted devices are off, and when only
        # a passkey lets the user in (a remembered browser would not).
        remember = (
            self.kit.trusted_devices is not None
            and form_field(form, "remember") != ""
            and not self._passkey_required_now(caller)
        )
        result = await self.flows.verify(
            caller, method, form_field(form, "code"), remember=remember
        )
        if isinstance(result, Denied):
            if result.reason is Reason.NOT_ENROLLED:
                return RedirectResponse(next_path, status_code=303)
            context = await self._challenge_context(request, caller, next_path, method)
            context["remember"] = remember  # the box stays as the user left it
            context["error_field"] = "recovery" if method is Method.RECOVERY else "code"
            return self._denied(request, "challenge.html", result, context)
        caller.session.pop(SMS_SESSION_KEY, None)
        if self._passkey_confined(caller):
            # Verified, but not as the user's sites require: to the settings, to add a passkey
            # or security key (and from there to the challenge, to use it, and on to next).
            return RedirectResponse(self._settings_url(request, next_path), status_code=303)
        response = RedirectResponse(next_path, status_code=303)
        # With "remember", the device cookie rides on the redirect.
        self.flows.set_device_cookie(response, result.remembered)
        return response

    async def sms(self, request: Request, caller: Caller) -> Response:
        """Texts a sign-in code, then shows the challenge page with the code's field focused.
        A refused send shows the challenge again, saying how long to wait, with the field of a
        code sent before while it is pending."""
        if request.method == "GET":
            next_path = self._next(request.query_params.get("next"))
            context = await self._challenge_context(request, caller, next_path, Method.TOTP)
            if not caller.marker.enrolled or context["sms"] is None:
                return RedirectResponse(self._challenge_url(request, next_path), status_code=303)
            return self._render(request, "sms.html", context)
        form = await self._form(request)
        next_path = self._next(form_field(form, "next"))
        try:
            result = await self.flows.send_sign_in_code(caller)
        except SMSError as exc:
            return self._text_failed(request, exc, self._challenge_url(request, next_path))
        if isinstance(result, Denied):
            if result.reason is Reason.NOT_ENROLLED:
                return RedirectResponse(next_path, status_code=303)
            context = await self._challenge_context(request, caller, next_path)
            if context["sms"] is None:
                # No text section to say it in (SMS off, no verified phone): the page's message.
                return self._denied(request, "challenge.html", result, context)
            context["send_refused"] = self._send_refused(request, result)
            return self._render(
                request, "challenge.html", context, result.status, self._retry_after(result)
            )
        caller.session[SMS_SESSION_KEY] = result.expires_at
        context = await self._challenge_context(request, caller, next_path, Method.SMS)
        return self._render(
            request, "challenge.html", {**context, "notice": self._sent_notice(request, result)}
        )

    def _send_refused(self, request: Request, denied: Denied) -> dict[str, Any]:
        """A refused send as the challenge's text section shows it: the message with the wait,
        and, for a wait under a minute, what the countdown script says second by second."""
        translations = self._translations(request)
        countdown: list[str] = []
        if denied.reason is Reason.TOO_MANY_TEXTS and denied.retry_at is not None:
            lead = translations.gettext(denied.message)
            countdown = [
                f"{lead} {sentence}"
                for sentence in sms_wording.countdown(
                    denied.retry_at - self.kit.clock(), translations
                )
            ]
        return {
            "message": self._refusal(request, denied),
            "countdown": countdown,
            "ready": sms_wording.ready(translations),
        }

    # -- enrolment -------------------------------------------------------------------------

    def _phone_required(self, enrolment: Enrolment) -> bool:
        return (
            self.kit.settings.require_phone_for_enrolment
            and self.service.sms is not None
            and enrolment.phone_verified_at is None
        )

    async def enrol(self, request: Request, caller: Caller) -> Response:
        if request.method == "GET":
            next_path = self._next(request.query_params.get("next"))
            enrolment = await self.service.enrolment(caller.user_id)
            if enrolment.enrolled:
                return RedirectResponse(f"{self._base(request)}/settings", status_code=303)
            setup = await self.flows.pending_setup(caller)
            context = {
                "next": next_path,
                "setup": setup,
                "phone_required": self._phone_required(enrolment),
                "passkeys": self._passkeys(request),
            }
            return self._render(request, "enrol.html", context)
        form = await self._form(request)
        next_path = self._next(form_field(form, "next"))
        result = await self.flows.begin_setup(caller)
        if isinstance(result, Denied):
            if result.reason is Reason.PHONE_REQUIRED:
                context = {"next": next_path, "setup": None, "phone_required": True}
                return self._denied(request, "enrol.html", result, context)
            return RedirectResponse(f"{self._base(request)}/settings", status_code=303)
        context = {"next": next_path, "setup": result, "phone_required": False}
        return self._render(request, "enrol.html", context)

    async def enrol_confirm(self, request: Request, caller: Caller) -> Response:
        form = await self._form(request)
        next_path = self._next(form_field(form, "next"))
        result = await self.flows.confirm_setup(caller, form_field(form, "code"))
        if isinstance(result, Denied):
            if result.reason is Reason.ALREADY_ENROLLED:
                return RedirectResponse(f"{self._base(request)}/settings", status_code=303)
            setup = await self.flows.pending_setup(caller)
            context = {"next": next_path, "setup": setup, "phone_required": False}
            return self._denied(request, "enrol.html", result, context)
        return self._render(
            request,
            "recovery_codes.html",
            {
                "next": next_path,
                "codes": result.recovery_codes,
                "notice": N_("Two-factor authentication is on."),
            },
        )
