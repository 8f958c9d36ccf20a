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
MAX_INPUT_LENGTH = 64
# What scrypt may allocate while hashing: a cost that needs more is refused (cost_problem), and
# a stored set's parameters are held to it too.
MAX_MEMORY = 256 * 1024 * 1024
# The least memory (128 * n * r bytes) a cost of new sets may take, the testing one aside.
MIN_MEMORY = 8 * 1024 * 1024
MAX_PARALLELISM = 16


@dataclass(frozen=True, slots=True)
class ScryptCost:
    """The scrypt cost of new recovery-code sets (RFC 7914): ``n`` (a power of two: time and
    memory), ``r`` (block size: 128 * n * r bytes of memory) and ``p`` (parallelism: time).
    Each set stores the parameters it was hashed with and is verified with those, so changing
    the cost applies to sets made from then on and never locks out an existing one.

    The default, n = 2**13, r = 8, p = 1, takes 8 MiB and about 10 ms per code on a current
    core, and is the floor: a cost for real sets takes at least 8 MiB (128 * n * r bytes). The
    knob raises it; tests lower it with ``mfa_guard.testing.CHEAP_KDF`` and only with it.
    :func:`cost_problem` says what is wrong with a cost: under the floor, more memory than
    scrypt may allocate here (256 MiB), n not a power of two below 2 ** (16 * r), p over 16."""

    n: int = 2**13
    r: int = 8
    p: int = 1

    @property
    def params(self) -> str:
        """How a set stores this cost: ``scrypt:N:r:p``."""
        return f"scrypt:{self.n}:{self.r}:{self.p}"

    @property
    def memory(self) -> int:
        """The bytes scrypt's large array takes: 128 * n * r."""
        return 128 * self.n * self.r


DEFAULT_COST = ScryptCost()
# What a set whose row has no parameters was hashed with: the default the kit started with.
SCRYPT_PARAMS = DEFAULT_COST.params
# The one cost under the floor that is accepted, by identity: tests hash with it (about 10 us a
# code) as mfa_guard.testing.CHEAP_KDF. A cost built with the same values is refused.
TESTING_COST = ScryptCost(n=2, r=1, p=1)


def cost_problem(cost: ScryptCost) -> str | None:
    """Why ``cost`` must not hash new sets, or ``None`` if it may."""
    if cost is TESTING_COST:
        return None
    if not isinstance(cost, ScryptCost):
        return f"the recovery codes' KDF cost must be a ScryptCost, not {type(cost).__name__}"
    values = (cost.n, cost.r, cost.p)
    if any(type(value) is not int or value < 1 for value in values):
        return f"scrypt's n, r and p must be positive integers, not {values}"
    if cost.n < 2 or cost.n & (cost.n - 1):
        return f"scrypt's n must be a power of two greater than 1, not {cost.n}"
    if cost.n.bit_length() > 16 * cost.r:  # RFC 7914: n < 2 ** (128 * r / 8)
        return f"scrypt's n must be below 2 ** (16 * r), 2 ** {16 * cost.r} here, not {cost.n}"
    if cost.p > MAX_PARALLELISM:
        return f"scrypt's p must be at most {MAX_PARALLELISM}, not {cost.p}"
    if cost.memory < MIN_MEMORY:
        return (
            f"{cost.params} is too cheap for recovery codes: 128 * n * r must be at least "
            f"{MIN_MEMORY // 2**20} MiB (the default {DEFAULT_COST.params} takes 8 MiB); tests "
            "use mfa_guard.testing.CHEAP_KDF"
        )
    if 128 * cost.r * (cost.n + cost.p + 2) > MAX_MEMORY:  # what OpenSSL counts
        return (
            f"{cost.params} needs more memory than scrypt may allocate here "
            f"({MAX_MEMORY // 2**20} MiB)"
        )
    return None


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
        maxmem=MAX_MEMORY,
        dklen=32,
    )
    return base64.b64encode(digest).decode("ascii")


def hash_set(codes: Iterable[str], cost: ScryptCost = DEFAULT_COST) -> RecoveryCodeSet:
    """The stored form of ``codes``: one new salt, each code hashed at ``cost``."""
    salt = base64.b64encode(secrets.token_bytes(16)).decode("ascii")
    hashes = []
    for code in codes:
        canonical = normalise(code)
        if canonical is None:
            raise ValueError("not a recovery code")
        hashes.append(hash_code(canonical, salt, cost.params))
    return RecoveryCodeSet(salt=salt, hashes=tuple(hashes), params=cost.params)


def find(candidate_hash: str, hashes: Sequence[str]) -> str | None:
    """The stored hash equal to ``candidate_hash``, compared in constant time against all."""
    found: str | None = None
    for stored in hashes:
        if hmac.compare_digest(stored.encode("ascii"), candidate_hash.encode("ascii")):
            found = stored
    return found
