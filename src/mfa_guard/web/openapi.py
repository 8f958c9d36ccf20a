"""The OpenAPI 3.1 document of the JSON API, served at ``{mount}/api/openapi.json``.

Built from the settings and the guard's options (site endpoints only with a site directory), so
it describes what this app answers; ``tests/test_openapi.py`` checks every response of the suite's
scenarios against it, and schemathesis fuzzes the live demo with it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from mfa_guard.version import __version__

if TYPE_CHECKING:
    from mfa_guard.web.context import Kit

JSON = "application/json"
Schema = dict[str, Any]

_NULLABLE_STRING: Schema = {"type": ["string", "null"]}
_INSTANT: Schema = {"type": ["string", "null"], "format": "date-time"}


def _object(properties: dict[str, Schema], *, required: list[str] | None = None) -> Schema:
    return {
        "type": "object",
        "properties": properties,
        "required": list(properties) if required is None else required,
    }


SCHEMAS: dict[str, Schema] = {
    "Error": _object(
        {
            "error": {
                "type": "object",
                "properties": {
                    "code": {"type": "string", "description": "Stable, for programs."},
                    "message": {"type": "string", "description": "For people."},
                    "members": {
                        "type": "array",
                        "items": {"$ref": "#/components/schemas/Member"},
                        "description": "With members_without_mfa: who lacks 2FA.",
                    },
                },
                "required": ["code", "message"],
            }
        }
    ),
    "Enforcement": _object(
        {
            "required": {
                "type": "boolean",
                "description": "2FA is required of this user: by a site, or of every account.",
            },
            "everyone": {
                "type": "boolean",
                "description": "The app requires 2FA of every account (MFA_GUARD_EVERYONE__*).",
            },
            "deadline": {
                **_INSTANT,
                "description": "From when 2FA is required: the earliest of the sites' and the "
                "app-wide deadlines (maybe past); null when nothing requires it, or when it is "
                "required at once with no deadline.",
            },
            "sites": {
                "type": "array",
                "items": _object(
                    {"id": {"type": "string"}, "name": {"type": "string"}, "deadline": _INSTANT}
                ),
            },
        }
    ),
    "Status": _object(
        {
            "authenticated": {"const": True},
            "enrolled": {"type": "boolean"},
            "verified": {"type": "boolean"},
            "verified_method": {"enum": ["totp", "recovery", "sms", "device", None]},
            "methods": {
                "type": "array",
                "items": {"enum": ["totp", "recovery", "sms"]},
            },
            "recovery_codes_left": {"type": "integer", "minimum": 0},
            "enrolment_pending": {"type": "boolean"},
            "phone": _NULLABLE_STRING,
            "phone_verified": {"type": "boolean"},
            "enforcement": {"$ref": "#/components/schemas/Enforcement"},
        }
    ),
    "Setup": _object(
        {
            "secret": {"type": "string", "pattern": "^[A-Z2-7]+$"},
            "secret_grouped": {"type": "string"},
            "otpauth_uri": {"type": "string", "pattern": "^otpauth://totp/"},
            "qr_svg": {"type": "string"},
        }
    ),
    "Empty": {"type": "object", "description": "Send {}: the body is ignored, but must be JSON."},
    "Code": _object(
        {"code": {"type": "string", "maxLength": 64, "examples": ["123456"]}},
    ),
    "MethodCode": _object(
        {
            "method": {"enum": ["totp", "recovery", "sms"], "default": "totp"},
            "code": {"type": "string", "maxLength": 64},
            "remember_device": {
                "type": "boolean",
                "default": False,
                "description": "Remember this browser (trusted devices must be on: else 409 "
                "trusted_devices_disabled, before the code is checked).",
            },
        },
        required=["code"],
    ),
    "Device": _object(
        {
            "id": {"type": "string"},
            "name": {"type": "string", "examples": ["Firefox on Ubuntu"]},
            "created_at": _INSTANT,
            "last_used_at": _INSTANT,
            "expires_at": _INSTANT,
            "current": {"type": "boolean", "description": "The browser making this request."},
        }
    ),
    "Forgotten": _object({"forgotten": {"type": "integer", "minimum": 0}}),
    "Phone": _object({"phone": {"type": "string", "examples": ["+44 7400 123456"]}}),
    "TextSent": _object(
        {
            "sent": {"const": True},
            "phone": {"type": "string"},
            "expires_in": {"type": "integer", "minimum": 0},
        }
    ),
    "RecoveryCodes": _object(
        {"recovery_codes": {"type": "array", "items": {"type": "string"}}},
    ),
    "Policy": _object(
        {
            "enforce": {"type": "boolean"},
            "deadline": _INSTANT,
            "changed_at": _INSTANT,
            "changed_by": _NULLABLE_STRING,
        },
        required=["enforce", "deadline", "changed_at"],
    ),
    "Site": _object(
        {
            "id": {"type": "string"},
            "name": {"type": "string"},
            "policy": {"$ref": "#/components/schemas/Policy"},
        }
    ),
    "Member": _object(
        {
            "user_id": {"type": "string"},
            "role": {"enum": ["owner", "operator"]},
            "two_factor": {"type": "boolean"},
            "method": {"enum": ["totp", None]},
            "phone_verified": {"type": "boolean"},
        }
    ),
    "PolicyChange": _object(
        {
            "enforce": {"type": "boolean"},
            "grace_hours": {
                "type": "number",
                "minimum": 0,
                "description": "Hours until members must have 2FA; 0 = at once. Without it, "
                "enforcing is refused (409) while members lack 2FA.",
            },
        },
        required=["enforce"],
    ),
}

# What each status means in this API; an operation lists the ones it can answer.
_ERRORS = {
    "400": "Bad input: invalid JSON, a missing or mistyped field (invalid_json, invalid_input, "
    "invalid_method), or a phone number refused (invalid_phone, not_a_mobile, …).",
    "401": "Nobody is signed in (not_authenticated), or a second factor is needed first "
    "(mfa_required, mfa_reauthentication_required).",
    "403": "A cross-site request (cross_site_request), or not allowed (not_site_owner, "
    "verified_mfa_required; strong_factor_required: a texted code cannot change the factors).",
    "404": "No such site, or not a member of it (site_not_found); no such remembered browser "
    "(device_not_found).",
    "409": "Conflicts with the current state (already_enrolled, not_enrolled, "
    "mfa_enforced_by_site, mfa_required_for_everyone, members_without_mfa, "
    "no_pending_enrolment, sms_disabled, trusted_devices_disabled, …).",
    "413": "The body is over 4096 bytes (payload_too_large).",
    "415": "The body is not application/json (unsupported_media_type).",
    "422": "The code is wrong or already used (invalid_code, code_already_used).",
    "429": "Too many attempts or texts (too_many_attempts, too_many_texts); Retry-After gives the "
    "seconds to wait. locked_after_failures: too many wrong codes in a row, this path is locked "
    "until a success on another one.",
    "503": "A backing store did not answer (service_unavailable, sms_unavailable); "
    "Retry-After given.",
}
_BODY_ERRORS = ["400", "401", "403", "413", "415", "503"]

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


def _ok(status: str, schema: str, description: str) -> dict[str, Any]:
    return {
        status: {
            "description": description,
            "content": {JSON: {"schema": {"$ref": f"#/components/schemas/{schema}"}}},
        }
    }


def _operation(
    summary: str,
    ok: dict[str, Any],
    errors: list[str],
    *,
    body: str | None = None,
    body_required: bool = False,
    parameters: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    responses = dict(ok)
    for status in sorted(set(errors)):
        responses[status] = {"$ref": f"#/components/responses/E{status}"}
    operation: dict[str, Any] = {
        "summary": summary,
        "responses": responses,
        "security": [dict(requirement) for requirement in SECURITY],
    }
    if body is not None:
        operation["requestBody"] = {
            "required": body_required,
            "content": {JSON: {"schema": {"$ref": f"#/components/schemas/{body}"}}},
        }
    if parameters:
        operation["parameters"] = parameters
    return operation


_SITE = [
    {
        "name": "site",
        "in": "path",
        "required": True,
        "schema": {
            "type": "string",
            "minLength": 1,
            "maxLength": 255,
            "pattern": r"^[^\x00-\x1f/]+$",
        },
        "description": "The site's id (no slash, no control character).",
    }
]


def document(kit: Kit) -> dict[str, Any]:
    """The OpenAPI 3.1 document for ``guard``'s JSON API (paths include the mount path)."""
    api = kit.settings.mount_path + "/api"
    paths: dict[str, Any] = {
        f"{api}/status": {
            "get": _operation(
                "The signed-in user's second-factor state",
                _ok("200", "Status", "The state"),
                ["401", "503"],
            )
        },
        f"{api}/totp/setup": {
            "post": _operation(
                "Start an enrolment: a new authenticator key and its QR code",
                _ok("200", "Setup", "The key, its otpauth URI and an SVG QR code"),
                [*_BODY_ERRORS, "409"],
                body="Empty",
                body_required=True,
            )
        },
        f"{api}/totp/confirm": {
            "post": _operation(
                "Confirm the enrolment with a first code; returns the recovery codes once",
                {
                    "200": {
                        "description": "2FA is on and this session verified",
                        "content": {
                            JSON: {
                                "schema": _object(
                                    {
                                        "enrolled": {"const": True},
                                        "verified": {"const": True},
                                        "recovery_codes": {
                                            "type": "array",
                                            "items": {"type": "string"},
                                        },
                                    }
                                )
                            }
                        },
                    }
                },
                [*_BODY_ERRORS, "409", "422", "429"],
                body="Code",
                body_required=True,
            )
        },
        f"{api}/verify": {
            "post": _operation(
                "Complete the second factor for this session",
                {
                    "200": {
                        "description": "This session is verified",
                        "content": {
                            JSON: {
                                "schema": _object(
                                    {
                                        "verified": {"const": True},
                                        "method": {"enum": ["totp", "recovery", "sms"]},
                                        "device_remembered": {"type": "boolean"},
                                    }
                                )
                            }
                        },
                    }
                },
                [*_BODY_ERRORS, "409", "422", "429"],
                body="MethodCode",
                body_required=True,
            )
        },
        f"{api}/recovery-codes": {
            "post": _operation(
                "Replace the recovery codes (needs a recent verification)",
                _ok("200", "RecoveryCodes", "The new codes, shown once"),
                [*_BODY_ERRORS, "409"],
                body="Empty",
                body_required=True,
            )
        },
        f"{api}/disable": {
            "post": _operation(
                "Turn 2FA off with a current code",
                {
                    "200": {
                        "description": "2FA is off",
                        "content": {JSON: {"schema": _object({"enrolled": {"const": False}})}},
                    }
                },
                [*_BODY_ERRORS, "409", "422", "429"],
                body="MethodCode",
                body_required=True,
            )
        },
        f"{api}/sessions/revoke": {
            "post": _operation(
                "Sign out every other session of the user from its verified second factor",
                {
                    "200": {
                        "description": "Every other session verifies again at its next re-check",
                        "content": {
                            JSON: {"schema": _object({"other_sessions_revoked": {"const": True}})}
                        },
                    }
                },
                [*_BODY_ERRORS, "409"],
                body="Empty",
                body_required=True,
            )
        },
        f"{api}/phone": {
            "post": _operation(
                "Register a mobile number: a code is texted to it",
                _ok("202", "TextSent", "A code was texted"),
                [*_BODY_ERRORS, "409", "429"],
                body="Phone",
                body_required=True,
            )
        },
        f"{api}/phone/verify": {
            "post": _operation(
                "Verify the mobile number with the texted code",
                {
                    "200": {
                        "description": "The number is verified",
                        "content": {
                            JSON: {
                                "schema": _object(
                                    {"phone": {"type": "string"}, "phone_verified": {"const": True}}
                                )
                            }
                        },
                    }
                },
                [*_BODY_ERRORS, "409", "422", "429"],
                body="Code",
                body_required=True,
            )
        },
        f"{api}/sms/send": {
            "post": _operation(
                "Text a sign-in code to the verified number",
                _ok("202", "TextSent", "A code was texted"),
                [*_BODY_ERRORS, "409", "429"],
                body="Empty",
                body_required=True,
            )
        },
    }
    if kit.sites is not None:
        paths[f"{api}/sites"] = {
            "get": _operation(
                "The signed-in user's sites, roles and policies",
                {
                    "200": {
                        "description": "The sites",
                        "content": {
                            JSON: {
                                "schema": _object(
                                    {
                                        "sites": {
                                            "type": "array",
                                            "items": {
                                                "allOf": [
                                                    {"$ref": "#/components/schemas/Site"},
                                                    _object(
                                                        {"role": {"enum": ["owner", "operator"]}}
                                                    ),
                                                ]
                                            },
                                        }
                                    }
                                )
                            }
                        },
                    }
                },
                ["401", "503"],
            )
        }
        paths[f"{api}/sites/{{site}}/members"] = {
            "get": _operation(
                "Each member and their 2FA status (owners only)",
                {
                    "200": {
                        "description": "The site and its members",
                        "content": {
                            JSON: {
                                "schema": {
                                    "allOf": [
                                        {"$ref": "#/components/schemas/Site"},
                                        _object(
                                            {
                                                "members": {
                                                    "type": "array",
                                                    "items": {
                                                        "$ref": "#/components/schemas/Member"
                                                    },
                                                }
                                            }
                                        ),
                                    ]
                                }
                            }
                        },
                    }
                },
                ["401", "403", "404", "503"],
                parameters=_SITE,
            )
        }
        paths[f"{api}/sites/{{site}}/policy"] = {
            "put": _operation(
                "Turn enforcement on (at once or after a grace period) or off (owners only)",
                _ok("200", "Site", "The site with its new policy"),
                [*_BODY_ERRORS, "404", "409"],
                body="PolicyChange",
                body_required=True,
                parameters=_SITE,
            )
        }
    if kit.trusted_devices is not None:
        paths[f"{api}/devices"] = {
            "get": _operation(
                "The user's remembered browsers, most recently used first",
                {
                    "200": {
                        "description": "The remembered browsers still trusted",
                        "content": {
                            JSON: {
                                "schema": _object(
                                    {
                                        "devices": {
                                            "type": "array",
                                            "items": {"$ref": "#/components/schemas/Device"},
                                        }
                                    }
                                )
                            }
                        },
                    }
                },
                ["401", "503"],
            ),
            "delete": _operation(
                "Forget every remembered browser of the user",
                _ok("200", "Forgotten", "How many were forgotten"),
                ["401", "403", "503"],
            ),
        }
        paths[f"{api}/devices/{{device}}"] = {
            "delete": _operation(
                "Forget one remembered browser",
                _ok("200", "Forgotten", "It was forgotten (1)"),
                ["401", "403", "404", "503"],
                parameters=[
                    {
                        "name": "device",
                        "in": "path",
                        "required": True,
                        "schema": {
                            "type": "string",
                            "minLength": 1,
                            "maxLength": 64,
                            "pattern": r"^[^\x00-\x1f/]+$",
                        },
                        "description": "The device's id (from GET devices; no slash, no control "
                        "character).",
                    }
                ],
            )
        }
    paths[f"{api}/openapi.json"] = {
        "get": {
            "summary": "This document",
            "responses": {"200": {"description": "OpenAPI 3.1", "content": {JSON: {"schema": {}}}}},
        }
    }
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
            "schemas": SCHEMAS,
            "securitySchemes": SECURITY_SCHEMES,
            "responses": {
                f"E{status}": {
                    "description": description,
                    "content": {JSON: {"schema": {"$ref": "#/components/schemas/Error"}}},
                }
                for status, description in _ERRORS.items()
            },
        },
    }
