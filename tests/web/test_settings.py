"""Settings come from MFA_GUARD_* variables; unsafe combinations are refused at start-up."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from mfa_guard import MFAGuardSettings
from tests.apps import ENCRYPTION_KEY, settings_for


def test_settings_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    other_key = "uJ2oAcdOJ9z7HnqXhbS6yGmjrzdbnLh8NUhwJB5x8bc="
    monkeypatch.setenv("MFA_GUARD_ENCRYPTION_KEYS", f"{ENCRYPTION_KEY},{other_key}")
    monkeypatch.setenv("MFA_GUARD_ISSUER", "Acme Inbox")
    monkeypatch.setenv("MFA_GUARD_TOTP__DIGITS", "8")
    monkeypatch.setenv("MFA_GUARD_RATE_LIMITS__FAILURES", "3/minute;10/hour;100/day")
    monkeypatch.setenv("MFA_GUARD_EXEMPT_PATHS", "/login, /static/")
    settings = MFAGuardSettings(_env_file=None)
    assert [k.get_secret_value() for k in settings.encryption_keys] == [ENCRYPTION_KEY, other_key]
    assert settings.issuer == "Acme Inbox"
    assert settings.totp.digits == 8
    assert settings.rate_limits.failures == "3/minute;10/hour;100/day"
    assert settings.exempt_paths == ["/login", "/static"]
    assert ENCRYPTION_KEY not in repr(settings)


def test_the_defaults_are_the_safe_ones() -> None:
    settings = settings_for()
    assert (settings.totp.digits, settings.totp.period, settings.totp.drift_steps) == (6, 30, 1)
    assert settings.storage_uri == "memory://"
    assert settings.mount_path == "/mfa"
    assert not settings.debug


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"encryption_keys": []}, "MFA_GUARD_ENCRYPTION_KEYS"),
        ({"encryption_keys": ["not-a-key"]}, "mfa-guard keygen"),
        ({"totp": {"drift_steps": 3}}, "drift_steps must be between 0 and 2"),
        ({"totp": {"digits": 7}}, "6 or 8"),
        ({"totp": {"period": 45}}, "30 or 60"),
        ({"rate_limits": {"failures": "1000/day"}}, "at most 100"),
        ({"rate_limits": {"failures": "lots"}}, "limits notation"),
        ({"rate_limits": {"failures": ""}}, "at least one limit"),
        ({"mount_path": "mfa"}, "mount_path"),
        ({"mount_path": "/"}, "mount_path"),
        ({"exempt_paths": ["/"]}, "every path"),
        ({"recheck_seconds": -1}, "recheck_seconds"),
        ({"recheck_seconds": 100_000}, "recheck_seconds"),
        ({"verified_lifetime_seconds": 10}, "at least 60"),
        ({"issuer": "Acme:Inbox"}, "without ':'"),
        ({"home_path": "//evil.test"}, "home_path"),
        ({"trusted_origins": ["evil.test"]}, "https://host"),
    ],
)
def test_unsafe_settings_are_refused_with_a_message_that_says_what_to_change(
    overrides: dict[str, Any], message: str
) -> None:
    with pytest.raises(ValidationError, match=message):
        settings_for(**overrides)


def test_debug_mode_runs_without_a_key() -> None:
    assert MFAGuardSettings(_env_file=None, debug=True).encryption_keys == []
