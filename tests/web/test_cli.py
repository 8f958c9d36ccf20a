from __future__ import annotations

import asyncio
import logging
import os
import sqlite3
import subprocess
import sys
import time
from importlib import metadata
from pathlib import Path

import pytest
from cryptography.fernet import Fernet

import mfa_guard
from mfa_guard import MFAGuardSettings
from mfa_guard.cli import main
from mfa_guard.events import EventKind
from mfa_guard.ratelimit import FailureLimiter, Wait, storage_from_uri
from mfa_guard.stores.events import EventQuery
from mfa_guard.stores.sql import SQLEventStore
from tests.databases import redis_or_skip, seeded


def test_keygen_prints_a_key_the_settings_accept(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["keygen"]) == 0
    key = capsys.readouterr().out.strip()
    Fernet(key)
    settings = MFAGuardSettings(_env_file=None, encryption_keys=[key])
    assert settings.encryption_keys[0].get_secret_value() == key


def test_an_unknown_command_exits_with_usage(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["frobnicate"])
    assert exited.value.code == 2
    assert "usage: mfa-guard" in capsys.readouterr().err


def test_init_db_creates_the_tables_and_can_run_again(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path}/mfa.db"
    assert main(["init-db", "--database-url", url]) == 0
    assert main(["init-db", "--database-url", url]) == 0
    assert "tables are ready" in capsys.readouterr().out
    with sqlite3.connect(tmp_path / "mfa.db") as db:
        tables = {row[0] for row in db.execute("select name from sqlite_master")}
    assert {
        "mfa_guard_enrolments",
        "mfa_guard_recovery_codes",
        "mfa_guard_trusted_devices",
    } <= tables


def test_init_db_says_when_the_database_is_down(capsys: pytest.CaptureFixture[str]) -> None:
    url = "postgresql+asyncpg://postgres@127.0.0.1:1/test"
    assert main(["init-db", "--database-url", url]) == 1
    assert "unavailable" in capsys.readouterr().err


@pytest.fixture
async def database(tmp_path: Path) -> str:
    url = f"sqlite+aiosqlite:///{tmp_path}/mfa.db"
    await seeded(url)
    return url


def test_status_lists_every_sites_green_padlocks(
    database: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["status", "--database-url", database]) == 0
    assert capsys.readouterr().out.splitlines() == [
        "SITE  MEMBER             ROLE      2FA  SMS",
        "acme  agent@acme.test    operator  OFF  -",
        "acme  owner@acme.test    owner     on   -",
        "solo  solo@example.test  owner     on   -",
        "acme (Acme): enforces 2FA from 2027-01-15T08:00:00Z; 1 of 2 without 2FA",
        "solo (Solo): does not enforce 2FA; 0 of 1 without 2FA",
    ]


def test_status_of_one_site_and_only_members_without_2fa(
    database: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["status", "--site", "acme", "--without-2fa", "--database-url", database]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[:2] == [
        "SITE  MEMBER           ROLE      2FA  SMS",
        "acme  agent@acme.test  operator  OFF  -",
    ]
    assert main(["status", "--site", "nope", "--database-url", database]) == 3
    assert "there is no site 'nope'" in capsys.readouterr().err


@pytest.fixture
def app_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """The app's settings, as an operator's shell holds them (no .env file here)."""
    monkeypatch.setenv("MFA_GUARD_ENCRYPTION_KEYS", Fernet.generate_key().decode())
    monkeypatch.delenv("MFA_GUARD_STORAGE_URI", raising=False)
    monkeypatch.delenv("MFA_GUARD_DEBUG", raising=False)


@pytest.mark.usefixtures("app_environment")
def test_reset_user_turns_2fa_off_and_writes_an_audit_event(
    database: str, capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="mfa_guard.audit")
    assert (
        main(["reset-user", "owner@acme.test", "--by", "support", "--database-url", database]) == 0
    )
    out = capsys.readouterr().out
    assert "two-factor authentication is off" in out
    assert [r.getMessage() for r in caplog.records if r.name == "mfa_guard.audit"] == [
        "mfa_guard event=admin_reset user=owner@acme.test method=- by=support ip=-"
    ]
    # In the security log the kit's tables hold, where a site's owner reads it.
    assert "the security log in sqlite+aiosqlite:///" in out
    assert asyncio.run(logged(database, "owner@acme.test")) == [
        (EventKind.ADMIN_RESET, "owner@acme.test", "by=support")
    ]
    assert main(["reset-user", "owner@acme.test", "--database-url", database]) == 3
    assert main(["status", "--site", "acme", "--without-2fa", "--database-url", database]) == 0
    assert "owner@acme.test" in capsys.readouterr().out


async def logged(database: str, user: str) -> list[tuple[EventKind, str, str | None]]:
    """The user's events in the security log of ``database``, newest first."""
    log = SQLEventStore(database)
    try:
        stored = await log.events(EventQuery(users=(user,)))
    finally:
        await log.close()
    return [(item.event.kind, item.event.user_id, item.event.detail) for item in stored]


@pytest.mark.usefixtures("app_environment")
def test_reset_user_stands_when_the_security_log_cannot_be_written(
    database: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with sqlite3.connect(database.split("///", 1)[1]) as connection:
        connection.execute(
            "CREATE TRIGGER no_log BEFORE INSERT ON mfa_guard_events "
            "BEGIN SELECT RAISE(ABORT, 'the log is read only'); END"
        )
    assert main(["reset-user", "owner@acme.test", "--database-url", database]) == 0
    out = capsys.readouterr().out
    assert "two-factor authentication is off" in out
    assert "the audit log only: the security log could not be written" in out
    assert main(["reset-user", "owner@acme.test", "--database-url", database]) == 3


@pytest.mark.redis
@pytest.mark.usefixtures("app_environment")
def test_reset_user_clears_the_failure_count_in_shared_storage(
    database: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A user who lost their device often locked themselves out trying: they can enrol again."""
    uri = redis_or_skip()
    monkeypatch.setenv("MFA_GUARD_STORAGE_URI", uri)
    monkeypatch.setenv("MFA_GUARD_RATE_LIMITS__FAILURES", "2/hour")
    user = "owner@acme.test"

    async def attempt() -> Wait | None:
        limiter = FailureLimiter(storage_from_uri(uri), "2/hour")
        try:
            return await limiter.acquire(user, time.time())
        finally:
            await limiter.aclose()

    async def lock_out() -> None:
        limiter = FailureLimiter(storage_from_uri(uri), "2/hour")
        try:
            await limiter.reset(user)
            while await limiter.acquire(user, time.time()) is None:
                pass
        finally:
            await limiter.aclose()

    asyncio.run(lock_out())
    assert main(["reset-user", user, "--database-url", database]) == 0
    assert "failed-attempt count is cleared" in capsys.readouterr().out
    assert asyncio.run(attempt()) is None


def test_reset_user_refuses_invalid_settings(
    database: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("MFA_GUARD_ENCRYPTION_KEYS", raising=False)
    monkeypatch.delenv("MFA_GUARD_DEBUG", raising=False)
    assert main(["reset-user", "owner@acme.test", "--database-url", database]) == 2
    assert "no encryption key" in capsys.readouterr().err


@pytest.mark.usefixtures("app_environment")
def test_status_and_reset_user_say_when_the_database_is_down(
    capsys: pytest.CaptureFixture[str],
) -> None:
    url = "postgresql+asyncpg://postgres@127.0.0.1:1/test"
    assert main(["status", "--database-url", url]) == 1
    assert main(["reset-user", "someone", "--database-url", url]) == 1
    err = capsys.readouterr().err
    assert err.count("unavailable") == 2


@pytest.mark.usefixtures("app_environment")
@pytest.mark.parametrize("command", [["init-db"], ["status"], ["reset-user", "someone"]])
@pytest.mark.parametrize(
    ("url", "problem"),
    [
        ("mysql+aiomysql://root@127.0.0.1/app", "supports SQLite and PostgreSQL, not 'mysql'"),
        ("not a url", "not a SQLAlchemy URL"),
    ],
)
def test_a_database_the_store_cannot_use_is_a_usage_error_not_a_traceback(
    command: list[str], url: str, problem: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main([*command, "--database-url", url]) == 2
    err = capsys.readouterr().err
    assert problem in err
    assert "Traceback" not in err


def test_check_config_prints_the_settings_with_secrets_masked(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    monkeypatch.chdir(tmp_path)  # no .env here
    key, old = Fernet.generate_key().decode(), Fernet.generate_key().decode()
    monkeypatch.setenv("MFA_GUARD_ENCRYPTION_KEYS", f"{key},{old}")
    monkeypatch.setenv("MFA_GUARD_SMS__TWILIO_AUTH_TOKEN", "twilio-secret-token")
    monkeypatch.setenv("MFA_GUARD_WORKERS", "4")
    monkeypatch.delenv("MFA_GUARD_STORAGE_URI", raising=False)
    monkeypatch.delenv("MFA_GUARD_DEBUG", raising=False)
    assert main(["check-config"]) == 0
    out, err = capsys.readouterr()
    assert "issuer = mfa_guard" in out.splitlines()
    assert "totp.digits = 6" in out.splitlines()
    assert "encryption_keys = ['**********', '**********']" in out.splitlines()
    assert key not in out
    assert old not in out
    assert "twilio-secret-token" not in out + err
    assert "warning: 4 workers with rate limits in memory://" in err
    assert "warning: 2 encryption keys: run `mfa-guard rotate-keys`" in err


def test_check_config_lists_every_problem(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MFA_GUARD_ENCRYPTION_KEYS", raising=False)
    monkeypatch.delenv("MFA_GUARD_DEBUG", raising=False)
    monkeypatch.setenv("MFA_GUARD_TOTP__DIGITS", "7")
    assert main(["check-config"]) == 2
    err = capsys.readouterr().err
    assert "totp.digits" in err


def test_demo_serves_the_inbox_on_the_port_asked(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    import uvicorn

    served: dict[str, object] = {}

    def run(app: object, *, host: str, port: int) -> None:
        served.update(app=app, host=host, port=port)

    monkeypatch.setattr(uvicorn, "run", run)
    # The demo sets up console logging; the suite's own stays as it was.
    monkeypatch.setattr(logging, "basicConfig", lambda **_: None)
    kit_logger = logging.getLogger("mfa_guard")
    monkeypatch.setattr(kit_logger, "level", kit_logger.level)
    monkeypatch.setenv("INBOX_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("PORT", "1")  # restored after the test; the option wins
    for name in ("MFA_GUARD_ENCRYPTION_KEYS", "MFA_GUARD_DATABASE_URL", "MFA_GUARD_STORAGE_URI"):
        monkeypatch.delenv(name, raising=False)
    assert main(["demo", "--port", "8123"]) == 0
    assert (served["host"], served["port"]) == ("127.0.0.1", 8123)
    printed = capsys.readouterr().out
    assert "Acme Inbox demo on http://127.0.0.1:8123/" in printed
    assert "Passkeys and security keys: at http://localhost:8123/" in printed


def test_demo_outside_the_source_says_where_it_lives(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setitem(sys.modules, "examples.inbox.__main__", None)  # not importable
    assert main(["demo"]) == 2
    assert "comes with the source" in capsys.readouterr().err


def test_version_is_the_installed_packages(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["--version"])
    assert exited.value.code == 0
    assert capsys.readouterr().out == f"mfa-guard {metadata.version('mfa-guard')}\n"


@pytest.mark.parametrize(
    ("blocked", "command", "extra"),
    [
        pytest.param(
            "asyncpg",
            ["init-db", "--database-url", "postgresql+asyncpg://127.0.0.1/app"],
            "postgres",
            id="postgres-driver",
        ),
        pytest.param("aiosqlite", ["status"], "sql", id="sqlite-driver"),
        pytest.param("sqlalchemy", ["rotate-keys"], "sql", id="sqlalchemy"),
    ],
)
@pytest.mark.usefixtures("app_environment")
def test_a_missing_extra_is_named_with_its_pip_command(
    blocked: str,
    command: list[str],
    extra: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
) -> None:
    """As on an install without that extra (tests/e2e/test_packaging.py runs a real one)."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MFA_GUARD_DATABASE_URL", raising=False)
    monkeypatch.setitem(sys.modules, blocked, None)  # not importable
    assert main(command) == 5
    err = capsys.readouterr().err
    assert f"({blocked} is not installed): pip install 'mfa-guard[{extra}]'" in err


def test_python_m_mfa_guard_is_the_command() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "mfa_guard", "keygen"],
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, "PYTHONPATH": str(Path(mfa_guard.__file__).parent.parent)},
    )
    Fernet(done.stdout.strip())


@pytest.mark.usefixtures("app_environment")
def test_reset_user_through_the_apps_guard_notifies_the_user(
    database: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from mfa_guard.events import EventKind
    from mfa_guard.notifications import Notice
    from tests import reset_guard

    monkeypatch.setenv("RESET_GUARD_DATABASE", database)
    command = ["reset-user", "owner@acme.test", "--by", "support"]
    assert main([*command, "--guard", "tests.reset_guard:guard"]) == 0
    assert "the app's event sink was told" in capsys.readouterr().out
    assert [n.notice for n in reset_guard.NOTIFIER.notifications] == [Notice.ADMIN_RESET]
    event = reset_guard.EVENTS.events[-1]
    assert (event.kind, event.user_id, event.detail) == (
        EventKind.ADMIN_RESET,
        "owner@acme.test",
        "by=support",
    )
    assert main([*command, "--guard", "tests.reset_guard:guard"]) == 3


@pytest.mark.parametrize(
    ("spec", "said"),
    [
        ("tests.reset_guard", "module:attribute"),
        ("tests.no_such_module:guard", "No module named"),
        ("tests.reset_guard:nothing", "has no attribute"),
        ("tests.reset_guard:not_a_guard", "is a int"),
    ],
)
def test_reset_user_says_how_to_name_the_apps_guard(
    spec: str, said: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["reset-user", "someone", "--guard", spec]) == 2
    assert said in capsys.readouterr().err
