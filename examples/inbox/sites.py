"""The demo's sites, Acme and Solo, and the owners' pages: the Team page (the green padlock next
to each member with 2FA, and the kind: passkey or app; "Reset 2FA" for a member who lost their
phone, with a page to confirm it) and the Inbox settings (force the operators to turn 2FA on,
and choose the second factors they may use).

Every rule is the kit's (``guard.site_service``): these pages only read the form and show the
result, as the kit's JSON site API does. They speak the language of the kit's pages for the same
request: their own words from the demo's catalogue (the labels below are msgids, marked ``N_``
and translated where a page shows them), the kit's refusals in the kit's words.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route

from examples.inbox.forms import checked_form, field
from examples.inbox.i18n import N_, PageLanguage, page_language
from mfa_guard import Denied, MemberStatus, MembersWithoutMFA, MFAGuard, Reason, client_ip
from mfa_guard.stores import MethodPolicy, Role, Site, SiteDirectory

Render = Callable[[Request, str, dict[str, Any], int], Response]

NOTICE_SESSION_KEY = "inbox_notice"
# Longer ids in a page's path are no site of the directory's: refused before a lookup.
MAX_SITE_ID = 255


@dataclass(frozen=True, slots=True)
class DemoSite:
    id: str
    name: str
    members: tuple[tuple[str, Role], ...]


DEMO_SITES = (
    DemoSite(
        "acme",
        "Acme",
        (("owner@acme.test", Role.OWNER), ("agent@acme.test", Role.OPERATOR)),
    ),
    DemoSite("solo", "Solo", (("solo@example.test", Role.OWNER),)),
)
# Who signs up at /signup joins this site as an operator.
SIGN_UP_SITE = "acme"


@dataclass(frozen=True, slots=True)
class GraceChoice:
    """One option of the settings form's "From when" list. ``hours=None`` is the kit's "at
    once", refused while members lack 2FA; ``0`` forces it at once on them all the same."""

    value: str
    hours: int | None
    label: str


# While the site enforces 2FA, the list starts with the policy as it is, chosen: saving the page
# as shown changes nothing (the template writes its label, with the policy's date).
KEEP = "keep"
AT_ONCE = GraceChoice("now", None, N_("At once (every member has 2FA)"))
AT_ONCE_ANYWAY = GraceChoice(
    "0", 0, N_("At once, even for the members without 2FA: they must turn it on to continue")
)
# The same choice, where every member has 2FA but some lack a passkey.
AT_ONCE_WITHOUT_PASSKEYS = GraceChoice(
    "0", 0, N_("At once, even for the members without a passkey: they must add one to continue")
)
GRACE_CHOICES = (
    AT_ONCE,
    AT_ONCE_ANYWAY,
    GraceChoice("24", 24, N_("In 24 hours")),
    GraceChoice("168", 168, N_("In 7 days")),
)


@dataclass(frozen=True, slots=True)
class MethodsChoice:
    """One option of the settings form's "Second factors" list: the kit's methods policy."""

    value: MethodPolicy
    label: str


METHODS_CHOICES = (
    MethodsChoice(MethodPolicy.ANY, N_("Any: an app, a passkey or security key, texted codes")),
    MethodsChoice(MethodPolicy.NO_SMS, N_("No texted codes: an app, a passkey or security key")),
    MethodsChoice(
        MethodPolicy.PHISHING_RESISTANT, N_("Passkeys and security keys only (phishing-resistant)")
    ),
)
# The kind of factor the Team page names next to a member's padlock (MemberStatus.method).
FACTOR_WORDS = {"webauthn": N_("passkey"), "totp": N_("app")}
# A member's role, in the pages' words.
ROLE_WORDS = {Role.OWNER: N_("owner"), Role.OPERATOR: N_("operator")}
# The kit's refusals of a reset that a fresh confirmation of the owner's own factor lifts: the
# page links to the challenge, which leads back to it.
RESET_STEP_UP = (Reason.RECENT_MFA_FOR_RESET, Reason.STRONG_FACTOR_FOR_RESET)
# Refusals that leave no member to show: the refusal page instead of the confirmation.
NO_MEMBER = (Reason.SITE_NOT_FOUND, Reason.NOT_SITE_OWNER, Reason.MEMBER_NOT_FOUND)


async def seed_sites(directory: SiteDirectory, sites: Iterable[DemoSite] = DEMO_SITES) -> None:
    """Creates the demo's sites with exactly their seeded members; idempotent. Their policies
    stay as the owners left them, like the enrolments."""
    for demo in sites:
        await directory.save_site(demo.id, demo.name)
        wanted = dict(demo.members)
        current = {member.user_id: member.role for member in await directory.members(demo.id)}
        for user_id, role in wanted.items():
            if current.get(user_id) is not role:
                await directory.add_member(demo.id, user_id, role)
        for user_id in sorted(current.keys() - wanted.keys()):
            # Accounts made at /signup live in memory: a restart forgets them, so they leave
            # the team too rather than stay there as members nobody can sign in as.
            await directory.remove_member(demo.id, user_id)


def team_path(site_id: str) -> str:
    return f"/sites/{quote(site_id, safe='')}/team"


def settings_path(site_id: str) -> str:
    return f"/sites/{quote(site_id, safe='')}/settings"


def reset_path(site_id: str, member: str) -> str:
    return f"/sites/{quote(site_id, safe='')}/members/{quote(member, safe='')}/reset"


def resettable(member: MemberStatus, user: str) -> bool:
    """Whether the Team page offers "Reset 2FA" for ``member`` to ``user``: someone else, with
    a second factor or a phone. The kit decides on the post; this only spares the owner a
    button it would refuse (their own factors change on their settings page)."""
    return member.user_id != user and (member.two_factor or member.phone_verified)


class SitePages:
    """``/sites/{site}/team``, ``/sites/{site}/settings`` and
    ``/sites/{site}/members/{member}/reset``, for the site's owners: a non-member gets 404 (the
    site's existence stays hidden), an operator 403."""

    def __init__(self, guard: MFAGuard, render: Render, *, login_path: str) -> None:
        self.guard = guard
        self.render = render
        self.login_path = login_path

    def routes(self) -> list[Route]:
        return [
            Route("/sites/{site}/team", self.team, methods=["GET"]),
            Route("/sites/{site}/settings", self.settings, methods=["GET", "POST"]),
            Route(
                "/sites/{site}/members/{member}/reset", self.member_reset, methods=["GET", "POST"]
            ),
        ]

    # -- pages ---------------------------------------------------------------------------------

    async def team(self, request: Request) -> Response:
        user = self._user(request)
        if user is None:
            return self._to_login(request)
        await self.guard.named_enrolment_notice(request.scope)  # the banner names the sites
        found = await self._site_and_members(request, user)
        if isinstance(found, Response):
            return found
        site, members = found
        notice = request.session.pop(NOTICE_SESSION_KEY, None)
        context = {
            "site": site,
            "members": members,
            "factor_words": FACTOR_WORDS,
            "role_words": ROLE_WORDS,
            "settings_path": settings_path(site.id),
            "reset_paths": {
                member.user_id: reset_path(site.id, member.user_id)
                for member in members
                if resettable(member, user)
            },
            "notice": notice if isinstance(notice, str) else None,
        }
        return self.render(request, "team.html", context, 200)

    async def member_reset(self, request: Request) -> Response:
        """The page that says what resetting a member's 2FA does, and its "Reset 2FA" button,
        which posts here."""
        user = self._user(request)
        if user is None:
            return self._to_login(request)
        await self.guard.named_enrolment_notice(request.scope)  # the banner names the sites
        if request.method == "POST":
            await checked_form(request)  # nothing else to read: the URL names the member
        found = await self._site_and_member(request, user)
        if isinstance(found, Response):
            return found
        site, member = found
        if request.method == "POST":
            return await self._reset(request, user, site, member)
        if member.user_id == user:
            return await self._reset_refused(
                request, site, member, Denied(Reason.CANNOT_RESET_SELF)
            )
        if not resettable(member, user):
            return await self._reset_refused(request, site, member, Denied(Reason.NOTHING_TO_RESET))
        return await self._reset_page(request, site, member)

    async def _reset(
        self, request: Request, user: str, site: Site, member: MemberStatus
    ) -> Response:
        # The owner's own 2FA state, read now: the kit asks for a recent, strong confirmation.
        marker = await self.guard.session_marker(request.scope, recheck=True)
        if marker is None:
            return self._to_login(request)
        result = await self.guard.site_service.reset_member(
            user,
            site.id,
            member.user_id,
            marker=marker,
            ip=client_ip(request.scope, self.guard.settings),
        )
        if isinstance(result, Denied):
            return await self._reset_refused(request, site, member, result)
        request.session[NOTICE_SESSION_KEY] = page_language(self.guard, request).gettext(
            "The two-factor authentication of %(member)s was reset.", member=member.user_id
        )
        return RedirectResponse(team_path(site.id), status_code=303)

    async def _reset_refused(
        self, request: Request, site: Site, member: MemberStatus, denied: Denied
    ) -> Response:
        """The confirmation page again, with the kit's refusal and no button; for a step-up,
        a link to the challenge, which leads back here."""
        if denied.reason in NO_MEMBER:  # the member or the site went since it was read
            return self._denied_page(request, denied)
        lang = page_language(self.guard, request)
        message, confirm = lang.refusal(denied, self.guard.clock()), None
        if denied.reason in RESET_STEP_UP:
            back = quote(reset_path(site.id, member.user_id), safe="/")
            confirm = f"{self.guard.settings.mount_path}/challenge?next={back}"
            if denied.reason is Reason.RECENT_MFA_FOR_RESET:
                # The kit's message names its JSON API: the page says it in its own words.
                message = _recent_confirmation(self.guard.settings.recent_mfa_seconds, lang)
        response = await self._reset_page(
            request,
            site,
            member,
            error=message,
            confirm=confirm,
            own_settings=denied.reason is Reason.OWNER_MFA_REQUIRED_FOR_RESET,
            retry_at=denied.retry_at,
            status_code=denied.status,
        )
        retry_after = denied.retry_after(self.guard.clock())
        if retry_after is not None:
            response.headers["Retry-After"] = str(retry_after)
        return response

    async def _reset_page(
        self,
        request: Request,
        site: Site,
        member: MemberStatus,
        *,
        error: str | None = None,
        confirm: str | None = None,
        own_settings: bool = False,
        retry_at: float | None = None,
        status_code: int = 200,
    ) -> Response:
        # What the member's sessions do after the reset: set 2FA up again if something requires
        # it of them (a site of theirs, or the app of everyone), else go on without it.
        enforcement = await self.guard.site_service.enforcement(member.user_id)
        recheck = self.guard.settings.recheck_seconds
        context = {
            "site": site,
            "member": member,
            "error": error,
            "confirm": confirm,
            "own_settings": own_settings,
            "retry_at": retry_at,
            "required": enforcement.required,
            "deadline": enforcement.deadline,
            "now": self.guard.clock(),
            # How soon the reset reaches the member's open sessions, in minutes (0: at once).
            "recheck_minutes": -(-recheck // 60),
            "team_path": team_path(site.id),
            "reset_path": reset_path(site.id, member.user_id),
        }
        return self.render(request, "member_reset.html", context, status_code)

    async def settings(self, request: Request) -> Response:
        user = self._user(request)
        if user is None:
            return self._to_login(request)
        await self.guard.named_enrolment_notice(request.scope)  # the banner names the sites
        if request.method == "POST":
            return await self._change_policy(request, user)
        found = await self._site_and_members(request, user)
        if isinstance(found, Response):
            return found
        site, members = found
        notice = request.session.pop(NOTICE_SESSION_KEY, None)
        return self._settings_page(
            request,
            user,
            site,
            members,
            enforce=site.policy.enforce,
            grace=KEEP if site.policy.enforce else AT_ONCE.value,
            methods=site.policy.methods,
            notice=notice if isinstance(notice, str) else None,
        )

    async def _change_policy(self, request: Request, user: str) -> Response:
        form = await checked_form(request)
        site_id = str(request.path_params["site"])
        if not site_id or len(site_id) > MAX_SITE_ID:
            return self._denied_page(request, Denied(Reason.SITE_NOT_FOUND))
        enforce = field(form, "enforce") == "on"
        grace = field(form, "grace")
        lang = page_language(self.guard, request)
        # Unchecked, the box turns enforcement off: the lists are then not read.
        methods = self._methods(field(form, "methods")) if enforce else MethodPolicy.ANY
        if methods is None:
            return await self._refused(
                request,
                user,
                400,
                lang.gettext("Choose from the list which second factors members may use."),
                enforce,
                grace,
            )
        if grace == KEEP or not enforce:
            # The policy as the page showed it, saved again: nothing to change, nothing refused.
            # Read through the owner check, so the answer tells a non-owner nothing.
            found = await self._site_and_members(request, user)
            if isinstance(found, Response):
                return found
            site, _ = found
            if site.policy.enforce == enforce and site.policy.methods is methods:
                request.session[NOTICE_SESSION_KEY] = (
                    lang.gettext(
                        "Nothing changed: two-factor authentication stays enforced on this site."
                    )
                    if enforce
                    else lang.gettext(
                        "Nothing changed: two-factor authentication is still not enforced on "
                        "this site."
                    )
                )
                return RedirectResponse(settings_path(site.id), status_code=303)
            if enforce and grace == KEEP:
                return await self._refused(
                    request,
                    user,
                    400,
                    lang.gettext(
                        "Choose from the list when the new second factors apply (Unchanged "
                        "keeps the policy as it is)."
                    ),
                    enforce,
                    grace,
                    methods,
                )
        choice = self._choice(grace)
        if enforce and choice is None:
            return await self._refused(
                request,
                user,
                400,
                lang.gettext("Choose from the list when the policy starts."),
                enforce,
                grace,
                methods,
            )
        # The owner's own 2FA state, read now as the kit's API does: a policy change is not
        # decided on a marker up to recheck_seconds old.
        marker = await self.guard.session_marker(request.scope, recheck=True)
        if marker is None:
            return self._to_login(request)
        result = await self.guard.site_service.set_policy(
            user,
            site_id,
            enforce=enforce,
            grace_hours=None if choice is None or not enforce else choice.hours,
            methods=methods,
            marker=marker,
            ip=client_ip(request.scope, self.guard.settings),
        )
        if isinstance(result, Denied):
            return await self._policy_denied(request, user, result, enforce, grace, methods)
        if isinstance(result, MembersWithoutMFA):
            return await self._refused(
                request,
                user,
                409,
                _lacking_message(result, lang),
                enforce,
                grace,
                methods,
                lacking=result,
            )
        request.session[NOTICE_SESSION_KEY] = (
            lang.gettext("Two-factor authentication is now enforced on this site.")
            if result.policy.enforce
            else lang.gettext("Two-factor authentication is no longer enforced on this site.")
        )
        return RedirectResponse(settings_path(result.id), status_code=303)

    async def _policy_denied(
        self,
        request: Request,
        user: str,
        denied: Denied,
        enforce: bool,
        grace: str,
        methods: MethodPolicy,
    ) -> Response:
        site_id = str(request.path_params["site"])
        back = quote(settings_path(site_id), safe="/")
        challenge = f"{self.guard.settings.mount_path}/challenge?next={back}"
        if denied.reason is Reason.REAUTHENTICATION_REQUIRED:
            # Step-up: a current code first, then back to this page to submit again.
            return RedirectResponse(challenge, status_code=303)
        # Methods that apply at once hold the owner's own session from that instant: it must
        # have been verified by one they accept. A way back to the challenge, with the reason.
        lang = page_language(self.guard, request)
        confirm = {
            Reason.PASSKEY_REQUIRED_FOR_POLICY: N_(
                "Requiring passkeys at once holds your own session too: confirm with your "
                "passkey or security key, then save again."
            ),
            Reason.STRONG_FACTOR_REQUIRED_FOR_POLICY: N_(
                "Refusing texted codes at once holds your own session too: confirm with your "
                "app, a recovery code or a passkey, then save again."
            ),
        }.get(denied.reason)
        if confirm is not None:
            return await self._refused(
                request,
                user,
                denied.status,
                lang.gettext(confirm),
                enforce,
                grace,
                methods,
                confirm=challenge,
            )
        if denied.reason in (Reason.OWNER_MFA_REQUIRED, Reason.PASSKEYS_NOT_OFFERED):
            message = lang.refusal(denied, self.guard.clock())
            return await self._refused(
                request, user, denied.status, message, enforce, grace, methods
            )
        return self._denied_page(request, denied)

    # -- plumbing ------------------------------------------------------------------------------

    def _user(self, request: Request) -> str | None:
        return self.guard.identity(request.scope)

    def _to_login(self, request: Request) -> Response:
        next_path = quote(request.url.path, safe="/")
        return RedirectResponse(f"{self.login_path}?next={next_path}", status_code=303)

    def _choice(self, value: str) -> GraceChoice | None:
        for choice in GRACE_CHOICES:
            if choice.value == value and (choice.hours or 0) <= self.guard.settings.max_grace_hours:
                return choice
        return None

    def _choices(self, members: list[MemberStatus], methods: MethodPolicy) -> list[GraceChoice]:
        """The "From when" list: "at once anyway" only while it would hold somebody (for
        passkeys, once they are the methods chosen)."""
        without_2fa = any(not member.two_factor for member in members)
        without_passkey = methods is MethodPolicy.PHISHING_RESISTANT and any(
            member.method != "webauthn" for member in members
        )
        at_once_anyway = AT_ONCE_ANYWAY if without_2fa else AT_ONCE_WITHOUT_PASSKEYS
        return [
            at_once_anyway if choice is AT_ONCE_ANYWAY else choice
            for choice in GRACE_CHOICES
            if (choice is not AT_ONCE_ANYWAY or without_2fa or without_passkey)
            and (choice.hours or 0) <= self.guard.settings.max_grace_hours
        ]

    @property
    def _passkeys(self) -> bool:
        """Whether the app offers passkeys (else no site can require them)."""
        return self.guard.settings.webauthn.rp_id is not None

    def _methods_choices(self) -> list[MethodsChoice]:
        return [
            choice
            for choice in METHODS_CHOICES
            if choice.value is not MethodPolicy.PHISHING_RESISTANT or self._passkeys
        ]

    def _methods(self, value: str) -> MethodPolicy | None:
        """The methods chosen; absent is "any" (a form from before the list)."""
        for choice in self._methods_choices():
            if choice.value.value == (value or MethodPolicy.ANY.value):
                return choice.value
        return None

    async def _site_and_members(
        self, request: Request, user: str
    ) -> tuple[Site, list[MemberStatus]] | Response:
        """The site and its members with their 2FA, or the refusal page for a non-owner."""
        site_id = str(request.path_params["site"])
        if not site_id or len(site_id) > MAX_SITE_ID:
            return self._denied_page(request, Denied(Reason.SITE_NOT_FOUND))
        service = self.guard.site_service
        ip = client_ip(request.scope, self.guard.settings)
        members = await service.members(user, site_id, ip)
        if isinstance(members, Denied):
            return self._denied_page(request, members)
        site = await service.sites.site(site_id)
        if site is None:  # removed since the owner check
            return self._denied_page(request, Denied(Reason.SITE_NOT_FOUND))
        return site, members

    async def _site_and_member(
        self, request: Request, user: str
    ) -> tuple[Site, MemberStatus] | Response:
        """The site and the member the path names, or the refusal page: for a non-owner (as
        the site's other pages), or a user who is not a member of the site."""
        found = await self._site_and_members(request, user)
        if isinstance(found, Response):
            return found
        site, members = found
        wanted = str(request.path_params["member"])
        for member in members:
            if member.user_id == wanted:
                return site, member
        return self._denied_page(request, Denied(Reason.MEMBER_NOT_FOUND))

    async def _refused(
        self,
        request: Request,
        user: str,
        status_code: int,
        message: str,
        enforce: bool,
        grace: str,
        methods: MethodPolicy = MethodPolicy.ANY,
        *,
        lacking: MembersWithoutMFA | None = None,
        confirm: str | None = None,
    ) -> Response:
        """The settings form again, as submitted, with the refusal and the members' state:
        those the kit refused the policy for (``lacking``), or the way to confirm the owner's
        own second factor again (``confirm``)."""
        found = await self._site_and_members(request, user)
        if isinstance(found, Response):
            return found
        site, members = found
        return self._settings_page(
            request,
            user,
            site,
            members,
            enforce=enforce,
            grace=grace,
            methods=methods,
            error=message,
            lacking=lacking,
            confirm=confirm,
            status_code=status_code,
        )

    def _settings_page(
        self,
        request: Request,
        user: str,
        site: Site,
        members: list[MemberStatus],
        *,
        enforce: bool,
        grace: str = AT_ONCE.value,
        methods: MethodPolicy = MethodPolicy.ANY,
        error: str | None = None,
        lacking: MembersWithoutMFA | None = None,
        confirm: str | None = None,
        notice: str | None = None,
        status_code: int = 200,
    ) -> Response:
        without = [member for member in members if not member.two_factor]
        # Who lacks a passkey, as the kit refused them (2FA itself: the list above).
        without_passkey = None
        if lacking is not None and lacking.reason is not Reason.MEMBERS_WITHOUT_MFA:
            without_passkey = list(lacking.members)
        context = {
            "site": site,
            "members": members,
            "without_two_factor": without,
            "owner_without_two_factor": any(member.user_id == user for member in without),
            "enforce": enforce,
            "choices": self._choices(members, methods),
            "grace": grace,
            "methods_choices": self._methods_choices(),
            "methods": methods,
            "methods_labels": {choice.value: choice.label for choice in METHODS_CHOICES},
            "role_words": ROLE_WORDS,
            "error": error,
            "without_passkey": without_passkey,
            "confirm": confirm,
            "notice": notice,
            "now": self.guard.clock(),
            "team_path": team_path(site.id),
            "settings_path": settings_path(site.id),
        }
        return self.render(request, "site_settings.html", context, status_code)

    def _denied_page(self, request: Request, denied: Denied) -> Response:
        return denied_page(self.guard, self.render, request, denied)


NOT_FOUND = N_("Not found")
NOT_ALLOWED = N_("Not allowed")


def denied_page(guard: MFAGuard, render: Render, request: Request, denied: Denied) -> Response:
    """The error page of a refusal of the kit's: its message in the kit's words, in the page's
    language."""
    lang = page_language(guard, request)
    heading = NOT_FOUND if denied.status == 404 else NOT_ALLOWED
    context = {"heading": lang.gettext(heading), "message": lang.refusal(denied, guard.clock())}
    return render(request, "error.html", context, denied.status)


def _recent_confirmation(seconds: int, lang: PageLanguage) -> str:
    """Why a reset needs the owner to confirm again (``recent_mfa_seconds``), in whole minutes
    from one, in seconds below."""
    if seconds < 60:
        return lang.ngettext(
            "Confirm it is you again before resetting a member's two-factor authentication: "
            "the reset needs a confirmation from the last second, with your authenticator app, "
            "your passkey or a recovery code.",
            "Confirm it is you again before resetting a member's two-factor authentication: "
            "the reset needs a confirmation from the last %(count)s seconds, with your "
            "authenticator app, your passkey or a recovery code.",
            seconds,
        )
    return lang.ngettext(
        "Confirm it is you again before resetting a member's two-factor authentication: the "
        "reset needs a confirmation from the last minute, with your authenticator app, your "
        "passkey or a recovery code.",
        "Confirm it is you again before resetting a member's two-factor authentication: the "
        "reset needs a confirmation from the last %(count)s minutes, with your authenticator "
        "app, your passkey or a recovery code.",
        -(-seconds // 60),
    )


def _lacking_message(refused: MembersWithoutMFA, lang: PageLanguage) -> str:
    """Why the kit refused the policy at once, in the page's words."""
    count = len(refused.members)
    if refused.reason is Reason.MEMBERS_WITHOUT_MFA:
        return lang.ngettext(
            "%(count)s member of this site has not turned on two-factor authentication yet: "
            "ask them to, give them time, or force it at once anyway.",
            "%(count)s members of this site have not turned on two-factor authentication yet: "
            "ask them to, give them time, or force it at once anyway.",
            count,
        )
    if refused.reason is Reason.MEMBERS_WITHOUT_ALLOWED_FACTOR:
        return lang.ngettext(
            "%(count)s member of this site has no passkey or security key yet: ask them to "
            "add one, give them time, or require it at once anyway.",
            "%(count)s members of this site have no passkey or security key yet: ask them to "
            "add one, give them time, or require it at once anyway.",
            count,
        )
    return lang.gettext(
        "Add a passkey or security key to your own account before requiring one at once."
    )
