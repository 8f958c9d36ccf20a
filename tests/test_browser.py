"""Crisp's story in a real browser (Chromium through Playwright) against the demo on a real
uvicorn server and the real clock: Acme's owner turns on 2FA and forces it on the operators; the
agent, sent to enrolment, scans the QR code; the owner's Team page shows two green padlocks.

Chromium is Debian's (``apt-get install chromium``; ``.ci/run`` installs it): Playwright cannot
download its own browsers here. ``make screenshots`` runs this test with
``MFA_GUARD_SCREENSHOTS=1`` to refresh ``docs/images/enrol.png`` and ``docs/images/team.png``.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from examples.inbox import DEMO_PASSWORD, create_app
from playwright.sync_api import Browser, BrowserContext, Page, Response, expect, sync_playwright

from mfa_guard.testing import current_code
from tests.live import served

ROOT = Path(__file__).resolve().parent.parent
CHROMIUM = Path("/usr/bin/chromium")
DOCS_IMAGES = ROOT / "docs" / "images"
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
# Playwright's waits, in milliseconds: generous for a loaded CI machine.
TIMEOUT_MS = 15_000

OWNER = "owner@acme.test"
AGENT = "agent@acme.test"


@pytest.fixture(autouse=True)
def _demo_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    # The demo reads MFA_GUARD_* from the environment; this story uses its own defaults.
    for name in os.environ:
        if name.upper().startswith("MFA_GUARD_") and name != "MFA_GUARD_SCREENSHOTS":
            monkeypatch.delenv(name)


def _chromium() -> Path:
    if CHROMIUM.exists():
        return CHROMIUM
    reason = f"{CHROMIUM} is missing (apt-get install chromium)"
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"{reason}; with CI=true the browser test must run")
    pytest.skip(reason)


@pytest.fixture
def served_demo(tmp_path: Path) -> Iterator[str]:
    """The demo on a real uvicorn server (real clock, fresh data folder) on a free port."""
    with served(create_app(tmp_path / "data")) as url:
        yield url


@pytest.fixture
def browser() -> Iterator[Browser]:
    executable = _chromium()
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=executable, args=["--no-sandbox"])
        try:
            yield browser
        finally:
            browser.close()


def person(browser: Browser, base_url: str) -> tuple[BrowserContext, Page]:
    """A browser profile of one's own (cookies apart), as each person has."""
    context = browser.new_context(base_url=base_url, viewport={"width": 900, "height": 900})
    context.set_default_timeout(TIMEOUT_MS)
    return context, context.new_page()


def sign_in(page: Page, email: str) -> None:
    page.goto("/login")
    page.get_by_label("E-mail address").fill(email)
    page.get_by_label("Password").fill(DEMO_PASSWORD)
    page.get_by_role("button", name="Sign in").click()


def scan_the_qr_code_and_confirm(page: Page) -> list[str]:
    """On the enrolment page with its QR code: what an authenticator app does, with the key for
    manual entry; returns the recovery codes shown afterwards."""
    expect(page.locator(".qr svg")).to_be_visible()
    key = page.locator("#manual-key").inner_text()
    page.get_by_label("Code from your app").fill(current_code(key, time.time()))
    page.get_by_role("button", name="Confirm and turn on").click()
    expect(page.get_by_role("heading", name="Save your recovery codes")).to_be_visible()
    return page.locator("#recovery-codes code").all_inner_texts()


def screenshot(page: Page, tmp_path: Path, name: str) -> None:
    """Always into tmp_path (checked to be a PNG); into docs/images with
    MFA_GUARD_SCREENSHOTS=1 (``make screenshots``)."""
    places = [tmp_path / name]
    if os.environ.get("MFA_GUARD_SCREENSHOTS") == "1":
        DOCS_IMAGES.mkdir(parents=True, exist_ok=True)
        places.append(DOCS_IMAGES / name)
    for place in places:
        page.screenshot(path=place, full_page=True)
        image = place.read_bytes()
        assert image.startswith(PNG_SIGNATURE), place
        assert len(image) > 1000, place


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
    owner.get_by_role("link", name="Turn on two-factor authentication").click()
    owner.get_by_role("button", name="Set up an authenticator app").click()
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
        "A site you belong to requires two-factor authentication"
    )
    agent.goto("/")
    expect(agent).to_have_url(f"{served_demo}/mfa/enrol?next=/")
    agent.goto("/inbox")
    expect(agent).to_have_url(f"{served_demo}/mfa/enrol?next=/inbox")
    agent.get_by_role("button", name="Set up an authenticator app").click()
    expect(agent.locator(".qr svg")).to_be_visible()
    screenshot(agent, tmp_path, "enrol.png")
    scan_the_qr_code_and_confirm(agent)
    agent.get_by_role("link", name="I have saved my codes — continue").click()
    expect(agent).to_have_url(f"{served_demo}/inbox")
    expect(agent.locator("#two-factor-status")).to_contain_text("Two-factor authentication is on")

    # The owner signs in again (their code of a moment ago cannot be used twice: a recovery
    # code, then) and sees two green padlocks on the Team page.
    sign_in(owner, OWNER)
    expect(owner).to_have_url(f"{served_demo}/mfa/challenge?next=/inbox")
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

    agent_context.close()
    owner_context.close()
