"""Trusted devices: the browsers a user asked the kit to remember, which skip the challenge.

A remembered browser holds a random token in its own cookie; the store keeps only the token's
SHA-256 (the token is 256 random bits: no salt or KDF needed to resist guessing), with a public
id the user revokes it by, a name (browser and system, in English), the User-Agent it was
remembered with (so that the kit's pages name the browser in the reader's language), when it
was remembered and last used, when it stops being trusted, and the user's epoch at that
moment. A device remembered under an older epoch is not trusted any more: any factor change,
admin reset or "sign out my other sessions" bumps the epoch and so revokes every device at
once, with no write here.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Protocol

# The longest User-Agent kept with a device, as much as ua-parser reads (``browser_of``):
# longer ones are cut.
MAX_DEVICE_USER_AGENT = 1024


@dataclass(frozen=True, slots=True)
class TrustedDevice:
    """A remembered browser of a user: its public ``id`` (what the user forgets it by), the
    SHA-256 of the token its cookie holds, its ``name`` (browser and system, in English: the
    JSON API's), when it was remembered, last used and stops being trusted, the user's epoch
    when it was remembered, and the ``user_agent`` it was remembered with (its first 1024
    characters), from which the kit's pages name the browser in the reader's language;
    ``None`` for a device remembered before the kit kept it, whose ``name`` is shown."""

    id: str
    user_id: str
    token_hash: str
    name: str
    created_at: float
    last_seen_at: float
    expires_at: float
    epoch: int
    # Last, with a default: an adapter written before it still builds a device.
    user_agent: str | None = None

    def is_trusted(self, epoch: int, now: float) -> bool:
        """Still trusted for a user now at ``epoch``: not expired, not from an older epoch."""
        return self.epoch == epoch and now < self.expires_at


class DeviceStore(Protocol):
    """Where remembered devices live. Every method is one round trip and atomic on its own.

    Implementations raise :class:`mfa_guard.errors.StoreUnavailable` when the backend cannot be
    reached. ``mfa_guard.testing.devices_contract.DeviceStoreContract`` is the suite an
    implementation must pass. A store keeps every field of a :class:`TrustedDevice` as given,
    ``user_agent`` included (up to 1024 characters, or ``None``), and gives them back.
    """

    async def add(self, device: TrustedDevice, *, keep: int) -> None:
        """Store ``device``, then keep only the user's ``keep`` most recently used devices
        (the new one counts as the most recent)."""
        ...

    async def recognise(self, user_id: str, token_hash: str, now: float) -> TrustedDevice | None:
        """The user's device with this token hash if it has not expired at ``now``, its
        ``last_seen_at`` set to ``now`` (as returned); ``None`` otherwise. The epoch is the
        caller's to compare."""
        ...

    async def devices(self, user_id: str) -> list[TrustedDevice]:
        """The user's devices, expired or not, most recently used first."""
        ...

    async def remove(self, user_id: str, device_id: str) -> bool:
        """Forget one device of the user; ``False`` if there was none with that id."""
        ...

    async def remove_all(self, user_id: str) -> int:
        """Forget every device of the user; how many there were."""
        ...

    async def remove_untrusted(self, user_id: str, epoch: int, now: float) -> int:
        """Forget the user's devices that are expired at ``now`` or from another epoch; how
        many there were."""
        ...


class MemoryDeviceStore:
    """Devices in a dict: for tests and single-process demos."""

    def __init__(self) -> None:
        self._devices: dict[str, dict[str, TrustedDevice]] = {}

    async def add(self, device: TrustedDevice, *, keep: int) -> None:
        mine = self._devices.setdefault(device.user_id, {})
        others = sorted(
            (other for other in mine.values() if other.id != device.id),
            key=_recency,
            reverse=True,
        )
        for dropped in others[max(keep, 1) - 1 :]:
            del mine[dropped.id]
        mine[device.id] = device

    async def recognise(self, user_id: str, token_hash: str, now: float) -> TrustedDevice | None:
        mine = self._devices.get(user_id, {})
        for device in mine.values():
            if device.token_hash == token_hash and now < device.expires_at:
                seen = dataclasses.replace(device, last_seen_at=now)
                mine[device.id] = seen
                return seen
        return None

    async def devices(self, user_id: str) -> list[TrustedDevice]:
        return sorted(self._devices.get(user_id, {}).values(), key=_recency, reverse=True)

    async def remove(self, user_id: str, device_id: str) -> bool:
        return self._devices.get(user_id, {}).pop(device_id, None) is not None

    async def remove_all(self, user_id: str) -> int:
        return len(self._devices.pop(user_id, {}))

    async def remove_untrusted(self, user_id: str, epoch: int, now: float) -> int:
        mine = self._devices.get(user_id, {})
        gone = [device.id for device in mine.values() if not device.is_trusted(epoch, now)]
        for device_id in gone:
            del mine[device_id]
        return len(gone)


def _recency(device: TrustedDevice) -> tuple[float, float, str]:
    return (device.last_seen_at, device.created_at, device.id)
