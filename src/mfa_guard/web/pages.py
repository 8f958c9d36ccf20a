"""The HTML pages: challenge, enrolment, settings. Usable without JavaScript; every form carries a
CSRF token; bad input re-renders the form with a message."""

from __future__ import annotations

import functools
import hmac
import logging
import math
import secrets
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

import jinja2
from babel import Locale, UnknownLocaleError
from babel.dates import format_skeleton
from babel.support import NullTranslations
from starlette.datastructures import FormData
from starlette.exceptions import HTTPException
from starlette.formparsers import MultiPartException
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route
from starlette.templating import Jinja2Templates

from mfa_guard.core import sms as sms_codes
from mfa_guard.core import sms_wording
from mfa_guard.core.redirects import safe_next
from mfa_guard.enforcement import iso
from mfa_guard.errors import ConfigurationError, MFAGuardError
from mfa_guard.services import Denied, Method, Reason, TextSent, concurrently
from mfa_guard.sms import SMSError
from mfa_guard.stores.base import Enrolment, SMSPurpose
from mfa_guard.stores.devices import TrustedDevice
from mfa_guard.web import i18n
from mfa_guard.web.api import DENIED_STATUS, MAX_DEVICE_ID
from mfa_guard.web.devices import forget_browsers, is_this_browser, remember_browser
from mfa_guard.web.http import report_failure, same_origin
from mfa_guard.web.i18n import N_
from mfa_guard.web.requests import MAX_BODY_BYTES, Caller, caller_of, declared_too_large
from mfa_guard.web.wiring import misconfigured_response, report_miswiring

if TYPE_CHECKING:
    from mfa_guard.guard import MFAGuard

CSRF_SESSION_KEY = "mfa_guard_csrf"
STRONG_FACTOR_NOTICE = N_(
    "To change your two-factor settings, enter a code from your authenticator app or a "
    "recovery code: a text-message code is not enough."
)
# When the sign-in code this session asked for expires: the challenge keeps that code's field
# while the store's pending code is this one (the store does not say which session asked).
SMS_SESSION_KEY = "mfa_guard_sms_until"
# Echoed back into the form after a refusal; longer input is no phone number anyway.
MAX_PHONE_ECHO = 64
logger = logging.getLogger("mfa_guard")
Handler = Callable[[Request, Caller], Awaitable[Response]]


class FormRejected(Exception):
    def __init__(self, status_code: int, heading: str, message: str) -> None:
        super().__init__(message)
        self.status_code = status_code
        self.heading = heading
        self.message = message


def csrf_token(session: Any) -> str:
    token = session.get(CSRF_SESSION_KEY)
    if not isinstance(token, str) or len(token) < 32:
        token = secrets.token_urlsafe(32)
        session[CSRF_SESSION_KEY] = token
    return token


def _locale(language: str) -> Locale:
    try:
        return Locale.parse(language)
    except (ValueError, UnknownLocaleError):
        return Locale.parse(i18n.DEFAULT_LANGUAGE)


def human_date(timestamp: float, language: str, *, with_time: bool = False) -> str:
    """A date as the page's language writes it ("5 Mar 2025", "5 mars 2025"); ``with_time``
    adds the time of day, in UTC ("5 Mar 2025, 14:07 UTC")."""
    moment = datetime.fromtimestamp(timestamp, UTC)
    locale = _locale(language)
    day = format_skeleton("yMMMd", moment, tzinfo=UTC, locale=locale)
    if not with_time:
        return day
    time_of_day = format_skeleton("Hm", moment, tzinfo=UTC, locale=locale)
    return f"{locale.datetime_formats['medium'].format(time_of_day, day)} UTC"


@jinja2.pass_context
def _date_filter(context: jinja2.runtime.Context, timestamp: float) -> str:
    return human_date(timestamp, context["lang"])


@jinja2.pass_context
def _date_time_filter(context: jinja2.runtime.Context, timestamp: float) -> str:
    return human_date(timestamp, context["lang"], with_time=True)


@functools.cache
def _templates(directory: str | Path | None) -> Jinja2Templates:
    """One environment per template folder in a process, so that each template is compiled once
    however many guards render it (Jinja reloads one whose file changed)."""
    loaders: list[jinja2.BaseLoader] = []
    if directory is not None:
        loaders.append(jinja2.FileSystemLoader(directory))
    loaders.append(jinja2.PackageLoader("mfa_guard", "web/templates"))
    env = jinja2.Environment(
        loader=jinja2.ChoiceLoader(loaders), autoescape=True, undefined=jinja2.StrictUndefined
    )
    i18n.install(env)
    env.filters["human_date"] = _date_filter
    env.filters["human_date_time"] = _date_time_filter
    env.filters["iso"] = iso
    return Jinja2Templates(env=env)


def _field(form: FormData, name: str) -> str:
    value = form.get(name)
    return value if isinstance(value, str) else ""


def _method(value: str) -> Method:
    # The TOTP form is the default: anything unknown is checked as a TOTP code.
    return Method(value) if value in (Method.RECOVERY, Method.SMS) else Method.TOTP


def _pending_text(enrolment: Enrolment, purpose: SMSPurpose, now: float) -> str | None:
    """The masked number a code of ``purpose`` was texted to, while that code is valid."""
    challenge = enrolment.sms_challenge
    if challenge is None or challenge.purpose is not purpose or now >= challenge.expires_at:
        return None
    return sms_codes.mask_phone(challenge.phone)


class Pages:
    def __init__(self, guard: MFAGuard) -> None:
        self.guard = guard
        self.service = guard.service
        self.templates = _templates(guard.template_directory)

    def routes(self) -> list[Route]:
        routes = [
            Route(
                "/challenge", self._page(self.challenge), methods=["GET", "POST"], name="challenge"
            ),
            Route("/sms", self._page(self.sms), methods=["GET", "POST"], name="sms"),
            Route("/enrol", self._page(self.enrol), methods=["GET", "POST"], name="enrol"),
            Route("/enrol/confirm", self._page(self.enrol_confirm), methods=["POST"]),
            Route("/settings", self._page(self.settings), methods=["GET"], name="settings"),
            Route(
                "/settings/recovery-codes", self._page(self.new_recovery_codes), methods=["POST"]
            ),
            Route("/settings/disable", self._page(self.disable), methods=["POST"]),
            Route("/settings/sessions", self._page(self.revoke_sessions), methods=["POST"]),
            Route("/settings/phone", self._page(self.phone), methods=["POST"]),
            Route("/settings/phone/verify", self._page(self.phone_verify), methods=["POST"]),
        ]
        if self.guard.trusted_devices is not None:
            routes += [
                Route("/settings/devices/forget", self._page(self.forget_device), methods=["POST"]),
                Route(
                    "/settings/devices/forget-all",
                    self._page(self.forget_devices),
                    methods=["POST"],
                ),
            ]
        return routes

    # -- plumbing --------------------------------------------------------------------------

    def _page(self, handler: Handler) -> Callable[[Request], Awaitable[Response]]:
        """Every page route's endpoint: the handler's response (or its error page), never
        framed by another site (clickjacking of the one-click forms)."""
        framing = self._framing_headers()

        async def endpoint(request: Request) -> Response:
            response = await respond(request)
            response.headers.update(framing)
            return response

        async def respond(request: Request) -> Response:
            try:
                caller = await caller_of(request, self.guard)
                if caller is None:
                    return RedirectResponse(self.guard.settings.home_path, status_code=303)
                # The banner names the sites that require 2FA: looked up now (only when one
                # is due), as rendering reads the notice with no I/O.
                await self.guard.named_enrolment_notice(request.scope)
                return await handler(request, caller)
            except FormRejected as exc:
                return self._error(request, exc.status_code, exc.heading, exc.message)
            except SMSError as exc:
                # Handlers that send say where to go back to; this is the fallback.
                return self._text_failed(request, exc, self.guard.settings.home_path)
            except ConfigurationError as exc:  # wired wrong: permanent, not an outage
                report_miswiring(exc)
                return misconfigured_response(request.scope, self.guard)
            except MFAGuardError as exc:
                report_failure(exc)
                return self._error(
                    request,
                    503,
                    N_("Service unavailable"),
                    N_(
                        "Two-factor authentication is unavailable right now. Please try again soon."
                    ),
                )

        return endpoint

    def _framing_headers(self) -> dict[str, str]:
        ancestors = self.guard.settings.frame_ancestors
        headers = {"Content-Security-Policy": f"frame-ancestors {ancestors}"}
        # X-Frame-Options, for browsers before CSP 2, names no origin: only these two.
        legacy = {"'none'": "DENY", "'self'": "SAMEORIGIN"}.get(ancestors)
        if legacy is not None:
            headers["X-Frame-Options"] = legacy
        return headers

    def _base(self, request: Request) -> str:
        return str(request.scope.get("app_root_path", "")) + self.guard.settings.mount_path

    def _render(
        self,
        request: Request,
        name: str,
        context: dict[str, Any],
        status_code: int = 200,
        headers: dict[str, str] | None = None,
    ) -> Response:
        settings = self.guard.settings
        lang = i18n.request_language(request, settings.languages)
        full = {
            "lang": lang,
            "base": self._base(request),
            "issuer": settings.issuer,
            "digits": settings.totp.digits,
            "sms_digits": sms_codes.CODE_DIGITS,
            "period": settings.totp.period,
            "home": settings.home_path,
            "csrf_token": csrf_token(request.session),
            "error": None,
            "notice": None,
            "next": settings.home_path,
            "enrolment_notice": self.guard.enrolment_notice(request.scope),
            "sign_out": self._sign_out(request),
            **context,
        }
        # The messages come in English (refusals from the service, notices from here): the
        # English text is the msgid.
        translations = i18n.translations(lang)
        for key in ("error", "notice", "heading", "message"):
            if isinstance(full.get(key), str):
                full[key] = translations.gettext(full[key])
        response = self.templates.TemplateResponse(
            request, f"mfa_guard/{name}", full, status_code=status_code, headers=headers
        )
        response.headers["Cache-Control"] = "no-store"
        return response

    def _sign_out(self, request: Request) -> dict[str, Any] | None:
        """The app's sign-out for base.html's header (``None`` when none is configured): every
        kit page offers a way out, whoever is asked for a code."""
        settings = self.guard.settings.sign_out
        if settings.url is None:
            return None
        hook = self.guard.sign_out_fields
        fields = {} if hook is None or settings.method == "get" else dict(hook(request.scope))
        return {
            "url": settings.url,
            "method": settings.method,
            "fields": fields,
            "account": self.guard.account_name(request.scope),
        }

    def _error(
        self,
        request: Request,
        status_code: int,
        heading: str,
        message: str,
        *,
        back: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> Response:
        context = {
            "heading": heading,
            "message": message,
            "back": back or self.guard.settings.home_path,
        }
        return self._render(request, "error.html", context, status_code, headers)

    def _text_failed(self, request: Request, exc: SMSError, back: str) -> Response:
        """The provider did not take the text: nothing was spent, the user may retry soon."""
        logger.warning("mfa_guard could not send a text: %s", exc.detail or "no detail")
        return self._error(
            request,
            503,
            N_("Text message not sent"),
            exc.message,
            back=back,
            headers={"Retry-After": "30"},
        )

    def _retry_after(self, denied: Denied) -> dict[str, str] | None:
        if denied.retry_at is None:
            return None
        return {"Retry-After": str(max(1, math.ceil(denied.retry_at - self.guard.clock())))}

    def _denied(
        self, request: Request, name: str, denied: Denied, context: dict[str, Any]
    ) -> Response:
        return self._render(
            request,
            name,
            {**context, "error": self._refusal(request, denied)},
            DENIED_STATUS[denied.reason],
            self._retry_after(denied),
        )

    def _translations(self, request: Request) -> NullTranslations:
        return i18n.translations(i18n.request_language(request, self.guard.settings.languages))

    def _refusal(self, request: Request, denied: Denied) -> str:
        """The refusal's message in the page's language, with the wait when it has one."""
        return denied.message_at(self.guard.clock(), self._translations(request))

    async def _form(self, request: Request) -> FormData:
        """The posted form, after the CSRF checks (Origin and the session's token)."""
        if not same_origin(request.scope, self.guard.settings):
            raise FormRejected(
                403, N_("Request refused"), N_("Cross-site form posts are not allowed.")
            )
        if declared_too_large(request):
            raise FormRejected(413, N_("Request refused"), N_("The form is too large."))
        content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if content_type not in ("application/x-www-form-urlencoded", "multipart/form-data"):
            raise FormRejected(415, N_("Request refused"), N_("Send the form from the page."))
        try:
            form = await request.form(max_files=0, max_fields=16, max_part_size=MAX_BODY_BYTES)
        except (MultiPartException, HTTPException) as exc:
            # What Starlette raises for a body it cannot parse (HTTPException(400) inside an
            # app); anything else is a bug or an incompatible Starlette, never a bad form.
            raise FormRejected(
                400, N_("Request refused"), N_("The form could not be read.")
            ) from exc
        expected = request.session.get(CSRF_SESSION_KEY)
        sent = _field(form, "csrf_token")
        if not (
            isinstance(expected, str)
            and sent
            and hmac.compare_digest(expected.encode("utf-8"), sent.encode("utf-8"))
        ):
            raise FormRejected(
                403,
                N_("Request refused"),
                N_(
                    "This form has expired or did not come from this site. Go back, reload the "
                    "page and try again."
                ),
            )
        return form

    def _next(self, value: str | None) -> str:
        return safe_next(value, self.guard.settings.home_path)

    def _challenge_url(self, request: Request, next_path: str) -> str:
        return f"{self._base(request)}/challenge?next={quote(next_path, safe='/')}"

    # -- sign-in challenge -----------------------------------------------------------------

    async def _challenge_context(
        self, caller: Caller, next_path: str, method: Method | None = None
    ) -> dict[str, Any]:
        """The challenge page's context. ``method`` is the one the code field is for (the
        submitted one after a refusal); ``None`` chooses: the text message while this session's
        sign-in code is pending, the authenticator app otherwise. ``sms`` is set only for a
        user SMS is offered to, ``remember_days`` only when trusted devices are on."""
        devices = self.guard.trusted_devices
        context: dict[str, Any] = {
            "next": next_path,
            "method": (method or Method.TOTP).value,
            "error_field": None,
            "sms": None,
            "send_refused": None,
            "remember_days": None if devices is None else devices.settings.days,
            "remember": False,
        }
        if self.service.sms is None:
            return context  # no store call for apps without SMS
        enrolment = await self.service.enrolment(caller.user_id)
        if self.service.sms_offered(enrolment) and enrolment.phone is not None:
            pending = self._pending_sign_in(caller, enrolment)
            context["sms"] = {"phone": sms_codes.mask_phone(enrolment.phone), "pending": pending}
            if method is None and pending:
                context["method"] = Method.SMS.value
        return context

    def _pending_sign_in(self, caller: Caller, enrolment: Enrolment) -> bool:
        """Whether the sign-in code this session asked for is still pending: the store's
        pending code is a sign-in code, valid, and the one this session was told about."""
        challenge = enrolment.sms_challenge
        asked = caller.session.get(SMS_SESSION_KEY)
        return (
            challenge is not None
            and challenge.purpose is SMSPurpose.SIGN_IN
            and self.guard.clock() < challenge.expires_at
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
                caller, next_path, Method.TOTP if strong else None
            )
            if strong:
                context["sms"] = None
                context["notice"] = STRONG_FACTOR_NOTICE
            return self._render(request, "challenge.html", context)
        form = await self._form(request)
        next_path = self._next(_field(form, "next"))
        # One code, one method, one attempt: the form says which method its code is for (a
        # radio button while a texted code is pending), and only that one is checked.
        method = _method(_field(form, "method"))
        # "Remember this browser", ticked: ignored when trusted devices are off.
        remember = self.guard.trusted_devices is not None and _field(form, "remember") != ""
        result = await self.service.verify(
            caller.user_id, method, _field(form, "code"), caller.ip, session=caller.marker.nonce
        )
        if isinstance(result, Denied):
            if result.reason is Reason.NOT_ENROLLED:
                return RedirectResponse(next_path, status_code=303)
            context = await self._challenge_context(caller, next_path, method)
            context["remember"] = remember  # the box stays as the user left it
            context["error_field"] = "recovery" if method is Method.RECOVERY else "code"
            return self._denied(request, "challenge.html", result, context)
        caller.session.pop(SMS_SESSION_KEY, None)
        caller.mark_verified(self.guard, result.method.value, result.epoch)
        response = RedirectResponse(next_path, status_code=303)
        if remember:
            # The device cookie rides on the redirect.
            await remember_browser(self.guard, caller, result.epoch, response)
        return response

    async def sms(self, request: Request, caller: Caller) -> Response:
        """Texts a sign-in code, then shows the challenge page with the code's field focused.
        A refused send shows the challenge again, saying how long to wait, with the field of a
        code sent before while it is pending."""
        if request.method == "GET":
            next_path = self._next(request.query_params.get("next"))
            context = await self._challenge_context(caller, next_path, Method.TOTP)
            if not caller.marker.enrolled or context["sms"] is None:
                return RedirectResponse(self._challenge_url(request, next_path), status_code=303)
            return self._render(request, "sms.html", context)
        form = await self._form(request)
        next_path = self._next(_field(form, "next"))
        try:
            result = await self.service.send_sign_in_code(
                caller.user_id, caller.ip, session=caller.marker.nonce
            )
        except SMSError as exc:
            return self._text_failed(request, exc, self._challenge_url(request, next_path))
        if isinstance(result, Denied):
            if result.reason is Reason.NOT_ENROLLED:
                return RedirectResponse(next_path, status_code=303)
            context = await self._challenge_context(caller, next_path)
            if context["sms"] is None:
                # No text section to say it in (SMS off, no verified phone): the page's message.
                return self._denied(request, "challenge.html", result, context)
            context["send_refused"] = self._send_refused(request, result)
            return self._render(
                request,
                "challenge.html",
                context,
                DENIED_STATUS[result.reason],
                self._retry_after(result),
            )
        caller.session[SMS_SESSION_KEY] = result.expires_at
        context = await self._challenge_context(caller, next_path, Method.SMS)
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
                    denied.retry_at - self.guard.clock(), translations
                )
            ]
        return {
            "message": self._refusal(request, denied),
            "countdown": countdown,
            "ready": sms_wording.ready(translations),
        }

    def _sent_notice(self, request: Request, sent: TextSent) -> str:
        """The notice after a send ("We sent a code to … It expires in 10 minutes."), the
        lifetime worded as the text itself says it."""
        return sms_wording.sent(
            sms_codes.mask_phone(sent.phone), sent.ttl_seconds, self._translations(request)
        )

    # -- enrolment -------------------------------------------------------------------------

    def _phone_required(self, enrolment: Enrolment) -> bool:
        return (
            self.guard.settings.require_phone_for_enrolment
            and self.service.sms is not None
            and enrolment.phone_verified_at is None
        )

    async def enrol(self, request: Request, caller: Caller) -> Response:
        account = self.guard.account_name(request.scope)
        if request.method == "GET":
            next_path = self._next(request.query_params.get("next"))
            enrolment = await self.service.enrolment(caller.user_id)
            if enrolment.enrolled:
                return RedirectResponse(f"{self._base(request)}/settings", status_code=303)
            setup = await self.service.pending_setup(
                caller.user_id, account, session=caller.marker.nonce
            )
            context = {
                "next": next_path,
                "setup": setup,
                "phone_required": self._phone_required(enrolment),
            }
            return self._render(request, "enrol.html", context)
        form = await self._form(request)
        next_path = self._next(_field(form, "next"))
        result = await self.service.begin_setup(
            caller.user_id, account, caller.ip, session=caller.marker.nonce
        )
        if isinstance(result, Denied):
            if result.reason is Reason.PHONE_REQUIRED:
                context = {"next": next_path, "setup": None, "phone_required": True}
                return self._denied(request, "enrol.html", result, context)
            return RedirectResponse(f"{self._base(request)}/settings", status_code=303)
        context = {"next": next_path, "setup": result, "phone_required": False}
        return self._render(request, "enrol.html", context)

    async def enrol_confirm(self, request: Request, caller: Caller) -> Response:
        form = await self._form(request)
        next_path = self._next(_field(form, "next"))
        result = await self.service.confirm_setup(
            caller.user_id, _field(form, "code"), caller.ip, session=caller.marker.nonce
        )
        if isinstance(result, Denied):
            if result.reason is Reason.ALREADY_ENROLLED:
                return RedirectResponse(f"{self._base(request)}/settings", status_code=303)
            setup = await self.service.pending_setup(
                caller.user_id, self.guard.account_name(request.scope), session=caller.marker.nonce
            )
            context = {"next": next_path, "setup": setup, "phone_required": False}
            return self._denied(request, "enrol.html", result, context)
        caller.mark_verified(self.guard, result.method.value, result.epoch)
        return self._render(
            request,
            "recovery_codes.html",
            {
                "next": next_path,
                "codes": result.recovery_codes,
                "notice": N_("Two-factor authentication is on."),
            },
        )

    # -- settings --------------------------------------------------------------------------

    async def settings(self, request: Request, caller: Caller) -> Response:
        return await self._settings_page(request, caller)

    async def _settings_refused(
        self, request: Request, caller: Caller, denied: Denied, **context: Any
    ) -> Response:
        """The settings page again, with the refusal's message, status and Retry-After."""
        return await self._settings_page(
            request,
            caller,
            DENIED_STATUS[denied.reason],
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
        await caller.recheck(self.guard)
        if caller.marker.enrolled and not caller.is_verified(self.guard):
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
                "pending": _pending_text(enrolment, SMSPurpose.PHONE, self.guard.clock()),
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
                "trusted_devices": self.guard.trusted_devices is not None,
                "device_days": self._device_days(),
                **context,
            },
            status_code,
            headers,
        )

    def _device_days(self) -> int | None:
        devices = self.guard.trusted_devices
        return None if devices is None else devices.settings.days

    async def _remembered(self, caller: Caller) -> list[dict[str, Any]] | None:
        """The settings page's list of remembered browsers (``None`` when there is none to
        show: trusted devices off, or the user has no 2FA)."""
        devices = self.guard.trusted_devices
        if devices is None or not caller.marker.enrolled:
            return None
        return [
            self._device_row(caller, device) for device in await devices.trusted(caller.user_id)
        ]

    def _device_row(self, caller: Caller, device: TrustedDevice) -> dict[str, Any]:
        return {
            "id": device.id,
            "name": device.name,
            "created_at": device.created_at,
            "last_used_at": device.last_seen_at,
            "expires_at": device.expires_at,
            "current": is_this_browser(self.guard, caller, device),
        }

    def _to_challenge(self, request: Request, *, strong: bool = False) -> Response:
        """To the challenge and back to the settings; ``strong``: the session was verified by a
        texted code, and the change needs the authenticator app or a recovery code."""
        url = self._challenge_url(request, f"{self._base(request)}/settings")
        return RedirectResponse(f"{url}&strong=1" if strong else url, status_code=303)

    async def new_recovery_codes(self, request: Request, caller: Caller) -> Response:
        await self._form(request)
        await caller.recheck(self.guard)
        if not caller.is_recently_verified(self.guard):
            # Step-up: a fresh code first, then back to the settings page.
            return self._to_challenge(request)
        if not caller.is_strongly_verified():
            return self._to_challenge(request, strong=True)
        result = await self.service.regenerate_recovery_codes(caller.user_id, caller.ip)
        if isinstance(result, Denied):
            return await self._settings_page(request, caller, 409, error=result.message)
        # A factor change: every remembered browser must enter a code again.
        await forget_browsers(self.guard, caller)
        notice = N_("Your old recovery codes no longer work.")
        if self.guard.trusted_devices is not None:
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
        await caller.recheck(self.guard)
        if caller.marker.enrolled and not caller.is_verified(self.guard):
            return self._to_challenge(request)
        result = await self.service.revoke_other_sessions(caller.user_id, caller.ip)
        if isinstance(result, Denied):
            return await self._settings_refused(request, caller, result)
        caller.adopt_epoch(self.guard, result)
        await forget_browsers(self.guard, caller)
        notice = N_("Your other sessions must enter a code again to continue.")
        if self.guard.trusted_devices is not None:
            # The new epoch forgets every remembered browser too, this one included.
            notice = N_(
                "Your other sessions must enter a code again to continue, and every "
                "remembered browser is forgotten."
            )
        return await self._settings_page(request, caller, notice=notice)

    async def forget_device(self, request: Request, caller: Caller) -> Response:
        """Forgets one remembered browser (the form's ``device``): it must enter a code again."""
        form = await self._form(request)
        await caller.recheck(self.guard)
        if caller.marker.enrolled and not caller.is_verified(self.guard):
            return self._to_challenge(request)
        device_id = _field(form, "device")
        if not device_id:
            return await self._settings_page(
                request, caller, 400, error=N_("Choose a browser to forget.")
            )
        devices = self.guard.trusted_devices
        this_browser = None
        if devices is not None and len(device_id) <= MAX_DEVICE_ID and device_id.isprintable():
            # Whether it is this browser, known before it is gone.
            this_browser = next(
                (
                    is_this_browser(self.guard, caller, device)
                    for device in await devices.devices.devices(caller.user_id)
                    if device.id == device_id
                ),
                None,
            )
        if (
            devices is None
            or this_browser is None
            or not await devices.forget(caller.user_id, device_id, caller.ip)
        ):
            return await self._settings_page(
                request, caller, 404, error=N_("There is no such remembered browser.")
            )
        response = await self._settings_page(request, caller, notice=N_("Browser forgotten."))
        if this_browser:
            self._drop_device_cookie(response)
        return response

    async def forget_devices(self, request: Request, caller: Caller) -> Response:
        """Forgets every remembered browser of the user."""
        await self._form(request)
        await caller.recheck(self.guard)
        if caller.marker.enrolled and not caller.is_verified(self.guard):
            return self._to_challenge(request)
        devices = self.guard.trusted_devices
        if devices is not None:
            await devices.forget_all(caller.user_id, caller.ip)
        response = await self._settings_page(
            request, caller, notice=N_("Every remembered browser must enter a code again.")
        )
        if self.guard.device_token(request.scope) is not None:
            self._drop_device_cookie(response)
        return response

    def _drop_device_cookie(self, response: Response) -> None:
        """This browser was forgotten: its cookie goes too (it would open nothing anyway)."""
        devices = self.guard.trusted_devices
        if devices is not None:
            response.delete_cookie(
                devices.settings.cookie_name,
                path="/",
                secure=devices.settings.cookie_secure,
                httponly=True,
                samesite="lax",
            )

    async def disable(self, request: Request, caller: Caller) -> Response:
        form = await self._form(request)
        await caller.recheck(self.guard)
        if caller.marker.enrolled and not caller.is_verified(self.guard):
            return self._to_challenge(request)
        # A texted code is refused by the service (a code of the app or a recovery code only).
        method = _method(_field(form, "method"))
        result = await self.service.disable(
            caller.user_id, method, _field(form, "code"), caller.ip, session=caller.marker.nonce
        )
        if isinstance(result, Denied):
            return await self._settings_refused(request, caller, result, active_form="disable")
        await forget_browsers(self.guard, caller)
        return await self._settings_page(
            request, caller, notice=N_("Two-factor authentication is off.")
        )

    async def phone(self, request: Request, caller: Caller) -> Response:
        """Texts a code to a new mobile number; the number counts once the code comes back."""
        form = await self._form(request)
        raw = _field(form, "phone")
        await caller.recheck(self.guard)
        if caller.marker.enrolled and not caller.is_recently_verified(self.guard):
            # A new number is a new authenticator (NIST SP 800-63B 5.1.3.3): a fresh code first.
            return self._to_challenge(request)
        if caller.marker.enrolled and not caller.is_strongly_verified():
            return self._to_challenge(request, strong=True)
        try:
            result = await self.service.register_phone(
                caller.user_id, raw, caller.ip, session=caller.marker.nonce
            )
        except SMSError as exc:
            return self._text_failed(request, exc, f"{self._base(request)}/settings")
        if isinstance(result, Denied):
            return await self._settings_refused(
                request, caller, result, active_form="phone", phone={"input": raw[:MAX_PHONE_ECHO]}
            )
        return await self._settings_page(
            request, caller, notice=self._sent_notice(request, result), active_form="phone-code"
        )

    async def phone_verify(self, request: Request, caller: Caller) -> Response:
        form = await self._form(request)
        # Re-checked now: a session revoked since it asked for the text changes no phone.
        await caller.recheck(self.guard)
        if caller.marker.enrolled and not caller.is_verified(self.guard):
            return self._to_challenge(request)
        result = await self.service.verify_phone(
            caller.user_id,
            _field(form, "code"),
            caller.ip,
            session=caller.marker.nonce,
            epoch=caller.marker.epoch,
        )
        if isinstance(result, Denied):
            # After a conflict (a revocation landed meanwhile) the settings page re-checks the
            # session, and sends it to the challenge.
            return await self._settings_refused(request, caller, result, active_form="phone-code")
        # This session made the change: it keeps its verified state under the new epoch.
        caller.adopt_epoch(self.guard, result)
        return await self._settings_page(
            request, caller, notice=N_("Your mobile number is verified.")
        )
