"""The demo's "Security log" page, for a site's owners: ``/sites/{site}/security-log``, the
site's events newest first (who signed in, with what and from which browser; failed codes and
lock-outs; factors added and removed; the site's policy changes), a page at a time, narrowed to
one group of kinds.

Every rule is the kit's (``guard.site_service.events``, as ``GET api/sites/{site}/events``): the
owner check (a non-member gets 404, an operator 403), which events are the site's, the cursor of
"Older events". This page reads the query string and shows the result, in the language of the
kit's pages for the same request (the labels below are msgids of the demo's catalogue).
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import quote, urlencode

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route

from examples.inbox.i18n import N_, PageLanguage, page_language
from examples.inbox.sites import MAX_SITE_ID, Render, denied_page, team_path
from mfa_guard import Denied, EventKind, MFAGuard, Reason, SecurityLogEntry, client_ip
from mfa_guard.i18n import browser_name

# Events a page shows.
PAGE_SIZE = 25
# Longer query values are no choice of the page's, nor a cursor the kit gave.
MAX_QUERY_VALUE = 128


@dataclass(frozen=True, slots=True)
class KindChoice:
    """One option of the page's "Show" list: a group of kinds."""

    value: str
    label: str
    kinds: frozenset[EventKind] | None


KIND_CHOICES = (
    KindChoice("", N_("Every event"), None),
    KindChoice(
        "sign-ins",
        N_("Sign-ins"),
        frozenset({EventKind.VERIFIED, EventKind.DEVICE_RECOGNISED, EventKind.RECOVERY_CODE_USED}),
    ),
    KindChoice(
        "failures",
        N_("Failed codes and lock-outs"),
        frozenset({EventKind.VERIFICATION_FAILED, EventKind.CODE_REUSED, EventKind.LOCKED_OUT}),
    ),
    KindChoice(
        "factors",
        N_("Second factors added, removed or reset"),
        frozenset(
            {
                EventKind.ENROLLED,
                EventKind.DISABLED,
                EventKind.AUTHENTICATOR_ADDED,
                EventKind.AUTHENTICATOR_RENAMED,
                EventKind.AUTHENTICATOR_REMOVED,
                EventKind.RECOVERY_CODES_REGENERATED,
                EventKind.PHONE_VERIFIED,
                EventKind.ADMIN_RESET,
            }
        ),
    ),
    KindChoice(
        "browsers",
        N_("Remembered browsers"),
        frozenset({EventKind.DEVICE_TRUSTED, EventKind.DEVICE_REVOKED}),
    ),
    KindChoice(
        "site",
        N_("The site's policy, members and refusals"),
        frozenset(
            {
                EventKind.SITE_POLICY_CHANGED,
                EventKind.SITE_MEMBER_ADDED,
                EventKind.SITE_MEMBER_REMOVED,
                EventKind.SITE_ACCESS_DENIED,
                EventKind.MEMBER_RESET_REFUSED,
            }
        ),
    ),
)

# What each kind of event says, in the page's words.
EVENT_WORDS = {
    EventKind.ENROLMENT_STARTED: N_("Started setting up 2FA"),
    EventKind.ENROLLED: N_("Turned 2FA on"),
    EventKind.VERIFIED: N_("Signed in with 2FA"),
    EventKind.VERIFICATION_FAILED: N_("Wrong code or key"),
    EventKind.CODE_REUSED: N_("A used code was tried again"),
    EventKind.LOCKED_OUT: N_("Locked after too many wrong codes"),
    EventKind.RECOVERY_CODE_USED: N_("Used a recovery code"),
    EventKind.RECOVERY_CODES_REGENERATED: N_("Made new recovery codes"),
    EventKind.DISABLED: N_("Turned 2FA off"),
    EventKind.SMS_SENT: N_("A code was texted"),
    EventKind.SMS_LIMITED: N_("Texts held back (too many)"),
    EventKind.SMS_FAILED: N_("A text could not be sent"),
    EventKind.PHONE_VERIFIED: N_("Verified a mobile number"),
    EventKind.DISABLE_REFUSED: N_("Turning 2FA off was refused"),
    EventKind.ADMIN_RESET: N_("2FA reset"),
    EventKind.SESSIONS_REVOKED: N_("Signed out the other sessions"),
    EventKind.SITE_POLICY_CHANGED: N_("Changed the site's 2FA policy"),
    EventKind.SITE_ACCESS_DENIED: N_("Refused an owner's page"),
    EventKind.SITE_MEMBER_ADDED: N_("Added a member"),
    EventKind.SITE_MEMBER_REMOVED: N_("Removed a member"),
    EventKind.DEVICE_TRUSTED: N_("Remembered a browser"),
    EventKind.DEVICE_RECOGNISED: N_("Signed in by a remembered browser"),
    EventKind.DEVICE_REVOKED: N_("Forgot remembered browsers"),
    EventKind.AUTHENTICATOR_ADDED: N_("Added an authenticator"),
    EventKind.AUTHENTICATOR_RENAMED: N_("Renamed an authenticator"),
    EventKind.AUTHENTICATOR_REMOVED: N_("Removed an authenticator"),
    EventKind.CHALLENGED: N_("Asked for the second step"),
    EventKind.ENROLMENT_REQUIRED: N_("Sent to set up 2FA"),
    EventKind.FAILED_CLOSED: N_("Refused: the sign-in service was unreachable"),
    EventKind.MEMBER_RESET_REFUSED: N_("Refused a member's 2FA reset"),
}
METHOD_WORDS = {
    "totp": N_("app"),
    "recovery": N_("recovery code"),
    "sms": N_("text message"),
    "webauthn": N_("passkey"),
    "device": N_("remembered browser"),
}
# Events a page shows in red: someone may be trying codes.
WARNINGS = frozenset(
    {
        EventKind.VERIFICATION_FAILED,
        EventKind.CODE_REUSED,
        EventKind.LOCKED_OUT,
        EventKind.SITE_ACCESS_DENIED,
        EventKind.FAILED_CLOSED,
    }
)


@dataclass(frozen=True, slots=True)
class Row:
    """One event as the page lists it."""

    kind: str
    words: str
    who: str
    at: float
    method: str | None
    browser: str | None
    ip: str | None
    detail: str | None
    warning: bool

    @classmethod
    def of(cls, entry: SecurityLogEntry, lang: PageLanguage) -> Row:
        event = entry.event
        method = event.method
        words = EVENT_WORDS.get(event.kind)
        method_words = None if method is None else METHOD_WORDS.get(method)
        return cls(
            kind=event.kind.value,
            words=event.kind.value if words is None else lang.gettext(words),
            who=event.user_id,
            at=event.at,
            method=method if method_words is None else lang.gettext(method_words),
            browser=None if entry.browser is None else browser_name(entry.browser, lang.tag),
            ip=event.client_ip,
            detail=event.detail,
            warning=event.kind in WARNINGS,
        )


def security_log_path(site_id: str) -> str:
    return f"/sites/{quote(site_id, safe='')}/security-log"


class SecurityLogPages:
    """``/sites/{site}/security-log``, for the site's owners."""

    def __init__(self, guard: MFAGuard, render: Render, *, login_path: str) -> None:
        self.guard = guard
        self.render = render
        self.login_path = login_path

    def routes(self) -> list[Route]:
        return [Route("/sites/{site}/security-log", self.security_log, methods=["GET"])]

    async def security_log(self, request: Request) -> Response:
        user = self.guard.identity(request.scope)
        if user is None:
            next_path = quote(request.url.path, safe="/")
            return RedirectResponse(f"{self.login_path}?next={next_path}", status_code=303)
        site_id = str(request.path_params["site"])
        if not site_id or len(site_id) > MAX_SITE_ID:
            return self._denied_page(request, Denied(Reason.SITE_NOT_FOUND))
        await self.guard.named_enrolment_notice(request.scope)  # the banner names the sites
        show = request.query_params.get("kind", "")
        choice = next((c for c in KIND_CHOICES if c.value == show), None)
        cursor = request.query_params.get("cursor") or None
        if choice is None or len(cursor or "") > MAX_QUERY_VALUE:
            return self._error(request, 400, N_("Choose from the list what to show."))
        service = self.guard.site_service
        page = await service.events(
            user,
            site_id,
            kinds=choice.kinds,
            cursor=cursor,
            limit=PAGE_SIZE,
            ip=client_ip(request.scope, self.guard.settings),
        )
        if isinstance(page, Denied):
            if page.reason is Reason.INVALID_CURSOR:
                return self._error(
                    request,
                    400,
                    N_(
                        "That page of the log is not one it gave: start again from the newest "
                        "events."
                    ),
                )
            return self._denied_page(request, page)
        site = await service.sites.site(site_id)
        if site is None:  # removed since the owner check
            return self._denied_page(request, Denied(Reason.SITE_NOT_FOUND))
        here = security_log_path(site.id)
        older = None
        if page.next_cursor is not None:
            older = f"{here}?{urlencode({'kind': choice.value, 'cursor': page.next_cursor})}"
        context = {
            "site": site,
            "rows": [Row.of(entry, page_language(self.guard, request)) for entry in page.entries],
            "choices": KIND_CHOICES,
            "show": choice.value,
            "older": older,
            "newest": f"{here}?{urlencode({'kind': choice.value})}" if cursor else None,
            "here": here,
            "team_path": team_path(site.id),
        }
        return self.render(request, "security_log.html", context, 200)

    def _error(self, request: Request, status_code: int, message: str) -> Response:
        """The error page with ``message``, a msgid of the demo's."""
        lang = page_language(self.guard, request)
        context = {"heading": lang.gettext("Security log"), "message": lang.gettext(message)}
        return self.render(request, "error.html", context, status_code)

    def _denied_page(self, request: Request, denied: Denied) -> Response:
        return denied_page(self.guard, self.render, request, denied)
