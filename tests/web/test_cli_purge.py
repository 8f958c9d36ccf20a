"""``mfa-guard purge-events``: the security log keeps ``events.retention_days`` days (or
``--days``), on SQLite and on PostgreSQL, with no encryption key in the job's environment."""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from mfa_guard.cli import main
from mfa_guard.events import AuditEvent, EventKind
from mfa_guard.stores.events import EventQuery
from mfa_guard.stores.sql import SQLEventStore
from tests.databases import UNREACHABLE_POSTGRES_URL, fresh_database, sqlite_url

DAY = 86_400.0
USER = "owner@acme.test"


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def database(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """The URL of an empty database of the test's own: a SQLite file, or a PostgreSQL one."""
    if request.param == "sqlite":
        yield sqlite_url(tmp_path)
        return
    with fresh_database("mfa_guard_cli") as url:
        yield url


@pytest.fixture(autouse=True)
def job_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """A cron job's environment: no encryption key, no .env, the default retention."""
    monkeypatch.chdir(tmp_path)
    for name in (
        "MFA_GUARD_ENCRYPTION_KEYS",
        "MFA_GUARD_DEBUG",
        "MFA_GUARD_DATABASE_URL",
        "MFA_GUARD_EVENTS__RETENTION_DAYS",
    ):
        monkeypatch.delenv(name, raising=False)


def logged(url: str, *days_ago: float) -> list[int]:
    """Events of ``USER``, one per age in days (now: the real clock, as the command's)."""

    async def append() -> list[int]:
        log = SQLEventStore(url)
        try:
            now = time.time()
            return [
                await log.append(AuditEvent(EventKind.VERIFIED, USER, now - age * DAY))
                for age in days_ago
            ]
        finally:
            await log.close()

    return asyncio.run(append())


def kept(url: str) -> list[int]:
    async def read() -> list[int]:
        log = SQLEventStore(url)
        try:
            return [each.id for each in await log.events(EventQuery(users=(USER,)))]
        finally:
            await log.close()

    return asyncio.run(read())


def test_purge_events_removes_what_is_older_than_the_retention(
    database: str, capsys: pytest.CaptureFixture[str]
) -> None:
    ids = logged(database, 400, 366, 364, 1)

    assert main(["purge-events", "--database-url", database]) == 0

    out = capsys.readouterr().out
    assert out.startswith("removed 2 events older than 365 days from the security log in ")
    assert kept(database) == [ids[3], ids[2]]
    # Nothing left to remove is no failure: a daily job runs it again.
    assert main(["purge-events", "--database-url", database]) == 0
    assert capsys.readouterr().out.startswith("removed 0 events older than 365 days")


def test_the_setting_gives_the_retention_and_days_overrides_it(
    database: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    ids = logged(database, 500, 100, 10)
    monkeypatch.setenv("MFA_GUARD_EVENTS__RETENTION_DAYS", "200")
    monkeypatch.setenv("MFA_GUARD_DATABASE_URL", database)

    assert main(["purge-events"]) == 0
    assert capsys.readouterr().out.startswith("removed 1 event older than 200 days")
    assert kept(database) == [ids[2], ids[1]]

    assert main(["purge-events", "--days", "1"]) == 0
    assert capsys.readouterr().out.startswith("removed 2 events older than 1 day")
    assert kept(database) == []


@pytest.mark.parametrize("days", ["0", "-3", "3651", "ten", "1.5", ""])
def test_days_must_be_a_whole_number_within_the_settings_bounds(
    days: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    url = sqlite_url(tmp_path)
    ids = logged(url, 10)

    with pytest.raises(SystemExit) as exited:
        main(["purge-events", "--days", days, "--database-url", url])

    assert exited.value.code == 2
    err = capsys.readouterr().err
    assert f"argument --days: {days!r} is not a number of days to keep" in err
    assert "Traceback" not in err
    assert kept(url) == ids


def test_an_invalid_retention_setting_is_a_usage_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    url = sqlite_url(tmp_path)
    ids = logged(url, 10)
    monkeypatch.setenv("MFA_GUARD_EVENTS__RETENTION_DAYS", "0")

    assert main(["purge-events", "--database-url", url]) == 2

    err = capsys.readouterr().err
    assert "mfa-guard purge-events: the settings are invalid: events.retention_days: " in err
    assert kept(url) == ids


def test_purge_events_says_when_the_database_is_down(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["purge-events", "--database-url", UNREACHABLE_POSTGRES_URL]) == 1
    err = capsys.readouterr().err
    assert "mfa-guard purge-events: the database is unavailable: postgresql+asyncpg://" in err


@pytest.mark.parametrize(
    ("url", "problem"),
    [
        ("mysql+aiomysql://root@127.0.0.1/app", "supports SQLite and PostgreSQL, not 'mysql'"),
        ("not a url", "not a SQLAlchemy URL"),
    ],
)
def test_a_database_the_log_cannot_use_is_a_usage_error(
    url: str, problem: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["purge-events", "--database-url", url]) == 2
    err = capsys.readouterr().err
    assert problem in err
    assert "Traceback" not in err


@pytest.mark.parametrize(
    ("blocked", "url", "extra"),
    [
        ("sqlalchemy", None, "sql"),
        ("asyncpg", "postgresql+asyncpg://db.internal/app", "postgres"),
    ],
)
def test_a_missing_extra_is_named_with_its_pip_command(
    blocked: str,
    url: str | None,
    extra: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """As on an install without that extra (tests/e2e/test_packaging.py runs a real one)."""
    monkeypatch.setitem(sys.modules, blocked, None)  # not importable
    assert main(["purge-events", *(["--database-url", url] if url else [])]) == 5
    err = capsys.readouterr().err
    assert f"({blocked} is not installed): pip install 'mfa-guard[{extra}]'" in err
