from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest

# Helpers outside test modules: let pytest explain their failed asserts in detail too.
pytest.register_assert_rewrite(
    "mfa_guard.testing.contract", "mfa_guard.testing.sites_contract", "tests.scenarios"
)

from tests.apps import GuardedApp, build_app  # noqa: E402


@pytest.fixture
def guarded() -> GuardedApp:
    return build_app()


@pytest.fixture
async def client(guarded: GuardedApp) -> AsyncIterator[httpx.AsyncClient]:
    async with guarded.client() as client:
        yield client
