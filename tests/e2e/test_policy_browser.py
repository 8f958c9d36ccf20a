"""A site that accepts only a passkey or security key, as its members meet it in a real browser:
Chromium through Playwright, with the DevTools' virtual authenticators, against the tests'
guarded app on a real uvicorn server at ``http://localhost:<port>`` (as
tests/e2e/test_passkeys_browser.py, whose helpers these are).

Solo, a member of Acme with an authenticator app only, signs in after Acme's owner chose
"phishing-resistant only": the challenge says why, Solo enters the app's code and lands on the
settings page's "Add a passkey or security key", with the notice saying why; adds the laptop's
passkey, uses it at the challenge and reaches the app. At the next sign-in only the passkey is
offered. Then the same without JavaScript: the notices are the server's, the app's code and a
recovery code still work, and the page says that adding a passkey needs JavaScript.

``make screenshots`` (``MFA_GUARD_SCREENSHOTS=1``) saves ``policy-challenge-app.png`` (no key
yet), ``policy-settings.png`` and ``policy-challenge.png`` (a key), each also as
``*-phone.png`` at 390 px, into docs/images.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Coroutine, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

from playwright.sync_api import Browser, Locator, Page, expect
from starlette.types import ASGIApp

from mfa_guard.stores.sites import MemorySiteDirectory, MethodPolicy, Role, SitePolicy
from mfa_guard.testing import current_code
from tests.apps import GuardedApp, build_app
from tests.chromium import TIMEOUT_MS
from tests.live import served_by
from tests.passkeys_browser import (
    DESKTOP,
    PHONE,
    PLATFORM,
    SOLO,
    TOTP_PERIOD,
    Site,
    enrol_with_the_app,
    person,
    rows,
    sign_in,
    sign_out,
    what_the_eye_needs,
)
from tests.rendering import horizontal_overflow, violations

T = TypeVar("T")
OTHER = "other@example.test"
USE_PASSKEY = "Use your passkey or security key"
ADD_PASSKEY = "Add a passkey or security key"


def on_another_thread(work: Coroutine[Any, Any, T]) -> T:
    """``work``'s result, from a test whose thread runs Playwright's own event loop."""
    with ThreadPoolExecutor(1) as thread:
        return thread.submit(asyncio.run, work).result()


async def acme_of(*members: str) -> MemorySiteDirectory:
    directory = MemorySiteDirectory()
    await directory.save_site("acme", "Acme")
    for member in members:
        await directory.add_member("acme", member, Role.OPERATOR)
    return directory


@contextlib.contextmanager
def acme_site(directory: MemorySiteDirectory) -> Iterator[Site]:
    """The tests' guarded app with passkeys on and Acme's directory (remembered browsers on:
    the policy's challenge must not offer them)."""
    built: list[GuardedApp] = []

    def build(port: int) -> ASGIApp:
        ga = build_app(
            sites=directory,
            webauthn={"rp_id": "localhost", "origins": [f"http://localhost:{port}"]},
            sign_out={"url": "/logout", "method": "post"},
            trusted_devices={"enabled": True},
            recent_mfa_seconds=600,
        )
        built.append(ga)
        return ga.app

    with served_by(build) as url:
        yield Site(url.replace("127.0.0.1", "localhost"), built[0])


def passkeys_only(directory: MemorySiteDirectory, since: float) -> None:
    """Acme's owner chooses "phishing-resistant only", from ``since``."""
    policy = SitePolicy(
        enforce=True,
        grace_deadline=0.0,
        methods=MethodPolicy.PHISHING_RESISTANT,
        methods_deadline=since,
    )
    assert on_another_thread(directory.set_policy("acme", policy))


def notice(page: Page) -> Locator:
    return page.locator("#passkey-notice")


def notice_is_readable(page: Page, state: str) -> None:
    """The notice shown whole inside the window, at a desktop's width and a phone's."""
    size = page.viewport_size
    for viewport in (DESKTOP, PHONE):
        page.set_viewport_size(viewport)
        expect(notice(page)).to_be_visible()
        box = notice(page).bounding_box()
        assert box is not None, state
        assert box["x"] >= 0, state
        assert box["x"] + box["width"] <= viewport["width"], state
        assert horizontal_overflow(page) == 0, state
    if size is not None:
        page.set_viewport_size(size)


def fill_the_apps_code(page: Page, key: str, at: float) -> None:
    page.get_by_label("Authentication code").fill(current_code(key, at))
    page.get_by_role("button", name="Verify", exact=True).click()


def test_a_member_with_an_app_only_adds_a_passkey_and_then_uses_it_alone(
    browser: Browser, tmp_path: Path
) -> None:
    directory = on_another_thread(acme_of(SOLO))
    with acme_site(directory) as site:
        solo = person(browser, site.url)
        page = solo.page
        clock = site.ga.clock
        laptop = solo.add_authenticator(PLATFORM)
        sign_in(page)
        key = enrol_with_the_app(page, clock() - TOTP_PERIOD)
        sign_out(page)
        passkeys_only(directory, clock())

        # The next sign-in: the challenge says why, and offers the app (no key yet).
        clock.advance(TOTP_PERIOD)
        sign_in(page)
        page.goto("/protected")
        expect(page).to_have_url(f"{site.url}/mfa/challenge?next=/protected")
        expect(notice(page)).to_have_text(
            "Acme accepts only a passkey or security key to sign in. "
            "You have none yet: confirm it is you below, then add one."
        )
        expect(page.get_by_role("button", name=USE_PASSKEY)).to_have_count(0)
        expect(page.get_by_text("Remember this browser")).to_have_count(0)
        notice_is_readable(page, "the challenge without a key")
        assert not violations(page), "axe-core finds nothing on the challenge under the policy"
        what_the_eye_needs(page, tmp_path, "policy-challenge-app", "Verify")

        # The app's code: to the settings page, not to the app (it would send Solo back).
        fill_the_apps_code(page, key, clock())
        expect(page).to_have_url(f"{site.url}/mfa/settings?next=/protected")
        expect(notice(page)).to_have_text(
            "Acme accepts only a passkey or security key to sign in. Add one to continue."
        )
        expect(page.locator("#passkey-unavailable")).to_be_hidden()
        notice_is_readable(page, "the settings page under the policy")
        assert not violations(page), "axe-core finds nothing on the settings' notice"
        what_the_eye_needs(page, tmp_path, "policy-settings", ADD_PASSKEY)
        # The notice's link leads to the button.
        notice(page).get_by_role("link", name="Add one").click()
        expect(page).to_have_url(f"{site.url}/mfa/settings?next=/protected#add-heading")

        # The laptop's passkey added; then used at the challenge, and on to the app.
        page.get_by_role("button", name=ADD_PASSKEY).click()
        expect(page).to_have_url(f"{site.url}/mfa/challenge?next=/protected&added=passkey")
        expect(page.get_by_role("status").filter(has_text="is added")).to_have_text(
            "Your passkey or security key is added. Use it now to continue."
        )
        assert len(solo.credentials(laptop)) == 1
        page.get_by_role("button", name=USE_PASSKEY).click()
        expect(page).to_have_url(f"{site.url}/protected")
        expect(page.locator("body")).to_have_text("protected content")
        page.goto("/mfa/settings")
        assert rows(page) == [("app", "Authenticator app"), ("passkey", "Passkey")]
        expect(notice(page)).to_have_count(0)

        # The next sign-in: the passkey alone (and a recovery code, should it be lost).
        sign_out(page)
        sign_in(page)
        page.goto("/protected")
        expect(page).to_have_url(f"{site.url}/mfa/challenge?next=/protected")
        expect(notice(page)).to_have_text("Acme accepts only a passkey or security key to sign in.")
        expect(page.get_by_label("Authentication code")).to_have_count(0)
        expect(page.get_by_text("Remember this browser")).to_have_count(0)
        expect(
            page.get_by_text("Lost your passkey or security key? Use a recovery code")
        ).to_be_visible()
        notice_is_readable(page, "the challenge with a key")
        assert not violations(page), "axe-core finds nothing on the challenge with a key"
        what_the_eye_needs(page, tmp_path, "policy-challenge", USE_PASSKEY)
        page.get_by_role("button", name=USE_PASSKEY).click()
        expect(page).to_have_url(f"{site.url}/protected")
        solo.context.close()


def test_without_javascript_the_notices_and_the_codes_still_work(browser: Browser) -> None:
    directory = on_another_thread(acme_of(SOLO, OTHER))
    with acme_site(directory) as site:
        clock = site.ga.clock
        with_script = person(browser, site.url)
        page = with_script.page
        sign_in(page, OTHER)
        key = enrol_with_the_app(page, clock() - TOTP_PERIOD)
        with_script.context.close()
        passkeys_only(directory, clock())

        context = browser.new_context(base_url=site.url, java_script_enabled=False)
        context.set_default_timeout(TIMEOUT_MS)
        page = context.new_page()
        sign_in(page, OTHER)
        page.goto("/protected")
        expect(page).to_have_url(f"{site.url}/mfa/challenge?next=/protected")
        expect(notice(page)).to_contain_text("Acme accepts only a passkey or security key")
        fill_the_apps_code(page, key, clock())
        expect(page).to_have_url(f"{site.url}/mfa/settings?next=/protected")
        expect(notice(page)).to_contain_text("Add one to continue.")
        # No script: no button to add a key, and the page says why.
        expect(page.get_by_role("button", name=ADD_PASSKEY)).to_be_hidden()
        expect(page.locator("#passkey-unavailable")).to_have_text(
            "Using a passkey or security key here needs JavaScript, in a browser that "
            "supports them."
        )
        # The rest of the settings page works: another app added, all server-side.
        page.get_by_role("button", name="Add another authenticator app").click()
        second = page.locator("#manual-key").inner_text()
        page.get_by_label("Code from your app").fill(current_code(second, clock()))
        page.get_by_role("button", name="Add the app").click()
        expect(page.get_by_role("status").filter(has_text="app is added")).to_be_visible()
        expect(notice(page)).to_contain_text("Add one to continue.")
        context.close()
