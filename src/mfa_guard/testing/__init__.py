"""Helpers for testing apps that use mfa_guard, and the contract suites adapters must pass."""

from __future__ import annotations

from mfa_guard.core import totp


class FrozenClock:
    """A clock that moves only when told to: ``clock.advance(30)``."""

    def __init__(self, now: float = 1_800_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def current_code(
    secret: str, now: float, *, digits: int = 6, period: int = 30, steps: int = 0
) -> str:
    """The TOTP code an authenticator app shows at ``now`` (``steps`` later or earlier)."""
    params = totp.TOTPParameters(digits=digits, period=period)
    return totp.code_at(secret.replace(" ", ""), params, totp.step_at(now, params) + steps)


__all__ = ["FrozenClock", "current_code"]
