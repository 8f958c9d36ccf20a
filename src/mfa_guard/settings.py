"""All configuration, from ``MFA_GUARD_*`` environment variables (nested with ``__``) or ``.env``.

Build the settings once in the app factory and hand them to :class:`mfa_guard.MFAGuard`; tests build
them with ``_env_file=None`` and explicit values.
"""

from __future__ import annotations

import ipaddress
import math
import re
import warnings
from datetime import datetime
from typing import Annotated, Any, Literal, Self
from urllib.parse import urlsplit

import limits
import phonenumbers
from cryptography.fernet import Fernet
from pydantic import (
    AliasChoices,
    BaseModel,
    Field,
    SecretStr,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from mfa_guard.core.redirects import safe_next

# NIST SP 800-63B 5.2.2: at most 100 consecutive failed attempts on one account.
DAY = 24 * 3600
MAX_CONSECUTIVE_FAILURES = 100
# Seconds to wait for Redis to connect and to answer each command (``storage_timeout``).
STORAGE_TIMEOUT = 5.0


# A CSP host-source of frame-ancestors: an http(s) origin, optionally a wildcard subdomain or port.
_FRAME_SOURCE = re.compile(r"https?://(\*\.)?[A-Za-z0-9-]+(\.[A-Za-z0-9-]+)*(:(\d{1,5}|\*))?")


def _split_commas(value: Any) -> Any:
    if isinstance(value, str):
        return [part.strip() for part in value.split(",") if part.strip()]
    return value


class TOTPSettings(BaseModel):
    # SHA1 / 6 digits / 30 s is what every authenticator app honours (Key Uri Format).
    digits: int = Field(default=6, description="Digits of a TOTP code: 6 or 8.")
    period: int = Field(default=30, description="Seconds a TOTP code lives: 30 or 60.")
    drift_steps: int = Field(
        default=1, description="Time steps accepted either side of now for clock skew (0 to 2)."
    )

    @field_validator("digits")
    @classmethod
    def _digits(cls, value: int) -> int:
        if value not in (6, 8):
            raise ValueError("TOTP digits must be 6 or 8 (authenticator apps support no other)")
        return value

    @field_validator("period")
    @classmethod
    def _period(cls, value: int) -> int:
        if value not in (30, 60):
            raise ValueError("TOTP period must be 30 or 60 seconds")
        return value

    @field_validator("drift_steps")
    @classmethod
    def _drift(cls, value: int) -> int:
        if not 0 <= value <= 2:
            raise ValueError(
                "TOTP drift_steps must be between 0 and 2: a wider window multiplies the codes an "
                "attacker may guess (RFC 6238 5.2 recommends at most one step)"
            )
        return value


class RateLimitSettings(BaseModel):
    """Failed second-factor attempts per user, in two budgets so that using one up never locks
    the other path: authenticator and text-message codes, and recovery codes."""

    failures: str = Field(
        default="5/minute;20/hour;30/day",
        description=(
            "Failed authenticator-app and text-message codes allowed per user, across sessions "
            "and IPs (`limits` notation, several separated by `;`); at most 100 failures a day "
            "in all (NIST SP 800-63B). Only codes that were checked count, never refused "
            "attempts. The default's 30 a day makes reaching `consecutive_failures` take more "
            "than two days. Recovery codes have a budget of their own."
        ),
    )
    recovery_failures: str = Field(
        default="3/hour;4/day",
        description=(
            "Failed recovery codes allowed per user, counted apart from `failures`: an attacker "
            "who used up the codes' budget leaves the owner their recovery codes, and the "
            "reverse. Same notation and 100-a-day rule; a success on any path clears both. The "
            "default's 4 a day makes reaching `consecutive_recovery_failures` take more than two "
            "days."
        ),
    )

    consecutive_failures: int = Field(
        default=90,
        ge=1,
        description=(
            "Failed authenticator-app and text-message codes in a row (no success between, "
            "within a year) after which that path stays locked until a success on another path "
            "(a recovery code, a remembered browser signing in) or `mfa-guard reset-user`. With "
            "`consecutive_recovery_failures`, at most 100 for the account (NIST SP 800-63B)."
        ),
    )
    consecutive_recovery_failures: int = Field(
        default=10,
        ge=1,
        description=(
            "Failed recovery codes in a row after which recovery codes stay locked until a "
            "success on another path (a code, a remembered browser signing in) or "
            "`mfa-guard reset-user`."
        ),
    )

    @model_validator(mode="after")
    def _consecutive(self) -> Self:
        total = self.consecutive_failures + self.consecutive_recovery_failures
        if total > MAX_CONSECUTIVE_FAILURES:
            raise ValueError(
                f"rate_limits.consecutive_failures + consecutive_recovery_failures is {total}; "
                f"NIST SP 800-63B allows at most {MAX_CONSECUTIVE_FAILURES} failed attempts in a "
                "row on one account"
            )
        return self

    @field_validator("failures", "recovery_failures")
    @classmethod
    def _failures(cls, value: str, info: ValidationInfo) -> str:
        name = f"rate_limits.{info.field_name}"
        if not value.strip():
            raise ValueError(f"{name} needs at least one limit, e.g. '5/minute'")
        try:
            items = limits.parse_many(value)
        except ValueError as exc:
            raise ValueError(f"{name} is not in limits notation: {exc}") from exc
        for item in items:
            if item.amount > MAX_CONSECUTIVE_FAILURES:
                raise ValueError(
                    f"{name} allows {item.amount} failures in one window; NIST "
                    f"SP 800-63B allows at most {MAX_CONSECUTIVE_FAILURES}"
                )
        # In any 24 hours a window of length L lets at most amount * ceil(day / L) through;
        # the tightest window bounds the whole. Short windows alone would let thousands in.
        per_day = min(item.amount * math.ceil(DAY / item.get_expiry()) for item in items)
        if per_day > MAX_CONSECUTIVE_FAILURES:
            raise ValueError(
                f"{name} lets {per_day} failures a day through; at most "
                f"{MAX_CONSECUTIVE_FAILURES} (NIST SP 800-63B): add a daily limit, e.g. "
                f"'{value};{MAX_CONSECUTIVE_FAILURES}/day'"
            )
        return value


def _limit_string(value: str, name: str) -> str:
    if not value.strip():
        raise ValueError(f"sms.{name} needs a limit, e.g. '3/10 minutes'")
    try:
        limits.parse_many(value)
    except ValueError as exc:
        raise ValueError(f"sms.{name} is not in limits notation: {exc}") from exc
    return value


# Regions with geographic numbers (libphonenumber's, without "001", the non-geographic ones).
_PHONE_REGIONS = frozenset(phonenumbers.SUPPORTED_REGIONS)
# Calling codes that two large countries share on equal terms; any other code's main country is
# the one libphonenumber names first (44: GB, not Jersey, Guernsey or the Isle of Man).
_MAIN_REGIONS = {1: ("US", "CA"), 7: ("RU", "KZ")}


def _deprecated_calling_codes(codes: list[int], regions: list[str]) -> list[str]:
    """The regions the deprecated ``allowed_calling_codes`` stand for (their main countries
    only), added to ``regions``, with a warning that says which they are."""
    mapped: dict[int, tuple[str, ...]] = {}
    for code in codes:
        main = _MAIN_REGIONS.get(code) or (phonenumbers.region_code_for_country_code(code),)
        if not set(main) <= _PHONE_REGIONS:
            raise ValueError(
                f"sms.allowed_calling_codes: +{code} is no country's calling code (use "
                "sms.allowed_regions, region codes such as FR, GB, US)"
            )
        mapped[code] = main
    listed = "; ".join(f"+{code}: {', '.join(main)}" for code, main in mapped.items())
    warnings.warn(
        "sms.allowed_calling_codes (MFA_GUARD_SMS__ALLOWED_CALLING_CODES) is deprecated: set "
        "sms.allowed_regions (MFA_GUARD_SMS__ALLOWED_REGIONS) to region codes instead. Each "
        f"calling code now allows its main countries only ({listed}); the other countries "
        "that share a code (e.g. Jamaica +1 876, Jersey +44 7797) get no texts unless listed.",
        FutureWarning,
        stacklevel=2,
    )
    return sorted({*regions, *(region for main in mapped.values() for region in main)})


class SMSSettings(BaseModel):
    """SMS codes: off by default (NIST SP 800-63B 5.1.3.3 restricts them); heavily limited."""

    enabled: bool = Field(
        default=False,
        description="Offer SMS codes to users who have TOTP on and a verified mobile number.",
    )
    provider: Literal["console", "outbox", "twilio"] = Field(
        default="console",
        description="Where texts go when the app passes no provider: `console` (debug only: "
        "prints codes), `outbox` (tests, demo) or `twilio`.",
    )
    code_ttl_seconds: int = Field(
        default=600, description="How long an SMS code stays valid: 60 to 600 seconds."
    )
    allowed_regions: Annotated[list[str], NoDecode] = Field(
        default=[],
        description=(
            "Countries and territories whose mobile numbers may get texts, as ISO 3166 region "
            "codes, e.g. FR,GB,US,CA (required when enabled). By region, not calling code: "
            "`US` does not let in Jamaica (+1 876), nor `GB` Jersey (+44 7797)."
        ),
    )
    allowed_calling_codes: Annotated[list[int], NoDecode] = Field(
        default=[],
        description=(
            "Deprecated: use `allowed_regions`. Each calling code allows its main countries "
            "only (1: US, CA; 7: RU, KZ; any other: the one libphonenumber names first, e.g. "
            "44: GB), added to `allowed_regions`, with a warning at start-up."
        ),
    )
    per_user: str = Field(default="10/day", description="Texts per user (`limits` notation).")
    per_number: str = Field(
        default="3/10 minutes", description="Texts per phone number (`limits` notation)."
    )
    per_number_daily: str = Field(
        default="10/day",
        description=(
            "Texts per phone number per day, on top of `per_number` (whose 3 per 10 minutes "
            "alone would let 432 a day through)."
        ),
    )
    per_ip: str = Field(default="10/hour", description="Texts per client IP (`limits` notation).")
    resend_cooldown: str = Field(
        default="1/30 seconds", description="Texts per user in a burst: the resend cooldown."
    )
    global_hourly: str = Field(default="100/hour", description="Texts in all, per hour.")
    global_daily: str = Field(default="500/day", description="Texts in all, per day.")
    twilio_account_sid: str | None = Field(default=None, description="Twilio account SID.")
    twilio_auth_token: SecretStr | None = Field(default=None, description="Twilio auth token.")
    twilio_from_number: str | None = Field(
        default=None, description="Twilio sender number in E.164, or an alphanumeric sender ID."
    )
    twilio_messaging_service_sid: str | None = Field(
        default=None, description="Twilio messaging service (instead of a sender number)."
    )

    @field_validator("allowed_calling_codes", mode="before")
    @classmethod
    def _codes(cls, value: Any) -> Any:
        if isinstance(value, str):
            return [part.strip().lstrip("+") for part in value.split(",") if part.strip()]
        return value

    @field_validator("allowed_regions", mode="before")
    @classmethod
    def _region_list(cls, value: Any) -> Any:
        return _split_commas(value)

    @field_validator("allowed_regions")
    @classmethod
    def _regions(cls, value: list[str]) -> list[str]:
        regions = sorted({region.strip().upper() for region in value})
        unknown = [region for region in regions if region not in _PHONE_REGIONS]
        if unknown:
            raise ValueError(
                f"sms.allowed_regions: {', '.join(unknown)} is no country or territory with phone "
                "numbers; give ISO 3166 region codes such as FR, GB, US"
            )
        return regions

    @field_validator(
        "per_user",
        "per_number",
        "per_number_daily",
        "per_ip",
        "resend_cooldown",
        "global_hourly",
        "global_daily",
    )
    @classmethod
    def _limits(cls, value: str, info: ValidationInfo) -> str:
        return _limit_string(value, str(info.field_name))

    @model_validator(mode="after")
    def _safe(self) -> Self:
        if not 60 <= self.code_ttl_seconds <= 600:
            raise ValueError("sms.code_ttl_seconds must be between 60 and 600 (NIST: 10 minutes)")
        if self.allowed_calling_codes:
            self.allowed_regions = _deprecated_calling_codes(
                self.allowed_calling_codes, self.allowed_regions
            )
        if self.enabled and not self.allowed_regions:
            raise ValueError(
                "SMS is enabled with no country allow-list: set MFA_GUARD_SMS__ALLOWED_REGIONS "
                "(region codes, e.g. FR,GB) so texts cannot be pumped to premium ranges"
            )
        if self.provider == "twilio" and not (
            self.twilio_account_sid
            and self.twilio_auth_token
            and bool(self.twilio_from_number) != bool(self.twilio_messaging_service_sid)
        ):
            raise ValueError(
                "the twilio SMS provider needs MFA_GUARD_SMS__TWILIO_ACCOUNT_SID, "
                "MFA_GUARD_SMS__TWILIO_AUTH_TOKEN and one of MFA_GUARD_SMS__TWILIO_FROM_NUMBER "
                "or MFA_GUARD_SMS__TWILIO_MESSAGING_SERVICE_SID"
            )
        return self


class TrustedDeviceSettings(BaseModel):
    """ "Remember this browser": off by default; a remembered browser skips the challenge."""

    enabled: bool = Field(
        default=False,
        description=(
            'Offer "remember this browser" on the challenge: a random token in its own cookie, '
            "stored hashed, listed and revocable on the settings page and the API."
        ),
    )
    days: int = Field(
        default=30,
        ge=1,
        le=365,
        description=(
            "How long a remembered browser skips the challenge, in days from when it was "
            "remembered (not sliding)."
        ),
    )
    max_per_user: int = Field(
        default=10,
        ge=1,
        le=100,
        description=(
            "Remembered browsers kept per user; remembering one more forgets the least "
            "recently used."
        ),
    )
    cookie_name: str = Field(
        default="mfa_guard_device",
        pattern=r"^[A-Za-z0-9_-]{1,64}$",
        description="Name of the device cookie (letters, digits, `_` and `-`).",
    )
    cookie_secure: bool = Field(
        default=True,
        description=(
            "Send the device cookie over HTTPS only (`Secure`); turn it off only to try the kit "
            "on plain `http://`."
        ),
    )


class EveryoneSettings(BaseModel):
    """Two-factor authentication required of every account of the app, not of a site's members
    only: at once, or from a deadline (the same guarantees as site enforcement)."""

    required: bool = Field(
        default=False,
        description=(
            "Require 2FA of every account (not only of the members of enforcing sites): an "
            "account without it reaches only enrolment from `everyone.deadline` on (at once "
            "without one), and nobody can turn it off."
        ),
    )
    deadline: datetime | None = Field(
        default=None,
        description=(
            "From when `everyone.required` applies: an ISO 8601 date and time with its "
            "timezone (`2027-01-16T08:00:00Z`, `2027-01-16T09:00:00+01:00`); until then pages "
            "show a notice. Empty: at once. Needs `everyone.required`."
        ),
    )
    methods: Literal["any", "no_sms", "phishing_resistant"] = Field(
        default="any",
        description=(
            "Which second factors every account may use, from `everyone.deadline`: `any`; "
            "`no_sms` (a session verified by a texted code is challenged again); "
            "`phishing_resistant` (only a passkey or security key: a session verified "
            "otherwise is challenged again, and an account without one is confined to adding "
            "one). Needs `everyone.required` and passkeys on (`webauthn.rp_id`) for "
            "`phishing_resistant`."
        ),
    )

    @field_validator("deadline", mode="before")
    @classmethod
    def _iso_instant(cls, value: Any) -> Any:
        if isinstance(value, datetime):
            _check_aware(value, value.isoformat())
            return value
        if value is None or (isinstance(value, str) and not value.strip()):
            return None
        text = value.strip() if isinstance(value, str) else repr(value)
        try:
            moment = datetime.fromisoformat(text) if isinstance(value, str) else None
        except ValueError:
            moment = None
        if moment is None:
            raise ValueError(
                f"everyone.deadline {text} is not an ISO 8601 date and time with a timezone, "
                "e.g. 2027-01-16T08:00:00Z"
            )
        _check_aware(moment, text)
        return moment

    @model_validator(mode="after")
    def _deadline_needs_required(self) -> Self:
        if self.deadline is not None and not self.required:
            raise ValueError(
                "everyone.deadline is set but everyone.required is not: set "
                "MFA_GUARD_EVERYONE__REQUIRED=true to require 2FA of every account from that "
                "deadline, or remove MFA_GUARD_EVERYONE__DEADLINE"
            )
        if self.methods != "any" and not self.required:
            raise ValueError(
                f"everyone.methods is {self.methods} but everyone.required is not set: set "
                "MFA_GUARD_EVERYONE__REQUIRED=true, or remove MFA_GUARD_EVERYONE__METHODS"
            )
        return self

    def methods_from(self, methods: str) -> float | None:
        """From when every account is refused what ``methods`` (``no_sms``,
        ``phishing_resistant``) refuses, or ``None`` if never: the deadline of
        :meth:`required_from`, under a policy at least that strict."""
        if self.methods == "any" or (methods == "phishing_resistant" != self.methods):
            return None
        return self.required_from()

    def required_from(self) -> float | None:
        """From when every account must have 2FA (seconds since the epoch; 0.0 for "at once",
        as an enforcing site without a deadline), or ``None`` when it is not required."""
        if not self.required:
            return None
        return 0.0 if self.deadline is None else self.deadline.timestamp()


def _check_aware(moment: datetime, text: str) -> None:
    if moment.utcoffset() is None:
        raise ValueError(
            f"everyone.deadline {text} has no timezone, so the instant it names would depend on "
            "the server's: add one, e.g. 2027-01-16T08:00:00Z (UTC) or 2027-01-16T09:00:00+01:00"
        )


class SignOutSettings(BaseModel):
    """The app's own sign-out, offered on every kit page: a person asked for a code or sent to
    enrolment can always leave ("Not you? Sign out")."""

    url: str | None = Field(
        default=None,
        description=(
            "The app's sign-out: a local path (`/logout`, under `exempt_paths` so a person who "
            "has not passed the challenge reaches it) or an absolute `https://` URL (an "
            "identity provider's). Unset: the kit's pages show no sign-out."
        ),
    )
    method: Literal["get", "post"] = Field(
        default="post",
        description=(
            "How the pages reach it: `post`, a button in a form (what a sign-out that changes "
            "state should take; an app whose form needs a CSRF field passes "
            "`MFAGuard(sign_out_fields=...)`), or `get`, a link."
        ),
    )

    @field_validator("url")
    @classmethod
    def _url(cls, value: str | None) -> str | None:
        if value is None or not value.strip():
            return None
        value = value.strip()
        if safe_next(value, "") == value:
            return value  # a same-origin path
        parts = urlsplit(value)
        if (
            parts.scheme in ("https", "http")
            and parts.hostname
            and not any(ch.isspace() or ord(ch) < 0x20 or ch in "\\<>\"'" for ch in value)
        ):
            return value
        raise ValueError(
            f"sign_out.url {value!r} must be a local path starting with a single '/' (e.g. "
            "'/logout') or an absolute http(s):// URL"
        )


# One label of a host name (RFC 1123): letters, digits and inner hyphens, 1 to 63 of them.
_HOST_LABEL = re.compile(r"[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?")


def _ascii_form(host: str) -> str:
    """How to write ``host`` in ASCII (IDNA), as browsers do."""
    try:
        return f"write it as {host.encode('idna').decode('ascii')!r}"
    except UnicodeError:
        return "write an internationalised name in its ASCII (punycode) form"


def _rp_id_problem(value: str) -> str | None:
    """What is wrong with ``value`` as a WebAuthn RP ID, or ``None``."""
    example = "e.g. 'example.com' (or 'localhost' for development)"
    if "://" in value:
        return f"is a URL: give its host name alone, {example}"
    if value.strip("[]") != value or _is_ip_address(value):
        return (
            "is an IP address, which WebAuthn refuses as an RP ID: serve the pages on a host "
            f"name and give it, {example}"
        )
    if ":" in value or "/" in value or "?" in value or "#" in value or "@" in value:
        return f"must be a host name alone, without port, path or user: {example}"
    if not value.isascii():
        return f"must be ASCII: {_ascii_form(value)}"
    if value != value.lower():
        return f"must be lowercase: {value.lower()!r}"
    if value == "localhost":
        return None
    labels = value.split(".")
    if len(value) > 253 or not all(_HOST_LABEL.fullmatch(label) for label in labels):
        return (
            "is not a host name (labels of letters, digits and inner hyphens, 1 to 63 each, "
            f"separated by single dots, no trailing dot): {example}"
        )
    if len(labels) < 2:
        return (
            "is a single label, which could be a top-level domain: give the site's registrable "
            f"domain or a subdomain of it, {example}"
        )
    if labels[-1].isdigit():
        return f"ends with a numeric label, so it is no host name: {example}"
    return None


def _is_ip_address(value: str) -> bool:
    try:
        ipaddress.ip_address(value.strip("[]"))
    except ValueError:
        return False
    return True


def _origin_problem(origin: str, rp_id: str) -> str | None:
    """What is wrong with ``origin`` as an origin of WebAuthn pages whose RP ID is ``rp_id``."""
    parts = urlsplit(origin)
    try:
        port = parts.port
    except ValueError:
        return "has a port that is not a number from 1 to 65535"
    host = parts.hostname or ""
    if parts.scheme not in ("https", "http") or not host:
        return f"must look like https://{rp_id} or https://app.{rp_id}:8443"
    if parts.username is not None or parts.password is not None:
        return "must not carry a user name or password"
    if parts.path or parts.query or parts.fragment or origin.endswith(("?", "#")):
        return (
            f"must be an origin alone, without path, query or '/' at the end: "
            f"'{parts.scheme}://{parts.netloc}'"
        )
    if port == 0:
        return "has a port that is not a number from 1 to 65535"
    if (parts.scheme, port) in (("https", 443), ("http", 80)):
        return f"names its scheme's default port, which browsers leave out: drop ':{port}'"
    if not host.isascii():
        return f"must be ASCII: {_ascii_form(host)}"
    if parts.scheme == "http" and not (host == "localhost" == rp_id):
        return (
            "uses http://, which is no secure context, where browsers offer no WebAuthn: use "
            "https:// (http:// only as http://localhost[:port], with rp_id 'localhost')"
        )
    if host != rp_id and not host.endswith("." + rp_id):
        return (
            f"is not on the RP ID {rp_id!r}: its host must be {rp_id} or a subdomain of it "
            "(browsers refuse the ceremony otherwise)"
        )
    written = f"{parts.scheme}://{host}" + ("" if port is None else f":{port}")
    if origin != written:
        return f"is not written as browsers write an origin: {written!r}"
    return None


class WebAuthnSettings(BaseModel):
    """Passkeys and security keys (WebAuthn) as a second factor: off until ``rp_id`` is set."""

    rp_id: str | None = Field(
        default=None,
        description=(
            "The relying party ID: the host name passkeys are bound to, the site's registrable "
            "domain (`example.com`) or a subdomain of it, in lowercase, without scheme, port or "
            "path (`localhost` for development; no IP address). Every origin in `origins` must "
            "be on it. Changing it later orphans every registered passkey. Unset: passkeys and "
            "security keys are off."
        ),
    )
    rp_name: str | None = Field(
        default=None,
        description=(
            "The site's name as browsers and authenticators show it while registering a "
            "passkey. Unset: `issuer`."
        ),
    )
    origins: Annotated[list[str], NoDecode] = Field(
        default=[],
        description=(
            "The origins the pages that ask for a passkey are served from, comma-separated, "
            "exactly as a browser writes them: `https://host[:port]` whose host is `rp_id` or a "
            "subdomain of it, no path (`http://localhost[:port]` only with `rp_id` `localhost`). "
            "Required with `rp_id`: a response signed for any other origin is refused."
        ),
    )
    user_verification: Literal["preferred", "required", "discouraged"] = Field(
        default="preferred",
        description=(
            "Whether the authenticator checks who holds it (PIN, fingerprint, face): "
            "`required` refuses a key that did not (a security key without a PIN cannot be "
            "used), `preferred` asks for it where the key can, `discouraged` asks for a touch "
            "only (the password is the first factor)."
        ),
    )
    resident_key: Literal["preferred", "required", "discouraged"] = Field(
        default="preferred",
        description=(
            "Whether a new credential is stored on the authenticator as a discoverable "
            "credential (a passkey) or only on the server (`discouraged`, which spares the "
            "small storage of security keys); `required` refuses authenticators that cannot."
        ),
    )
    attestation: Literal["none", "direct"] = Field(
        default="none",
        description=(
            "`none`: ask no proof of the authenticator's make and model (no extra browser "
            "prompt). `direct`: ask for it; its signature is checked, but without the vendors' "
            "root certificates it proves nothing, and the kit admits every model either way."
        ),
    )
    challenge_seconds: int = Field(
        default=300,
        ge=30,
        le=600,
        description=(
            "How long a registration or sign-in challenge may be answered, in seconds; also "
            "the timeout browsers are given."
        ),
    )

    @field_validator("rp_id", "rp_name", mode="before")
    @classmethod
    def _empty_is_unset(cls, value: Any) -> Any:
        if isinstance(value, str):
            value = value.strip()
            return value or None
        return value

    @field_validator("origins", mode="before")
    @classmethod
    def _origin_list(cls, value: Any) -> Any:
        return _split_commas(value)

    @field_validator("rp_id")
    @classmethod
    def _rp_id(cls, value: str | None) -> str | None:
        if value is not None and (problem := _rp_id_problem(value)) is not None:
            raise ValueError(f"webauthn.rp_id {value!r} {problem}")
        return value

    @model_validator(mode="after")
    def _origins_on_the_rp_id(self) -> Self:
        if self.rp_id is None:
            if self.origins:
                raise ValueError(
                    "webauthn.origins is set but webauthn.rp_id is not: set "
                    "MFA_GUARD_WEBAUTHN__RP_ID to the host name passkeys are bound to (e.g. "
                    "example.com), or remove MFA_GUARD_WEBAUTHN__ORIGINS"
                )
            return self
        if not self.origins:
            raise ValueError(
                f"webauthn.rp_id is {self.rp_id!r} but webauthn.origins is empty: set "
                "MFA_GUARD_WEBAUTHN__ORIGINS to the origins the pages are served from, e.g. "
                f"https://{self.rp_id}"
            )
        origins: list[str] = []
        for origin in self.origins:
            # Browsers write the scheme and host in lowercase.
            scheme, sep, rest = origin.partition("://")
            normal = f"{scheme.lower()}{sep}{rest.lower()}" if sep else origin
            if (problem := _origin_problem(normal, self.rp_id)) is not None:
                raise ValueError(f"webauthn.origins: {origin!r} {problem}")
            if normal not in origins:
                origins.append(normal)
        self.origins = origins
        return self


class SecurityLogSettings(BaseModel):
    """The security log (``MFAGuard(event_store=...)``): how long its events are kept."""

    retention_days: int = Field(
        default=365,
        ge=1,
        le=3650,
        description=(
            "Days an event stays in the security log; `mfa-guard purge-events` removes older "
            "ones (run it daily)."
        ),
    )


class MFAGuardSettings(BaseSettings):
    """Every setting of the kit, read from ``MFA_GUARD_*`` environment variables (nested groups
    with ``__``: ``MFA_GUARD_SMS__ENABLED``) and the app's ``.env``, or passed as keywords.
    Values are checked as they are read: one that would be unsafe is refused with a message
    naming the setting. docs/configuration.md lists them all (generated from this class)."""

    model_config = SettingsConfigDict(
        env_prefix="MFA_GUARD_",
        populate_by_name=True,
        env_nested_delimiter="__",
        env_file=".env",
        extra="ignore",
    )

    issuer: str = Field(
        default="mfa_guard",
        description=(
            "Name shown in authenticator apps (label prefix and issuer parameter); not empty, "
            "no `:`."
        ),
    )
    totp: TOTPSettings = Field(default_factory=TOTPSettings)
    mount_path: str = Field(
        default="/mfa",
        description=(
            "Where the kit's pages and API are mounted. Starts with `/`, does not end with `/`, "
            "is not `/`; always exempt."
        ),
    )
    home_path: str = Field(
        default="/",
        description=(
            "Where a user lands after the challenge when no safe `next=` is given, and where the "
            "kit's pages send a signed-out visitor; a local path."
        ),
    )
    exempt_paths: Annotated[list[str], NoDecode] = Field(
        default=["/login", "/logout", "/static", "/health"],
        description=(
            "Path prefixes the middleware never guards. A prefix covers itself and everything "
            "under it (`/static` covers `/static/app.css`, not `/statically`); `/` is refused."
        ),
    )
    api_prefixes: Annotated[list[str], NoDecode] = Field(
        default=["/api"],
        description=(
            "Path prefixes answered with JSON errors instead of redirects; `/` answers JSON on "
            "every path (a JSON-only app). A request with `Authorization: Bearer` gets JSON "
            "anywhere."
        ),
    )
    verified_lifetime_seconds: int = Field(
        default=12 * 3600,
        description=(
            "Absolute lifetime of a verified second factor in one session, in seconds (at least "
            "60)."
        ),
    )
    recheck_seconds: int = Field(
        default=60,
        description=(
            "How long a session trusts its cached enrolment state before one store call "
            "re-checks it (0 = every request): how soon a change made elsewhere (a revocation, "
            "a site policy) reaches open sessions."
        ),
    )
    recent_mfa_seconds: int = Field(
        default=300,
        description=(
            "How recent a verification must be for new recovery codes, a new phone number of an "
            "enrolled user or a site policy change, and the default `max_age` of "
            "`require_recent_mfa`, in seconds (30 to `verified_lifetime_seconds`)."
        ),
    )
    max_grace_hours: int = Field(
        default=30 * 24,
        ge=0,
        le=366 * 24,
        description=(
            "The longest grace period a site owner may give members to turn on 2FA when the "
            "site starts enforcing it, in hours."
        ),
    )
    member_reset_cooldown_seconds: int = Field(
        default=3600,
        ge=0,
        le=7 * 24 * 3600,
        description=(
            "After a site owner resets a member's 2FA, how long before that member may be reset "
            "again, in seconds (shared by every worker through `storage_uri`)."
        ),
    )
    events: SecurityLogSettings = Field(default_factory=SecurityLogSettings)
    rate_limits: RateLimitSettings = Field(default_factory=RateLimitSettings)
    sms: SMSSettings = Field(default_factory=SMSSettings)
    trusted_devices: TrustedDeviceSettings = Field(default_factory=TrustedDeviceSettings)
    webauthn: WebAuthnSettings = Field(default_factory=WebAuthnSettings)
    require_phone_for_enrolment: bool = Field(
        default=False,
        description="Ask for a verified phone number before TOTP enrolment. Needs `sms.enabled`.",
    )
    languages: list[str] = Field(
        default=["en", "ar", "de", "es", "fr", "it", "ja", "nl", "pl", "pt_BR", "zh_CN"],
        description=(
            "Languages the HTML pages may speak: the app's choice for the user "
            "(`MFAGuard(language=...)`), else the best of the request's `Accept-Language`; "
            "English when none fits. These ship: `en`, `ar` (right to left), `de`, `es`, `fr`, "
            "`it`, `ja`, `nl`, `pl`, `pt_BR`, `zh_CN`."
        ),
    )
    trusted_proxies: Annotated[list[str], NoDecode] = Field(
        default=[],
        description=(
            "Proxy addresses (IPs or networks, e.g. `10.0.0.2,10.1.0.0/16`) whose "
            "`X-Forwarded-For` names the client IP (for the per-IP SMS limit and the audit "
            "events); from anyone else the header is ignored."
        ),
    )
    storage_uri: str = Field(
        default="memory://",
        description=(
            "Rate-limit storage in `limits` notation: `memory://`, or `redis://host:port/db` as "
            "soon as several processes serve the app."
        ),
    )
    storage_timeout: float = Field(
        default=STORAGE_TIMEOUT,
        gt=0,
        description=(
            "Seconds to wait for Redis, to connect and for each command's answer, before "
            "answering 503 (not retried); `socket_timeout` or `socket_connect_timeout` in "
            "`storage_uri` win."
        ),
    )
    database_url: str = Field(
        default="sqlite+aiosqlite:///mfa_guard.db",
        description=(
            "SQLAlchemy async URL of the SQL store (SQLite or PostgreSQL). `MFAGuard` does not "
            "read it: use `SQLStore.from_settings(settings)`; the CLI reads it."
        ),
    )
    database_auto_migrate: bool | None = Field(
        default=None,
        description=(
            "Whether the SQL adapters migrate tables an earlier release made to this release's "
            "on first use (an empty database is always created): unset, on SQLite only. Off, a "
            "database behind is refused until `mfa-guard migrate` is run (a deployment step), "
            "through `SQLStore.from_settings`."
        ),
    )
    database_pool_size: int = Field(
        default=5,
        ge=1,
        description=(
            "Connections the SQL store keeps open per worker process (PostgreSQL, through "
            "`SQLStore.from_settings`)."
        ),
    )
    database_max_overflow: int = Field(
        default=10,
        ge=0,
        description=(
            "Extra connections the SQL store may open under load (PostgreSQL, through "
            "`SQLStore.from_settings`)."
        ),
    )
    database_pool_timeout: float = Field(
        default=10.0,
        gt=0,
        description=(
            "Seconds to wait for a free connection before answering 503 (PostgreSQL, through "
            "`SQLStore.from_settings`)."
        ),
    )
    database_connect_timeout: float = Field(
        default=10.0,
        gt=0,
        description=(
            "Seconds to wait for a new connection to answer before answering 503 (PostgreSQL, "
            "through `SQLStore.from_settings`)."
        ),
    )
    database_statement_timeout: float = Field(
        default=10.0,
        gt=0,
        description=(
            "Seconds a statement waits for the server's answer before its connection is closed "
            "and the request answered 503, so that a database that stops answering cannot hold "
            "requests (PostgreSQL, through `SQLStore.from_settings`; not retried)."
        ),
    )
    workers: int = Field(
        default=1,
        ge=1,
        validation_alias=AliasChoices("MFA_GUARD_WORKERS", "WEB_CONCURRENCY"),
        description=(
            "Worker processes serving the app (also read from WEB_CONCURRENCY): more than one "
            "with per-process state (memory://, MemoryStore) logs a warning at start-up."
        ),
    )
    require_shared_state: bool = Field(
        default=False,
        description=(
            "Refuse to start with any per-process state (memory:// rate limits, an in-memory "
            "store): set it wherever several workers or hosts serve the app."
        ),
    )
    encryption_keys: Annotated[list[SecretStr], NoDecode] = Field(
        default=[],
        description=(
            "Fernet keys encrypting TOTP secrets at rest, newest first, comma-separated; "
            "older keys still decrypt (generate one with `mfa-guard keygen`); required unless "
            "`debug`."
        ),
    )
    trusted_origins: Annotated[list[str], NoDecode] = Field(
        default=[],
        description=(
            "Extra origins (`scheme://host[:port]`) allowed to post to the kit's routes, "
            "besides the request's own origin."
        ),
    )
    everyone: EveryoneSettings = Field(default_factory=EveryoneSettings)
    frame_ancestors: str = Field(
        default="'none'",
        description=(
            "Who may show the kit's pages in a frame, as CSP `frame-ancestors` sources: "
            "`'none'` (no one: the pages have one-click forms a framing site could trick a "
            "user into), `'self'`, or origins such as `https://app.example.com`, separated by "
            "spaces. Sent on every page as `Content-Security-Policy: frame-ancestors …`, with "
            "`X-Frame-Options: DENY` (`SAMEORIGIN` for `'self'` alone)."
        ),
    )
    debug: bool = Field(
        default=False,
        description=(
            "Development mode: runs without encryption keys on an ephemeral key (enrolments are "
            "unreadable after a restart) and allows the console SMS provider; never in "
            "production."
        ),
    )
    sign_out: SignOutSettings = Field(default_factory=SignOutSettings)

    _split = field_validator(
        "exempt_paths",
        "api_prefixes",
        "encryption_keys",
        "trusted_origins",
        "trusted_proxies",
        mode="before",
    )(_split_commas)

    @field_validator("frame_ancestors")
    @classmethod
    def _frame_ancestors(cls, value: str) -> str:
        sources = value.split(" ")
        if sources == ["'none'"]:
            return value
        for source in sources:
            if source != "'self'" and not _FRAME_SOURCE.fullmatch(source):
                raise ValueError(
                    f"frame_ancestors {value!r}: give `'none'`, or `'self'` and origins such as "
                    "`https://app.example.com`, separated by single spaces"
                )
        return value

    @field_validator("trusted_proxies")
    @classmethod
    def _proxies(cls, value: list[str]) -> list[str]:
        for proxy in value:
            try:
                ipaddress.ip_network(proxy, strict=False)
            except ValueError as exc:
                raise ValueError(
                    f"trusted proxy {proxy!r} is not an IP address or network"
                ) from exc
        return value

    @field_validator("issuer")
    @classmethod
    def _issuer(cls, value: str) -> str:
        value = value.strip()
        if not value or ":" in value:
            raise ValueError("issuer must be a non-empty name without ':' (Key Uri Format)")
        return value

    @field_validator("mount_path")
    @classmethod
    def _mount_path(cls, value: str) -> str:
        if not value.startswith("/") or value == "/" or value.endswith("/"):
            raise ValueError("mount_path must start with '/', not end with '/', and not be '/'")
        return value

    @field_validator("home_path")
    @classmethod
    def _home_path(cls, value: str) -> str:
        if not value.startswith("/") or value.startswith("//"):
            raise ValueError("home_path must be a local path starting with a single '/'")
        return value

    @field_validator("exempt_paths")
    @classmethod
    def _prefixes(cls, value: list[str]) -> list[str]:
        for prefix in value:
            if not prefix.startswith("/") or prefix == "/":
                raise ValueError(
                    f"path prefix {prefix!r} must start with '/' and not be '/' (that would "
                    "exempt or match every path)"
                )
        return [prefix.rstrip("/") for prefix in value]

    @field_validator("api_prefixes")
    @classmethod
    def _api_prefixes(cls, value: list[str]) -> list[str]:
        # "/" is allowed here: a JSON-only app answers JSON errors on every path.
        for prefix in value:
            if not prefix.startswith("/"):
                raise ValueError(f"API path prefix {prefix!r} must start with '/'")
        return [prefix.rstrip("/") or "/" for prefix in value]

    @field_validator("encryption_keys")
    @classmethod
    def _keys(cls, value: list[SecretStr]) -> list[SecretStr]:
        for index, key in enumerate(value):
            try:
                Fernet(key.get_secret_value())
            except (ValueError, TypeError) as exc:
                raise ValueError(
                    f"encryption key #{index + 1} is not a Fernet key (32 url-safe base64 bytes); "
                    "generate one with `mfa-guard keygen`"
                ) from exc
        return value

    @field_validator("trusted_origins")
    @classmethod
    def _origins(cls, value: list[str]) -> list[str]:
        for origin in value:
            if not origin.startswith(("https://", "http://")) or origin.count("/") != 2:
                raise ValueError(f"trusted origin {origin!r} must look like https://host[:port]")
        return [origin.lower() for origin in value]

    @model_validator(mode="after")
    def _safe_combination(self) -> Self:
        if not self.encryption_keys and not self.debug:
            raise ValueError(
                "no encryption key: set MFA_GUARD_ENCRYPTION_KEYS (generate one with "
                "`mfa-guard keygen`), or MFA_GUARD_DEBUG=true for development only"
            )
        if self.everyone.methods == "phishing_resistant" and self.webauthn.rp_id is None:
            raise ValueError(
                "everyone.methods is phishing_resistant but passkeys are off: set "
                "MFA_GUARD_WEBAUTHN__RP_ID and MFA_GUARD_WEBAUTHN__ORIGINS, or choose another "
                "MFA_GUARD_EVERYONE__METHODS"
            )
        if self.require_phone_for_enrolment and not self.sms.enabled:
            raise ValueError(
                "require_phone_for_enrolment needs SMS (MFA_GUARD_SMS__ENABLED=true) to verify "
                "phones"
            )
        if self.require_shared_state and self.storage_uri.startswith(("memory://", "async+memory")):
            raise ValueError(
                "MFA_GUARD_REQUIRE_SHARED_STATE is on but MFA_GUARD_STORAGE_URI is memory://: "
                "rate limits would hold per process only; use redis://host:6379/0"
            )
        if self.verified_lifetime_seconds < 60:
            raise ValueError("verified_lifetime_seconds must be at least 60")
        if not 0 <= self.recheck_seconds <= self.verified_lifetime_seconds:
            raise ValueError(
                "recheck_seconds must be between 0 and verified_lifetime_seconds: a revocation "
                "or policy change reaches open sessions only after this interval"
            )
        if not 30 <= self.recent_mfa_seconds <= self.verified_lifetime_seconds:
            raise ValueError("recent_mfa_seconds must be between 30 and verified_lifetime_seconds")
        sign_out = self.sign_out.url
        if sign_out is not None and sign_out.startswith("/"):
            path = urlsplit(sign_out).path
            if not any(_under(path, prefix) for prefix in self.exempt_paths):
                raise ValueError(
                    f"sign_out.url {sign_out!r} is not under exempt_paths: the kit would guard "
                    "it, so a person who has not passed the challenge could not sign out; add "
                    f"its path to MFA_GUARD_EXEMPT_PATHS (e.g. {path!r})"
                )
        return self

    def is_api_path(self, path: str) -> bool:
        return any(prefix == "/" or _under(path, prefix) for prefix in self.api_prefixes)


def _under(path: str, prefix: str) -> bool:
    return path == prefix or path.startswith(prefix + "/")
