"""The pages right to left, as Chromium draws them (Playwright, Debian's chromium, the demo on a
real uvicorn server), for an Arabic browser at a phone's width (390 px) and a desktop's (1280
px): the kit's enrolment (its QR code still reads back from a screenshot), settings and
challenge, and the demo's inbox and Team page, each with ``<html dir="rtl">``, nothing wider
than the screen, nothing drawn over anything else, every image whole, and axe-core clean. Then
axe over the kit's pages in every shipped language.

These pages are Arabic as soon as the kit ships Arabic (a compiled catalogue), translated or not
yet: ``dir`` comes from the language. Chromium is missing: skipped, as in
tests/e2e/test_browser_story.py; a failure with CI=true.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from pathlib import Path

import pyotp
import pytest
from examples.inbox import DEMO_PASSWORD
from playwright.sync_api import Browser, BrowserContext, Page, ViewportSize, expect

from mfa_guard.testing import FrozenClock, current_code
from tests.apps import demo_inbox
from tests.catalogues import SHIPPED
from tests.chromium import TIMEOUT_MS, screenshot
from tests.live import served
from tests.rendering import (
    horizontal_overflow,
    image_problems,
    overlaps,
    qr_codes_on_screen,
    violations,
)

OWNER = "owner@acme.test"
SOLO = "solo@example.test"
ISSUER = "Acme Inbox"
ARABIC = {"Accept-Language": "ar"}
DESKTOP: ViewportSize = {"width": 1280, "height": 900}
PHONE: ViewportSize = {"width": 390, "height": 844}
TOTP_PERIOD = 30


@pytest.fixture(autouse=True)
def _demo_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    # The demo reads MFA_GUARD_* from the environment; these tests use its own defaults.
    for name in os.environ:
        if name.upper().startswith("MFA_GUARD_") and name != "MFA_GUARD_SCREENSHOTS":
            monkeypatch.delenv(name)


@pytest.fixture
def clock() -> FrozenClock:
    return FrozenClock()


@pytest.fixture
def demo_url(tmp_path: Path, clock: FrozenClock) -> Iterator[str]:
    with served(demo_inbox(tmp_path / "data", clock=clock)) as url:
        yield url


def person(
    browser: Browser, url: str, viewport: ViewportSize, headers: dict[str, str]
) -> tuple[BrowserContext, Page]:
    context = browser.new_context(base_url=url, viewport=viewport, extra_http_headers=headers)
    context.set_default_timeout(TIMEOUT_MS)
    return context, context.new_page()


def sign_in(page: Page, email: str) -> None:
    """The demo's sign-in form, in whatever language the page speaks."""
    page.goto("/login")
    page.locator("#email").fill(email)
    page.locator("#password").fill(DEMO_PASSWORD)
    page.locator('form[action="/login"] button[type="submit"]').click()
    page.wait_for_load_state()


def sign_out(page: Page) -> None:
    page.goto("/inbox")
    page.locator('form[action="/logout"] button[type="submit"]').click()
    page.wait_for_load_state()


def start_enrolment(page: Page) -> str:
    """The QR code on screen; returns the key shown beside it."""
    page.goto("/mfa/enrol?next=/inbox")
    page.locator('form[action$="/mfa/enrol"] button[type="submit"]').click()
    expect(page.locator(".qr svg")).to_be_visible()
    return page.locator("#manual-key").inner_text()


def confirm_enrolment(page: Page, key: str, at: float) -> None:
    page.locator("#code").fill(current_code(key.replace(" ", ""), at))
    page.locator('form[action$="/enrol/confirm"] button[type="submit"]').click()
    expect(page.locator("#recovery-codes")).to_be_visible()


def answer_challenge(page: Page, key: str, at: float) -> None:
    page.locator("#code").fill(current_code(key.replace(" ", ""), at))
    page.locator('#code-form button[type="submit"]').first.click()
    page.wait_for_load_state()


def drawn_right(page: Page, state: str) -> list[str]:
    """What is wrong with the page as drawn: overflow, overlaps, images, axe's violations."""
    page.wait_for_load_state()
    problems = [f"{state}: {problem}" for problem in overlaps(page) + image_problems(page)]
    if (pixels := horizontal_overflow(page)) != 0:
        problems.append(f"{state}: {pixels} px wider than the screen")
    problems.extend(f"{state}: axe: {violation}" for violation in violations(page))
    return problems


@pytest.mark.parametrize("viewport", [PHONE, DESKTOP], ids=["390px", "1280px"])
def test_the_pages_right_to_left(
    browser: Browser, demo_url: str, clock: FrozenClock, tmp_path: Path, viewport: ViewportSize
) -> None:
    context, page = person(browser, demo_url, viewport, ARABIC)
    width = viewport["width"]
    sign_in(page, OWNER)
    # Arabic as soon as the kit ships it (src/mfa_guard/web/locale/ar, compiled).
    assert page.locator("html").get_attribute("dir") == "rtl", "no Arabic: make messages"
    problems = drawn_right(page, "the demo's inbox")

    key = start_enrolment(page)
    expect(page.locator("html")).to_have_attribute("lang", "ar")
    expect(page.locator("html")).to_have_attribute("dir", "rtl")
    # What a phone's camera reads off the mirrored page: the URI of the key shown beside it.
    uri = pyotp.TOTP(key.replace(" ", ""), issuer=ISSUER).provisioning_uri(
        name=OWNER, issuer_name=ISSUER
    )
    assert qr_codes_on_screen(page) == [uri]
    qr, card = page.locator(".qr svg").bounding_box(), page.locator("main").bounding_box()
    assert qr is not None
    assert card is not None
    assert card["x"] <= qr["x"]
    assert qr["x"] + qr["width"] <= card["x"] + card["width"]
    screenshot(page, tmp_path, f"rtl-enrol-{width}.png")
    problems += drawn_right(page, "enrolment, the QR code")

    confirm_enrolment(page, key, clock())
    problems += drawn_right(page, "the recovery codes")
    page.goto("/mfa/settings")
    expect(page.locator("html")).to_have_attribute("dir", "rtl")
    screenshot(page, tmp_path, f"rtl-settings-{width}.png")
    problems += drawn_right(page, "settings, 2FA on")

    page.goto("/sites/acme/team")
    expect(page.locator("html")).to_have_attribute("dir", "rtl")
    expect(page.locator("#members .padlock")).to_have_count(1)
    # Mirrored: the address column starts at the table's right edge.
    table = page.locator("#members").bounding_box()
    first_cell = page.locator("#members tbody tr td").first.bounding_box()
    assert table is not None
    assert first_cell is not None
    assert abs(first_cell["x"] + first_cell["width"] - (table["x"] + table["width"])) < 1
    screenshot(page, tmp_path, f"rtl-team-{width}.png")
    problems += drawn_right(page, "the demo's Team page")

    sign_out(page)
    sign_in(page, OWNER)
    expect(page).to_have_url(re.compile(r"/mfa/challenge"))
    expect(page.locator("html")).to_have_attribute("dir", "rtl")
    screenshot(page, tmp_path, f"rtl-challenge-{width}.png")
    problems += drawn_right(page, "the challenge")
    clock.advance(TOTP_PERIOD)  # each time step's code is accepted once
    answer_challenge(page, key, clock())
    expect(page).to_have_url(re.compile(r"/inbox$"))
    assert problems == [], "\n".join(problems)
    context.close()


@pytest.mark.parametrize("language", SHIPPED)
def test_the_kits_pages_pass_axe_in_every_shipped_language(
    browser: Browser, demo_url: str, clock: FrozenClock, language: str
) -> None:
    tag = language.replace("_", "-")
    context, page = person(browser, demo_url, DESKTOP, {"Accept-Language": tag})
    sign_in(page, SOLO)
    found: list[str] = []
    page.goto("/mfa/settings")
    assert page.locator("html").get_attribute("lang") == tag, f"no {language}: make messages"
    found += [f"settings, 2FA off: {v}" for v in violations(page)]
    key = start_enrolment(page)
    found += [f"enrolment, the QR code: {v}" for v in violations(page)]
    confirm_enrolment(page, key, clock())
    found += [f"the recovery codes: {v}" for v in violations(page)]
    page.goto("/mfa/settings")
    found += [f"settings, 2FA on: {v}" for v in violations(page)]
    sign_out(page)
    sign_in(page, SOLO)
    expect(page).to_have_url(re.compile(r"/mfa/challenge"))
    found += [f"the challenge: {v}" for v in violations(page)]
    page.locator("#code").fill("000000")
    page.locator('#code-form button[type="submit"]').first.click()
    expect(page.locator("#form-error")).to_be_visible()
    found += [f"the challenge, a code refused: {v}" for v in violations(page)]
    assert found == [], f"{language}:\n" + "\n".join(found)
    context.close()
