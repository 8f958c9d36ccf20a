"""The demo's "Security log" (``/sites/{site}/security-log``), told as Acme's owner meets it:
signed in with 2FA, a wrong code then the right one at the challenge, and the log, linked from the
Team page, shows it all, newest first, with who, when, how and from which browser; narrowed to
the failures; older events a page further. Nobody but the site's owners reads it.

Then in Chromium, on a real uvicorn server, at a desktop's width (1280 px) and a phone's (375
px): ``make screenshots`` saves ``security-log-desktop.png`` and ``security-log-phone.png``
into docs/images.
"""

from __future__ import annotations

import html
import os
import re
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest
from examples.inbox import DEMO_PASSWORD
from examples.inbox.security_log import PAGE_SIZE
from playwright.sync_api import Browser, ViewportSize, expect

from mfa_guard.events import AuditEvent, EventKind
from mfa_guard.stores.events import EventStore
from mfa_guard.testing import FrozenClock, current_code
from tests.apps import demo_inbox
from tests.chromium import TIMEOUT_MS, launched, screenshot
from tests.demo import (
    OWNER,
    Demo,
    csrf_token,
    owner_with_2fa,
    running_demo,
    sign_in,
)
from tests.live import served
from tests.rendering import horizontal_overflow, violations

AGENT = "agent@acme.test"
SOLO = "solo@example.test"
LOG = "/sites/acme/security-log"
LAPTOP_AGENT = (
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/131.0.0.0 Safari/537.36"
)
ROW = re.compile(r'<li data-kind="([a-z_]+)"[^>]*>(.*?)</li>', re.DOTALL)
DESKTOP: ViewportSize = {"width": 1280, "height": 900}
PHONE: ViewportSize = {"width": 375, "height": 812}


@pytest.fixture(autouse=True)
def _demo_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    # The demo reads MFA_GUARD_* from the environment; these tests use its own defaults.
    for name in os.environ:
        if name.upper().startswith("MFA_GUARD_") and name != "MFA_GUARD_SCREENSHOTS":
            monkeypatch.delenv(name)


@pytest.fixture
def clock() -> FrozenClock:
    return FrozenClock()


@pytest.fixture
async def demo(tmp_path: Path, clock: FrozenClock) -> AsyncIterator[Demo]:
    async with running_demo(tmp_path, clock) as demo:
        yield demo


def rows(page: httpx.Response) -> list[tuple[str, str]]:
    """The log's rows: each one's kind and its text, white space made single spaces."""
    assert page.status_code == 200, page.text
    return [
        (kind, html.unescape(re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", row)).strip()))
        for kind, row in ROW.findall(page.text)
    ]


def older_link(page: httpx.Response) -> str | None:
    found = re.search(r'<a href="([^"]+)" rel="next">Older events</a>', page.text)
    return None if found is None else html.unescape(found.group(1))


def demo_log(demo: Demo) -> EventStore:
    log: EventStore | None = demo.app.state.guard.event_store
    assert log is not None
    return log


async def challenged_twice(demo: Demo, owner: httpx.AsyncClient, secret: str) -> None:
    """Signed in again: a wrong code at the challenge, then the right one."""
    assert (await sign_in(owner, OWNER)).status_code == 303
    demo.clock.advance(30)
    page = await owner.get("/mfa/challenge", params={"next": "/inbox"})
    form = {"csrf_token": csrf_token(page.text), "next": "/inbox", "method": "totp"}
    wrong = await owner.post("/mfa/challenge", data={**form, "code": "000000"})
    assert wrong.status_code == 422
    right = await owner.post(
        "/mfa/challenge", data={**form, "code": current_code(secret, demo.clock())}
    )
    assert (right.status_code, right.headers["location"]) == (303, "/inbox")


async def test_the_owner_sees_the_wrong_code_and_the_sign_in_newest_first(demo: Demo) -> None:
    async with demo.browser() as owner:
        owner.headers["user-agent"] = LAPTOP_AGENT
        secret = await owner_with_2fa(demo, owner)
        await challenged_twice(demo, owner, secret)
        team = await owner.get("/sites/acme/team")
        assert f'<a href="{LOG}">Security log</a>' in team.text
        log = await owner.get(LOG)
    assert log.headers["cache-control"] == "no-store"
    assert "<h1>Security log of Acme</h1>" in log.text
    assert rows(log)[:3] == [
        (
            "verified",
            f"Signed in with 2FA {OWNER} Jan 15, 2027, 08:00 UTC · app · Chrome on Windows · "
            "127.0.0.1",
        ),
        (
            "verification_failed",
            f"Wrong code or key {OWNER} Jan 15, 2027, 08:00 UTC · app · Chrome on Windows · "
            "127.0.0.1",
        ),
        (
            "enrolled",
            f"Turned 2FA on {OWNER} Jan 15, 2027, 08:00 UTC · app · Chrome on Windows · 127.0.0.1",
        ),
    ]
    # A failure stands out.
    assert '<li data-kind="verification_failed" class="warning">' in log.text


async def test_the_log_names_the_browsers_in_the_pages_language(demo: Demo) -> None:
    async with demo.browser() as owner:
        owner.headers["user-agent"] = LAPTOP_AGENT
        secret = await owner_with_2fa(demo, owner)
        await challenged_twice(demo, owner, secret)
        french = await owner.get(LOG, headers={"accept-language": "fr"})
        japanese = await owner.get(LOG, headers={"accept-language": "ja"})
    assert '<html lang="fr"' in french.text
    assert all(row.endswith("Chrome sous Windows · 127.0.0.1") for _, row in rows(french)[:3])
    assert all(row.endswith("Windows の Chrome · 127.0.0.1") for _, row in rows(japanese)[:3])


async def test_the_owner_narrows_the_log_to_the_failures(demo: Demo) -> None:
    async with demo.browser() as owner:
        secret = await owner_with_2fa(demo, owner)
        await challenged_twice(demo, owner, secret)
        failures = await owner.get(LOG, params={"kind": "failures"})
        factors = await owner.get(LOG, params={"kind": "factors"})
        site = await owner.get(LOG, params={"kind": "site"})
    assert [kind for kind, _ in rows(failures)] == ["verification_failed"]
    assert '<option value="failures" selected>' in failures.text
    assert [kind for kind, _ in rows(factors)] == ["enrolled"]
    assert rows(site) == []
    assert "No events of this kind yet." in site.text


async def test_older_events_are_a_page_further_each_once(demo: Demo) -> None:
    log = demo_log(demo)
    async with demo.browser() as owner:
        await owner_with_2fa(demo, owner)
        for number in range(2 * PAGE_SIZE):
            await log.append(
                AuditEvent(EventKind.VERIFIED, AGENT, demo.clock() + number, method="sms")
            )
        seen: list[str] = []
        page = await owner.get(LOG, params={"kind": "sign-ins"})
        pages = 1
        while True:
            seen += [kind for kind, _ in rows(page)]
            older = older_link(page)
            if older is None:
                break
            assert "kind=sign-ins" in older
            page = await owner.get(older)
            assert '<a href="/sites/acme/security-log?kind=sign-ins">Newest events</a>' in page.text
            pages += 1
    assert (pages, seen) == (2, ["verified"] * 2 * PAGE_SIZE)


async def test_a_restart_keeps_the_log(tmp_path: Path, clock: FrozenClock) -> None:
    """The demo keeps its log in its database, with the enrolments."""
    async with running_demo(tmp_path, clock) as demo, demo.browser() as owner:
        secret = await owner_with_2fa(demo, owner)
        await challenged_twice(demo, owner, secret)
        before = rows(await owner.get(LOG))
    async with running_demo(tmp_path, clock) as demo, demo.browser() as owner:
        await challenged_twice(demo, owner, secret)
        after = rows(await owner.get(LOG))
    assert [kind for kind, _ in after] == ["verified", "verification_failed"] + [
        kind for kind, _ in before
    ]


@pytest.mark.parametrize(
    ("email", "path", "status", "message"),
    [
        pytest.param(AGENT, LOG, 403, "Only the site's owners can do this.", id="operator"),
        pytest.param(SOLO, LOG, 404, "There is no such site.", id="non-member"),
        pytest.param(
            OWNER, "/sites/nowhere/security-log", 404, "There is no such site.", id="nowhere"
        ),
        pytest.param(
            OWNER, f"/sites/{'x' * 300}/security-log", 404, "There is no such site.", id="long"
        ),
        pytest.param(OWNER, f"{LOG}?kind=everything", 400, "Choose from the list", id="bad-kind"),
        pytest.param(
            OWNER, f"{LOG}?cursor={'A' * 32}", 400, "is not one it gave", id="made-up-cursor"
        ),
        pytest.param(OWNER, f"{LOG}?cursor={'A' * 500}", 400, "Choose from the list", id="long"),
    ],
)
async def test_only_the_owners_read_the_log_and_bad_input_is_a_page_that_says_why(
    demo: Demo, email: str, path: str, status: int, message: str
) -> None:
    async with demo.browser() as browser:
        await sign_in(browser, email)
        page = await browser.get(path)
    assert page.status_code == status, page.text
    assert 'role="alert"' in page.text
    assert message in html.unescape(page.text)
    assert "Security log of" not in page.text


async def test_signed_out_goes_to_the_sign_in_and_back(demo: Demo) -> None:
    async with demo.browser() as anonymous:
        page = await anonymous.get(LOG)
    assert (page.status_code, page.headers["location"]) == (
        303,
        "/login?next=/sites/acme/security-log",
    )


# -- in a real browser ---------------------------------------------------------------------------


@pytest.fixture
def browser() -> Iterator[Browser]:
    """A Chromium for one test: the conftest's lasts a module, and this module's async tests
    could not run beside it."""
    with launched() as chromium:
        yield chromium


def test_the_security_log_in_chromium_at_a_desktops_and_a_phones_width(
    browser: Browser, tmp_path: Path, clock: FrozenClock
) -> None:
    with served(demo_inbox(tmp_path / "data", clock=clock)) as url:
        context = browser.new_context(base_url=url, viewport=DESKTOP, user_agent=LAPTOP_AGENT)
        context.set_default_timeout(TIMEOUT_MS)
        page = context.new_page()

        def sign_in_as_the_owner() -> None:
            page.goto("/login")
            page.get_by_label("E-mail address").fill(OWNER)
            page.get_by_label("Password").fill(DEMO_PASSWORD)
            page.get_by_role("button", name="Sign in").click()

        # 2FA on, from the settings page.
        sign_in_as_the_owner()
        page.get_by_role("link", name="Two-factor settings").click()
        page.get_by_role("button", name="Turn on two-factor authentication").click()
        page.get_by_role("button", name="Set up an authenticator app").click()
        key = page.locator("#manual-key").inner_text()
        page.get_by_label("Code from your app").fill(current_code(key, clock()))
        page.get_by_role("button", name="Confirm and turn on").click()
        expect(page.get_by_role("heading", name="Save your recovery codes")).to_be_visible()

        # Out and in: a wrong code, then the right one.
        page.goto("/inbox")
        page.get_by_role("button", name="Sign out").click()
        sign_in_as_the_owner()
        expect(page).to_have_url(f"{url}/mfa/challenge?next=/inbox")
        clock.advance(30)
        page.get_by_label("Authentication code").fill("000000")
        page.get_by_role("button", name="Verify", exact=True).click()
        expect(page.get_by_role("alert")).to_be_visible()
        page.get_by_label("Authentication code").fill(current_code(key, clock()))
        page.get_by_role("button", name="Verify", exact=True).click()
        expect(page).to_have_url(f"{url}/inbox")

        # The Team page leads to the log.
        page.get_by_role("navigation", name="Your sites").get_by_role("link", name="Team").click()
        page.get_by_role("link", name="Security log").click()
        expect(page).to_have_url(f"{url}{LOG}")
        log = page.locator("#security-log")
        expect(log.locator('li[data-kind="verified"]').first).to_contain_text("Signed in with 2FA")
        expect(log.locator('li[data-kind="verification_failed"]')).to_contain_text(
            "Wrong code or key"
        )
        expect(log.locator('li[data-kind="verified"]').first).to_contain_text("Chrome on Windows")
        assert not violations(page), "axe-core finds nothing on the security log"

        for viewport, name in ((DESKTOP, "desktop"), (PHONE, "phone")):
            page.set_viewport_size(viewport)
            state = f"the security log at {viewport['width']} px"
            assert horizontal_overflow(page) == 0, state
            for part in (page.locator("h1"), page.locator("form.filter"), *log.locator("li").all()):
                expect(part).to_be_visible()
                box = part.bounding_box()
                assert box is not None, state
                assert box["x"] >= 0, state
                assert box["x"] + box["width"] <= viewport["width"], state
            screenshot(page, tmp_path, f"security-log-{name}.png")

        # The failures only, from the list.
        page.get_by_label("Show").select_option("failures")
        page.get_by_role("button", name="Show", exact=True).click()
        expect(page).to_have_url(f"{url}{LOG}?kind=failures")
        expect(log.locator("li")).to_have_count(1)
        context.close()
