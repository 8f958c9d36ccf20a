from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from sqlalchemy import inspect, text

from mfa_guard.errors import StoreUnavailable
from mfa_guard.stores.devices import MemoryDeviceStore
from mfa_guard.stores.sites import Role
from mfa_guard.stores.sql import SQLDeviceStore, SQLSiteDirectory, SQLStore
from mfa_guard.testing.devices_contract import NOW, DeviceStoreContract, device
from tests.databases import (
    POSTGRES_URL,
    UNREACHABLE_POSTGRES_URL,
    fresh_schema,
    sqlite_url,
)


@pytest.fixture(scope="session")
def devices_schema() -> Iterator[str]:
    """A schema of its own, apart from the other store tests' and from parallel runs."""
    with fresh_schema("mfa_guard_devices_test") as schema:
        yield schema


class TestMemoryDeviceStore(DeviceStoreContract):
    @pytest.fixture
    def devices(self) -> MemoryDeviceStore:
        return MemoryDeviceStore()


class TestSQLiteDeviceStore(DeviceStoreContract):
    @pytest.fixture
    async def devices(self, tmp_path: Path) -> AsyncIterator[SQLDeviceStore]:
        devices = SQLDeviceStore(sqlite_url(tmp_path))
        yield devices
        await devices.close()


class TestSQLiteInMemoryDeviceStore(DeviceStoreContract):
    """Sharing a store's engine: one connection (StaticPool) for the store and the devices."""

    @pytest.fixture
    async def devices(self) -> AsyncIterator[SQLDeviceStore]:
        store = SQLStore("sqlite+aiosqlite://")
        yield SQLDeviceStore.sharing(store)
        await store.close()


@pytest.mark.postgres
class TestPostgresDeviceStore(DeviceStoreContract):
    @pytest.fixture
    async def devices(self, devices_schema: str) -> AsyncIterator[SQLDeviceStore]:
        devices = SQLDeviceStore(
            POSTGRES_URL, connect_args={"server_settings": {"search_path": devices_schema}}
        )
        await devices.create_all()
        async with devices.engine.begin() as conn:
            await conn.execute(text("TRUNCATE mfa_guard_trusted_devices"))
        yield devices
        await devices.close()


async def test_a_store_makes_the_devices_table_with_its_own(tmp_path: Path) -> None:
    store = SQLStore(sqlite_url(tmp_path))
    await store.summary("alice")  # every table on the metadata is created here
    devices = SQLDeviceStore.sharing(store)

    await devices.add(device("alice", 1), keep=10)

    async with store.engine.connect() as conn:
        tables = await conn.run_sync(lambda sync: inspect(sync).get_table_names())
    assert "mfa_guard_trusted_devices" in tables
    assert [d.id for d in await devices.devices("alice")] == ["alice-1"]
    await devices.close()  # leaves the engine to the store
    assert await store.summary("alice") is not None
    await store.close()


async def test_closing_a_shared_device_store_leaves_the_store_working(tmp_path: Path) -> None:
    store = SQLStore(sqlite_url(tmp_path))
    devices = SQLDeviceStore.sharing(store)
    await devices.add(device("alice", 1), keep=10)

    await devices.close()

    assert (await store.summary("alice")).epoch == 0
    await store.close()


async def test_sharing_an_adapter_that_shares_a_store_shares_the_store(tmp_path: Path) -> None:
    store = SQLStore(sqlite_url(tmp_path))
    directory = SQLSiteDirectory.sharing(store)
    devices = SQLDeviceStore.sharing(directory)
    assert devices.engine is directory.engine is store.engine
    await devices.add(device("alice", 1), keep=10)
    await directory.save_site("acme", "Acme")

    await devices.close()
    await directory.close()  # both leave the engine to the store

    assert await directory.add_member("acme", "alice", Role.OWNER) is True
    assert [d.id for d in await devices.devices("alice")] == ["alice-1"]
    await store.close()


async def test_an_unreachable_database_is_reported_as_unavailable() -> None:
    devices = SQLDeviceStore(UNREACHABLE_POSTGRES_URL)
    with pytest.raises(StoreUnavailable):
        await devices.recognise("alice", "0" * 64, NOW)
    await devices.close()
