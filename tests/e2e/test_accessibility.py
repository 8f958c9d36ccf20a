"""Every page of the kit and of the demo, in each state it shows, checked with axe-core in a
real browser (Chromium through Playwright, against the demo on a real uvicorn server): no
violation of any impact. Then what axe does not check: each input has a label, code inputs ask
for one-time codes on a numeric keyboard, and the page reads in order without CSS.

The passkey states (the demo turns passkeys on at ``http://localhost:$PORT``) are checked with
the DevTools' virtual authenticator, as in tests/e2e/test_passkeys_browser.py.

Chromium is Debian's, as in tests/e2e/test_browser_story.py: skipped when it is missing, a
failure with CI=true.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from examples.inbox import DEMO_PASSWORD
from playwright.sync_api import Browser, Page, expect

from mfa_guard.testing import FrozenClock, current_code
from tests.apps import demo_inbox
from tests.live import served, served_by
from tests.rendering import violations

TIMEOUT_MS = 15_000
OWNER = "owner@acme.test"
SOLO = "solo@example.test"
TOTP_PERIOD = 30
FRENCH = {"Accept-Language": "fr-FR,fr;q=0.9"}
PHONE = "+33 6 12 34 56 78"
TEXTED_CODE = re.compile(r"\b(\d{6}) is your ")
CODE_INPUTS = "#code, #recovery-code, #phone-code, #disable-code"
NUMERIC_CODE_INPUTS = "#code, #phone-code, #disable-code"


@pytest.fixture(autouse=True)
def _demo_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in os.environ:
        if name.upper().startswith("MFA_GUARD_"):
            monkeypatch.delenv(name)
    # The resend cooldown runs on the real clock: widened, so the sign-in text follows the
    # phone's own at once.
    monkeypatch.setenv("MFA_GUARD_SMS__RESEND_COOLDOWN", "100/second")


@pytest.fixture
def clock() -> FrozenClock:
    return FrozenClock()


@pytest.fixture
def page(browser: Browser, tmp_path: Path, clock: FrozenClock) -> Iterator[Page]:
    with served(demo_inbox(tmp_path / "data", clock=clock)) as url:
        context = browser.new_context(base_url=url, viewport={"width": 900, "height": 900})
        context.set_default_timeout(TIMEOUT_MS)
        yield context.new_page()


def labelled_inputs(page: Page) -> list[str]:
    """The visible inputs, selects and textareas without a label of their own."""
    unlabelled: list[str] = page.evaluate(
        """() => [...document.querySelectorAll('input, select, textarea')]
            .filter(e => e.type !== 'hidden' && e.labels.length === 0
                         && !e.getAttribute('aria-labelledby'))
            .map(e => e.outerHTML)"""
    )
    return unlabelled


def reading_order(page: Page) -> list[str]:
    """The headings, labels and buttons in source order, as read without CSS."""
    order: list[str] = page.evaluate(
        """() => [...document.querySelectorAll('h1, h2, label, button, summary')]
            .map(e => e.tagName.toLowerCase() + ':' + e.textContent.trim().replace(/\\s+/g, ' '))"""
    )
    return order


def check(page: Page, state: str) -> None:
    page.wait_for_load_state()
    found = violations(page)
    assert not found, f"{state} ({page.url}):\n" + "\n".join(found)
    assert not labelled_inputs(page), f"{state}: inputs without a label"
    for code_input in page.locator(NUMERIC_CODE_INPUTS).all():
        assert code_input.get_attribute("autocomplete") == "one-time-code", state
        assert code_input.get_attribute("inputmode") == "numeric", state
    for code_input in page.locator(CODE_INPUTS).all():
        assert code_input.get_attribute("id") is not None
    order = reading_order(page)
    # Without CSS the page still starts with its title: nothing but the site's header (the
    # demo's, or the kit's with the app's sign-out, in English or French) and the enrolment
    # notice comes before the first heading.
    assert any(item.startswith("h1:") for item in order), f"{state}: no h1"
    first_heading = next(i for i, item in enumerate(order) if item.startswith("h1:"))
    sign_out = ("button:Sign out", "button:Se déconnecter")
    assert all(item.startswith(sign_out) for item in order[:first_heading]), (
        f"{state}: {order[:first_heading]} before the title"
    )
    # Each label comes before its own input, so it is read first.
    assert page.evaluate(
        """() => [...document.querySelectorAll('label[for]')].every(label => {
            const input = document.getElementById(label.htmlFor);
            return input && (label.compareDocumentPosition(input)
                             & Node.DOCUMENT_POSITION_FOLLOWING);
        })"""
    ), f"{state}: a label follows its input"


def texted_code(page: Page) -> str:
    messages = page.request.get("/outbox").json()
    match = TEXTED_CODE.search(messages[0]["text"])
    assert match, messages
    return match.group(1)


def sign_in(page: Page, email: str = OWNER) -> None:
    """The demo's sign-in form, in whatever language the page speaks."""
    page.goto("/login")
    page.locator("#email").fill(email)
    page.locator("#password").fill(DEMO_PASSWORD)
    page.locator('form[action="/login"] button[type="submit"]').click()
    page.wait_for_load_state()


def test_axe_finds_what_it_should(page: Page) -> None:
    page.set_content('<html><body><input type="text"></body></html>')
    assert any(line.startswith("label ") for line in violations(page))


def test_every_page_in_every_state_passes_axe(page: Page, clock: FrozenClock) -> None:
    page.goto("/login")
    check(page, "demo login")
    page.get_by_role("button", name="Sign in").click()  # empty: the browser refuses it
    page.get_by_label("E-mail address").fill(OWNER)
    page.get_by_label("Password").fill("wrong password")
    page.get_by_role("button", name="Sign in").click()
    expect(page.locator("#login-error")).to_be_visible()
    check(page, "demo login, refused")

    sign_in(page)
    expect(page).to_have_url(re.compile(r"/inbox$"))
    check(page, "inbox")

    page.goto("/mfa/settings")
    check(page, "settings, 2FA off, with the phone form")
    page.goto("/mfa/enrol")
    check(page, "enrolment, before")
    page.get_by_role("button", name="Set up an authenticator app").click()
    expect(page.locator(".qr svg")).to_be_visible()
    check(page, "enrolment, with the QR code")
    page.get_by_label("Code from your app").fill("000000")
    page.get_by_role("button", name="Confirm and turn on").click()
    check(page, "enrolment, code refused")
    key = page.locator("#manual-key").inner_text()
    page.get_by_label("Code from your app").fill(current_code(key, clock()))
    page.get_by_role("button", name="Confirm and turn on").click()
    expect(page.get_by_role("heading", name="Save your recovery codes")).to_be_visible()
    recovery_codes = page.locator("#recovery-codes code").all_inner_texts()
    check(page, "recovery codes")

    page.goto("/mfa/settings")
    check(page, "settings, 2FA on")
    page.get_by_label("Mobile number").fill(PHONE)
    page.get_by_role("button", name="Add the number").click()
    expect(page.locator("#phone-code")).to_be_visible()
    check(page, "settings, with the texted code's form")
    page.locator("#phone-code").fill(texted_code(page))
    page.get_by_role("button", name="Verify the number").click()
    expect(page.locator("#verified-phone")).to_be_visible()
    check(page, "settings, with a verified phone")

    page.goto("/inbox")
    page.get_by_role("navigation", name="Your sites").get_by_role("link", name="Team").click()
    check(page, "Team")
    page.goto("/inbox")
    page.get_by_role("navigation", name="Your sites").get_by_role(
        "link", name="Inbox settings"
    ).click()
    check(page, "Inbox settings")
    page.goto("/sites/nowhere/team")
    check(page, "the demo's error page")

    # The kit's error page: a form whose CSRF token no longer matches.
    page.goto("/mfa/settings")
    page.locator('form[action$="/recovery-codes"] input[name="csrf_token"]').evaluate(
        "e => e.value = 'stale'"
    )
    page.get_by_role("button", name="Generate new recovery codes").click()
    expect(page.get_by_role("heading", name="Request refused")).to_be_visible()
    check(page, "the kit's error page")

    # Signing in again: the challenge, its recovery form, its SMS forms.
    page.goto("/inbox")
    page.get_by_role("button", name="Sign out").click()
    sign_in(page)
    expect(page).to_have_url(re.compile(r"/mfa/challenge"))
    check(page, "challenge, TOTP form")
    page.get_by_label("Authentication code").fill("000000")
    page.get_by_role("button", name="Verify", exact=True).click()
    expect(page.locator("#form-error")).to_be_visible()
    check(page, "challenge, code refused")
    page.get_by_text("Lost your device? Use a recovery code").click()
    expect(page.get_by_label("Recovery code")).to_be_visible()
    check(page, "challenge, recovery form open")
    page.goto("/mfa/sms?next=/inbox")
    check(page, "the SMS page")
    page.get_by_role("button", name="Text me a code").click()
    expect(page.get_by_role("radio", name=re.compile("The code texted to"))).to_be_checked()
    check(page, "challenge, the texted code chosen")
    # The phone's third text in ten minutes goes, the fourth is refused with the wait.
    page.get_by_role("button", name="Send a new code").click()
    expect(page.get_by_role("status")).to_contain_text("We sent a code")
    page.get_by_role("button", name="Send a new code").click()
    expect(page.locator("#send-refused")).to_be_visible()
    check(page, "challenge, a resend refused")
    page.get_by_text("Lost your device? Use a recovery code").click()
    page.get_by_label("Recovery code").fill(recovery_codes[0])
    page.get_by_role("button", name="Use recovery code").click()
    expect(page).to_have_url(re.compile(r"/inbox$"))


def test_the_french_pages_pass_axe(page: Page) -> None:
    page.set_extra_http_headers({"Accept-Language": "fr-FR,fr;q=0.9"})
    page.goto("/login")
    expect(page.locator("html")).to_have_attribute("lang", "fr")
    check(page, "the demo's sign-in in French")
    sign_in(page)
    check(page, "inbox in French")
    sites = page.get_by_role("navigation", name="Vos sites")
    sites.get_by_role("link", name="Équipe").click()
    check(page, "Team in French")
    page.goto("/inbox")
    page.get_by_role("navigation", name="Vos sites").get_by_role(
        "link", name="Réglages de la messagerie"
    ).click()
    check(page, "Inbox settings in French")
    page.goto("/mfa/settings")
    expect(page.locator("html")).to_have_attribute("lang", "fr")
    check(page, "settings in French")
    page.goto("/mfa/enrol")
    page.get_by_role("button", name="Configurer une application d\u2019authentification").click()
    expect(page.locator(".qr svg")).to_be_visible()
    check(page, "enrolment with the QR code, in French")


def test_remembered_browsers_pass_axe_in_english_and_french(page: Page, clock: FrozenClock) -> None:
    """The challenge with "Remember this browser", the settings page with a browser listed, its
    refusal and its notice; then the same in French."""
    now = clock()
    sign_in(page, SOLO)
    page.goto("/mfa/enrol")
    page.get_by_role("button", name="Set up an authenticator app").click()
    key = page.locator("#manual-key").inner_text()
    page.get_by_label("Code from your app").fill(current_code(key, now - TOTP_PERIOD))
    page.get_by_role("button", name="Confirm and turn on").click()
    expect(page.get_by_role("heading", name="Save your recovery codes")).to_be_visible()
    page.goto("/mfa/settings")
    check(page, "settings, 2FA on, no remembered browser")

    page.goto("/inbox")
    page.get_by_role("button", name="Sign out").click()
    sign_in(page, SOLO)
    expect(page).to_have_url(re.compile(r"/mfa/challenge"))
    box = page.get_by_label("Remember this browser for 30 days")
    expect(box).not_to_be_checked()
    box.check()
    check(page, "challenge, the remember box ticked")
    page.get_by_label("Authentication code").fill("000000")
    page.get_by_role("button", name="Verify", exact=True).click()
    expect(page.locator("#form-error")).to_be_visible()
    expect(page.get_by_label("Remember this browser for 30 days")).to_be_checked()
    check(page, "challenge, code refused, the box still ticked")
    page.get_by_label("Authentication code").fill(current_code(key, now))
    page.get_by_role("button", name="Verify", exact=True).click()
    expect(page).to_have_url(re.compile(r"/inbox$"))

    page.goto("/mfa/settings")
    expect(page.locator("#remembered-browsers li")).to_have_count(1)
    check(page, "settings, a remembered browser")
    # A browser forgotten meanwhile (elsewhere): the settings page with the refusal.
    page.locator('input[name="device"]').evaluate("e => e.value = 'gone'")
    page.locator("#remembered-browsers li").get_by_role("button").click()
    expect(page.locator("#form-error")).to_be_visible()
    check(page, "settings, no such remembered browser")

    page.set_extra_http_headers(FRENCH)
    page.goto("/mfa/settings")
    expect(page.locator("html")).to_have_attribute("lang", "fr")
    expect(page.get_by_role("heading", name="Navigateurs mémorisés")).to_be_visible()
    check(page, "settings, a remembered browser, in French")
    page.locator("#remembered-browsers li").get_by_role("button").click()
    expect(page.get_by_role("status")).to_contain_text("Navigateur oublié.")
    check(page, "settings, the browser forgotten, in French")

    # A browser with no remembered device: the French challenge with its box.
    page.context.clear_cookies()
    sign_in(page, SOLO)
    expect(page).to_have_url(re.compile(r"/mfa/challenge"))
    expect(page.get_by_label("Mémoriser ce navigateur pendant 30 jours")).not_to_be_checked()
    check(page, "challenge with the remember box, in French")


def test_the_passkey_pages_pass_axe_in_english_and_french(
    browser: Browser, tmp_path: Path, clock: FrozenClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Enrolment offering a passkey, the recovery codes the script shows, the settings page
    listing an app and a passkey (a rename refused, the page adding an app), the challenge
    offering the passkey first and a refusal in its live region; the settings in French."""

    def build(port: int) -> Any:
        monkeypatch.setenv("PORT", str(port))
        return demo_inbox(tmp_path / "data", clock=clock)

    with served_by(build) as url:
        context = browser.new_context(
            base_url=url.replace("127.0.0.1", "localhost"), viewport={"width": 900, "height": 900}
        )
        context.set_default_timeout(TIMEOUT_MS)
        page = context.new_page()
        cdp = context.new_cdp_session(page)
        cdp.send("WebAuthn.enable")
        cdp.send(
            "WebAuthn.addVirtualAuthenticator",
            {
                "options": {
                    "protocol": "ctap2",
                    "transport": "internal",
                    "hasResidentKey": True,
                    "hasUserVerification": True,
                    "isUserVerified": True,
                }
            },
        )

        sign_in(page, SOLO)
        page.goto("/mfa/enrol")
        expect(page.get_by_role("button", name="Use a passkey or security key")).to_be_visible()
        check(page, "enrolment, a passkey offered")
        page.get_by_role("button", name="Use a passkey or security key").click()
        expect(page.get_by_role("heading", name="Save your recovery codes")).to_be_visible()
        check(page, "the recovery codes the passkey script shows")

        page.goto("/mfa/settings")
        page.get_by_role("button", name="Add an authenticator app").click()
        check(page, "adding an app")
        key = page.locator("#manual-key").inner_text()
        page.get_by_label("Code from your app").fill(current_code(key, clock()))
        page.get_by_role("button", name="Add the app").click()
        expect(page.locator("#authenticators li")).to_have_count(2)
        check(page, "settings, a passkey and an app")
        row = page.locator('#authenticators li[data-kind="app"]')
        row.get_by_text("Rename").click()
        row.get_by_label("New name for Authenticator app").fill("   ")
        row.get_by_role("button", name="Save the name").click()
        expect(page.locator("#form-error")).to_be_visible()
        check(page, "settings, a name refused")
        # The same passkey again: the browser refuses it, the script says so.
        page.goto("/mfa/settings")
        page.get_by_role("button", name="Add a passkey or security key").click()
        expect(page.locator("#passkey-form [data-webauthn-status] .error")).to_be_visible()
        check(page, "settings, the passkey script's refusal")

        page.goto("/inbox")
        page.get_by_role("button", name="Sign out").click()
        sign_in(page, SOLO)
        expect(page).to_have_url(re.compile(r"/mfa/challenge"))
        expect(page.get_by_role("button", name="Use your passkey or security key")).to_be_visible()
        check(page, "challenge, the passkey first")

        # The answer comes after its challenge expired: the server's refusal, said on the page.
        def later(route: Any) -> None:
            clock.advance(301)
            route.continue_()

        page.route("**/mfa/api/webauthn/authenticate", later)
        page.get_by_role("button", name="Use your passkey or security key").click()
        expect(page.locator("#passkey-form [data-webauthn-status] .error")).to_be_visible()
        check(page, "challenge, the passkey's refusal")

        page.get_by_label("Authentication code").fill(current_code(key, clock() + TOTP_PERIOD))
        page.get_by_role("button", name="Verify", exact=True).click()
        expect(page).to_have_url(re.compile(r"/inbox$"))
        page.set_extra_http_headers(FRENCH)
        page.goto("/mfa/settings")
        expect(page.get_by_role("heading", name="Vos authentificateurs")).to_be_visible()
        check(page, "settings with authenticators, in French")
        context.close()
