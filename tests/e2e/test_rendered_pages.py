"""The kit's pages as a person meets them in Chromium (Playwright, Debian's chromium, an app on a
real uvicorn server), at a desktop's width (1280 px) and a phone's (390 px):

- the enrolment QR code, screenshotted as the page shows it, reads back to exactly the otpauth
  URI the manual key implies, with a long issuer and a long e-mail address, in the light, dark
  and forced-colour schemes; it is at least 200 px wide on a phone and inside the card;
- every image of every kit page is visible and whole;
- a way out of every page: the app's sign-out from the challenge and from enrolment (optional or
  forced), and "Cancel" back to ``next`` when enrolment is optional.

Chromium is missing: skipped, as in tests/e2e/test_browser_story.py; a failure with CI=true.
"""

from __future__ import annotations

import contextlib
import secrets
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

import pyotp
import pytest
from playwright.sync_api import (
    Browser,
    BrowserContext,
    Page,
    ViewportSize,
    expect,
)
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.authentication import AuthenticationMiddleware
from starlette.middleware.sessions import SessionMiddleware
from starlette.requests import Request
from starlette.responses import PlainTextResponse, RedirectResponse, Response
from starlette.routing import Route
from starlette.types import Scope

from mfa_guard import MemoryStore, MFAGuard
from mfa_guard.stores.sites import MemorySiteDirectory, Role, SitePolicy
from mfa_guard.testing import current_code
from tests.apps import SESSION_SECRET, SessionAuth, settings_for
from tests.chromium import launched
from tests.live import served
from tests.rendering import horizontal_overflow, image_problems, qr_codes_on_screen

TIMEOUT_MS = 15_000
# 53 characters, and an address of 77: the QR code grows to its next versions with them.
LONG_ISSUER = "Acme Customer Support Inbox for Europe, Africa & Asia"
LONG_ACCOUNT = "maria-fernanda.rodriguez-castellanos+support@customer-service.acme-example.test"
FORCED = "forced.operator@acme-example.test"
ENROLLED = "enrolled.operator@acme-example.test"
DESKTOP: ViewportSize = {"width": 1280, "height": 900}
PHONE: ViewportSize = {"width": 390, "height": 844}
# The app's own CSRF token for its sign-out form, in the session (as many apps keep it).
APP_CSRF = "app_csrf"


@dataclass
class Site:
    """The app on its server: its base URL and its guard."""

    url: str
    guard: MFAGuard


def build(*, sign_out: dict[str, Any] | None) -> tuple[Starlette, MFAGuard]:
    """An app with a password sign-in (any name), a page of its own (``/work``), its sign-out
    (``POST /logout``, which wants the app's CSRF field, or ``GET /signout``) and a site that
    forces 2FA on FORCED at once."""
    overrides: dict[str, Any] = {
        "issuer": LONG_ISSUER,
        "exempt_paths": ["/login", "/logout", "/signout"],
    }
    if sign_out is not None:
        overrides["sign_out"] = sign_out
    sites = MemorySiteDirectory()

    @contextlib.asynccontextmanager
    async def seeded(app: Starlette) -> AsyncIterator[None]:
        await sites.save_site("acme", "Acme")
        await sites.add_member("acme", FORCED, Role.OPERATOR)
        await sites.set_policy("acme", SitePolicy(enforce=True, grace_deadline=0.0))
        yield

    def sign_out_fields(scope: Scope) -> dict[str, str]:
        return {APP_CSRF: str(scope["session"].get(APP_CSRF, ""))}

    guard = MFAGuard(
        settings=settings_for(**overrides),
        store=MemoryStore(),
        sites=sites,
        sign_out_fields=sign_out_fields,
    )

    async def home(request: Request) -> Response:
        return PlainTextResponse(f"home of {request.user.display_name or 'anonymous'}")

    async def work(request: Request) -> Response:
        return PlainTextResponse(f"the work of {request.user.display_name or 'anonymous'}")

    async def login(request: Request) -> Response:
        form = await request.form()
        request.session.clear()
        request.session["user"] = str(form["user"])
        request.session[APP_CSRF] = secrets.token_urlsafe(16)
        return RedirectResponse("/", status_code=303)

    async def logout(request: Request) -> Response:
        form = await request.form()
        expected = request.session.get(APP_CSRF)
        if not expected or form.get(APP_CSRF) != expected:
            return PlainTextResponse("sign-out refused: no CSRF token", status_code=403)
        request.session.clear()
        return RedirectResponse("/", status_code=303)

    async def signout_link(request: Request) -> Response:
        request.session.clear()
        return RedirectResponse("/", status_code=303)

    app = Starlette(
        routes=[
            Route("/", home),
            Route("/work", work),
            Route("/login", login, methods=["POST"]),
            Route("/logout", logout, methods=["POST"]),
            Route("/signout", signout_link),
            guard.mount(),
        ],
        middleware=[
            Middleware(SessionMiddleware, secret_key=SESSION_SECRET),
            Middleware(AuthenticationMiddleware, backend=SessionAuth()),
            guard.middleware(),
        ],
        lifespan=seeded,
    )
    return app, guard


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with launched() as browser:
        yield browser


@pytest.fixture
def site(request: pytest.FixtureRequest) -> Iterator[Site]:
    sign_out = getattr(request, "param", {"url": "/logout", "method": "post"})
    app, guard = build(sign_out=sign_out)
    with served(app) as url:
        yield Site(url, guard)


def person(
    browser: Browser, site: Site, viewport: ViewportSize, **options: Any
) -> tuple[BrowserContext, Page]:
    context = browser.new_context(base_url=site.url, viewport=viewport, **options)
    context.set_default_timeout(TIMEOUT_MS)
    return context, context.new_page()


def sign_in(context: BrowserContext, user: str) -> None:
    """The app's first factor (its own form, posted in this browser's cookie jar)."""
    response = context.request.post("/login", form={"user": user})
    assert response.ok, response.status


def enrol_over_the_api(context: BrowserContext) -> None:
    """The signed-in user turns 2FA on through the JSON API (as a single-page app would)."""
    setup = context.request.post("/mfa/api/totp/setup", data={})
    assert setup.ok, setup.text()
    # The set-up's code is of the step before now: the challenge may use now's.
    code = current_code(setup.json()["secret"], time.time() - 30)
    confirmed = context.request.post("/mfa/api/totp/confirm", data={"code": code})
    assert confirmed.ok, confirmed.text()


def expected_uri(manual_key: str, account: str) -> str:
    """The otpauth URI an authenticator app enrols from, built from what the page shows (the
    key for manual entry) by pyotp, as the Key Uri Format writes it."""
    secret = manual_key.replace(" ", "")
    return str(
        pyotp.TOTP(secret, issuer=LONG_ISSUER).provisioning_uri(
            name=account, issuer_name=LONG_ISSUER
        )
    )


def signed_out(page: Page) -> None:
    expect(page.locator("body")).to_have_text("home of anonymous")


# -- 1. the QR code scans as the page shows it ---------------------------------------------------

SCHEMES = [
    pytest.param(DESKTOP, {}, id="desktop"),
    pytest.param(PHONE, {}, id="phone"),
    pytest.param(PHONE, {"color_scheme": "dark"}, id="phone-dark"),
    pytest.param(DESKTOP, {"color_scheme": "dark", "forced_colors": "active"}, id="forced-dark"),
    pytest.param(PHONE, {"color_scheme": "light", "forced_colors": "active"}, id="forced-light"),
]


@pytest.mark.parametrize(("viewport", "scheme"), SCHEMES)
def test_the_enrolment_qr_code_reads_back_from_a_screenshot_of_the_page(
    browser: Browser, site: Site, viewport: ViewportSize, scheme: dict[str, Any]
) -> None:
    context, page = person(browser, site, viewport, **scheme)
    sign_in(context, LONG_ACCOUNT)
    page.goto("/mfa/enrol?next=/work")
    page.get_by_role("button", name="Set up an authenticator app").click()
    qr = page.locator(".qr svg")
    expect(qr).to_be_visible()
    manual_key = page.locator("#manual-key").inner_text()

    # What a phone's camera reads off the screen: exactly the URI of the key shown beside it.
    uri = expected_uri(manual_key, LONG_ACCOUNT)
    assert qr_codes_on_screen(page) == [uri]
    label, query = unquote(urlsplit(uri).path).lstrip("/"), parse_qs(urlsplit(uri).query)
    assert label == f"{LONG_ISSUER}:{LONG_ACCOUNT}"
    assert query["secret"] == [manual_key.replace(" ", "")]
    assert query["issuer"] == [LONG_ISSUER]

    # Big enough to aim a phone at, square, and whole inside the card on any screen.
    box, card = qr.bounding_box(), page.locator("main").bounding_box()
    assert box is not None
    assert card is not None
    assert box["width"] >= 200
    assert abs(box["width"] - box["height"]) < 1
    assert card["x"] <= box["x"]
    assert box["x"] + box["width"] <= card["x"] + card["width"]
    assert box["x"] + box["width"] <= viewport["width"]
    assert horizontal_overflow(page) == 0
    assert image_problems(page) == []
    context.close()


def test_every_kit_page_shows_its_images_whole(browser: Browser, site: Site) -> None:
    """Each page of the kit, at both widths: images visible, drawn whole, nothing sideways."""
    for viewport in (DESKTOP, PHONE):
        context, page = person(browser, site, viewport)
        sign_in(context, f"{viewport['width']}-{LONG_ACCOUNT}")
        page.goto("/mfa/enrol")
        page.get_by_role("button", name="Set up an authenticator app").click()
        expect(page.locator(".qr svg")).to_be_visible()
        seen = {"enrolment, QR code": image_problems(page)}
        overflow = {"enrolment, QR code": horizontal_overflow(page)}
        key = page.locator("#manual-key").inner_text().replace(" ", "")
        page.get_by_label("Code from your app").fill(current_code(key, time.time() - 30))
        page.get_by_role("button", name="Confirm and turn on").click()
        expect(page.locator("#recovery-codes")).to_be_visible()
        seen["recovery codes"] = image_problems(page)
        overflow["recovery codes"] = horizontal_overflow(page)
        sign_in(context, f"{viewport['width']}-{LONG_ACCOUNT}")
        page.goto("/mfa/challenge")
        seen["challenge"] = image_problems(page)
        overflow["challenge"] = horizontal_overflow(page)
        # A form whose CSRF token went stale: the error page.
        page.locator("input[name=csrf_token]").first.evaluate("input => { input.value = 'x'; }")
        page.get_by_label("Authentication code").fill("000000")
        page.get_by_role("button", name="Verify", exact=True).click()
        expect(page.get_by_role("heading", name="Request refused")).to_be_visible()
        seen["error"] = image_problems(page)
        overflow["error"] = horizontal_overflow(page)
        page.goto("/mfa/challenge")
        page.get_by_label("Authentication code").fill(current_code(key, time.time()))
        page.get_by_role("button", name="Verify", exact=True).click()
        page.goto("/mfa/settings")
        expect(page.get_by_role("heading", level=1)).to_be_visible()
        seen["/mfa/settings"] = image_problems(page)
        overflow["/mfa/settings"] = horizontal_overflow(page)
        assert all(not problems for problems in seen.values()), (viewport, seen)
        assert all(pixels == 0 for pixels in overflow.values()), (viewport, overflow)
        context.close()


# -- 2. a way out of every page ------------------------------------------------------------------


@pytest.mark.parametrize("viewport", [DESKTOP, PHONE], ids=["desktop", "phone"])
def test_a_person_asked_for_a_code_signs_out_from_the_challenge(
    browser: Browser, site: Site, viewport: ViewportSize
) -> None:
    context, page = person(browser, site, viewport)
    sign_in(context, ENROLLED)
    enrol_over_the_api(context)
    sign_in(context, ENROLLED)  # a new session: asked for a code
    page.goto("/work")
    expect(page).to_have_url(f"{site.url}/mfa/challenge?next=/work")
    header = page.get_by_role("banner")
    expect(header).to_contain_text(f"Signed in as {ENROLLED}. Not you?")
    sign_out = header.get_by_role("button", name="Sign out")
    box = sign_out.bounding_box()
    assert box is not None
    assert box["x"] + box["width"] <= viewport["width"]
    sign_out.click()  # the app's form, with the app's CSRF field
    expect(page).to_have_url(f"{site.url}/")
    signed_out(page)
    page.goto("/work")
    expect(page.locator("body")).to_have_text("the work of anonymous")
    context.close()


@pytest.mark.parametrize("viewport", [DESKTOP, PHONE], ids=["desktop", "phone"])
def test_a_person_forced_to_enrol_can_only_sign_out(
    browser: Browser, site: Site, viewport: ViewportSize
) -> None:
    context, page = person(browser, site, viewport)
    sign_in(context, FORCED)
    page.goto("/work")
    expect(page).to_have_url(f"{site.url}/mfa/enrol?next=/work")
    expect(page.locator("#enrolment-notice")).to_be_visible()
    expect(page.get_by_role("link", name="Cancel")).to_have_count(0)
    page.get_by_role("button", name="Set up an authenticator app").click()
    expect(page.locator(".qr svg")).to_be_visible()
    expect(page.get_by_role("link", name="Cancel")).to_have_count(0)
    page.get_by_role("banner").get_by_role("button", name="Sign out").click()
    signed_out(page)
    context.close()


@pytest.mark.parametrize("viewport", [DESKTOP, PHONE], ids=["desktop", "phone"])
def test_a_person_cancels_an_optional_enrolment_back_to_next(
    browser: Browser, site: Site, viewport: ViewportSize
) -> None:
    context, page = person(browser, site, viewport)
    sign_in(context, LONG_ACCOUNT)
    page.goto("/mfa/enrol?next=/work")
    page.get_by_role("link", name="Cancel").click()
    expect(page).to_have_url(f"{site.url}/work")
    expect(page.locator("body")).to_have_text(f"the work of {LONG_ACCOUNT}")

    # From the QR code too; and a next= to another site leads home, never there.
    page.goto("/mfa/enrol?next=/work")
    page.get_by_role("button", name="Set up an authenticator app").click()
    expect(page.locator(".qr svg")).to_be_visible()
    page.get_by_role("link", name="Cancel").click()
    expect(page).to_have_url(f"{site.url}/work")
    page.goto("/mfa/enrol?next=//evil.test/")
    expect(page.get_by_role("link", name="Cancel")).to_have_attribute("href", "/")

    # And out altogether, from the same page.
    page.goto("/mfa/enrol?next=/work")
    page.get_by_role("button", name="Sign out").click()
    signed_out(page)
    context.close()


@pytest.mark.parametrize("site", [{"url": "/signout", "method": "get"}], indirect=True)
def test_a_sign_out_link_leads_out_of_the_challenge(browser: Browser, site: Site) -> None:
    context, page = person(browser, site, PHONE)
    sign_in(context, ENROLLED)
    enrol_over_the_api(context)
    sign_in(context, ENROLLED)
    page.goto("/mfa/challenge?next=/work")
    page.get_by_role("banner").get_by_role("link", name="Sign out").click()
    signed_out(page)
    context.close()


@pytest.mark.parametrize("site", [None], indirect=True)
def test_no_sign_out_configured_no_header(browser: Browser, site: Site) -> None:
    context, page = person(browser, site, DESKTOP)
    sign_in(context, LONG_ACCOUNT)
    page.goto("/mfa/enrol")
    expect(page.get_by_role("heading", name="Set up two-factor authentication")).to_be_visible()
    expect(page.get_by_role("banner")).to_have_count(0)
    expect(page.get_by_role("link", name="Cancel")).to_be_visible()
    context.close()
