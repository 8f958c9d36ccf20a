"""What the browser tests of passkeys share: the app served on localhost with Chromium's virtual
authenticators, a person at a page, and what the eye needs of it."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from playwright.sync_api import (
    Browser,
    BrowserContext,
    CDPSession,
    Page,
    ViewportSize,
    expect,
)
from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from mfa_guard.testing import current_code
from tests.apps import GuardedApp, build_app
from tests.chromium import TIMEOUT_MS, screenshot
from tests.live import served_by
from tests.rendering import horizontal_overflow

DESKTOP: ViewportSize = {"width": 1280, "height": 900}


PHONE: ViewportSize = {"width": 390, "height": 844}
SOLO = "solo@example.test"


TOTP_PERIOD = 30


# A platform authenticator (the laptop's own passkey) and a roaming one (a key on USB).
PLATFORM = {
    "protocol": "ctap2",
    "transport": "internal",
    "hasResidentKey": True,
    "hasUserVerification": True,
    "isUserVerified": True,
}


ROAMING = {**PLATFORM, "transport": "usb"}


@dataclass
class Site:
    url: str
    ga: GuardedApp


@contextlib.contextmanager
def passkey_site(policy: str | None = None) -> Iterator[Site]:
    """The tests' guarded app with passkeys on, for the origin it is served at; ``policy``: a
    Content-Security-Policy on every response."""
    built: list[GuardedApp] = []

    def build(port: int) -> ASGIApp:
        ga = build_app(
            webauthn={"rp_id": "localhost", "origins": [f"http://localhost:{port}"]},
            sign_out={"url": "/logout", "method": "post"},
            trusted_devices={"enabled": True},
            recent_mfa_seconds=600,
        )
        built.append(ga)
        return ga.app if policy is None else with_policy(ga.app, policy)

    with served_by(build) as url:
        yield Site(url.replace("127.0.0.1", "localhost"), built[0])


def with_policy(app: ASGIApp, policy: str) -> ASGIApp:
    """``app``, each of its HTTP responses carrying the Content-Security-Policy ``policy`` (on
    top of the kit's own ``frame-ancestors``: a browser enforces both)."""

    async def guarded(scope: Scope, receive: Receive, send: Send) -> None:
        async def send_with_policy(message: Message) -> None:
            if message["type"] == "http.response.start":
                MutableHeaders(scope=message).append("Content-Security-Policy", policy)
            await send(message)

        await app(scope, receive, send_with_policy if scope["type"] == "http" else send)

    return guarded


@dataclass
class Person:
    context: BrowserContext
    page: Page
    cdp: CDPSession

    def add_authenticator(self, options: dict[str, Any]) -> str:
        """A virtual authenticator plugged in; its id."""
        added = self.cdp.send("WebAuthn.addVirtualAuthenticator", {"options": options})
        return str(added["authenticatorId"])

    def answers(self, authenticator: str, *, present: bool) -> None:
        """Whether ``authenticator`` answers at once (a touch, a fingerprint) or never."""
        self.cdp.send(
            "WebAuthn.setAutomaticPresenceSimulation",
            {"authenticatorId": authenticator, "enabled": present},
        )

    def credentials(self, authenticator: str) -> list[dict[str, Any]]:
        found = self.cdp.send("WebAuthn.getCredentials", {"authenticatorId": authenticator})
        credentials: list[dict[str, Any]] = found["credentials"]
        return credentials


def person(
    browser: Browser, url: str, *, headers: dict[str, str] | None = None, init: str = ""
) -> Person:
    """A browser profile of one's own, with WebAuthn's virtual authenticators turned on (none
    plugged in yet); ``init``: a script the page runs first (what a browser lacks)."""
    context = browser.new_context(base_url=url, viewport=DESKTOP, extra_http_headers=headers or {})
    context.set_default_timeout(TIMEOUT_MS)
    if init:
        context.add_init_script(init)
    page = context.new_page()
    cdp = context.new_cdp_session(page)
    cdp.send("WebAuthn.enable")
    return Person(context, page, cdp)


def sign_in(page: Page, email: str = SOLO) -> None:
    """The app's password step (the tests' app signs in by a form post)."""
    response = page.request.post("/login", form={"user": email}, max_redirects=0)
    assert response.status == 303


def sign_out(page: Page) -> None:
    """With the kit pages' own "Sign out" (the tests' app has no page of its own with one)."""
    if "/mfa/" not in page.url:
        page.goto("/mfa/settings")
    page.get_by_role("banner").get_by_role("button", name="Sign out").click()
    expect(page.locator("body")).to_contain_text("home of anonymous")


def enrol_with_the_app(page: Page, at: float) -> str:
    """Turns 2FA on with an authenticator app on the enrolment page; the app's key."""
    page.goto("/mfa/enrol?next=/protected")
    page.get_by_role("button", name="Set up an authenticator app").click()
    key = page.locator("#manual-key").inner_text()
    page.get_by_label("Code from your app").fill(current_code(key, at))
    page.get_by_role("button", name="Confirm and turn on").click()
    expect(page.get_by_role("heading", name="Save your recovery codes")).to_be_visible()
    return key


def rows(page: Page) -> list[tuple[str | None, str]]:
    """The listed authenticators: each one's kind and name."""
    items = page.locator("#authenticators li")
    return [
        (item.get_attribute("data-kind"), item.locator("h3").inner_text()) for item in items.all()
    ]


def what_the_eye_needs(page: Page, tmp_path: Path, name: str, button: str) -> None:
    """At a desktop's width and a phone's: ``button`` visible and inside the window, no
    sideways scrolling; a screenshot of each (``name``.png, ``name``-phone.png)."""
    size = page.viewport_size
    for viewport, suffix in ((DESKTOP, ""), (PHONE, "-phone")):
        page.set_viewport_size(viewport)
        state = f"{name} at {viewport['width']} px"
        assert horizontal_overflow(page) == 0, state
        shown = page.get_by_role("button", name=button)
        expect(shown).to_be_visible()
        box = shown.bounding_box()
        assert box is not None, state
        assert box["x"] >= 0, state
        assert box["x"] + box["width"] <= viewport["width"], state
        screenshot(page, tmp_path, f"{name}{suffix}.png")
    if size is not None:
        page.set_viewport_size(size)
