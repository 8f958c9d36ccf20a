"""Fixtures of the security tests: the stores a finding's story runs on."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from mfa_guard import MFAStore
from mfa_guard.stores.memory import MemoryStore
from mfa_guard.stores.sql import SQLStore
from tests.databases import empty_postgres_store, fresh_schema, sqlite_url


@pytest.fixture(scope="module")
def postgres_schema() -> Iterator[str]:
    with fresh_schema("mfa_guard_security") as schema:
        yield schema


@pytest.fixture(params=["memory", "sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """Which store: the memory store, a SQLite file, or a PostgreSQL schema (made here, outside
    the event loop)."""
    if request.param == "sqlite":
        return sqlite_url(tmp_path)
    if request.param == "postgresql":
        schema: str = request.getfixturevalue("postgres_schema")
        return f"postgresql:{schema}"
    return "memory"


@pytest.fixture
async def store(backend: str) -> AsyncIterator[MFAStore]:
    """The store ``backend`` names, empty; closed after the test."""
    if backend == "memory":
        yield MemoryStore()
        return
    sql = (
        await empty_postgres_store(backend.removeprefix("postgresql:"))
        if backend.startswith("postgresql:")
        else SQLStore(backend)
    )
    yield sql
    await sql.close()
