"""TOTP (RFC 6238) on top of pyotp, with the time step made explicit so replays can be refused.

The RFC 6238 appendix B vectors (SHA1, 8 digits, 30 s):

>>> totp = TOTPParameters(digits=8, period=30)
>>> secret = base64.b32encode(b"12345678901234567890").decode()
>>> [code_at(secret, totp, step_at(t, totp)) for t in (59, 1111111109, 1234567890, 2000000000)]
['94287082', '07081804', '89005924', '69279037']
"""

from __future__ import annotations

import base64
import hmac
import secrets
from dataclasses import dataclass

import pyotp

# RFC 4226 4 requires at least 128 bits and recommends 160: 20 random bytes = 32 base32 characters.
SECRET_BYTES = 20
# Longer inputs are refused before any work is done.
MAX_CODE_LENGTH = 64


@dataclass(frozen=True, slots=True)
class TOTPParameters:
    digits: int = 6
    period: int = 30
    drift_steps: int = 1


def new_secret() -> str:
    """A base32 secret of 160 bits from the operating system's CSPRNG."""
    return base64.b32encode(secrets.token_bytes(SECRET_BYTES)).decode("ascii")


def step_at(timestamp: float, params: TOTPParameters) -> int:
    return int(timestamp // params.period)


def code_at(secret: str, params: TOTPParameters, step: int) -> str:
    totp = pyotp.TOTP(secret, digits=params.digits, interval=params.period)
    return str(totp.generate_otp(step))


def matching_step(secret: str, params: TOTPParameters, code: str, timestamp: float) -> int | None:
    """The time step in the drift window whose code equals ``code``, or ``None``.

    Every candidate is compared in constant time and the loop never stops early, so the
    response time does not tell which step (if any) matched.
    """
    now = step_at(timestamp, params)
    found: int | None = None
    encoded = code.encode("ascii", "replace")
    for step in range(now - params.drift_steps, now + params.drift_steps + 1):
        if hmac.compare_digest(code_at(secret, params, step).encode("ascii"), encoded):
            found = step if found is None else found
    return found


def normalise_code(raw: str, digits: int) -> str | None:
    """The code as ``digits`` ASCII digits (spaces and dashes ignored), or ``None``."""
    if len(raw) > MAX_CODE_LENGTH:
        return None
    code = raw.replace(" ", "").replace("-", "")
    if len(code) != digits or not (code.isascii() and code.isdigit()):
        return None
    return code


def provisioning_uri(secret: str, params: TOTPParameters, *, account: str, issuer: str) -> str:
    """The Key Uri Format ``otpauth://`` URI, with the issuer in the label and as a parameter."""
    totp = pyotp.TOTP(secret, digits=params.digits, interval=params.period, issuer=issuer)
    return str(totp.provisioning_uri(name=account, issuer_name=issuer))


def grouped(secret: str) -> str:
    """The key in groups of four characters, for typing it into an app by hand."""
    return " ".join(secret[i : i + 4] for i in range(0, len(secret), 4))
