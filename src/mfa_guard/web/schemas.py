"""The JSON API's bodies as pydantic models: what a request may send, what the API answers.

A request model reads a body as the API does: an absent field counts as ``null``, unknown fields
are ignored, the fields are checked in the order the API checks them and the first one refused
answers a ``400`` with the API's own code and message (``invalid_input``, ``invalid_method``).
A response model holds an answer's fields in the order the API writes them. Both generate the
components of the OpenAPI document (:mod:`mfa_guard.web.openapi`), with the limits the kit
enforces taken from its own constants and settings.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Annotated, Any, Literal, TypeVar, cast

from annotated_types import Le
from pydantic import (
    AwareDatetime,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainSerializer,
    ValidationError,
    ValidationInfo,
    ValidatorFunctionWrapHandler,
    WithJsonSchema,
    WrapValidator,
    create_model,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError
from starlette.datastructures import QueryParams
from starlette.requests import Request
from starlette.responses import JSONResponse

from mfa_guard.core import recovery, totp
from mfa_guard.core.sms import MAX_PHONE_LENGTH
from mfa_guard.enforcement import iso
from mfa_guard.errors import Reason, Refused
from mfa_guard.events import EventKind
from mfa_guard.security_log import DEFAULT_EVENTS_PER_PAGE
from mfa_guard.services import MAX_NAME, Method, clean_name
from mfa_guard.settings import MFAGuardSettings
from mfa_guard.stores.base import FactorKind
from mfa_guard.stores.events import MAX_EVENTS_PER_PAGE
from mfa_guard.stores.sites import MethodPolicy, Role
from mfa_guard.web.requests import MAX_BODY_BYTES, json_body

# The longest code any method's check reads (authenticator, texted and recovery codes): a
# longer one is refused before it reaches a check.
MAX_CODE_LENGTH = max(totp.MAX_CODE_LENGTH, recovery.MAX_INPUT_LENGTH)
DEFAULT_MAX_GRACE_HOURS: int = MFAGuardSettings.model_fields["max_grace_hours"].default

# -- Reading a request body ------------------------------------------------------------------


def _refused(reason: Reason, **params: str | int) -> PydanticCustomError:
    """A field's refusal as a validation error: :func:`read_body` raises it as it is."""
    return PydanticCustomError("refused", reason.code, {"reason": reason.name, "params": params})


def _field_name(info: ValidationInfo) -> str:
    return info.field_name or ""


def _text(value: Any, info: ValidationInfo) -> str:
    """A string field's value: absent or ``null`` is missing, anything else must be a string."""
    if value is None:
        raise _refused(Reason.FIELD_REQUIRED, field=_field_name(info))
    if not isinstance(value, str):
        raise _refused(Reason.FIELD_NOT_A_STRING, field=_field_name(info))
    return value


def _string(value: Any, handler: ValidatorFunctionWrapHandler, info: ValidationInfo) -> Any:
    text = _text(value, info)
    try:
        return handler(text)
    except ValidationError as exc:
        # A string's only other check here is its length.
        max_length = exc.errors()[0].get("ctx", {})["max_length"]
        raise _refused(
            Reason.FIELD_TOO_LONG, field=_field_name(info), max_length=max_length
        ) from None


def _method(value: Any, handler: ValidatorFunctionWrapHandler, info: ValidationInfo) -> Any:
    text = _text(value, info)
    try:
        return handler(text)
    except ValidationError:
        raise _refused(Reason.INVALID_METHOD) from None


# The methods a code is checked as (a passkey answers with an assertion, not a code).
CodeMethod = Literal[Method.TOTP, Method.RECOVERY, Method.SMS]


def _flag(value: Any, handler: ValidatorFunctionWrapHandler, info: ValidationInfo) -> Any:
    if not isinstance(value, bool):
        raise _refused(Reason.FIELD_NOT_A_BOOLEAN, field=_field_name(info))
    return handler(value)


CodeText = Annotated[
    str,
    Field(max_length=MAX_CODE_LENGTH, examples=["123456"]),
    WrapValidator(_string),
]
# Its length is checked with the rest of the number (400 invalid_phone, as a number that is not
# in international format), once SMS is known to be on: documented here, refused there.
PhoneText = Annotated[
    str,
    Field(json_schema_extra={"maxLength": MAX_PHONE_LENGTH}, examples=["+44 7400 123456"]),
    WrapValidator(_string),
]


def _name(value: Any, handler: ValidatorFunctionWrapHandler, info: ValidationInfo) -> Any:
    """A name the user gives: trimmed, 1 to :data:`MAX_NAME` characters, no control one."""
    text = _string(value, handler, info)
    name = clean_name(text)
    if name is None:
        raise _refused(Reason.INVALID_NAME, max_length=MAX_NAME)
    return name


def _object(value: Any, handler: ValidatorFunctionWrapHandler, info: ValidationInfo) -> Any:
    if value is None:
        raise _refused(Reason.FIELD_REQUIRED, field=_field_name(info))
    if not isinstance(value, dict):
        raise _refused(Reason.FIELD_NOT_AN_OBJECT, field=_field_name(info))
    return handler(value)


# The browser's answer of a WebAuthn ceremony, as credential.toJSON() gives it; checked by
# mfa_guard.core.webauthn, whatever it holds.
CredentialJSON = Annotated[
    dict[str, Any],
    Field(
        description="The PublicKeyCredential, as credential.toJSON() gives it (id, rawId, "
        "type, response, clientExtensionResults...).",
        json_schema_extra={"type": "object"},
    ),
    WrapValidator(_object),
]
NameText = Annotated[
    str,
    Field(max_length=MAX_NAME, examples=["YubiKey 5C", "Phone"]),
    WrapValidator(_name),
]
MethodChoice = Annotated[CodeMethod, WrapValidator(_method)]
Flag = Annotated[bool, WrapValidator(_flag)]


def _methods_policy(value: Any, handler: ValidatorFunctionWrapHandler, info: ValidationInfo) -> Any:
    if value is None:
        return MethodPolicy.ANY
    if isinstance(value, str):
        try:
            return handler(value)
        except ValidationError:
            pass
    raise _refused(Reason.INVALID_METHODS_POLICY)


MethodsChoice = Annotated[
    MethodPolicy,
    Field(
        description="The second factors members may use: any; no_sms (no texted code); "
        "phishing_resistant (a passkey or security key only). Other than any only with "
        "enforce. From now plus grace_hours; without grace_hours, phishing_resistant is "
        "refused (409 members_without_allowed_factor) while members lack a passkey or "
        "security key. The same methods again keep their deadline.",
    ),
    WrapValidator(_methods_policy),
]


def _grace_hours(max_hours: int) -> Any:
    """``grace_hours`` of a policy change: ``null``, or a number of hours up to ``max_hours``."""
    return Field(
        default=None,
        ge=0,
        le=max_hours,
        allow_inf_nan=False,
        description="Hours until members must have 2FA, or the new methods apply; 0 = at "
        "once. Without it, enforcing is refused (409 members_without_mfa) while members lack "
        "2FA, and phishing_resistant (409 members_without_allowed_factor) while they lack a "
        "passkey or security key.",
    )


class RequestBody(BaseModel):
    """A JSON request body."""

    model_config = ConfigDict(frozen=True)

    @model_validator(mode="before")
    @classmethod
    def _absent_is_null(cls, data: Any) -> Any:
        """A required field that is absent is refused as ``null`` is."""
        if not isinstance(data, dict):
            return data
        absent = {
            name: None
            for name, field in cls.model_fields.items()
            if field.is_required() and name not in data
        }
        return {**data, **absent}


class Empty(RequestBody):
    """Send {}: the body is ignored, but must be a JSON object."""


class Code(RequestBody):
    """A code: the authenticator app's first one (totp/confirm), or the texted one
    (phone/verify)."""

    code: CodeText


class NamedCode(Code):
    """The authenticator app's first code, and the name to list the app under (without one,
    "Authenticator app", numbered if taken)."""

    name: NameText | None = None


class PasskeyRegistration(RequestBody):
    """The browser's answer to the registration options, and the name to list the key under
    (without one, "Passkey" or "Security key", numbered if taken)."""

    credential: CredentialJSON
    name: NameText | None = None


class PasskeyAssertion(RequestBody):
    """The browser's answer to the sign-in options."""

    credential: CredentialJSON
    remember_device: Flag = Field(
        default=False,
        description="Remember this browser (trusted devices must be on: else 409 "
        "trusted_devices_disabled, before the answer is checked).",
    )


class Naming(RequestBody):
    """A new name for an authenticator."""

    name: NameText


class MethodCode(RequestBody):
    """A current code, and where it comes from."""

    method: MethodChoice = Method.TOTP
    code: CodeText


class Verification(MethodCode):
    """A current code to complete the second factor with."""

    remember_device: Flag = Field(
        default=False,
        description="Remember this browser (trusted devices must be on: else 409 "
        "trusted_devices_disabled, before the code is checked).",
    )


class Phone(RequestBody):
    """A mobile number in international format (spaces, dashes and a leading 00 accepted)."""

    phone: PhoneText


class PolicyChange(RequestBody):
    """Turn the site's enforcement on (at once, or after a grace period) or off, and choose
    the second factors it accepts."""

    enforce: Flag
    # Up to the settings' default max_grace_hours: policy_change() gives the app's own bound.
    grace_hours: float | None = _grace_hours(DEFAULT_MAX_GRACE_HOURS)
    methods: MethodsChoice = MethodPolicy.ANY

    @model_validator(mode="after")
    def _methods_need_enforcement(self) -> PolicyChange:
        if self.methods is not MethodPolicy.ANY and not self.enforce:
            raise _refused(Reason.METHODS_NEED_ENFORCEMENT)
        return self

    @field_validator("grace_hours", mode="wrap")
    @classmethod
    def _hours(cls, value: Any, handler: ValidatorFunctionWrapHandler) -> Any:
        if value is None:
            return None
        # Not true or false, though Python counts them as numbers.
        if not isinstance(value, bool) and isinstance(value, int | float):
            try:
                return handler(value)
            except ValidationError:
                pass
        bound = cls.model_fields["grace_hours"].metadata
        max_hours = cast(int, next(rule.le for rule in bound if isinstance(rule, Le)))
        raise _refused(Reason.GRACE_HOURS_OUT_OF_RANGE, max_hours=max_hours)


@functools.cache
def policy_change(max_grace_hours: int) -> type[PolicyChange]:
    """:class:`PolicyChange` for an app whose ``max_grace_hours`` is this."""
    if max_grace_hours == DEFAULT_MAX_GRACE_HOURS:
        return PolicyChange
    return create_model(
        "PolicyChange",
        __base__=PolicyChange,
        __doc__=PolicyChange.__doc__,
        __module__=__name__,
        grace_hours=(float | None, _grace_hours(max_grace_hours)),
    )


Body = TypeVar("Body", bound=RequestBody)


async def read_body(request: Request, model: type[Body], limit: int = MAX_BODY_BYTES) -> Body:
    """The request's JSON body (at most ``limit`` bytes) read into ``model``:
    :class:`~mfa_guard.errors.Refused` as :func:`json_body` raises it, or with the first field
    refused."""
    data = await json_body(request, limit)
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise refused(exc) from None


def refused(exc: ValidationError) -> Refused:
    """The refusal of the first field a body model refused."""
    refusal = exc.errors()[0]["ctx"]
    return Refused(Reason[refusal["reason"]], **refusal["params"])


# -- Reading a query (GET sites/{site}/events) ------------------------------------------------

# An instant as the API writes them (2026-11-27T20:45:00Z), or RFC 3339 with an offset and
# fractions of a second: checked by its shape first, then by datetime (month 13 is refused).
INSTANT_PATTERN = (
    r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{1,6})?(Z|[+-](?:[01]\d|2[0-3]):[0-5]\d)$"
)
_INSTANT = re.compile(INSTANT_PATTERN)
# The log's filters and its paging, as GET sites/{site}/events reads them.
EVENT_PARAMETERS = ("kind", "member", "since", "until", "cursor", "limit")
# An unknown parameter's name is said back up to this length.
MAX_PARAMETER_ECHO = 40
# A limit as a client writes it: a plain decimal number (no sign, no leading zero, no space).
_WHOLE_NUMBER = re.compile(r"[1-9][0-9]{0,5}")


@dataclass(frozen=True, slots=True)
class EventFilters:
    """What a reader of a site's log asked for (see :meth:`SiteService.events`)."""

    kinds: frozenset[EventKind] | None = None
    member: str | None = None
    since: float | None = None
    until: float | None = None
    cursor: str | None = None
    limit: int = DEFAULT_EVENTS_PER_PAGE


def event_filters(params: QueryParams, max_member: int) -> EventFilters:
    """The query of ``GET sites/{site}/events`` read, or :class:`~mfa_guard.errors.Refused`
    for the first parameter refused: an unknown one (a misspelt filter would answer the whole
    log), one given twice (but ``kind``), an unknown kind, a member id no directory can hold,
    an instant that is not one, a limit out of range. The cursor is the site service's to
    check (it holds the key)."""
    for name in params:
        if name not in EVENT_PARAMETERS:
            raise Refused(Reason.UNKNOWN_PARAMETER, name=name[:MAX_PARAMETER_ECHO])
    once: dict[str, str] = {}
    for name in EVENT_PARAMETERS[1:]:
        values = params.getlist(name)
        if len(values) > 1:
            raise Refused(Reason.REPEATED_PARAMETER, name=name)
        if values:
            once[name] = values[0]
    kinds = params.getlist("kind")
    known = {kind.value for kind in EventKind}
    if any(kind not in known for kind in kinds):
        raise Refused(Reason.INVALID_EVENT_KIND, kinds=", ".join(sorted(known)))
    member = once.get("member")
    if member is not None and not (0 < len(member) <= max_member and member.isprintable()):
        raise Refused(Reason.INVALID_EVENT_MEMBER, max_length=max_member)
    limit = once.get("limit")
    if limit is not None and (
        _WHOLE_NUMBER.fullmatch(limit) is None or int(limit) > MAX_EVENTS_PER_PAGE
    ):
        raise Refused(Reason.INVALID_EVENTS_LIMIT, max=MAX_EVENTS_PER_PAGE)
    return EventFilters(
        kinds=frozenset(EventKind(kind) for kind in kinds) if kinds else None,
        member=member,
        since=_instant(once, "since"),
        until=_instant(once, "until"),
        cursor=once.get("cursor"),
        limit=DEFAULT_EVENTS_PER_PAGE if limit is None else int(limit),
    )


def _instant(once: dict[str, str], name: str) -> float | None:
    """``once[name]`` as a timestamp: an ISO 8601 instant with its zone (``Z`` or an
    offset)."""
    text = once.get(name)
    if text is None:
        return None
    if _INSTANT.fullmatch(text) is not None:
        try:
            return datetime.fromisoformat(text).timestamp()
        except (ValueError, OverflowError):
            pass
    raise Refused(Reason.INVALID_INSTANT, name=name)


# -- Writing an answer -----------------------------------------------------------------------


def _from_timestamp(value: Any) -> Any:
    if isinstance(value, int | float) and not isinstance(value, bool):
        return datetime.fromtimestamp(value, UTC)
    return value


def _written(moment: datetime) -> str | None:
    return iso(moment.timestamp())


# An instant: given as a timestamp, written as iso() writes it (2026-11-27T20:45:00Z).
Instant = Annotated[
    AwareDatetime,
    BeforeValidator(_from_timestamp),
    PlainSerializer(_written),
    WithJsonSchema({"type": "string", "format": "date-time"}),
]
# How a session verified its second factor (mfa_guard.core.marker.METHODS).
VerifiedBy = Literal["totp", "recovery", "sms", "device", "webauthn"]


class ResponseBody(BaseModel):
    """A JSON answer of the API."""

    model_config = ConfigDict(frozen=True)


def json_response(
    body: ResponseBody, status_code: int = 200, *, retry_after: int | None = None
) -> JSONResponse:
    """``body`` as the API answers it: its fields in order, an optional one left out unless
    given, never stored by a cache."""
    headers = {"Cache-Control": "no-store"}
    if retry_after is not None:
        headers["Retry-After"] = str(retry_after)
    return JSONResponse(
        body.model_dump(mode="json", exclude_unset=True),
        status_code=status_code,
        headers=headers,
    )


class EnforcingSite(ResponseBody):
    """A site of the user that requires 2FA, and from when."""

    id: str
    name: str
    deadline: Instant | None


class Enforcement(ResponseBody):
    """Whether 2FA is required of the user, by what, and from when."""

    required: bool = Field(
        description="2FA is required of this user: by a site, or of every account."
    )
    everyone: bool = Field(
        description="The app requires 2FA of every account (MFA_GUARD_EVERYONE__*)."
    )
    deadline: Instant | None = Field(
        description="From when 2FA is required: the earliest of the sites' and the app-wide "
        "deadlines (maybe past); null when nothing requires it, or when it is required at once "
        "with no deadline."
    )
    sites: list[EnforcingSite]


class Authenticator(ResponseBody):
    """One second factor of the user: an authenticator app (``totp``) or a passkey or
    security key (``webauthn``)."""

    id: str
    kind: FactorKind
    name: str
    created_at: Instant
    last_used_at: Instant | None
    transports: list[str] = Field(
        default_factory=list,
        description="A passkey's or security key's ways to reach it (usb, nfc, ble, internal, "
        "hybrid), as the browser told them.",
    )
    backed_up: bool = Field(
        default=False, description="A passkey synced between the user's devices."
    )


class PasskeyOptions(ResponseBody):
    """The options for ``navigator.credentials.create`` (registration) or ``.get`` (sign-in),
    in their JSON form: pass ``publicKey`` to ``PublicKeyCredential.parseCreationOptionsFromJSON``
    or ``parseRequestOptionsFromJSON``. The challenge is this session's, used once, and expires
    with ``timeout``."""

    publicKey: dict[str, Any] = Field(json_schema_extra={"type": "object"})


class Authenticators(ResponseBody):
    """The user's second factors, oldest first."""

    authenticators: list[Authenticator]


class Removed(ResponseBody):
    """The authenticator is gone; ``enrolled`` says whether 2FA is still on (false: it was
    the last one)."""

    enrolled: bool


class Status(ResponseBody):
    """The signed-in user's second-factor state."""

    authenticated: Literal[True]
    enrolled: bool
    verified: bool
    verified_method: VerifiedBy | None
    methods: list[Method]
    authenticators: list[Authenticator]
    recovery_codes_left: int = Field(ge=0)
    enrolment_pending: bool
    phone: str | None = Field(description="The verified mobile number, masked.")
    phone_verified: bool
    enforcement: Enforcement


class Setup(ResponseBody):
    """A new authenticator key, its otpauth URI and its QR code (an SVG)."""

    secret: str = Field(pattern=r"^[A-Z2-7]+$")
    secret_grouped: str
    otpauth_uri: str = Field(pattern=r"^otpauth://totp/")
    qr_svg: str


class Enrolled(ResponseBody):
    """The authenticator is added and this session verified; with the user's first one, 2FA
    turned on and the recovery codes, shown this once (empty for another one)."""

    enrolled: Literal[True]
    verified: Literal[True]
    recovery_codes: list[str]
    authenticator: Authenticator


class Verified(ResponseBody):
    """This session completed its second factor."""

    verified: Literal[True]
    method: Method
    device_remembered: bool


class RecoveryCodes(ResponseBody):
    """The new recovery codes, shown this once."""

    recovery_codes: list[str]


class Disabled(ResponseBody):
    """2FA is off."""

    enrolled: Literal[False]


class SessionsRevoked(ResponseBody):
    """Every other session of the user verifies again at its next re-check."""

    other_sessions_revoked: Literal[True]


class TextSent(ResponseBody):
    """A code was texted to the number (masked); it expires in expires_in seconds."""

    sent: Literal[True]
    phone: str
    expires_in: int = Field(ge=0)


class PhoneVerified(ResponseBody):
    """The mobile number (masked) is verified."""

    phone: str | None
    phone_verified: Literal[True]


class Policy(ResponseBody):
    """Whether the site enforces 2FA, and from when; which second factors it accepts, and from
    when."""

    enforce: bool
    deadline: Instant | None
    methods: MethodPolicy = Field(
        description="any; no_sms (a session verified by a texted code is challenged again); "
        "phishing_resistant (only a passkey or security key)."
    )
    methods_deadline: Instant | None = Field(
        description="From when the methods apply; null for any, or when the site does not "
        "enforce 2FA."
    )
    changed_at: Instant | None
    changed_by: str | None = Field(default=None, description="Told to the site's owners only.")


class Site(ResponseBody):
    """A site and its policy."""

    id: str
    name: str
    policy: Policy


class Membership(Site):
    """A site of the user, and the user's role in it."""

    role: Role


class Sites(ResponseBody):
    """The user's sites."""

    sites: list[Membership]


class Member(ResponseBody):
    """A member of a site and their second factor."""

    user_id: str
    role: Role
    two_factor: bool
    method: Literal[Method.WEBAUTHN, Method.TOTP] | None = Field(
        description="The member's strongest kind of factor: webauthn (a passkey or security "
        "key), else totp."
    )
    factors: list[FactorKind] = Field(description="Every kind of factor the member has.")
    phone_verified: bool


class SiteMembers(Site):
    """A site and each member's 2FA status."""

    members: list[Member]


class MemberReset(ResponseBody):
    """A member's second factor was reset: every factor, recovery code, phone and remembered
    browser of theirs is gone, and each of their sessions verifies again (or enrols, where 2FA
    is required) at its next re-check."""

    user_id: str
    two_factor: Literal[False]
    devices_forgotten: int = Field(ge=0, description="Remembered browsers forgotten.")


class Device(ResponseBody):
    """A remembered browser."""

    id: str
    name: str = Field(examples=["Firefox on Ubuntu"])
    created_at: Instant
    last_used_at: Instant
    expires_at: Instant
    current: bool = Field(description="The browser making this request.")


class Devices(ResponseBody):
    """The user's remembered browsers still trusted, most recently used first."""

    devices: list[Device]


class Forgotten(ResponseBody):
    """How many remembered browsers were forgotten."""

    forgotten: int = Field(ge=0)


class LoggedEvent(ResponseBody):
    """One event of a site's security log."""

    id: int = Field(description="Grows with each event kept.")
    kind: EventKind
    at: Instant
    user: str = Field(
        description="Whom it happened to; for a site's own events (site_policy_changed, "
        "site_member_added, ...), who did it."
    )
    method: str | None = Field(
        description="The second factor concerned: totp, recovery, sms, webauthn, or device "
        "(a remembered browser)."
    )
    site: str | None = Field(description="The site, for a site's own events; null for a user's.")
    detail: str | None = Field(
        description="What changed, as the kit writes it (enforce=on deadline=…, member=… "
        "role=…, a remembered browser's name)."
    )
    ip: str | None = Field(description="The client's address, as the kit saw it.")
    browser: str | None = Field(
        description="The browser, named from its User-Agent (null when the event came with none).",
        examples=["Firefox on Ubuntu"],
    )


class SiteEvents(ResponseBody):
    """A page of a site's security log, newest first."""

    events: list[LoggedEvent]
    next_cursor: str | None = Field(
        description="Give it back as cursor for the next page; null on the last page."
    )


class ErrorDetail(ResponseBody):
    """What was refused, and why."""

    code: str = Field(description="Stable, for programs.")
    message: str = Field(description="For people.")
    members: list[Member] = Field(
        default_factory=list,
        description="With members_without_mfa: who lacks 2FA; with "
        "members_without_allowed_factor: who lacks a passkey or security key.",
    )


class Error(ResponseBody):
    """A refusal (its status says which kind; 429 and 503 come with Retry-After)."""

    error: ErrorDetail
