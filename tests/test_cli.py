from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
from cryptography.fernet import Fernet

from mfa_guard import MFAGuardSettings
from mfa_guard.cli import main


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
    assert {"mfa_guard_enrolments", "mfa_guard_recovery_codes"} <= tables


def test_init_db_says_when_the_database_is_down(capsys: pytest.CaptureFixture[str]) -> None:
    url = "postgresql+asyncpg://postgres@127.0.0.1:1/test"
    assert main(["init-db", "--database-url", url]) == 1
    assert "unavailable" in capsys.readouterr().err
