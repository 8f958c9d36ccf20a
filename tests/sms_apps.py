"""SMS as the tests turn it on, and a guarded app that sends its texts to an outbox the test
reads."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import httpx

from mfa_guard import MFAStore
from mfa_guard.sms import OutboxSMS
from tests.apps import GuardedApp, build_app

PEER = "203.0.113.7"
# On for France and the United Kingdom; the resend cooldown runs on the real clock of `limits`:
# widened so a test sends in a burst and never waits.
SMS = {
    "enabled": True,
    "provider": "outbox",
    "allowed_regions": ["FR", "GB"],
    "resend_cooldown": "100/second",
}
CODE = re.compile(r"\b\d{6}\b")


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
    store: MFAStore | None = None, *, settings: dict[str, Any] | None = None, **sms: Any
) -> SMSApp:
    """An app with ``SMS`` settings, ``sms`` overriding any of them."""
    outbox = OutboxSMS()
    sms_settings = {**SMS, **sms}
    ga = build_app(store, sms_provider=outbox, **{"sms": sms_settings, **(settings or {})})
    return SMSApp(ga, outbox)
