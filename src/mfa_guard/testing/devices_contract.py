"""The contract every :class:`~mfa_guard.stores.devices.DeviceStore` keeps, as a pytest class.

Subclass it in a test module (the name must start with ``Test``) and provide an async fixture
``devices`` that yields a fresh, empty store::

    from mfa_guard.testing.devices_contract import DeviceStoreContract

    class TestMyDevices(DeviceStoreContract):
        @pytest.fixture
        async def devices(self) -> AsyncIterator[MyDeviceStore]:
            store = MyDeviceStore(...)
            yield store
            await store.close()

The tests need pytest-asyncio (``asyncio_mode = "auto"``) or an equivalent runner.
"""

from __future__ import annotations

import hashlib

from mfa_guard.stores.devices import MAX_DEVICE_USER_AGENT, DeviceStore, TrustedDevice

__all__ = ["DeviceStoreContract"]

NOW = 1_800_000_000.5
DAY = 86_400.0


def device(
    user_id: str,
    number: int,
    *,
    at: float = NOW,
    days: float = 30,
    epoch: int = 1,
    name: str = "Firefox on Linux",
    user_agent: str | None = None,
) -> TrustedDevice:
    """The ``number``-th browser of ``user_id``, remembered at ``at`` for ``days``."""
    return TrustedDevice(
        id=f"{user_id[:8]}-{number}",
        user_id=user_id,
        token_hash=token_hash(user_id, number),
        name=name,
        created_at=at,
        last_seen_at=at,
        expires_at=at + days * DAY,
        epoch=epoch,
        user_agent=user_agent,
    )


def token_hash(user_id: str, number: int) -> str:
    return hashlib.sha256(f"token of {user_id}'s browser {number}".encode()).hexdigest()


class DeviceStoreContract:
    """Scenarios a device store must pass; subclasses provide the ``devices`` fixture."""

    async def test_an_unknown_user_has_no_devices(self, devices: DeviceStore) -> None:
        assert await devices.devices("alice") == []
        assert await devices.recognise("alice", token_hash("alice", 1), NOW) is None
        assert await devices.remove("alice", "alice-1") is False
        assert await devices.remove_all("alice") == 0
        assert await devices.remove_untrusted("alice", 1, NOW) == 0

    async def test_a_remembered_browser_is_recognised_and_its_use_recorded(
        self, devices: DeviceStore
    ) -> None:
        laptop = device("alice", 1)
        await devices.add(laptop, keep=10)

        seen = await devices.recognise("alice", laptop.token_hash, NOW + 3600)

        assert seen == TrustedDevice(
            id=laptop.id,
            user_id="alice",
            token_hash=laptop.token_hash,
            name="Firefox on Linux",
            created_at=NOW,
            last_seen_at=NOW + 3600,
            expires_at=NOW + 30 * DAY,
            epoch=1,
        )
        assert await devices.devices("alice") == [seen]

    async def test_a_token_is_recognised_only_for_its_own_user(self, devices: DeviceStore) -> None:
        await devices.add(device("alice", 1), keep=10)
        await devices.add(device("bob", 1), keep=10)

        assert await devices.recognise("bob", token_hash("alice", 1), NOW) is None
        assert await devices.recognise("alice", token_hash("alice", 2), NOW) is None
        # Nothing was touched by the misses.
        assert [d.last_seen_at for d in await devices.devices("alice")] == [NOW]

    async def test_an_expired_device_is_not_recognised_but_still_listed(
        self, devices: DeviceStore
    ) -> None:
        laptop = device("alice", 1, days=1)
        await devices.add(laptop, keep=10)

        assert await devices.recognise("alice", laptop.token_hash, NOW + DAY - 1) is not None
        assert await devices.recognise("alice", laptop.token_hash, NOW + DAY) is None
        assert [d.id for d in await devices.devices("alice")] == [laptop.id]

    async def test_the_least_recently_used_devices_go_past_the_limit(
        self, devices: DeviceStore
    ) -> None:
        await devices.add(device("alice", 1, at=NOW), keep=2)
        await devices.add(device("alice", 2, at=NOW + 10), keep=2)
        # The first browser is used again: the second is now the least recently used.
        await devices.recognise("alice", token_hash("alice", 1), NOW + 20)

        await devices.add(device("alice", 3, at=NOW + 30), keep=2)

        assert [d.id for d in await devices.devices("alice")] == ["alice-3", "alice-1"]
        assert await devices.recognise("alice", token_hash("alice", 2), NOW + 40) is None

    async def test_the_limit_counts_per_user(self, devices: DeviceStore) -> None:
        await devices.add(device("alice", 1), keep=1)
        await devices.add(device("bob", 1), keep=1)
        await devices.add(device("alice", 2, at=NOW + 1), keep=1)

        assert [d.id for d in await devices.devices("alice")] == ["alice-2"]
        assert [d.id for d in await devices.devices("bob")] == ["bob-1"]

    async def test_devices_are_listed_most_recently_used_first(self, devices: DeviceStore) -> None:
        for number in (1, 2, 3):
            await devices.add(device("alice", number, at=NOW + number), keep=10)
        await devices.recognise("alice", token_hash("alice", 1), NOW + 100)

        assert [d.id for d in await devices.devices("alice")] == ["alice-1", "alice-3", "alice-2"]

    async def test_removing_one_device_leaves_the_others(self, devices: DeviceStore) -> None:
        await devices.add(device("alice", 1), keep=10)
        await devices.add(device("alice", 2, at=NOW + 1), keep=10)

        assert await devices.remove("alice", "alice-1") is True
        assert await devices.remove("alice", "alice-1") is False

        assert [d.id for d in await devices.devices("alice")] == ["alice-2"]
        assert await devices.recognise("alice", token_hash("alice", 1), NOW) is None

    async def test_nobody_removes_another_users_device(self, devices: DeviceStore) -> None:
        await devices.add(device("alice", 1), keep=10)

        assert await devices.remove("bob", "alice-1") is False
        assert await devices.remove_all("bob") == 0

        assert [d.id for d in await devices.devices("alice")] == ["alice-1"]

    async def test_removing_all_devices_counts_them(self, devices: DeviceStore) -> None:
        await devices.add(device("alice", 1), keep=10)
        await devices.add(device("alice", 2, at=NOW + 1), keep=10)
        await devices.add(device("bob", 1), keep=10)

        assert await devices.remove_all("alice") == 2

        assert await devices.devices("alice") == []
        assert [d.id for d in await devices.devices("bob")] == ["bob-1"]

    async def test_untrusted_devices_are_removed_trusted_ones_kept(
        self, devices: DeviceStore
    ) -> None:
        await devices.add(device("alice", 1, epoch=1), keep=10)
        await devices.add(device("alice", 2, epoch=2, at=NOW + 1), keep=10)
        await devices.add(device("alice", 3, epoch=2, at=NOW + 2, days=1), keep=10)
        await devices.add(device("bob", 1, epoch=1), keep=10)

        assert await devices.remove_untrusted("alice", 2, NOW + DAY + 2) == 2

        assert [d.id for d in await devices.devices("alice")] == ["alice-2"]
        assert [d.id for d in await devices.devices("bob")] == ["bob-1"]

    async def test_a_name_is_kept_as_given(self, devices: DeviceStore) -> None:
        await devices.add(device("zoë", 1, name="Safari on iOS (iPhone) — ünïcode"), keep=10)

        (kept,) = await devices.devices("zoë")
        assert kept.name == "Safari on iOS (iPhone) — ünïcode"
        assert kept.user_id == "zoë"

    async def test_a_user_agent_is_kept_as_given_and_none_stays_none(
        self, devices: DeviceStore
    ) -> None:
        """The User-Agent a browser was remembered with (up to 1024 characters) comes back
        from every read; a device without one (remembered before the kit kept it) has none."""
        agent = ("Mozilla/5.0 (X11; Ubuntu; Linux x86_64; rv:128.0) Firefox/128.0 ü " * 20)[
            :MAX_DEVICE_USER_AGENT
        ]
        assert len(agent) == MAX_DEVICE_USER_AGENT
        await devices.add(device("alice", 1, user_agent=agent), keep=10)
        await devices.add(device("alice", 2, at=NOW + 1), keep=10)

        newest, oldest = await devices.devices("alice")
        assert (newest.id, newest.user_agent) == ("alice-2", None)
        assert (oldest.id, oldest.user_agent) == ("alice-1", agent)
        seen = await devices.recognise("alice", token_hash("alice", 1), NOW + 10)
        assert seen is not None
        assert seen.user_agent == agent
        unknown = await devices.recognise("alice", token_hash("alice", 2), NOW + 10)
        assert unknown is not None
        assert unknown.user_agent is None

    def test_trust_needs_the_current_epoch_and_an_unexpired_device(self) -> None:
        laptop = device("alice", 1, epoch=3, days=1)

        assert laptop.is_trusted(3, NOW)
        assert not laptop.is_trusted(4, NOW)
        assert not laptop.is_trusted(3, NOW + DAY)
