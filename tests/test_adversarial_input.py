"""SECURITY.md checklist item 1 on the endpoints tests/test_bad_input.py leaves out: the SMS
endpoints (JSON and forms) and the site endpoints. Bad input is a 4xx with a message, never a 500;
it sends no text, counts no failed attempt and changes nothing. And checklist item 9 for the SMS
endpoints, which tests/test_csrf.py leaves out: a post from another site or a GET sends nothing."""

from __future__ import annotations

import json
import logging
import os
import re
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

import httpx
import pytest
from sqlalchemy import exc as sa_exc
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

from mfa_guard.events import AuditEvent, EventKind, LoggingEventSink
from mfa_guard.sms import OutboxSMS
from mfa_guard.stores.sites import MemorySiteDirectory, Role, SiteDirectory, SitePolicy
from mfa_guard.stores.sql import SQLSiteDirectory, SQLStore
from tests.apps import GuardedApp, build_app
from tests.scenarios import (
    USER,
    State,
    arrive,
    assert_json_error,
    assert_refused_page,
    page_token,
    snapshot,
)

MOBILE = "+33612345678"
NEW_MOBILE = "+33699887766"
FULL_WIDTH_DIGITS = "１２３４５６"  # noqa: RUF001 (they are the point)
TEXTED_CODE = re.compile(r"\b(\d{6}) is your ")
SMS = {
    "enabled": True,
    "provider": "outbox",
    "allowed_regions": ["FR", "GB"],
    # The resend cooldown runs on the real clock of `limits`: widened so a test never waits.
    "resend_cooldown": "100/second",
}
POSTGRES_URL = os.environ.get(
    "MFA_GUARD_TEST_POSTGRES_URL", "postgresql+asyncpg://postgres@127.0.0.1:5432/test"
)


@pytest.fixture
def outbox() -> OutboxSMS:
    return OutboxSMS()


@pytest.fixture
def guarded(outbox: OutboxSMS) -> GuardedApp:
    # One failed attempt locks the account: a bad request counted as a failure would make the
    # right code at the end of a scenario fail.
    return build_app(sms_provider=outbox, sms=SMS, rate_limits={"failures": "1/minute;100/day"})


async def in_chunks(data: bytes) -> AsyncIterator[bytes]:
    """A body sent without Content-Length (chunked), so only reading it can show its size."""
    for start in range(0, len(data), 1024):
        yield data[start : start + 1024]


@dataclass(frozen=True)
class Body:
    content: bytes
    content_type: str | None = "application/json"
    streamed: bool = False

    def request(self) -> dict[str, Any]:
        headers = {} if self.content_type is None else {"content-type": self.content_type}
        content = in_chunks(self.content) if self.streamed else self.content
        return {"content": content, "headers": headers}


def as_json(value: object) -> bytes:
    return json.dumps(value).encode()


TEN_KB_JSON = as_json({"phone": MOBILE, "code": "123456", "padding": "x" * 10_240})

# Refused by every JSON endpoint that reads a body, before it looks at a field.
BAD_ENVELOPES = [
    pytest.param(Body(TEN_KB_JSON), 413, "payload_too_large", id="ten-kb-body"),
    pytest.param(
        Body(TEN_KB_JSON, streamed=True), 413, "payload_too_large", id="ten-kb-body-streamed"
    ),
    pytest.param(
        Body(b'{"code": "123456"}', "text/plain"), 415, "unsupported_media_type", id="text-plain"
    ),
    pytest.param(
        Body(b"code=123456", "application/x-www-form-urlencoded"),
        415,
        "unsupported_media_type",
        id="form-urlencoded",
    ),
    pytest.param(
        Body(b'{"code": "123456"}', None), 415, "unsupported_media_type", id="no-content-type"
    ),
    pytest.param(Body(b'{"code": "123456"'), 400, "invalid_json", id="malformed-json"),
    pytest.param(Body(b'["123456"]'), 400, "invalid_json", id="json-array"),
    pytest.param(Body(b"null"), 400, "invalid_json", id="json-null"),
    pytest.param(Body(b"42"), 400, "invalid_json", id="json-number"),
    pytest.param(Body(b'{"code": "123\x00456"}'), 400, "invalid_json", id="raw-nul-byte"),
    pytest.param(Body(b'{"code": "\xff\xfe"}'), 400, "invalid_json", id="invalid-utf8"),
    pytest.param(Body(b"[" * 2000 + b"]" * 2000), 400, "invalid_json", id="deeply-nested"),
]
ENVELOPE_BODIES = [pytest.param(p.values[0], id=p.id) for p in BAD_ENVELOPES]

# Fields of /api/phone/verify that cannot be a texted code: none may count as an attempt.
BAD_CODE_FIELDS = [
    pytest.param(Body(b""), id="empty-body"),
    pytest.param(Body(b"{}"), id="empty-object"),
    pytest.param(Body(as_json({"code": ""})), id="empty-code"),
    pytest.param(Body(as_json({"code": "12345"})), id="five-digits"),
    pytest.param(Body(as_json({"code": "1234567"})), id="seven-digits"),
    pytest.param(Body(as_json({"code": "abcdef"})), id="letters"),
    pytest.param(Body(as_json({"code": "      "})), id="spaces-only"),
    pytest.param(Body(as_json({"code": "123\u0000456"})), id="escaped-nul"),
    pytest.param(Body(as_json({"code": FULL_WIDTH_DIGITS})), id="full-width-digits"),
    pytest.param(Body(as_json({"code": "1" * 3000})), id="overlong-code"),
    pytest.param(Body(as_json({"code": 123456})), id="number-not-string"),
    pytest.param(Body(as_json({"code": None})), id="null-code"),
    pytest.param(Body(as_json({"code": ["123456"]})), id="list-code"),
    pytest.param(Body(as_json({"code": {"123456": True}})), id="object-code"),
]

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


def texted_code(outbox: OutboxSMS, number: str) -> str:
    message = outbox.last_to(number)
    assert message is not None, f"a text went to {number}"
    match = TEXTED_CODE.search(message.text)
    assert match is not None, message.text
    return match.group(1)


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


@pytest.mark.parametrize("body", BAD_CODE_FIELDS)
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

TOKEN_PLACEHOLDER = "CSRF_TOKEN_PLACEHOLDER"


@dataclass(frozen=True)
class Form:
    """A form post; ``TOKEN_PLACEHOLDER`` in ``content`` becomes the session's CSRF token."""

    content: str
    content_type: str | None = "application/x-www-form-urlencoded"
    streamed: bool = False

    def request(self, token: str) -> dict[str, Any]:
        content = self.content.replace(TOKEN_PLACEHOLDER, token).encode()
        return Body(content, self.content_type, self.streamed).request()


def form(**fields: str) -> str:
    return urlencode({"csrf_token": TOKEN_PLACEHOLDER, **fields})


def multipart(*parts: str, boundary: str = "b0undary") -> str:
    return "".join(f"--{boundary}\r\n{part}\r\n" for part in parts) + f"--{boundary}--\r\n"


TOKEN_PART = f'Content-Disposition: form-data; name="csrf_token"\r\n\r\n{TOKEN_PLACEHOLDER}'
FILE_PART = 'Content-Disposition: form-data; name="f"; filename="a.txt"\r\n\r\nx'

BAD_FORM_ENVELOPES = [
    pytest.param(Form(form(phone=MOBILE, code="123456", pad="x" * 10_240)), 413, id="ten-kb-form"),
    pytest.param(
        Form(form(phone=MOBILE, code="123456", pad="x" * 10_240), streamed=True),
        400,
        id="ten-kb-streamed",
    ),
    pytest.param(
        Form(json.dumps({"csrf_token": TOKEN_PLACEHOLDER, "phone": MOBILE}), "application/json"),
        415,
        id="json-content-type",
    ),
    pytest.param(Form(form(phone=MOBILE), "text/plain"), 415, id="text-plain"),
    pytest.param(Form(form(phone=MOBILE), None), 415, id="no-content-type"),
    pytest.param(
        Form(multipart(TOKEN_PART, FILE_PART), "multipart/form-data; boundary=b0undary"),
        400,
        id="multipart-with-a-file",
    ),
    pytest.param(
        Form(multipart(TOKEN_PART), "multipart/form-data"), 400, id="multipart-without-boundary"
    ),
    pytest.param(Form(form(**{f"field{i}": "1" for i in range(20)})), 400, id="twenty-one-fields"),
]

BAD_FORM_CODES = [
    pytest.param(Form(form()), id="no-code-field"),
    pytest.param(Form(form(code="")), id="empty-code"),
    pytest.param(Form(form(code="12345")), id="five-digits"),
    pytest.param(Form(form(code="1234567")), id="seven-digits"),
    pytest.param(Form(form(code="abcdef")), id="letters"),
    pytest.param(Form(form(code="      ")), id="spaces-only"),
    pytest.param(Form(form(code="123\x00456")), id="nul-inside"),
    pytest.param(Form(form(code=FULL_WIDTH_DIGITS)), id="full-width-digits"),
    pytest.param(Form(form(code="1" * 2000)), id="overlong-code"),
    pytest.param(Form(f"csrf_token={TOKEN_PLACEHOLDER}&code=%zz%ff%00"), id="bad-percent-escapes"),
]

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
    await get_ready(guarded, client)
    token = await page_token(client, State.VERIFIED)
    sent = len(outbox.messages)
    before = await snapshot(guarded, client)
    assert_refused_page(await client.post(path, **bad.request(token)), status_code)
    assert await snapshot(guarded, client) == before
    await assert_nothing_was_spent(guarded, client, outbox, True, sent)


@pytest.mark.parametrize("bad", BAD_FORM_CODES)
async def test_the_phone_check_form_shows_a_bad_code_again_and_counts_no_attempt(
    guarded: GuardedApp, client: httpx.AsyncClient, outbox: OutboxSMS, bad: Form
) -> None:
    await get_ready(guarded, client)
    token = await page_token(client, State.VERIFIED)
    sent = len(outbox.messages)
    before = await snapshot(guarded, client)
    response = await client.post("/mfa/settings/phone/verify", **bad.request(token))
    assert_refused_page(response, 422)
    assert await snapshot(guarded, client) == before
    await assert_nothing_was_spent(guarded, client, outbox, True, sent)


@pytest.mark.parametrize("bad", BAD_FORM_PHONES)
async def test_the_phone_form_shows_a_bad_number_again_without_a_text(
    guarded: GuardedApp, client: httpx.AsyncClient, outbox: OutboxSMS, bad: Form
) -> None:
    await get_ready(guarded, client)
    token = await page_token(client, State.VERIFIED)
    sent = len(outbox.messages)
    before = await snapshot(guarded, client)
    response = await client.post("/mfa/settings/phone", **bad.request(token))
    assert_refused_page(response, 400)
    assert await snapshot(guarded, client) == before
    await assert_nothing_was_spent(guarded, client, outbox, True, sent)


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


# -- the site endpoints -------------------------------------------------------------------------

OPERATOR = "agent@acme.test"

# Policy bodies that are JSON objects but no policy: refused before the owner's state is read.
BAD_POLICY_FIELDS = [
    pytest.param(Body(b""), id="empty-body"),
    pytest.param(Body(b"{}"), id="empty-object"),
    pytest.param(Body(as_json({"enforce": "true"})), id="enforce-as-string"),
    pytest.param(Body(as_json({"enforce": 1})), id="enforce-as-number"),
    pytest.param(Body(as_json({"enforce": "\u0000"})), id="enforce-nul"),
    pytest.param(Body(as_json({"enforce": [True]})), id="enforce-as-list"),
    pytest.param(Body(as_json({"enforce": {"on": True}})), id="enforce-as-object"),
    pytest.param(Body(as_json({"enforce": True, "grace_hours": "24"})), id="grace-as-string"),
    pytest.param(
        Body(as_json({"enforce": True, "grace_hours": "２４"})),  # noqa: RUF001
        id="grace-full-width-digits",
    ),
    pytest.param(Body(as_json({"enforce": True, "grace_hours": "2\u00004"})), id="grace-nul"),
    pytest.param(Body(as_json({"enforce": True, "grace_hours": -0.5})), id="grace-negative"),
    pytest.param(Body(b'{"enforce": true, "grace_hours": Infinity}'), id="grace-infinity"),
    pytest.param(Body(b'{"enforce": true, "grace_hours": NaN}'), id="grace-nan"),
    pytest.param(Body(as_json({"enforce": True, "grace_hours": {"h": 1}})), id="grace-object"),
    pytest.param(
        Body(b'{"enforce": ' + b"[" * 1900 + b"]" * 1900 + b"}"), id="deeply-nested-enforce"
    ),
]

# Site ids no directory has: the same 404 as any site the user is not a member of.
BAD_SITE_IDS = [
    pytest.param("acme%00", id="nul-after"),
    pytest.param("%00", id="nul-only"),
    pytest.param("%EF%BC%A1cme", id="full-width-letter"),
    pytest.param("acme%20", id="trailing-space"),
    pytest.param("%2e%2e", id="dot-dot"),
    pytest.param("x" * 300, id="overlong"),
    pytest.param("acme%0d", id="carriage-return"),
    pytest.param("ac%09me", id="tab"),
]


async def acme_directory() -> MemorySiteDirectory:
    directory = MemorySiteDirectory()
    await fill(directory)
    return directory


async def fill(directory: SiteDirectory) -> None:
    await directory.save_site("acme", "Acme")
    await directory.add_member("acme", USER, Role.OWNER)
    await directory.add_member("acme", OPERATOR, Role.OPERATOR)


@dataclass
class Acme:
    ga: GuardedApp
    directory: SiteDirectory

    async def policy(self) -> SitePolicy:
        site = await self.directory.site("acme")
        assert site is not None
        return site.policy


@pytest.fixture
async def acme() -> Acme:
    directory = await acme_directory()
    return Acme(build_app(sites=directory), directory)


@pytest.fixture
async def owner(acme: Acme) -> AsyncIterator[httpx.AsyncClient]:
    """The site's owner, with 2FA verified in this session: allowed to change the policy."""
    async with acme.ga.client() as client:
        await arrive(acme.ga, client, State.VERIFIED)
        yield client


async def site_snapshot(acme: Acme, client: httpx.AsyncClient) -> tuple[Any, ...]:
    return await acme.policy(), *await snapshot(acme.ga, client)


@pytest.mark.parametrize(("body", "status_code", "code"), BAD_ENVELOPES)
async def test_a_policy_change_refuses_a_body_that_is_not_a_small_json_object(
    acme: Acme, owner: httpx.AsyncClient, body: Body, status_code: int, code: str
) -> None:
    before = await site_snapshot(acme, owner)
    response = await owner.put("/mfa/api/sites/acme/policy", **body.request())
    assert assert_json_error(response) == code
    assert response.status_code == status_code
    assert await site_snapshot(acme, owner) == before
    assert EventKind.SITE_POLICY_CHANGED not in acme.ga.events.kinds()


@pytest.mark.parametrize("body", BAD_POLICY_FIELDS)
async def test_a_policy_that_is_no_policy_is_refused_and_changes_nothing(
    acme: Acme, owner: httpx.AsyncClient, body: Body
) -> None:
    before = await site_snapshot(acme, owner)
    response = await owner.put("/mfa/api/sites/acme/policy", **body.request())
    assert response.status_code == 400, response.text
    # Too deep for the parser is invalid JSON; the rest is JSON but no policy.
    assert assert_json_error(response) in ("invalid_input", "invalid_json")
    assert await site_snapshot(acme, owner) == before
    assert EventKind.SITE_POLICY_CHANGED not in acme.ga.events.kinds()


async def test_a_grace_period_too_large_for_a_float_is_refused(
    acme: Acme, owner: httpx.AsyncClient
) -> None:
    transport = httpx.ASGITransport(
        app=acme.ga.app, client=("203.0.113.7", 4000), raise_app_exceptions=False
    )
    async with httpx.AsyncClient(
        transport=transport, base_url="http://testserver", cookies=owner.cookies
    ) as same_session:
        before = await site_snapshot(acme, same_session)
        response = await same_session.put(
            "/mfa/api/sites/acme/policy", json={"enforce": True, "grace_hours": 10**400}
        )
        assert response.status_code == 400, response.text
        assert assert_json_error(response) == "invalid_input"
        assert await site_snapshot(acme, same_session) == before


@pytest.mark.parametrize("body", ENVELOPE_BODIES)
@pytest.mark.parametrize("path", ["/mfa/api/sites", "/mfa/api/sites/acme/members"])
async def test_the_site_reads_ignore_whatever_body_comes_with_the_get(
    acme: Acme, owner: httpx.AsyncClient, path: str, body: Body
) -> None:
    before = await site_snapshot(acme, owner)
    response = await owner.request("GET", path, **body.request())
    assert response.status_code == 200, response.text
    assert "acme" in response.text
    assert await site_snapshot(acme, owner) == before


@pytest.mark.parametrize("site", BAD_SITE_IDS)
async def test_a_site_id_no_directory_has_is_the_same_404(
    acme: Acme, owner: httpx.AsyncClient, site: str
) -> None:
    await assert_no_such_site(acme, owner, site)


async def assert_no_such_site(acme: Acme, owner: httpx.AsyncClient, site: str) -> None:
    policy, enrolment, events, status = await site_snapshot(acme, owner)
    for response in (
        await owner.get(f"/mfa/api/sites/{site}/members"),
        await owner.put(f"/mfa/api/sites/{site}/policy", json={"enforce": True, "grace_hours": 1}),
    ):
        assert response.status_code == 404, response.text
        assert assert_json_error(response) == "site_not_found"
    after = await site_snapshot(acme, owner)
    assert (after[0], after[1], after[3]) == (policy, enrolment, status)
    # A refusal after a lookup is audited, as for any site the user is not a member of.
    assert after[2][: len(events)] == events
    assert set(after[2][len(events) :]) <= {EventKind.SITE_ACCESS_DENIED}


@pytest.mark.parametrize("line_break", ["%0a", "%0d%0a"], ids=["lf", "crlf"])
async def test_a_line_break_in_a_site_id_is_a_404_that_injects_no_header(
    acme: Acme, owner: httpx.AsyncClient, line_break: str
) -> None:
    """Starlette's mount does not match a path with a line feed: the app's own 404 answers,
    before the kit sees the request. Either way no header is injected and nothing changes."""
    before = await site_snapshot(acme, owner)
    for response in (
        await owner.get(f"/mfa/api/sites/acme{line_break}X-Injected:%201/members"),
        await owner.put(
            f"/mfa/api/sites/acme{line_break}X-Injected:%201/policy",
            json={"enforce": True, "grace_hours": 1},
        ),
    ):
        assert response.status_code == 404, response.text
        assert "x-injected" not in response.headers
    assert await site_snapshot(acme, owner) == before


async def test_a_site_id_cannot_forge_a_line_of_the_audit_log(
    acme: Acme, owner: httpx.AsyncClient, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="mfa_guard.audit")
    forged = "x%0dmfa_guard event=verified user=admin@acme.test method=totp ip=10.0.0.1"
    response = await owner.get(f"/mfa/api/sites/{forged}/members")
    assert response.status_code == 404, response.text
    # A control character makes no site id: refused before any lookup (and any audit line).
    lines = [r.getMessage() for r in caplog.records if r.name == "mfa_guard.audit"]
    for line in lines:
        assert "\r" not in line
        assert "\n" not in line
    # And an app's own user id with a line break is escaped by the audit sink itself.
    await LoggingEventSink().emit(
        AuditEvent(EventKind.VERIFIED, "eve\r\nmfa_guard event=verified user=admin", 0.0)
    )
    forged_line = caplog.records[-1].getMessage()
    assert "\r" not in forged_line
    assert "\n" not in forged_line
    assert 'user="eve\\r\\nmfa_guard' in forged_line


@pytest.fixture
async def postgres_acme() -> AsyncIterator[Acme]:
    """Acme in a SQL site directory on PostgreSQL, in a schema of this test's own."""
    schema = f"mfa_guard_adversarial_{uuid.uuid4().hex[:12]}"
    admin = create_async_engine(POSTGRES_URL, connect_args={"timeout": 5})
    try:
        async with admin.begin() as conn:
            await conn.execute(text(f"CREATE SCHEMA {schema}"))
    except (OSError, sa_exc.DBAPIError) as exc:
        await admin.dispose()
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"PostgreSQL is unreachable (CI=true: it must run): {exc}")
        pytest.skip(f"PostgreSQL is unreachable: {exc}")
    store = SQLStore(POSTGRES_URL, connect_args={"server_settings": {"search_path": schema}})
    try:
        directory = SQLSiteDirectory.sharing(store)
        await fill(directory)
        yield Acme(build_app(store=store, sites=directory), directory)
    finally:
        await store.close()
        async with admin.begin() as conn:
            await conn.execute(text(f"DROP SCHEMA {schema} CASCADE"))
        await admin.dispose()


@pytest.mark.postgres
@pytest.mark.parametrize("site", ["acme%00", "%00"])
async def test_a_site_id_with_a_nul_is_the_same_404_on_postgresql(
    postgres_acme: Acme, site: str
) -> None:
    transport = httpx.ASGITransport(
        app=postgres_acme.ga.app, client=("203.0.113.7", 4000), raise_app_exceptions=False
    )
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as owner:
        await arrive(postgres_acme.ga, owner, State.VERIFIED)
        await assert_no_such_site(postgres_acme, owner, site)
