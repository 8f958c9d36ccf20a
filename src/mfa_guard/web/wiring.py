"""How the guard finds out it is wired wrong, what it says, and what a refused request gets.

The guard reads who is signed in from ``scope["user"]`` and keeps the second factor's state in
``scope["session"]``: its middleware must run after the app's session and authentication, and
its pages must be mounted where it sends people. Wired otherwise it would let an unverified
user through as anonymous, or send them to a page that does not exist. So each way of wiring it
wrong is refused, closed: at start-up (the lifespan) where the app's middleware list and routes
show it, else on the request that shows it. The app does not start, or each such request gets a
generic ``500`` (a websocket: closed before accept, ``1011``) and the log an ``ERROR`` naming the
fix. A misconfiguration is permanent: never the ``503`` "try again" of an outage.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from starlette.middleware.authentication import AuthenticationMiddleware
from starlette.middleware.sessions import SessionMiddleware
from starlette.responses import PlainTextResponse, Response
from starlette.routing import BaseRoute, Host, Mount
from starlette.types import Scope

from mfa_guard.errors import ConfigurationError
from mfa_guard.web.http import json_error, wants_json

if TYPE_CHECKING:
    from mfa_guard.guard import MFAGuard

logger = logging.getLogger("mfa_guard")

# RFC 6455 7.4.1: the server met a condition that kept it from serving the connection.
WS_INTERNAL_ERROR = 1011
# The module of the kit's per-token session helper, a session for apps without cookies.
BEARER_SESSIONS_MODULE = "mfa_guard.tokens"
# How deep the search for a second guard follows the app inward (middleware, mounts).
SEARCH_DEPTH = 64

FIX = (
    "Session apps: SessionMiddleware, then AuthenticationMiddleware, then the guard: "
    "Starlette(middleware=[Middleware(SessionMiddleware, ...), "
    "Middleware(AuthenticationMiddleware, ...), guard.middleware()]); with app.add_middleware, "
    "which wraps what was added before it, add the guard FIRST "
    "(app.add_middleware(MFAGuardMiddleware, guard=guard), then AuthenticationMiddleware, then "
    "SessionMiddleware); FastAPI: include_mfa_guard(app, guard, middleware=True) places it "
    "innermost for you. Token apps: mfa_guard.tokens.TokenSessionMiddleware gives each bearer "
    "token a session, before AuthenticationMiddleware (docs/fastapi.md#bearer-tokens)."
)
NO_USER = (
    "mfa_guard found no scope['user']: its middleware runs before the app's authentication, or "
    "the app has none, so it cannot tell who is signed in (an anonymous request has "
    "scope['user'] set, to UnauthenticatedUser). "
)
NO_SESSION = (
    "mfa_guard found no session (scope['session']) for a signed-in user: the guard keeps the "
    "second factor's state there. "
)
TWO_GUARDS = (
    "mfa_guard's middleware is in this app twice (guard.middleware() listed twice, added with "
    "app.add_middleware as well as listed or included, or in an app mounted inside it too): "
    "keep one. "
)
GUARD_BEFORE_AUTHENTICATION = (
    "mfa_guard's middleware runs before AuthenticationMiddleware, where no user is known yet: it "
    "would let every request through as anonymous. "
)
GUARD_BEFORE_SESSION = (
    "mfa_guard's middleware runs before the session middleware ({name}), where no session "
    "exists yet. "
)
NO_MOUNT = (
    "mfa_guard's pages and API are not mounted at {path} (mount_path): a challenged user would "
    "be sent to a page that does not exist. Add guard.mount() to the app's routes "
    "(FastAPI: include_mfa_guard(app, guard))."
)


def no_user() -> ConfigurationError:
    return ConfigurationError(NO_USER + FIX)


def no_session() -> ConfigurationError:
    return ConfigurationError(NO_SESSION + FIX)


def check_wiring(scope: Scope, guard: MFAGuard, middleware: object, inner: object) -> None:
    """Raises :class:`ConfigurationError` if the app of ``scope`` (a lifespan, or a request)
    wires ``middleware``, a guard middleware of ``guard`` wrapping ``inner``, wrong: another
    guard inside it, before the app's session or authentication, twice in the app's list, or
    without the guard's mount. Reads the app's declared middleware and routes, no request."""
    kinds = _guard_classes(middleware)
    if _guard_inside(inner, kinds, {}, SEARCH_DEPTH):
        raise ConfigurationError(TWO_GUARDS)
    app = scope.get("app")
    declared: list[Any] | None = getattr(app, "user_middleware", None)
    if not isinstance(declared, list):
        return  # not a Starlette app: nothing more to read
    classes = [getattr(entry, "cls", None) for entry in declared]
    guards = [index for index, cls in enumerate(classes) if _subclass(cls, kinds)]
    if not guards:
        return  # the middleware wraps this app from outside: its list says nothing of it
    if len(guards) > 1:
        raise ConfigurationError(TWO_GUARDS)
    after = classes[guards[0] + 1 :]
    if any(_subclass(cls, (AuthenticationMiddleware,)) for cls in after):
        raise ConfigurationError(GUARD_BEFORE_AUTHENTICATION + FIX)
    for cls in after:
        if _subclass(cls, (SessionMiddleware,)) or _from_bearer_sessions(cls):
            raise ConfigurationError(
                GUARD_BEFORE_SESSION.format(name=getattr(cls, "__name__", "?")) + FIX
            )
    path = guard.settings.mount_path
    if not _mounted(getattr(app, "routes", ()), guard.routes, path, ""):
        raise ConfigurationError(NO_MOUNT.format(path=path))


def _guard_classes(middleware: object) -> tuple[type, ...]:
    # The kit's class, and this middleware's own (a subclass, or a copy of the class loaded
    # apart from the package, as a module reloaded by a development server).
    from mfa_guard.web.middleware import MFAGuardMiddleware

    return (MFAGuardMiddleware, type(middleware))


def _from_bearer_sessions(cls: object) -> bool:
    module = str(getattr(cls, "__module__", ""))
    return module == BEARER_SESSIONS_MODULE or module.startswith(BEARER_SESSIONS_MODULE + ".")


def _guard_inside(
    node: object, kinds: tuple[type, ...], seen: dict[int, object], depth: int
) -> bool:
    """Whether a guard middleware runs inside ``node``: down the chain of middleware (each
    holds the next as ``.app``), and into every mounted app, whose declared middleware counts
    even before it is built."""
    while node is not None and depth > 0 and id(node) not in seen:
        seen[id(node)] = node  # kept, so that no id is reused while the search runs
        depth -= 1
        if isinstance(node, kinds):
            return True
        declared = getattr(node, "user_middleware", None)
        if isinstance(declared, list) and any(
            _subclass(getattr(entry, "cls", None), kinds) for entry in declared
        ):
            return True
        routes = getattr(node, "routes", None)
        if isinstance(routes, list):
            for route in routes:
                if isinstance(route, Mount | Host) and _guard_inside(route.app, kinds, seen, depth):
                    return True
        node = getattr(node, "app", None)
    return False


def _subclass(cls: object, bases: tuple[type, ...]) -> bool:
    return isinstance(cls, type) and issubclass(cls, bases)


def _mounted(routes: Iterable[BaseRoute], kit: list[BaseRoute], path: str, prefix: str) -> bool:
    """Whether one of the kit's routes is served under ``path``, through Mounts at any depth."""
    if not kit:
        return True
    for route in routes:
        if not isinstance(route, Mount):
            continue
        here = prefix + route.path
        children = route.routes
        if here == path and any(child is kit[0] for child in children):
            return True
        if (not here or path.startswith(here + "/")) and _mounted(children, kit, path, here):
            return True
    return False


def report_miswiring(exc: ConfigurationError) -> None:
    logger.error("mfa_guard is wired wrong, failing closed: %s", exc.message)


def misconfigured_response(scope: Scope, guard: MFAGuard) -> Response:
    """A generic ``500`` that tells the client nothing of the cause (the log does): JSON for
    API requests, as any other error of the kit's, else plain text."""
    if wants_json(scope, guard.settings):
        return json_error(500, "internal_error", "Something went wrong on the server.")
    return PlainTextResponse(
        "Internal Server Error", status_code=500, headers={"Cache-Control": "no-store"}
    )
