"""What a member sees on the kit's pages under a policy of methods, through HTTP as a browser
without JavaScript sees them.

Where a site (or the app) accepts only a passkey or security key, the challenge says so, naming
the site: a member with a key is offered that key and, should it be lost, a recovery code (then
the settings page, to add another); a member without one confirms with the app, then lands on
the settings page to add one, not on the app that would send them straight back. Neither is
offered a text or "Remember this browser". While the requirement is coming, the settings page
says from when. Where texts are refused, the challenge offers none.
"""

from __future__ import annotations

import re
from typing import Any

import httpx

from mfa_guard.errors import StoreUnavailable
from mfa_guard.sms import OutboxSMS
from mfa_guard.stores.sites import (
    Membership,
    MemorySiteDirectory,
    MethodPolicy,
    Role,
    SitePolicy,
)
from mfa_guard.testing import CountingSiteDirectory
from mfa_guard.testing.webauthn import SoftAuthenticator
from tests.apps import GuardedApp, build_app, enrol, sign_in
from tests.passkey_pages import (
    alert_of,
    csrf_of,
    inline_code,
    notice_of,
    parts_of,
    passkey_form,
)
from tests.passkeys import add_passkey, require, site_of, with_passkey
from tests.scenarios import USER
from tests.sms_apps import MOBILE, SMS, texted_code

ORIGIN = "https://app.example.test"
PASSKEYS = {"rp_id": "app.example.test", "origins": [ORIGIN]}
WEEK = 7 * 24 * 3600
NOTICE = re.compile(r'<p class="banner" role="status" id="passkey-notice">(.*?)</p>', re.S)
TAG = re.compile(r"<[^>]+>")


def notice_html(page: httpx.Response) -> str | None:
    """The passkey notice as written (links and times kept), spaces folded."""
    match = NOTICE.search(page.text)
    return None if match is None else " ".join(match.group(1).split())


def notice_text(page: httpx.Response) -> str | None:
    html = notice_html(page)
    return None if html is None else " ".join(TAG.sub("", html).split())


def form_ids(page: httpx.Response) -> list[str]:
    return [form.attrs.get("id", form.attrs.get("action", "")) for form in parts_of(page).forms]


def remember_box(page: httpx.Response) -> bool:
    return 'name="remember"' in page.text


def app_of(directory: MemorySiteDirectory | CountingSiteDirectory, **overrides: Any) -> GuardedApp:
    return build_app(
        sites=directory,
        webauthn=PASSKEYS,
        trusted_devices={"enabled": True},
        **overrides,
    )


async def signed_in_again(ga: GuardedApp, client: httpx.AsyncClient) -> None:
    """Signed out and in again, a day later: the session must verify."""
    await client.post("/logout")
    ga.clock.advance(24 * 3600)
    await sign_in(client, USER)


# -- the challenge, under a policy in force -----------------------------------------------------


async def test_a_member_with_a_passkey_is_offered_it_and_a_recovery_code_only() -> None:
    directory = await site_of(USER)
    counted = CountingSiteDirectory(directory)
    outbox = OutboxSMS()
    ga = app_of(counted, sms=SMS, sms_provider=outbox)
    key = SoftAuthenticator()
    async with ga.client(base_url=ORIGIN) as client:
        await sign_in(client, USER)
        await enrol(ga, client)
        await add_passkey(client, key)
        assert (await client.post("/mfa/api/phone", json={"phone": MOBILE})).status_code == 202
        code = texted_code(outbox, MOBILE)
        assert (await client.post("/mfa/api/phone/verify", json={"code": code})).status_code == 200
        # Before the policy: the app, texts and "Remember this browser" on offer.
        await signed_in_again(ga, client)
        before = await client.get("/mfa/challenge?next=/protected")
        assert "code-form" in form_ids(before)
        assert 'id="text-message"' in before.text
        assert remember_box(before)
        assert notice_html(before) is None

        await require(directory, MethodPolicy.PHISHING_RESISTANT, 0.0)
        await signed_in_again(ga, client)
        sent_to = await client.get("/protected")
        assert sent_to.status_code == 303
        assert sent_to.headers["location"] == "/mfa/challenge?next=/protected"
        counted.calls.clear()
        page = await client.get(sent_to.headers["location"])

    assert page.status_code == 200
    assert notice_text(page) == "Acme accepts only a passkey or security key to sign in."
    # The sites' names: one directory read.
    assert counted.calls["memberships"] == 1
    form = passkey_form(page)
    assert form is not None
    assert form.attrs["data-webauthn"] == "authenticate"
    assert form.attrs["data-next"] == "/protected"
    # No code of the app, no text, no remembered browser: a recovery code is the way out.
    assert "code-form" not in form_ids(page)
    assert 'id="text-message"' not in page.text
    assert "/mfa/sms" not in page.text
    assert not remember_box(page)
    assert "Lost your passkey or security key? Use a recovery code" in page.text
    assert "You will then add a new passkey or security key." in page.text
    assert 'name="method" value="recovery"' in page.text
    # Without JavaScript the key cannot be used: the page says so (the script hides it).
    assert 'id="passkey-unavailable" data-webauthn-unavailable' in page.text
    assert inline_code(page) == []


async def test_the_passkey_answers_the_challenge_and_the_app_lets_the_member_in() -> None:
    directory = await site_of(USER)
    ga = app_of(directory)
    key = SoftAuthenticator()
    async with ga.client(base_url=ORIGIN) as client:
        await sign_in(client, USER)
        await enrol(ga, client)
        await add_passkey(client, key)
        await require(directory, MethodPolicy.PHISHING_RESISTANT, 0.0)
        await signed_in_again(ga, client)
        assert (await client.get("/protected")).status_code == 303
        assert (await with_passkey(client, key)).status_code == 200
        assert (await client.get("/protected")).text == "protected content"
        # Verified by the key: the settings page has nothing to tell.
        assert notice_html(await client.get("/mfa/settings")) is None


async def test_a_lost_key_a_recovery_code_then_the_settings_to_add_another() -> None:
    directory = await site_of(USER)
    ga = app_of(directory)
    lost = SoftAuthenticator()
    async with ga.client(base_url=ORIGIN) as client:
        await sign_in(client, USER)
        _, codes = await enrol(ga, client)
        await add_passkey(client, lost)
        await require(directory, MethodPolicy.PHISHING_RESISTANT, 0.0)
        await signed_in_again(ga, client)
        page = await client.get("/mfa/challenge?next=/protected")
        # "Remember this browser" posted by a page from before the policy: no browser is
        # remembered (it would not let the member in).
        used = await client.post(
            "/mfa/challenge",
            data={
                "csrf_token": csrf_of(page),
                "next": "/protected",
                "method": "recovery",
                "code": codes[0],
                "remember": "1",
            },
        )
        assert used.status_code == 303
        assert used.headers["location"] == "/mfa/settings?next=/protected"
        # The app still refuses a session verified by a recovery code.
        assert (await client.get("/protected")).status_code == 303

        settings = await client.get(used.headers["location"])
        assert settings.status_code == 200
        assert notice_text(settings) == (
            "Acme accepts only a passkey or security key to sign in. Use yours to continue. "
            "If you lost it, add a new one below, and remove the lost one."
        )
        assert 'id="no-remembered-browsers"' in settings.text
        assert '<a href="/mfa/challenge?next=/protected">' in (notice_html(settings) or "")
        form = passkey_form(settings)
        assert form is not None
        assert form.attrs["data-next"] == "/mfa/challenge?next=/protected&added=passkey"

        # A new key added (by the script), then used at the challenge it goes to.
        new = SoftAuthenticator()
        await add_passkey(client, new)
        challenge = await client.get("/mfa/challenge?next=/protected&added=passkey")
        assert notice_of(challenge) == (
            "Your passkey or security key is added. Use it now to continue."
        )
        assert (await with_passkey(client, new)).status_code == 200
        assert (await client.get("/protected")).status_code == 200


async def test_a_member_without_a_passkey_confirms_with_the_app_then_adds_one() -> None:
    directory = await site_of(USER)
    ga = app_of(directory)
    key = SoftAuthenticator()
    async with ga.client(base_url=ORIGIN) as client:
        await sign_in(client, USER)
        secret, _ = await enrol(ga, client)
        await require(directory, MethodPolicy.PHISHING_RESISTANT, 0.0)
        await signed_in_again(ga, client)
        page = await client.get("/mfa/challenge?next=/protected")
        assert notice_text(page) == (
            "Acme accepts only a passkey or security key to sign in. "
            "You have none yet: confirm it is you below, then add one."
        )
        assert passkey_form(page) is None
        assert "code-form" in form_ids(page)
        assert not remember_box(page)
        assert "Lost your device? Use a recovery code" in page.text

        # The app's code: not to the app (it would send the member back), to the settings.
        verified = await client.post(
            "/mfa/challenge",
            data={"csrf_token": csrf_of(page), "next": "/protected", "code": ga.code(secret)},
        )
        assert verified.status_code == 303
        assert verified.headers["location"] == "/mfa/settings?next=/protected"
        settings = await client.get(verified.headers["location"])
        assert notice_text(settings) == (
            "Acme accepts only a passkey or security key to sign in. Add one to continue."
        )
        assert '<a href="#add-heading">Add one</a>' in (notice_html(settings) or "")
        assert 'id="add-heading"' in settings.text
        form = passkey_form(settings)
        assert form is not None
        assert form.attrs["data-next"] == "/mfa/challenge?next=/protected&added=passkey"
        assert 'id="passkey-unavailable" data-webauthn-unavailable' in settings.text
        assert inline_code(settings) == []

        await add_passkey(client, key)
        assert (await client.get("/protected")).status_code == 303
        assert (await with_passkey(client, key)).status_code == 200
        assert (await client.get("/protected")).status_code == 200

        # The next sign-in: the passkey alone (and a recovery code).
        await signed_in_again(ga, client)
        again = await client.get("/mfa/challenge?next=/protected")
        assert passkey_form(again) is not None
        assert "code-form" not in form_ids(again)


async def test_a_code_refused_at_the_challenge_keeps_the_policys_page() -> None:
    directory = await site_of(USER)
    ga = app_of(directory)
    async with ga.client(base_url=ORIGIN) as client:
        await sign_in(client, USER)
        await enrol(ga, client)
        await require(directory, MethodPolicy.PHISHING_RESISTANT, 0.0)
        await signed_in_again(ga, client)
        page = await client.get("/mfa/challenge?next=/protected")
        refused = await client.post(
            "/mfa/challenge",
            data={"csrf_token": csrf_of(page), "next": "/protected", "code": "000000"},
        )
    assert refused.status_code == 422
    assert alert_of(refused)
    assert notice_text(refused) == (
        "Acme accepts only a passkey or security key to sign in. "
        "You have none yet: confirm it is you below, then add one."
    )
    assert not remember_box(refused)


# -- whose rule, and from when -----------------------------------------------------------------


async def test_the_settings_page_tells_of_a_requirement_coming_until_a_key_is_added() -> None:
    directory = await site_of(USER)
    ga = app_of(directory)
    key = SoftAuthenticator()
    async with ga.client(base_url=ORIGIN) as client:
        await sign_in(client, USER)
        await enrol(ga, client)
        await require(directory, MethodPolicy.PHISHING_RESISTANT, ga.clock() + WEEK)
        settings = await client.get("/mfa/settings")
        french = await client.get("/mfa/settings", headers={"accept-language": "fr"})
        await add_passkey(client, key)
        added = await client.get("/mfa/settings?added=passkey")
        # The challenge is as before while the requirement is coming.
        await signed_in_again(ga, client)
        challenge = await client.get("/mfa/challenge?next=/protected")

    assert notice_html(settings) == (
        "Acme will accept only a passkey or security key to sign in from "
        '<time datetime="2027-01-22T08:00:00Z">Jan 22, 2027, 08:00 UTC</time>. '
        '<a href="#add-heading">Add one now</a> to keep your access.'
    )
    assert notice_text(french) == (
        "Acme n\u2019acceptera qu\u2019une clé d\u2019accès ou une clé de sécurité pour se "
        "connecter à partir du 22 janv. 2027, 08:00 UTC. Ajoutez-en une dès maintenant pour "
        "conserver votre accès."
    )
    # The passkey form comes back here: nothing refuses this session yet.
    form = passkey_form(settings)
    assert form is not None
    assert form.attrs["data-next"] == "/mfa/settings?added=passkey"
    assert notice_html(added) is None
    assert notice_of(added) == "Your passkey or security key is added."
    assert "code-form" in form_ids(challenge)
    assert passkey_form(challenge) is not None
    assert remember_box(challenge)
    assert notice_html(challenge) is None


class FailingNames(MemorySiteDirectory):
    """A directory whose ``memberships`` does not answer (its ``requirements`` still does)."""

    async def memberships(self, user_id: str) -> list[Membership]:
        raise StoreUnavailable()


async def test_the_app_wide_rule_two_sites_and_a_directory_down() -> None:
    everyone = {"required": True, "methods": "phishing_resistant"}
    ga = build_app(webauthn=PASSKEYS, everyone=everyone)
    async with ga.client(base_url=ORIGIN) as client:
        await sign_in(client, USER)
        await enrol(ga, client)
        await signed_in_again(ga, client)
        page = await client.get("/mfa/challenge?next=/protected")
    assert notice_text(page) == (
        "Every account must now use a passkey or security key to sign in. "
        "You have none yet: confirm it is you below, then add one."
    )

    directory = await site_of(USER)
    await directory.save_site("beta", "Beta")
    await directory.add_member("beta", USER, Role.OWNER)
    await require(directory, MethodPolicy.PHISHING_RESISTANT, 0.0)
    await directory.set_policy("beta", await policy_of(directory, "acme"))
    ga = app_of(directory)
    async with ga.client(base_url=ORIGIN) as client:
        await sign_in(client, USER)
        await enrol(ga, client)
        await signed_in_again(ga, client)
        page = await client.get("/mfa/challenge?next=/protected")
    assert (notice_text(page) or "").startswith(
        "Acme and Beta accept only a passkey or security key to sign in."
    )

    down = FailingNames()
    await down.save_site("acme", "Acme")
    await down.add_member("acme", USER, Role.OPERATOR)
    await require(down, MethodPolicy.PHISHING_RESISTANT, 0.0)
    ga = app_of(down)
    async with ga.client(base_url=ORIGIN) as client:
        await sign_in(client, USER)
        await enrol(ga, client)
        await signed_in_again(ga, client)
        page = await client.get("/mfa/challenge?next=/protected")
    assert page.status_code == 200
    assert (notice_text(page) or "").startswith(
        "A site you belong to accepts only a passkey or security key to sign in."
    )


async def policy_of(directory: MemorySiteDirectory, site_id: str) -> SitePolicy:
    site = await directory.site(site_id)
    assert site is not None
    return site.policy


# -- texts refused ------------------------------------------------------------------------------


async def test_where_texts_are_refused_the_challenge_offers_none() -> None:
    directory = await site_of(USER)
    outbox = OutboxSMS()
    ga = build_app(sites=directory, sms=SMS, sms_provider=outbox)
    async with ga.client() as client:
        await sign_in(client, USER)
        await enrol(ga, client)
        assert (await client.post("/mfa/api/phone", json={"phone": MOBILE})).status_code == 202
        code = texted_code(outbox, MOBILE)
        assert (await client.post("/mfa/api/phone/verify", json={"code": code})).status_code == 200
        offered = await client.get("/mfa/settings")
        assert "At sign-in you can ask for a code by text message" in offered.text

        await require(directory, MethodPolicy.NO_SMS, 0.0)
        settings = await client.get("/mfa/settings")
        await signed_in_again(ga, client)
        page = await client.get("/mfa/challenge?next=/protected")
        sms_page = await client.get("/mfa/sms?next=/protected")
        sent = len(outbox.messages)
        send = await client.post(
            "/mfa/sms", data={"csrf_token": csrf_of(page), "next": "/protected"}
        )
        texted = await client.post(
            "/mfa/challenge",
            data={
                "csrf_token": csrf_of(page),
                "next": "/protected",
                "method": "sms",
                "code": "123456",
            },
        )

    # The app's code and a recovery code, as before; no text.
    assert "code-form" in form_ids(page)
    assert 'id="text-message"' not in page.text
    assert notice_html(page) is None
    assert sms_page.status_code == 303
    assert sms_page.headers["location"] == "/mfa/challenge?next=/protected"
    assert (send.status_code, texted.status_code) == (403, 403)
    refusal = "A site you belong to does not accept text-message codes"
    assert alert_of(send).startswith(refusal)
    assert alert_of(texted).startswith(refusal)
    assert len(outbox.messages) == sent
    # The settings page no longer offers texts at sign-in (the number stays).
    assert 'id="verified-phone"' in settings.text
    assert "At sign-in you can ask for a code by text message" not in settings.text


async def test_the_settings_under_a_passkey_policy_promise_no_app_code_nor_remembered_browser() -> (
    None
):
    directory = MemorySiteDirectory()
    await directory.save_site("acme", "Acme")
    await directory.add_member("acme", "solo@example.test", Role.OPERATOR)
    ga = build_app(
        sites=directory,
        webauthn={"rp_id": "app.example.test", "origins": ["https://app.example.test"]},
        trusted_devices={"enabled": True},
    )
    async with ga.client() as client:
        await sign_in(client)
        await enrol(ga, client)
        before = (await client.get("/mfa/settings")).text
        assert "You enter a code from your authenticator app at each sign-in" in before
        assert "tick “Remember this browser”" in before
        policy = SitePolicy(
            enforce=True,
            grace_deadline=0.0,
            methods=MethodPolicy.PHISHING_RESISTANT,
            methods_deadline=0.0,
        )
        assert await directory.set_policy("acme", policy)
        ga.clock.advance(ga.guard.settings.recheck_seconds)
        after = (await client.get("/mfa/settings")).text
        assert "You enter a code from your authenticator app" not in after
        assert "you confirm it is you with a passkey or security key" in after
        assert "tick “Remember this browser”" not in after
        assert "a remembered browser does not sign you in" in after
