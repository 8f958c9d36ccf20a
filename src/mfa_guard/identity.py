"""Who is signed in: the identity the kit files a user's 2FA under, the label an
authenticator app shows, and the address the request comes from.

The guard reads both from the request's scope, after the app's authentication
(``scope["user"]``). What it cannot read there is a wiring error: it fails closed and the
:class:`~mfa_guard.errors.ConfigurationError` says how to fix it.
"""

from __future__ import annotations

import functools
import ipaddress
from collections.abc import Callable, Mapping
from typing import Any

from starlette.authentication import BaseUser, SimpleUser, UnauthenticatedUser
from starlette.datastructures import Headers
from starlette.types import Scope

from mfa_guard.errors import ConfigurationError
from mfa_guard.settings import MFAGuardSettings

IdentityGetter = Callable[[Scope], str | None]
AccountNameGetter = Callable[[Scope], str]
# The hidden fields the app's sign-out form needs (its CSRF token), for the request's scope.
SignOutFields = Callable[[Scope], Mapping[str, str]]

# How to wire the middleware, named by every wiring error.
WIRING_FIX = (
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


def no_user() -> ConfigurationError:
    return ConfigurationError(NO_USER + WIRING_FIX)


def no_session() -> ConfigurationError:
    return ConfigurationError(NO_SESSION + WIRING_FIX)


def user_identity(scope: Scope) -> str | None:
    """The default identity: ``scope["user"].identity`` when authenticated (a
    :class:`~starlette.authentication.SimpleUser`: its ``username``). No ``user`` in the scope
    at all is a wiring error, and so is a user class with no ``identity`` of its own: both
    raise :class:`ConfigurationError`."""
    user: Any = scope.get("user")
    kind = type(user)
    if kind is SimpleUser:  # Starlette's own: always authenticated, named by its username
        name = user.username
        if type(name) is str:
            return name or None
        return str(name) if name else None
    if kind is UnauthenticatedUser:
        return None
    if user is None:
        if "user" not in scope:  # not anonymous: nobody set it (the guard sits too early)
            raise no_user()
        return None
    # How to read any other user is decided once per class: this runs on every request.
    read = _IDENTITY_READERS.get(kind)
    if read is None:
        read = _IDENTITY_READERS[kind] = _identity_reader(kind, user)
    return read(user)


def _identity_reader(kind: type, user: Any) -> Callable[[Any], str | None]:
    # Starlette's SimpleUser leaves ``identity`` to BaseUser, which raises: a subclass that
    # keeps SimpleUser's display_name is named by its username, as SimpleUser is.
    declared = getattr(kind, "identity", None)
    if declared is BaseUser.identity:
        if issubclass(kind, SimpleUser) and kind.display_name is SimpleUser.display_name:
            return _username
    elif declared is not None or hasattr(user, "identity"):
        return _identity
    # No identity of its own. Its display_name is a label, not a key: two users named alike
    # would share one enrolment, so it is refused rather than guessed at.
    return functools.partial(_no_identity, kind.__qualname__)


def _username(user: Any) -> str | None:
    if not user.is_authenticated:
        return None
    name = user.username
    return str(name) if name else None


def _identity(user: Any) -> str | None:
    if not user.is_authenticated:
        return None
    identity = user.identity
    if identity is None or identity == "":
        raise ConfigurationError(
            f"mfa_guard read no identity from an authenticated {type(user).__qualname__} "
            "(scope['user'].identity is empty): return the user's stable, unique id"
        )
    return str(identity)


def _no_identity(name: str, user: Any) -> str | None:
    if not user.is_authenticated:
        return None
    raise ConfigurationError(
        f"mfa_guard identifies a signed-in user by scope['user'].identity, and {name} has none "
        "of its own; its display_name need not be unique (two users named alike would share one "
        f"2FA enrolment). Give {name} an identity property returning the user's stable, unique "
        "id (a primary key), or pass MFAGuard(identity=a function of the scope). Enrolments are "
        "filed under that id: to keep those made so far, return what display_name gave."
    )


_IDENTITY_READERS: dict[type, Callable[[Any], str | None]] = {}


def user_display_name(scope: Scope) -> str:
    """The default account label in authenticator apps: ``scope["user"].display_name``."""
    user = scope.get("user")
    return str(getattr(user, "display_name", "") or "account")


def client_ip(scope: Scope, settings: MFAGuardSettings) -> str | None:
    """The client's address: the peer's, or, when the peer is a trusted proxy, the nearest
    address in ``X-Forwarded-For`` that is not one of the trusted proxies."""
    client = scope.get("client")
    peer = str(client[0]) if client else None
    if not settings.trusted_proxies or peer is None or not _is_trusted_proxy(peer, settings):
        return peer
    forwarded = Headers(scope=scope).get("x-forwarded-for", "")
    for hop in reversed([part.strip() for part in forwarded.split(",") if part.strip()]):
        try:
            ipaddress.ip_address(hop)
        except ValueError:
            return peer  # a malformed chain is not trusted
        if not _is_trusted_proxy(hop, settings):
            return hop
    return peer


def _is_trusted_proxy(address: str, settings: MFAGuardSettings) -> bool:
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    return any(ip in ipaddress.ip_network(net, strict=False) for net in settings.trusted_proxies)
