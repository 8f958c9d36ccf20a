"""The session marker: what it holds, how it loads, verifies and goes stale; pure rules."""

from __future__ import annotations

import pytest

from mfa_guard.core.marker import VERSION, EnrolmentSummary, Marker, subject_of

KEY = b"k" * 32


def _marker() -> Marker:
    base = Marker.fresh(subject_of("solo", KEY), EnrolmentSummary(True, 3), 1000.0)
    loaded = Marker.load(base.dump(), subject_of("solo", KEY))
    assert loaded == base
    return loaded


def test_the_marker_holds_no_user_id() -> None:
    marker = Marker.fresh(subject_of("solo@example.test", KEY), EnrolmentSummary(True, 1), 0.0)
    assert "solo" not in repr(marker.dump())


def test_a_marker_bound_to_another_user_is_ignored() -> None:
    raw = Marker.fresh(subject_of("alice", KEY), EnrolmentSummary(True, 1), 0.0).dump()
    assert Marker.load(raw, subject_of("alice", KEY)) is not None
    assert Marker.load(raw, subject_of("mallory", KEY)) is None


def _raw(**changes: object) -> list[object]:
    """A well-formed stored marker for the subject ``x``, with some fields changed."""
    fields = {
        "v": VERSION,
        "sub": "x",
        "n": "nonce",
        "chk": 1.0,
        "ep": 1,
        "enr": True,
        "vat": 1.0,
        "m": "totp",
        "eb": None,
    }
    return list((fields | changes).values())


def test_a_well_formed_marker_loads() -> None:
    assert Marker.load(_raw(), "x") == Marker("x", "nonce", 1.0, 1, True, 1.0, "totp", None)
    assert Marker.load(_raw(chk=1, vat=None, m=None, eb=5), "x") is not None


@pytest.mark.parametrize(
    "raw",
    [
        None,
        "string",
        {},
        [],
        _raw()[:-1],
        [*_raw(), None],
        # Version 1 was an object, with an HMAC-SHA256 subject: re-checked, never read.
        {"v": 1, "sub": "x", "n": "n", "chk": 1.0, "ep": 1, "enr": True},
        _raw(v=1),
        _raw(v=float(VERSION)),
        _raw(v=True),
        _raw(sub=5),
        _raw(sub="y"),
        _raw(sub="\u00e9"),
        _raw(n=None),
        _raw(chk="soon"),
        _raw(chk=True),
        _raw(ep=True),
        _raw(ep=1.0),
        _raw(enr=1),
        _raw(vat="yes"),
        _raw(vat=False),
        _raw(m="magic"),
        _raw(m=["totp"]),
        _raw(m={}),
        _raw(eb="tomorrow"),
        _raw(eb=True),
    ],
)
def test_malformed_markers_are_treated_as_none(raw: object) -> None:
    assert Marker.load(raw, "x") is None


def test_the_subject_is_a_keyed_hash_of_the_user_id() -> None:
    subject = subject_of("solo@example.test", KEY)
    assert subject == subject_of("solo@example.test", KEY)
    assert subject != subject_of("solo@example.test", b"j" * 32)
    assert subject != subject_of("solo@example.tesT", KEY)
    assert len(subject) == 36
    assert "solo" not in subject


def test_verifying_rotates_the_nonce_and_stamps_the_time() -> None:
    marker = _marker()
    verified = marker.verified("totp", 3, 2000.0)
    assert verified.nonce != marker.nonce
    assert verified.verified_at == 2000.0
    assert verified.method == "totp"


def test_another_epoch_ends_the_verified_state() -> None:
    verified = _marker().verified("totp", 3, 1000.0)
    assert verified.refreshed(EnrolmentSummary(True, 3), 1010.0).verified_at == 1000.0
    assert verified.refreshed(EnrolmentSummary(True, 4), 1010.0).verified_at is None
    assert verified.refreshed(EnrolmentSummary(False, 3), 1010.0).verified_at is None


def test_staleness_follows_the_recheck_interval_and_a_clock_going_back() -> None:
    marker = _marker()
    assert not marker.is_stale(1059.0, 60)
    assert marker.is_stale(1060.0, 60)
    assert marker.is_stale(999.0, 60)
    assert marker.is_stale(1000.0, 0)
