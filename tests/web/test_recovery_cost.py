"""The scrypt cost of recovery codes: the real one where it is the point, a cheaper one refused
unless it is the testing one, and sets checked at the cost they were stored with."""

from __future__ import annotations

import inspect
import re

import pytest

from mfa_guard import ConfigurationError, MFAGuard, services
from mfa_guard.core import recovery
from mfa_guard.testing import CHEAP_KDF
from tests.apps import build_app, enrol, sign_in


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
