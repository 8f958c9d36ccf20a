"""SMS as the tests turn it on, a guarded app that sends its texts to an outbox the test reads,
the code a text carries, and an owner's story with a verified mobile number."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import httpx

from mfa_guard import Metrics, MFAStore
from mfa_guard.sms import OutboxSMS
from tests.apps import GuardedApp, build_app, enrol, sign_in
from tests.scenarios import USER

PEER = "203.0.113.7"
MOBILE = "+33612345678"
# On for France and the United Kingdom; the resend cooldown runs on the real clock of `limits`:
# widened so a test sends in a burst and never waits.
SMS = {
    "enabled": True,
    "provider": "outbox",
    "allowed_regions": ["FR", "GB"],
    "resend_cooldown": "100/second",
}
CODE = re.compile(r"\b\d{6}\b")
TEXTED_CODE = re.compile(r"\b(\d{6}) is your ")


@dataclass
class SMSApp:
    """A guarded app that sends texts to an outbox the test reads."""

    ga: GuardedApp
    outbox: OutboxSMS

    def client(self, ip: str = PEER, **kwargs: Any) -> httpx.AsyncClient:
        return httpx.AsyncClient(
            transport=httpx.ASGITransport(app=self.ga.app, client=(ip, 4000)),
            base_url="http://testserver",
            **kwargs,
        )

    def sent(self) -> int:
        return len(self.outbox.messages)

    def codes(self) -> list[str]:
        """The code of each text sent, oldest first."""
        found = [CODE.search(message.text) for message in self.outbox.messages]
        assert all(found), [message.text for message in self.outbox.messages]
        return [match.group() for match in found if match is not None]

    def last_code(self) -> str:
        return self.codes()[-1]


def build_sms_app(
    store: MFAStore | None = None,
    *,
    settings: dict[str, Any] | None = None,
    metrics: Metrics | None = None,
    **sms: Any,
) -> SMSApp:
    """An app with ``SMS`` settings, ``sms`` overriding any of them."""
    outbox = OutboxSMS()
    sms_settings = {**SMS, **sms}
    ga = build_app(
        store, sms_provider=outbox, metrics=metrics, **{"sms": sms_settings, **(settings or {})}
    )
    return SMSApp(ga, outbox)


def texted_code(outbox: OutboxSMS, to: str | None = None) -> str:
    """The code of the last text sent (to ``to``, if given)."""
    if to is None:
        assert outbox.messages, "a text was sent"
        message = outbox.messages[-1]
    else:
        last = outbox.last_to(to)
        assert last is not None, f"a text went to {to}"
        message = last
    match = TEXTED_CODE.search(message.text)
    assert match is not None, message.text
    return match.group(1)


async def owner_with_phone(app: SMSApp, owner: httpx.AsyncClient) -> str:
    """The owner enrols, verifies their mobile number; returns the TOTP secret."""
    await sign_in(owner, USER)
    secret, _ = await enrol(app.ga, owner)
    assert (await owner.post("/mfa/api/phone", json={"phone": MOBILE})).status_code == 202
    verified = await owner.post(
        "/mfa/api/phone/verify", json={"code": texted_code(app.outbox, MOBILE)}
    )
    assert verified.status_code == 200, verified.text
    return secret


async def verified_by_app(app: SMSApp, client: httpx.AsyncClient, secret: str) -> None:
    """Signs ``client`` in as the owner and through the challenge with the next TOTP code."""
    await sign_in(client, USER)
    app.ga.clock.advance(30)
    verified = await client.post("/mfa/api/verify", json={"code": app.ga.code(secret)})
    assert verified.status_code == 200, verified.text


async def verified_by_text(app: SMSApp, client: httpx.AsyncClient) -> None:
    """Signs ``client`` in as the owner and through the challenge with a texted code."""
    await sign_in(client, USER)
    assert (await client.post("/mfa/api/sms/send", json={})).status_code == 202
    verified = await client.post(
        "/mfa/api/verify", json={"method": "sms", "code": texted_code(app.outbox, MOBILE)}
    )
    assert verified.status_code == 200, verified.text
