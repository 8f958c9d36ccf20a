"""Step-up: routes that demand a second factor verified within the last ``max_age`` seconds.

The middleware lets a session through for ``verified_lifetime_seconds`` after its challenge; a
sensitive route (delete the account, export the data, change a payout address) can ask for more:
a code entered a few minutes ago::

    from mfa_guard.stepup import require_recent_mfa

    @require_recent_mfa(guard, max_age=300)
    async def close_account(request: Request) -> Response: ...

A page navigation without a recent enough verification is sent to the challenge and back
(``303``); an API call gets ``401 mfa_reauthentication_required``; a user without 2FA, who cannot
step up, is sent to enrolment (``403 mfa_enrolment_required`` for API calls). ``methods`` narrows
what counts: ``methods=("webauthn",)`` demands a passkey or security key (phishing-resistant)::

    @require_recent_mfa(guard, max_age=300, methods=("webauthn",))
    async def change_payout_account(request: Request) -> Response: ...
"""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable, Collection
from typing import TYPE_CHECKING

from starlette.requests import Request
from starlette.responses import Response

from mfa_guard.core.marker import METHODS
from mfa_guard.core.policy import DEVICE_METHOD, is_recent
from mfa_guard.errors import ConfigurationError, Reason, SecretDecryptionError, StoreUnavailable
from mfa_guard.session import session_of
from mfa_guard.web.http import guarded_refusal, report_failure

if TYPE_CHECKING:
    from mfa_guard.guard import MFAGuard

__all__ = ["recent_mfa_refusal", "require_recent_mfa"]

Endpoint = Callable[[Request], Awaitable[Response]]


def require_recent_mfa(
    guard: MFAGuard, max_age: int | None = None, methods: Collection[str] | None = None
) -> Callable[[Endpoint], Endpoint]:
    """Decorates a Starlette endpoint: it runs only for a session whose second factor was
    verified within ``max_age`` seconds (default: the ``recent_mfa_seconds`` setting), and, with
    ``methods``, by one of them (``"webauthn"``, ``"totp"``, ``"recovery"``, ``"sms"``)."""
    age = guard.settings.recent_mfa_seconds if max_age is None else max_age
    wanted = step_up_methods(methods)
    if not 0 < age <= guard.settings.verified_lifetime_seconds:
        raise ConfigurationError(
            "require_recent_mfa: max_age must be between 1 and verified_lifetime_seconds "
            f"({guard.settings.verified_lifetime_seconds}), not {age}"
        )

    def decorate(endpoint: Endpoint) -> Endpoint:
        @functools.wraps(endpoint)
        async def guarded(request: Request) -> Response:
            refusal = await recent_mfa_refusal(guard, request, age, wanted)
            if refusal is not None:
                return refusal
            return await endpoint(request)

        return guarded

    return decorate


def step_up_methods(methods: Collection[str] | None) -> frozenset[str] | None:
    """The methods a step-up accepts (``None``: any but a remembered browser); an unknown one,
    or none at all, is a wiring error."""
    if methods is None:
        return None
    if isinstance(methods, str):
        raise ConfigurationError(
            f"require_recent_mfa: methods is a collection of names, e.g. ({methods!r},)"
        )
    wanted = frozenset(methods)
    unknown = sorted(wanted - STEP_UP_METHODS)
    if not wanted or unknown:
        raise ConfigurationError(
            "require_recent_mfa: methods must name some of "
            f"{', '.join(sorted(STEP_UP_METHODS))}, not {unknown or 'none'}"
        )
    return wanted


# What a session may step up with: every method but a remembered browser.
STEP_UP_METHODS = frozenset(METHODS) - {DEVICE_METHOD}


async def recent_mfa_refusal(
    guard: MFAGuard, request: Request, max_age: int, methods: frozenset[str] | None = None
) -> Response | None:
    """``None`` when the session verified its second factor within ``max_age`` seconds (by one
    of ``methods``, if given), else the answer that sends it to step up (the same rules as the
    decorator)."""
    reason = await recent_mfa_reason(guard, request, max_age, methods)
    return None if reason is None else guarded_refusal(request.scope, guard.settings, reason)


async def recent_mfa_reason(
    guard: MFAGuard, request: Request, max_age: int, methods: frozenset[str] | None = None
) -> Reason | None:
    """Why the session may not go on (``None``: it verified its second factor within
    ``max_age`` seconds): nobody signed in, no 2FA to step up with, no recent verification,
    or the store did not answer (logged here)."""
    scope = request.scope
    gate = guard.gate
    user_id = gate.identity(scope)
    if user_id is None:
        return Reason.NOT_AUTHENTICATED
    # A missing session is the app's wiring error (ConfigurationError): raised, not a 503.
    session = session_of(scope)
    try:
        marker = await gate.current(session, user_id, scope=scope)
    except (StoreUnavailable, SecretDecryptionError) as exc:
        report_failure(exc)
        return Reason.SERVICE_UNAVAILABLE
    if not marker.enrolled:
        return Reason.ENROLMENT_REQUIRED_FOR_STEP_UP
    lifetime = guard.settings.verified_lifetime_seconds
    if not is_recent(marker, guard.clock(), lifetime_seconds=lifetime, max_age=max_age):
        return Reason.RECENT_MFA_REQUIRED
    if methods is not None and marker.method not in methods:
        return Reason.PASSKEY_REQUIRED if methods == {"webauthn"} else Reason.RECENT_MFA_REQUIRED
    return None
