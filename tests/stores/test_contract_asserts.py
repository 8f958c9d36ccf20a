"""The contract suites run in the app's own test suite, their asserts in mfa_guard's files: they
must catch a broken adapter there as they do here, with pytest's account of what differed, and
under ``python -O`` too (which strips the asserts of modules pytest does not rewrite: every
contract would pass, whatever the store did)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

BROKEN_STORE = '''
from mfa_guard.core.marker import EnrolmentSummary
from mfa_guard.stores.memory import MemoryStore
from mfa_guard.testing.contract import MFAStoreContract

import pytest


class EveryoneEnrolled(MemoryStore):
    """A store that says every user is enrolled: what the contract's first test must refuse."""

    async def summary(self, user_id: str) -> EnrolmentSummary:
        return EnrolmentSummary(enrolled=True, epoch=7)


class TestEveryoneEnrolled(MFAStoreContract):
    @pytest.fixture
    def store(self) -> EveryoneEnrolled:
        return EveryoneEnrolled()
'''

PYTEST_INI = "[pytest]\nasyncio_mode = auto\nasyncio_default_fixture_loop_scope = function\n"


@pytest.mark.parametrize("optimize", [[], ["-O"]], ids=["python", "python -O"])
def test_a_broken_store_fails_its_contract_in_the_apps_own_suite(
    tmp_path: Path, optimize: list[str]
) -> None:
    (tmp_path / "test_my_store.py").write_text(BROKEN_STORE, encoding="utf-8")
    (tmp_path / "pytest.ini").write_text(
        "[pytest]\nasyncio_mode = auto\nasyncio_default_fixture_loop_scope = function\n",
        encoding="utf-8",
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST_")}
    run = subprocess.run(  # noqa: S603 (this Python, arguments from the test)
        [
            sys.executable,
            *optimize,
            "-m",
            "pytest",
            "-p",
            "no:cacheprovider",
            "-p",
            "no:xdist",
            "-k",
            "unknown_user_is_not_enrolled",
            "test_my_store.py",
        ],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 1, run.stdout + run.stderr
    assert "1 failed" in run.stdout, run.stdout
    # pytest's account of the assert, as for one written in the app's test module.
    assert "enrolled: True != False" in run.stdout, run.stdout
