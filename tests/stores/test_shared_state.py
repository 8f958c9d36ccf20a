"""Per-process state is refused where shared state is required, and warned about with workers."""

from __future__ import annotations

import logging

import pytest
from pydantic import ValidationError

from mfa_guard import ConfigurationError, MemoryStore, MFAGuard
from mfa_guard.stores.sql import SQLStore
from tests.apps import settings_for


def test_memory_rate_limits_are_refused_when_shared_state_is_required() -> None:
    with pytest.raises(ValidationError, match="redis://"):
        settings_for(require_shared_state=True)


async def test_a_memory_store_is_refused_when_shared_state_is_required() -> None:
    settings = settings_for(require_shared_state=True, storage_uri="redis://127.0.0.1:6379/11")
    with pytest.raises(ConfigurationError, match="MemoryStore"):
        MFAGuard(settings=settings, store=MemoryStore())


def test_several_workers_with_memory_state_log_a_warning(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("WEB_CONCURRENCY", "4")
    with caplog.at_level(logging.WARNING, logger="mfa_guard"):
        MFAGuard(settings=settings_for(), store=MemoryStore())
    assert "4 workers" in caplog.text
    assert "memory://" in caplog.text


async def test_shared_state_starts_quietly(caplog: pytest.LogCaptureFixture) -> None:
    settings = settings_for(
        workers=4,
        require_shared_state=True,
        storage_uri="redis://127.0.0.1:6379/11",
        database_url="postgresql+asyncpg://postgres@127.0.0.1:5432/test",
    )
    store = SQLStore.from_settings(settings)
    with caplog.at_level(logging.WARNING, logger="mfa_guard"):
        guard = MFAGuard(settings=settings, store=store)
    assert caplog.text == ""
    assert store.engine.pool.size() == settings.database_pool_size  # type: ignore[attr-defined]
    await guard.aclose()
    await store.close()
