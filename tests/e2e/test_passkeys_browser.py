"""Passkeys and security keys in a real browser: Chromium through Playwright, with the virtual
authenticators of the DevTools protocol (``WebAuthn.addVirtualAuthenticator``), against a guarded
app on a real uvicorn server at ``http://localhost:<port>`` (a secure context without TLS, and
the RP ID ``localhost``).

Solo, who uses an authenticator app, adds the laptop's passkey on the real settings page, signs
out, and signs in with it on the real challenge page; adds a security key (USB), then removes the
passkey, adds a second authenticator app (its QR code read from the screen) and signs in with the
key. Then: a passkey as the first factor on the enrolment page (the recovery codes shown by the
script), what the script says when the browser or the server refuses (in the page's language), a
session that must verify again sent to the challenge, the script's fallback for browsers without
WebAuthn's JSON helpers, and a browser without WebAuthn, where the passkey buttons stay hidden
and the code forms work as before; passkeys under a Content-Security-Policy that allows no
inline script. Last, the demo (``make demo``), which turns passkeys on for
``http://localhost:$PORT``.

``make screenshots`` (``MFA_GUARD_SCREENSHOTS=1``) saves ``passkeys-settings.png`` and
``passkeys-challenge.png`` at 1280 px, each also as ``*-phone.png`` at 390 px, into docs/images.
Chromium is Debian's, as in tests/e2e/test_browser_story.py.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from examples.inbox import DEMO_PASSWORD
from playwright.sync_api import (
    Browser,
    ConsoleMessage,
    expect,
)

from mfa_guard.testing import FrozenClock, current_code
from tests.apps import demo_inbox
from tests.live import served_by
from tests.passkeys_browser import (
    DESKTOP,
    PHONE,
    PLATFORM,
    ROAMING,
    SOLO,
    TOTP_PERIOD,
    Site,
    enrol_with_the_app,
    passkey_site,
    person,
    rows,
    sign_in,
    sign_out,
    what_the_eye_needs,
)
from tests.rendering import horizontal_overflow, image_problems, qr_codes_on_screen, violations


@pytest.fixture
def site() -> Iterator[Site]:
    with passkey_site() as served_site:
        yield served_site


def test_a_passkey_and_a_security_key_added_used_and_removed(
    browser: Browser, site: Site, tmp_path: Path
) -> None:
    solo = person(browser, site.url)
    page = solo.page
    now = site.ga.clock()
    laptop = solo.add_authenticator(PLATFORM)

    # Solo has an authenticator app already.
    sign_in(page)
    key = enrol_with_the_app(page, now - TOTP_PERIOD)

    # The settings page: the app listed, a passkey added under a name.
    page.goto("/mfa/settings")
    assert rows(page) == [("app", "Authenticator app")]
    page.get_by_label("Name for the passkey or security key (optional)").fill("Work laptop")
    page.get_by_role("button", name="Add a passkey or security key").click()
    expect(page).to_have_url(f"{site.url}/mfa/settings?added=passkey")
    expect(page.get_by_role("status")).to_have_text("Your passkey or security key is added.")
    assert rows(page) == [
        ("app", "Authenticator app"),
        ("passkey", "Work laptop Passkey"),
    ]
    [credential] = solo.credentials(laptop)
    assert credential["isResidentCredential"] is True
    assert not violations(page), "axe-core finds nothing on the settings page"

    # Signed out and in again: the challenge offers the passkey first.
    sign_out(page)
    sign_in(page)
    page.goto("/protected")
    expect(page).to_have_url(f"{site.url}/mfa/challenge?next=/protected")
    passkey = page.get_by_role("button", name="Use your passkey or security key")
    expect(passkey).to_be_visible()
    expect(page.get_by_label("Authentication code")).to_be_visible()
    assert not violations(page), "axe-core finds nothing on the challenge"
    what_the_eye_needs(page, tmp_path, "passkeys-challenge", "Use your passkey or security key")
    page.get_by_label("Remember this browser for 30 days").check()
    passkey.click()
    expect(page).to_have_url(f"{site.url}/protected")
    expect(page.locator("body")).to_have_text("protected content")
    assert [c["name"] for c in solo.context.cookies() if c["name"] == "mfa_guard_device"]
    assert solo.credentials(laptop)[0]["signCount"] >= 2

    # A security key on USB: the laptop's passkey does not answer (it is excluded anyway).
    usb = solo.add_authenticator(ROAMING)
    solo.answers(laptop, present=False)
    page.goto("/mfa/settings")
    page.get_by_role("button", name="Add a passkey or security key").click()
    expect(page).to_have_url(f"{site.url}/mfa/settings?added=passkey")
    assert rows(page) == [
        ("app", "Authenticator app"),
        ("passkey", "Work laptop Passkey"),
        ("security-key", "Security key"),
    ]
    assert len(solo.credentials(usb)) == 1
    what_the_eye_needs(page, tmp_path, "passkeys-settings", "Add a passkey or security key")
    assert not violations(page), "axe-core finds nothing on the settings page with three"

    # The passkey removed (a server-side form, no script): the key and the app remain.
    row = page.locator('#authenticators li[data-kind="passkey"]')
    row.get_by_role("button", name="Remove Work laptop").click()
    expect(page.get_by_role("status")).to_have_text("The authenticator is removed.")
    assert rows(page) == [
        ("app", "Authenticator app"),
        ("security-key", "Security key"),
    ]
    # Renamed too.
    key_row = page.locator('#authenticators li[data-kind="security-key"]')
    key_row.get_by_text("Rename").click()
    key_row.get_by_label("New name for Security key").fill("Blue key")
    key_row.get_by_role("button", name="Save the name").click()
    expect(page.get_by_role("status")).to_have_text("The authenticator is renamed.")
    assert rows(page)[1] == ("security-key", "Blue key Security key")

    # Another authenticator app: the enrolment page's QR code, readable from the screen.
    page.get_by_role("button", name="Add another authenticator app").click()
    expect(page.get_by_role("heading", name="Add an authenticator app")).to_be_visible()
    second = page.locator("#manual-key").inner_text()
    for viewport in (DESKTOP, PHONE):
        page.set_viewport_size(viewport)
        state = f"adding an app at {viewport['width']} px"
        assert image_problems(page) == [], state
        assert horizontal_overflow(page) == 0, state
        [uri] = qr_codes_on_screen(page)
        assert f"secret={second.replace(' ', '')}&" in uri, state
    page.set_viewport_size(DESKTOP)
    assert not violations(page), "axe-core finds nothing on the page adding an app"
    page.get_by_label("Code from your app").fill(current_code(second, now))
    page.get_by_label("Name for this app (optional)").fill("Tablet")
    page.get_by_role("button", name="Add the app").click()
    expect(page.get_by_role("status")).to_have_text("Your authenticator app is added.")
    assert rows(page)[-1] == ("app", "Tablet Authenticator app")

    # Removing forgot the remembered browsers: signed in again with the key.
    sign_out(page)
    sign_in(page)
    page.goto("/protected")
    expect(page).to_have_url(f"{site.url}/mfa/challenge?next=/protected")
    page.get_by_role("button", name="Use your passkey or security key").click()
    expect(page).to_have_url(f"{site.url}/protected")
    assert len(solo.credentials(usb)) == 1
    assert key
    solo.context.close()


def test_a_passkey_as_the_first_factor_shows_the_recovery_codes(
    browser: Browser, site: Site
) -> None:
    solo = person(browser, site.url)
    page = solo.page
    solo.add_authenticator(PLATFORM)
    sign_in(page)
    page.goto("/mfa/enrol?next=/protected")
    expect(page.get_by_role("button", name="Set up an authenticator app")).to_be_visible()
    assert not violations(page), "axe-core finds nothing on the enrolment page"
    page.get_by_role("button", name="Use a passkey or security key").click()
    heading = page.get_by_role("heading", name="Save your recovery codes")
    expect(heading).to_be_visible()
    expect(heading).to_be_focused()
    expect(page).to_have_title(re.compile("^Your recovery codes"))
    codes = page.locator("#recovery-codes code").all_inner_texts()
    assert len(codes) == 10
    assert all(re.fullmatch(r"[a-z2-7]{4}(-[a-z2-7]{4}){3}", code) for code in codes), codes
    expect(page.get_by_role("status")).to_have_text("Two-factor authentication is on.")
    assert not violations(page), "axe-core finds nothing on the recovery codes"
    page.get_by_role("link", name="I have saved my codes — continue").click()
    expect(page).to_have_url(f"{site.url}/protected")

    # A recovery code works at the next sign-in, as the app's would.
    sign_out(page)
    sign_in(page)
    page.goto("/protected")
    expect(page.get_by_label("Authentication code")).to_have_count(0)
    page.get_by_text("Lost your device? Use a recovery code").click()
    page.get_by_label("Recovery code").fill(codes[0])
    page.get_by_role("button", name="Use recovery code").click()
    expect(page).to_have_url(f"{site.url}/protected")
    solo.context.close()


def test_refusals_are_said_in_the_live_region_in_the_pages_language(
    browser: Browser, site: Site
) -> None:
    solo = person(browser, site.url, headers={"Accept-Language": "fr"})
    page = solo.page
    laptop = solo.add_authenticator(PLATFORM)
    sign_in(page)
    page.goto("/mfa/enrol?next=/protected")
    page.get_by_role("button", name="Utiliser une clé d\u2019accès ou une clé de sécurité").click()
    codes = page.get_by_role("heading", name="Enregistrez vos codes de récupération")
    expect(codes).to_be_visible()

    # The same passkey again: the browser refuses it (already registered, excluded).
    page.goto("/mfa/settings")
    add = page.get_by_role("button", name="Ajouter une clé d\u2019accès ou une clé de sécurité")
    add.click()
    status = page.locator("#passkey-form [data-webauthn-status]")
    expect(status).to_have_text("Cette clé d\u2019accès ou clé de sécurité est déjà enregistrée.")
    assert status.get_attribute("aria-live") == "assertive"
    expect(add).to_be_enabled()
    assert not violations(page), "axe-core finds nothing with the refusal said"

    # The server refuses an answer to a challenge that expired meanwhile (five minutes and a
    # second later: the session's verification is still recent).
    usb = solo.add_authenticator(ROAMING)
    solo.answers(laptop, present=False)

    def later(route: Any) -> None:
        site.ga.clock.advance(301)
        route.continue_()

    page.route("**/mfa/api/webauthn/register", later)
    add.click()
    expect(status).to_have_text("Cette demande a expiré ou a déjà reçu une réponse. Réessayez.")
    page.unroute("**/mfa/api/webauthn/register")
    assert len(page.locator("#authenticators li").all()) == 1
    assert solo.credentials(usb)

    # Ten minutes on, the session must verify again first: the script goes to the challenge.
    site.ga.clock.advance(300)
    add.click()
    expect(page).to_have_url(f"{site.url}/mfa/challenge?next=/mfa/settings")
    solo.context.close()


# The browsers before WebAuthn's JSON helpers (Safari before 18.4, Firefox before 119).
WITHOUT_JSON_HELPERS = """
delete PublicKeyCredential.parseCreationOptionsFromJSON;
delete PublicKeyCredential.parseRequestOptionsFromJSON;
delete PublicKeyCredential.prototype.toJSON;
"""


def test_the_script_works_without_webauthns_json_helpers(browser: Browser, site: Site) -> None:
    solo = person(browser, site.url, init=WITHOUT_JSON_HELPERS)
    page = solo.page
    laptop = solo.add_authenticator(PLATFORM)
    sign_in(page)
    page.goto("/mfa/enrol?next=/protected")
    assert page.evaluate("typeof PublicKeyCredential.parseCreationOptionsFromJSON") == "undefined"
    page.get_by_role("button", name="Use a passkey or security key").click()
    expect(page.get_by_role("heading", name="Save your recovery codes")).to_be_visible()
    sign_out(page)
    sign_in(page)
    page.goto("/protected")
    page.get_by_role("button", name="Use your passkey or security key").click()
    expect(page).to_have_url(f"{site.url}/protected")
    [credential] = solo.credentials(laptop)
    assert credential["signCount"] >= 2
    solo.context.close()


def test_without_webauthn_the_passkey_buttons_stay_hidden_and_codes_work(
    browser: Browser, site: Site
) -> None:
    with_webauthn = person(browser, site.url)
    with_webauthn.add_authenticator(PLATFORM)
    page = with_webauthn.page
    sign_in(page)
    key = enrol_with_the_app(page, site.ga.clock() - TOTP_PERIOD)
    page.goto("/mfa/settings")
    page.get_by_role("button", name="Add a passkey or security key").click()
    expect(page).to_have_url(f"{site.url}/mfa/settings?added=passkey")
    with_webauthn.context.close()

    older = person(browser, site.url, init="delete window.PublicKeyCredential;")
    page = older.page
    sign_in(page)
    page.goto("/protected")
    expect(page).to_have_url(f"{site.url}/mfa/challenge?next=/protected")
    expect(page.get_by_role("button", name="Use your passkey or security key")).to_be_hidden()
    assert not violations(page), "axe-core finds nothing on the challenge without WebAuthn"
    page.get_by_label("Authentication code").fill(current_code(key, site.ga.clock()))
    page.get_by_role("button", name="Verify", exact=True).click()
    expect(page).to_have_url(f"{site.url}/protected")
    page.goto("/mfa/settings")
    expect(page.get_by_role("button", name="Add a passkey or security key")).to_be_hidden()
    expect(page.get_by_role("button", name="Add another authenticator app")).to_be_visible()
    older.context.close()


# What a site that allows no inline code sets: its own scripts, fetches and forms only (the
# kit's pages keep their styles inline).
STRICT_POLICY = (
    "default-src 'none'; script-src 'self'; connect-src 'self'; form-action 'self'; "
    "style-src 'unsafe-inline'; img-src 'self'; base-uri 'none'"
)


def test_the_script_runs_under_a_policy_without_inline_code(browser: Browser) -> None:
    """Passkeys added and used with every inline script and handler blocked: nothing the
    browser blocked, said on its console."""
    with passkey_site(STRICT_POLICY) as strict:
        solo = person(browser, strict.url)
        page = solo.page
        blocked: list[str] = []

        def watch(message: ConsoleMessage) -> None:
            if "Content Security Policy" in message.text:
                blocked.append(message.text)

        page.on("console", watch)
        solo.add_authenticator(PLATFORM)
        sign_in(page)
        page.goto("/mfa/enrol?next=/protected")
        page.get_by_role("button", name="Use a passkey or security key").click()
        expect(page.get_by_role("heading", name="Save your recovery codes")).to_be_visible()
        settings = page.goto("/mfa/settings")
        assert settings is not None
        assert "script-src 'self'" in settings.headers["content-security-policy"]
        sign_out(page)
        sign_in(page)
        page.goto("/protected")
        page.get_by_role("button", name="Use your passkey or security key").click()
        expect(page).to_have_url(f"{strict.url}/protected")
        solo.context.close()
    assert blocked == []


def test_the_demo_offers_passkeys_at_localhost(
    browser: Browser, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The demo on its SQL store, as ``make demo`` serves it: its settings turn passkeys on for
    the port in $PORT."""
    for name in list(os.environ):
        if name.upper().startswith("MFA_GUARD_"):
            monkeypatch.delenv(name)

    def build(port: int) -> Any:
        monkeypatch.setenv("PORT", str(port))
        return demo_inbox(tmp_path / "data", clock=FrozenClock())

    with served_by(build) as url:
        demo = url.replace("127.0.0.1", "localhost")
        solo = person(browser, demo)
        page = solo.page
        solo.add_authenticator(PLATFORM)
        page.goto("/login")
        page.get_by_label("E-mail address").fill(SOLO)
        page.get_by_label("Password").fill(DEMO_PASSWORD)
        page.get_by_role("button", name="Sign in").click()
        expect(page).to_have_url(f"{demo}/inbox")
        page.goto("/mfa/enrol?next=/inbox")
        page.get_by_role("button", name="Use a passkey or security key").click()
        expect(page.get_by_role("heading", name="Save your recovery codes")).to_be_visible()
        page.get_by_role("link", name="I have saved my codes — continue").click()
        expect(page.locator("#two-factor-status")).to_contain_text(
            "Two-factor authentication is on"
        )

        page.get_by_role("button", name="Sign out").click()
        page.get_by_label("E-mail address").fill(SOLO)
        page.get_by_label("Password").fill(DEMO_PASSWORD)
        page.get_by_role("button", name="Sign in").click()
        expect(page).to_have_url(f"{demo}/mfa/challenge?next=/inbox")
        page.get_by_role("button", name="Use your passkey or security key").click()
        expect(page).to_have_url(f"{demo}/inbox")
        page.goto("/mfa/settings")
        assert rows(page) == [("passkey", "Passkey")]
        solo.context.close()
