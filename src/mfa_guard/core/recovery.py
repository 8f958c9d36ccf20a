"""Recovery codes: 80 random bits each, shown once, stored as salted scrypt hashes.

NIST SP 800-63B-4 4.2.1.1 asks for a salted key-derivation function when a secret has fewer
than 112 bits. One salt serves a whole set so a submitted code is hashed once and compared
(in constant time) against every unused hash.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

COUNT = 10
# 16 characters of base32 = 80 bits (>= 64 bits, ASVS 2.6.2).
_CODE_CHARS = 16
_ALPHABET = "abcdefghijklmnopqrstuvwxyz234567"
# scrypt cost: about 10 ms and 8 MiB on a current core; the parameters are stored with the set.
SCRYPT_N = 2**13
SCRYPT_R = 8
SCRYPT_P = 1
SCRYPT_PARAMS = f"scrypt:{SCRYPT_N}:{SCRYPT_R}:{SCRYPT_P}"
MAX_INPUT_LENGTH = 64


@dataclass(frozen=True, slots=True)
class RecoveryCodeSet:
    """The stored form: KDF parameters, salt, and one hash per unused code."""

    salt: str
    hashes: tuple[str, ...]
    params: str = SCRYPT_PARAMS


def generate(count: int = COUNT) -> list[str]:
    """Fresh codes shown to the user, formatted ``abcd-efgh-ijkl-mnop``."""
    codes = []
    for _ in range(count):
        raw = "".join(secrets.choice(_ALPHABET) for _ in range(_CODE_CHARS))
        codes.append("-".join(raw[i : i + 4] for i in range(0, _CODE_CHARS, 4)))
    return codes


def normalise(raw: str) -> str | None:
    """The canonical 16 characters (case, spaces and dashes ignored), or ``None``."""
    if len(raw) > MAX_INPUT_LENGTH:
        return None
    code = raw.replace("-", "").replace(" ", "").lower()
    if len(code) != _CODE_CHARS or any(ch not in _ALPHABET for ch in code):
        return None
    return code


def hash_code(code: str, salt: str, params: str = SCRYPT_PARAMS) -> str:
    _, n, r, p = params.split(":")
    digest = hashlib.scrypt(
        code.encode("ascii"),
        salt=base64.b64decode(salt),
        n=int(n),
        r=int(r),
        p=int(p),
        maxmem=256 * 1024 * 1024,
        dklen=32,
    )
    return base64.b64encode(digest).decode("ascii")


def hash_set(codes: Iterable[str]) -> RecoveryCodeSet:
    salt = base64.b64encode(secrets.token_bytes(16)).decode("ascii")
    hashes = []
    for code in codes:
        canonical = normalise(code)
        if canonical is None:
            raise ValueError("not a recovery code")
        hashes.append(hash_code(canonical, salt))
    return RecoveryCodeSet(salt=salt, hashes=tuple(hashes))


def find(candidate_hash: str, hashes: Sequence[str]) -> str | None:
    """The stored hash equal to ``candidate_hash``, compared in constant time against all."""
    found: str | None = None
    for stored in hashes:
        if hmac.compare_digest(stored.encode("ascii"), candidate_hash.encode("ascii")):
            found = stored
    return found
