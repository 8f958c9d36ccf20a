"""SMS codes through the HTML pages, used as a browser without JavaScript would: a mobile number
added from the settings page, a sign-in code asked for from the challenge page."""

from __future__ import annotations

import html
import json
import math
import re
import time
from typing import Any

import httpx
import pytest

from mfa_guard import EventKind
from mfa_guard.sms import OutboxSMS
from tests.apps import GuardedApp, build_app, enrol, sign_in

USER = "solo@example.test"
PHONE = "+33 6 12 34 56 78"
E164 = "+33612345678"
MASKED = "+33 •••• ••78"
# The resend cooldown's window runs on the real clock of `limits`: widened so tests never wait.
SMS = {
    "enabled": True,
    "provider": "outbox",
    "allowed_regions": ["FR", "GB"],
    "resend_cooldown": "100/second",
}
CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')
TEXTED_CODE = re.compile(r"\b(\d{6}) is your ")


def csrf_of(page: httpx.Response) -> str:
    match = CSRF.search(page.text)
    assert match, "the form carries a CSRF token"
    return match.group(1)


def texted_code(outbox: OutboxSMS) -> str:
    message = outbox.last_to(E164)
    assert message is not None, "a text went to the phone"
    match = TEXTED_CODE.search(message.text)
    assert match, message.text
    return match.group(1)


def wrong(code: str) -> str:
    return str((int(code) + 500_000) % 1_000_000).zfill(6)


def sms_app(outbox: OutboxSMS, **overrides: Any) -> GuardedApp:
    return build_app(sms_provider=outbox, sms=SMS | overrides.pop("sms", {}), **overrides)


@pytest.fixture
def outbox() -> OutboxSMS:
    return OutboxSMS()


@pytest.fixture
def ga(outbox: OutboxSMS) -> GuardedApp:
    return sms_app(outbox)


@pytest.fixture
async def browser(ga: GuardedApp) -> Any:
    async with ga.client() as client:
        yield client


async def add_phone(client: httpx.AsyncClient, outbox: OutboxSMS) -> httpx.Response:
    """Adds and verifies the mobile number from the settings page; returns the last page."""
    settings = await client.get("/mfa/settings")
    sent = await client.post(
        "/mfa/settings/phone", data={"csrf_token": csrf_of(settings), "phone": PHONE}
    )
    assert sent.status_code == 200, sent.text
    return await client.post(
        "/mfa/settings/phone/verify",
        data={"csrf_token": csrf_of(sent), "code": texted_code(outbox)},
    )


async def signed_in_again_with_phone(
    ga: GuardedApp, client: httpx.AsyncClient, outbox: OutboxSMS
) -> None:
    """An enrolled user with a verified phone, signed in again and facing the challenge."""
    await sign_in(client)
    await enrol(ga, client)
    assert (await add_phone(client, outbox)).status_code == 200
    outbox.clear()
    await client.post("/logout")
    await sign_in(client)


async def signed_in_again_with_stored_phone(ga: GuardedApp, client: httpx.AsyncClient) -> str:
    """An enrolled user whose verified phone is set up directly in the store (so every text is
    a sign-in code), signed in again and facing the challenge; returns the secret."""
    await sign_in(client)
    secret, _ = await enrol(ga, client)
    await ga.store.set_phone(USER, E164, ga.clock())
    await client.post("/logout")
    await sign_in(client)
    return secret


async def test_a_user_adds_a_mobile_number_from_the_settings_page(
    browser: httpx.AsyncClient, outbox: OutboxSMS
) -> None:
    await sign_in(browser)
    settings = await browser.get("/mfa/settings")
    assert "<h2>Mobile phone</h2>" in settings.text
    assert "No verified mobile number." in settings.text
    assert '<label for="phone">' in settings.text
    assert 'autocomplete="tel"' in settings.text

    sent = await browser.post(
        "/mfa/settings/phone", data={"csrf_token": csrf_of(settings), "phone": PHONE}
    )
    assert sent.status_code == 200
    assert f"We sent a code to {MASKED}" in sent.text
    assert 'action="/mfa/settings/phone/verify"' in sent.text
    assert '<label for="phone-code">' in sent.text
    assert 'autocomplete="one-time-code"' in sent.text
    assert 'inputmode="numeric"' in sent.text
    assert "autofocus" in sent.text
    assert [message.to for message in outbox.messages] == [E164]

    verified = await browser.post(
        "/mfa/settings/phone/verify",
        data={"csrf_token": csrf_of(sent), "code": texted_code(outbox)},
    )
    assert verified.status_code == 200
    assert "Your mobile number is verified" in verified.text
    assert f'id="verified-phone">{MASKED}<' in verified.text
    assert E164 not in verified.text
    assert "12 34 56" not in verified.text
    assert 'action="/mfa/settings/phone/verify"' not in verified.text


@pytest.mark.parametrize(
    ("phone", "message"),
    [
        pytest.param("06 12 34 56 78", "international format", id="no-country-code"),
        pytest.param("+33 6 12", "not a valid phone number", id="invalid"),
        pytest.param("+33 1 42 68 53 00", "Enter a mobile number", id="landline"),
        pytest.param("+49 1512 3456789", "cannot be sent to numbers of this country (DE)", id="c"),
    ],
)
async def test_a_number_no_text_may_go_to_is_refused_without_a_text(
    browser: httpx.AsyncClient, outbox: OutboxSMS, phone: str, message: str
) -> None:
    await sign_in(browser)
    settings = await browser.get("/mfa/settings")
    refused = await browser.post(
        "/mfa/settings/phone", data={"csrf_token": csrf_of(settings), "phone": phone}
    )
    assert refused.status_code == 400
    assert 'role="alert"' in refused.text
    assert message in refused.text
    assert 'aria-invalid="true"' in refused.text
    assert f'value="{phone}"' in refused.text  # the user corrects what they typed
    assert outbox.messages == []


async def test_a_wrong_phone_code_shows_the_form_again(
    browser: httpx.AsyncClient, outbox: OutboxSMS
) -> None:
    await sign_in(browser)
    settings = await browser.get("/mfa/settings")
    sent = await browser.post(
        "/mfa/settings/phone", data={"csrf_token": csrf_of(settings), "phone": PHONE}
    )
    refused = await browser.post(
        "/mfa/settings/phone/verify",
        data={"csrf_token": csrf_of(sent), "code": wrong(texted_code(outbox))},
    )
    assert refused.status_code == 422
    assert 'role="alert"' in refused.text
    assert 'aria-invalid="true" aria-describedby="form-error"' in refused.text
    assert "No verified mobile number." in refused.text
    # The right code still works: a wrong one does not use it up.
    verified = await browser.post(
        "/mfa/settings/phone/verify",
        data={"csrf_token": csrf_of(refused), "code": texted_code(outbox)},
    )
    assert "Your mobile number is verified" in verified.text


async def test_changing_the_number_of_an_enrolled_user_needs_a_fresh_code(
    ga: GuardedApp, browser: httpx.AsyncClient, outbox: OutboxSMS
) -> None:
    await sign_in(browser)
    secret, _ = await enrol(ga, browser)
    await add_phone(browser, outbox)
    ga.clock.advance(301)  # the verification is no longer recent
    outbox.clear()

    settings = await browser.get("/mfa/settings")
    step_up = await browser.post(
        "/mfa/settings/phone", data={"csrf_token": csrf_of(settings), "phone": "+44 7400 123456"}
    )
    assert step_up.status_code == 303
    assert step_up.headers["location"] == "/mfa/challenge?next=/mfa/settings"
    assert outbox.messages == []

    challenge = await browser.get(step_up.headers["location"])
    back = await browser.post(
        "/mfa/challenge",
        data={"csrf_token": csrf_of(challenge), "next": "/mfa/settings", "code": ga.code(secret)},
    )
    assert back.headers["location"] == "/mfa/settings"
    settings = await browser.get("/mfa/settings")
    sent = await browser.post(
        "/mfa/settings/phone", data={"csrf_token": csrf_of(settings), "phone": "+44 7400 123456"}
    )
    assert sent.status_code == 200
    assert "We sent a code to +44 •••• ••56" in sent.text
    message = outbox.last_to("+447400123456")
    assert message is not None
    code = TEXTED_CODE.search(message.text)
    assert code is not None
    verified = await browser.post(
        "/mfa/settings/phone/verify", data={"csrf_token": csrf_of(sent), "code": code.group(1)}
    )
    assert "Your mobile number is verified" in verified.text
    assert 'id="verified-phone">+44 •••• ••56<' in verified.text
    # The session that made the change stays verified under the new epoch.
    assert (await browser.get("/protected")).status_code == 200


def code_forms(page: httpx.Response) -> list[str]:
    """The challenge's forms that post a code (the recovery code's apart)."""
    forms = re.findall(r'<form method="post" action="/mfa/challenge".*?</form>', page.text, re.S)
    return [form for form in forms if 'value="recovery"' not in form]


def code_input(page: httpx.Response) -> str:
    """The challenge's code input, as an HTML tag."""
    return page.text[page.text.index('id="code"') :].split(">")[0]


def checked_method(page: httpx.Response) -> str | None:
    """The method radio button checked on the challenge, if there are radio buttons."""
    match = re.search(r'type="radio" name="method" value="(\w+)" checked', page.text)
    return match.group(1) if match else None


async def test_signing_in_with_a_code_by_text_message(
    ga: GuardedApp, browser: httpx.AsyncClient, outbox: OutboxSMS
) -> None:
    await signed_in_again_with_phone(ga, browser, outbox)
    challenge = await browser.get("/mfa/challenge?next=/protected")
    assert challenge.status_code == 200
    assert f"Get a code by text message to {MASKED}" in challenge.text
    assert 'action="/mfa/sms"' in challenge.text
    # The authenticator app stays the first and default method; SMS is a fallback.
    assert challenge.text.index('value="totp"') < challenge.text.index('action="/mfa/sms"')
    assert 'value="sms"' not in challenge.text

    sent = await browser.post(
        "/mfa/sms", data={"csrf_token": csrf_of(challenge), "next": "/protected"}
    )
    assert sent.status_code == 200
    assert f"We sent a code to {MASKED}. It expires in 10 minutes." in sent.text
    # One form, one code field: the texted code is chosen, the app's code one click away.
    [form] = code_forms(sent)
    assert form.count('name="code"') == 1
    assert checked_method(sent) == "sms"
    assert 'type="radio" name="method" value="totp"' in form
    assert f"The code texted to {MASKED}" in form
    assert "autofocus" in code_input(sent)
    assert 'autocomplete="one-time-code"' in code_input(sent)
    assert 'inputmode="numeric"' in code_input(sent)
    assert sent.text.count("autofocus") == 1

    accepted = await browser.post(
        "/mfa/challenge",
        data={
            "csrf_token": csrf_of(sent),
            "next": "/protected",
            "method": "sms",
            "code": texted_code(outbox),
        },
    )
    assert accepted.status_code == 303
    assert accepted.headers["location"] == "/protected"
    assert (await browser.get("/protected")).status_code == 200


async def test_the_sms_page_offers_to_send_a_code(
    ga: GuardedApp, browser: httpx.AsyncClient, outbox: OutboxSMS
) -> None:
    await signed_in_again_with_phone(ga, browser, outbox)
    page = await browser.get("/mfa/sms?next=/protected")
    assert page.status_code == 200
    assert MASKED in page.text
    assert 'action="/mfa/sms"' in page.text
    assert 'href="/mfa/challenge?next=/protected"' in page.text
    assert outbox.messages == []  # a GET never texts

    sent = await browser.post("/mfa/sms", data={"csrf_token": csrf_of(page), "next": "/protected"})
    assert sent.status_code == 200
    assert len(outbox.messages) == 1
    # Reloading the challenge page keeps the texted code's choice while the code is valid.
    reloaded = await browser.get("/mfa/challenge?next=/protected")
    assert checked_method(reloaded) == "sms"
    assert "Send a new code" in reloaded.text
    ga.clock.advance(600)  # the code's lifetime is over: back to the app's code alone
    expired = await browser.get("/mfa/challenge?next=/protected")
    assert 'value="sms"' not in expired.text
    assert "Text me a code" in expired.text


async def test_the_sms_page_sends_users_without_a_phone_to_the_challenge(
    ga: GuardedApp, browser: httpx.AsyncClient
) -> None:
    await sign_in(browser)
    await enrol(ga, browser)
    page = await browser.get("/mfa/sms?next=/protected")
    assert page.status_code == 303
    assert page.headers["location"] == "/mfa/challenge?next=/protected"
    challenge = await browser.get("/mfa/challenge")
    assert "text message" not in challenge.text


async def test_a_wrong_sms_code_shows_the_sms_form_again(
    ga: GuardedApp, browser: httpx.AsyncClient, outbox: OutboxSMS
) -> None:
    await signed_in_again_with_phone(ga, browser, outbox)
    challenge = await browser.get("/mfa/challenge")
    sent = await browser.post("/mfa/sms", data={"csrf_token": csrf_of(challenge)})
    form = {"csrf_token": csrf_of(sent), "method": "sms"}

    refused = await browser.post("/mfa/challenge", data=form | {"code": wrong(texted_code(outbox))})

    assert refused.status_code == 422
    assert 'role="alert"' in refused.text
    assert 'aria-invalid="true"' in code_input(refused)
    assert refused.text.count('aria-invalid="true"') == 1
    assert checked_method(refused) == "sms"
    assert (await browser.get("/protected")).status_code == 303
    accepted = await browser.post("/mfa/challenge", data=form | {"code": texted_code(outbox)})
    assert accepted.status_code == 303


async def test_an_sms_code_works_once(
    ga: GuardedApp, browser: httpx.AsyncClient, outbox: OutboxSMS
) -> None:
    await signed_in_again_with_phone(ga, browser, outbox)
    challenge = await browser.get("/mfa/challenge")
    sent = await browser.post("/mfa/sms", data={"csrf_token": csrf_of(challenge)})
    form = {"csrf_token": csrf_of(sent), "method": "sms", "code": texted_code(outbox)}
    assert (await browser.post("/mfa/challenge", data=form)).status_code == 303
    await browser.post("/logout")
    await sign_in(browser)
    replayed = await browser.post(
        "/mfa/challenge", data=form | {"csrf_token": csrf_of(await browser.get("/mfa/challenge"))}
    )
    assert replayed.status_code == 422


async def test_the_fourth_text_in_a_row_is_refused_with_retry_after(
    ga: GuardedApp, browser: httpx.AsyncClient, outbox: OutboxSMS
) -> None:
    await signed_in_again_with_stored_phone(ga, browser)
    challenge = await browser.get("/mfa/challenge")
    form = {"csrf_token": csrf_of(challenge), "next": "/protected"}
    for _ in range(3):
        assert (await browser.post("/mfa/sms", data=form)).status_code == 200

    refused = await browser.post("/mfa/sms", data=form)

    assert refused.status_code == 429
    retry_after = int(refused.headers["retry-after"])
    assert 540 < retry_after <= 600  # 3 per number per 10 minutes
    minutes = -(-retry_after // 60)
    assert (
        f"You cannot get another text message yet. Wait {minutes} minutes before asking for a "
        "new code." in refused.text
    )
    assert 'id="send-refused"' in refused.text
    assert "data-countdown" not in refused.text  # minutes are not counted down
    # The third code is still pending: its field stays, chosen.
    assert checked_method(refused) == "sms"
    assert len(outbox.messages) == 3
    accepted = await browser.post(
        "/mfa/challenge",
        data={"csrf_token": csrf_of(refused), "method": "sms", "code": texted_code(outbox)},
    )
    assert accepted.status_code == 303


async def test_too_many_texts_while_adding_a_number_says_when_to_retry(
    browser: httpx.AsyncClient, outbox: OutboxSMS
) -> None:
    await sign_in(browser)
    settings = await browser.get("/mfa/settings")
    form = {"csrf_token": csrf_of(settings), "phone": PHONE}
    for _ in range(3):
        assert (await browser.post("/mfa/settings/phone", data=form)).status_code == 200

    refused = await browser.post("/mfa/settings/phone", data=form)

    assert refused.status_code == 429
    minutes = -(-int(refused.headers["retry-after"]) // 60)
    assert (
        f"You cannot get another text message yet. Wait {minutes} minutes before asking for a "
        "new code." in refused.text
    )
    assert len(outbox.messages) == 3


async def test_a_provider_failure_while_sending_a_sign_in_code_shows_a_503_page(
    ga: GuardedApp, browser: httpx.AsyncClient, outbox: OutboxSMS
) -> None:
    await signed_in_again_with_phone(ga, browser, outbox)
    challenge = await browser.get("/mfa/challenge?next=/protected")
    form = {"csrf_token": csrf_of(challenge), "next": "/protected"}
    outbox.fail_next = 1

    failed = await browser.post("/mfa/sms", data=form)

    assert failed.status_code == 503
    assert failed.headers["retry-after"] == "30"
    assert 'role="alert"' in failed.text
    assert "The text message could not be sent. Try again later" in failed.text
    assert 'href="/mfa/challenge?next=/protected"' in failed.text
    assert outbox.messages == []
    assert (await browser.post("/mfa/sms", data=form)).status_code == 200


async def test_a_provider_failure_while_adding_a_number_shows_a_503_page(
    browser: httpx.AsyncClient, outbox: OutboxSMS
) -> None:
    await sign_in(browser)
    settings = await browser.get("/mfa/settings")
    form = {"csrf_token": csrf_of(settings), "phone": PHONE}
    outbox.fail_next = 1

    failed = await browser.post("/mfa/settings/phone", data=form)

    assert failed.status_code == 503
    assert "The text message could not be sent." in failed.text
    assert 'href="/mfa/settings"' in failed.text
    # The failed send took no slot of the budget: three texts still go through.
    for _ in range(3):
        assert (await browser.post("/mfa/settings/phone", data=form)).status_code == 200
    assert len(outbox.messages) == 3


@pytest.mark.parametrize("path", ["/mfa/sms", "/mfa/settings/phone", "/mfa/settings/phone/verify"])
@pytest.mark.parametrize(
    "token",
    [pytest.param(None, id="no-token"), pytest.param("forged-" * 6, id="wrong-token")],
)
async def test_sms_forms_without_the_session_token_are_refused(
    ga: GuardedApp,
    browser: httpx.AsyncClient,
    outbox: OutboxSMS,
    path: str,
    token: str | None,
) -> None:
    await signed_in_again_with_phone(ga, browser, outbox)
    await browser.get("/mfa/challenge")  # the session has a token, the form does not carry it
    form = {"phone": PHONE, "code": "123456"}
    if token is not None:
        form["csrf_token"] = token

    refused = await browser.post(path, data=form)

    assert refused.status_code == 403
    assert 'role="alert"' in refused.text
    assert outbox.messages == []


async def test_no_sms_sections_when_sms_is_off() -> None:
    ga = build_app()
    async with ga.client() as client:
        await sign_in(client)
        settings = await client.get("/mfa/settings")
        assert "Mobile phone" not in settings.text
        assert 'action="/mfa/settings/phone"' not in settings.text
        token = csrf_of(await client.get("/mfa/enrol"))
        refused = await client.post(
            "/mfa/settings/phone", data={"csrf_token": token, "phone": PHONE}
        )
        assert refused.status_code == 409
        assert "Text-message codes are not offered here." in refused.text
        assert "Mobile phone" not in refused.text

        await enrol(ga, client)
        await client.post("/logout")
        await sign_in(client)
        challenge = await client.get("/mfa/challenge")
        assert "text message" not in challenge.text
        assert "/mfa/sms" not in challenge.text
        page = await client.get("/mfa/sms")
        assert page.status_code == 303
        assert page.headers["location"] == "/mfa/challenge?next=/"
        sent = await client.post("/mfa/sms", data={"csrf_token": csrf_of(challenge)})
        assert sent.status_code == 409
        assert "Text-message codes are not offered here." in sent.text


async def test_enrolment_asks_for_a_verified_phone_first_when_required(
    outbox: OutboxSMS,
) -> None:
    ga = sms_app(outbox, require_phone_for_enrolment=True)
    async with ga.client() as client:
        await sign_in(client)
        intro = await client.get("/mfa/enrol")
        assert intro.status_code == 200
        assert "add your mobile number" in intro.text
        assert 'href="/mfa/settings"' in intro.text
        assert 'action="/mfa/enrol"' not in intro.text
        token = csrf_of(await client.get("/mfa/settings"))
        refused = await client.post("/mfa/enrol", data={"csrf_token": token})
        assert refused.status_code == 409
        assert 'role="alert"' in refused.text
        assert "Add and verify your mobile number" in refused.text

        await add_phone(client, outbox)
        intro = await client.get("/mfa/enrol")
        assert 'action="/mfa/enrol"' in intro.text
        started = await client.post("/mfa/enrol", data={"csrf_token": csrf_of(intro)})
        assert started.status_code == 200
        assert 'id="manual-key"' in started.text


async def test_a_resend_inside_the_cooldown_says_how_long_to_wait_and_keeps_the_code(
    outbox: OutboxSMS,
) -> None:
    # The default cooldown, one text per 30 s; its window runs on the real clock (`limits`).
    ga = sms_app(outbox, sms={"resend_cooldown": "1/30 seconds"})
    async with ga.client() as browser:
        await signed_in_again_with_stored_phone(ga, browser)
        challenge = await browser.get("/mfa/challenge?next=/protected")
        form = {"csrf_token": csrf_of(challenge), "next": "/protected"}
        before = time.time()
        assert (await browser.post("/mfa/sms", data=form)).status_code == 200

        refused = await browser.post("/mfa/sms", data=form)
        elapsed = time.time() - before

    assert refused.status_code == 429
    wait = int(refused.headers["retry-after"])
    # What is left of the window the first text opened: 30 s less the time this took.
    assert 30 - math.ceil(elapsed) <= wait <= 30
    unit = "second" if wait == 1 else "seconds"
    message = (
        f"You cannot get another text message yet. Wait {wait} {unit} before asking for a new code."
    )
    assert '<p class="error" role="alert" id="send-refused"' in refused.text
    assert message in refused.text
    assert "Too many" not in refused.text
    # The countdown script's sentences, one per second left; without it the text above stands.
    countdown = re.search(r"data-countdown='([^']*)'", refused.text)
    assert countdown is not None
    sentences = json.loads(html.unescape(countdown.group(1)))
    assert len(sentences) == wait
    assert sentences[0] == (
        "You cannot get another text message yet. Wait 1 second before asking for a new code."
    )
    assert sentences[-1] == message
    assert 'aria-describedby="send-refused"' in refused.text
    # The code sent a moment ago is still the one to enter: its field stays, chosen.
    assert checked_method(refused) == "sms"
    assert "autofocus" in code_input(refused)
    assert "Send a new code" in refused.text
    assert len(outbox.messages) == 1


async def test_a_refused_resend_in_french_says_the_wait_in_french(outbox: OutboxSMS) -> None:
    ga = sms_app(outbox, sms={"resend_cooldown": "1/30 seconds"})
    french = {"Accept-Language": "fr"}
    async with ga.client() as browser:
        await signed_in_again_with_stored_phone(ga, browser)
        form = {"csrf_token": csrf_of(await browser.get("/mfa/challenge"))}
        sent = await browser.post("/mfa/sms", data=form, headers=french)
        refused = await browser.post("/mfa/sms", data=form, headers=french)

    assert "Nous avons envoyé un code au +33 •••• ••78. Il expire dans 10 minutes." in sent.text
    wait = int(refused.headers["retry-after"])
    unit = "seconde" if wait == 1 else "secondes"
    assert (
        "Vous ne pouvez pas encore recevoir un autre SMS. "
        f"Attendez {wait} {unit} avant de demander un nouveau code." in refused.text
    )


async def test_only_the_session_that_asked_for_a_code_gets_its_field(
    ga: GuardedApp, browser: httpx.AsyncClient, outbox: OutboxSMS
) -> None:
    await signed_in_again_with_phone(ga, browser, outbox)
    challenge = await browser.get("/mfa/challenge")
    await browser.post("/mfa/sms", data={"csrf_token": csrf_of(challenge)})
    async with ga.client() as elsewhere:
        await sign_in(elsewhere)
        other = await elsewhere.get("/mfa/challenge")
    # The code is bound to the asking session: the other one is not offered a field for it.
    assert 'value="sms"' not in other.text
    assert "Text me a code" in other.text
    assert checked_method(await browser.get("/mfa/challenge")) == "sms"


@pytest.mark.parametrize(
    ("ttl", "sentence", "french"),
    [
        pytest.param(600, "It expires in 10 minutes.", "Il expire dans 10 minutes.", id="10min"),
        pytest.param(300, "It expires in 5 minutes.", "Il expire dans 5 minutes.", id="5min"),
        pytest.param(60, "It expires in 1 minute.", "Il expire dans 1 minute.", id="1min"),
        pytest.param(90, "It expires in 90 seconds.", "Il expire dans 90 secondes.", id="90s"),
    ],
)
async def test_the_page_and_the_text_say_the_same_lifetime(
    outbox: OutboxSMS, ttl: int, sentence: str, french: str
) -> None:
    ga = sms_app(outbox, sms={"code_ttl_seconds": ttl})
    async with ga.client() as browser:
        await signed_in_again_with_phone(ga, browser, outbox)
        challenge = await browser.get("/mfa/challenge")
        ga.clock.advance(1)  # the page is not shown at the very instant of the send
        sent = await browser.post("/mfa/sms", data={"csrf_token": csrf_of(challenge)})
        text = outbox.messages[-1].text
        french_page = await browser.post(
            "/mfa/sms",
            data={"csrf_token": csrf_of(challenge)},
            headers={"Accept-Language": "fr"},
        )

    notice = re.search(r'<p class="notice" role="status">(.*?)</p>', sent.text)
    assert notice is not None
    assert notice.group(1) == f"We sent a code to {MASKED}. {sentence}"
    assert text.endswith(f" verification code. {sentence}")
    assert TEXTED_CODE.match(text)
    assert f"au {MASKED}. {french}" in french_page.text


async def test_one_code_is_checked_for_the_chosen_method_only() -> None:
    """The app's code and a texted code both have 6 digits, and the one form posts either: the
    radio button says which, and only that method checks it (one attempt, one failure slot)."""
    outbox = OutboxSMS()
    ga = sms_app(outbox, trusted_devices={"enabled": True})
    async with ga.client() as browser:
        secret = await signed_in_again_with_stored_phone(ga, browser)
        ga.clock.advance(30)  # the enrolment used this step
        sent = await browser.post(
            "/mfa/sms", data={"csrf_token": csrf_of(await browser.get("/mfa/challenge"))}
        )
        [form] = code_forms(sent)
        assert form.count('name="code"') == 1
        assert form.count('name="remember"') == 1
        assert sent.text.count("Remember this browser") == 1
        failures_before = ga.events.kinds().count(EventKind.VERIFICATION_FAILED)

        # The app's code, sent as the texted code: refused, and counted once.
        as_text = await browser.post(
            "/mfa/challenge",
            data={"csrf_token": csrf_of(sent), "method": "sms", "code": ga.code(secret)},
        )
        assert as_text.status_code == 422
        assert ga.events.kinds().count(EventKind.VERIFICATION_FAILED) == failures_before + 1
        assert checked_method(as_text) == "sms"

        # The same code with its own method chosen: in, and the browser remembered.
        as_app = await browser.post(
            "/mfa/challenge",
            data={
                "csrf_token": csrf_of(as_text),
                "method": "totp",
                "code": ga.code(secret),
                "remember": "1",
            },
        )
        assert as_app.status_code == 303
        assert "mfa_guard_device" in as_app.headers.get("set-cookie", "")
        assert ga.events.kinds().count(EventKind.VERIFICATION_FAILED) == failures_before + 1
        assert EventKind.VERIFIED in ga.events.kinds()
