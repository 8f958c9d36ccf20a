"""The SMS send budget: every limit is checked, and a slot taken, *before* the provider is called.

Slots are taken atomically in the shared storage (fixed windows of ``limits``), so parallel sends
cannot slip past a limit; a refused or failed send gives its slots back, so a provider outage
does not spend the user's budget.
"""

from __future__ import annotations

import contextlib
import hashlib
from dataclasses import dataclass, field

from limits import RateLimitItem, parse_many
from limits.aio.storage import Storage
from limits.aio.strategies import FixedWindowRateLimiter
from limits.errors import StorageError

from mfa_guard.errors import StoreUnavailable
from mfa_guard.ratelimit import retry_at
from mfa_guard.settings import SMSSettings

_NAMESPACE = "mfa_guard:sms"
# What refuses a text, by name (the ``limit=`` of an ``sms_limited`` event, a metric's
# ``reason``): the limits of ``SendLimiter.reserve`` (their names are also in the storage's
# keys), and the allow-list, checked again at each send.
REFUSALS = frozenset({"cooldown", "user", "number", "ip", "global", "country"})


def _hashed(value: str) -> str:
    # Shared storages see hashes, not user ids or phone numbers.
    return hashlib.sha256(value.encode("utf-8")).hexdigest()[:32]


@dataclass(slots=True)
class Reservation:
    """Slots taken for one send; ``release()`` gives them back if the send did not happen."""

    _storage: Storage
    _taken: list[tuple[RateLimitItem, tuple[str, ...]]] = field(default_factory=list)

    async def release(self) -> None:
        try:
            for item, identifiers in self._taken:
                await self._storage.incr(item.key_for(*identifiers), item.get_expiry(), amount=-1)
        except (StorageError, OSError) as exc:
            raise StoreUnavailable() from exc
        self._taken.clear()


@dataclass(frozen=True, slots=True)
class SendRefused:
    """No slot: ``limit`` names the limit that refused (``cooldown``, ``user``, ``number``,
    ``ip`` or ``global``: a fixed set, for the audit event and the metrics); ``retry_at`` is
    when every exhausted limit lets a text through."""

    retry_at: float
    limit: str


class SendLimiter:
    def __init__(self, storage: Storage, settings: SMSSettings) -> None:
        self._storage = storage
        self._limiter = FixedWindowRateLimiter(storage)
        self._per_user = parse_many(settings.per_user)
        # The short window stops a burst; the day caps what a number gets in all.
        self._per_number = [
            *parse_many(settings.per_number),
            *parse_many(settings.per_number_daily),
        ]
        self._per_ip = parse_many(settings.per_ip)
        self._cooldown = parse_many(settings.resend_cooldown)
        self._global = [*parse_many(settings.global_hourly), *parse_many(settings.global_daily)]

    async def reserve(
        self, user_id: str, phone: str, ip: str | None, now: float
    ) -> Reservation | SendRefused:
        """The reservation, or the refusal: which limit refused, and when a text gets through."""
        checks: list[tuple[RateLimitItem, tuple[str, ...]]] = [
            *((item, (_NAMESPACE, "cooldown", _hashed(user_id))) for item in self._cooldown),
            *((item, (_NAMESPACE, "user", _hashed(user_id))) for item in self._per_user),
            *((item, (_NAMESPACE, "number", _hashed(phone))) for item in self._per_number),
            *((item, (_NAMESPACE, "ip", _hashed(ip or "unknown"))) for item in self._per_ip),
            *((item, (_NAMESPACE, "global")) for item in self._global),
        ]
        reservation = Reservation(self._storage)
        try:
            for index, (item, identifiers) in enumerate(checks):
                taken = await self._limiter.hit(item, *identifiers)
                # A refused hit still counted in the fixed window: give it back with the rest.
                reservation._taken.append((item, identifiers))
                if not taken:
                    reset = await self._last_reset([(item, identifiers), *checks[index + 1 :]])
                    await reservation.release()
                    # identifiers[1] is the limit's name ("cooldown", "user", "number", ...).
                    return SendRefused(retry_at(reset, now), identifiers[1])
        except (StorageError, OSError) as exc:
            # Part of the storage failed (on a Redis Cluster the limits' keys live on several
            # masters, one of which may be down): the slots taken before the failure are given
            # back where they can be, so that an outage does not spend the user's texts.
            with contextlib.suppress(StoreUnavailable):
                await reservation.release()
            raise StoreUnavailable() from exc
        return reservation

    async def _last_reset(self, checks: list[tuple[RateLimitItem, tuple[str, ...]]]) -> float:
        """When the last of the exhausted limits among ``checks`` (the refusing one first)
        reopens, on the system clock as ``limits`` counts: the wait the refusal tells is the
        whole wait, not the cooldown's alone while the day's budget is spent too."""
        first, *rest = checks
        reset = (await self._limiter.get_window_stats(first[0], *first[1])).reset_time
        for item, identifiers in rest:
            stats = await self._limiter.get_window_stats(item, *identifiers)
            if stats.remaining == 0:
                reset = max(reset, stats.reset_time)
        return reset
