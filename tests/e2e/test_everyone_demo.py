"""2FA for everyone where a person meets it: the demo inbox's banner and policy from the
environment, and the enrolment page's banner in Chromium at a phone's and a desktop's width.

Time is the injected clock (2027-01-15T08:00:00Z).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Coroutine, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

import pytest
from playwright.sync_api import Browser, expect

from mfa_guard.testing import FrozenClock
from tests.apps import GuardedApp, build_app
from tests.chromium import TIMEOUT_MS, launched, screenshot
from tests.demo import Demo, owner_with_2fa, post_policy, running_demo, sign_in
from tests.everyone import (
    AGENT,
    ANYONE,
    NOW,
    acme,
    banner,
    enforce,
    everyone,
    without_mfa_guard_variables,
)
from tests.live import served

T = TypeVar("T")


@pytest.fixture
async def demo(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Demo]:
    without_mfa_guard_variables(monkeypatch)
    async with running_demo(tmp_path, FrozenClock()) as running:
        yield running


async def test_the_demos_banner_names_the_site(demo: Demo) -> None:
    async with demo.browser() as owner, demo.browser() as agent:
        await owner_with_2fa(demo, owner)
        assert (await post_policy(owner, enforce=True, grace="24")).status_code == 303
        assert (await sign_in(agent, AGENT)).status_code == 303
        inbox = await agent.get("/inbox")
        assert inbox.status_code == 200
        assert banner(inbox) == (
            "Acme requires two-factor authentication from Jan 16, 2027, 08:00 UTC. "
            "Turn it on now to keep your access."
        )
        demo.clock.advance(24 * 3600)
        enrol_page = await agent.get("/mfa/enrol?next=/inbox")
        assert banner(enrol_page) == (
            "Acme requires two-factor authentication. Turn it on to continue."
        )


async def test_the_demo_requires_2fa_of_everyone_when_the_environment_says_so(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    without_mfa_guard_variables(monkeypatch)
    monkeypatch.setenv("MFA_GUARD_EVERYONE__REQUIRED", "true")
    monkeypatch.setenv("MFA_GUARD_EVERYONE__DEADLINE", "2027-01-16T08:00:00Z")
    async with running_demo(tmp_path, FrozenClock()) as running, running.browser() as solo:
        assert (await sign_in(solo, "solo@example.test")).status_code == 303
        inbox = await solo.get("/inbox")
        assert banner(inbox) == (
            "Two-factor authentication is required for every account from "
            "Jan 16, 2027, 08:00 UTC. Turn it on now to keep your access."
        )
        running.clock.advance(86400)
        assert (await solo.get("/inbox")).headers["location"] == "/mfa/enrol?next=/inbox"


# -- in a real browser ---------------------------------------------------------------------------


@pytest.fixture
def browser() -> Iterator[Browser]:
    """A Chromium for one test: the conftest's lasts a module, and this module's async tests
    could not run beside it."""
    with launched() as chromium:
        yield chromium


def on_another_thread(work: Coroutine[Any, Any, T]) -> T:
    """``work``'s result, from a test whose thread runs Playwright's own event loop."""
    with ThreadPoolExecutor(1) as thread:
        return thread.submit(asyncio.run, work).result()


def enrolment_page_in_chromium(
    chromium: Browser, ga: GuardedApp, user: str, tmp_path: Path, name: str
) -> str:
    """The enrolment page ``user`` opens from the banner's link during the grace period, at a
    phone's and a desktop's width: screenshots ``{name}-390.png`` and ``{name}-1280.png``;
    returns the banner's text (the same at both)."""
    texts = set()
    with served(ga.app) as url:
        for width in (390, 1280):
            context = chromium.new_context(base_url=url, viewport={"width": width, "height": 900})
            context.set_default_timeout(TIMEOUT_MS)
            page = context.new_page()
            assert page.request.post("/login", form={"user": user}, max_redirects=0).status == 303
            page.goto("/mfa/settings")
            page.locator("#enrolment-notice").get_by_role("link", name="Turn it on now").click()
            expect(page).to_have_url(f"{url}/mfa/enrol")
            notice = page.locator("#enrolment-notice")
            expect(notice).to_be_visible()
            # The whole banner on screen: inside the page's width, no sideways scrolling.
            box = notice.bounding_box()
            assert box is not None
            assert box["x"] >= 0
            assert box["x"] + box["width"] <= width
            assert page.evaluate("document.documentElement.scrollWidth") <= width
            expect(page.locator("time")).to_have_attribute("datetime", "2027-01-16T08:00:00Z")
            texts.add(" ".join(notice.inner_text().split()))
            page.screenshot(path=tmp_path / f"{name}-{width}.png", full_page=True)
            if name == "enrol-everyone" and width == 1280:
                screenshot(
                    page, tmp_path, "enrol-everyone.png"
                )  # docs/images with make screenshots
            context.close()
    (text,) = texts
    return text


def test_the_app_wide_banner_in_chromium(
    browser: Browser,
    tmp_path: Path,
) -> None:
    ga = build_app(everyone=everyone(deadline_in=86400), issuer="Acme Inbox")
    assert enrolment_page_in_chromium(browser, ga, ANYONE, tmp_path, "enrol-everyone") == (
        "Two-factor authentication is required for every account from Jan 16, 2027, 08:00 UTC. "
        "Turn it on now to keep your access."
    )


def test_the_site_named_banner_in_chromium(
    browser: Browser,
    tmp_path: Path,
) -> None:
    directory = on_another_thread(acme())
    on_another_thread(enforce(directory, NOW + 86400))
    ga = build_app(sites=directory, issuer="Acme Inbox")
    assert enrolment_page_in_chromium(browser, ga, AGENT, tmp_path, "enrol-site") == (
        "Acme requires two-factor authentication from Jan 16, 2027, 08:00 UTC. "
        "Turn it on now to keep your access."
    )
