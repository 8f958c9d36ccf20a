"""The kit's errors, and its refusals: the one table of every refusal the kit answers, with its
machine code, HTTP status and message.

A refusal is data where it is expected (:class:`Denied`, which the services and the web flows
return); :class:`Refused` raises one where returning it is awkward (reading a body or a form).
The JSON API answers ``{"error": {"code", "message"}}`` with the row's status; the pages show
the message in their language (``python -m mfa_guard.web.i18n`` extracts every row's message).
"""

from __future__ import annotations

import gettext
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import Enum, unique

from mfa_guard.core import sms_wording


@dataclass(frozen=True, slots=True)
class Refusal:
    """One row of the table. ``message`` is English, and the gettext msgid: its
    ``%(name)s`` are filled from :attr:`Denied.params`; with a ``plural`` the message is chosen
    by ``params["count"]``. ``retry_after``: the seconds a client is told to wait when the
    refusal sets no time of its own (outages)."""

    code: str
    status: int
    message: str
    plural: str | None = None
    retry_after: int | None = None


@unique
class Reason(Enum):
    """Every refusal the kit answers: the key of the table, a :class:`Refusal` each (``code``,
    ``status``, ``message``, ``retry_after``). Several rows may share a code (and a client sees
    one code) where the kit says it in more than one way; the pages' form refusals answer a
    page, not a code."""

    _value_: Refusal

    # -- second factors and enrolment ---------------------------------------------------------
    INVALID_CODE = Refusal("invalid_code", 422, "That code is not valid. Check it and try again.")
    CODE_ALREADY_USED = Refusal(
        "code_already_used",
        422,
        "That code was already used. Wait for the next code and try again.",
    )
    TOO_MANY_ATTEMPTS = Refusal(
        "too_many_attempts", 429, "Too many attempts. Wait a moment before trying again."
    )
    LOCKED_AFTER_FAILURES = Refusal(
        "locked_after_failures",
        429,
        "Too many wrong codes in a row: this way of signing in is locked. Use another one (a "
        "recovery code, or your app's code), or ask an administrator to reset your "
        "two-factor authentication.",
    )
    NOT_ENROLLED = Refusal(
        "not_enrolled", 409, "Two-factor authentication is not enabled for this account."
    )
    ALREADY_ENROLLED = Refusal(
        "already_enrolled", 409, "Two-factor authentication is already enabled for this account."
    )
    NO_PENDING_ENROLMENT = Refusal(
        "no_pending_enrolment",
        409,
        "No set-up is waiting in this session: it was not started here, or a newer set-up "
        "replaced it. Start the set-up again.",
    )
    CONFLICT = Refusal(
        "conflict", 409, "Another request changed your two-factor settings. Please start again."
    )
    PHONE_REQUIRED = Refusal(
        "phone_required", 409, "Add and verify your mobile number before turning on 2FA."
    )
    STRONG_FACTOR_REQUIRED = Refusal(
        "strong_factor_required",
        403,
        "A text-message code is not enough to change your two-factor settings: use a code from "
        "your authenticator app or a recovery code.",
    )
    ENFORCED_BY_SITE = Refusal(
        "mfa_enforced_by_site",
        409,
        "Two-factor authentication cannot be turned off: %(names)s requires it of every member.",
    )
    REQUIRED_FOR_EVERYONE = Refusal(
        "mfa_required_for_everyone",
        409,
        "Two-factor authentication is required for every account: it cannot be turned off.",
    )
    TRUSTED_DEVICES_DISABLED = Refusal(
        "trusted_devices_disabled", 409, "Remembering a browser is not offered here."
    )
    AUTHENTICATOR_NOT_FOUND = Refusal(
        "authenticator_not_found", 404, "There is no such authenticator on your account."
    )
    INVALID_NAME = Refusal(
        "invalid_input",
        400,
        "A name is 1 to %(max_length)s characters, without control characters.",
    )
    # A WebAuthn credential registers once, for one account (WebAuthn 7.1 step 22).
    AUTHENTICATOR_ALREADY_REGISTERED = Refusal(
        "authenticator_already_registered",
        409,
        "This passkey or security key is already registered.",
    )
    PASSKEYS_DISABLED = Refusal(
        "passkeys_disabled", 409, "Passkeys and security keys are not offered here."
    )
    NO_PASSKEY = Refusal("no_passkey", 409, "There is no passkey or security key on this account.")
    WEBAUTHN_REJECTED = Refusal(
        "webauthn_rejected",
        422,
        "The passkey or security key could not be verified. Try again, or use another way.",
    )
    WEBAUTHN_CHALLENGE_EXPIRED = Refusal(
        "webauthn_challenge_expired",
        422,
        "This request expired or was already answered. Try again.",
    )
    # The authenticator's signature counter did not go up: it may have been cloned (WebAuthn
    # 6.1.1); the assertion is refused.
    WEBAUTHN_COUNTER_REGRESSED = Refusal(
        "webauthn_counter_regressed",
        422,
        "This security key's counter went backwards: it may have been copied. Sign in another "
        "way and remove it.",
    )

    # -- the session: who asks, and how recently they verified ----------------------------------
    NOT_AUTHENTICATED = Refusal("not_authenticated", 401, "Sign in first.")
    MFA_REQUIRED = Refusal("mfa_required", 401, "Complete two-factor authentication first.")
    # The middleware's and the FastAPI dependencies' word for a guarded route of the app.
    MFA_REQUIRED_TO_CONTINUE = Refusal(
        "mfa_required", 401, "Complete two-factor authentication to continue."
    )
    # A session verified by a factor a policy of the user's sites (or the app) no longer
    # accepts: a texted code, or anything but a passkey.
    STRONGER_FACTOR_REQUIRED = Refusal(
        "mfa_stronger_factor_required",
        401,
        "A site you belong to does not accept the way you confirmed it is you: confirm again "
        "with a factor it accepts (a passkey or security key, where it requires one).",
    )
    ENROLMENT_REQUIRED = Refusal(
        "mfa_enrolment_required",
        403,
        "A site you belong to requires two-factor authentication: turn it on to continue.",
    )
    # Step-up (require_recent_mfa) for a user without 2FA, who cannot step up.
    ENROLMENT_REQUIRED_FOR_STEP_UP = Refusal(
        "mfa_enrolment_required",
        403,
        "This action needs two-factor authentication: turn it on first.",
    )
    RECENT_MFA_REQUIRED = Refusal(
        "mfa_reauthentication_required",
        401,
        "Confirm a current code (POST api/verify) or passkey (POST api/webauthn/authenticate) "
        "to continue.",
    )
    PASSKEY_REQUIRED = Refusal(
        "mfa_reauthentication_required",
        401,
        "Confirm with your passkey or security key (POST api/webauthn/authenticate) to continue.",
    )
    RECENT_MFA_FOR_RECOVERY_CODES = Refusal(
        "mfa_reauthentication_required",
        401,
        "Confirm a current code (POST api/verify) or passkey (POST api/webauthn/authenticate) "
        "before regenerating recovery codes.",
    )
    RECENT_MFA_FOR_PHONE = Refusal(
        "mfa_reauthentication_required",
        401,
        "Confirm a current code (POST api/verify) or passkey (POST api/webauthn/authenticate) "
        "before changing your phone number.",
    )
    # Under a policy that accepts only passkeys, for a member who has one.
    PASSKEY_FOR_FACTORS = Refusal(
        "passkey_required",
        403,
        "A site you belong to accepts only a passkey or security key: confirm with yours (or "
        "with a recovery code, if you lost it) before changing your second factors.",
    )
    RECENT_MFA_FOR_FACTORS = Refusal(
        "mfa_reauthentication_required",
        401,
        "Confirm a current code (POST api/verify) or passkey (POST api/webauthn/authenticate) "
        "before changing your second factors.",
    )
    REAUTHENTICATION_REQUIRED = Refusal(
        "mfa_reauthentication_required",
        401,
        "Confirm a current code (POST api/verify) or passkey (POST api/webauthn/authenticate) "
        "before changing the site's policy.",
    )
    # A policy that applies at once holds the owner's own session from that instant.
    PASSKEY_REQUIRED_FOR_POLICY = Refusal(
        "mfa_reauthentication_required",
        401,
        "Confirm with your passkey or security key (POST api/webauthn/authenticate) before "
        "requiring one of every member at once.",
    )
    STRONG_FACTOR_REQUIRED_FOR_POLICY = Refusal(
        "mfa_reauthentication_required",
        401,
        "A text-message code is not enough to refuse texted codes at once: confirm with your "
        "authenticator app or a recovery code (POST api/verify), or your passkey, first.",
    )

    # -- text messages --------------------------------------------------------------------------
    SMS_DISABLED = Refusal("sms_disabled", 409, "Text-message codes are not offered here.")
    SMS_REFUSED_BY_POLICY = Refusal(
        "sms_refused_by_policy",
        403,
        "A site you belong to does not accept text-message codes: use your authenticator app, "
        "a passkey or a recovery code.",
    )
    NO_VERIFIED_PHONE = Refusal(
        "no_verified_phone", 409, "There is no verified mobile number on this account."
    )
    # Said with the wait (Denied.message_at): "... Wait 23 seconds before asking for a new code."
    TOO_MANY_TEXTS = Refusal("too_many_texts", 429, "You cannot get another text message yet.")
    TEXTS_TO_COUNTRY_REFUSED = Refusal(
        "sms_country_not_allowed",
        429,
        "Text messages to your number's country are not sent any more. Use your authenticator "
        "app or a recovery code.",
    )
    PHONE_NOT_INTERNATIONAL = Refusal(
        "invalid_phone",
        400,
        "Enter the mobile number in international format, starting with + and the country "
        "code, e.g. +33 6 12 34 56 78.",
    )
    INVALID_PHONE = Refusal("invalid_phone", 400, "That is not a valid phone number.")
    NOT_A_MOBILE = Refusal(
        "not_a_mobile", 400, "Enter a mobile number: text messages go to mobiles."
    )
    PHONE_COUNTRY_NOT_ALLOWED = Refusal(
        "phone_country_not_allowed",
        400,
        "Text messages cannot be sent to numbers of this country (%(region)s).",
    )
    SMS_UNAVAILABLE = Refusal(
        "sms_unavailable",
        503,
        "The text message could not be sent. Try again later or use your authenticator app.",
        retry_after=30,
    )

    # -- sites ----------------------------------------------------------------------------------
    SITE_NOT_FOUND = Refusal("site_not_found", 404, "There is no such site.")
    NOT_SITE_OWNER = Refusal("not_site_owner", 403, "Only the site's owners can do this.")
    OWNER_MFA_REQUIRED = Refusal(
        "verified_mfa_required",
        403,
        "Turn on two-factor authentication for your own account before enforcing it on the site.",
    )
    INVALID_GRACE = Refusal(
        "invalid_grace_hours", 400, "The grace period must be from 0 to %(max_hours)s hours."
    )
    MEMBERS_WITHOUT_MFA = Refusal(
        "members_without_mfa",
        409,
        "%(count)s member of this site has not turned on two-factor authentication: ask them "
        "to, or give a grace period (grace_hours; 0 enforces at once).",
        plural="%(count)s members of this site have not turned on two-factor authentication: "
        "ask them to, or give a grace period (grace_hours; 0 enforces at once).",
    )
    # The methods a site accepts (stores.sites.MethodPolicy), refused as enforcement is.
    METHODS_NEED_ENFORCEMENT = Refusal(
        "invalid_input",
        400,
        "Only a site that enforces two-factor authentication can limit its methods: send "
        "'enforce': true, or 'methods': 'any'.",
    )
    PASSKEYS_NOT_OFFERED = Refusal(
        "passkeys_disabled",
        409,
        "Passkeys and security keys are not offered here: a site cannot require them.",
    )
    MEMBERS_WITHOUT_ALLOWED_FACTOR = Refusal(
        "members_without_allowed_factor",
        409,
        "%(count)s member of this site has no passkey or security key: ask them to add one, "
        "or give a grace period (grace_hours; 0 requires one at once).",
        plural="%(count)s members of this site have no passkey or security key: ask them to "
        "add one, or give a grace period (grace_hours; 0 requires one at once).",
    )
    # The owner would be the first one locked out (a passkey required at once, grace or not).
    OWNER_WITHOUT_ALLOWED_FACTOR = Refusal(
        "members_without_allowed_factor",
        409,
        "Add a passkey or security key to your own account before requiring one of every "
        "member at once.",
    )

    # -- a member's 2FA reset by a site's owner -------------------------------------------------
    MEMBER_NOT_FOUND = Refusal("member_not_found", 404, "There is no such member of this site.")
    CANNOT_RESET_SELF = Refusal(
        "cannot_reset_self",
        403,
        "You cannot reset your own two-factor authentication here: change your factors on your "
        "security settings page, or ask another owner.",
    )
    OWNER_MFA_REQUIRED_FOR_RESET = Refusal(
        "verified_mfa_required",
        403,
        "Turn on two-factor authentication for your own account before resetting a member's.",
    )
    RECENT_MFA_FOR_RESET = Refusal(
        "mfa_reauthentication_required",
        401,
        "Confirm a current code (POST api/verify) or passkey (POST api/webauthn/authenticate) "
        "before resetting a member's two-factor authentication.",
    )
    STRONG_FACTOR_FOR_RESET = Refusal(
        "mfa_reauthentication_required",
        401,
        "Confirm with your authenticator app, your passkey or a recovery code before "
        "resetting a member's two-factor authentication: a texted code or a remembered "
        "browser is not enough.",
    )
    MEMBER_OF_OTHER_SITES = Refusal(
        "member_of_other_sites",
        409,
        "This member also belongs to %(count)s site you do not own, and the reset would turn "
        "off their two-factor authentication there too: ask that site's owner or the app's "
        "support to reset it.",
        plural="This member also belongs to %(count)s sites you do not own, and the reset "
        "would turn off their two-factor authentication there too: ask those sites' owners or "
        "the app's support to reset it.",
    )
    NOTHING_TO_RESET = Refusal(
        "nothing_to_reset", 409, "This member has no two-factor authentication to reset."
    )
    RESET_COOLDOWN = Refusal(
        "reset_cooldown",
        429,
        "This member's two-factor authentication was reset a short while ago: it cannot be "
        "reset again yet.",
    )

    # -- a site's security log (GET sites/{site}/events): its query parameters -----------------
    UNKNOWN_PARAMETER = Refusal(
        "invalid_input",
        400,
        "Unknown parameter '%(name)s': the log is filtered by kind, member, since and until, "
        "and paged with cursor and limit.",
    )
    REPEATED_PARAMETER = Refusal("invalid_input", 400, "Give the parameter '%(name)s' once.")
    INVALID_EVENT_KIND = Refusal("invalid_input", 400, "Each 'kind' must be one of: %(kinds)s.")
    INVALID_EVENT_MEMBER = Refusal(
        "invalid_input",
        400,
        "The parameter 'member' must be a user id of 1 to %(max_length)s characters, without "
        "control characters.",
    )
    INVALID_INSTANT = Refusal(
        "invalid_input",
        400,
        "The parameter '%(name)s' must be an instant such as 2026-11-27T20:45:00Z (UTC, as the "
        "API writes them, or with an offset such as +01:00).",
    )
    INVALID_EVENTS_LIMIT = Refusal(
        "invalid_input", 400, "The parameter 'limit' must be a whole number from 1 to %(max)s."
    )
    INVALID_CURSOR = Refusal(
        "invalid_cursor",
        400,
        "This cursor is not one this site's log gave (or the server's keys changed since): ask "
        "for the first page again, without 'cursor'.",
    )

    # -- remembered browsers --------------------------------------------------------------------
    DEVICE_NOT_FOUND = Refusal("device_not_found", 404, "There is no such remembered browser.")
    NO_DEVICE_CHOSEN = Refusal("invalid_input", 400, "Choose a browser to forget.")

    # -- the request itself ---------------------------------------------------------------------
    NO_SUCH_ENDPOINT = Refusal("not_found", 404, "There is no such API endpoint.")
    METHOD_NOT_ALLOWED = Refusal("method_not_allowed", 405, "Use %(methods)s here.")
    CROSS_SITE_REQUEST = Refusal("cross_site_request", 403, "Cross-site requests are not allowed.")
    UNSUPPORTED_MEDIA_TYPE = Refusal(
        "unsupported_media_type", 415, "Send the body as application/json."
    )
    PAYLOAD_TOO_LARGE = Refusal("payload_too_large", 413, "The request body is too large.")
    INVALID_JSON = Refusal("invalid_json", 400, "The body is not valid JSON.")
    NOT_A_JSON_OBJECT = Refusal("invalid_json", 400, "The body must be a JSON object.")
    FIELD_REQUIRED = Refusal("invalid_input", 400, "The field '%(field)s' is required.")
    FIELD_NOT_A_STRING = Refusal("invalid_input", 400, "The field '%(field)s' must be a string.")
    FIELD_TOO_LONG = Refusal(
        "invalid_input", 400, "The field '%(field)s' must be at most %(max_length)s characters."
    )
    FIELD_NOT_AN_OBJECT = Refusal(
        "invalid_input", 400, "The field '%(field)s' must be a JSON object."
    )
    FIELD_NOT_A_BOOLEAN = Refusal(
        "invalid_input", 400, "The field '%(field)s' must be true or false."
    )
    GRACE_HOURS_OUT_OF_RANGE = Refusal(
        "invalid_input",
        400,
        "The field 'grace_hours' must be a number of hours from 0 to %(max_hours)s.",
    )
    INVALID_METHOD = Refusal(
        "invalid_method", 400, "The method must be one of: totp, recovery, sms."
    )
    INVALID_METHODS_POLICY = Refusal(
        "invalid_input",
        400,
        "The field 'methods' must be one of: any, no_sms, phishing_resistant.",
    )
    # The pages' forms (a page answers them, with the message; no client reads the code).
    FORM_CROSS_SITE = Refusal("cross_site_request", 403, "Cross-site form posts are not allowed.")
    FORM_TOO_LARGE = Refusal("payload_too_large", 413, "The form is too large.")
    FORM_NOT_FROM_PAGE = Refusal("unsupported_media_type", 415, "Send the form from the page.")
    FORM_UNREADABLE = Refusal("invalid_form", 400, "The form could not be read.")
    FORM_EXPIRED = Refusal(
        "form_expired",
        403,
        "This form has expired or did not come from this site. Go back, reload the page and "
        "try again.",
    )

    # -- the kit itself -------------------------------------------------------------------------
    SERVICE_UNAVAILABLE = Refusal(
        "service_unavailable", 503, "The authentication service is unavailable.", retry_after=5
    )
    # The app wires the kit wrong: permanent, named in the log, never described to the client.
    INTERNAL_ERROR = Refusal("internal_error", 500, "Something went wrong on the server.")

    @property
    def code(self) -> str:
        return self._value_.code

    @property
    def status(self) -> int:
        return self._value_.status

    @property
    def message(self) -> str:
        """The English message (the msgid), its values not filled in."""
        return self._value_.message

    @property
    def retry_after(self) -> int | None:
        return self._value_.retry_after


@dataclass(frozen=True, slots=True)
class Denied:
    """A refusal as data, which the kit's services return where a request cannot go on: its row
    of the table (``reason``), when asking again may succeed (``retry_at``, a time of the kit's
    clock) and the values its message names (``params``).

    ``code``, ``status`` and ``message`` are what the JSON API answers for it (its machine code,
    HTTP status and English message); :meth:`text` and :meth:`message_at` give the message in
    another language, :meth:`retry_after` the ``Retry-After`` seconds. Compare ``reason`` with a
    :class:`Reason` member to act on one refusal (``denied.reason is
    Reason.REAUTHENTICATION_REQUIRED``: send the user to the challenge)."""

    reason: Reason
    retry_at: float | None = None
    params: Mapping[str, str | int] = field(default_factory=dict)

    @property
    def code(self) -> str:
        return self.reason.code

    @property
    def status(self) -> int:
        return self.reason.status

    @property
    def message(self) -> str:
        """The message in English, its values filled in."""
        return self.text()

    def text(self, translations: gettext.NullTranslations = sms_wording.ENGLISH) -> str:
        """The message in the language of ``translations``, its values filled in."""
        row = self.reason.value
        if row.plural is None:
            template = translations.gettext(row.message)
        else:
            template = translations.ngettext(row.message, row.plural, int(self.params["count"]))
        return template % self.params if self.params else template

    def message_at(
        self, now: float, translations: gettext.NullTranslations = sms_wording.ENGLISH
    ) -> str:
        """The message in the language of ``translations``; a text refused for now says how
        long to wait (from ``retry_at``, the send limits' own reset)."""
        text = self.text(translations)
        if self.reason is Reason.TOO_MANY_TEXTS and self.retry_at is not None:
            text = sms_wording.sentences(text, sms_wording.wait(self.retry_at - now, translations))
        return text

    def retry_after(self, now: float) -> int | None:
        """The ``Retry-After`` seconds, if the refusal has a wait."""
        if self.retry_at is not None:
            return sms_wording.wait_seconds(self.retry_at - now)
        return self.reason.retry_after


class Refused(Exception):
    """Refuses the request: raised where a refusal cannot be returned (reading a body, a path
    parameter or a form). The JSON API answers the refusal's error, the pages its error page."""

    def __init__(self, reason: Reason, **params: str | int) -> None:
        self.denied = Denied(reason, params=params)
        super().__init__(self.denied.message)


class MFAGuardError(Exception):
    """The kit could not do its work. ``code`` names the error for programs."""

    code = "mfa_guard_error"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class ConfigurationError(MFAGuardError):
    """Settings or wiring that cannot work safely: raised at start-up, or by the first request
    that shows it (no user or session in the scope, a user without an identity). A request
    refused for it gets a generic 500 (``internal_error``), never the 503 of an outage: the
    mistake is permanent."""

    code = "configuration_error"


class StoreUnavailable(MFAGuardError):
    """A backing store (database, rate-limit storage) did not answer: fail closed."""

    code = Reason.SERVICE_UNAVAILABLE.code

    def __init__(self, message: str = Reason.SERVICE_UNAVAILABLE.message) -> None:
        super().__init__(message)


class SecretDecryptionError(MFAGuardError):
    """A stored secret could not be decrypted with any configured key."""

    code = "secret_undecryptable"
