"""The SMS adapters: the console and the outbox, and Twilio against a fake Twilio on 127.0.0.1.

The fake checks what Twilio's Messages API checks (the account in the path, basic auth, a form
body, ``To`` in E.164, a ``Body``, a sender) and answers with Twilio's status codes and JSON error
bodies, so the adapter is tested over real HTTP, timeouts included.
"""

from __future__ import annotations

import asyncio
import base64
import io
import logging
import re
import secrets
import socket
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
import uvicorn
from pydantic import SecretStr
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from mfa_guard.errors import ConfigurationError, Reason
from mfa_guard.settings import SMSSettings
from mfa_guard.sms import (
    ConsoleSMS,
    OutboxSMS,
    SentSMS,
    SMSError,
    SMSProvider,
    TwilioSMS,
    provider_from_settings,
)

PHONE = "+33612345678"
CODE = "493817"
TEXT = f"Your sign-in code is {CODE}. It expires in 10 minutes."
USER_MESSAGE = "The text message could not be sent. Try again later or use your authenticator app."
ACCOUNT_SID = "AC" + "0123456789abcdef" * 2
AUTH_TOKEN = "twilio-auth-token-for-tests"
FROM_NUMBER = "+15005550006"
MESSAGING_SERVICE_SID = "MG" + "fedcba9876543210" * 2
HANG_TIMEOUT = 0.5
_E164 = re.compile(r"\+[1-9][0-9]{1,14}")


# --- The console and the outbox ---------------------------------------------------------------


async def test_the_console_shows_the_text_and_masks_the_number() -> None:
    stream = io.StringIO()
    await ConsoleSMS(stream).send(PHONE, TEXT)
    assert stream.getvalue() == f"SMS to +33•••••••78: {TEXT}\n"


async def test_the_console_writes_to_stdout_by_default(capsys: pytest.CaptureFixture[str]) -> None:
    await ConsoleSMS().send(PHONE, TEXT)
    out = capsys.readouterr().out
    assert CODE in out
    assert PHONE not in out


async def test_the_outbox_keeps_each_text_with_its_time() -> None:
    now = 1_800_000_000.0
    outbox = OutboxSMS(clock=lambda: now)
    await outbox.send(PHONE, "first")
    await outbox.send("+447700900123", "other")
    await outbox.send(PHONE, TEXT)
    assert outbox.last_to(PHONE) == SentSMS(to=PHONE, text=TEXT, at=now)
    assert outbox.last_to("+14155550100") is None
    assert [m.text for m in outbox.messages] == ["first", "other", TEXT]
    outbox.clear()
    assert outbox.messages == []
    assert outbox.last_to(PHONE) is None


async def test_the_outbox_fails_the_next_sends_it_is_told_to() -> None:
    outbox = OutboxSMS()
    outbox.fail_next = 2
    for _ in range(2):
        with pytest.raises(SMSError) as caught:
            await outbox.send(PHONE, TEXT)
        assert str(caught.value) == USER_MESSAGE
    await outbox.send(PHONE, TEXT)
    assert [m.text for m in outbox.messages] == [TEXT]


async def test_the_outbox_raises_the_given_error_until_it_is_cleared() -> None:
    outbox = OutboxSMS()
    outbox.fail_with = SMSError(detail="carrier down")
    for _ in range(3):
        with pytest.raises(SMSError, match="could not be sent") as caught:
            await outbox.send(PHONE, TEXT)
        assert caught.value is outbox.fail_with
    outbox.fail_with = None
    await outbox.send(PHONE, TEXT)
    assert outbox.messages[-1].text == TEXT


def test_an_sms_error_tells_the_user_what_to_do_and_the_operator_why() -> None:
    error = SMSError(detail="twilio status=429 code=20429")
    assert error.code == Reason.SMS_UNAVAILABLE.code == "sms_unavailable"
    assert Reason.SMS_UNAVAILABLE.status == 503
    assert error.message == str(error) == USER_MESSAGE
    assert "20429" not in str(error)
    assert error.detail == "twilio status=429 code=20429"


# --- A fake Twilio ------------------------------------------------------------------------------


@dataclass
class ReceivedMessage:
    account_sid: str
    auth: tuple[str, str] | None
    content_type: str
    form: dict[str, str]


def twilio_error(status: int, code: int, message: str) -> JSONResponse:
    more_info = f"https://www.twilio.com/docs/errors/{code}"
    body = {"code": code, "message": message, "more_info": more_info, "status": status}
    return JSONResponse(body, status_code=status)


def basic_auth(request: Request) -> tuple[str, str] | None:
    scheme, _, encoded = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "basic":
        return None
    user, sep, password = base64.b64decode(encoded).decode().partition(":")
    return (user, password) if sep else None


@dataclass
class FakeTwilio:
    """``mode`` picks the answer to a valid request: ``queued`` (201), ``failed`` (201 with a
    failed message), ``error`` (500), ``rate_limited`` (429), ``gateway`` (502, not JSON) or
    ``hang`` (no answer until the test ends)."""

    base_url: str = ""
    mode: str = "queued"
    received: list[ReceivedMessage] = field(default_factory=list)
    release: asyncio.Event = field(default_factory=asyncio.Event)

    async def create_message(self, request: Request) -> Response:
        account_sid = request.path_params["account_sid"]
        auth = basic_auth(request)
        content_type = request.headers.get("content-type", "")
        form: dict[str, str] = {}
        if content_type.startswith("application/x-www-form-urlencoded"):
            async with request.form() as parsed:
                form = {key: str(value) for key, value in parsed.items()}
        self.received.append(ReceivedMessage(account_sid, auth, content_type, form))

        if auth != (ACCOUNT_SID, AUTH_TOKEN):
            return twilio_error(401, 20003, "Authenticate")
        if account_sid != ACCOUNT_SID:
            return twilio_error(404, 20404, "The requested resource was not found")
        # Twilio reads form fields only: a JSON body looks like a request without a 'To'.
        if not form.get("To"):
            return twilio_error(400, 21604, "A 'To' phone number is required.")
        if not _E164.fullmatch(form["To"]):
            return twilio_error(400, 21211, f"Invalid 'To' Phone Number: {form['To'][:3]}XXXXXXXX")
        if not form.get("Body"):
            return twilio_error(400, 21602, "Message body is required.")
        # Twilio takes a messaging service "instead of or in addition to" a From.
        if not (form.get("From") or form.get("MessagingServiceSid")):
            return twilio_error(400, 21603, "A 'From' or 'MessagingServiceSid' is required.")

        if self.mode == "hang":
            await self.release.wait()
        if self.mode == "error":
            return twilio_error(500, 20500, "An internal server error has occurred")
        if self.mode == "rate_limited":
            return twilio_error(429, 20429, "Too Many Requests")
        if self.mode == "gateway":
            return PlainTextResponse("<html>502 Bad Gateway</html>", status_code=502)
        failed = self.mode == "failed"
        # Like Twilio, the answer repeats the body, code included.
        message = {
            "sid": "SM" + secrets.token_hex(16),
            "account_sid": account_sid,
            "to": form["To"],
            "from": form.get("From"),
            "messaging_service_sid": form.get("MessagingServiceSid"),
            "body": form["Body"],
            "status": "failed" if failed else "queued",
            "direction": "outbound-api",
            "num_segments": "1",
            "error_code": 30008 if failed else None,
            "error_message": "Unknown error" if failed else None,
        }
        return JSONResponse(message, status_code=201)

    def app(self) -> Starlette:
        route = Route(
            "/2010-04-01/Accounts/{account_sid}/Messages.json",
            self.create_message,
            methods=["POST"],
        )
        return Starlette(routes=[route])


@pytest.fixture
async def twilio() -> AsyncIterator[FakeTwilio]:
    fake = FakeTwilio()
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    fake.base_url = f"http://127.0.0.1:{sock.getsockname()[1]}"
    config = uvicorn.Config(
        fake.app(), log_config=None, lifespan="off", timeout_graceful_shutdown=2
    )
    server = uvicorn.Server(config)
    serving = asyncio.create_task(server.serve(sockets=[sock]))
    try:
        while not server.started:
            if serving.done():
                serving.result()  # start-up failed: raise its error here
            await asyncio.sleep(0)
        yield fake
    finally:
        fake.release.set()
        server.should_exit = True
        await asyncio.wait_for(serving, timeout=5)
        sock.close()


def twilio_sms(fake: FakeTwilio, **options: Any) -> TwilioSMS:
    options.setdefault("from_number", FROM_NUMBER)
    token = options.pop("auth_token", AUTH_TOKEN)
    return TwilioSMS(ACCOUNT_SID, token, base_url=fake.base_url, **options)


def assert_nothing_leaked(error: SMSError, caplog: pytest.LogCaptureFixture) -> None:
    assert str(error) == USER_MESSAGE
    for told in (str(error), repr(error), error.detail, caplog.text):
        assert CODE not in told
        assert TEXT not in told
        assert AUTH_TOKEN not in told


# --- Twilio -------------------------------------------------------------------------------------


async def test_a_text_goes_to_twilio_as_a_form_with_basic_auth(
    twilio: FakeTwilio, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    async with twilio_sms(twilio, auth_token=SecretStr(AUTH_TOKEN)) as provider:
        await provider.send(PHONE, TEXT)
    [received] = twilio.received
    assert received.account_sid == ACCOUNT_SID
    assert received.auth == (ACCOUNT_SID, AUTH_TOKEN)
    assert received.content_type == "application/x-www-form-urlencoded"
    assert received.form == {"To": PHONE, "Body": TEXT, "From": FROM_NUMBER}
    assert any(record.name == "httpx" for record in caplog.records)  # the capture works
    assert CODE not in caplog.text


async def test_a_messaging_service_replaces_the_sender_number(twilio: FakeTwilio) -> None:
    async with twilio_sms(
        twilio, from_number=None, messaging_service_sid=MESSAGING_SERVICE_SID
    ) as provider:
        await provider.send(PHONE, TEXT)
        await provider.send(PHONE, TEXT)  # the same client serves the next text
    assert [r.form for r in twilio.received] == 2 * [
        {"To": PHONE, "Body": TEXT, "MessagingServiceSid": MESSAGING_SERVICE_SID}
    ]


@pytest.mark.parametrize(
    ("mode", "auth_token", "to", "text", "detail"),
    [
        pytest.param("queued", "wrong-token", PHONE, TEXT, "twilio status=401 code=20003",
                     id="wrong auth token"),
        pytest.param("queued", AUTH_TOKEN, "0612345678", TEXT, "twilio status=400 code=21211",
                     id="number not in E.164"),
        pytest.param("queued", AUTH_TOKEN, PHONE, "", "twilio status=400 code=21602",
                     id="empty text"),
        pytest.param("rate_limited", AUTH_TOKEN, PHONE, TEXT, "twilio status=429 code=20429",
                     id="too many requests"),
        pytest.param("error", AUTH_TOKEN, PHONE, TEXT, "twilio status=500 code=20500",
                     id="twilio error"),
        pytest.param("gateway", AUTH_TOKEN, PHONE, TEXT, "twilio status=502 code=-",
                     id="gateway page that is not JSON"),
        pytest.param("failed", AUTH_TOKEN, PHONE, TEXT,
                     "twilio status=201 message_status=failed code=30008",
                     id="accepted then failed"),
    ],
)  # fmt: skip
async def test_each_twilio_refusal_is_an_sms_error_without_the_code(
    twilio: FakeTwilio,
    caplog: pytest.LogCaptureFixture,
    mode: str,
    auth_token: str,
    to: str,
    text: str,
    detail: str,
) -> None:
    caplog.set_level(logging.DEBUG)
    twilio.mode = mode
    async with twilio_sms(twilio, auth_token=auth_token) as provider:
        with pytest.raises(SMSError) as caught:
            await provider.send(to, text)
    assert caught.value.detail == detail
    assert len(twilio.received) == 1
    assert_nothing_leaked(caught.value, caplog)


async def test_a_twilio_that_does_not_answer_fails_within_the_timeout(
    twilio: FakeTwilio, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    twilio.mode = "hang"
    async with twilio_sms(twilio, timeout=HANG_TIMEOUT) as provider:
        started = time.monotonic()
        with pytest.raises(SMSError) as caught:
            await provider.send(PHONE, TEXT)
        elapsed = time.monotonic() - started
    assert HANG_TIMEOUT <= elapsed < HANG_TIMEOUT + 1.0
    assert caught.value.detail == "twilio timeout after 0.5s"
    assert caught.value.__cause__ is not None
    assert_nothing_leaked(caught.value, caplog)


async def test_an_unreachable_twilio_is_an_sms_error(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    with socket.socket() as closed:  # a port nothing listens on once the socket is closed
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
    base_url = f"http://127.0.0.1:{port}"
    async with TwilioSMS(
        ACCOUNT_SID, AUTH_TOKEN, from_number=FROM_NUMBER, base_url=base_url
    ) as provider:
        with pytest.raises(SMSError) as caught:
            await provider.send(PHONE, TEXT)
    assert caught.value.detail == "twilio connection error (ConnectError)"
    assert isinstance(caught.value.__cause__, httpx.ConnectError)
    assert_nothing_leaked(caught.value, caplog)


async def test_a_client_passed_in_stays_open_for_its_owner(twilio: FakeTwilio) -> None:
    async with httpx.AsyncClient() as client:
        provider = twilio_sms(twilio, client=client)
        await provider.send(PHONE, TEXT)
        await provider.aclose()
        assert not client.is_closed
        await provider.send(PHONE, TEXT)
    assert len(twilio.received) == 2


@pytest.mark.parametrize(
    "options",
    [
        pytest.param({"from_number": None}, id="no sender"),
        pytest.param({"messaging_service_sid": MESSAGING_SERVICE_SID}, id="two senders"),
        pytest.param({"auth_token": ""}, id="no auth token"),
        pytest.param({"auth_token": SecretStr("")}, id="empty secret auth token"),
        pytest.param({"timeout": 0}, id="no time to answer"),
    ],
)
def test_a_twilio_provider_that_cannot_work_is_refused_at_start_up(
    options: dict[str, Any],
) -> None:
    options = {"from_number": FROM_NUMBER, "auth_token": AUTH_TOKEN, **options}
    token = options.pop("auth_token")
    with pytest.raises(ConfigurationError, match="TwilioSMS"):
        TwilioSMS(ACCOUNT_SID, token, **options)


def test_a_twilio_provider_needs_an_account_sid() -> None:
    with pytest.raises(ConfigurationError, match="account SID"):
        TwilioSMS("", AUTH_TOKEN, from_number=FROM_NUMBER)


def test_every_adapter_is_an_sms_provider() -> None:
    providers: list[SMSProvider] = [
        ConsoleSMS(io.StringIO()),
        OutboxSMS(),
        TwilioSMS(ACCOUNT_SID, AUTH_TOKEN, from_number=FROM_NUMBER),
    ]
    assert len(providers) == 3


async def test_the_settings_name_the_provider() -> None:
    assert isinstance(provider_from_settings(SMSSettings(provider="console")), ConsoleSMS)
    outbox = provider_from_settings(SMSSettings(provider="outbox"), clock=lambda: 42.0)
    assert isinstance(outbox, OutboxSMS)
    await outbox.send(PHONE, TEXT)
    assert outbox.last_to(PHONE) == SentSMS(to=PHONE, text=TEXT, at=42.0)
    twilio = SMSSettings(
        provider="twilio",
        twilio_account_sid=ACCOUNT_SID,
        twilio_auth_token=SecretStr(AUTH_TOKEN),
        twilio_messaging_service_sid=MESSAGING_SERVICE_SID,
    )
    assert isinstance(provider_from_settings(twilio), TwilioSMS)


# --- The fake keeps Twilio's rules --------------------------------------------------------------


AUTH = (ACCOUNT_SID, AUTH_TOKEN)
FORM = {"To": PHONE, "Body": TEXT, "From": FROM_NUMBER}


@pytest.mark.parametrize(
    ("account_sid", "request_options", "status", "code"),
    [
        pytest.param(ACCOUNT_SID, {"auth": AUTH, "json": FORM}, 400, 21604,
                     id="JSON instead of a form"),
        pytest.param(ACCOUNT_SID, {"auth": AUTH, "data": {"To": PHONE, "Body": TEXT}}, 400, 21603,
                     id="no sender"),
        pytest.param(ACCOUNT_SID, {"data": FORM}, 401, 20003, id="no credentials"),
        pytest.param("AC" + "f" * 32, {"auth": AUTH, "data": FORM}, 404, 20404,
                     id="another account"),
        pytest.param(ACCOUNT_SID,
                     {"auth": AUTH, "data": {**FORM, "MessagingServiceSid": MESSAGING_SERVICE_SID}},
                     201, None, id="both senders"),
    ],
)  # fmt: skip
async def test_the_fake_answers_as_twilio_does(
    twilio: FakeTwilio,
    account_sid: str,
    request_options: dict[str, Any],
    status: int,
    code: int | None,
) -> None:
    url = f"{twilio.base_url}/2010-04-01/Accounts/{account_sid}/Messages.json"
    async with httpx.AsyncClient() as client:
        response = await client.post(url, **request_options)
    assert response.status_code == status
    body = response.json()
    if code is None:
        assert body["status"] == "queued"
        assert body["sid"].startswith("SM")
    else:
        assert body == {
            "code": code,
            "message": body["message"],
            "more_info": f"https://www.twilio.com/docs/errors/{code}",
            "status": status,
        }
