"""``guard.check()``: each backend pinged at once, within its time, and which one failed said —
on the memory backends, on real PostgreSQL and Redis, and with each of them stopped or hung."""

from __future__ import annotations

import asyncio

import pytest

from mfa_guard import StoreUnavailable
from mfa_guard.core.marker import EnrolmentSummary
from mfa_guard.readiness import PROBE_USER, Readiness
from mfa_guard.stores.devices import MemoryDeviceStore, TrustedDevice
from mfa_guard.stores.memory import MemoryStore
from mfa_guard.stores.sites import MemorySiteDirectory, Requirements
from mfa_guard.stores.sql import SQLSiteDirectory, SQLStore
from tests.apps import build_app
from tests.databases import POSTGRES_URL, UNREACHABLE_POSTGRES_URL, fresh_schema, redis_or_skip

DEVICES = {"enabled": True}


def outcome(readiness: Readiness) -> dict[str, tuple[bool, str | None]]:
    return {probe.name: (probe.ok, probe.error) for probe in readiness.probes}


class DownStore(MemoryStore):
    async def summary(self, user_id: str) -> EnrolmentSummary:
        raise StoreUnavailable("the store is down")


class HungStore(MemoryStore):
    async def summary(self, user_id: str) -> EnrolmentSummary:
        await asyncio.Event().wait()  # never answers
        raise AssertionError("unreachable")


class DownSites(MemorySiteDirectory):
    async def requirements(self, user_id: str) -> Requirements:
        raise StoreUnavailable("the directory is down")


class DownDevices(MemoryDeviceStore):
    async def devices(self, user_id: str) -> list[TrustedDevice]:
        raise StoreUnavailable("the device store is down")


class Recording(MemoryStore):
    def __init__(self) -> None:
        super().__init__()
        self.asked: list[str] = []

    async def summary(self, user_id: str) -> EnrolmentSummary:
        self.asked.append(user_id)
        return await super().summary(user_id)


async def test_every_backend_in_use_answers_and_nothing_is_written() -> None:
    store = Recording()
    ga = build_app(
        store, sites=MemorySiteDirectory(), devices=MemoryDeviceStore(), trusted_devices=DEVICES
    )
    readiness = await ga.guard.check()
    assert outcome(readiness) == {
        "store": (True, None),
        "rate_limits": (True, None),
        "sites": (True, None),
        "devices": (True, None),
    }
    assert readiness.ready
    body = readiness.as_json()
    assert body["ready"] is True
    assert sorted(body["checks"]) == ["devices", "rate_limits", "sites", "store"]
    assert all(check["ms"] >= 0 for check in body["checks"].values())
    assert store.asked == [PROBE_USER]
    assert await store.get(PROBE_USER) is None
    # Without a directory or trusted devices, they are not probed.
    assert sorted(outcome(await build_app().guard.check())) == ["rate_limits", "store"]


@pytest.mark.parametrize(
    ("built", "failing", "error"),
    [
        ({"store": DownStore()}, "store", "StoreUnavailable"),
        ({"sites": DownSites()}, "sites", "StoreUnavailable"),
        ({"devices": DownDevices(), "trusted_devices": DEVICES}, "devices", "StoreUnavailable"),
        ({"storage_uri": "redis://127.0.0.1:1/0"}, "rate_limits", None),
    ],
    ids=["store", "sites", "devices", "redis"],
)
async def test_each_backend_stopped_is_named(
    built: dict[str, object], failing: str, error: str | None
) -> None:
    options: dict[str, object] = {"sites": MemorySiteDirectory(), **built}
    ga = build_app(**options)  # type: ignore[arg-type]
    readiness = await ga.guard.check(within=5)
    found = outcome(readiness)
    assert not readiness.ready
    assert [name for name, (ok, _) in found.items() if not ok] == [failing]
    if error is not None:
        assert found[failing][1] == error
    assert readiness.as_json()["ready"] is False


async def test_a_backend_that_never_answers_is_given_up_on_in_time() -> None:
    ga = build_app(HungStore())
    readiness = await asyncio.wait_for(ga.guard.check(within=0.05), 5)
    assert outcome(readiness)["store"] == (False, "no answer within 0.05 s")
    assert outcome(readiness)["rate_limits"] == (True, None)
    with pytest.raises(ValueError, match="positive"):
        await ga.guard.check(within=0)


def test_postgresql_and_redis_answer_and_a_stopped_postgresql_is_named() -> None:
    redis = redis_or_skip()
    with fresh_schema("readiness") as schema:
        asyncio.run(both_answer(schema, redis))
    asyncio.run(stopped_postgresql_is_named(redis))


async def both_answer(schema: str, redis: str) -> None:
    store = SQLStore(POSTGRES_URL, connect_args={"server_settings": {"search_path": schema}})
    try:
        ga = build_app(store, sites=SQLSiteDirectory.sharing(store), storage_uri=redis)
        readiness = await ga.guard.check()
        assert outcome(readiness) == {
            "store": (True, None),
            "rate_limits": (True, None),
            "sites": (True, None),
        }
        await ga.guard.aclose()
    finally:
        await store.close()


async def stopped_postgresql_is_named(redis: str) -> None:
    down = SQLStore(UNREACHABLE_POSTGRES_URL)
    try:
        ga = build_app(down, storage_uri=redis)
        found = outcome(await ga.guard.check(within=10))
        assert found["store"] == (False, "StoreUnavailable")
        assert found["rate_limits"] == (True, None)
        await ga.guard.aclose()
    finally:
        await down.close()
