"""Crisp's story in a real browser (Chromium through Playwright) against the demo on a real
uvicorn server and the real clock: Acme's owner turns on 2FA and forces it on the operators; the
agent, sent to enrolment, scans the QR code; the owner's Team page shows two green padlocks. Then
"Remember this browser": a remembered browser signs in without a code until it is forgotten on
the settings page.

Chromium is Debian's (``apt-get install chromium``; ``.ci/run`` installs it): Playwright cannot
download its own browsers here. ``make screenshots`` runs these tests with
``MFA_GUARD_SCREENSHOTS=1`` to refresh ``docs/images/``: ``enrol.png`` (forced),
``enrol-optional.png`` and ``challenge.png`` at 1280 px, each also as ``*-phone.png`` at 390 px
(every image whole, the QR code read back from the screenshot), ``team.png`` and ``devices.png``.
Then the way out of the kit's pages: Cancel on an optional enrolment, Sign out from the enrolment
and the challenge.
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from examples.inbox import DEMO_PASSWORD, create_app
from playwright.sync_api import Browser, BrowserContext, Page, Response, ViewportSize, expect

from mfa_guard.testing import current_code
from tests.chromium import TIMEOUT_MS, screenshot
from tests.live import served
from tests.rendering import horizontal_overflow, image_problems, qr_codes_on_screen

OWNER = "owner@acme.test"
AGENT = "agent@acme.test"
SOLO = "solo@example.test"
# The remembered browsers' names come from their User-Agent; these two read well in the
# screenshot ("Chrome on Windows", "Mobile Safari on iOS (iPhone)") where headless Chromium's own
# would say "HeadlessChrome on Linux".
LAPTOP_AGENT = (
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/131.0.0.0 Safari/537.36"
)
PHONE_AGENT = (
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_5 like Mac OS X) AppleWebKit/605.1.15 "
    "(KHTML, like Gecko) Version/17.5 Mobile/15E148 Safari/604.1"
)
TOTP_PERIOD = 30
DESKTOP: ViewportSize = {"width": 1280, "height": 900}
PHONE: ViewportSize = {"width": 390, "height": 844}


@pytest.fixture(autouse=True)
def _demo_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    # The demo reads MFA_GUARD_* from the environment; this story uses its own defaults.
    for name in os.environ:
        if name.upper().startswith("MFA_GUARD_") and name != "MFA_GUARD_SCREENSHOTS":
            monkeypatch.delenv(name)


@pytest.fixture
def served_demo(tmp_path: Path) -> Iterator[str]:
    """The demo on a real uvicorn server (real clock, fresh data folder) on a free port."""
    with served(create_app(tmp_path / "data")) as url:
        yield url


def person(
    browser: Browser, base_url: str, user_agent: str | None = None
) -> tuple[BrowserContext, Page]:
    """A browser profile of one's own (cookies apart), as each person has."""
    context = browser.new_context(
        base_url=base_url, viewport={"width": 900, "height": 900}, user_agent=user_agent
    )
    context.set_default_timeout(TIMEOUT_MS)
    return context, context.new_page()


def sign_in(page: Page, email: str) -> None:
    page.goto("/login")
    page.get_by_label("E-mail address").fill(email)
    page.get_by_label("Password").fill(DEMO_PASSWORD)
    page.get_by_role("button", name="Sign in").click()


def scan_the_qr_code_and_confirm(page: Page, at: float | None = None) -> list[str]:
    """On the enrolment page with its QR code: what an authenticator app does, with the key for
    manual entry (its code of the moment ``at``, now by default); returns the recovery codes
    shown afterwards."""
    expect(page.locator(".qr svg")).to_be_visible()
    key = page.locator("#manual-key").inner_text()
    page.get_by_label("Code from your app").fill(
        current_code(key, time.time() if at is None else at)
    )
    page.get_by_role("button", name="Confirm and turn on").click()
    expect(page.get_by_role("heading", name="Save your recovery codes")).to_be_visible()
    return page.locator("#recovery-codes code").all_inner_texts()


def as_seen_at_both_widths(page: Page, tmp_path: Path, name: str) -> None:
    """The page at a desktop's width (``name``.png) and a phone's (``name``-phone.png): each
    image visible and whole, no sideways scrolling, a QR code on it readable from the
    screenshot; then back to the window's own size."""
    size = page.viewport_size
    for viewport, suffix in ((DESKTOP, ""), (PHONE, "-phone")):
        page.set_viewport_size(viewport)
        state = f"{name} at {viewport['width']} px"
        assert image_problems(page) == [], state
        assert horizontal_overflow(page) == 0, state
        if page.locator(".qr svg").count():
            [uri] = qr_codes_on_screen(page)
            key = page.locator("#manual-key").inner_text().replace(" ", "")
            assert f"secret={key}&" in uri, state
        screenshot(page, tmp_path, f"{name}{suffix}.png")
    if size is not None:
        page.set_viewport_size(size)


def post_settings(page: Page, grace_label: str) -> Response:
    """Ticks the switch, chooses from when, saves; the response to the form's post."""
    page.get_by_label("Force operators to have their Two Factor Authentication enabled").check()
    page.get_by_label("From when").select_option(label=grace_label)
    with page.expect_response(
        lambda response: (
            response.request.method == "POST" and response.url.endswith("/sites/acme/settings")
        )
    ) as posted:
        page.get_by_role("button", name="Save").click()
    page.wait_for_load_state()
    return posted.value


def test_the_owner_forces_2fa_and_the_agent_turns_it_on(
    browser: Browser, served_demo: str, tmp_path: Path
) -> None:
    owner_context, owner = person(browser, served_demo)
    agent_context, agent = person(browser, served_demo)

    # The owner signs in and turns on 2FA for their own account.
    sign_in(owner, OWNER)
    expect(owner).to_have_url(f"{served_demo}/inbox")
    owner.get_by_role("link", name="Two-factor settings").click()
    owner.get_by_role("button", name="Turn on two-factor authentication").click()
    # Optional for the owner: "Cancel" leads back; the header's "Sign out" leads out.
    expect(owner.get_by_role("link", name="Cancel")).to_be_visible()
    owner.get_by_role("button", name="Set up an authenticator app").click()
    expect(owner.get_by_role("banner").get_by_role("button", name="Sign out")).to_be_visible()
    as_seen_at_both_widths(owner, tmp_path, "enrol-optional")
    recovery_codes = scan_the_qr_code_and_confirm(owner)
    assert len(recovery_codes) == 10
    owner.get_by_role("link", name="I have saved my codes — continue").click()

    # Inbox settings: "at once" is refused while the agent has no 2FA, and says who.
    owner.get_by_role("navigation", name="Your sites").get_by_role(
        "link", name="Inbox settings"
    ).click()
    expect(owner).to_have_url(f"{served_demo}/sites/acme/settings")
    refused = post_settings(owner, "At once (every member has 2FA)")
    assert refused.status == 409
    expect(owner.locator("#settings-error")).to_contain_text("1 member of this site")
    expect(owner.locator("#members-without-2fa")).to_contain_text(AGENT)
    expect(owner.locator("#current-policy")).to_contain_text("Not enforced.")

    # The owner forces it at once all the same.
    forced = post_settings(
        owner, "At once, even for the members without 2FA: they must turn it on to continue"
    )
    assert forced.status == 303
    expect(owner).to_have_url(f"{served_demo}/sites/acme/settings")
    expect(owner.locator("#settings-notice")).to_contain_text("now enforced")
    expect(owner.locator("#current-policy")).to_contain_text("Enforced. Members need")
    expect(owner.locator("#current-policy")).to_contain_text(f"Turned on by {OWNER}")
    owner.get_by_role("button", name="Sign out").click()
    expect(owner).to_have_url(f"{served_demo}/login")

    # The agent signs in and lands on enrolment; the inbox leads back there until 2FA is on.
    sign_in(agent, AGENT)
    expect(agent).to_have_url(f"{served_demo}/mfa/enrol?next=/inbox")
    expect(agent.locator("#enrolment-notice")).to_contain_text(
        "Acme requires two-factor authentication"
    )
    agent.goto("/")
    expect(agent).to_have_url(f"{served_demo}/mfa/enrol?next=/")
    agent.goto("/inbox")
    expect(agent).to_have_url(f"{served_demo}/mfa/enrol?next=/inbox")
    agent.get_by_role("button", name="Set up an authenticator app").click()
    expect(agent.locator(".qr svg")).to_be_visible()
    # Forced: no "Cancel", only the way out by signing out.
    expect(agent.get_by_role("link", name="Cancel")).to_have_count(0)
    expect(agent.get_by_role("banner")).to_contain_text(f"Signed in as {AGENT}. Not you?")
    as_seen_at_both_widths(agent, tmp_path, "enrol")
    scan_the_qr_code_and_confirm(agent)
    agent.get_by_role("link", name="I have saved my codes — continue").click()
    expect(agent).to_have_url(f"{served_demo}/inbox")
    expect(agent.locator("#two-factor-status")).to_contain_text("Two-factor authentication is on")

    # The owner signs in again (their code of a moment ago cannot be used twice: a recovery
    # code, then) and sees two green padlocks on the Team page.
    sign_in(owner, OWNER)
    expect(owner).to_have_url(f"{served_demo}/mfa/challenge?next=/inbox")
    as_seen_at_both_widths(owner, tmp_path, "challenge")
    owner.get_by_text("Lost your device? Use a recovery code").click()
    owner.get_by_label("Recovery code").fill(recovery_codes[0])
    owner.get_by_role("button", name="Use recovery code").click()
    expect(owner).to_have_url(f"{served_demo}/inbox")
    owner.get_by_role("navigation", name="Your sites").get_by_role("link", name="Team").click()
    expect(owner).to_have_url(f"{served_demo}/sites/acme/team")
    padlocks = owner.get_by_role("img", name="Two-factor authentication on")
    expect(padlocks).to_have_count(2)
    expect(owner.get_by_text("no 2FA yet")).to_have_count(0)
    for email in (OWNER, AGENT):
        row = owner.locator(f'tr[data-member="{email}"]')
        expect(row.get_by_role("img", name="Two-factor authentication on")).to_have_count(1)
    screenshot(owner, tmp_path, "team.png")
    # The padlocks, whole at both widths.
    for viewport in (DESKTOP, PHONE):
        owner.set_viewport_size(viewport)
        assert image_problems(owner) == [], viewport

    agent_context.close()
    owner_context.close()


def a_fresh_time_step() -> float:
    """Now, at least 10 seconds before the authenticator's next time step (waiting for it if
    need be), so the codes of the steps just before and after now stay valid for a while."""
    if time.time() % TOTP_PERIOD > TOTP_PERIOD - 10:
        time.sleep(TOTP_PERIOD - time.time() % TOTP_PERIOD + 0.5)
    return time.time()


def answer_the_challenge(page: Page, key: str, at: float, *, remember: bool) -> None:
    page.get_by_label("Authentication code").fill(current_code(key, at))
    if remember:
        box = page.get_by_label("Remember this browser for 30 days")
        expect(box).not_to_be_checked()
        box.check()
    page.get_by_role("button", name="Verify", exact=True).click()


def test_a_remembered_browser_signs_in_without_a_code_until_it_is_forgotten(
    browser: Browser, served_demo: str, tmp_path: Path
) -> None:
    laptop_context, laptop = person(browser, served_demo, LAPTOP_AGENT)
    phone_context, phone = person(browser, served_demo, PHONE_AGENT)
    inbox = f"{served_demo}/inbox"
    # A time step's code is accepted once: the enrolment takes the step before now, the phone
    # now's, the laptop the next one (each within the one step of drift allowed).
    now = a_fresh_time_step()

    # The laptop turns 2FA on.
    sign_in(laptop, SOLO)
    expect(laptop).to_have_url(inbox)
    laptop.get_by_role("link", name="Two-factor settings").click()
    laptop.get_by_role("button", name="Turn on two-factor authentication").click()
    laptop.get_by_role("button", name="Set up an authenticator app").click()
    expect(laptop.locator(".qr svg")).to_be_visible()
    key = laptop.locator("#manual-key").inner_text()
    scan_the_qr_code_and_confirm(laptop, at=now - TOTP_PERIOD)
    laptop.get_by_role("link", name="I have saved my codes — continue").click()
    expect(laptop).to_have_url(inbox)

    # The phone signs in with a code and is remembered.
    sign_in(phone, SOLO)
    expect(phone).to_have_url(f"{served_demo}/mfa/challenge?next=/inbox")
    answer_the_challenge(phone, key, now, remember=True)
    expect(phone).to_have_url(inbox)

    # The laptop signs out and in: a code, "Remember this browser" ticked.
    laptop.get_by_role("button", name="Sign out").click()
    sign_in(laptop, SOLO)
    expect(laptop).to_have_url(f"{served_demo}/mfa/challenge?next=/inbox")
    answer_the_challenge(laptop, key, now + TOTP_PERIOD, remember=True)
    expect(laptop).to_have_url(inbox)
    [cookie] = [c for c in laptop_context.cookies() if c["name"] == "mfa_guard_device"]
    assert cookie["httpOnly"]
    assert cookie["sameSite"] == "Lax"

    # Out and in again: straight to the inbox, no code asked.
    laptop.get_by_role("button", name="Sign out").click()
    sign_in(laptop, SOLO)
    expect(laptop).to_have_url(inbox)

    # The settings page lists both browsers, this one marked.
    laptop.get_by_role("link", name="Two-factor settings").click()
    remembered = laptop.locator("#remembered-browsers")
    expect(remembered.get_by_role("heading", name="Remembered browsers")).to_be_visible()
    expect(remembered.locator("li")).to_have_count(2)
    this_browser = remembered.locator("li[data-current]")
    expect(this_browser).to_contain_text("Chrome on Windows")
    expect(this_browser).to_contain_text("This browser")
    expect(remembered.locator("li:not([data-current])")).to_contain_text(
        "Mobile Safari on iOS (iPhone)"
    )
    screenshot(laptop, tmp_path, "devices.png", part=remembered)

    # Forgotten: this session came in by the browser, so it is asked for a code at once...
    this_browser.get_by_role("button", name="Forget Chrome on Windows").click()
    expect(laptop).to_have_url(re.compile(r"/mfa/challenge\?next=/mfa/settings$"))
    assert not [c for c in laptop_context.cookies() if c["name"] == "mfa_guard_device"]
    # ... and so is the next sign-in.
    sign_in(laptop, SOLO)
    expect(laptop).to_have_url(f"{served_demo}/mfa/challenge?next=/inbox")
    expect(laptop.get_by_label("Authentication code")).to_be_visible()

    # The phone is still remembered.
    phone.get_by_role("button", name="Sign out").click()
    sign_in(phone, SOLO)
    expect(phone).to_have_url(inbox)

    phone_context.close()
    laptop_context.close()


def test_a_person_finds_the_way_out_of_every_kit_page(browser: Browser, served_demo: str) -> None:
    """The kit's pages drop the demo's own header: theirs offers the demo's sign-out (a form
    posting to /logout), and "Cancel" back to where the person was while enrolment is optional."""
    context, page = person(browser, served_demo)
    inbox = f"{served_demo}/inbox"
    now = a_fresh_time_step()

    # Enrolment is optional for Solo: Cancel leads back to next=, from the QR code too.
    sign_in(page, SOLO)
    page.goto("/mfa/enrol?next=/inbox")
    page.get_by_role("link", name="Cancel").click()
    expect(page).to_have_url(inbox)
    page.goto("/mfa/enrol?next=/inbox")
    page.get_by_role("button", name="Set up an authenticator app").click()
    expect(page.locator(".qr svg")).to_be_visible()
    page.get_by_role("link", name="Cancel").click()
    expect(page).to_have_url(inbox)

    # Solo turns 2FA on after all; signed in again, the challenge: signed out from there.
    page.goto("/mfa/enrol?next=/inbox")
    scan_the_qr_code_and_confirm(page, at=now - TOTP_PERIOD)
    page.get_by_role("link", name="I have saved my codes — continue").click()
    page.get_by_role("button", name="Sign out").click()
    sign_in(page, SOLO)
    expect(page).to_have_url(f"{served_demo}/mfa/challenge?next=/inbox")
    page.get_by_role("banner").get_by_role("button", name="Sign out").click()
    expect(page).to_have_url(f"{served_demo}/login")
    page.goto("/inbox")
    expect(page).to_have_url(f"{served_demo}/login?next=/inbox")

    # The agent, from the QR code of an enrolment: signed out, the password asked again.
    sign_in(page, AGENT)
    page.goto("/mfa/enrol?next=/inbox")
    page.get_by_role("button", name="Set up an authenticator app").click()
    expect(page.locator(".qr svg")).to_be_visible()
    page.get_by_role("banner").get_by_role("button", name="Sign out").click()
    expect(page).to_have_url(f"{served_demo}/login")
    page.goto("/inbox")
    expect(page).to_have_url(f"{served_demo}/login?next=/inbox")
    context.close()
