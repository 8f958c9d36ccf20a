"""Fixtures of the end-to-end tests."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from playwright.sync_api import Browser

from tests.chromium import launched


@pytest.fixture
def browser() -> Iterator[Browser]:
    with launched() as browser:
        yield browser
