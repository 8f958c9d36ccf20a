"""Acme Inbox API: a JSON-only FastAPI app whose routes need the second factor.

The first factor is a password, checked by ``POST /login`` (a session cookie, for browsers) or
``POST /token`` (a bearer token, for scripts and other API clients). A token's session, where
the kit keeps its marker, lives on the server: :class:`mfa_guard.tokens.TokenSessionMiddleware`
gives each token its own, so a second factor verified with one token verifies that token only.
mfa_guard adds the rest with one call, ``include_mfa_guard(app, guard)``: its JSON API under
``/mfa/api`` (enrolment, verification, the site policy) shown in ``/docs`` next to the app's own
routes.

The app guards only its ``/api`` router, with the kit's FastAPI dependencies rather than its
middleware: every route there needs :class:`~mfa_guard.fastapi.RequireMFA`, and exporting the
conversations a code entered within the last five minutes
(:class:`~mfa_guard.fastapi.RequireRecentMFA`). Sites live in memory: Acme (owner
``owner@acme.test``, operator ``agent@acme.test``) and Solo (``solo@example.test``), passwords
``demo``. Once Acme's owner turns enforcement on (``PUT /mfa/api/sites/acme/policy``), the agent's
calls to ``/api`` answer ``403 mfa_enrolment_required`` until the agent enrols through
``/mfa/api/totp/setup`` and ``/mfa/api/totp/confirm``. ``tests/web/test_fastapi.py`` plays the whole
story with a bearer token.

Cookie sessions are ``SameSite=Lax``, so another site cannot post to ``/api`` with them.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import anyio.to_thread
from cryptography.fernet import Fernet
from fastapi import APIRouter, Depends, FastAPI, Request
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, Field
from starlette.authentication import AuthCredentials, AuthenticationBackend, BaseUser, SimpleUser
from starlette.middleware import Middleware
from starlette.middleware.authentication import AuthenticationMiddleware
from starlette.middleware.sessions import SessionMiddleware
from starlette.requests import HTTPConnection

from mfa_guard import MemoryStore, MFAGuard, MFAGuardSettings
from mfa_guard.clock import Clock, system_clock
from mfa_guard.fastapi import (
    MFASession,
    RequireMFA,
    RequireRecentMFA,
    include_mfa_guard,
    refusal_responses,
)
from mfa_guard.stores.sites import MemorySiteDirectory, Role, SiteDirectory
from mfa_guard.tokens import TokenSessionMiddleware, TokenSessions
from mfa_guard.web.http import json_error

ISSUER = "Acme Inbox API"
DEMO_PASSWORD = "demo"
DEMO_ACCOUNTS = ("owner@acme.test", "agent@acme.test", "solo@example.test")
SITES = (
    ("acme", "Acme", (("owner@acme.test", Role.OWNER), ("agent@acme.test", Role.OPERATOR))),
    ("solo", "Solo", (("solo@example.test", Role.OWNER),)),
)
# Exporting needs a code entered within this many seconds.
EXPORT_MAX_AGE = 300
# 8 hours, in seconds: a working day; the second factor's own lifetime still applies within.
TOKEN_LIFETIME = 8 * 3600
MAX_EMAIL_LENGTH = 254
MAX_PASSWORD_LENGTH = 1024
# scrypt: 16 MiB and a few tens of milliseconds per check.
SCRYPT_N, SCRYPT_R, SCRYPT_P = 2**14, 8, 1

CONVERSATIONS = (
    {"visitor": "Maya Lindqvist", "subject": "Invoice for March"},
    {"visitor": "Tomás Ferreira", "subject": "Cannot reset my password"},
    {"visitor": "Aiko Tanaka", "subject": "Feature request: dark mode"},
)


def _scrypt(password: str, salt: bytes) -> bytes:
    return hashlib.scrypt(
        password.encode(), salt=salt, n=SCRYPT_N, r=SCRYPT_R, p=SCRYPT_P, dklen=32
    )


class Accounts:
    """E-mail address → (salt, scrypt hash of the password), in memory."""

    def __init__(self, credentials: Iterable[tuple[str, str]]) -> None:
        self._hashes: dict[str, tuple[bytes, bytes]] = {}
        for email, password in credentials:
            salt = secrets.token_bytes(16)
            self._hashes[email] = (salt, _scrypt(password, salt))
        # Unknown addresses are checked against this, so they take as long as known ones.
        self._decoy = (secrets.token_bytes(16), secrets.token_bytes(32))

    async def authenticate(self, email: str, password: str) -> str | None:
        email = email.strip().lower()
        known = self._hashes.get(email)
        salt, expected = known or self._decoy
        candidate = await anyio.to_thread.run_sync(_scrypt, password, salt)
        if hmac.compare_digest(candidate, expected) and known is not None:
            return email
        return None


class SessionAuth(AuthenticationBackend):
    """``session["user"]``: the cookie's session after ``POST /login``, or the token's."""

    async def authenticate(self, conn: HTTPConnection) -> tuple[AuthCredentials, BaseUser] | None:
        user = conn.session.get("user")
        if not isinstance(user, str):
            return None
        return AuthCredentials(["authenticated"]), SimpleUser(user)


class Credentials(BaseModel):
    email: str = Field(max_length=MAX_EMAIL_LENGTH)
    password: str = Field(max_length=MAX_PASSWORD_LENGTH)


class ErrorDetail(BaseModel):
    code: str
    message: str


class ErrorBody(BaseModel):
    """The kit's error shape, which the app's own errors share."""

    error: ErrorDetail


WRONG_CREDENTIALS: dict[int | str, dict[str, Any]] = {
    401: {"description": "Wrong e-mail address or password", "model": ErrorBody}
}


class SignedIn(BaseModel):
    user: str


class Token(BaseModel):
    access_token: str
    token_type: str = "bearer"
    expires_in: int


class TwoFactor(BaseModel):
    enrolled: bool
    verified_at: float | None
    method: str | None


class Me(BaseModel):
    user: str
    two_factor: TwoFactor


class Conversation(BaseModel):
    visitor: str
    subject: str


class Export(BaseModel):
    exported_by: str
    conversations: list[Conversation]


def default_settings() -> MFAGuardSettings:
    """``MFA_GUARD_*`` variables, with the example's issuer and, when none is set, an encryption
    key made for this run (enrolments live in memory and end with the process anyway)."""
    defaults: dict[str, Any] = {}
    if not os.environ.get("MFA_GUARD_ENCRYPTION_KEYS"):
        defaults["encryption_keys"] = [Fernet.generate_key().decode("ascii")]
    if not os.environ.get("MFA_GUARD_ISSUER"):
        defaults["issuer"] = ISSUER
    return MFAGuardSettings(**defaults)


async def seed_sites(sites: SiteDirectory) -> None:
    for site_id, name, members in SITES:
        await sites.save_site(site_id, name)
        for user_id, role in members:
            await sites.add_member(site_id, user_id, role)


@dataclass(frozen=True, slots=True)
class ExampleAPI:
    app: FastAPI
    guard: MFAGuard
    tokens: TokenSessions


def build(
    settings: MFAGuardSettings | None = None,
    *,
    clock: Clock = system_clock,
    session_secret: str | None = None,
) -> ExampleAPI:
    """The app and what tests reach into: the guard (its clock) and the tokens."""
    sites = MemorySiteDirectory()
    guard = MFAGuard(
        settings=settings or default_settings(),
        store=MemoryStore(),
        sites=sites,
        clock=clock,
    )
    accounts = Accounts((email, DEMO_PASSWORD) for email in DEMO_ACCOUNTS)
    tokens = TokenSessions(lifetime=TOKEN_LIFETIME, clock=clock)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await seed_sites(sites)
        yield
        await guard.aclose()
        await tokens.aclose()

    app = FastAPI(
        title="Acme Inbox API",
        lifespan=lifespan,
        middleware=[
            # Outermost first: the cookie session, then a bearer token's own session (it
            # replaces the cookie's for a request with a token), then who is signed in (from
            # whichever session the request has).
            Middleware(SessionMiddleware, secret_key=session_secret or secrets.token_urlsafe(48)),
            Middleware(TokenSessionMiddleware, sessions=tokens),
            Middleware(AuthenticationMiddleware, backend=SessionAuth()),
        ],
    )
    include_mfa_guard(app, guard)
    verified = RequireMFA(guard)

    @app.get("/health")
    async def health() -> dict[str, str]:
        return {"status": "ok"}

    @app.post("/login", response_model=SignedIn, responses=WRONG_CREDENTIALS)
    async def login(credentials: Credentials, request: Request) -> Response:
        """Signs in with a session cookie (for browsers)."""
        user = await accounts.authenticate(credentials.email, credentials.password)
        if user is None:
            return _wrong_credentials()
        request.session.clear()  # a new sign-in starts a new session
        request.session["user"] = user
        return JSONResponse(SignedIn(user=user).model_dump())

    @app.post("/logout", status_code=204)
    async def logout(request: Request) -> Response:
        request.session.clear()
        return Response(status_code=204)

    @app.post("/token", response_model=Token, responses=WRONG_CREDENTIALS)
    async def issue_token(credentials: Credentials) -> Response:
        """Signs in with a bearer token (for API clients): send ``Authorization: Bearer …``."""
        user = await accounts.authenticate(credentials.email, credentials.password)
        if user is None:
            return _wrong_credentials()
        access_token = secrets.token_urlsafe(32)  # 256 bits: the token is its own proof
        await tokens.start(access_token, {"user": user})
        token = Token(access_token=access_token, expires_in=tokens.lifetime)
        return JSONResponse(token.model_dump(), headers={"Cache-Control": "no-store"})

    @app.delete("/token", status_code=204)
    async def revoke_token(request: Request) -> Response:
        """Signs the token out: its session, and the second factor verified in it, end."""
        request.session.clear()  # as for a cookie: TokenSessionMiddleware deletes it
        return Response(status_code=204)

    # Every route of the router needs the second factor; a route that wants the user id and
    # the marker names the same dependency object again, and FastAPI runs it once. (A default
    # value, not Annotated[...]: with postponed annotations FastAPI could not see the local
    # ``verified`` inside the annotation's string.)
    api = APIRouter(prefix="/api", dependencies=[Depends(verified)], responses=refusal_responses())
    recently_verified = RequireRecentMFA(guard, max_age=EXPORT_MAX_AGE)

    @api.get("/me")
    async def me(mfa: MFASession = Depends(verified)) -> Me:
        return Me(
            user=mfa.user_id,
            two_factor=TwoFactor(
                enrolled=mfa.enrolled, verified_at=mfa.verified_at, method=mfa.method
            ),
        )

    @api.get("/conversations")
    async def conversations() -> list[Conversation]:
        return [Conversation(**conversation) for conversation in CONVERSATIONS]

    @api.post("/conversations/export")
    async def export(mfa: MFASession = Depends(recently_verified)) -> Export:
        return Export(
            exported_by=mfa.user_id,
            conversations=[Conversation(**conversation) for conversation in CONVERSATIONS],
        )

    app.include_router(api)
    return ExampleAPI(app=app, guard=guard, tokens=tokens)


def _wrong_credentials() -> Response:
    return json_error(401, "invalid_credentials", "Wrong e-mail address or password.")


def create_app() -> FastAPI:
    return build().app
