from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import TYPE_CHECKING

import httpx
import pytest

# Helpers outside test modules: let pytest explain their failed asserts in detail too.
pytest.register_assert_rewrite(
    "mfa_guard.testing.contract",
    "mfa_guard.testing.events_contract",
    "mfa_guard.testing.sites_contract",
    "tests.scenarios",
)

from tests.apps import GuardedApp, build_app  # noqa: E402
from tests.log_guard import LogGuard, install, marked_reason, report  # noqa: E402

if TYPE_CHECKING:
    from playwright.sync_api import Browser


@pytest.fixture
def guarded() -> GuardedApp:
    return build_app()


@pytest.fixture
async def client(guarded: GuardedApp) -> AsyncIterator[httpx.AsyncClient]:
    async with guarded.client() as client:
        yield client


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    """One headless Chromium for a whole module of browser tests (sync ones: between two calls
    Playwright's sync API leaves its event loop marked running in this thread, where no async
    test could run its own); each test opens browser contexts of its own."""
    from tests.chromium import launched  # Playwright is a dev tool, not in the `test` group

    with launched() as chromium:
        yield chromium


# -- no secret in any log (docs/security.md "logs"; tests/log_guard.py) ---------------------

_log_guard = LogGuard()


@pytest.fixture(scope="session", autouse=True)
def _secrets_and_records_of_the_session() -> Iterator[LogGuard]:
    """For the whole session: every secret the kit draws or receives is remembered, and every
    logger creates its records at every level (handlers still get only what their levels let
    through)."""
    with pytest.MonkeyPatch.context() as patch:
        install(_log_guard, patch)
        yield _log_guard
    leaked, secrets = _log_guard.finish()
    assert not leaked, report(leaked, secrets)


@pytest.fixture(autouse=True)
def no_secret_in_any_log(
    request: pytest.FixtureRequest, _secrets_and_records_of_the_session: LogGuard
) -> Iterator[LogGuard]:
    """Fails the test at teardown if a record logged during it, at any level on any logger,
    holds a secret the kit drew or received (during it, or in a wider fixture). A test that must
    log one says why with ``@pytest.mark.logs_secrets(reason=...)``."""
    guard = _secrets_and_records_of_the_session
    reason = marked_reason(request.node)
    guard.start()
    yield guard
    leaked, secrets = guard.finish()
    if leaked and reason is None:
        pytest.fail(report(leaked, secrets), pytrace=False)
