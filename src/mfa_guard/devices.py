"""Trusted devices: "remember this browser for N days", off by default.

After a second factor the user may ask the kit to remember the browser. The browser then holds a
random token (256 bits) in its own ``HttpOnly`` cookie; the server keeps the token's SHA-256 with
a name, the User-Agent (the pages name the browser from it in the reader's language), when it
was remembered and last used, when it expires and the user's epoch. A session of that user in
that browser which would be sent to the challenge is verified by the device instead (one store
round trip, only then: never on the hot path), and a session verified that way checks its device
again at every re-check, so forgetting a device ends its sessions within ``recheck_seconds``.
Any factor change, admin reset or "sign out my other sessions" bumps the epoch, which forgets
every device at once. A device never counts as a *recent* second factor: step-up
(new recovery codes, a new phone, a site policy change, ``require_recent_mfa``) still asks for a
code.
"""

from __future__ import annotations

import functools
import hashlib
import re
import secrets
from collections.abc import Iterable
from dataclasses import dataclass

import anyio.to_thread

from mfa_guard.clock import Clock
from mfa_guard.core.marker import EnrolmentSummary
from mfa_guard.core.policy import DEVICE_METHOD
from mfa_guard.events import AuditEvent, EventKind, EventSink
from mfa_guard.services import concurrently, publish
from mfa_guard.settings import TrustedDeviceSettings
from mfa_guard.stores.base import MFAStore
from mfa_guard.stores.devices import MAX_DEVICE_USER_AGENT, DeviceStore, TrustedDevice

DAY = 86_400
# secrets.token_urlsafe(32): 43 characters of the URL-safe base64 alphabet.
_TOKEN = re.compile(r"[A-Za-z0-9_-]{43}")
_NAME_LENGTH = 128


@dataclass(frozen=True, slots=True)
class Remembered:
    """A newly remembered browser: the token goes into its cookie, once; only its hash is kept."""

    token: str
    device: TrustedDevice


@dataclass(frozen=True, slots=True)
class Recognised:
    """A remembered browser recognised for a session, with the user's current enrolment."""

    device: TrustedDevice
    summary: EnrolmentSummary


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode("ascii")).hexdigest()


def is_token(value: str) -> bool:
    """Whether a cookie value has the shape of a device token (anything else is not looked up)."""
    return _TOKEN.fullmatch(value) is not None


# What ua-parser says when it cannot tell: no name to show.
_UNTOLD = {"Other", "Generic Smartphone", "Spider"}


@dataclass(frozen=True, slots=True)
class Browser:
    """A browser as its User-Agent names it, through ua-parser: its ``family`` ("Firefox",
    "Mobile Safari"), its ``system`` ("Ubuntu", "iOS") and its ``hardware`` ("iPhone"), each
    ``None`` when the User-Agent does not tell. :attr:`name` is its English name; the kit's pages
    show it in their language (``mfa_guard.i18n.browser_name``)."""

    family: str | None
    system: str | None = None
    hardware: str | None = None

    @property
    def name(self) -> str:
        """The English name: "Firefox on Ubuntu", "Mobile Safari on iOS (iPhone)", "Unknown
        browser"."""
        name = self.family or "Unknown browser"
        if self.system:
            name = f"{name} on {self.system}"
        if self.hardware:
            name = f"{name} ({self.hardware})"
        return name


@functools.lru_cache(maxsize=256)
def browser_of(user_agent: str) -> Browser:
    """The browser a User-Agent names (ua-parser: slow, hence the cache and
    :func:`browsers`)."""
    import ua_parser

    parsed = ua_parser.parse(user_agent[:MAX_DEVICE_USER_AGENT])

    def told(family: str | None) -> str | None:
        return None if family is None or family in _UNTOLD else family

    return Browser(
        family=told(parsed.user_agent.family if parsed.user_agent else None),
        system=told(parsed.os.family if parsed.os else None),
        hardware=told(parsed.device.family if parsed.device else None),
    )


def device_name(user_agent: str) -> str:
    """What a remembered browser is called: its browser's English name (:attr:`Browser.name`),
    at most as long as a device store keeps."""
    return browser_of(user_agent).name[:_NAME_LENGTH]


async def browsers(user_agents: Iterable[str | None]) -> dict[str, Browser]:
    """The browser of each User-Agent given (:func:`browser_of`, cached), worked out in one
    thread for them all: ua-parser's regular expressions are too slow for the event loop."""
    agents = {agent for agent in user_agents if agent is not None}
    if not agents:
        return {}
    return await anyio.to_thread.run_sync(lambda: {agent: browser_of(agent) for agent in agents})


class TrustedDevices:
    """Remembers, recognises, lists and forgets a user's browsers."""

    def __init__(
        self,
        *,
        store: MFAStore,
        devices: DeviceStore,
        settings: TrustedDeviceSettings,
        events: EventSink,
        clock: Clock,
    ) -> None:
        self.store = store
        self.devices = devices
        self.settings = settings
        self._events = events
        self._clock = clock

    @property
    def max_age(self) -> int:
        """The device cookie's lifetime, in seconds."""
        return self.settings.days * DAY

    async def remember(
        self, user_id: str, epoch: int, user_agent: str, ip: str | None
    ) -> Remembered:
        """Remembers this browser for the user, who has just verified a second factor under
        ``epoch``; the least recently used devices past ``max_per_user`` are forgotten."""
        name = await anyio.to_thread.run_sync(device_name, user_agent)
        now = self._clock()
        token = secrets.token_urlsafe(32)
        device = TrustedDevice(
            id=secrets.token_urlsafe(12),
            user_id=user_id,
            token_hash=token_hash(token),
            name=name,
            created_at=now,
            last_seen_at=now,
            expires_at=now + self.max_age,
            epoch=epoch,
            # The pages name the browser from it in the reader's language; ``name`` is English.
            user_agent=user_agent[:MAX_DEVICE_USER_AGENT],
        )
        await self.devices.add(device, keep=self.settings.max_per_user)
        await self._emit(EventKind.DEVICE_TRUSTED, user_id, ip, name)
        return Remembered(token=token, device=device)

    async def recognise(self, user_id: str, token: str | None, ip: str | None) -> Recognised | None:
        """The user's trusted device holding ``token``, if any, with the user's enrolment read
        at the same time (one round trip): trusted only while the user has 2FA at the epoch it
        was remembered under and it has not expired."""
        if token is None or not is_token(token):
            return None
        now = self._clock()
        summary, device = await concurrently(
            self.store.summary(user_id), self.devices.recognise(user_id, token_hash(token), now)
        )
        if device is None:
            return None
        if not summary.enrolled or not device.is_trusted(summary.epoch, now):
            await self.devices.remove(user_id, device.id)
            return None
        await self._emit(EventKind.DEVICE_RECOGNISED, user_id, ip, device.name)
        return Recognised(device=device, summary=summary)

    async def trusted(self, user_id: str) -> list[TrustedDevice]:
        """The user's devices still trusted, most recently used first; the others are
        forgotten on the way."""
        now = self._clock()
        summary, listed = await concurrently(
            self.store.summary(user_id), self.devices.devices(user_id)
        )
        kept = [d for d in listed if summary.enrolled and d.is_trusted(summary.epoch, now)]
        if len(kept) != len(listed):
            if summary.enrolled:
                await self.devices.remove_untrusted(user_id, summary.epoch, now)
            else:
                await self.devices.remove_all(user_id)
        return kept

    async def forget(self, user_id: str, device_id: str, ip: str | None) -> bool:
        forgotten = await self.devices.remove(user_id, device_id)
        if forgotten:
            await self._emit(EventKind.DEVICE_REVOKED, user_id, ip, "one")
        return forgotten

    async def forget_all(self, user_id: str, ip: str | None) -> int:
        count = await self.devices.remove_all(user_id)
        if count:
            await self._emit(EventKind.DEVICE_REVOKED, user_id, ip, f"all={count}")
        return count

    async def _emit(self, kind: EventKind, user_id: str, ip: str | None, detail: str) -> None:
        event = AuditEvent(
            kind=kind,
            user_id=user_id,
            at=self._clock(),
            method=DEVICE_METHOD,
            client_ip=ip,
            detail=detail,
        )
        await publish(self._events, event)
