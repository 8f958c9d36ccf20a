from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest

# The contract suite lives in the package; let pytest explain its failed asserts in detail.
pytest.register_assert_rewrite("mfa_guard.testing.contract")

from tests.apps import GuardedApp, build_app  # noqa: E402


@pytest.fixture
def guarded() -> GuardedApp:
    return build_app()


@pytest.fixture
async def client(guarded: GuardedApp) -> AsyncIterator[httpx.AsyncClient]:
    async with guarded.client() as client:
        yield client
