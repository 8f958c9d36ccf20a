"""FastAPI integration: the kit in one call, and dependencies for the routes that need 2FA.

::

    from typing import Annotated

    from fastapi import Depends, FastAPI

    from mfa_guard.fastapi import MFASession, RequireMFA, RequireRecentMFA, include_mfa_guard

    app = FastAPI()  # with SessionMiddleware and AuthenticationMiddleware, as for Starlette
    include_mfa_guard(app, guard)  # the pages and API under /mfa, shown in /docs

    Verified = Annotated[MFASession, Depends(RequireMFA(guard))]


    @app.get("/api/reports")
    async def reports(mfa: Verified) -> list[str]: ...


    @app.post("/api/account/close", dependencies=[Depends(RequireRecentMFA(guard, max_age=300))])
    async def close_account() -> None: ...

A refused dependency raises :class:`MFARefusal`, an ``HTTPException`` carrying the kit's own
answer (``{"error": {"code", "message"}}``, or a ``303`` to the challenge page for a browser
navigation); the handler ``include_mfa_guard`` installs sends that answer as it is. The rules are
the kit's: the middleware's :func:`~mfa_guard.core.policy.decide` and the step-up's
:func:`~mfa_guard.stepup.recent_mfa_reason`.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Collection
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

from fastapi import FastAPI, HTTPException
from starlette.exceptions import WebSocketException
from starlette.requests import HTTPConnection, Request
from starlette.responses import RedirectResponse, Response
from starlette.types import Scope

from mfa_guard.core.marker import Marker
from mfa_guard.core.policy import Decision, decide
from mfa_guard.errors import ConfigurationError, Reason, StoreUnavailable
from mfa_guard.session import session_of
from mfa_guard.settings import MFAGuardSettings
from mfa_guard.stepup import recent_mfa_reason, require_recent_mfa, step_up_methods
from mfa_guard.web import openapi as kit_openapi
from mfa_guard.web.http import decision_refusal, guarded_refusal, report_failure

if TYPE_CHECKING:
    from mfa_guard.guard import MFAGuard

__all__ = [
    "MFARefusal",
    "MFASession",
    "RequireMFA",
    "RequireRecentMFA",
    "include_mfa_guard",
    "install_refusal_handler",
    "refusal_responses",
]

# The kit's OpenAPI components are renamed with this prefix in the app's document.
COMPONENT_PREFIX = "MFAGuard"
OPENAPI_TAG = "Two-factor authentication"
# RFC 6455 7.4.1: policy violation; 1013: try again later (as the middleware closes them).
WS_POLICY_VIOLATION = 1008
WS_TRY_AGAIN_LATER = 1013


@dataclass(frozen=True, slots=True)
class MFASession:
    """What the dependencies give a route: who is signed in, and their session's marker."""

    user_id: str
    marker: Marker

    @property
    def enrolled(self) -> bool:
        """Whether the user has 2FA (a user without it passes ``RequireMFA`` unless a site of
        theirs enforces it)."""
        return self.marker.enrolled

    @property
    def verified_at(self) -> float | None:
        """When this session completed its second factor (``None``: it has not)."""
        return self.marker.verified_at

    @property
    def method(self) -> str | None:
        """``totp``, ``recovery`` or ``sms``: how it was completed."""
        return self.marker.method


class MFARefusal(HTTPException):
    """A dependency's refusal, ``reason`` in the kit's refusal table. ``response`` is the kit's
    answer (the middleware's), sent as is by the handler of :func:`install_refusal_handler`;
    ``code`` is its machine code (``None`` when the answer is no JSON error: a redirect, or
    plain text), ``detail`` its message."""

    def __init__(self, reason: Reason, scope: Scope, settings: MFAGuardSettings) -> None:
        response = guarded_refusal(scope, settings, reason)
        headers = {
            name: response.headers[name]
            for name in ("location", "retry-after", "cache-control")
            if name in response.headers
        }
        redirect = isinstance(response, RedirectResponse)
        super().__init__(
            status_code=response.status_code,
            detail="See Other" if redirect else reason.message,
            headers=headers,
        )
        self.response = response
        self.reason = reason
        self.code = reason.code if response.media_type == "application/json" else None


async def _send_refusal(request: Request, exc: Exception) -> Response:
    if not isinstance(exc, MFARefusal):  # only ever registered for MFARefusal
        raise exc
    return exc.response


def install_refusal_handler(app: FastAPI) -> None:
    """Sends an :class:`MFARefusal`'s response as it is. ``include_mfa_guard`` calls it; an app
    that mounts the kit otherwise calls it once before using the dependencies."""
    app.add_exception_handler(MFARefusal, _send_refusal)


def _check_handler(connection: HTTPConnection) -> None:
    handlers = getattr(connection.scope.get("app"), "exception_handlers", None)
    if handlers is not None and MFARefusal not in handlers:
        # Without it FastAPI would answer {"detail": ...}, not the kit's error shape.
        raise ConfigurationError(
            "mfa_guard.fastapi needs its refusal handler: call include_mfa_guard(app, guard) "
            "or install_refusal_handler(app)"
        )


class RequireMFA:
    """A dependency: the route runs for a session whose second factor is verified, or for a
    user without 2FA unless a site of theirs enforces it (the middleware's decision).

    Refusals: ``401 mfa_required`` (or ``303`` to the challenge for a page navigation),
    ``403 mfa_enrolment_required`` (or ``303`` to enrolment), ``401 not_authenticated`` (or
    ``303`` to ``home_path``), ``503 service_unavailable`` when the store does not answer. JSON
    is chosen as the middleware chooses it: a path under ``api_prefixes``, a method other than
    ``GET`` or ``HEAD``, an ``Authorization: Bearer`` header, or an ``Accept`` asking for JSON
    and not HTML. On a websocket route
    the socket is closed before accept (``1008``, or ``1013`` when the store is down).
    Returns an :class:`MFASession`.
    """

    # FastAPI 0.115 resolves a callable object's string annotations (this module has
    # ``from __future__ import annotations``) in the object's __globals__, else fails.
    __globals__: ClassVar[dict[str, object]] = globals()

    def __init__(self, guard: MFAGuard) -> None:
        self.guard = guard

    async def __call__(self, connection: HTTPConnection) -> MFASession:
        scope = connection.scope
        if scope["type"] != "websocket":
            _check_handler(connection)
        settings = self.guard.settings
        try:
            return await self._session(scope)
        except StoreUnavailable as exc:
            report_failure(exc)
            raise _refusal(Reason.SERVICE_UNAVAILABLE, scope, settings) from exc

    async def _session(self, scope: Scope) -> MFASession:
        guard = self.guard
        gate = guard.gate
        user_id = gate.identity(scope)
        marker = None if user_id is None else await gate.marker(scope)
        # No identity, or one that vanished in between: nobody signed in.
        if user_id is None or marker is None:
            raise _refusal(Reason.NOT_AUTHENTICATED, scope, guard.settings)
        now = guard.clock()
        decision = decide(
            marker, now, verified_lifetime_seconds=guard.settings.verified_lifetime_seconds
        )
        if decision is Decision.ALLOW:
            return MFASession(user_id, marker)
        if decision is Decision.CHALLENGE and guard.trusted_devices is not None:
            # As the middleware does: a remembered browser verifies the session instead.
            admitted = await gate.admit_by_device(scope, session_of(scope), user_id, marker, now)
            if admitted is not None:
                return MFASession(user_id, admitted)
        raise _refusal(decision_refusal(decision), scope, guard.settings)


def _refusal(reason: Reason, scope: Scope, settings: MFAGuardSettings) -> Exception:
    """What a refused dependency raises: an :class:`MFARefusal`; on a websocket, the close
    before accept (``1008``, ``1013`` when the store is down)."""
    if scope["type"] == "websocket":
        if reason is Reason.SERVICE_UNAVAILABLE:
            return WebSocketException(WS_TRY_AGAIN_LATER)
        return WebSocketException(WS_POLICY_VIOLATION)
    return MFARefusal(reason, scope, settings)


class RequireRecentMFA:
    """A dependency for sensitive routes: the session's second factor was verified within
    ``max_age`` seconds (default ``recent_mfa_seconds``), the step-up of
    :func:`mfa_guard.stepup.require_recent_mfa`.

    Refusals: ``401 mfa_reauthentication_required`` (then ``POST {mount}/api/verify``),
    ``403 mfa_enrolment_required`` for a user without 2FA, ``401 not_authenticated``,
    ``503 service_unavailable``; page navigations are sent to the challenge and back (``303``).
    HTTP routes only. A ``max_age`` outside 1 … ``verified_lifetime_seconds`` is refused here
    (``ConfigurationError``). ``methods`` narrows what counts, as for the decorator:
    ``methods=("webauthn",)`` demands a passkey or security key. Returns an
    :class:`MFASession`.
    """

    __globals__: ClassVar[dict[str, object]] = globals()

    def __init__(
        self, guard: MFAGuard, max_age: int | None = None, methods: Collection[str] | None = None
    ) -> None:
        require_recent_mfa(guard, max_age)  # refuses a max_age the decorator would refuse
        self.guard = guard
        self.max_age = guard.settings.recent_mfa_seconds if max_age is None else max_age
        self.methods = step_up_methods(methods)

    async def __call__(self, connection: HTTPConnection) -> MFASession:
        if not isinstance(connection, Request):
            raise ConfigurationError("RequireRecentMFA guards HTTP routes, not websockets")
        _check_handler(connection)
        guard = self.guard
        gate = guard.gate
        scope = connection.scope
        user_id = gate.identity(scope)
        if user_id is None:
            raise MFARefusal(Reason.NOT_AUTHENTICATED, scope, guard.settings)
        # No session is a wiring error to raise, not an outage to answer with a 503.
        session = session_of(scope)
        reason = await recent_mfa_reason(guard, connection, self.max_age, self.methods)
        if reason is not None:
            raise MFARefusal(reason, scope, guard.settings)
        # The marker recent_mfa_reason just accepted, read back from the session: no I/O.
        marker, _ = gate.fresh(session, user_id, gate.clock())
        if marker is None:
            marker = await gate.current(session, user_id, scope=scope)
        return MFASession(user_id, marker)


def refusal_responses() -> dict[int | str, dict[str, Any]]:
    """The dependencies' refusals, for a route's or router's ``responses=``: ``/docs`` then
    lists them with the kit's error shape (inline, so the document is valid with or without
    the kit's own API merged in)."""
    error = {
        "type": "object",
        "properties": {
            "error": {
                "type": "object",
                "properties": {"code": {"type": "string"}, "message": {"type": "string"}},
                "required": ["code", "message"],
            }
        },
        "required": ["error"],
    }
    refusals = {
        401: "Nobody is signed in (not_authenticated), or the second factor is needed "
        "(mfa_required), or a recent one (mfa_reauthentication_required): verify through "
        "the kit's api/verify",
        403: "A site of the user requires 2FA: enrol first (mfa_enrolment_required)",
        503: "The store did not answer (service_unavailable); Retry-After given",
    }
    return {
        status: {"description": text, "content": {"application/json": {"schema": error}}}
        for status, text in refusals.items()
    }


def include_mfa_guard(
    app: FastAPI, guard: MFAGuard, *, middleware: bool = False, openapi: bool = True
) -> None:
    """Includes the kit in a FastAPI app: its pages and JSON API under the mount path, the
    handler that sends the dependencies' refusals, and (``openapi``) the JSON API in the app's
    OpenAPI document, so ``/docs`` shows it.

    With ``middleware=True`` the guard's middleware guards every route, as in a Starlette app;
    it is placed innermost, after the app's session and authentication middleware whatever
    the order they are added in. Without it, only the routes that use the dependencies are
    guarded. Call it before the app starts serving.
    """
    if app.middleware_stack is not None:
        raise ConfigurationError("include_mfa_guard: call it before the app starts serving")
    app.router.routes.append(guard.mount())
    install_refusal_handler(app)
    if middleware:
        # add_middleware would make it the outermost, where no session or user is set yet.
        app.user_middleware.append(guard.middleware())
    if openapi:
        _merge_openapi_into(app, guard)


def _merge_openapi_into(app: FastAPI, guard: MFAGuard) -> None:
    app.openapi_schema = None
    # FastAPI's documented way to extend the document (its /openapi.json calls app.openapi()).
    with_kit = _OpenAPIWithKit(app.openapi, _prefixed(kit_openapi.document(guard.kit)))
    app.openapi = with_kit  # type: ignore[method-assign]


class _OpenAPIWithKit:
    """``app.openapi`` with the kit's API merged in."""

    def __init__(self, app_openapi: Callable[[], dict[str, Any]], kit: dict[str, Any]) -> None:
        self._app_openapi = app_openapi
        self._kit = kit
        self._base: dict[str, Any] | None = None
        self._merged: dict[str, Any] = {}

    def __call__(self) -> dict[str, Any]:
        base = self._app_openapi()
        # FastAPI caches its document, and builds a new one when routes change: merged once
        # per document it builds.
        if base is not self._base:
            self._merged = _merged(base, self._kit)
            self._base = base
        return self._merged


def _prefixed(document: dict[str, Any]) -> dict[str, Any]:
    """The kit's document with its component names prefixed and every ``$ref`` rewritten."""
    document = copy.deepcopy(document)
    components: dict[str, dict[str, Any]] = document.get("components", {})
    renames = {
        f"#/components/{kind}/{name}": f"#/components/{kind}/{COMPONENT_PREFIX}{name}"
        for kind, entries in components.items()
        for name in entries
    }
    document["components"] = {
        kind: {COMPONENT_PREFIX + name: entry for name, entry in entries.items()}
        for kind, entries in components.items()
    }
    for item in document["paths"].values():
        for operation in item.values():
            if isinstance(operation, dict):
                operation.setdefault("tags", [OPENAPI_TAG])
                # Security requirements name their schemes, not a $ref: renamed here.
                if "security" in operation:
                    operation["security"] = [
                        {COMPONENT_PREFIX + name: scopes for name, scopes in requirement.items()}
                        for requirement in operation["security"]
                    ]
    rewritten: dict[str, Any] = _rewrite_refs(document, renames)
    return rewritten


def _rewrite_refs(node: Any, renames: dict[str, str]) -> Any:
    if isinstance(node, dict):
        return {
            key: renames.get(value, value)
            if key == "$ref" and isinstance(value, str)
            else _rewrite_refs(value, renames)
            for key, value in node.items()
        }
    if isinstance(node, list):
        return [_rewrite_refs(item, renames) for item in node]
    return node


def _merged(base: dict[str, Any], kit: dict[str, Any]) -> dict[str, Any]:
    """``base`` (the app's document, left untouched) with the kit's paths, components and tag."""
    kit = copy.deepcopy(kit)
    document = dict(base)
    paths = dict(base.get("paths", {}))
    # The app's own ways in (an OAuth2 password flow, its bearer scheme) reach the kit's
    # operations too: "Authorize" once in /docs and "Try it out" sends the same credentials.
    app_schemes = base.get("components", {}).get("securitySchemes", {})
    app_security: list[dict[str, list[str]]] = [{name: []} for name in app_schemes]
    for path, item in kit["paths"].items():
        for operation in item.values():
            if isinstance(operation, dict) and "security" in operation:
                operation["security"] = [*app_security, *operation["security"]]
        if path in paths:
            raise ConfigurationError(
                f"the app's OpenAPI document already has {path}, a path of mfa_guard's API"
            )
        paths[path] = item
    document["paths"] = paths
    components = {kind: dict(entries) for kind, entries in base.get("components", {}).items()}
    for kind, entries in kit["components"].items():
        target = components.setdefault(kind, {})
        for name, entry in entries.items():
            if name in target:
                raise ConfigurationError(
                    f"the app's OpenAPI document already has a component {kind}/{name}"
                )
            target[name] = entry
    document["components"] = components
    tags = list(base.get("tags", []))
    if not any(tag.get("name") == OPENAPI_TAG for tag in tags):
        tags.append({"name": OPENAPI_TAG, "description": kit["info"]["description"]})
    document["tags"] = tags
    return document
