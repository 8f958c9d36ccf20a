"""Checklist item 1 for the SMS endpoints (JSON and forms): bad input is a 4xx with a
message, never a 500; it sends no text, counts no failed attempt and changes nothing. And
checklist item 9 for them: a post from another site or a GET sends nothing."""

from __future__ import annotations

import httpx
import pytest

from mfa_guard.events import EventKind
from mfa_guard.sms import OutboxSMS
from tests.apps import GuardedApp, build_app
from tests.bad_input import (
    BAD_CODES,
    BAD_ENVELOPES,
    BAD_FORM_CODES,
    BAD_FORM_ENVELOPES,
    MOBILE,
    TOKEN_PLACEHOLDER,
    Body,
    Form,
    as_json,
    form,
)
from tests.scenarios import (
    USER,
    State,
    arrive,
    assert_json_error,
    assert_refused_page,
    page_token,
    snapshot,
)
from tests.sms_apps import SMS, texted_code

NEW_MOBILE = "+33699887766"


@pytest.fixture
def outbox() -> OutboxSMS:
    return OutboxSMS()


@pytest.fixture
def guarded(outbox: OutboxSMS) -> GuardedApp:
    # One failed attempt locks the account: a bad request counted as a failure would make the
    # right code at the end of a scenario fail.
    return build_app(sms_provider=outbox, sms=SMS, rate_limits={"failures": "1/minute;100/day"})


# Fields of /api/phone that are no mobile number a text may go to.
BAD_PHONE_FIELDS = [
    pytest.param(Body(b""), id="empty-body"),
    pytest.param(Body(b"{}"), id="empty-object"),
    pytest.param(Body(as_json({"phone": ""})), id="empty-phone"),
    pytest.param(Body(as_json({"phone": "call me"})), id="letters"),
    pytest.param(Body(as_json({"phone": "            "})), id="spaces-only"),
    pytest.param(Body(as_json({"phone": "12345"})), id="five-digits"),
    pytest.param(Body(as_json({"phone": "+331234567"})), id="too-few-digits"),
    pytest.param(Body(as_json({"phone": "+33 6 12\u0000 34 56 78"})), id="escaped-nul-inside"),
    pytest.param(Body(as_json({"phone": "+" + "6" * 3000})), id="overlong-phone"),
    pytest.param(Body(as_json({"phone": 33612345678})), id="number-not-string"),
    pytest.param(Body(as_json({"phone": None})), id="null-phone"),
    pytest.param(Body(as_json({"phone": [MOBILE]})), id="list-phone"),
    pytest.param(Body(as_json({"phone": {"number": MOBILE}})), id="object-phone"),
]

SIGNED_OUT = pytest.param(False, id="signed-out")
READY = pytest.param(True, id="verified-with-a-phone")


async def get_ready(guarded: GuardedApp, client: httpx.AsyncClient) -> None:
    """Enrolled with a verified phone, the second factor given a moment ago, and a code texted
    to a new number waiting to be typed in: every SMS endpoint has something to spoil."""
    secret = await arrive(guarded, client, State.CHALLENGED)
    await guarded.store.set_phone(USER, MOBILE, guarded.clock())
    verified = await client.post("/mfa/api/verify", json={"code": guarded.code(secret)})
    assert verified.status_code == 200, verified.text
    await guarded.guard.service.drain()  # a success clears the failure count in the background
    sent = await client.post("/mfa/api/phone", json={"phone": NEW_MOBILE})
    assert sent.status_code == 202, sent.text


async def arrive_sms(guarded: GuardedApp, client: httpx.AsyncClient, ready: bool) -> None:
    if ready:
        await get_ready(guarded, client)


async def assert_nothing_was_spent(
    guarded: GuardedApp, client: httpx.AsyncClient, outbox: OutboxSMS, ready: bool, sent: int
) -> None:
    """No text went out, no attempt was counted, and the waiting code still works."""
    assert len(outbox.messages) == sent
    assert EventKind.VERIFICATION_FAILED not in guarded.events.kinds()
    assert EventKind.LOCKED_OUT not in guarded.events.kinds()
    assert EventKind.SMS_LIMITED not in guarded.events.kinds()
    if not ready:
        return
    code = texted_code(outbox, NEW_MOBILE)
    response = await client.post("/mfa/api/phone/verify", json={"code": code})
    assert response.status_code == 200, response.text


# -- SMS over JSON ------------------------------------------------------------------------------


@pytest.mark.parametrize(("body", "status_code", "code"), BAD_ENVELOPES)
@pytest.mark.parametrize("ready", [SIGNED_OUT, READY])
@pytest.mark.parametrize("path", ["/mfa/api/phone", "/mfa/api/phone/verify", "/mfa/api/sms/send"])
async def test_an_sms_endpoint_refuses_a_body_that_is_not_a_small_json_object(
    guarded: GuardedApp,
    client: httpx.AsyncClient,
    outbox: OutboxSMS,
    path: str,
    ready: bool,
    body: Body,
    status_code: int,
    code: str,
) -> None:
    await arrive_sms(guarded, client, ready)
    sent = len(outbox.messages)
    before = await snapshot(guarded, client)
    response = await client.post(path, **body.request())
    if not ready:
        status_code, code = 401, "not_authenticated"
    assert assert_json_error(response) == code
    assert response.status_code == status_code
    assert await snapshot(guarded, client) == before
    await assert_nothing_was_spent(guarded, client, outbox, ready, sent)


@pytest.mark.parametrize("body", BAD_CODES)
@pytest.mark.parametrize("ready", [SIGNED_OUT, READY])
async def test_the_phone_check_refuses_a_bad_code_and_counts_no_attempt(
    guarded: GuardedApp, client: httpx.AsyncClient, outbox: OutboxSMS, ready: bool, body: Body
) -> None:
    await arrive_sms(guarded, client, ready)
    sent = len(outbox.messages)
    before = await snapshot(guarded, client)
    assert_json_error(await client.post("/mfa/api/phone/verify", **body.request()))
    assert await snapshot(guarded, client) == before
    await assert_nothing_was_spent(guarded, client, outbox, ready, sent)


@pytest.mark.parametrize("body", BAD_PHONE_FIELDS)
@pytest.mark.parametrize("ready", [SIGNED_OUT, READY])
async def test_a_bad_phone_number_is_refused_without_a_text(
    guarded: GuardedApp, client: httpx.AsyncClient, outbox: OutboxSMS, ready: bool, body: Body
) -> None:
    await arrive_sms(guarded, client, ready)
    sent = len(outbox.messages)
    before = await snapshot(guarded, client)
    response = await client.post("/mfa/api/phone", **body.request())
    assert assert_json_error(response) in (
        ("invalid_phone", "invalid_input") if ready else ("not_authenticated",)
    )
    assert await snapshot(guarded, client) == before
    await assert_nothing_was_spent(guarded, client, outbox, ready, sent)


@pytest.mark.parametrize(
    "phone",
    [
        pytest.param("+３３６１２３４５６７８", id="full-width-digits"),  # noqa: RUF001
        pytest.param("+٣٣٦١٢٣٤٥٦٧٨", id="arabic-indic-digits"),
        pytest.param("+33 6 12 34 56 78\u0000", id="trailing-nul"),
    ],
)
async def test_a_phone_number_in_other_digits_or_with_a_nul_is_refused(
    guarded: GuardedApp, client: httpx.AsyncClient, outbox: OutboxSMS, phone: str
) -> None:
    await arrive(guarded, client, State.SIGNED_IN)
    response = await client.post("/mfa/api/phone", json={"phone": phone})
    assert response.status_code == 400, response.text
    assert assert_json_error(response) == "invalid_phone"
    assert outbox.messages == []


# -- SMS forms ----------------------------------------------------------------------------------


BAD_FORM_PHONES = [
    pytest.param(Form(form()), id="no-phone-field"),
    pytest.param(Form(form(phone="")), id="empty-phone"),
    pytest.param(Form(form(phone="call me")), id="letters"),
    pytest.param(Form(form(phone="            ")), id="spaces-only"),
    pytest.param(Form(form(phone="12345")), id="five-digits"),
    pytest.param(Form(form(phone="+33 6 12\x00 34 56 78")), id="nul-inside"),
    pytest.param(Form(form(phone="+" + "6" * 2000)), id="overlong-phone"),
    pytest.param(Form(f"csrf_token={TOKEN_PLACEHOLDER}&phone=%zz%ff%00"), id="bad-percent-escapes"),
]

SMS_FORMS = ["/mfa/sms", "/mfa/settings/phone", "/mfa/settings/phone/verify"]


async def assert_form_refused_with_nothing_spent(
    guarded: GuardedApp,
    client: httpx.AsyncClient,
    outbox: OutboxSMS,
    path: str,
    bad: Form,
    status_code: int,
) -> None:
    """A verified session posts ``bad`` to ``path``: the page refuses it with ``status_code``, and
    nothing changed, no text was sent and no attempt was counted."""
    await get_ready(guarded, client)
    token = await page_token(client, State.VERIFIED)
    sent = len(outbox.messages)
    before = await snapshot(guarded, client)
    assert_refused_page(await client.post(path, **bad.request(token)), status_code)
    assert await snapshot(guarded, client) == before
    await assert_nothing_was_spent(guarded, client, outbox, True, sent)


@pytest.mark.parametrize(("bad", "status_code"), BAD_FORM_ENVELOPES)
@pytest.mark.parametrize("path", SMS_FORMS)
async def test_an_sms_form_that_cannot_be_read_is_refused_without_a_text(
    guarded: GuardedApp,
    client: httpx.AsyncClient,
    outbox: OutboxSMS,
    path: str,
    bad: Form,
    status_code: int,
) -> None:
    await assert_form_refused_with_nothing_spent(guarded, client, outbox, path, bad, status_code)


@pytest.mark.parametrize("bad", BAD_FORM_CODES)
async def test_the_phone_check_form_shows_a_bad_code_again_and_counts_no_attempt(
    guarded: GuardedApp, client: httpx.AsyncClient, outbox: OutboxSMS, bad: Form
) -> None:
    await assert_form_refused_with_nothing_spent(
        guarded, client, outbox, "/mfa/settings/phone/verify", bad, 422
    )


@pytest.mark.parametrize("bad", BAD_FORM_PHONES)
async def test_the_phone_form_shows_a_bad_number_again_without_a_text(
    guarded: GuardedApp, client: httpx.AsyncClient, outbox: OutboxSMS, bad: Form
) -> None:
    await assert_form_refused_with_nothing_spent(
        guarded, client, outbox, "/mfa/settings/phone", bad, 400
    )


# -- SMS posts from another site, and GETs (checklist 9) ---------------------------------------

CROSS_SITE = [
    pytest.param({"origin": "https://evil.test"}, id="origin-evil"),
    pytest.param({"origin": "null"}, id="origin-null"),
    pytest.param({"sec-fetch-site": "cross-site"}, id="fetch-site-cross-site"),
    pytest.param({"sec-fetch-site": "same-site"}, id="fetch-site-same-site"),
    pytest.param(
        {"origin": "https://evil.test", "sec-fetch-site": "same-origin"}, id="origin-evil-lying"
    ),
]


def sms_fields(path: str, outbox: OutboxSMS) -> dict[str, str]:
    """What a page of another site would post: a number of its own, or the right code."""
    if path.endswith("/phone"):
        return {"phone": "+447400123456"}
    if path.endswith("/phone/verify"):
        return {"code": texted_code(outbox, NEW_MOBILE)}
    return {}


@pytest.mark.parametrize("headers", CROSS_SITE)
@pytest.mark.parametrize("path", ["/mfa/api/phone", "/mfa/api/phone/verify", "/mfa/api/sms/send"])
async def test_an_sms_post_from_another_site_is_refused_and_sends_nothing(
    guarded: GuardedApp,
    client: httpx.AsyncClient,
    outbox: OutboxSMS,
    path: str,
    headers: dict[str, str],
) -> None:
    await get_ready(guarded, client)
    sent = len(outbox.messages)
    before = await snapshot(guarded, client)
    response = await client.post(path, json=sms_fields(path, outbox), headers=headers)
    assert response.status_code == 403, response.text
    assert assert_json_error(response) == "cross_site_request"
    assert await snapshot(guarded, client) == before
    await assert_nothing_was_spent(guarded, client, outbox, True, sent)


@pytest.mark.parametrize("headers", CROSS_SITE)
@pytest.mark.parametrize("path", SMS_FORMS)
async def test_an_sms_form_with_its_token_from_another_site_is_refused(
    guarded: GuardedApp,
    client: httpx.AsyncClient,
    outbox: OutboxSMS,
    path: str,
    headers: dict[str, str],
) -> None:
    await get_ready(guarded, client)
    fields = {"csrf_token": await page_token(client, State.VERIFIED)}
    fields |= sms_fields(path.replace("/settings", "/api"), outbox)
    sent = len(outbox.messages)
    before = await snapshot(guarded, client)
    assert_refused_page(await client.post(path, data=fields, headers=headers), 403)
    assert await snapshot(guarded, client) == before
    await assert_nothing_was_spent(guarded, client, outbox, True, sent)


@pytest.mark.logs_secrets(
    reason="the test's own client puts the texted code in a GET's query string, and httpx logs "
    "the URL it requests; the kit refuses the GET and logs nothing of it"
)
@pytest.mark.parametrize("path", ["/mfa/api/phone", "/mfa/api/phone/verify", "/mfa/api/sms/send"])
async def test_a_get_to_an_sms_endpoint_sends_nothing(
    guarded: GuardedApp, client: httpx.AsyncClient, outbox: OutboxSMS, path: str
) -> None:
    await get_ready(guarded, client)
    sent = len(outbox.messages)
    before = await snapshot(guarded, client)
    response = await client.get(path, params=sms_fields(path, outbox))
    assert response.status_code == 405, response.text
    assert response.headers["allow"] == "POST"
    assert assert_json_error(response) == "method_not_allowed"
    assert await snapshot(guarded, client) == before
    await assert_nothing_was_spent(guarded, client, outbox, True, sent)
