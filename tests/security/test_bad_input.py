"""Checklist item 1: bad input to every endpoint is a 4xx with a message, never a 500,
and it changes nothing: no enrolment, no audit event, no failed attempt counted. Here the JSON
API's code endpoints and the forms; the SMS endpoints in test_bad_input_sms.py, the site
endpoints in test_bad_input_sites.py, the tables they share in tests/bad_input.py."""

from __future__ import annotations

import httpx
import pytest

from mfa_guard.events import EventKind
from tests.apps import GuardedApp, build_app
from tests.bad_input import (
    BAD_CODES,
    BAD_ENVELOPES,
    BAD_FORM_CODES,
    BAD_FORM_ENVELOPES,
    ENVELOPE_BODIES,
    Body,
    Form,
    as_json,
)

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


# Fields of the endpoints that take a method, wrong beside a code: none may count as an attempt.
BAD_METHODS = [
    pytest.param(Body(as_json({"method": "sms", "code": "12345"})), id="unknown-method"),
    pytest.param(Body(as_json({"method": 5, "code": "12345"})), id="number-method"),
    pytest.param(Body(as_json({"method": "recovery", "code": "abcd"})), id="short-recovery"),
]
BAD_FIELDS = [*BAD_CODES, *BAD_METHODS]

# An endpoint without fields ignores them; these stand for the rest (each answer costs a QR code
# or a fresh set of scrypt-hashed recovery codes).
IGNORED_FIELDS = [
    p for p in BAD_FIELDS if p.id in ("empty-body", "letters", "number-not-string", "list-code")
]
STATES = [pytest.param(state, id=state.value) for state in SCENARIO_STATES]
CODE_ENDPOINTS = ["/mfa/api/totp/confirm", "/mfa/api/verify", "/mfa/api/disable"]
FIELDLESS_ENDPOINTS = ["/mfa/api/totp/setup", "/mfa/api/recovery-codes"]

# What an endpoint that reads no field answers to ``{}`` in each state.
ANSWER_TO_AN_EMPTY_OBJECT = {
    ("/mfa/api/totp/setup", State.SIGNED_OUT): 401,
    ("/mfa/api/totp/setup", State.PENDING): 200,
    ("/mfa/api/totp/setup", State.CHALLENGED): 401,
    ("/mfa/api/totp/setup", State.VERIFIED): 200,
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
