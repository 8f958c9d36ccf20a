"""Sending SMS codes: the provider interface and its adapters (console, outbox, Twilio).

A provider only carries a text to a number. Which number may get a text, how often, and what the
text says are decided before it is called; the text holds a sign-in code, so no provider logs it
and no :class:`SMSError` carries it.
"""

from __future__ import annotations

import logging
import sys
from dataclasses import dataclass
from types import TracebackType
from typing import TYPE_CHECKING, Any, Protocol, Self, TextIO
from urllib.parse import quote

import anyio
from pydantic import SecretStr

from mfa_guard.clock import Clock, system_clock
from mfa_guard.errors import ConfigurationError, MFAGuardError, Reason

if TYPE_CHECKING:
    import httpx

    from mfa_guard.settings import SMSSettings

__all__ = ["ConsoleSMS", "OutboxSMS", "SMSError", "SMSProvider", "SentSMS", "TwilioSMS"]

logger = logging.getLogger("mfa_guard.sms")

# Twilio's word for a message it accepted and then gave up on, at creation already.
_TWILIO_FAILED = frozenset({"failed", "undelivered"})


class SMSError(MFAGuardError):
    """A text could not be sent. ``message`` is for the user; ``detail`` is for the operator and
    names the provider's status and error code only: never the text, never the code in it."""

    code = Reason.SMS_UNAVAILABLE.code

    def __init__(self, message: str = Reason.SMS_UNAVAILABLE.message, *, detail: str = "") -> None:
        super().__init__(message)
        self.detail = detail


class SMSProvider(Protocol):
    """Carries one text to one phone.

    ``to`` is a number in E.164 (``+33612345678``), already checked against the allow-list.
    ``text`` holds a sign-in code: the provider must not log it, store it (outside test doubles)
    or put it in an error. Returns once the provider has accepted the message; raises
    :class:`SMSError` on any failure, wrapping the provider's or the network's own exception
    (``raise SMSError(detail=...) from exc``) so callers handle one error type.
    """

    async def send(self, to: str, text: str) -> None: ...


def _masked(number: str) -> str:
    # The country code and the last two digits: enough to tell numbers apart in a console.
    if len(number) <= 6:
        return "•" * len(number)
    return number[:3] + "•" * (len(number) - 5) + number[-2:]


class ConsoleSMS:
    """Development only: writes each text (code included, so it can be typed in) to stdout."""

    def __init__(self, stream: TextIO | None = None) -> None:
        self._stream = stream

    async def send(self, to: str, text: str) -> None:
        # sys.stdout is looked up at send time so redirections made after start-up apply.
        stream = self._stream if self._stream is not None else sys.stdout
        stream.write(f"SMS to {_masked(to)}: {text}\n")
        stream.flush()


@dataclass(frozen=True, slots=True)
class SentSMS:
    """A text :class:`OutboxSMS` kept: the number it went to, the text, when it was sent."""

    to: str
    text: str
    at: float


class OutboxSMS:
    """Keeps the texts in memory, for tests and demos.

    Set ``fail_next`` to make that many next sends fail, or ``fail_with`` to make every send raise
    that error until it is set back to ``None``. A failed send is not kept.
    """

    def __init__(self, *, clock: Clock = system_clock) -> None:
        self._clock = clock
        self.messages: list[SentSMS] = []
        self.fail_next = 0
        self.fail_with: SMSError | None = None

    async def send(self, to: str, text: str) -> None:
        if self.fail_with is not None:
            raise self.fail_with
        if self.fail_next > 0:
            self.fail_next -= 1
            raise SMSError(detail="outbox simulated failure")
        self.messages.append(SentSMS(to=to, text=text, at=self._clock()))

    def last_to(self, number: str) -> SentSMS | None:
        for message in reversed(self.messages):
            if message.to == number:
                return message
        return None

    def clear(self) -> None:
        self.messages.clear()


def _require_httpx() -> None:
    try:
        import httpx  # noqa: F401
    except ImportError as exc:  # pragma: no cover - depends on the installed extras
        raise ConfigurationError("TwilioSMS needs httpx: pip install 'mfa-guard[twilio]'") from exc


class TwilioSMS:
    """Sends through Twilio's Messages API (``POST /2010-04-01/Accounts/{sid}/Messages.json``).

    Give exactly one sender: ``from_number`` (a Twilio number in E.164, or an alphanumeric sender
    ID) or ``messaging_service_sid``. A ``client`` passed in stays the caller's to close;
    otherwise :meth:`aclose` (or ``async with``) closes the one this provider opens.
    """

    def __init__(
        self,
        account_sid: str,
        auth_token: SecretStr | str,
        *,
        from_number: str | None = None,
        messaging_service_sid: str | None = None,
        base_url: str = "https://api.twilio.com",
        timeout: float = 10.0,
        client: httpx.AsyncClient | None = None,
    ) -> None:
        token = auth_token.get_secret_value() if isinstance(auth_token, SecretStr) else auth_token
        if not account_sid or not token:
            raise ConfigurationError("TwilioSMS needs an account SID and an auth token.")
        if bool(from_number) == bool(messaging_service_sid):
            raise ConfigurationError(
                "TwilioSMS needs exactly one sender: from_number or messaging_service_sid."
            )
        if not timeout > 0:
            raise ConfigurationError("TwilioSMS timeout must be a positive number of seconds.")
        _require_httpx()
        self._account_sid = account_sid
        self._auth_token = SecretStr(token)
        self._sender = (
            {"From": from_number}
            if from_number
            else {"MessagingServiceSid": str(messaging_service_sid)}
        )
        self._url = (
            f"{base_url.rstrip('/')}/2010-04-01/Accounts/{quote(account_sid, safe='')}"
            "/Messages.json"
        )
        self._timeout = timeout
        self._client = client
        self._owns_client = client is None

    async def send(self, to: str, text: str) -> None:
        import httpx

        if self._client is None:
            self._client = httpx.AsyncClient()
        try:
            # httpx times each phase; the outer deadline bounds the whole exchange.
            with anyio.fail_after(self._timeout):
                response = await self._client.post(
                    self._url,
                    data={"To": to, "Body": text, **self._sender},
                    auth=(self._account_sid, self._auth_token.get_secret_value()),
                    headers={"Accept": "application/json"},
                    timeout=self._timeout,
                )
        except (TimeoutError, httpx.TimeoutException) as exc:
            raise SMSError(detail=f"twilio timeout after {self._timeout:g}s") from exc
        except httpx.TransportError as exc:
            raise SMSError(detail=f"twilio connection error ({type(exc).__name__})") from exc
        except httpx.HTTPError as exc:  # a redirect loop, an undecodable body...
            raise SMSError(detail=f"twilio request error ({type(exc).__name__})") from exc
        body = _json_object(response)
        if not response.is_success:
            raise SMSError(
                detail=f"twilio status={response.status_code} code={_code(body.get('code'))}"
            )
        status = body.get("status")
        if status in _TWILIO_FAILED:
            raise SMSError(
                detail=f"twilio status={response.status_code} message_status={status} "
                f"code={_code(body.get('error_code'))}"
            )
        logger.debug("twilio accepted message sid=%s status=%s", body.get("sid"), status)

    async def aclose(self) -> None:
        if self._owns_client and self._client is not None:
            await self._client.aclose()
            self._client = None

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.aclose()


def provider_from_settings(settings: SMSSettings, clock: Clock = system_clock) -> SMSProvider:
    """The provider ``MFA_GUARD_SMS__PROVIDER`` names, for an app that passes none."""
    if settings.provider == "console":
        return ConsoleSMS()
    if settings.provider == "outbox":
        return OutboxSMS(clock=clock)
    if settings.provider == "twilio":
        return TwilioSMS(
            settings.twilio_account_sid or "",
            settings.twilio_auth_token or "",
            from_number=settings.twilio_from_number,
            messaging_service_sid=settings.twilio_messaging_service_sid,
        )
    raise ConfigurationError(f"Unknown SMS provider {settings.provider!r}.")


def _json_object(response: httpx.Response) -> dict[str, Any]:
    # Error pages from a proxy in front of Twilio are not JSON: the HTTP status says enough.
    try:
        body = response.json()
    except ValueError:
        return {}
    return body if isinstance(body, dict) else {}


def _code(value: object) -> str:
    # Only a number goes into the detail: whatever else the body holds stays out of the logs.
    return str(value) if isinstance(value, int) and not isinstance(value, bool) else "-"
