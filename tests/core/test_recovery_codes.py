"""Recovery codes: drawn, hashed, found and refused; pure rules."""

from __future__ import annotations

import math

import pytest

from mfa_guard.core import recovery


def test_recovery_codes_have_at_least_64_bits_and_are_unique() -> None:
    codes = recovery.generate()
    assert len(codes) == 10
    assert len(set(codes)) == 10
    for code in codes:
        canonical = recovery.normalise(code)
        assert canonical is not None
        assert len(canonical) * math.log2(32) >= 64


def test_recovery_codes_are_stored_as_salted_hashes_only() -> None:
    codes = recovery.generate(3)
    stored = recovery.hash_set(codes)
    other = recovery.hash_set(codes)
    assert stored.salt != other.salt
    assert set(stored.hashes).isdisjoint(other.hashes)
    for code in codes:
        canonical = recovery.normalise(code)
        assert canonical is not None
        assert all(canonical not in h for h in stored.hashes)
    assert stored.params.startswith("scrypt:")


def test_a_recovery_code_is_found_whatever_its_case_and_dashes() -> None:
    codes = recovery.generate(2)
    stored = recovery.hash_set(codes)
    typed = codes[1].upper().replace("-", " ")
    canonical = recovery.normalise(typed)
    assert canonical is not None
    found = recovery.find(recovery.hash_code(canonical, stored.salt, stored.params), stored.hashes)
    assert found == stored.hashes[1]


@pytest.mark.parametrize(
    "raw", ["", "abcd", "abcd-efgh-ijkl-mno1", "x" * 100, "abcd-efgh-ijkl-mnop-q"]
)
def test_malformed_recovery_codes_are_refused(raw: str) -> None:
    assert recovery.normalise(raw) is None
