"""The pages of several authenticators and of passkeys, through HTTP as a browser without
JavaScript sees them: the settings page lists each authenticator (an app, a passkey, a security
key) with its forms to rename and remove it, and adds another app through the enrolment page;
each refusal (a session that verified too long ago, a bad name, an authenticator that is not the
user's, the last one while 2FA is required) is said and changes nothing. The passkey forms are
there for the script, hidden; the script is served by the mount with a year's cache at its
versioned URL; and no page has an inline script or event handler."""

from __future__ import annotations

import json
import re

import httpx
import pytest

from mfa_guard.stores.sites import MemorySiteDirectory, Role, SitePolicy
from mfa_guard.testing.webauthn import SoftAuthenticator
from tests.apps import build_app, enrol, sign_in
from tests.passkey_pages import (
    API,
    ORIGIN,
    PASSKEYS,
    USER,
    add_key,
    alert_of,
    csrf_of,
    ids_of,
    inline_code,
    notice_of,
    parts_of,
    passkey_app,
    passkey_form,
    rows_of,
    security_key,
)
from tests.sms_apps import build_sms_app, owner_with_phone

# -- what a page is made of ---------------------------------------------------------------------


async def post_form(
    client: httpx.AsyncClient, page: httpx.Response, path: str, **fields: str
) -> httpx.Response:
    return await client.post(path, data={"csrf_token": csrf_of(page), **fields})


# -- the list -----------------------------------------------------------------------------------


async def test_the_settings_page_lists_an_app_a_passkey_and_a_security_key() -> None:
    ga = passkey_app()
    async with ga.client(base_url=ORIGIN) as client:
        await sign_in(client)
        secret, _ = await enrol(ga, client)
        # A day later, signed in with the app; then the keys are added.
        ga.clock.advance(24 * 3600)
        await client.post("/logout")
        await sign_in(client)
        verified = await client.post(f"{API}/verify", json={"code": ga.code(secret)})
        assert verified.status_code == 200, verified.text
        ga.clock.advance(90)
        await add_key(client, SoftAuthenticator(backup_eligible=True, backed_up=True), "Laptop")
        await add_key(client, security_key())
        page = await client.get("/mfa/settings")

    assert page.status_code == 200
    assert rows_of(page) == [
        (
            "app",
            "Authenticator app Added on Jan 15, 2027 Last used Jan 16, 2027, 08:00 UTC",
        ),
        ("passkey", "Laptop Passkey Added on Jan 16, 2027 Last used Jan 16, 2027, 08:01 UTC"),
        (
            "security-key",
            "Security key Added on Jan 16, 2027 Last used Jan 16, 2027, 08:01 UTC",
        ),
    ]
    assert "At each sign-in you confirm it is you with one of your authenticators." in page.text
    # Each row: a rename form (its field labelled with the row's name) and a remove button.
    for index, name in enumerate(["Authenticator app", "Laptop", "Security key"], start=1):
        assert f'<label for="name-{index}">New name <span class="visually-hidden">for {name}' in (
            page.text
        )
        assert f'Remove <span class="visually-hidden">{name}</span></button>' in page.text
    # The passkey form waits, hidden, for the script; the app's form works without it.
    form = passkey_form(page)
    assert form is not None
    assert "hidden" in form.attrs
    assert form.attrs["data-webauthn"] == "register"
    assert form.attrs["data-options-url"] == "/mfa/api/webauthn/register/options"
    assert form.attrs["data-answer-url"] == "/mfa/api/webauthn/register"
    assert form.attrs["data-next"] == "/mfa/settings?added=passkey"
    assert form.attrs["data-step-up"] == "/mfa/challenge?next=/mfa/settings"
    assert form.attrs["data-strong-step-up"] == "/mfa/challenge?next=/mfa/settings&strong=1"
    assert 'action="/mfa/settings/apps"' in page.text
    assert "Add another authenticator app" in page.text
    [script] = parts_of(page).scripts
    assert re.fullmatch(r"/mfa/static/webauthn\.js\?v=[0-9a-f]{16}", script.attrs["src"])
    assert "defer" in script.attrs


async def test_the_passkey_scripts_messages_are_in_the_pages_language() -> None:
    ga = passkey_app()
    async with ga.client(base_url=ORIGIN, headers={"Accept-Language": "fr"}) as client:
        await sign_in(client)
        await enrol(ga, client)
        page = await client.get("/mfa/settings")
    form = passkey_form(page)
    assert form is not None
    messages = json.loads(form.attrs["data-messages"])
    assert set(messages) >= {
        "webauthn_rejected",
        "webauthn_challenge_expired",
        "authenticator_already_registered",
        "invalid_input",
        "cancelled",
        "network",
        "failed",
    }
    assert messages["invalid_input"].startswith("Un nom")
    assert "Ajouter une clé d\u2019accès ou une clé de sécurité" in page.text


async def test_the_page_says_a_key_was_added_only_for_the_one_notice_it_knows() -> None:
    ga = passkey_app()
    async with ga.client(base_url=ORIGIN) as client:
        await sign_in(client)
        await add_key(client, SoftAuthenticator())
        added = await client.get("/mfa/settings?added=passkey")
        other = await client.get("/mfa/settings?added=%3Cb%3Ehello")
    assert notice_of(added) == "Your passkey or security key is added."
    assert 'role="status"' not in other.text
    assert "hello" not in other.text


async def test_without_passkeys_the_pages_have_no_passkey_form_and_no_script() -> None:
    ga = build_app()
    async with ga.client() as client:
        await sign_in(client)
        enrol_page = await client.get("/mfa/enrol")
        await enrol(ga, client)
        settings = await client.get("/mfa/settings")
        await client.post("/logout")
        await sign_in(client)
        challenge = await client.get("/mfa/challenge")
    for page in (enrol_page, settings, challenge):
        assert passkey_form(page) is None
        assert "<script" not in page.text
    assert rows_of(settings) == [
        (
            "app",
            "Authenticator app Added on Jan 15, 2027 Last used Jan 15, 2027, 08:00 UTC",
        )
    ]
    assert "Add a passkey" not in settings.text


# -- renaming ---------------------------------------------------------------------------------


async def test_renaming_an_authenticator() -> None:
    ga = passkey_app()
    async with ga.client(base_url=ORIGIN) as client:
        await sign_in(client)
        await enrol(ga, client)
        page = await client.get("/mfa/settings")
        [app_id] = ids_of(page)
        renamed = await post_form(
            client,
            page,
            "/mfa/settings/authenticators/rename",
            authenticator=app_id,
            name="  Work   phone ",
        )
    assert renamed.status_code == 200
    assert notice_of(renamed) == "The authenticator is renamed."
    assert rows_of(renamed)[0][1].startswith("Work phone Authenticator app")


@pytest.mark.parametrize(
    "name",
    [
        pytest.param("", id="empty"),
        pytest.param("   ", id="blank"),
        pytest.param("x" * 65, id="too-long"),
        pytest.param("bell\u0007", id="control-character"),
    ],
)
async def test_a_bad_name_is_refused_and_said_at_its_field(name: str) -> None:
    ga = passkey_app()
    async with ga.client(base_url=ORIGIN) as client:
        await sign_in(client)
        await enrol(ga, client)
        page = await client.get("/mfa/settings")
        [app_id] = ids_of(page)
        refused = await post_form(
            client, page, "/mfa/settings/authenticators/rename", authenticator=app_id, name=name
        )
    assert refused.status_code == 400
    assert alert_of(refused) == "A name is 1 to 64 characters, without control characters."
    # The rename form stays open, its field marked and focused, what was typed kept.
    assert '<details class="rename" open>' in refused.text
    field = re.search(r'<input type="text" class="name" id="name-1"[^>]*>', refused.text)
    assert field is not None
    assert 'aria-invalid="true"' in field.group()
    assert "autofocus" in field.group()
    assert rows_of(refused)[0][1].startswith("Authenticator app")


async def test_an_authenticator_that_is_not_the_users_is_no_authenticator() -> None:
    ga = passkey_app()
    async with ga.client(base_url=ORIGIN) as alice, ga.client(base_url=ORIGIN) as bob:
        await sign_in(bob, "bob@example.test")
        await enrol(ga, bob)
        [bobs] = ids_of(await bob.get("/mfa/settings"))
        await sign_in(alice, "alice@example.test")
        await enrol(ga, alice)
        page = await alice.get("/mfa/settings")
        for authenticator in (bobs, "nope", "x" * 65, "bad\x00id", ""):
            renamed = await post_form(
                alice,
                page,
                "/mfa/settings/authenticators/rename",
                authenticator=authenticator,
                name="Mine",
            )
            assert renamed.status_code == 404, authenticator
            assert alert_of(renamed) == "There is no such authenticator on your account."
            removed = await post_form(
                alice, page, "/mfa/settings/authenticators/remove", authenticator=authenticator
            )
            assert removed.status_code == 404, authenticator
            assert alert_of(removed) == "There is no such authenticator on your account."
        assert rows_of(await bob.get("/mfa/settings"))[0][1].startswith("Authenticator app")
        assert len(ids_of(await alice.get("/mfa/settings"))) == 1


async def test_a_session_that_verified_too_long_ago_verifies_again_first() -> None:
    ga = passkey_app(recent_mfa_seconds=300)
    async with ga.client(base_url=ORIGIN) as client:
        await sign_in(client)
        await enrol(ga, client)
        page = await client.get("/mfa/settings")
        [app_id] = ids_of(page)
        ga.clock.advance(301)
        for path, fields in [
            ("/mfa/settings/authenticators/rename", {"authenticator": app_id, "name": "Phone"}),
            ("/mfa/settings/authenticators/remove", {"authenticator": app_id}),
            ("/mfa/settings/apps", {}),
        ]:
            refused = await post_form(client, page, path, **fields)
            assert refused.status_code == 303, path
            assert refused.headers["location"] == "/mfa/challenge?next=/mfa/settings"
        after = await client.get("/mfa/settings")
    assert rows_of(after)[0][1].startswith("Authenticator app")
    enrolment = await ga.store.get(USER)
    assert enrolment is not None
    assert enrolment.pending_secret is None


async def test_a_session_verified_by_a_text_is_sent_for_a_stronger_factor() -> None:
    app = build_sms_app(settings={"webauthn": PASSKEYS})
    async with app.client() as owner, app.client() as texted:
        await owner_with_phone(app, owner)
        await sign_in(texted)
        assert (await texted.post(f"{API}/sms/send", json={})).status_code == 202
        code = app.last_code()
        verified = await texted.post(f"{API}/verify", json={"method": "sms", "code": code})
        assert verified.status_code == 200, verified.text
        page = await texted.get("/mfa/settings")
        [app_id] = ids_of(page)
        for path, fields in [
            ("/mfa/settings/authenticators/rename", {"authenticator": app_id, "name": "Phone"}),
            ("/mfa/settings/authenticators/remove", {"authenticator": app_id}),
            ("/mfa/settings/apps", {}),
        ]:
            refused = await post_form(texted, page, path, **fields)
            assert refused.status_code == 303, path
            assert refused.headers["location"] == "/mfa/challenge?next=/mfa/settings&strong=1"
        assert len(ids_of(await texted.get("/mfa/settings"))) == 1


# -- removing ---------------------------------------------------------------------------------


async def test_removing_one_of_two_and_then_the_last_turns_2fa_off() -> None:
    ga = passkey_app()
    async with ga.client(base_url=ORIGIN) as client:
        await sign_in(client)
        await enrol(ga, client)
        await add_key(client, security_key(), "Yubikey")
        page = await client.get("/mfa/settings")
        app_id, key_id = ids_of(page)
        # Two of them: no word of turning 2FA off on either.
        assert 'id="last-authenticator"' not in page.text
        removed = await post_form(
            client, page, "/mfa/settings/authenticators/remove", authenticator=app_id
        )
        assert removed.status_code == 200
        assert notice_of(removed) == "The authenticator is removed."
        assert ids_of(removed) == [key_id]
        # The last one says what removing it does; a user with keys only turns 2FA off so.
        assert "removing it turns two-factor authentication off" in removed.text
        assert 'id="turn-off-by-removing"' in removed.text
        assert 'action="/mfa/settings/disable"' not in removed.text
        assert "Add an authenticator app" in removed.text
        last = await post_form(
            client, removed, "/mfa/settings/authenticators/remove", authenticator=key_id
        )
        assert last.status_code == 200
        assert notice_of(last) == (
            "Your last authenticator is removed: two-factor authentication is off."
        )
        assert "<strong>Off.</strong>" in last.text
        status = (await client.get(f"{API}/status")).json()
    assert status["enrolled"] is False


async def test_the_last_authenticator_stays_while_a_site_or_the_app_requires_2fa() -> None:
    sites = MemorySiteDirectory()
    await sites.save_site("acme", "Acme")
    await sites.add_member("acme", USER, Role.OWNER)
    for ga, message in [
        (
            passkey_app(sites=sites),
            "Two-factor authentication cannot be turned off: Acme requires it of every member.",
        ),
        (
            passkey_app(everyone={"required": True}),
            "Two-factor authentication is required for every account: it cannot be turned off.",
        ),
    ]:
        async with ga.client(base_url=ORIGIN) as client:
            await sign_in(client)
            await add_key(client, SoftAuthenticator())
            await sites.set_policy("acme", SitePolicy(enforce=True))
            page = await client.get("/mfa/settings")
            [key_id] = ids_of(page)
            refused = await post_form(
                client, page, "/mfa/settings/authenticators/remove", authenticator=key_id
            )
            assert refused.status_code == 409
            assert alert_of(refused) == message
            assert ids_of(refused) == [key_id]
            assert (await client.get(f"{API}/status")).json()["enrolled"] is True


# -- another authenticator app ----------------------------------------------------------------


def manual_key(page: httpx.Response) -> str:
    match = re.search(r'id="manual-key">([A-Z2-7 ]+)<', page.text)
    assert match, "the page shows the key for manual entry"
    return match.group(1).replace(" ", "")


async def test_another_app_is_added_through_the_enrolment_page_in_add_mode() -> None:
    ga = passkey_app()
    async with ga.client(base_url=ORIGIN) as client:
        await sign_in(client)
        await add_key(client, SoftAuthenticator())
        page = await client.get("/mfa/settings")
        assert "Add an authenticator app" in page.text  # keys only: not "another"
        started = await post_form(client, page, "/mfa/settings/apps")
        assert started.status_code == 200
        assert "<h1>Add an authenticator app</h1>" in started.text
        assert "<svg" in started.text
        assert 'action="/mfa/settings/apps/confirm"' in started.text
        assert '<a href="/mfa/settings" id="cancel-enrolment">' in started.text
        secret = manual_key(started)

        wrong = str((int(ga.code(secret)) + 500_000) % 1_000_000).zfill(6)
        refused = await post_form(
            client, started, "/mfa/settings/apps/confirm", code=wrong, name="Tablet"
        )
        assert refused.status_code == 422
        assert manual_key(refused) == secret
        assert 'value="Tablet"' in refused.text
        code_field = re.search(r'<input type="text" id="code"[^>]*>', refused.text, re.DOTALL)
        assert code_field is not None
        assert 'aria-invalid="true"' in code_field.group()

        bad_name = await post_form(
            client, started, "/mfa/settings/apps/confirm", code=ga.code(secret), name="x" * 65
        )
        assert bad_name.status_code == 400
        assert alert_of(bad_name) == "A name is 1 to 64 characters, without control characters."
        name_field = re.search(
            r'<input type="text" class="name" id="app-name"[^>]*>', bad_name.text
        )
        assert name_field is not None
        assert 'aria-invalid="true"' in name_field.group()

        added = await post_form(
            client, started, "/mfa/settings/apps/confirm", code=ga.code(secret), name="Tablet"
        )
    assert added.status_code == 200
    assert notice_of(added) == "Your authenticator app is added."
    assert [kind for kind, _ in rows_of(added)] == ["passkey", "app"]
    assert rows_of(added)[1][1].startswith("Tablet Authenticator app")
    # No new recovery codes for another factor.
    assert "Save your recovery codes" not in added.text
    assert 'action="/mfa/settings/disable"' in added.text


async def test_a_confirmation_without_a_set_up_goes_back_to_the_settings() -> None:
    ga = passkey_app()
    async with ga.client(base_url=ORIGIN) as client:
        await sign_in(client)
        await enrol(ga, client)
        page = await client.get("/mfa/settings")
        refused = await post_form(client, page, "/mfa/settings/apps/confirm", code="123456")
    assert refused.status_code == 409
    assert "No set-up is waiting in this session" in alert_of(refused)
    assert len(ids_of(refused)) == 1


# -- the challenge and enrolment --------------------------------------------------------------


async def test_the_challenge_offers_the_passkey_first_and_keeps_the_code_forms() -> None:
    ga = passkey_app(trusted_devices={"enabled": True})
    async with ga.client(base_url=ORIGIN) as client:
        await sign_in(client)
        secret, _ = await enrol(ga, client)
        await add_key(client, SoftAuthenticator())
        await client.post("/logout")
        await sign_in(client)
        page = await client.get("/mfa/challenge?next=/protected")
        assert page.status_code == 200
        form = passkey_form(page)
        assert form is not None
        assert "hidden" in form.attrs
        assert form.attrs["data-webauthn"] == "authenticate"
        assert form.attrs["data-answer-url"] == "/mfa/api/webauthn/authenticate"
        assert form.attrs["data-next"] == "/protected"
        assert form.attrs["data-remember"] == "remember"
        text = page.text
        assert text.index('id="passkey-form"') < text.index('id="code-form"')
        assert text.index('id="code-form"') < text.index("Use recovery code")
        # One "Remember this browser", posted with the code's form.
        assert text.count('name="remember"') == 1
        assert 'form="code-form"' in text

        # Sent for a strong factor (verified by a text): the passkey is one.
        strong = await client.get("/mfa/challenge?next=/mfa/settings&strong=1")
        assert notice_of(strong) == (
            "To change your two-factor settings, use your passkey or security key, a code from "
            "your authenticator app or a recovery code: a text-message code is not enough."
        )
        assert passkey_form(strong) is not None

        # Without the script: the code's form works as it always did, remembering too.
        ga.clock.advance(30)
        fields = {"next": "/protected", "method": "totp", "code": ga.code(secret)}
        verified = await post_form(client, page, "/mfa/challenge", **fields, remember="1")
    assert verified.status_code == 303
    assert verified.headers["location"] == "/protected"
    assert "mfa_guard_device" in verified.headers["set-cookie"]


async def test_a_user_with_keys_only_is_offered_the_key_and_recovery_codes() -> None:
    ga = passkey_app()
    async with ga.client(base_url=ORIGIN) as client:
        await sign_in(client)
        codes = (await add_key(client, SoftAuthenticator()))["recovery_codes"]
        await client.post("/logout")
        await sign_in(client)
        page = await client.get("/mfa/challenge?next=/protected")
        assert passkey_form(page) is not None
        assert 'id="code-form"' not in page.text
        assert "Open your authenticator app" not in page.text
        assert "with your passkey or security key, or with a recovery code" in page.text
        fields = {"next": "/protected", "method": "recovery", "code": codes[0]}
        verified = await post_form(client, page, "/mfa/challenge", **fields)
    assert verified.status_code == 303
    assert verified.headers["location"] == "/protected"


async def test_enrolment_offers_a_passkey_beside_the_app() -> None:
    ga = passkey_app()
    async with ga.client(base_url=ORIGIN) as client:
        await sign_in(client)
        page = await client.get("/mfa/enrol?next=/protected")
        form = passkey_form(page)
        assert form is not None
        assert "hidden" in form.attrs
        assert form.attrs["data-next"] == "/protected"
        assert form.attrs["data-codes"] == "passkey-recovery-codes"
        # The recovery codes' page, for the script to fill: inert until then.
        template = re.search(
            r'<template id="passkey-recovery-codes"[^>]*>(.*?)</template>', page.text, re.DOTALL
        )
        assert template is not None
        assert "Save your recovery codes" in template.group(1)
        assert 'href="/protected"' in template.group(1)
        # The app's way, as before.
        assert 'action="/mfa/enrol"' in page.text
        started = await post_form(client, page, "/mfa/enrol", next="/protected")
        # With the QR code on the page, the passkey's form and its template are gone.
        assert passkey_form(started) is None
        assert "<template" not in started.text
        assert "<script" not in started.text


# -- the script ---------------------------------------------------------------------------------


async def test_the_script_is_served_by_the_mount_with_a_years_cache() -> None:
    ga = passkey_app()
    async with ga.client(base_url=ORIGIN) as client:
        await sign_in(client)
        await enrol(ga, client)
        page = await client.get("/mfa/settings")
        [script] = parts_of(page).scripts
        url = script.attrs["src"]
        served = await client.get(url)
        head = await client.head(url)
        revalidated = await client.get(url, headers={"If-None-Match": served.headers["etag"]})
        unversioned = await client.get("/mfa/static/webauthn.js")
        unknown = [
            await client.get(f"/mfa/static/{name}")
            for name in ("evil.js", "webauthn.js.map", "..%2F__init__.py", "countdown.js%00")
        ]
        posted = await client.post(url)
        await client.post("/logout")
        anonymous = await client.get(url)

    assert served.status_code == 200
    assert served.headers["content-type"] == "text/javascript; charset=utf-8"
    assert served.headers["cache-control"] == "public, max-age=31536000, immutable"
    assert served.headers["x-content-type-options"] == "nosniff"
    assert served.headers["etag"] == f'"{url.rsplit("=", 1)[1]}"'
    assert "parseCreationOptionsFromJSON" in served.text
    assert "toJSON" in served.text
    assert "window.PublicKeyCredential" in served.text
    assert head.status_code == 200
    assert head.content == b""
    assert revalidated.status_code == 304
    assert unversioned.status_code == 200
    assert unversioned.headers["cache-control"] == "no-cache"
    assert [response.status_code for response in unknown] == [404] * 4
    assert posted.status_code == 405
    # Nothing of a user in it: served to anybody.
    assert anonymous.status_code == 200
    assert anonymous.content == served.content


async def test_no_page_has_inline_script_or_handler() -> None:
    """Every page, in the states a user with an app, a passkey and a phone sees: what a
    ``script-src 'self'`` policy would block is nowhere."""
    app = build_sms_app(
        settings={"webauthn": PASSKEYS, "trusted_devices": {"enabled": True}},
        resend_cooldown="1/30 seconds",
    )
    ga = app.ga
    pages: dict[str, httpx.Response] = {}
    async with ga.client(base_url=ORIGIN) as client:
        await sign_in(client)
        pages["enrol"] = await client.get("/mfa/enrol")
        pages["enrol with the QR code"] = await post_form(client, pages["enrol"], "/mfa/enrol")
        secret = manual_key(pages["enrol with the QR code"])
        pages["recovery codes"] = await post_form(
            client, pages["enrol"], "/mfa/enrol/confirm", code=ga.code(secret)
        )
        await add_key(client, SoftAuthenticator())
        pages["settings"] = await client.get("/mfa/settings")
        pages["adding an app"] = await post_form(client, pages["settings"], "/mfa/settings/apps")
        await ga.store.set_phone(USER, "+33612345678", ga.clock())
        pages["settings with a phone"] = await client.get("/mfa/settings")
        pages["a refused form"] = await post_form(
            client, pages["settings"], "/mfa/settings/authenticators/rename", authenticator="x"
        )
        pages["error page"] = await client.post(
            "/mfa/settings/recovery-codes", data={"csrf_token": "stale"}
        )
        await client.post("/logout")
        await sign_in(client)
        pages["challenge"] = await client.get("/mfa/challenge")
        pages["challenge, stronger"] = await client.get("/mfa/challenge?strong=1")
        pages["text message page"] = await client.get("/mfa/sms")
        pages["challenge, code sent"] = await post_form(client, pages["challenge"], "/mfa/sms")
        pages["challenge, resend refused"] = await post_form(client, pages["challenge"], "/mfa/sms")

    assert pages["challenge, resend refused"].status_code == 429
    # The countdown is the mount's script too.
    [countdown] = parts_of(pages["challenge, resend refused"]).scripts[1:]
    assert countdown.attrs["src"].startswith("/mfa/static/countdown.js?v=")
    for state, page in pages.items():
        assert page.status_code < 500, state
        assert inline_code(page) == [], state
