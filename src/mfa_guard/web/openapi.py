"""The OpenAPI 3.1 document of the JSON API, served at ``{mount}/api/openapi.json``.

Generated: its components are the JSON schemas of the request and response models
(:mod:`mfa_guard.web.schemas`), its paths come from :data:`OPERATIONS`, one row per operation,
and each operation's error responses from the refusal codes its row lists. Built for the
guard's options (site endpoints only with a site directory, device endpoints only with trusted
devices on), so it describes what this app answers; ``tests/web/test_openapi.py`` checks every
response of the suite's scenarios against it, and schemathesis fuzzes the live demo with it.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel
from pydantic.json_schema import JsonSchemaMode, models_json_schema

from mfa_guard.errors import Reason
from mfa_guard.events import EventKind
from mfa_guard.security_log import CURSOR_PATTERN, DEFAULT_EVENTS_PER_PAGE
from mfa_guard.settings import MFAGuardSettings
from mfa_guard.stores.events import MAX_EVENTS_PER_PAGE
from mfa_guard.version import __version__
from mfa_guard.web import schemas
from mfa_guard.web.flows import (
    MAX_AUTHENTICATOR_ID,
    MAX_DEVICE_ID,
    MAX_MEMBER_ID,
    MAX_SITE_ID,
)
from mfa_guard.web.requests import MAX_BODY_BYTES, MAX_WEBAUTHN_BODY_BYTES

if TYPE_CHECKING:
    from mfa_guard.web.context import Kit

JSON = "application/json"
Schema = dict[str, Any]
COMPONENT = "#/components/schemas/{model}"


# The refusals the API answers itself, outside services.Denied, with their status.
def refusal_status(code: str) -> int:
    """The status the API answers the refusal ``code`` with (from the refusal table)."""
    return _STATUS_OF_CODE[code]


_STATUS_OF_CODE = {reason.code: reason.status for reason in Reason}


# What any call may be refused with, then a change (same-origin only), then a change with a
# body, then one whose body has fields.
SIGNED_IN = ("not_authenticated", "service_unavailable")
CHANGE = (*SIGNED_IN, "cross_site_request")
BODY = (*CHANGE, "unsupported_media_type", "payload_too_large", "invalid_json")
FIELDS = (*BODY, "invalid_input")
CODE_REFUSED = ("invalid_code", "too_many_attempts", "locked_after_failures")

# What each status means in this API; the codes of the document's refusals follow.
_STATUS_MEANING = {
    400: "Bad input: invalid JSON, a missing, mistyped or too long field, a phone number "
    "refused, or a query parameter refused (a site log's filters, or its cursor)",
    401: "Nobody is signed in, or a second factor is needed first",
    403: "A cross-site request, or not allowed (strong_factor_required: a texted code cannot "
    "change the factors)",
    404: "No such site or remembered browser, or not a member of the site",
    409: "Conflicts with the current state",
    413: f"The body is over {MAX_BODY_BYTES} bytes ({MAX_WEBAUTHN_BODY_BYTES} for a passkey's "
    "answer)",
    415: "The body is not application/json",
    422: "The code is wrong or already used, or the passkey's answer does not hold",
    429: "Too many attempts or texts; Retry-After gives the seconds to wait "
    "(locked_after_failures: too many wrong codes in a row, this path is locked until a "
    "success on another one)",
    503: "A backing store or the SMS provider did not answer; Retry-After given",
}
_RETRY_AFTER: Schema = {
    "Retry-After": {
        "description": "Seconds to wait before trying again.",
        "schema": {"type": "integer", "minimum": 1},
    }
}

# The ways in the kit accepts: whatever sign-in the app has, carried by a cookie session or a
# bearer token (mfa_guard.tokens). Declared so that "Try it out" in Swagger UI sends them.
SECURITY_SCHEMES: dict[str, Schema] = {
    "SessionCookie": {
        "type": "apiKey",
        "in": "cookie",
        "name": "session",
        "description": "The app's session cookie (Starlette's SessionMiddleware names it "
        "`session` by default), after the app's own sign-in.",
    },
    "BearerToken": {
        "type": "http",
        "scheme": "bearer",
        "description": "A token the app or its authentication library issued, with a session "
        "of its own on the server (mfa_guard.tokens.TokenSessionMiddleware).",
    },
}
SECURITY: list[dict[str, list[str]]] = [{name: []} for name in SECURITY_SCHEMES]

RequestModel = type[schemas.RequestBody] | Callable[[MFAGuardSettings], type[schemas.RequestBody]]


def _always(kit: Kit) -> bool:
    return True


def _with_sites(kit: Kit) -> bool:
    return kit.sites is not None


def _with_site_log(kit: Kit) -> bool:
    return kit.sites is not None and kit.event_store is not None


def _with_devices(kit: Kit) -> bool:
    return kit.trusted_devices is not None


def _with_passkeys(kit: Kit) -> bool:
    return kit.service.relying_party is not None


def _policy_change(settings: MFAGuardSettings) -> type[schemas.RequestBody]:
    return schemas.policy_change(settings.max_grace_hours)


@dataclass(frozen=True, slots=True)
class Operation:
    """One operation of the JSON API, as the document describes it: its path under
    ``{mount}/api``, its answer (``None``: any JSON), the codes it may be refused with, its
    body, whether this app offers it, and its query parameters."""

    method: str
    path: str
    summary: str
    answer: type[schemas.ResponseBody] | None
    answered: str
    refusals: tuple[str, ...] = ()
    status: int = 200
    body: RequestModel | None = None
    offered: Callable[[Kit], bool] = _always
    public: bool = False
    # Its query parameters (OpenAPI parameter objects); the path's come from the path.
    query: Callable[[], list[Schema]] | None = None

    def body_model(self, settings: MFAGuardSettings) -> type[schemas.RequestBody] | None:
        if self.body is None or isinstance(self.body, type):
            return self.body
        return self.body(settings)


def _query(name: str, schema: Schema, description: str) -> Schema:
    return {
        "name": name,
        "in": "query",
        "required": False,
        "schema": schema,
        "description": description,
    }


def _event_query() -> list[Schema]:
    """GET sites/{site}/events' parameters, as :func:`mfa_guard.web.schemas.event_filters`
    reads them: any other is refused (400), as is one of these given twice (but ``kind``)."""
    return [
        {
            **_query(
                "kind",
                {
                    "type": "array",
                    "items": {"type": "string", "enum": [k.value for k in EventKind]},
                },
                "Only events of these kinds (repeat it: kind=verified&kind=locked_out).",
            ),
            "style": "form",
            "explode": True,
        },
        _query(
            "member",
            {
                "type": "string",
                "minLength": 1,
                "maxLength": MAX_MEMBER_ID,
                "pattern": r"^[^\x00-\x1f\x7f]+$",
            },
            "Only the events of this user (their user id; for a site's own events, who did it).",
        ),
        _query(
            "since",
            {"type": "string", "format": "date-time", "pattern": schemas.INSTANT_PATTERN},
            "Only events at or after this instant (2026-11-27T20:45:00Z, or with an offset).",
        ),
        _query(
            "until",
            {"type": "string", "format": "date-time", "pattern": schemas.INSTANT_PATTERN},
            "Only events before this instant.",
        ),
        _query(
            "cursor",
            {"type": "string", "pattern": CURSOR_PATTERN},
            "The next_cursor of the page before (400 invalid_cursor for one this site's log did "
            "not give).",
        ),
        _query(
            "limit",
            {
                "type": "integer",
                "minimum": 1,
                "maximum": MAX_EVENTS_PER_PAGE,
                "default": DEFAULT_EVENTS_PER_PAGE,
            },
            "How many events at most.",
        ),
    ]


OPERATIONS = (
    Operation(
        "get",
        "/status",
        "The signed-in user's second-factor state",
        schemas.Status,
        "The state",
        SIGNED_IN,
    ),
    Operation(
        "post",
        "/totp/setup",
        "Start setting up an authenticator app (another one needs a recent verification): a new "
        "key and its QR code",
        schemas.Setup,
        "The key, its otpauth URI and an SVG QR code",
        (
            *BODY,
            "phone_required",
            "mfa_reauthentication_required",
            "strong_factor_required",
            "passkey_required",
        ),
        body=schemas.Empty,
    ),
    Operation(
        "post",
        "/totp/confirm",
        "Add the app set up with its first code; the first one turns 2FA on and returns the "
        "recovery codes once",
        schemas.Enrolled,
        "The app is added and this session verified",
        (
            *FIELDS,
            *CODE_REFUSED,
            "no_pending_enrolment",
            "conflict",
            "mfa_reauthentication_required",
            "strong_factor_required",
            "passkey_required",
        ),
        body=schemas.NamedCode,
    ),
    Operation(
        "post",
        "/verify",
        "Complete the second factor for this session",
        schemas.Verified,
        "This session is verified",
        (
            *FIELDS,
            "invalid_method",
            "trusted_devices_disabled",
            *CODE_REFUSED,
            "code_already_used",
            "not_enrolled",
            "sms_disabled",
            "sms_refused_by_policy",
            "no_verified_phone",
        ),
        body=schemas.Verification,
    ),
    Operation(
        "post",
        "/recovery-codes",
        "Replace the recovery codes (needs a recent verification)",
        schemas.RecoveryCodes,
        "The new codes, shown once",
        (*BODY, "not_enrolled", "mfa_reauthentication_required", "strong_factor_required"),
        body=schemas.Empty,
    ),
    Operation(
        "post",
        "/disable",
        "Turn 2FA off with a current code",
        schemas.Disabled,
        "2FA is off",
        (
            *FIELDS,
            "invalid_method",
            "mfa_required",
            "strong_factor_required",
            "mfa_required_for_everyone",
            "mfa_enforced_by_site",
            *CODE_REFUSED,
            "code_already_used",
            "not_enrolled",
        ),
        body=schemas.MethodCode,
    ),
    Operation(
        "post",
        "/sessions/revoke",
        "Sign out every other session of the user from its verified second factor",
        schemas.SessionsRevoked,
        "Every other session verifies again at its next re-check",
        (*BODY, "mfa_required", "not_enrolled"),
        body=schemas.Empty,
    ),
    Operation(
        "post",
        "/phone",
        "Register a mobile number: a code is texted to it",
        schemas.TextSent,
        "A code was texted",
        (
            *FIELDS,
            "mfa_reauthentication_required",
            "strong_factor_required",
            "sms_disabled",
            "invalid_phone",
            "not_a_mobile",
            "phone_country_not_allowed",
            "too_many_texts",
            "sms_unavailable",
        ),
        status=202,
        body=schemas.Phone,
    ),
    Operation(
        "post",
        "/phone/verify",
        "Verify the mobile number with the texted code",
        schemas.PhoneVerified,
        "The number is verified",
        (*FIELDS, "mfa_required", "sms_disabled", *CODE_REFUSED, "conflict"),
        body=schemas.Code,
    ),
    Operation(
        "post",
        "/sms/send",
        "Text a sign-in code to the verified number",
        schemas.TextSent,
        "A code was texted",
        (
            *BODY,
            "sms_disabled",
            "sms_refused_by_policy",
            "not_enrolled",
            "no_verified_phone",
            "sms_country_not_allowed",
            "too_many_texts",
            "sms_unavailable",
        ),
        status=202,
        body=schemas.Empty,
    ),
    Operation(
        "get",
        "/sites",
        "The signed-in user's sites, roles and policies",
        schemas.Sites,
        "The sites",
        (*SIGNED_IN, "mfa_required"),
        offered=_with_sites,
    ),
    Operation(
        "get",
        "/sites/{site}/members",
        "Each member and their 2FA status (owners only)",
        schemas.SiteMembers,
        "The site and its members",
        (*SIGNED_IN, "site_not_found", "mfa_required", "not_site_owner"),
        offered=_with_sites,
    ),
    Operation(
        "get",
        "/sites/{site}/events",
        "The site's security log, newest first: its own events and its members' sign-ins, "
        "failures, lock-outs and factors (owners only)",
        schemas.SiteEvents,
        "A page of events, and the cursor of the next one",
        (
            *SIGNED_IN,
            "invalid_input",
            "invalid_cursor",
            "site_not_found",
            "mfa_required",
            "not_site_owner",
        ),
        offered=_with_site_log,
        query=_event_query,
    ),
    Operation(
        "put",
        "/sites/{site}/policy",
        "Turn enforcement on (at once or after a grace period) or off, and choose the second "
        "factors the site accepts (owners only)",
        schemas.Site,
        "The site with its new policy",
        (
            *FIELDS,
            "site_not_found",
            "not_site_owner",
            "verified_mfa_required",
            "mfa_reauthentication_required",
            "passkeys_disabled",
            "members_without_mfa",
            "members_without_allowed_factor",
        ),
        body=_policy_change,
        offered=_with_sites,
    ),
    Operation(
        "post",
        "/sites/{site}/members/{member}/reset",
        "Reset a member's second factor: they lost their phone (owners only, after a recent "
        "verification; not for a member of a site the owner does not own)",
        schemas.MemberReset,
        "Their factors, recovery codes, phone and remembered browsers are gone",
        (
            *BODY,
            "site_not_found",
            "not_site_owner",
            "mfa_required",
            "member_not_found",
            "cannot_reset_self",
            "verified_mfa_required",
            "mfa_reauthentication_required",
            "member_of_other_sites",
            "nothing_to_reset",
            "reset_cooldown",
        ),
        body=schemas.Empty,
        offered=_with_sites,
    ),
    Operation(
        "post",
        "/webauthn/register/options",
        "Start registering a passkey or security key (another factor needs a recent "
        "verification): the options for navigator.credentials.create",
        schemas.PasskeyOptions,
        "The options, with this session's challenge",
        (
            *BODY,
            "phone_required",
            "mfa_reauthentication_required",
            "strong_factor_required",
            "passkey_required",
        ),
        body=schemas.Empty,
        offered=_with_passkeys,
    ),
    Operation(
        "post",
        "/webauthn/register",
        "Add the passkey or security key of the browser's answer; the first factor turns 2FA "
        "on and returns the recovery codes once",
        schemas.Enrolled,
        "The key is added and this session verified",
        (
            *FIELDS,
            "too_many_attempts",
            "locked_after_failures",
            "webauthn_rejected",
            "webauthn_challenge_expired",
            "authenticator_already_registered",
            "conflict",
            "mfa_reauthentication_required",
            "strong_factor_required",
            "passkey_required",
        ),
        body=schemas.PasskeyRegistration,
        offered=_with_passkeys,
    ),
    Operation(
        "post",
        "/webauthn/authenticate/options",
        "Start a sign-in with a passkey or security key: the options for navigator.credentials.get",
        schemas.PasskeyOptions,
        "The options, with this session's challenge",
        (*BODY, "no_passkey"),
        body=schemas.Empty,
        offered=_with_passkeys,
    ),
    Operation(
        "post",
        "/webauthn/authenticate",
        "Complete the second factor for this session with a passkey or security key",
        schemas.Verified,
        "This session is verified",
        (
            *FIELDS,
            "trusted_devices_disabled",
            "too_many_attempts",
            "locked_after_failures",
            "not_enrolled",
            "webauthn_rejected",
            "webauthn_challenge_expired",
            "webauthn_counter_regressed",
        ),
        body=schemas.PasskeyAssertion,
        offered=_with_passkeys,
    ),
    Operation(
        "get",
        "/authenticators",
        "The user's second factors: authenticator apps, passkeys and security keys",
        schemas.Authenticators,
        "The authenticators, oldest first",
        (*SIGNED_IN, "mfa_required"),
    ),
    Operation(
        "patch",
        "/authenticators/{authenticator}",
        "Rename one of the user's authenticators (needs a recent verification)",
        schemas.Authenticator,
        "The authenticator, renamed",
        (
            *FIELDS,
            "mfa_reauthentication_required",
            "strong_factor_required",
            "passkey_required",
            "authenticator_not_found",
        ),
        body=schemas.Naming,
    ),
    Operation(
        "delete",
        "/authenticators/{authenticator}",
        "Remove one of the user's authenticators (needs a recent verification); the last one "
        "turns 2FA off, unless the app or a site requires it",
        schemas.Removed,
        "It was removed; every other session verifies again",
        (
            *CHANGE,
            "mfa_reauthentication_required",
            "strong_factor_required",
            "passkey_required",
            "authenticator_not_found",
            "mfa_required_for_everyone",
            "mfa_enforced_by_site",
            "conflict",
        ),
    ),
    Operation(
        "get",
        "/devices",
        "The user's remembered browsers, most recently used first",
        schemas.Devices,
        "The remembered browsers still trusted",
        (*SIGNED_IN, "mfa_required"),
        offered=_with_devices,
    ),
    Operation(
        "delete",
        "/devices",
        "Forget every remembered browser of the user",
        schemas.Forgotten,
        "How many were forgotten",
        (*CHANGE, "mfa_required"),
        offered=_with_devices,
    ),
    Operation(
        "delete",
        "/devices/{device}",
        "Forget one remembered browser",
        schemas.Forgotten,
        "It was forgotten (1)",
        (*CHANGE, "mfa_required", "device_not_found"),
        offered=_with_devices,
    ),
    Operation("get", "/openapi.json", "This document", None, "OpenAPI 3.1", public=True),
)


def _path_parameters(path: str) -> list[Schema]:
    """The path's parameters: ids no store can hold are refused as unknown ones (404)."""
    described = {
        "site": (MAX_SITE_ID, "The site's id (no slash, no control character)."),
        "member": (MAX_MEMBER_ID, "The member's user id (no slash, no control character)."),
        "device": (
            MAX_DEVICE_ID,
            "The device's id (from GET devices; no slash, no control character).",
        ),
        "authenticator": (
            MAX_AUTHENTICATOR_ID,
            "The authenticator's id (from GET authenticators; no slash, no control character).",
        ),
    }
    parameters = []
    for name in re.findall(r"{(\w+)}", path):
        max_length, description = described[name]
        schema = {
            "type": "string",
            "minLength": 1,
            "maxLength": max_length,
            "pattern": r"^[^\x00-\x1f/]+$",
        }
        parameters.append(
            {
                "name": name,
                "in": "path",
                "required": True,
                "schema": schema,
                "description": description,
            }
        )
    return parameters


def _content(model: type[schemas.RequestBody | schemas.ResponseBody] | None) -> Schema:
    schema = {} if model is None else {"$ref": COMPONENT.format(model=model.__name__)}
    return {JSON: {"schema": schema}}


def _refusals(codes: Iterable[str]) -> dict[int, list[str]]:
    """``codes`` by status, in order, each once."""
    by_status: dict[int, list[str]] = {}
    for code in dict.fromkeys(codes):
        by_status.setdefault(refusal_status(code), []).append(code)
    return dict(sorted(by_status.items()))


def _operation(operation: Operation, body: type[schemas.RequestBody] | None) -> Schema:
    responses: Schema = {
        str(operation.status): {
            "description": operation.answered,
            "content": _content(operation.answer),
        }
    }
    refusals = _refusals(operation.refusals)
    for status in refusals:
        responses[str(status)] = {"$ref": f"#/components/responses/E{status}"}
    described: Schema = {"summary": operation.summary}
    if refusals:
        described["description"] = "Refusals: " + "; ".join(
            f"{status} {', '.join(codes)}" for status, codes in refusals.items()
        )
    described["responses"] = responses
    if not operation.public:
        described["security"] = [dict(requirement) for requirement in SECURITY]
    if body is not None:
        described["requestBody"] = {"required": True, "content": _content(body)}
    query = [] if operation.query is None else operation.query()
    if parameters := [*_path_parameters(operation.path), *query]:
        described["parameters"] = parameters
    return described


def _components(models: Iterable[tuple[type[BaseModel], JsonSchemaMode]]) -> dict[str, Schema]:
    """The JSON schemas of ``models`` and of every model they hold, by name."""
    _, top = models_json_schema(list(dict.fromkeys(models)), ref_template=COMPONENT)
    components: dict[str, Schema] = top["$defs"]
    return components


def document(kit: Kit) -> dict[str, Any]:
    """The OpenAPI 3.1 document for this kit's JSON API (paths include the mount path)."""
    api = kit.settings.mount_path + "/api"
    offered = [operation for operation in OPERATIONS if operation.offered(kit)]
    bodies = {operation: operation.body_model(kit.settings) for operation in offered}
    paths: dict[str, Schema] = {}
    for operation in offered:
        item = paths.setdefault(api + operation.path, {})
        item[operation.method] = _operation(operation, bodies[operation])
    models: list[tuple[type[BaseModel], JsonSchemaMode]] = [
        (body, "validation") for body in bodies.values() if body is not None
    ]
    models += [(operation.answer, "serialization") for operation in offered if operation.answer]
    components = _components([*models, (schemas.Error, "serialization")])
    refusals = _refusals(code for operation in offered for code in operation.refusals)
    return {
        "openapi": "3.1.0",
        "info": {
            "title": f"mfa_guard API ({kit.settings.issuer})",
            "version": __version__,
            "description": "Two-factor authentication: enrolment, verification, SMS, recovery "
            "codes and site enforcement. Every request needs the app's own sign-in (its session "
            "cookie, or a bearer token with its session on the server, or whatever "
            "authentication the app accepts). State-changing requests from browsers must be "
            "same-origin. Errors are "
            '{"error": {"code", "message"}}.',
        },
        "paths": paths,
        "components": {
            "schemas": components,
            "securitySchemes": SECURITY_SCHEMES,
            "responses": {
                f"E{status}": _error_response(status, codes) for status, codes in refusals.items()
            },
        },
    }


def _error_response(status: int, codes: list[str]) -> Schema:
    response: Schema = {
        "description": f"{_STATUS_MEANING[status]}. Codes: {', '.join(codes)}.",
        "content": _content(schemas.Error),
    }
    if status in (429, 503):
        response["headers"] = _RETRY_AFTER
    return response
