"""Debian's Chromium for the browser tests, driven by Playwright (which cannot download its own
browsers here): missing, a test is skipped, or fails when ``CI=true``, where it must run. And the
screenshots they take, saved into docs/images by ``make screenshots``."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Locator, Page, sync_playwright

CHROMIUM = Path("/usr/bin/chromium")
DOCS_IMAGES = Path(__file__).resolve().parents[1] / "docs" / "images"
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
# Playwright's waits, in milliseconds: generous for a loaded CI machine.
TIMEOUT_MS = 15_000


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


def screenshot(page: Page, tmp_path: Path, name: str, part: Locator | None = None) -> None:
    """The whole page, or only ``part`` of it: always into tmp_path (checked to be a PNG); into
    docs/images with MFA_GUARD_SCREENSHOTS=1 (``make screenshots``)."""
    places = [tmp_path / name]
    if os.environ.get("MFA_GUARD_SCREENSHOTS") == "1":
        DOCS_IMAGES.mkdir(parents=True, exist_ok=True)
        places.append(DOCS_IMAGES / name)
    for place in places:
        if part is None:
            page.screenshot(path=place, full_page=True)
        else:
            box = part.bounding_box()
            assert box is not None, f"{name}: the part to show is not on the page"
            margin = 16  # inside the page's own padding
            # The box is where the window shows it; a full-page clip is where the page has it.
            left, top = page.evaluate("() => [window.scrollX, window.scrollY]")
            page.screenshot(
                path=place,
                clip={
                    "x": left + box["x"] - margin,
                    "y": top + box["y"] - margin,
                    "width": box["width"] + 2 * margin,
                    "height": box["height"] + 2 * margin,
                },
                full_page=True,
            )
        image = place.read_bytes()
        assert image.startswith(PNG_SIGNATURE), place
        assert len(image) > 1000, place
