"""Clickjacking in a real browser (found by a security review): Chromium shows
another site's frame of an app page, and refuses to show the kit's, whose own style still applies
at a phone's and a desktop's width."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest
from examples.inbox import DEMO_PASSWORD
from playwright.sync_api import Error as PlaywrightError
from playwright.sync_api import Page, expect
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse
from starlette.routing import Route as StarletteRoute

from tests.apps import demo_inbox
from tests.chromium import launched
from tests.live import served


def evil_site(target: str) -> Starlette:
    """Another origin's page that frames ``target`` (a clickjacking page would then hide it)."""

    async def page(request: Request) -> HTMLResponse:
        return HTMLResponse(
            f'<!doctype html><title>Win a prize</title><iframe id="bait" src="{target}" '
            'width="800" height="600"></iframe>'
        )

    return Starlette(routes=[StarletteRoute("/", page)])


def framed_text(browser_page: Page, evil_url: str) -> str:
    """The text inside the other site's frame: the framed page's, or Chromium's error page."""
    browser_page.goto(evil_url)
    browser_page.wait_for_load_state("load")
    frame = browser_page.frame_locator("#bait")
    try:
        return frame.locator("body").inner_text(timeout=3000)
    except PlaywrightError:
        return ""


def test_chromium_refuses_to_show_a_kit_page_in_another_sites_frame(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in os.environ:
        if name.upper().startswith("MFA_GUARD_"):
            monkeypatch.delenv(name)
    with (
        served(demo_inbox(tmp_path / "data")) as demo,
        served(evil_site(f"{demo}/mfa/settings")) as kit_framed,
        served(evil_site(f"{demo}/login")) as app_framed,
        launched() as browser,
    ):
        context = browser.new_context(base_url=demo)
        page = context.new_page()
        page.goto("/login")
        page.get_by_label("E-mail address").fill("solo@example.test")
        page.get_by_label("Password").fill(DEMO_PASSWORD)
        page.get_by_role("button", name="Sign in").click()
        page.wait_for_url(re.compile(r".*/inbox"))
        # The settings page itself, with its style (a CSP of frame-ancestors only).
        for width in (390, 1280):
            page.set_viewport_size({"width": width, "height": 900})
            page.goto("/mfa/settings")
            expect(page.get_by_role("heading", level=1)).to_be_visible()
            # The pages' inline <style> still applies: the kit's blue button.
            button = page.get_by_role("button", name="Add the number")
            assert button.evaluate("e => getComputedStyle(e).backgroundColor") == (
                "rgb(29, 78, 216)"
            )
            assert page.evaluate("document.documentElement.scrollWidth") <= width
            page.screenshot(path=str(tmp_path / f"settings-{width}.png"), full_page=True)
        # A page of the app, which sends no such header, shows in the frame (the test can
        # see a frame's content); the kit's page does not.
        assert "Sign in" in framed_text(page, app_framed)
        shown = framed_text(page, kit_framed)
        assert "refused to connect" in shown  # Chromium's page for a blocked frame
        assert "two-factor" not in shown.lower()
