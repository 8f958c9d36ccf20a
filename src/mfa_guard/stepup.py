"""Step-up: routes that demand a second factor verified within the last ``max_age`` seconds.

The middleware lets a session through for ``verified_lifetime_seconds`` after its challenge; a
sensitive route (delete the account, export the data, change a payout address) can ask for more:
a code entered a few minutes ago::

    from mfa_guard.stepup import require_recent_mfa

    @require_recent_mfa(guard, max_age=300)
    async def close_account(request: Request) -> Response: ...

A page navigation without a recent enough verification is sent to the challenge and back
(``303``); an API call gets ``401 mfa_reauthentication_required``; a user without 2FA, who cannot
step up, is sent to enrolment (``403 mfa_enrolment_required`` for API calls).
"""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response

from mfa_guard.core.policy import is_recent
from mfa_guard.errors import ConfigurationError, SecretDecryptionError, StoreUnavailable
from mfa_guard.session import session_of
from mfa_guard.web.http import (
    NAVIGATION_METHODS,
    UNAVAILABLE_MESSAGE,
    json_error,
    page_url,
    report_failure,
    requested_path,
    see_other,
    unavailable_json,
    wants_json,
)

if TYPE_CHECKING:
    from mfa_guard.guard import MFAGuard

Endpoint = Callable[[Request], Awaitable[Response]]


def require_recent_mfa(
    guard: MFAGuard, max_age: int | None = None
) -> Callable[[Endpoint], Endpoint]:
    """Decorates a Starlette endpoint: it runs only for a session whose second factor was
    verified within ``max_age`` seconds (default: the ``recent_mfa_seconds`` setting)."""
    age = guard.settings.recent_mfa_seconds if max_age is None else max_age
    if not 0 < age <= guard.settings.verified_lifetime_seconds:
        raise ConfigurationError(
            "require_recent_mfa: max_age must be between 1 and verified_lifetime_seconds "
            f"({guard.settings.verified_lifetime_seconds}), not {age}"
        )

    def decorate(endpoint: Endpoint) -> Endpoint:
        @functools.wraps(endpoint)
        async def guarded(request: Request) -> Response:
            refusal = await recent_mfa_refusal(guard, request, age)
            if refusal is not None:
                return refusal
            return await endpoint(request)

        return guarded

    return decorate


async def recent_mfa_refusal(guard: MFAGuard, request: Request, max_age: int) -> Response | None:
    """``None`` when the session verified its second factor within ``max_age`` seconds, else
    the answer that sends it to step up (the same rules as the decorator)."""
    scope = request.scope
    settings = guard.settings
    as_json = wants_json(scope, settings)
    gate = guard.gate
    user_id = gate.identity(scope)
    if user_id is None:
        if as_json:
            return json_error(401, "not_authenticated", "Sign in first.")
        return see_other(settings.home_path)
    # A missing session is the app's wiring error (ConfigurationError): raised, not a 503.
    session = session_of(scope)
    try:
        marker = await gate.current(session, user_id, scope=scope)
    except (StoreUnavailable, SecretDecryptionError) as exc:
        if as_json:
            return unavailable_json(exc)
        report_failure(exc)
        return PlainTextResponse(UNAVAILABLE_MESSAGE, status_code=503, headers={"Retry-After": "5"})
    now = guard.clock()
    next_path = requested_path(scope) if request.method in NAVIGATION_METHODS else None
    if not marker.enrolled:
        if as_json:
            return json_error(
                403,
                "mfa_enrolment_required",
                "This action needs two-factor authentication: turn it on first.",
            )
        return see_other(page_url(scope, settings, "enrol", next_path))
    if is_recent(marker, now, lifetime_seconds=settings.verified_lifetime_seconds, max_age=max_age):
        return None
    if as_json:
        return json_error(
            401,
            "mfa_reauthentication_required",
            "Confirm a current code (POST api/verify) to continue.",
        )
    return see_other(page_url(scope, settings, "challenge", next_path))
