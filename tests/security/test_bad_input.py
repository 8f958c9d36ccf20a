"""SECURITY.md checklist item 1: bad input to every endpoint is a 4xx with a message, never a 500,
and it changes nothing: no enrolment, no audit event, no failed attempt counted."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

import httpx
import pytest

from mfa_guard.events import EventKind
from tests.apps import GuardedApp, build_app

# The shared helpers' asserts explain a failure as this module's own do.
from tests.scenarios import (
    USER,
    State,
    arrive,
    assert_json_error,
    assert_refused_page,
    page_token,
    snapshot,
)

FULL_WIDTH_DIGITS = "１２３４５６"  # noqa: RUF001 (they are the point)
# Stands for the session's CSRF token in a form body; urlencode leaves it as it is.
TOKEN_PLACEHOLDER = "CSRF_TOKEN_PLACEHOLDER"
# The states a request comes in: signed out, an authenticator set-up started and not confirmed,
# enrolled without the second factor, and past it.
SCENARIO_STATES = (State.SIGNED_OUT, State.PENDING, State.CHALLENGED, State.VERIFIED)


@pytest.fixture
def guarded() -> GuardedApp:
    # One failed attempt locks the account: a malformed request counted as a failure would make
    # the correct code at the end of a scenario fail.
    return build_app(rate_limits={"failures": "1/minute;100/day"})


async def assert_no_failure_was_counted(
    guarded: GuardedApp, client: httpx.AsyncClient, state: State, secret: str
) -> None:
    assert EventKind.VERIFICATION_FAILED not in guarded.events.kinds()
    assert EventKind.LOCKED_OUT not in guarded.events.kinds()
    if state is State.SIGNED_OUT:
        return
    if state in (State.SIGNED_IN, State.PENDING):
        # Nothing to verify yet: the one attempt the limit allows must still be free.
        assert await guarded.guard.limiter.acquire(USER, guarded.clock()) is None
        return
    guarded.clock.advance(30)
    response = await client.post("/mfa/api/verify", json={"code": guarded.code(secret)})
    assert response.status_code == 200, response.text


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


TEN_KB_JSON = as_json({"code": "123456", "padding": "x" * 10_240})

# Refused by every POST endpoint before it looks at a field: (body, status, error code).
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
    pytest.param(Body(b'"123456"'), 400, "invalid_json", id="json-string"),
    pytest.param(Body(b'{"code": "123\x00456"}'), 400, "invalid_json", id="raw-nul-byte"),
    pytest.param(Body(b'{"code": "\xff\xfe"}'), 400, "invalid_json", id="invalid-utf8"),
    # Too deep for the parser, or else parsed into a list: invalid either way.
    pytest.param(Body(b"[" * 2000 + b"]" * 2000), 400, "invalid_json", id="deeply-nested"),
]

# JSON objects whose fields are wrong: refused by every endpoint that reads a code. None carries
# a well-formed code, so none may count as a failed attempt.
BAD_FIELDS = [
    pytest.param(Body(b""), id="empty-body"),
    pytest.param(Body(b"{}"), id="empty-object"),
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
    pytest.param(Body(b'{"code": ' + b"[" * 1900 + b"]" * 1900 + b"}"), id="deeply-nested-code"),
    pytest.param(Body(as_json({"method": "sms", "code": "12345"})), id="unknown-method"),
    pytest.param(Body(as_json({"method": 5, "code": "12345"})), id="number-method"),
    pytest.param(Body(as_json({"method": "recovery", "code": "abcd"})), id="short-recovery"),
]

# An endpoint without fields ignores them; these stand for the rest (each answer costs a QR code
# or a fresh set of scrypt-hashed recovery codes).
IGNORED_FIELDS = [
    p for p in BAD_FIELDS if p.id in ("empty-body", "letters", "number-not-string", "list-code")
]
ENVELOPE_BODIES = [pytest.param(p.values[0], id=p.id) for p in BAD_ENVELOPES]
STATES = [pytest.param(state, id=state.value) for state in SCENARIO_STATES]
CODE_ENDPOINTS = ["/mfa/api/totp/confirm", "/mfa/api/verify", "/mfa/api/disable"]
FIELDLESS_ENDPOINTS = ["/mfa/api/totp/setup", "/mfa/api/recovery-codes"]

# What an endpoint that reads no field answers to ``{}`` in each state.
ANSWER_TO_AN_EMPTY_OBJECT = {
    ("/mfa/api/totp/setup", State.SIGNED_OUT): 401,
    ("/mfa/api/totp/setup", State.PENDING): 200,
    ("/mfa/api/totp/setup", State.CHALLENGED): 409,
    ("/mfa/api/totp/setup", State.VERIFIED): 409,
    ("/mfa/api/recovery-codes", State.SIGNED_OUT): 401,
    ("/mfa/api/recovery-codes", State.PENDING): 409,
    ("/mfa/api/recovery-codes", State.CHALLENGED): 401,
    ("/mfa/api/recovery-codes", State.VERIFIED): 200,
}


# -- JSON API -------------------------------------------------------------------------------


@pytest.mark.parametrize("body", BAD_FIELDS)
@pytest.mark.parametrize("state", STATES)
@pytest.mark.parametrize("path", CODE_ENDPOINTS)
async def test_a_code_endpoint_refuses_a_bad_field_and_changes_nothing(
    guarded: GuardedApp, client: httpx.AsyncClient, path: str, state: State, body: Body
) -> None:
    secret = await arrive(guarded, client, state)
    before = await snapshot(guarded, client)
    assert_json_error(await client.post(path, **body.request()))
    assert await snapshot(guarded, client) == before
    await assert_no_failure_was_counted(guarded, client, state, secret)


@pytest.mark.parametrize(("body", "status_code", "code"), BAD_ENVELOPES)
@pytest.mark.parametrize("state", STATES)
@pytest.mark.parametrize("path", [*CODE_ENDPOINTS, *FIELDLESS_ENDPOINTS])
async def test_a_body_that_is_not_a_small_json_object_is_refused_with_its_reason(
    guarded: GuardedApp,
    client: httpx.AsyncClient,
    path: str,
    state: State,
    body: Body,
    status_code: int,
    code: str,
) -> None:
    secret = await arrive(guarded, client, state)
    before = await snapshot(guarded, client)
    response = await client.post(path, **body.request())
    if state is State.SIGNED_OUT:
        status_code, code = 401, "not_authenticated"
    assert assert_json_error(response) == code
    assert response.status_code == status_code
    assert await snapshot(guarded, client) == before
    await assert_no_failure_was_counted(guarded, client, state, secret)


@pytest.mark.parametrize("body", IGNORED_FIELDS)
@pytest.mark.parametrize("state", STATES)
@pytest.mark.parametrize("path", FIELDLESS_ENDPOINTS)
async def test_an_endpoint_without_fields_answers_any_json_object_as_it_answers_an_empty_one(
    guarded: GuardedApp, client: httpx.AsyncClient, path: str, state: State, body: Body
) -> None:
    await arrive(guarded, client, state)
    before = await snapshot(guarded, client)
    response = await client.post(path, **body.request())
    assert response.status_code == ANSWER_TO_AN_EMPTY_OBJECT[path, state], response.text
    if response.status_code >= 400:
        assert_json_error(response)
        assert await snapshot(guarded, client) == before


@pytest.mark.parametrize("body", [*ENVELOPE_BODIES, *BAD_FIELDS])
@pytest.mark.parametrize("state", STATES)
async def test_the_status_endpoint_ignores_whatever_body_comes_with_the_get(
    guarded: GuardedApp, client: httpx.AsyncClient, state: State, body: Body
) -> None:
    await arrive(guarded, client, state)
    before = await snapshot(guarded, client)
    response = await client.request("GET", "/mfa/api/status", **body.request())
    if state is State.SIGNED_OUT:
        assert assert_json_error(response) == "not_authenticated"
        assert response.status_code == 401
    else:
        assert response.status_code == 200
        assert response.json()["authenticated"] is True
    assert await snapshot(guarded, client) == before


async def test_a_flood_of_malformed_codes_does_not_lock_the_owner_out(
    guarded: GuardedApp, client: httpx.AsyncClient
) -> None:
    secret = await arrive(guarded, client, State.CHALLENGED)
    for param in [*ENVELOPE_BODIES, *BAD_FIELDS] * 3:
        body = param.values[0]
        assert isinstance(body, Body)
        assert_json_error(await client.post("/mfa/api/verify", **body.request()))
    guarded.clock.advance(30)
    response = await client.post("/mfa/api/verify", json={"code": guarded.code(secret)})
    assert response.status_code == 200, response.text
    assert EventKind.VERIFICATION_FAILED not in guarded.events.kinds()
    assert EventKind.LOCKED_OUT not in guarded.events.kinds()


@pytest.mark.parametrize("method", ["fax", "TOTP", "", 5, None, ["totp"]])
@pytest.mark.parametrize("path", ["/mfa/api/verify", "/mfa/api/disable"])
async def test_an_unknown_method_is_refused_even_with_a_correct_code(
    guarded: GuardedApp, client: httpx.AsyncClient, path: str, method: object
) -> None:
    secret = await arrive(guarded, client, State.VERIFIED)
    guarded.clock.advance(30)
    code = guarded.code(secret)
    before = await snapshot(guarded, client)
    response = await client.post(path, json={"method": method, "code": code})
    assert assert_json_error(response) in ("invalid_method", "invalid_input")
    assert response.status_code == 400
    assert await snapshot(guarded, client) == before
    # The step was not spent: the same code still works.
    response = await client.post("/mfa/api/verify", json={"code": code})
    assert response.status_code == 200, response.text


@pytest.mark.parametrize(
    "content_length", [b"\xb2", b"9" * 5000], ids=["superscript-two", "five-thousand-digits"]
)
@pytest.mark.parametrize(
    ("path", "content_type"),
    [
        ("/mfa/api/verify", "application/json"),
        ("/mfa/challenge", "application/x-www-form-urlencoded"),
    ],
)
async def test_a_content_length_that_is_no_number_is_refused(
    guarded: GuardedApp, path: str, content_type: str, content_length: bytes
) -> None:
    transport = httpx.ASGITransport(app=guarded.app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
        await arrive(guarded, client, State.CHALLENGED)
        response = await client.post(
            path,
            content=b'{"code": "123456"}',
            headers={b"content-type": content_type.encode(), b"content-length": content_length},
        )
    assert 400 <= response.status_code < 500, (response.status_code, response.text)


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/mfa/api/verify"),
        ("PUT", "/mfa/api/disable"),
        ("POST", "/mfa/api/status"),
        ("POST", "/mfa/api/sms/receive"),
    ],
)
async def test_a_wrong_method_or_path_under_the_api_answers_a_json_error(
    guarded: GuardedApp, client: httpx.AsyncClient, method: str, path: str
) -> None:
    await arrive(guarded, client, State.VERIFIED)
    response = await client.request(method, path, json={"code": "123456"})
    assert response.status_code in (404, 405)
    assert_json_error(response)


# -- HTML forms -----------------------------------------------------------------------------


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

# (form, status): refused before any field is read.
BAD_FORM_ENVELOPES = [
    pytest.param(Form(form(code="123456", pad="x" * 10_240)), 413, id="ten-kb-form"),
    pytest.param(
        Form(form(code="123456", pad="x" * 10_240), streamed=True), 400, id="ten-kb-streamed"
    ),
    pytest.param(
        Form(json.dumps({"csrf_token": TOKEN_PLACEHOLDER, "code": "123456"}), "application/json"),
        415,
        id="json-content-type",
    ),
    pytest.param(Form(form(code="123456"), "text/plain"), 415, id="text-plain"),
    pytest.param(Form(form(code="123456"), None), 415, id="no-content-type"),
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

CODE_FORMS = [
    pytest.param("/mfa/challenge", State.CHALLENGED, id="challenge"),
    pytest.param("/mfa/enrol/confirm", State.PENDING, id="enrol-confirm"),
    pytest.param("/mfa/settings/disable", State.VERIFIED, id="settings-disable"),
]
ALL_FORMS = [
    *CODE_FORMS,
    pytest.param("/mfa/enrol", State.PENDING, id="enrol"),
    pytest.param("/mfa/settings/recovery-codes", State.VERIFIED, id="settings-recovery-codes"),
]


@pytest.mark.parametrize("bad", BAD_FORM_CODES)
@pytest.mark.parametrize(("path", "state"), CODE_FORMS)
async def test_a_form_with_a_bad_code_is_shown_again_with_a_message(
    guarded: GuardedApp, client: httpx.AsyncClient, path: str, state: State, bad: Form
) -> None:
    secret = await arrive(guarded, client, state)
    token = await page_token(client, state)
    before = await snapshot(guarded, client)
    response = await client.post(path, **bad.request(token))
    assert_refused_page(response, 422)
    assert 'aria-invalid="true"' in response.text
    assert await snapshot(guarded, client) == before
    await assert_no_failure_was_counted(guarded, client, state, secret)


@pytest.mark.parametrize(("bad", "status_code"), BAD_FORM_ENVELOPES)
@pytest.mark.parametrize(("path", "state"), ALL_FORMS)
async def test_a_form_that_cannot_be_read_is_refused_with_a_message(
    guarded: GuardedApp,
    client: httpx.AsyncClient,
    path: str,
    state: State,
    bad: Form,
    status_code: int,
) -> None:
    secret = await arrive(guarded, client, state)
    token = await page_token(client, state)
    before = await snapshot(guarded, client)
    assert_refused_page(await client.post(path, **bad.request(token)), status_code)
    assert await snapshot(guarded, client) == before
    await assert_no_failure_was_counted(guarded, client, state, secret)
