"""RFC 4226 / RFC 6238 vectors and the TOTP rules (docs/security.md: TOTP, clock skew)."""

from __future__ import annotations

import base64
import hashlib
from urllib.parse import parse_qs, unquote, urlsplit

import pyotp
import pytest

from mfa_guard.core import totp

RFC_SECRET = base64.b32encode(b"12345678901234567890").decode()
HOTP_VECTORS = (
    "755224 287082 359152 969429 338314 254676 287922 162583 399871 520489".split()  # noqa: SIM905
)
TOTP_VECTORS = [
    # time, SHA1, SHA256, SHA512 (RFC 6238 appendix B)
    (59, "94287082", "46119246", "90693936"),
    (1111111109, "07081804", "68084774", "25091201"),
    (1111111111, "14050471", "67062674", "99943326"),
    (1234567890, "89005924", "91819424", "93441116"),
    (2000000000, "69279037", "90698825", "38618901"),
    (20000000000, "65353130", "77737706", "47863826"),
]


@pytest.mark.parametrize(("counter", "expected"), list(enumerate(HOTP_VECTORS)))
def test_rfc4226_hotp_vectors(counter: int, expected: str) -> None:
    assert totp.code_at(RFC_SECRET, totp.TOTPParameters(digits=6), counter) == expected


@pytest.mark.parametrize(("at", "sha1", "sha256", "sha512"), TOTP_VECTORS)
def test_rfc6238_totp_vectors(at: int, sha1: str, sha256: str, sha512: str) -> None:
    params = totp.TOTPParameters(digits=8, period=30)
    assert totp.code_at(RFC_SECRET, params, totp.step_at(at, params)) == sha1
    # The kit issues SHA1 secrets (what every app honours); pyotp underneath covers the others.
    seeds = {
        sha256: (b"1234567890" * 3 + b"12", hashlib.sha256),
        sha512: (b"1234567890" * 6 + b"1234", hashlib.sha512),
    }
    for expected, (seed, digest) in seeds.items():
        key = base64.b32encode(seed).decode()
        assert pyotp.TOTP(key, digits=8, digest=digest).at(at) == expected


def test_a_new_secret_has_160_random_bits() -> None:
    secrets = {totp.new_secret() for _ in range(100)}
    assert len(secrets) == 100
    assert all(len(base64.b32decode(s)) * 8 >= 160 for s in secrets)


@pytest.mark.parametrize(
    ("offset_steps", "accepted"), [(-2, False), (-1, True), (0, True), (1, True), (2, False)]
)
def test_one_step_of_drift_is_accepted_each_side_and_two_are_refused(
    offset_steps: int, accepted: bool
) -> None:
    params = totp.TOTPParameters()
    now = 1_800_000_015.0
    step = totp.step_at(now, params) + offset_steps
    code = totp.code_at(RFC_SECRET, params, step)
    assert (totp.matching_step(RFC_SECRET, params, code, now) == step) is accepted


def test_the_matching_step_is_returned_for_replay_checks() -> None:
    params = totp.TOTPParameters()
    now = 1_800_000_000.0
    code = totp.code_at(RFC_SECRET, params, totp.step_at(now, params))
    assert totp.matching_step(RFC_SECRET, params, code, now) == totp.step_at(now, params)
    wrong = str((int(code) + 1) % 1_000_000).zfill(6)
    neighbours = {totp.code_at(RFC_SECRET, params, totp.step_at(now, params) + d) for d in (-1, 1)}
    if wrong not in neighbours:
        assert totp.matching_step(RFC_SECRET, params, wrong, now) is None


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("123456", "123456"),
        (" 123 456 ", "123456"),
        ("123-456", "123456"),
        ("12345", None),
        ("1234567", None),
        ("12a456", None),
        ("\uff11\uff12\uff13\uff14\uff15\uff16", None),  # full-width digits
        ("123\x00456", None),
        ("", None),
        ("1" * 10_000, None),
    ],
)
def test_codes_are_normalised_or_refused(raw: str, expected: str | None) -> None:
    assert totp.normalise_code(raw, 6) == expected


def test_provisioning_uri_names_the_issuer_in_label_and_parameter() -> None:
    uri = totp.provisioning_uri(
        RFC_SECRET, totp.TOTPParameters(), account="solo@example.test", issuer="Acme Inbox"
    )
    parts = urlsplit(uri)
    assert parts.scheme == "otpauth"
    assert parts.netloc == "totp"
    assert unquote(parts.path) == "/Acme Inbox:solo@example.test"
    query = parse_qs(parts.query)
    assert query["issuer"] == ["Acme Inbox"]
    assert query["secret"] == [RFC_SECRET]


def test_the_key_is_grouped_by_four_for_manual_entry() -> None:
    assert totp.grouped("ABCDEFGHIJKLMNOP") == "ABCD EFGH IJKL MNOP"
