"""What every page shares: the templates and their filters, the CSRF-checked form, rendering
(in the request's language), the error page and the refusals' pages, and what the passkey
script of a page needs from the server."""

from __future__ import annotations

import functools
import hmac
import logging
import secrets
from collections.abc import Awaitable, Callable, Sequence
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

import jinja2
from babel.support import NullTranslations
from markupsafe import Markup, escape
from starlette.datastructures import FormData
from starlette.exceptions import HTTPException
from starlette.formparsers import MultiPartException
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.templating import Jinja2Templates

from mfa_guard.core import sms as sms_codes
from mfa_guard.core import sms_wording
from mfa_guard.core.redirects import safe_next
from mfa_guard.enforcement import iso
from mfa_guard.errors import ConfigurationError, Denied, MFAGuardError, Reason, Refused
from mfa_guard.services import MAX_NAME, Method, TextSent
from mfa_guard.sms import SMSError
from mfa_guard.web import i18n
from mfa_guard.web.flows import Flows
from mfa_guard.web.http import report_failure, same_origin
from mfa_guard.web.i18n import N_, browser_name, human_date, human_list
from mfa_guard.web.pages.assets import asset_urls
from mfa_guard.web.pages.policy import (
    PasskeyRequirement,
    memberships_or_none,
    named,
    passkey_requirement,
)
from mfa_guard.web.requests import MAX_BODY_BYTES, Caller, caller_of, declared_too_large
from mfa_guard.web.wiring import misconfigured_response, report_miswiring

if TYPE_CHECKING:
    from mfa_guard.devices import Browser
    from mfa_guard.web.context import Kit

CSRF_SESSION_KEY = "mfa_guard_csrf"
logger = logging.getLogger("mfa_guard")
Handler = Callable[[Request, Caller], Awaitable[Response]]
# The JSON API's refusals of a passkey ceremony that the passkey script says in the page's
# language (by their code); any other it says as the API worded it.
PASSKEY_REFUSALS = (
    Reason.WEBAUTHN_REJECTED,
    Reason.WEBAUTHN_CHALLENGE_EXPIRED,
    Reason.WEBAUTHN_COUNTER_REGRESSED,
    Reason.AUTHENTICATOR_ALREADY_REGISTERED,
    Reason.NO_PASSKEY,
    Reason.PASSKEYS_DISABLED,
    Reason.CONFLICT,
)
# What the browser itself may answer instead of a key: dismissed, timed out, no key at hand.
PASSKEY_CANCELLED = N_(
    "No passkey or security key answered, or the request was cancelled. Try again, or use "
    "another way."
)
PASSKEY_OFFLINE = N_("The server could not be reached. Check your connection and try again.")


def csrf_token(session: Any) -> str:
    token = session.get(CSRF_SESSION_KEY)
    if not isinstance(token, str) or len(token) < 32:
        token = secrets.token_urlsafe(32)
        session[CSRF_SESSION_KEY] = token
    return token


@jinja2.pass_context
def _date_filter(context: jinja2.runtime.Context, moment: datetime | float) -> str:
    return human_date(moment, context["lang"])


@jinja2.pass_context
def _date_time_filter(context: jinja2.runtime.Context, moment: datetime | float) -> str:
    return human_date(moment, context["lang"], with_time=True)


@jinja2.pass_context
def _isolated_filter(context: jinja2.runtime.Context, value: object) -> object:
    """On a right-to-left page, ``value`` (a name, an address, a phone number: left to right,
    from outside the catalogue) isolated in ``<bdi>``, so that the sentence around it keeps its
    order ("لـ Acme Inbox." not "Inbox. Acme"); on any other page, ``value`` as it is."""
    if context.get("dir") != "rtl":
        return value
    return Markup("<bdi>%s</bdi>") % value


def _isolating(phrase_of: Callable[[Callable[[str], str]], str]) -> Markup:
    """A phrase of names for a right-to-left page: ``phrase_of`` makes it with a stand-in for
    each name (the function it is given), the phrase is escaped, then each stand-in becomes its
    name, escaped and isolated in ``<bdi>``."""
    names: list[str] = []

    def stand_in(name: str) -> str:
        names.append(name)
        return f"\x00{len(names) - 1}\x00"

    phrase = escape(phrase_of(stand_in))
    for index, name in enumerate(names):
        phrase = phrase.replace(f"\x00{index}\x00", Markup("<bdi>%s</bdi>") % name)
    return phrase


@jinja2.pass_context
def _names_filter(context: jinja2.runtime.Context, names: Sequence[str]) -> object:
    """Names as one phrase of the page's language ("Acme and Globex", "Acme et Globex",
    "Acme、Globex"), each isolated on a right-to-left page."""
    if context.get("dir") != "rtl":
        return human_list(names, context["lang"])
    return _isolating(lambda part: human_list([part(name) for name in names], context["lang"]))


@jinja2.pass_context
def _factor_name(context: jinja2.runtime.Context, name: str, english: str, kind: str) -> str:
    """An authenticator's name as shown: one the kit gave it (``english``, the kind's usual
    name, maybe numbered: "Authenticator app 2") in the page's language (``kind``, translated);
    a name the user chose, as it is."""
    if name == english:
        return kind
    number = name.removeprefix(english + " ")
    return f"{kind} {number}" if number != name and number.isdigit() else name


@jinja2.pass_context
def _browser_filter(context: jinja2.runtime.Context, browser: Browser) -> str:
    """A browser in the page's language ("Firefox sous Ubuntu"); on a right-to-left page each
    name from the User-Agent isolated (``<bdi>``), so that "Chrome على Windows" keeps its
    order."""
    if context.get("dir") != "rtl":
        return browser_name(browser, context["lang"])
    return _isolating(lambda part: browser_name(browser, context["lang"], part=part))


def _iso_filter(moment: datetime) -> str | None:
    """An instant as the JSON API writes it (``2026-11-27T20:45:00Z``)."""
    return iso(moment.timestamp())


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
    env.filters["iso"] = _iso_filter
    env.filters["names"] = _names_filter
    env.filters["isolated"] = _isolated_filter
    env.filters["factor_name"] = _factor_name
    env.filters["browser"] = _browser_filter
    return Jinja2Templates(env=env)


def form_field(form: FormData, name: str) -> str:
    """A text field of the form (``""`` when absent, or a file)."""
    value = form.get(name)
    return value if isinstance(value, str) else ""


def form_method(value: str) -> Method:
    """The method a form's code is for. The TOTP form is the default: anything unknown is
    checked as a TOTP code."""
    return Method(value) if value in (Method.RECOVERY, Method.SMS) else Method.TOTP


class PageBase:
    """The plumbing of the kit's pages; :class:`mfa_guard.web.pages.Pages` adds the pages."""

    def __init__(self, kit: Kit) -> None:
        self.kit = kit
        self.service = kit.service
        self.flows = Flows(kit)
        self.templates = _templates(kit.template_directory)

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
                caller = await caller_of(request, self.kit.gate)
                if caller is None:
                    return RedirectResponse(self.kit.settings.home_path, status_code=303)
                # The banner names the sites that require 2FA: looked up now (only when one
                # is due), as rendering reads the notice with no I/O.
                await self.kit.gate.named_enrolment_notice(request.scope)
                return await handler(request, caller)
            except Refused as exc:
                # The form's checks: the page says why, and nothing was done.
                denied = exc.denied
                message = self._refusal(request, denied)
                return self._error(request, denied.status, N_("Request refused"), message)
            except SMSError as exc:
                # Handlers that send say where to go back to; this is the fallback.
                return self._text_failed(request, exc, self.kit.settings.home_path)
            except ConfigurationError as exc:  # wired wrong: permanent, not an outage
                report_miswiring(exc)
                return misconfigured_response(request.scope, self.kit.settings)
            except MFAGuardError as exc:
                report_failure(exc)
                return self._error(
                    request,
                    Reason.SERVICE_UNAVAILABLE.status,
                    N_("Service unavailable"),
                    N_(
                        "Two-factor authentication is unavailable right now. Please try again soon."
                    ),
                )

        return endpoint

    def _framing_headers(self) -> dict[str, str]:
        ancestors = self.kit.settings.frame_ancestors
        headers = {"Content-Security-Policy": f"frame-ancestors {ancestors}"}
        # X-Frame-Options, for browsers before CSP 2, names no origin: only these two.
        legacy = {"'none'": "DENY", "'self'": "SAMEORIGIN"}.get(ancestors)
        if legacy is not None:
            headers["X-Frame-Options"] = legacy
        return headers

    def _base(self, request: Request) -> str:
        return str(request.scope.get("app_root_path", "")) + self.kit.settings.mount_path

    def _render(
        self,
        request: Request,
        name: str,
        context: dict[str, Any],
        status_code: int = 200,
        headers: dict[str, str] | None = None,
    ) -> Response:
        settings = self.kit.settings
        lang = i18n.request_language(request, settings.languages, self.kit.language)
        full = {
            "lang": lang,
            "dir": i18n.direction(lang),
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
            "enrolment_notice": self.kit.gate.enrolment_notice(request.scope),
            "sign_out": self._sign_out(request),
            "scripts": asset_urls(self._base(request)),
            "passkeys": None,
            "adding": False,
            "max_name": MAX_NAME,
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

    @property
    def passkeys_offered(self) -> bool:
        """Whether passkeys and security keys are on (``settings.webauthn.rp_id``)."""
        return self.service.relying_party is not None

    def _passkeys(self, request: Request, *, naming: bool = False) -> dict[str, Any] | None:
        """What a page's passkey form tells the script (``None`` when passkeys are off): where
        a refusal that a verification lifts sends the user (the challenge, back to the
        settings), and the messages to say in the page's language, by the API's error code
        (``naming``: the form sends a name, so ``invalid_input`` is about it)."""
        if not self.passkeys_offered:
            return None
        translations = self._translations(request)
        now = self.kit.clock()
        refusals = [Denied(reason) for reason in PASSKEY_REFUSALS]
        if naming:
            refusals.append(Denied(Reason.INVALID_NAME, params={"max_length": MAX_NAME}))
        messages = {denied.code: denied.message_at(now, translations) for denied in refusals}
        messages["failed"] = messages[Reason.WEBAUTHN_REJECTED.code]
        messages["cancelled"] = translations.gettext(PASSKEY_CANCELLED)
        messages["network"] = translations.gettext(PASSKEY_OFFLINE)
        step_up = self._challenge_url(request, f"{self._base(request)}/settings")
        return {
            "messages": messages,
            "step_up": step_up,
            "strong_step_up": f"{step_up}&strong=1",
        }

    def _passkey_requirement(self, caller: Caller) -> PasskeyRequirement | None:
        """What the session's marker says a site of the user (or the app) requires: a passkey
        or security key, from when (``None``: nothing does). No I/O."""
        everyone_from = self.kit.settings.everyone.methods_from("phishing_resistant")
        return passkey_requirement(caller.marker, self.kit.clock(), everyone_from=everyone_from)

    async def _named(self, caller: Caller, requirement: PasskeyRequirement) -> PasskeyRequirement:
        """The requirement with the names of the sites behind it: one directory read, none
        for the app-wide rule."""
        if requirement.everyone:
            return requirement
        memberships = await memberships_or_none(self.service.sites, caller.user_id)
        return named(requirement, memberships, self.kit.clock())

    def _sign_out(self, request: Request) -> dict[str, Any] | None:
        """The app's sign-out for base.html's header (``None`` when none is configured): every
        kit page offers a way out, whoever is asked for a code."""
        settings = self.kit.settings.sign_out
        if settings.url is None:
            return None
        hook = self.kit.sign_out_fields
        fields = {} if hook is None or settings.method == "get" else dict(hook(request.scope))
        return {
            "url": settings.url,
            "method": settings.method,
            "fields": fields,
            "account": self.kit.account_name(request.scope),
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
            "back": back or self.kit.settings.home_path,
        }
        return self._render(request, "error.html", context, status_code, headers)

    def _text_failed(self, request: Request, exc: SMSError, back: str) -> Response:
        """The provider did not take the text: nothing was spent, the user may retry soon."""
        logger.warning("mfa_guard could not send a text: %s", exc.detail or "no detail")
        return self._error(
            request,
            Reason.SMS_UNAVAILABLE.status,
            N_("Text message not sent"),
            exc.message,
            back=back,
            headers={"Retry-After": str(Reason.SMS_UNAVAILABLE.retry_after)},
        )

    def _retry_after(self, denied: Denied) -> dict[str, str] | None:
        seconds = denied.retry_after(self.kit.clock())
        return None if seconds is None else {"Retry-After": str(seconds)}

    def _denied(
        self, request: Request, name: str, denied: Denied, context: dict[str, Any]
    ) -> Response:
        """Page ``name`` again, with the refusal's message, status and ``Retry-After``."""
        return self._render(
            request,
            name,
            {**context, "error": self._refusal(request, denied)},
            denied.status,
            self._retry_after(denied),
        )

    def _translations(self, request: Request) -> NullTranslations:
        language = i18n.request_language(request, self.kit.settings.languages, self.kit.language)
        return i18n.translations(language)

    def _refusal(self, request: Request, denied: Denied) -> str:
        """The refusal's message in the page's language, with the wait when it has one."""
        return denied.message_at(self.kit.clock(), self._translations(request))

    async def _form(self, request: Request) -> FormData:
        """The posted form, after the CSRF checks (Origin and the session's token)."""
        if not same_origin(request.scope, self.kit.settings):
            raise Refused(Reason.FORM_CROSS_SITE)
        if declared_too_large(request):
            raise Refused(Reason.FORM_TOO_LARGE)
        content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if content_type not in ("application/x-www-form-urlencoded", "multipart/form-data"):
            raise Refused(Reason.FORM_NOT_FROM_PAGE)
        try:
            form = await request.form(max_files=0, max_fields=16, max_part_size=MAX_BODY_BYTES)
        except (MultiPartException, HTTPException) as exc:
            # What Starlette raises for a body it cannot parse (HTTPException(400) inside an
            # app); anything else is a bug or an incompatible Starlette, never a bad form.
            raise Refused(Reason.FORM_UNREADABLE) from exc
        expected = request.session.get(CSRF_SESSION_KEY)
        sent = form_field(form, "csrf_token")
        if not (
            isinstance(expected, str)
            and sent
            and hmac.compare_digest(expected.encode("utf-8"), sent.encode("utf-8"))
        ):
            raise Refused(Reason.FORM_EXPIRED)
        return form

    def _next(self, value: str | None) -> str:
        return safe_next(value, self.kit.settings.home_path)

    def _challenge_url(self, request: Request, next_path: str) -> str:
        return f"{self._base(request)}/challenge?next={quote(next_path, safe='/')}"

    def _settings_url(self, request: Request, next_path: str) -> str:
        """The settings page, remembering where the user was going (``next``)."""
        return f"{self._base(request)}/settings?next={quote(next_path, safe='/')}"

    def _to_challenge(self, request: Request, *, strong: bool = False) -> Response:
        """To the challenge and back to the settings; ``strong``: the session was verified by a
        texted code, and the change needs the authenticator app or a recovery code."""
        url = self._challenge_url(request, f"{self._base(request)}/settings")
        return RedirectResponse(f"{url}&strong=1" if strong else url, status_code=303)

    def _sent_notice(self, request: Request, sent: TextSent) -> str:
        """The notice after a send ("We sent a code to … It expires in 10 minutes."), the
        lifetime worded as the text itself says it."""
        return sms_wording.sent(
            sms_codes.mask_phone(sent.phone), sent.ttl_seconds, self._translations(request)
        )
