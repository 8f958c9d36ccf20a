"""The user's recent activity on the kit's settings page, as Chromium draws it (Playwright,
Debian's chromium, a guarded app with a security log on a real uvicorn server and the injected
clock), at a desktop's width (1280 px) and a phone's (375 px).

Solo turns 2FA on from a laptop, then signs in from a phone: a wrong code first, then the right
one, the phone remembered. Back on the laptop, the settings page lists it all, newest first, each
row whole on screen with its time, second factor and browser; nothing scrolls sideways.

``make screenshots`` (``MFA_GUARD_SCREENSHOTS=1``) saves the section as
``settings-activity-desktop.png`` and ``settings-activity-phone.png`` into docs/images.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from playwright.sync_api import (
    APIRequestContext,
    Browser,
    BrowserContext,
    Locator,
    Page,
    ViewportSize,
    expect,
)

from mfa_guard.stores.events import MemoryEventStore
from mfa_guard.testing import current_code
from tests.apps import GuardedApp, build_app
from tests.chromium import TIMEOUT_MS, screenshot
from tests.live import served
from tests.rendering import horizontal_overflow, violations

SOLO = "solo@example.test"
# The browsers' names come from their User-Agent: these read as people's ("Chrome on Windows",
# "Mobile Safari on iOS (iPhone)") where headless Chromium's would say "HeadlessChrome".
LAPTOP_AGENT = (
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/131.0.0.0 Safari/537.36"
)
PHONE_AGENT = (
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_5 like Mac OS X) AppleWebKit/605.1.15 "
    "(KHTML, like Gecko) Version/17.5 Mobile/15E148 Safari/604.1"
)
DESKTOP: ViewportSize = {"width": 1280, "height": 900}
PHONE: ViewportSize = {"width": 375, "height": 812}


@dataclass
class Site:
    url: str
    ga: GuardedApp


@pytest.fixture
def site() -> Iterator[Site]:
    ga = build_app(
        event_store=MemoryEventStore(),
        trusted_devices={"enabled": True, "cookie_secure": False},
    )
    with served(ga.app) as url:
        yield Site(url, ga)


def device(browser: Browser, site: Site, user_agent: str, locale: str = "en-US") -> BrowserContext:
    """A device of Solo's, signed in with the password (the app's first factor); ``locale`` is
    the browser's language (its ``Accept-Language``)."""
    context = browser.new_context(
        base_url=site.url, viewport=DESKTOP, user_agent=user_agent, locale=locale
    )
    context.set_default_timeout(TIMEOUT_MS)
    assert context.request.post("/login", form={"user": SOLO}, max_redirects=0).status == 303
    return context


def posted(request: APIRequestContext, path: str, body: object) -> int:
    return request.post(path, data=body, headers={"content-type": "application/json"}).status


# What each row ends with, the browser named in the page's language: Arabic's are checked part
# by part (each name isolated in <bdi>, the sentence around them in Arabic).
BROWSERS = {
    "en-US": ["Mobile Safari on iOS (iPhone)"] * 3 + ["Chrome on Windows"],
    "fr-FR": ["Mobile Safari sous iOS (iPhone)"] * 3 + ["Chrome sous Windows"],
}
ARABIC_PARTS = [["Mobile Safari", "iOS", "iPhone"]] * 3 + [["Chrome", "Windows"]]
SUFFIX = {"en-US": "", "fr-FR": "-fr", "ar": "-ar"}


@pytest.mark.parametrize("locale", ["en-US", "fr-FR", "ar"])
def test_the_recent_activity_is_whole_on_a_desktop_and_a_phone(
    browser: Browser, site: Site, tmp_path: Path, locale: str
) -> None:
    ga = site.ga
    laptop = device(browser, site, LAPTOP_AGENT, locale)
    setup = laptop.request.post("/mfa/api/totp/setup", data={})
    assert setup.ok, setup.text()
    secret = setup.json()["secret"]
    assert posted(laptop.request, "/mfa/api/totp/confirm", {"code": ga.code(secret)}) == 200

    ga.clock.advance(90)
    phone = device(browser, site, PHONE_AGENT)
    assert posted(phone.request, "/mfa/api/verify", {"code": "000000"}) == 422
    ga.clock.advance(60)
    code = current_code(secret, ga.clock())
    remember = {"code": code, "remember_device": True}
    assert posted(phone.request, "/mfa/api/verify", remember) == 200

    page = laptop.new_page()
    page.goto("/mfa/settings")
    activity = page.locator("#recent-activity")
    rows = activity.locator("li")
    expect(rows).to_have_count(4)
    texts = [" ".join(text.split()) for text in rows.all_inner_texts()]
    if locale == "en-US":
        expect(activity.get_by_role("heading", name="Recent activity")).to_be_visible()
        assert texts == [
            "Browser remembered Jan 15, 2027, 08:02 UTC · Mobile Safari on iOS (iPhone)",
            "Signed in Jan 15, 2027, 08:02 UTC · Authenticator app · Mobile Safari on iOS (iPhone)",
            "Failed sign-in attempt Jan 15, 2027, 08:01 UTC · Authenticator app · "
            "Mobile Safari on iOS (iPhone)",
            "Two-factor authentication turned on Jan 15, 2027, 08:00 UTC · Authenticator app · "
            "Chrome on Windows",
        ]
        expect(rows.first.locator("time")).to_have_attribute("datetime", "2027-01-15T08:02:30Z")
    elif locale == "ar":
        expect(page.locator("html")).to_have_attribute("dir", "rtl")
        parts = [row.locator(".browser bdi").all_inner_texts() for row in rows.all()]
        assert parts == ARABIC_PARTS
        assert all(" على " in text for text in texts), texts
    else:
        assert all(
            text.endswith(name) for text, name in zip(texts, BROWSERS[locale], strict=True)
        ), texts
    assert not violations(page), "axe-core finds nothing on the settings page"
    check_layout(page, activity, rows, tmp_path, f"settings-activity{SUFFIX[locale]}")

    # The phone, remembered: named in the page's words too, from the User-Agent it was
    # remembered with.
    remembered = page.locator("#remembered-browsers")
    devices = remembered.locator("li")
    expect(devices).to_have_count(1)
    heading = devices.first.locator("h3")
    if locale == "ar":
        assert heading.locator("bdi").all_inner_texts() == ARABIC_PARTS[0]
    else:
        expect(heading).to_have_text(BROWSERS[locale][0])
    check_layout(page, remembered, devices, tmp_path, f"settings-devices{SUFFIX[locale]}")
    laptop.close()
    phone.close()


def check_layout(page: Page, section: Locator, rows: Locator, tmp_path: Path, name: str) -> None:
    """Every row of ``section`` whole on screen at a desktop's and a phone's width;
    screenshots of the section (``{name}-desktop.png``, ``{name}-phone.png``)."""
    for viewport, size in ((DESKTOP, "desktop"), (PHONE, "phone")):
        page.set_viewport_size(viewport)
        state = f"{name} at {viewport['width']} px"
        assert horizontal_overflow(page) == 0, state
        section.scroll_into_view_if_needed()
        expect(section).to_be_visible()
        for row in rows.all():
            expect(row).to_be_visible()
            box = row.bounding_box()
            assert box is not None, state
            # Inside the window, and inside its card: no row runs off the side.
            assert box["x"] >= 0, state
            assert box["x"] + box["width"] <= viewport["width"], state
            assert row.evaluate("e => e.scrollWidth <= e.clientWidth"), state
        screenshot(page, tmp_path, f"{name}-{size}.png", part=section)
