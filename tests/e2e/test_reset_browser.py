"""The lost phone, in a real browser (Chromium through Playwright) against the demo on a real
uvicorn server, its clock moved by the test: the agent turns on 2FA and signs in with a code;
Acme's owner, with 2FA too, forces it on the operators. The agent loses the phone. The owner
opens the Team page, clicks "Reset 2FA" next to the agent and confirms (first confirming a
fresh code of their own: theirs is minutes old); the agent's open session is sent to set 2FA
up again at its next re-check; the agent scans a new QR code, and the owner's Team page shows
the green padlock again.

Chromium is Debian's, as in tests/e2e/test_browser_story.py. ``make screenshots``
(``MFA_GUARD_SCREENSHOTS=1``) saves into docs/images ``reset-team.png`` (the button),
``reset-confirm.png`` (the page that says what the reset does) and ``reset-done.png`` (the
Team page after it), each also as ``*-phone.png`` at 375 px.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from examples.inbox import DEMO_PASSWORD
from playwright.sync_api import Browser, Locator, Page, ViewportSize, expect

from mfa_guard.testing import FrozenClock, current_code
from tests.apps import demo_inbox
from tests.chromium import TIMEOUT_MS, screenshot
from tests.live import served
from tests.rendering import horizontal_overflow, image_problems, violations

OWNER = "owner@acme.test"
AGENT = "agent@acme.test"
TOTP_PERIOD = 30
RECHECK = 60  # the demo's recheck_seconds
DESKTOP: ViewportSize = {"width": 1280, "height": 900}
PHONE: ViewportSize = {"width": 375, "height": 812}
PADLOCK = "Two-factor authentication on"


@pytest.fixture(autouse=True)
def _demo_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    # The demo reads MFA_GUARD_* from the environment; this story uses its own defaults.
    for name in os.environ:
        if name.upper().startswith("MFA_GUARD_") and name != "MFA_GUARD_SCREENSHOTS":
            monkeypatch.delenv(name)


@pytest.fixture
def clock() -> FrozenClock:
    return FrozenClock()


@pytest.fixture
def served_demo(tmp_path: Path, clock: FrozenClock) -> Iterator[str]:
    with served(demo_inbox(tmp_path / "data", clock=clock)) as url:
        yield url


def person(browser: Browser, base_url: str) -> Page:
    """A browser profile of one's own (cookies apart), as each person has."""
    context = browser.new_context(base_url=base_url, viewport=DESKTOP)
    context.set_default_timeout(TIMEOUT_MS)
    return context.new_page()


def sign_in(page: Page, email: str) -> None:
    page.goto("/login")
    page.get_by_label("E-mail address").fill(email)
    page.get_by_label("Password").fill(DEMO_PASSWORD)
    page.get_by_role("button", name="Sign in").click()


def set_up_the_app(page: Page, at: float) -> str:
    """On the enrolment page: "Set up an authenticator app", the key read from the page (what
    the phone's app takes from the QR code), its code of the moment ``at``; the key."""
    page.get_by_role("button", name="Set up an authenticator app").click()
    expect(page.locator(".qr svg")).to_be_visible()
    key = page.locator("#manual-key").inner_text().replace(" ", "")
    page.get_by_label("Code from your app").fill(current_code(key, at))
    page.get_by_role("button", name="Confirm and turn on").click()
    expect(page.get_by_role("heading", name="Save your recovery codes")).to_be_visible()
    page.get_by_role("link", name="I have saved my codes — continue").click()
    return key


def turn_on_2fa(page: Page, at: float) -> str:
    page.get_by_role("link", name="Two-factor settings").click()
    page.get_by_role("button", name="Turn on two-factor authentication").click()
    return set_up_the_app(page, at)


def open_the_team(page: Page) -> None:
    page.goto("/inbox")
    page.get_by_role("navigation", name="Your sites").get_by_role("link", name="Team").click()
    expect(page).to_have_url(re.compile(r"/sites/acme/team$"))


def row(page: Page, email: str) -> Locator:
    return page.locator(f'tr[data-member="{email}"]')


def what_the_eye_needs(page: Page, tmp_path: Path, name: str, control: Locator) -> None:
    """At a desktop's width and a phone's: no sideways scrolling, every image (the padlocks)
    whole, ``control`` visible inside the page's white box, nothing axe-core finds; a
    screenshot of each (``name``.png, ``name``-phone.png), unless ``name`` starts with "-"."""
    for viewport, suffix in ((DESKTOP, ""), (PHONE, "-phone")):
        page.set_viewport_size(viewport)
        state = f"{name} at {viewport['width']} px"
        assert horizontal_overflow(page) == 0, state
        assert image_problems(page) == [], state
        expect(control).to_be_visible()
        box, main = control.bounding_box(), page.locator("main").bounding_box()
        assert box is not None, state
        assert main is not None, state
        assert main["x"] <= box["x"], state
        assert box["x"] + box["width"] <= main["x"] + main["width"], state
        assert main["x"] + main["width"] <= viewport["width"], state
        assert not violations(page), state
        if not name.startswith("-"):
            screenshot(page, tmp_path, f"{name}{suffix}.png")
    page.set_viewport_size(DESKTOP)


def test_the_owner_resets_the_2fa_of_the_agent_who_lost_the_phone(
    browser: Browser, served_demo: str, clock: FrozenClock, tmp_path: Path
) -> None:
    agent, owner = person(browser, served_demo), person(browser, served_demo)

    # The agent turns on 2FA, and signs in again with a code from the phone.
    sign_in(agent, AGENT)
    expect(agent).to_have_url(f"{served_demo}/inbox")
    key = turn_on_2fa(agent, clock())
    agent.get_by_role("button", name="Sign out").click()
    clock.advance(TOTP_PERIOD)  # each time step's code is accepted once
    sign_in(agent, AGENT)
    expect(agent).to_have_url(f"{served_demo}/mfa/challenge?next=/inbox")
    agent.get_by_label("Authentication code").fill(current_code(key, clock()))
    agent.get_by_role("button", name="Verify", exact=True).click()
    expect(agent).to_have_url(f"{served_demo}/inbox")

    # The owner turns on 2FA and forces it on Acme's operators: all have it, at once.
    sign_in(owner, OWNER)
    owners_key = turn_on_2fa(owner, clock())
    owner.get_by_role("navigation", name="Your sites").get_by_role(
        "link", name="Inbox settings"
    ).click()
    owner.get_by_label("Force operators to have their Two Factor Authentication enabled").check()
    owner.get_by_label("From when").select_option(label="At once (every member has 2FA)")
    owner.get_by_role("button", name="Save").click()
    expect(owner.locator("#settings-notice")).to_contain_text("now enforced")

    # The Team page: both padlocks green, "Reset 2FA" next to the agent only.
    open_the_team(owner)
    expect(owner.get_by_role("img", name=PADLOCK)).to_have_count(2)
    reset = owner.get_by_role("link", name=f"Reset 2FA of {AGENT}")
    expect(reset).to_have_text("Reset 2FA")
    expect(row(owner, OWNER).get_by_role("link")).to_have_count(0)
    expect(owner.get_by_role("link", name="Reset 2FA")).to_have_count(1)
    what_the_eye_needs(owner, tmp_path, "reset-team", reset)

    # Ten minutes later the agent loses the phone: the app's key is gone with it.
    clock.advance(600)
    lost, key = key, ""

    # The owner opens the page that says what the reset does, and confirms.
    reset.click()
    expect(owner).to_have_url(f"{served_demo}/sites/acme/members/agent%40acme.test/reset")
    expect(owner.get_by_role("heading", level=1)).to_have_text(
        f"Reset the two-factor authentication of {AGENT}?"
    )
    expect(owner.locator("#reset-removes")).to_contain_text("recovery codes")
    expect(owner.locator("#reset-sessions")).to_contain_text(
        "Within a minute, every browser signed in as them must set up two-factor "
        "authentication again before going on."
    )
    confirm = owner.get_by_role("button", name="Reset 2FA")
    what_the_eye_needs(owner, tmp_path, "reset-confirm", confirm)
    confirm.click()

    # The owner's own code is ten minutes old: confirm a fresh one, and back to this page.
    refusal = owner.get_by_role("alert")
    expect(refusal).to_contain_text("Confirm it is you again before resetting")
    expect(owner.get_by_role("button", name="Reset 2FA")).to_have_count(0)
    again = refusal.get_by_role("link", name="Confirm now")
    what_the_eye_needs(owner, tmp_path, "-step-up", again)
    again.click()
    expect(owner).to_have_url(
        f"{served_demo}/mfa/challenge?next=/sites/acme/members/agent%2540acme.test/reset"
    )
    owner.get_by_label("Authentication code").fill(current_code(owners_key, clock()))
    owner.get_by_role("button", name="Verify", exact=True).click()
    expect(owner).to_have_url(f"{served_demo}/sites/acme/members/agent%40acme.test/reset")
    owner.get_by_role("button", name="Reset 2FA").click()

    # Back on the Team page: the notice, and no padlock next to the agent.
    expect(owner).to_have_url(f"{served_demo}/sites/acme/team")
    notice = owner.get_by_role("status")
    expect(notice).to_have_text(f"The two-factor authentication of {AGENT} was reset.")
    expect(row(owner, AGENT)).to_contain_text("no 2FA yet")
    expect(row(owner, AGENT).get_by_role("img", name=PADLOCK)).to_have_count(0)
    expect(owner.get_by_role("link", name="Reset 2FA")).to_have_count(0)
    what_the_eye_needs(owner, tmp_path, "reset-done", notice)

    # The agent's open session, at its next re-check: sent to set 2FA up again.
    clock.advance(RECHECK)
    agent.goto("/inbox")
    expect(agent).to_have_url(f"{served_demo}/mfa/enrol?next=/inbox")
    expect(agent.locator("#enrolment-notice")).to_contain_text(
        "Acme requires two-factor authentication"
    )
    new_key = set_up_the_app(agent, clock())
    expect(agent).to_have_url(f"{served_demo}/inbox")
    expect(agent.locator("#two-factor-status")).to_contain_text("Two-factor authentication is on")
    assert new_key not in ("", lost)

    # The owner's Team page: the agent's padlock is green again.
    owner.reload()
    expect(row(owner, AGENT).get_by_role("img", name=PADLOCK)).to_have_count(1)
    expect(owner.get_by_role("img", name=PADLOCK)).to_have_count(2)
    expect(owner.get_by_role("status")).to_have_count(0)  # the notice was shown once
    agent.context.close()
    owner.context.close()
