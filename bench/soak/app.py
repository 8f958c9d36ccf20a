"""The app the soak's workers serve: a first factor that trusts the form (any user id signs in),
guarded by the kit with everything on a shared backend: the SQL store, site directory, device
store and security log on PostgreSQL, failure counts and send budgets in Redis, texts written
to files the load generator reads (one per phone number, the newest text).

Built from the environment: the kit's ``MFA_GUARD_*`` settings, and ``SOAK_SESSION_SECRET``,
``SOAK_TEXTS`` (the folder of texts), ``SOAK_SITE`` (the site every new account joins).
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import AsyncIterator
from pathlib import Path

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.authentication import AuthenticationMiddleware
from starlette.middleware.sessions import SessionMiddleware
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, RedirectResponse, Response
from starlette.routing import Route

from bench.apps import SessionAuth
from mfa_guard import MFAGuard, MFAGuardSettings, StoreUnavailable
from mfa_guard.stores import Role
from mfa_guard.stores.sql import SQLDeviceStore, SQLEventStore, SQLSiteDirectory, SQLStore


class TextFiles:
    """An SMS provider that writes each text to ``folder/<number>.txt``, replacing the number's
    previous one (written aside, then renamed: a reader never sees half a text)."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder

    async def send(self, to: str, text: str) -> None:
        final = self.folder / f"{to}.txt"
        partial = final.with_suffix(f".{os.getpid()}.part")
        partial.write_text(text, encoding="utf-8")
        partial.replace(final)


def create_app() -> Starlette:
    settings = MFAGuardSettings()
    site = os.environ["SOAK_SITE"]
    # The controller made the tables before the workers started.
    store = SQLStore.from_settings(settings, create_tables=False)
    sites = SQLSiteDirectory.sharing(store)
    guard = MFAGuard(
        settings=settings,
        store=store,
        sites=sites,
        devices=SQLDeviceStore.sharing(store),
        event_store=SQLEventStore.sharing(store),
        sms=TextFiles(Path(os.environ["SOAK_TEXTS"])),
    )

    async def sign_in(request: Request) -> Response:
        form = await request.form()
        request.session.clear()
        request.session["user"] = str(form["user"])
        return RedirectResponse("/", status_code=303)

    async def sign_up(request: Request) -> Response:
        """A new operator of the site: a member from now on, then signed in."""
        user = str((await request.form())["user"])
        try:
            await sites.add_member(site, user, Role.OPERATOR)
        except StoreUnavailable:
            return JSONResponse({"error": "unavailable"}, status_code=503)
        request.session.clear()
        request.session["user"] = user
        return RedirectResponse("/", status_code=303)

    async def home(request: Request) -> Response:
        return PlainTextResponse(f"inbox of {request.user.display_name}")

    async def data(request: Request) -> Response:
        return JSONResponse({"conversations": 4})

    async def health(request: Request) -> Response:
        return PlainTextResponse("ok")

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        yield
        await guard.aclose()
        await store.close()

    # The security log keeps every event; the audit lines would only repeat it in the log.
    logging.getLogger("mfa_guard.audit").setLevel(logging.ERROR)
    return Starlette(
        routes=[
            Route("/", home),
            Route("/api/data", data),
            Route("/health", health),
            Route("/login", sign_in, methods=["POST"]),
            Route("/signup", sign_up, methods=["POST"]),
            guard.mount(),
        ],
        middleware=[
            Middleware(
                SessionMiddleware, secret_key=os.environ["SOAK_SESSION_SECRET"], https_only=False
            ),
            Middleware(AuthenticationMiddleware, backend=SessionAuth()),
            guard.middleware(),
        ],
        lifespan=lifespan,
    )
