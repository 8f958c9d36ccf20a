"""Debian's Chromium for the browser tests, driven by Playwright (which cannot download its own
browsers here): missing, a test is skipped, or fails when ``CI=true``, where it must run."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, sync_playwright

CHROMIUM = Path("/usr/bin/chromium")


def chromium() -> Path:
    if CHROMIUM.exists():
        return CHROMIUM
    reason = f"{CHROMIUM} is missing (apt-get install chromium)"
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"{reason}; with CI=true the browser tests must run")
    pytest.skip(reason)


@contextlib.contextmanager
def launched() -> Iterator[Browser]:
    """A headless Chromium, closed on the way out."""
    executable = chromium()
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=executable, args=["--no-sandbox"])
        try:
            yield browser
        finally:
            browser.close()
