"""The access decision on a marker, and how long an admitted marker stays admitted; pure rules."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from mfa_guard.core.marker import EnrolmentSummary, Marker
from mfa_guard.core.policy import Decision, admitted_until, decide


def test_the_decision() -> None:
    not_enrolled = Marker.fresh("s", EnrolmentSummary(False, 0), 0.0)
    enrolled = Marker.fresh("s", EnrolmentSummary(True, 1), 0.0)
    verified = enrolled.verified("totp", 1, 100.0)
    assert decide(not_enrolled, 100.0, verified_lifetime_seconds=60) is Decision.ALLOW
    assert decide(enrolled, 100.0, verified_lifetime_seconds=60) is Decision.CHALLENGE
    assert decide(verified, 159.0, verified_lifetime_seconds=60) is Decision.ALLOW
    assert decide(verified, 160.0, verified_lifetime_seconds=60) is Decision.CHALLENGE


# Instants near the boundaries: whole seconds, and fractions that do not add up exactly.
_INSTANTS = st.one_of(
    st.integers(990, 1200).map(float),
    st.floats(990.0, 1200.0, allow_nan=False),
    st.just(1000.1 + 60),
)


@given(
    enrolled=st.booleans(),
    verified_at=st.one_of(st.none(), _INSTANTS),
    enrol_by=st.one_of(st.none(), _INSTANTS),
    method=st.sampled_from(["totp", "sms", "webauthn", "recovery", "device"]),
    no_sms_by=st.one_of(st.none(), _INSTANTS),
    passkey_by=st.one_of(st.none(), _INSTANTS),
    now=_INSTANTS,
    recheck=st.sampled_from([0, 1, 60, 300]),
    lifetime=st.sampled_from([60, 120, 3600]),
    checked_at=st.sampled_from([1000.0, 1000.1, 1000]),
)
def test_a_marker_is_admitted_exactly_while_fresh_and_allowed(
    enrolled: bool,
    verified_at: float | None,
    enrol_by: float | None,
    method: str,
    no_sms_by: float | None,
    passkey_by: float | None,
    now: float,
    recheck: int,
    lifetime: int,
    checked_at: float,
) -> None:
    # The middleware lets an admitted marker in again while checked_at <= now < until, with
    # no decision: that must be the decision's own answer, to the last float.
    marker = Marker(
        "s", "n", checked_at, 1, enrolled, verified_at, method, enrol_by, no_sms_by, passkey_by
    )
    until = admitted_until(marker, recheck_seconds=recheck, verified_lifetime_seconds=lifetime)
    allowed = (
        not marker.is_stale(now, recheck)
        and decide(marker, now, verified_lifetime_seconds=lifetime) is Decision.ALLOW
    )
    assert (until is not None and checked_at <= now < until) == allowed


def test_a_policy_of_methods_challenges_a_session_verified_otherwise_from_its_deadline() -> None:
    enrolled = Marker.fresh("s", EnrolmentSummary(True, 1), 0.0, None, 500.0, 800.0)

    def decided(method: str, now: float) -> Decision:
        marker = enrolled.verified(method, 1, 100.0)
        return decide(marker, now, verified_lifetime_seconds=3600)

    # No texted code from 500, nothing but a passkey from 800.
    assert [decided("sms", now) for now in (499.0, 500.0)] == [Decision.ALLOW, Decision.STRONGER]
    for method in ("totp", "recovery", "device"):
        assert [decided(method, now) for now in (799.0, 800.0)] == [
            Decision.ALLOW,
            Decision.STRONGER,
        ]
    assert decided("webauthn", 3000.0) is Decision.ALLOW
    # Not verified at all: challenged, as ever.
    assert decide(enrolled, 900.0, verified_lifetime_seconds=3600) is Decision.CHALLENGE


def test_a_marker_written_before_the_policies_of_methods_is_read_without_them() -> None:
    marker = Marker.fresh("subject", EnrolmentSummary(True, 3), 10.0, 20.0, 30.0, 40.0)
    dumped = marker.dump()
    assert len(dumped) == 11
    assert Marker.load(dumped, "subject") == marker
    older = dumped[:9]
    assert Marker.load(older, "subject") == marker._replace(no_sms_by=None, passkey_by=None)
    for wrong in ("30", True, [30.0]):
        assert Marker.load([*dumped[:9], wrong, None], "subject") is None
        assert Marker.load([*dumped[:10], wrong], "subject") is None
    assert Marker.load(dumped[:10], "subject") is None
