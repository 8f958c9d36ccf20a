"""Recovery codes, the session marker and the access decision: pure rules."""

from __future__ import annotations

import inspect
import math
import re

import pytest
import segno
from hypothesis import given
from hypothesis import strategies as st

from mfa_guard import ConfigurationError, MFAGuard, services
from mfa_guard.core import recovery
from mfa_guard.core.marker import VERSION, EnrolmentSummary, Marker, subject_of
from mfa_guard.core.policy import Decision, admitted_until, decide
from mfa_guard.services import QRCodes, qr_svg
from mfa_guard.testing import CHEAP_KDF
from tests.apps import build_app, enrol, sign_in

KEY = b"k" * 32


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
    stored = recovery.hash_set(codes, CHEAP_KDF)
    other = recovery.hash_set(codes, CHEAP_KDF)
    assert stored.salt != other.salt
    assert set(stored.hashes).isdisjoint(other.hashes)
    for code in codes:
        canonical = recovery.normalise(code)
        assert canonical is not None
        assert all(canonical not in h for h in stored.hashes)
    assert stored.params == "scrypt:2:1:1"


def test_a_recovery_code_is_found_whatever_its_case_and_dashes() -> None:
    codes = recovery.generate(2)
    stored = recovery.hash_set(codes, CHEAP_KDF)
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


# -- the scrypt cost of recovery codes: the real one where it is the point --------------------


def test_the_default_cost_is_the_one_a_set_is_stored_with() -> None:
    stored = recovery.hash_set(recovery.generate(1))
    assert stored.params == "scrypt:8192:8:1" == recovery.DEFAULT_COST.params
    # What an app that says nothing of the cost hashes its users' sets at.
    for wired in (MFAGuard, services.MFAService):
        default = inspect.signature(wired).parameters["recovery_kdf"].default
        assert default is recovery.DEFAULT_COST


async def test_a_set_verifies_at_its_own_cost_after_the_cost_changes() -> None:
    """Sets keep the parameters they were hashed with: a guard with another cost checks each at
    its own, and hashes the sets it makes at its own."""
    cheap = build_app()
    async with cheap.client() as client:
        await sign_in(client)
        _, cheap_codes = await enrol(cheap, client)
    real = build_app(cheap.store, recovery_kdf=recovery.DEFAULT_COST)
    async with real.client() as client:
        await sign_in(client)
        used = await client.post(
            "/mfa/api/verify", json={"method": "recovery", "code": cheap_codes[0]}
        )
        assert used.status_code == 200, used.text
        fresh = await client.post("/mfa/api/recovery-codes", json={})
        assert fresh.status_code == 200, fresh.text
        real_codes = fresh.json()["recovery_codes"]
    enrolment = await real.store.get("solo@example.test")
    assert enrolment is not None
    assert enrolment.recovery is not None
    assert enrolment.recovery.params == recovery.DEFAULT_COST.params
    back = build_app(real.store)
    async with back.client() as client:
        await sign_in(client)
        used = await client.post(
            "/mfa/api/verify", json={"method": "recovery", "code": real_codes[0]}
        )
        assert used.status_code == 200, used.text


@pytest.mark.parametrize(
    ("cost", "problem"),
    [
        (recovery.ScryptCost(n=2, r=1, p=1), "too cheap"),  # the testing values, another object
        (recovery.ScryptCost(n=2**12, r=8, p=1), "too cheap"),  # 4 MiB
        (recovery.ScryptCost(n=2**13, r=4, p=4), "too cheap"),  # time is no stand-in for memory
        (recovery.ScryptCost(n=10_000, r=8, p=1), "power of two"),
        (recovery.ScryptCost(n=2**16, r=1, p=1), "below 2 ** (16 * r)"),
        (recovery.ScryptCost(n=2**18, r=8, p=1), "more memory"),  # 256 MiB and a little more
        (recovery.ScryptCost(n=2**13, r=8, p=17), "p must be at most 16"),
        (recovery.ScryptCost(n=2**13, r=8, p=0), "positive integers"),
        (recovery.ScryptCost(n=True, r=8, p=1), "positive integers"),
        (recovery.ScryptCost(n=8192.0, r=8, p=1), "positive integers"),  # type: ignore[arg-type]
    ],
)
def test_a_cost_that_is_too_cheap_or_cannot_run_is_refused_at_start_up(
    cost: recovery.ScryptCost, problem: str
) -> None:
    refusal = recovery.cost_problem(cost)
    assert refusal is not None
    assert problem in refusal
    with pytest.raises(ConfigurationError, match=re.escape(refusal)):
        build_app(recovery_kdf=cost)


@pytest.mark.parametrize(
    "cost",
    [
        recovery.DEFAULT_COST,
        CHEAP_KDF,  # this very object only
        recovery.ScryptCost(n=2**14, r=8, p=1),
        recovery.ScryptCost(n=2**12, r=16, p=2),
        recovery.ScryptCost(n=2**17, r=8, p=1),  # 128 MiB
    ],
)
def test_the_default_a_higher_cost_and_the_testing_one_are_accepted(
    cost: recovery.ScryptCost,
) -> None:
    assert recovery.cost_problem(cost) is None
    build_app(recovery_kdf=cost)


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
    now=_INSTANTS,
    recheck=st.sampled_from([0, 1, 60, 300]),
    lifetime=st.sampled_from([60, 120, 3600]),
    checked_at=st.sampled_from([1000.0, 1000.1, 1000]),
)
def test_a_marker_is_admitted_exactly_while_fresh_and_allowed(
    enrolled: bool,
    verified_at: float | None,
    enrol_by: float | None,
    now: float,
    recheck: int,
    lifetime: int,
    checked_at: float,
) -> None:
    # The middleware lets an admitted marker in again while checked_at <= now < until, with
    # no decision: that must be the decision's own answer, to the last float.
    marker = Marker("s", "n", checked_at, 1, enrolled, verified_at, "totp", enrol_by)
    until = admitted_until(marker, recheck_seconds=recheck, verified_lifetime_seconds=lifetime)
    allowed = (
        not marker.is_stale(now, recheck)
        and decide(marker, now, verified_lifetime_seconds=lifetime) is Decision.ALLOW
    )
    assert (until is not None and checked_at <= now < until) == allowed


# -- the set-up's QR code, drawn once per pending secret -----------------------------------

URI = "otpauth://totp/Acme:solo?secret=JBSWY3DPEHPK3PXP&issuer=Acme"


def test_a_pending_setups_qr_code_is_drawn_once_and_shown_again() -> None:
    codes = QRCodes(size=2, max_age=600)
    assert codes.get("JBSWY3DPEHPK3PXP", URI, 0.0) is None
    svg = codes.put("JBSWY3DPEHPK3PXP", URI, qr_svg(URI, "Acme"), 0.0)
    assert svg == segno.make(URI, error="m").svg_inline(
        scale=1,
        border=4,
        omitsize=True,
        dark="#000",
        light="#fff",
        title="QR code for Acme",
        svgclass="mfa-qr",
        lineclass=None,
    )
    assert codes.get("JBSWY3DPEHPK3PXP", URI, 599.0) == svg
    # Another account label (or issuer) is another drawing.
    assert codes.get("JBSWY3DPEHPK3PXP", URI.replace("solo", "duo"), 1.0) is None


def test_drawn_qr_codes_are_few_and_short_lived() -> None:
    codes = QRCodes(size=2, max_age=600)
    for n, secret in enumerate(["A", "B", "C"]):
        codes.put(secret, URI, f"<svg {secret}>", float(n))
    assert codes.get("A", URI, 3.0) is None  # the oldest made room
    assert codes.get("B", URI, 601.0) is None  # too old
    assert codes.get("C", URI, 599.0) == "<svg C>"
    assert codes.get("C", URI, -1.0) is None  # a clock gone backwards
    codes.put("D", URI, "<svg D>", 0.0)
    codes.forget("D")
    assert codes.get("D", URI, 0.0) is None


async def test_the_setup_page_draws_its_qr_code_once_and_forgets_it_once_confirmed(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    drawn: list[str] = []

    def drawing(uri: str, issuer: str) -> str:
        drawn.append(uri)
        return qr_svg(uri, issuer)

    monkeypatch.setattr(services, "qr_svg", drawing)
    ga = build_app()
    async with ga.client() as client:
        await sign_in(client)
        setup = (await client.post("/mfa/api/totp/setup", json={})).json()
        for _ in range(3):
            page = await client.get("/mfa/enrol")
            assert setup["qr_svg"] in page.text
        assert drawn == [setup["otpauth_uri"]]
        confirmed = await client.post(
            "/mfa/api/totp/confirm", json={"code": ga.code(setup["secret"])}
        )
        assert confirmed.status_code == 200
    assert ga.guard.service._qr_codes.get(setup["secret"], setup["otpauth_uri"], ga.clock()) is None
