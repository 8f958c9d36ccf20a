"""The demo app: password sign-in (the first factor) guarded by mfa_guard (the second).

Operators live in memory; the MFA data and the sign-ins are in a database, a SQLite file under
``data_dir`` next to the generated encryption key and session secret, so a restart keeps
enrolments. Two sites are seeded at start-up into the same database (see
:mod:`examples.inbox.sites`): Acme, whose owner can force its operators to turn on 2FA, and Solo;
a restart keeps their policies. ``/signup`` makes a new operator of Acme (in memory too: a
restart forgets them).

Text messages go to an outbox in memory instead of a phone: ``GET /outbox`` lists them, so the SMS
codes can be tried without a phone or an SMS provider account. "Remember this browser" is on: the
remembered browsers live in the same database, listed on the kit's settings page. Passkeys and
security keys are on for ``http://localhost:$PORT`` (browsers offer them on plain http:// at
localhost only).

Sign-ins are kept on the server too (:mod:`examples.inbox.sign_ins`), in the same database: the
cookie session holds a random id whose hash the server keeps, and sign-out deletes it, so a copy
of the cookie taken before sign-out is signed out with it.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import logging
import os
import re
import secrets
from collections.abc import AsyncIterator, Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import anyio.to_thread
from cryptography.fernet import Fernet
from starlette.applications import Starlette
from starlette.authentication import (
    AuthCredentials,
    AuthenticationBackend,
    AuthenticationError,
    BaseUser,
    SimpleUser,
)
from starlette.datastructures import FormData
from starlette.middleware import Middleware
from starlette.middleware.authentication import AuthenticationMiddleware
from starlette.middleware.sessions import SessionMiddleware
from starlette.requests import HTTPConnection, Request
from starlette.responses import JSONResponse, PlainTextResponse, RedirectResponse, Response
from starlette.routing import Route
from starlette.templating import Jinja2Templates

from examples.inbox.forms import FormRefused, checked_form, csrf_token, field, same_origin
from examples.inbox.i18n import N_, PageLanguage, install, page_language
from examples.inbox.security_log import SecurityLogPages, security_log_path
from examples.inbox.sign_ins import SignIns
from examples.inbox.sites import (
    ROLE_WORDS,
    SIGN_UP_SITE,
    SitePages,
    seed_sites,
    settings_path,
    team_path,
)
from mfa_guard import (
    Clock,
    Denied,
    LoggingEventSink,
    MFAGuard,
    MFAGuardError,
    MFAGuardSettings,
    ScryptCost,
    StoreUnavailable,
    client_ip,
    safe_next,
    system_clock,
)
from mfa_guard.notifications import LoggingNotifier, NotifyingSink
from mfa_guard.sms import OutboxSMS
from mfa_guard.stores import Role
from mfa_guard.stores.sql import SQLDeviceStore, SQLEventStore, SQLSiteDirectory, SQLStore

logger = logging.getLogger("examples.inbox")

HERE = Path(__file__).resolve().parent
DEFAULT_DATA_DIR = HERE / ".data"
TEMPLATES = HERE / "templates"

ISSUER = "Acme Inbox"
DEMO_PASSWORD = "demo"
DEMO_ACCOUNTS = ("owner@acme.test", "agent@acme.test", "solo@example.test")
INBOX_PATH = "/inbox"
LOGIN_PATH = "/login"
SIGNUP_PATH = "/signup"
OUTBOX_PATH = "/outbox"
# The kit's default exempt paths; sign-up, which starts a new session as sign-in does; and the
# outbox: a user being challenged must read the code.
EXEMPT_PATHS = ["/login", "/logout", "/static", "/health", SIGNUP_PATH, OUTBOX_PATH]
# Texts go to the outbox; numbers of these countries may get them (France, the UK, the United
# States, Canada, Germany, Spain, Italy, Belgium, Switzerland, the Netherlands).
SMS_DEFAULTS: dict[str, Any] = {
    "enabled": True,
    "provider": "outbox",
    "allowed_regions": ["FR", "GB", "US", "CA", "DE", "ES", "IT", "BE", "CH", "NL"],
}
# "Remember this browser for 30 days" on the challenge. cookie_secure is off so the device cookie
# works on http://127.0.0.1, as the session's https_only is; turn it on behind TLS.
TRUSTED_DEVICES_DEFAULTS: dict[str, Any] = {"enabled": True, "cookie_secure": False}
# The kit's pages offer the demo's sign-out (POST /logout, an exempt path) in their header.
SIGN_OUT_DEFAULTS: dict[str, Any] = {"url": "/logout", "method": "post"}
# Where ``python -m examples.inbox`` serves without $PORT.
DEFAULT_PORT = 8000
# Passkeys and security keys are bound to a host name, and browsers offer them over http:// at
# localhost only: the demo turns them on for http://localhost:$PORT, where it is visited.
PASSKEY_HOST = "localhost"
# The session cookie's lifetime, and a sign-in's on the server (from its start, not renewed).
SESSION_MAX_AGE = 14 * 24 * 3600  # 14 days, in seconds
# Inputs longer than this are refused before any hashing.
MAX_EMAIL_LENGTH = 254
MAX_PASSWORD_LENGTH = 1024
# New accounts' passwords (NIST SP 800-63B 5.1.1.2); the seeded ones all stay "demo".
MIN_NEW_PASSWORD_LENGTH = 8
# A plain address: the demo's accounts are e-mail addresses, and so are its users' ids.
EMAIL = re.compile(r"[a-z0-9._%+-]+@[a-z0-9-]+(\.[a-z0-9-]+)*\.[a-z]{2,}")

# scrypt cost for the demo's passwords: 16 MiB and a few tens of milliseconds per check.
PASSWORD_COST = ScryptCost(n=2**14, r=8, p=1)
# The kit's own cost for recovery codes (its default).
RECOVERY_COST = ScryptCost()


@dataclass(frozen=True, slots=True)
class Conversation:
    """A visitor's conversation: their words as they wrote them (no msgids), and how long they
    have waited, which the page words in its language."""

    visitor: str
    subject: str
    preview: str
    waiting_minutes: int


CONVERSATIONS = (
    Conversation(
        "Maya Lindqvist", "Invoice for March", "Could you resend the invoice with our VAT…", 2
    ),
    Conversation(
        "Tomás Ferreira", "Cannot reset my password", "The link in the e-mail has expired…", 9
    ),
    Conversation(
        "Aiko Tanaka", "Feature request: dark mode", "Our night shift would love a dark…", 60
    ),
    Conversation("Samuel Okoro", "Shipping to Lagos", "Do you deliver to Nigeria, and how…", 180),
)
# What the demo says when its data does not answer (the page's and the plain-text answer).
UNAVAILABLE_HEADING = N_("Service unavailable")
UNAVAILABLE = N_("The inbox cannot reach its data right now. Please try again soon.")


def _hash_password(password: str, salt: bytes, cost: ScryptCost) -> bytes:
    return hashlib.scrypt(
        password.encode("utf-8"), salt=salt, n=cost.n, r=cost.r, p=cost.p, dklen=32
    )


class Accounts:
    """The operators, in memory: e-mail address → (salt, scrypt hash of the password)."""

    def __init__(
        self, credentials: Iterable[tuple[str, str]], cost: ScryptCost = PASSWORD_COST
    ) -> None:
        self._cost = cost
        self._hashes: dict[str, tuple[bytes, bytes]] = {}
        for email, password in credentials:
            salt = secrets.token_bytes(16)
            self._hashes[_normalise_email(email)] = (salt, _hash_password(password, salt, cost))
        # Unknown addresses are checked against this, so they take as long as known ones.
        self._decoy = (secrets.token_bytes(16), secrets.token_bytes(32))

    def __contains__(self, email: str) -> bool:
        return email in self._hashes

    async def add(self, email: str, password: str) -> bool:
        """A new account; ``False`` if the address already has one."""
        email = _normalise_email(email)
        if email in self._hashes:
            return False
        salt = secrets.token_bytes(16)
        hashed = await anyio.to_thread.run_sync(_hash_password, password, salt, self._cost)
        if email in self._hashes:  # taken by another sign-up while this one was hashing
            return False
        self._hashes[email] = (salt, hashed)
        return True

    async def authenticate(self, email: str, password: str) -> str | None:
        """The account's canonical e-mail address if the password matches, else ``None``."""
        email = _normalise_email(email)
        if len(email) > MAX_EMAIL_LENGTH or len(password) > MAX_PASSWORD_LENGTH:
            return None
        known = self._hashes.get(email)
        salt, expected = known or self._decoy
        candidate = await anyio.to_thread.run_sync(_hash_password, password, salt, self._cost)
        if hmac.compare_digest(candidate, expected) and known is not None:
            return email
        return None


def _normalise_email(email: str) -> str:
    return email.strip().lower()


class SessionAuth(AuthenticationBackend):
    """The first factor's result: ``session["user"]``, set by a successful sign-in, while that
    sign-in is live on the server (sign-out deletes it, for every copy of the cookie)."""

    def __init__(self, accounts: Accounts, sign_ins: SignIns) -> None:
        self.accounts = accounts
        self.sign_ins = sign_ins

    async def authenticate(self, conn: HTTPConnection) -> tuple[AuthCredentials, BaseUser] | None:
        # One indexed read (by primary key) per request with a signed-in cookie: the app's own
        # authentication, before the kit's middleware, whose hot path stays free of any call.
        try:
            user = await self.sign_ins.user(conn.session)
        except StoreUnavailable as error:
            # Fail closed: no cookie gets in unchecked (the answer is 503, see auth_unavailable).
            raise AuthenticationError("sign-ins unavailable") from error
        if user is None or user not in self.accounts:
            return None
        return AuthCredentials(["authenticated"]), SimpleUser(user)


def _secret_file(path: Path, make: Callable[[], str]) -> str:
    """The secret stored in ``path``, created (owner-only, mode 0600) on the first run.

    The file appears whole or not at all (written aside, then linked into place), so processes
    starting together all read the same secret, never an empty one.
    """
    try:
        return path.read_text("ascii").strip()
    except FileNotFoundError:
        pass
    aside = path.with_name(f".{path.name}.{secrets.token_hex(8)}")
    fd = os.open(aside, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="ascii") as file:
        file.write(make() + "\n")
    try:
        os.link(aside, path)
    except FileExistsError:
        pass  # another process linked its secret first: everyone uses that one
    finally:
        aside.unlink()
    return path.read_text("ascii").strip()


def _field(form: FormData, name: str) -> str:
    value = form.get(name)
    return value if isinstance(value, str) else ""


def sign_up_problem(email: str, password: str, lang: PageLanguage) -> str | None:
    """Why the sign-up form's input is refused (in ``lang``), or ``None``."""
    if not EMAIL.fullmatch(email) or len(email) > MAX_EMAIL_LENGTH:
        return lang.gettext("Enter an e-mail address such as name@example.com.")
    if not MIN_NEW_PASSWORD_LENGTH <= len(password) <= MAX_PASSWORD_LENGTH:
        return lang.gettext(
            "Choose a password of %(min)s to %(max)s characters.",
            min=MIN_NEW_PASSWORD_LENGTH,
            max=MAX_PASSWORD_LENGTH,
        )
    return None


def _iso_text(timestamp: float) -> str:
    """For ``<time datetime=…>``: ``2026-11-27T20:45:00Z``."""
    return datetime.fromtimestamp(timestamp, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _new_fernet_key() -> str:
    return Fernet.generate_key().decode("ascii")


def _new_session_secret() -> str:
    return secrets.token_urlsafe(48)


def demo_settings(encryption_key: str) -> MFAGuardSettings:
    """Settings from the environment (``MFA_GUARD_*``, ``.env``), with the demo's defaults for
    the encryption key, issuer, exempt paths, SMS, trusted devices and passkeys (for
    ``http://localhost:$PORT``) when the environment does not set them."""
    defaults: dict[str, Any] = {}
    if not os.environ.get("MFA_GUARD_ENCRYPTION_KEYS"):
        defaults["encryption_keys"] = [encryption_key]
    if not os.environ.get("MFA_GUARD_ISSUER"):
        defaults["issuer"] = ISSUER
    if not os.environ.get("MFA_GUARD_EXEMPT_PATHS"):
        defaults["exempt_paths"] = EXEMPT_PATHS
    # Field by field: MFA_GUARD_SMS__* variables win, the demo fills in the others.
    defaults["sms"] = {
        name: value
        for name, value in SMS_DEFAULTS.items()
        if not os.environ.get(f"MFA_GUARD_SMS__{name.upper()}")
    }
    # The way out of the kit's pages: its header posts to the demo's own sign-out.
    defaults["sign_out"] = {
        name: value
        for name, value in SIGN_OUT_DEFAULTS.items()
        if not os.environ.get(f"MFA_GUARD_SIGN_OUT__{name.upper()}")
    }
    defaults["trusted_devices"] = {
        name: value
        for name, value in TRUSTED_DEVICES_DEFAULTS.items()
        if not os.environ.get(f"MFA_GUARD_TRUSTED_DEVICES__{name.upper()}")
    }
    # Passkeys at http://localhost:$PORT, unless the environment says where they are bound
    # (the RP ID and its origins go together: one without the other is no configuration).
    if not any(os.environ.get(f"MFA_GUARD_WEBAUTHN__{name}") for name in ("RP_ID", "ORIGINS")):
        port = os.environ.get("PORT") or str(DEFAULT_PORT)
        defaults["webauthn"] = {
            "rp_id": PASSKEY_HOST,
            "origins": [f"http://{PASSKEY_HOST}:{port}"],
        }
    return MFAGuardSettings(**defaults)


def create_app(
    data_dir: Path | None = None,
    *,
    settings: MFAGuardSettings | None = None,
    clock: Clock | None = None,
    password_kdf: ScryptCost = PASSWORD_COST,
    recovery_kdf: ScryptCost = RECOVERY_COST,
) -> Starlette:
    """The demo; ``password_kdf`` and ``recovery_kdf`` are the scrypt costs of the operators'
    passwords and of the kit's recovery codes (tests pass ``mfa_guard.testing.CHEAP_KDF``)."""
    data_dir = (data_dir or DEFAULT_DATA_DIR).resolve()
    data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    session_secret = _secret_file(data_dir / "session.secret", _new_session_secret)
    if settings is None:
        settings = demo_settings(_secret_file(data_dir / "encryption.key", _new_fernet_key))
    if os.environ.get("MFA_GUARD_DATABASE_URL"):
        store = SQLStore.from_settings(settings)
    else:
        store = SQLStore(f"sqlite+aiosqlite:///{data_dir / 'inbox.db'}")
    # Sites, members and policies in the same database (and engine) as the enrolments.
    sites = SQLSiteDirectory.sharing(store)
    clock = clock or system_clock
    # Demo only: the texts stay in memory, and whoever is signed in reads the codes at /outbox.
    outbox = OutboxSMS(clock=clock) if settings.sms.provider == "outbox" else None
    guard = MFAGuard(
        settings=settings,
        store=store,
        clock=clock,
        sms=outbox,
        sites=sites,
        # Remembered browsers, in the enrolments' database too (used when trusted devices are on).
        devices=SQLDeviceStore.sharing(store),
        # A real app e-mails these; the demo logs "would notify …" lines instead.
        events=NotifyingSink(LoggingEventSink(), LoggingNotifier()),
        recovery_kdf=recovery_kdf,
        # The security log (the owners' "Security log" page, each user's recent activity), in
        # the enrolments' database too.
        event_store=SQLEventStore.sharing(store),
    )
    shows_outbox = outbox is not None and guard.sms is outbox
    # Sign-ins on the server, in the enrolments' database (and engine) too.
    sign_ins = SignIns(store.engine, clock=clock, lifetime=SESSION_MAX_AGE)
    accounts = Accounts(((email, DEMO_PASSWORD) for email in DEMO_ACCOUNTS), password_kdf)
    templates = Jinja2Templates(directory=TEMPLATES)
    install(templates.env)  # {% trans %}, _() and dates in the page's language
    templates.env.filters["iso"] = _iso_text
    templates.env.globals["security_log_path"] = security_log_path
    mfa_settings = f"{settings.mount_path}/settings"

    def render(
        request: Request, name: str, context: dict[str, Any], status_code: int = 200
    ) -> Response:
        user = request.user.display_name if request.user.is_authenticated else None
        full = {
            # The language the kit's pages speak for this request (<html lang dir>, the texts).
            "lang": page_language(guard, request),
            "issuer": settings.issuer,
            "user": user,
            "mfa_settings": mfa_settings,
            "enrol_path": f"{settings.mount_path}/enrol",
            # The kit's banner data, read from the marker the middleware left in the scope
            # (with the sites' names when the handler asked named_enrolment_notice first).
            "enrolment_notice": guard.enrolment_notice(request.scope),
            # Called by the templates with a form only: other pages start no session.
            "csrf_token": lambda: csrf_token(request.session),
            **context,
        }
        response = templates.TemplateResponse(request, name, full, status_code=status_code)
        response.headers["Cache-Control"] = "no-store"
        return response

    def error_page(request: Request, status_code: int, heading: str, message: str) -> Response:
        """The error page; ``heading`` and ``message`` are msgids of the demo's."""
        lang = page_language(guard, request)
        context = {"heading": lang.gettext(heading), "message": lang.gettext(message)}
        return render(request, "error.html", context, status_code)

    def auth_unavailable(conn: HTTPConnection, error: AuthenticationError) -> Response:
        """The answer when the sign-ins cannot be read: 503, never the page unchecked."""
        return PlainTextResponse(
            page_language(guard, conn).gettext(UNAVAILABLE),
            status_code=503,
            headers={"Retry-After": "5", "Cache-Control": "no-store"},
        )

    async def home(request: Request) -> Response:
        target = INBOX_PATH if request.user.is_authenticated else LOGIN_PATH
        return RedirectResponse(target, status_code=303)

    async def login_form(request: Request) -> Response:
        next_path = safe_next(request.query_params.get("next"), INBOX_PATH)
        return render(request, "login.html", {"next": next_path, "email": "", "error": None})

    async def login(request: Request) -> Response:
        if not same_origin(request):
            refused = page_language(guard, request).gettext("Cross-site sign-in refused.")
            return PlainTextResponse(refused, status_code=403)
        form = await request.form(max_files=0, max_fields=8)
        email, password = _field(form, "email"), _field(form, "password")
        next_path = safe_next(_field(form, "next"), INBOX_PATH)
        user = await accounts.authenticate(email, password)
        if user is None:
            context = {
                "next": next_path,
                "email": email[:MAX_EMAIL_LENGTH],
                "error": page_language(guard, request).gettext("Wrong e-mail address or password."),
            }
            return render(request, "login.html", context, status_code=400)
        await sign_ins.start(request.session, user)  # a new sign-in starts a new session
        return RedirectResponse(next_path, status_code=303)

    async def signup_form(request: Request) -> Response:
        return render(request, "signup.html", {"email": "", "error": None})

    async def signup(request: Request) -> Response:
        """A new operator of Acme. When a site of theirs enforces 2FA, the set-up starts at
        once: they land on the QR code."""
        form = await checked_form(request)
        email = _normalise_email(field(form, "email"))
        password = field(form, "password")
        lang = page_language(guard, request)
        problem = sign_up_problem(email, password, lang)
        status_code = 400
        if problem is None and not await accounts.add(email, password):
            problem = lang.gettext("That e-mail address already has an account: sign in.")
            status_code = 409
        if problem is not None:
            context = {"email": email[:MAX_EMAIL_LENGTH], "error": problem}
            return render(request, "signup.html", context, status_code=status_code)
        service = guard.site_service
        if not await service.add_member(SIGN_UP_SITE, email, Role.OPERATOR, by=email):
            logger.warning("the demo site %r is missing: %s joined no site", SIGN_UP_SITE, email)
        await sign_ins.start(request.session, email)  # a new sign-in starts a new session
        if not (await service.enforcement(email)).required:
            return RedirectResponse(INBOX_PATH, status_code=303)
        # The set-up is bound to this new session (its marker's nonce). The scope's user is
        # still the anonymous one the request came with: the marker is read for ``email``.
        marker = await guard.session_marker(request.scope, user_id=email)
        if marker is not None:
            setup = await guard.service.begin_setup(
                email, email, client_ip(request.scope, settings), session=marker.nonce
            )
            if isinstance(setup, Denied):  # a phone first (require_phone_for_enrolment)
                logger.info("%s must add a phone before the QR code: %s", email, setup.reason)
        return RedirectResponse(f"{settings.mount_path}/enrol?next={INBOX_PATH}", status_code=303)

    async def logout(request: Request) -> Response:
        if not same_origin(request):
            refused = page_language(guard, request).gettext("Cross-site sign-out refused.")
            return PlainTextResponse(refused, status_code=403)
        # Deleted on the server before the cookie is cleared: a copy of it is signed out too.
        # Remembered browsers and the user's other sign-ins stay.
        await sign_ins.end(request.session)
        return RedirectResponse(LOGIN_PATH, status_code=303)

    async def inbox(request: Request) -> Response:
        if not request.user.is_authenticated:
            return RedirectResponse(f"{LOGIN_PATH}?next={INBOX_PATH}", status_code=303)
        # Read from the session, fresh: the guard's middleware has just let the request in.
        marker = await guard.session_marker(request.scope)
        memberships = await guard.site_service.memberships(request.user.display_name)
        # Names the sites in the banner ("Acme requires…"); render's enrolment_notice then does.
        await guard.named_enrolment_notice(request.scope)
        context = {
            "conversations": CONVERSATIONS,
            "two_factor_on": marker is not None and marker.enrolled,
            "outbox": OUTBOX_PATH if shows_outbox else None,
            "sites": [
                {
                    "name": membership.site.name,
                    "role": ROLE_WORDS[membership.role],
                    "enforced": membership.site.policy.enforce,
                    "team": team_path(membership.site.id),
                    "settings": settings_path(membership.site.id),
                    "owner": membership.role is Role.OWNER,
                }
                for membership in memberships
            ],
        }
        return render(request, "inbox.html", context)

    async def outbox_messages(request: Request) -> Response:
        """Demo only: the texts the demo "sent", newest first, codes included. A real app has
        no such page: its texts go to the user's phone through a provider."""
        if outbox is None or not shows_outbox:
            return JSONResponse({"error": "Texts do not go to the outbox here."}, status_code=404)
        if not request.user.is_authenticated:
            return JSONResponse({"error": "Sign in first."}, status_code=401)
        messages = [
            {"to": message.to, "text": message.text, "at": message.at}
            for message in reversed(outbox.messages)
        ]
        return JSONResponse(messages, headers={"Cache-Control": "no-store"})

    async def health(request: Request) -> Response:
        return PlainTextResponse("ok")

    async def ready(request: Request) -> Response:
        # For a load balancer: 503 while a backend the guard needs does not answer.
        readiness = await guard.check()
        return JSONResponse(
            readiness.as_json(),
            status_code=200 if readiness.ready else 503,
            headers={"Cache-Control": "no-store"},
        )

    async def form_refused(request: Request, exc: Exception) -> Response:
        if not isinstance(exc, FormRefused):
            raise exc
        return error_page(request, exc.status_code, exc.heading, exc.message)

    async def unavailable(request: Request, exc: Exception) -> Response:
        if not isinstance(exc, MFAGuardError):
            raise exc
        cause = exc.__cause__
        logger.warning(
            "the inbox failed closed: %s (%s)",
            exc.message,
            type(cause).__name__ if cause is not None else "no cause",
        )
        response = error_page(request, 503, UNAVAILABLE_HEADING, UNAVAILABLE)
        response.headers["Retry-After"] = "5"
        return response

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        try:
            await sign_ins.create_table()
            await seed_sites(sites)
            yield
        finally:
            await guard.aclose()
            await store.close()

    app = Starlette(
        routes=[
            Route("/", home),
            Route(LOGIN_PATH, login_form, methods=["GET"]),
            Route(LOGIN_PATH, login, methods=["POST"]),
            Route(SIGNUP_PATH, signup_form, methods=["GET"]),
            Route(SIGNUP_PATH, signup, methods=["POST"]),
            Route("/logout", logout, methods=["POST"]),
            Route(INBOX_PATH, inbox),
            *SitePages(guard, render, login_path=LOGIN_PATH).routes(),
            *SecurityLogPages(guard, render, login_path=LOGIN_PATH).routes(),
            Route("/health", health),
            Route("/health/ready", ready),
            Route(OUTBOX_PATH, outbox_messages),
            guard.mount(),
        ],
        middleware=[
            # https_only is off so the demo works on http://127.0.0.1; turn it on behind TLS.
            Middleware(
                SessionMiddleware,
                secret_key=session_secret,
                max_age=SESSION_MAX_AGE,
                https_only=False,
                same_site="lax",
            ),
            Middleware(
                AuthenticationMiddleware,
                backend=SessionAuth(accounts, sign_ins),
                on_error=auth_unavailable,
            ),
            guard.middleware(),
        ],
        exception_handlers={FormRefused: form_refused, MFAGuardError: unavailable},
        lifespan=lifespan,
    )
    app.state.guard = guard
    app.state.store = store
    app.state.sites = sites
    app.state.accounts = accounts
    app.state.outbox = outbox
    app.state.sign_ins = sign_ins
    return app
