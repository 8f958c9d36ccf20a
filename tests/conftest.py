from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest

from tests.apps import GuardedApp, build_app


@pytest.fixture
def guarded() -> GuardedApp:
    return build_app()


@pytest.fixture
async def client(guarded: GuardedApp) -> AsyncIterator[httpx.AsyncClient]:
    async with guarded.client() as client:
        yield client
