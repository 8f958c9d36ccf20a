"""The HTML pages, used as a browser without JavaScript would: GET a form, POST it back."""

from __future__ import annotations

import re
from pathlib import Path

import httpx

from tests.apps import GuardedApp, build_app, enrol, sign_in


def csrf_of(page: httpx.Response) -> str:
    match = re.search(r'name="csrf_token" value="([^"]+)"', page.text)
    assert match, "the form carries a CSRF token"
    return match.group(1)


def manual_key(page: httpx.Response) -> str:
    match = re.search(r'id="manual-key">([A-Z2-7 ]+)<', page.text)
    assert match, "the enrol page shows the key for manual entry"
    return match.group(1).replace(" ", "")


async def enrol_through_pages(ga: GuardedApp, client: httpx.AsyncClient) -> tuple[str, list[str]]:
    intro = await client.get("/mfa/enrol?next=/protected")
    assert intro.status_code == 200
    started = await client.post(
        "/mfa/enrol", data={"csrf_token": csrf_of(intro), "next": "/protected"}
    )
    assert started.status_code == 200
    assert "<svg" in started.text
    secret = manual_key(started)
    shown = await client.post(
        "/mfa/enrol/confirm",
        data={"csrf_token": csrf_of(started), "next": "/protected", "code": ga.code(secret)},
    )
    assert shown.status_code == 200
    codes = re.findall(r"<li><code>([a-z2-7-]+)</code></li>", shown.text)
    assert len(codes) == 10
    assert 'href="/protected"' in shown.text
    return secret, codes


async def test_enrolment_through_the_pages(guarded: GuardedApp, client: httpx.AsyncClient) -> None:
    await sign_in(client)
    secret, _ = await enrol_through_pages(guarded, client)
    # Reloading the page does not show the codes again, nor a new key.
    again = await client.get("/mfa/enrol")
    assert again.status_code == 303
    assert again.headers["location"] == "/mfa/settings"
    settings = await client.get("/mfa/settings")
    assert "10 recovery codes left" in settings.text
    assert secret not in settings.text


async def test_the_pending_key_is_shown_again_until_confirmed(
    guarded: GuardedApp, client: httpx.AsyncClient
) -> None:
    await sign_in(client)
    intro = await client.get("/mfa/enrol")
    started = await client.post("/mfa/enrol", data={"csrf_token": csrf_of(intro)})
    reloaded = await client.get("/mfa/enrol")
    assert manual_key(reloaded) == manual_key(started)


async def test_a_wrong_confirmation_code_shows_the_form_again(
    guarded: GuardedApp, client: httpx.AsyncClient
) -> None:
    await sign_in(client)
    intro = await client.get("/mfa/enrol")
    started = await client.post("/mfa/enrol", data={"csrf_token": csrf_of(intro)})
    wrong = str((int(guarded.code(manual_key(started))) + 500_000) % 1_000_000).zfill(6)
    response = await client.post(
        "/mfa/enrol/confirm", data={"csrf_token": csrf_of(started), "code": wrong}
    )
    assert response.status_code == 422
    assert 'role="alert"' in response.text
    assert manual_key(response) == manual_key(started)


async def test_the_challenge_page_is_accessible_and_works_without_javascript(
    guarded: GuardedApp, client: httpx.AsyncClient
) -> None:
    await sign_in(client)
    secret, _ = await enrol_through_pages(guarded, client)
    await client.post("/logout")
    await sign_in(client)
    redirect = await client.get("/protected")
    assert redirect.headers["location"] == "/mfa/challenge?next=/protected"
    page = await client.get(redirect.headers["location"])
    assert page.status_code == 200
    assert '<html lang="en" dir="ltr">' in page.text
    assert '<label for="code">' in page.text
    assert 'autocomplete="one-time-code"' in page.text
    assert 'inputmode="numeric"' in page.text
    assert "<script" not in page.text
    assert page.headers["cache-control"] == "no-store"

    guarded.clock.advance(30)
    wrong = str((int(guarded.code(secret)) + 500_000) % 1_000_000).zfill(6)
    form = {"csrf_token": csrf_of(page), "next": "/protected", "method": "totp"}
    refused = await client.post("/mfa/challenge", data=form | {"code": wrong})
    assert refused.status_code == 422
    assert 'role="alert"' in refused.text
    assert 'aria-invalid="true"' in refused.text
    accepted = await client.post("/mfa/challenge", data=form | {"code": guarded.code(secret)})
    assert accepted.status_code == 303
    assert accepted.headers["location"] == "/protected"
    assert (await client.get("/protected")).status_code == 200


async def test_a_recovery_code_on_the_challenge_page(
    guarded: GuardedApp, client: httpx.AsyncClient
) -> None:
    await sign_in(client)
    _, codes = await enrol(guarded, client)
    await client.post("/logout")
    await sign_in(client)
    page = await client.get("/mfa/challenge")
    response = await client.post(
        "/mfa/challenge",
        data={"csrf_token": csrf_of(page), "method": "recovery", "code": codes[0]},
    )
    assert response.status_code == 303
    assert response.headers["location"] == "/"


async def test_the_locked_challenge_page_says_when_to_retry() -> None:
    ga = build_app(rate_limits={"failures": "2/minute;100/day"})
    async with ga.client() as client:
        await sign_in(client)
        await enrol(ga, client)
        await client.post("/logout")
        await sign_in(client)
        page = await client.get("/mfa/challenge")
        form = {"csrf_token": csrf_of(page), "method": "totp", "code": "000000"}
        await client.post("/mfa/challenge", data=form)
        await client.post("/mfa/challenge", data=form)
        locked = await client.post("/mfa/challenge", data=form)
    assert locked.status_code == 429
    assert int(locked.headers["retry-after"]) >= 1
    assert "Too many attempts" in locked.text


async def test_new_recovery_codes_need_a_fresh_code_first(
    guarded: GuardedApp, client: httpx.AsyncClient
) -> None:
    await sign_in(client)
    secret, old = await enrol_through_pages(guarded, client)
    guarded.clock.advance(301)
    settings = await client.get("/mfa/settings")
    step_up = await client.post(
        "/mfa/settings/recovery-codes", data={"csrf_token": csrf_of(settings)}
    )
    assert step_up.status_code == 303
    assert step_up.headers["location"] == "/mfa/challenge?next=/mfa/settings"
    challenge = await client.get(step_up.headers["location"])
    back = await client.post(
        "/mfa/challenge",
        data={
            "csrf_token": csrf_of(challenge),
            "next": "/mfa/settings",
            "code": guarded.code(secret),
        },
    )
    assert back.headers["location"] == "/mfa/settings"
    settings = await client.get("/mfa/settings")
    fresh = await client.post(
        "/mfa/settings/recovery-codes", data={"csrf_token": csrf_of(settings)}
    )
    assert fresh.status_code == 200
    new = re.findall(r"<li><code>([a-z2-7-]+)</code></li>", fresh.text)
    assert len(new) == 10
    assert set(new).isdisjoint(old)


async def test_turning_2fa_off_from_the_settings_page(
    guarded: GuardedApp, client: httpx.AsyncClient
) -> None:
    await sign_in(client)
    secret, _ = await enrol_through_pages(guarded, client)
    guarded.clock.advance(30)
    settings = await client.get("/mfa/settings")
    wrong = str((int(guarded.code(secret)) + 500_000) % 1_000_000).zfill(6)
    refused = await client.post(
        "/mfa/settings/disable", data={"csrf_token": csrf_of(settings), "code": wrong}
    )
    assert refused.status_code == 422
    assert "On." in refused.text
    done = await client.post(
        "/mfa/settings/disable",
        data={"csrf_token": csrf_of(settings), "code": guarded.code(secret)},
    )
    assert done.status_code == 200
    assert "Two-factor authentication is off." in done.text
    assert "Off." in done.text


async def test_a_challenged_session_is_sent_to_the_challenge_from_settings(
    guarded: GuardedApp, client: httpx.AsyncClient
) -> None:
    await sign_in(client)
    await enrol(guarded, client)
    await client.post("/logout")
    await sign_in(client)
    response = await client.get("/mfa/settings")
    assert response.status_code == 303
    assert response.headers["location"].startswith("/mfa/challenge")


async def test_signed_out_visitors_are_sent_home(client: httpx.AsyncClient) -> None:
    for path in ("/mfa/challenge", "/mfa/enrol", "/mfa/settings"):
        response = await client.get(path)
        assert response.status_code == 303
        assert response.headers["location"] == "/"


async def test_apps_can_override_a_template(tmp_path: Path) -> None:
    (tmp_path / "mfa_guard").mkdir()
    (tmp_path / "mfa_guard" / "challenge.html").write_text(
        '{% extends "mfa_guard/base.html" %}{% block content %}<h1>Acme check</h1>'
        '<input name="csrf_token" value="{{ csrf_token }}">{% endblock %}'
    )
    ga = build_app(template_directory=tmp_path)
    async with ga.client() as client:
        await sign_in(client)
        await enrol(ga, client)
        await client.post("/logout")
        await sign_in(client)
        page = await client.get("/mfa/challenge")
    assert "Acme check" in page.text
