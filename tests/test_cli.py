from __future__ import annotations

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
