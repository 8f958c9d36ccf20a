"""SMS codes on the challenge page in a real browser (Chromium through Playwright, against the
test app on a real uvicorn server): one form for the code, whichever sent it; a resend inside
the cooldown says how long to wait, counts it down, and keeps the field of the code already
sent; without JavaScript the page says the wait all the same. And the settings page's "Turn on
two-factor authentication", drawn as the page's main action; and the challenge that asks a
session verified by text for a stronger code.

The app's clock is frozen (``FrozenClock``); the send limits' windows run on the real clock of
``limits``, so a window is aged in Redis instead of waited for, and the page's countdown runs on
Playwright's clock. Nothing sleeps. Screenshots at 390 and 1280 px go to the test's tmp_path.
"""

from __future__ import annotations

import hashlib
import math
import re
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from playwright.sync_api import Browser, BrowserContext, Page, expect
from redis import Redis
from starlette.types import ASGIApp, Receive, Scope, Send

from mfa_guard.sms import OutboxSMS
from tests.apps import GuardedApp, build_app
from tests.chromium import TIMEOUT_MS, launched, screenshot
from tests.databases import redis_or_skip
from tests.live import served
from tests.rendering import violations
from tests.scenarios import USER
from tests.sms_apps import MOBILE, build_sms_app, texted_code

PHONE = "+33 6 12 34 56 78"
E164 = "+33612345678"
MASKED = "+33 •••• ••78"
TEXTED_CODE = re.compile(r"\b(\d{6}) is your ")
WIDTHS = (390, 1280)
# Other tests share the Redis and the phone number: only this user's own windows count here.
SHARED_BUDGETS = {
    "per_number": "1000/minute",
    "per_number_daily": "1000000/day",
    "per_ip": "1000/minute",
    "global_hourly": "1000000/hour",
    "global_daily": "1000000/day",
}


@dataclass
class SMSSite:
    url: str
    ga: GuardedApp
    outbox: OutboxSMS
    user: str

    def last_code(self) -> str:
        message = self.outbox.last_to(E164)
        assert message is not None, "a text went to the phone"
        match = TEXTED_CODE.search(message.text)
        assert match, message.text
        return match.group(1)


@pytest.fixture
def browser() -> Iterator[Browser]:
    with launched() as browser:
        yield browser


@pytest.fixture
def redis_url() -> str:
    return redis_or_skip()


def sms_site(storage_uri: str = "memory://") -> tuple[GuardedApp, OutboxSMS]:
    outbox = OutboxSMS()
    ga = build_app(
        sms_provider=outbox,
        storage_uri=storage_uri,
        sms={
            "enabled": True,
            "provider": "outbox",
            "allowed_regions": ["FR"],
            "resend_cooldown": "1/30 seconds",  # the default
            **SHARED_BUDGETS,
        },
        trusted_devices={"enabled": True, "cookie_secure": False},
    )
    return ga, outbox


def closing(ga: GuardedApp) -> ASGIApp:
    """The app, closing the guard's connections (Redis) when the server shuts down, on the
    server's own loop."""

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "lifespan":
            await ga.app(scope, receive, send)
            return
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await ga.guard.aclose()
                await send({"type": "lifespan.shutdown.complete"})
                return

    return app


@pytest.fixture
def redis_site(redis_url: str) -> Iterator[SMSSite]:
    ga, outbox = sms_site(redis_url)
    with served(closing(ga)) as url:
        yield SMSSite(url, ga, outbox, f"user-{uuid.uuid4()}@example.test")


@pytest.fixture
def memory_site() -> Iterator[SMSSite]:
    ga, outbox = sms_site()
    with served(ga.app) as url:
        yield SMSSite(url, ga, outbox, f"user-{uuid.uuid4()}@example.test")


def person(browser: Browser, site: SMSSite, *, javascript: bool = True) -> BrowserContext:
    context = browser.new_context(
        base_url=site.url, viewport={"width": 1280, "height": 900}, java_script_enabled=javascript
    )
    context.set_default_timeout(TIMEOUT_MS)
    return context


def enrolled_with_a_phone(page: Page, site: SMSSite) -> str:
    """Signs in, turns 2FA on and verifies the phone over the JSON API (as an app's own
    front end would), then signs in again: the page's session faces the challenge. Returns
    the authenticator's secret."""
    request = page.request
    assert request.post("/login", form={"user": site.user}).ok
    setup = request.post("/mfa/api/totp/setup", data={})
    secret = str(setup.json()["secret"])
    assert request.post("/mfa/api/totp/confirm", data={"code": site.ga.code(secret)}).ok
    assert request.post("/mfa/api/phone", data={"phone": PHONE}).status == 202
    assert request.post("/mfa/api/phone/verify", data={"code": site.last_code()}).ok
    assert request.post("/logout").ok
    assert request.post("/login", form={"user": site.user}).ok
    site.ga.clock.advance(30)  # the enrolment used this step
    return secret


def cooldown_window(redis: Redis, user: str) -> str:
    """The Redis key of the user's resend cooldown (shared storages see the user's hash)."""
    hashed = hashlib.sha256(user.encode()).hexdigest()[:32]
    keys = [
        key.decode() if isinstance(key, bytes) else str(key)
        for key in redis.scan_iter(match=f"*mfa_guard:sms/cooldown/{hashed}*")
    ]
    assert len(keys) == 1, keys
    return keys[0]


def screenshots(page: Page, tmp_path: Path, name: str) -> None:
    """The whole page at a phone's width and a desktop's; at each, nothing wider than the
    window (no sideways scrolling)."""
    size = page.viewport_size
    assert size is not None
    for width in WIDTHS:
        page.set_viewport_size({"width": width, "height": 900})
        overflow = page.evaluate("document.documentElement.scrollWidth - window.innerWidth")
        assert overflow <= 0, f"{name} at {width} px is {overflow} px too wide"
        place = tmp_path / f"{name}-{width}.png"
        page.screenshot(path=place, full_page=True)
        assert place.read_bytes().startswith(b"\x89PNG")
    page.set_viewport_size(size)


def within_the_window(page: Page, selector: str) -> None:
    box = page.locator(selector).bounding_box()
    assert box is not None, selector
    size = page.viewport_size
    assert size is not None
    assert box["x"] >= 0
    assert box["x"] + box["width"] <= size["width"], selector


def test_a_refused_resend_says_the_wait_counts_it_down_and_keeps_the_code(
    browser: Browser, redis_site: SMSSite, redis_url: str, tmp_path: Path
) -> None:
    site = redis_site
    redis = Redis.from_url(redis_url)
    context = person(browser, site)
    page = context.new_page()
    # The page's timers run on Playwright's clock: with the real time until it is paused.
    page.clock.install()
    try:
        enrolled_with_a_phone(page, site)
        redis.delete(cooldown_window(redis, site.user))  # the phone's text was long ago

        page.goto("/mfa/challenge?next=/protected")
        expect(page.get_by_label("Authentication code")).to_be_visible()
        expect(page.get_by_role("radio")).to_have_count(0)
        screenshots(page, tmp_path, "challenge-before-send")

        page.get_by_role("button", name="Text me a code").click()
        expect(page.get_by_role("status")).to_have_text(
            f"We sent a code to {MASKED}. It expires in 10 minutes."
        )
        texted = page.get_by_role("radio", name=f"The code texted to {MASKED}")
        expect(texted).to_be_checked()
        expect(
            page.get_by_role("radio", name="The code from your authenticator app")
        ).not_to_be_checked()
        # One code field, one "Remember this browser", one Verify button for both codes.
        expect(page.get_by_role("textbox", name="Authentication code")).to_have_count(1)
        expect(
            page.get_by_role("checkbox", name=re.compile("Remember this browser"))
        ).to_have_count(1)
        expect(page.get_by_role("button", name="Verify", exact=True)).to_have_count(1)
        expect(page.get_by_label("Authentication code")).to_be_focused()
        first_code = site.last_code()
        screenshots(page, tmp_path, "challenge-after-send")

        # As if the text went 7 s ago: 23 s are left of the cooldown's window.
        window = cooldown_window(redis, site.user)
        before = time.time()
        assert redis.pexpire(window, 23_000)
        with page.expect_response(lambda r: r.url.endswith("/mfa/sms")) as answer:
            page.get_by_role("button", name="Send a new code").click()
        elapsed = time.time() - before
        assert answer.value.status == 429
        wait = int(answer.value.headers["retry-after"])
        assert 23 - math.ceil(elapsed) <= wait <= 23
        # The server's text says the wait; the script then counts it down.
        said = f"Wait {wait} seconds before asking for a new code."
        assert f"You cannot get another text message yet. {said}" in answer.value.text()
        refusal = page.locator("#send-refused")
        expect(refusal).to_have_text(
            re.compile(r"^You cannot get another text message yet\. Wait \d+ seconds? before")
        )
        expect(page.get_by_role("alert")).to_have_count(1)
        send_again = page.get_by_role("button", name="Send a new code")
        expect(send_again).to_be_disabled()
        # The code sent before is still the one to enter: its field stays, chosen.
        expect(texted).to_be_checked()
        expect(page.get_by_label("Authentication code")).to_be_visible()
        assert not violations(page), "axe-core finds nothing on the page, counting down"
        screenshots(page, tmp_path, "challenge-refused-resend")
        for width in WIDTHS:
            page.set_viewport_size({"width": width, "height": 900})
            within_the_window(page, "#send-refused")
            within_the_window(page, "#code")
        page.set_viewport_size({"width": 1280, "height": 900})

        # The clock stopped (clicks wait for animation frames: it runs again before the next).
        page.clock.pause_at(time.time() + 0.5)
        left = int(re.findall(r"\d+", refusal.inner_text())[0])
        assert 1 < left <= wait
        page.clock.run_for(1000)
        unit = "second" if left - 1 == 1 else "seconds"
        expect(refusal).to_have_text(
            "You cannot get another text message yet. "
            f"Wait {left - 1} {unit} before asking for a new code."
        )
        expect(send_again).to_be_disabled()
        page.clock.run_for((left - 1) * 1000)
        expect(page.get_by_role("status")).to_have_text("You can ask for a new code now.")
        expect(send_again).to_be_enabled()
        expect(page.get_by_role("alert")).to_have_count(0)
        page.clock.resume()

        page.get_by_label("Authentication code").fill(first_code)
        page.get_by_role("button", name="Verify", exact=True).click()
        expect(page).to_have_url(f"{site.url}/protected")
        assert len(site.outbox.messages) == 2  # the phone's, the sign-in's: none refused went
    finally:
        context.close()
        redis.close()


def test_without_javascript_the_page_says_the_wait_and_asks_again(
    browser: Browser, memory_site: SMSSite, tmp_path: Path
) -> None:
    site = memory_site
    context = person(browser, site, javascript=False)
    page = context.new_page()
    try:
        secret = enrolled_with_a_phone(page, site)
        # The phone's text opened the cooldown's window a moment ago (in memory, on the real
        # clock): the first ask is refused, with what is left of the wait.
        page.goto("/mfa/challenge?next=/protected")
        before = time.time()
        with page.expect_response(lambda r: r.url.endswith("/mfa/sms")) as answer:
            page.get_by_role("button", name="Text me a code").click()
        assert answer.value.status == 429
        wait = int(answer.value.headers["retry-after"])
        assert 1 <= wait <= 30
        expect(page.locator("#send-refused")).to_have_text(
            re.compile(
                r"You cannot get another text message yet\. "
                rf"Wait {wait} seconds? before asking for a new code\."
            )
        )
        # No script: the button stays on and asks again, to be told the wait left.
        asking = page.get_by_role("button", name="Text me a code")
        expect(asking).to_be_enabled()
        with page.expect_response(lambda r: r.url.endswith("/mfa/sms")) as again:
            asking.click()
        assert again.value.status == 429
        assert int(again.value.headers["retry-after"]) <= wait
        assert time.time() - before < 30  # still inside the window opened by the phone's text
        # No code is pending for this session (the phone's code was the settings'): no radio.
        expect(page.get_by_role("radio")).to_have_count(0)

        # The app's code in the one form, with "Remember this browser".
        page.get_by_label("Authentication code").fill(site.ga.code(secret))
        page.get_by_role("checkbox", name=re.compile("Remember this browser")).check()
        page.get_by_role("button", name="Verify", exact=True).click()
        expect(page).to_have_url(f"{site.url}/protected")
        assert [c for c in context.cookies() if c["name"] == "mfa_guard_device"]
    finally:
        context.close()


def test_the_settings_page_draws_turning_2fa_on_as_its_main_action(
    browser: Browser, memory_site: SMSSite, tmp_path: Path
) -> None:
    site = memory_site
    context = person(browser, site)
    page = context.new_page()
    try:
        assert page.request.post("/login", form={"user": site.user}).ok
        page.goto("/mfa/settings")
        turn_on = page.get_by_role("button", name="Turn on two-factor authentication")
        expect(turn_on).to_be_visible()
        expect(page.get_by_role("link", name="Turn on two-factor authentication")).to_have_count(0)
        # Drawn as the page's other main buttons are (the phone form's "Add the number").
        add_number = page.get_by_role("button", name="Add the number")
        for prop in ("background-color", "color", "font-size", "padding-top"):
            style = f"e => getComputedStyle(e).getPropertyValue('{prop}')"
            assert turn_on.evaluate(style) == add_number.evaluate(style), prop
        screenshots(page, tmp_path, "settings-off")
        for width in WIDTHS:
            page.set_viewport_size({"width": width, "height": 900})
            within_the_window(page, "form[action$='/enrol'] button")
        turn_on.click()
        expect(page).to_have_url(re.compile(r"/mfa/enrol\??$"))
        expect(page.get_by_role("button", name="Set up an authenticator app")).to_be_visible()
    finally:
        context.close()


# -- a session verified by text asks for a stronger code (finding 4 of the security review) ----


def test_the_challenge_asking_for_a_stronger_code_reads_well_on_a_phone_and_a_desktop(
    tmp_path: Path,
) -> None:
    """A session verified by text asks for new recovery codes: the challenge it is sent to says
    why, offers the app's code and a recovery code, and no text option; at 390 and 1280 px."""
    app = build_sms_app()
    clock = app.ga.clock
    with served(app.ga.app) as url, launched() as browser:
        owner = browser.new_context(base_url=url)
        assert owner.request.post("/login", form={"user": USER}).ok
        secret = owner.request.post("/mfa/api/totp/setup", data={}).json()["secret"]
        assert owner.request.post("/mfa/api/totp/confirm", data={"code": app.ga.code(secret)}).ok
        assert owner.request.post("/mfa/api/phone", data={"phone": MOBILE}).status == 202
        assert owner.request.post(
            "/mfa/api/phone/verify", data={"code": texted_code(app.outbox, MOBILE)}
        ).ok
        clock.advance(30)
        for width in (390, 1280):
            holder = browser.new_context(base_url=url, viewport={"width": width, "height": 900})
            holder.set_default_timeout(TIMEOUT_MS)
            assert holder.request.post("/login", form={"user": USER}).ok
            assert holder.request.post("/mfa/api/sms/send", data={}).status == 202
            assert holder.request.post(
                "/mfa/api/verify", data={"method": "sms", "code": texted_code(app.outbox, MOBILE)}
            ).ok
            page = holder.new_page()
            page.goto("/mfa/settings")
            page.get_by_role("button", name="Generate new recovery codes").click()
            expect(page).to_have_url(re.compile(r"/mfa/challenge\?next=/mfa/settings&strong=1$"))
            notice = page.get_by_text("a text-message code is not enough")
            expect(notice).to_be_visible()
            expect(page.get_by_label("Authentication code")).to_be_visible()
            expect(page.get_by_text("Lost your device? Use a recovery code")).to_be_visible()
            expect(page.get_by_role("button", name="Text me a code")).to_have_count(0)
            # Nothing wider than the screen: no sideways scrolling on a phone.
            assert page.evaluate("document.documentElement.scrollWidth") <= width
            box = notice.bounding_box()
            assert box is not None
            assert box["x"] >= 0
            assert box["x"] + box["width"] <= width
            screenshot(page, tmp_path, f"strong-challenge-{width}.png")
            holder.close()
        owner.close()
