"""Trusted devices through the HTML pages, as a browser without JavaScript uses them: "Remember
this browser" on the challenge, the settings page's list of remembered browsers, forgetting one or
all of them. Over https://testserver, so the client sends the ``Secure`` device cookie back."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from mfa_guard.devices import DAY, token_hash
from mfa_guard.events import EventKind
from mfa_guard.sms import OutboxSMS
from mfa_guard.stores.devices import TrustedDevice
from tests.apps import GuardedApp, build_app, enrol, sign_in

USER = "solo@example.test"
BASE_URL = "https://testserver"
COOKIE = "mfa_guard_device"
FIREFOX = "Mozilla/5.0 (X11; Ubuntu; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0"
SAFARI = (
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_5 like Mac OS X) AppleWebKit/605.1.15 "
    "(KHTML, like Gecko) Version/17.5 Mobile/15E148 Safari/604.1"
)
FRENCH = {"Accept-Language": "fr-FR,fr;q=0.9"}
CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')
DEVICE_ID = re.compile(r'data-device="([^"]+)"')
DEVICES = {"enabled": True}


def csrf_of(page: httpx.Response) -> str:
    match = CSRF.search(page.text)
    assert match, "the form carries a CSRF token"
    return match.group(1)


def devices_on(page: httpx.Response) -> list[str]:
    """The ids of the browsers the settings page lists."""
    return DEVICE_ID.findall(page.text)


def device_cookie(response: httpx.Response) -> str | None:
    """The Set-Cookie header of the device cookie, if the response sets (or drops) it."""
    for header in response.headers.get_list("set-cookie"):
        if header.startswith(f"{COOKIE}="):
            return header
    return None


def attributes(set_cookie: str) -> dict[str, str]:
    """A Set-Cookie header's attributes, names in lower case (``HttpOnly`` → ``""``)."""
    found = {}
    for part in set_cookie.split(";")[1:]:
        name, _, value = part.strip().partition("=")
        found[name.lower()] = value
    return found


@pytest.fixture
def ga() -> GuardedApp:
    return build_app(trusted_devices=DEVICES)


@pytest.fixture
async def browser(ga: GuardedApp) -> AsyncIterator[httpx.AsyncClient]:
    async with ga.client(base_url=BASE_URL, headers={"User-Agent": FIREFOX}) as client:
        yield client


async def challenge(
    ga: GuardedApp,
    client: httpx.AsyncClient,
    secret: str,
    *,
    remember: bool,
    headers: dict[str, str] | None = None,
) -> httpx.Response:
    """Answers the challenge page with the next time step's code, the box ticked or not."""
    ga.clock.advance(30)  # each time step's code is accepted once
    page = await client.get("/mfa/challenge?next=/protected", headers=headers)
    assert page.status_code == 200
    form = {"csrf_token": csrf_of(page), "next": "/protected", "method": "totp"}
    if remember:
        form["remember"] = "1"
    return await client.post(
        "/mfa/challenge", data=form | {"code": ga.code(secret)}, headers=headers
    )


async def challenged(ga: GuardedApp, client: httpx.AsyncClient) -> str:
    """Signs in, turns 2FA on, signs out and in again: the session waits for its code; the
    secret."""
    await sign_in(client, USER)
    secret, _ = await enrol(ga, client)
    await client.post("/logout")
    await sign_in(client, USER)
    return secret


async def remembered(ga: GuardedApp, client: httpx.AsyncClient) -> str:
    """Signs in, turns 2FA on, signs in again and ticks "Remember this browser"; the secret."""
    secret = await challenged(ga, client)
    verified = await challenge(ga, client, secret, remember=True)
    assert verified.status_code == 303, verified.text
    assert device_cookie(verified) is not None
    return secret


async def sign_in_again(client: httpx.AsyncClient) -> httpx.Response:
    """A new sign-in in the same browser; the answer of a guarded page."""
    await client.post("/logout")
    await sign_in(client, USER)
    return await client.get("/protected")


# -- the challenge ---------------------------------------------------------------------------


async def test_the_challenge_offers_the_box_unticked_when_trusted_devices_are_on(
    ga: GuardedApp, browser: httpx.AsyncClient
) -> None:
    await challenged(ga, browser)
    page = await browser.get("/mfa/challenge")
    box = re.search(r'<input type="checkbox" name="remember"[^>]*>', page.text)
    assert box is not None
    assert "checked" not in box.group(0)
    assert 'aria-describedby="remember-hint"' in box.group(0)
    assert "Remember this browser for 30 days" in page.text
    assert "Do not tick this on a shared or public computer." in page.text
    # The recovery form has no box: a lost phone is no time to trust a browser.
    recovery_form = page.text.split('value="recovery"')[1]
    assert 'name="remember"' not in recovery_form


async def test_without_trusted_devices_there_is_no_box() -> None:
    ga = build_app()
    async with ga.client() as client:
        await sign_in(client, USER)
        await enrol(ga, client)
        await client.post("/logout")
        await sign_in(client, USER)
        page = await client.get("/mfa/challenge")
        assert 'name="remember"' not in page.text
        assert "Remember this browser" not in page.text


async def test_a_singular_day(ga: GuardedApp) -> None:
    one_day = build_app(trusted_devices=DEVICES | {"days": 1})
    async with one_day.client() as client:
        await sign_in(client, USER)
        await enrol(one_day, client)
        await client.post("/logout")
        await sign_in(client, USER)
        page = await client.get("/mfa/challenge")
        assert "Remember this browser for 1 day<" in page.text.replace("\n", "")


async def test_ticking_the_box_sets_the_device_cookie_on_the_redirect(
    ga: GuardedApp, browser: httpx.AsyncClient
) -> None:
    secret = await challenged(ga, browser)
    verified = await challenge(ga, browser, secret, remember=True)
    assert verified.status_code == 303
    assert verified.headers["location"] == "/protected"
    set_cookie = device_cookie(verified)
    assert set_cookie is not None
    token = set_cookie.split(";")[0].split("=", 1)[1]
    assert re.fullmatch(r"[A-Za-z0-9_-]{43}", token)
    attrs = attributes(set_cookie)
    assert "httponly" in attrs
    assert "secure" in attrs
    assert attrs["samesite"].lower() == "lax"
    assert attrs["path"] == "/"
    assert attrs["max-age"] == str(30 * DAY)
    assert EventKind.DEVICE_TRUSTED in ga.events.kinds()

    # A new sign-in in this browser goes straight in, without a code.
    assert (await sign_in_again(browser)).status_code == 200
    assert EventKind.DEVICE_RECOGNISED in ga.events.kinds()


async def test_an_unticked_box_sets_no_cookie(ga: GuardedApp, browser: httpx.AsyncClient) -> None:
    secret = await challenged(ga, browser)
    verified = await challenge(ga, browser, secret, remember=False)
    assert verified.status_code == 303
    assert device_cookie(verified) is None
    again = await sign_in_again(browser)
    assert again.headers["location"] == "/mfa/challenge?next=/protected"


async def test_a_refused_code_remembers_nothing_and_keeps_the_box_ticked(
    ga: GuardedApp, browser: httpx.AsyncClient
) -> None:
    await challenged(ga, browser)
    page = await browser.get("/mfa/challenge")
    refused = await browser.post(
        "/mfa/challenge",
        data={"csrf_token": csrf_of(page), "method": "totp", "code": "000000", "remember": "1"},
    )
    assert refused.status_code == 422
    assert device_cookie(refused) is None
    box = re.search(
        r'<input type="checkbox" name="remember" value="1" id="remember"[^>]*>', refused.text
    )
    assert box is not None
    assert " checked" in box.group(0)
    assert EventKind.DEVICE_TRUSTED not in ga.events.kinds()


async def test_the_box_is_ignored_when_trusted_devices_are_off() -> None:
    ga = build_app()
    async with ga.client(base_url=BASE_URL) as client:
        await sign_in(client, USER)
        secret, _ = await enrol(ga, client)
        await client.post("/logout")
        await sign_in(client, USER)
        verified = await challenge(ga, client, secret, remember=True)
        assert verified.status_code == 303
        assert device_cookie(verified) is None


async def test_a_text_message_code_can_remember_the_browser() -> None:
    outbox = OutboxSMS()
    sms: dict[str, Any] = {
        "enabled": True,
        "provider": "outbox",
        "allowed_regions": ["FR"],
        "resend_cooldown": "100/second",
    }
    ga = build_app(sms_provider=outbox, sms=sms, trusted_devices=DEVICES)
    async with ga.client(base_url=BASE_URL) as client:
        await sign_in(client, USER)
        await enrol(ga, client)
        # A verified number, over the API.
        assert (await client.post("/mfa/api/phone", json={"phone": "+33612345678"})).is_success
        code = re.findall(r"\b(\d{6}) is your ", outbox.messages[-1].text)[0]
        assert (await client.post("/mfa/api/phone/verify", json={"code": code})).is_success
        await client.post("/logout")
        await sign_in(client, USER)
        page = await client.get("/mfa/challenge")
        sent = await client.post("/mfa/sms", data={"csrf_token": csrf_of(page), "next": "/"})
        assert sent.status_code == 200
        # One form for either code: its one box.
        assert sent.text.count('name="remember"') == 1
        assert 'type="radio" name="method" value="sms" checked' in sent.text
        code = re.findall(r"\b(\d{6}) is your ", outbox.messages[-1].text)[0]
        verified = await client.post(
            "/mfa/challenge",
            data={"csrf_token": csrf_of(sent), "method": "sms", "code": code, "remember": "1"},
        )
        assert verified.status_code == 303
        assert device_cookie(verified) is not None
        assert (await sign_in_again(client)).status_code == 200


# -- the settings page -----------------------------------------------------------------------


async def test_the_settings_page_lists_the_remembered_browsers(
    ga: GuardedApp, browser: httpx.AsyncClient
) -> None:
    secret = await remembered(ga, browser)
    async with ga.client(base_url=BASE_URL, headers={"User-Agent": SAFARI}) as phone:
        await sign_in(phone, USER)
        assert (await challenge(ga, phone, secret, remember=True)).status_code == 303
    ga.clock.advance(3600)

    page = await browser.get("/mfa/settings")
    assert page.status_code == 200
    assert '<h2 id="devices-heading">Remembered browsers</h2>' in page.text
    assert len(devices_on(page)) == 2
    items = page.text.split("<li data-device=")[1:]
    firefox = next(item for item in items if "Firefox on Ubuntu" in item)
    safari = next(item for item in items if "Mobile Safari on iOS (iPhone)" in item)
    assert '<span class="tag">This browser</span>' in firefox
    assert "This browser" not in safari
    # Dates as people write them, with a machine-readable twin.
    assert "Jan 15, 2027" in firefox
    assert "Feb 14, 2027" in firefox  # expires 30 days later
    assert re.search(r"Jan 15, 2027, \d\d:\d\d UTC", firefox)
    assert '<time datetime="2027-01-15T' in firefox
    # One "Forget" per browser, named after it for screen readers; one "Forget all".
    assert 'Forget <span class="visually-hidden">Firefox on Ubuntu</span>' in firefox
    assert page.text.count('action="/mfa/settings/devices/forget"') == 2
    assert page.text.count('action="/mfa/settings/devices/forget-all"') == 1


async def test_the_list_in_french(ga: GuardedApp, browser: httpx.AsyncClient) -> None:
    await remembered(ga, browser)
    page = await browser.get("/mfa/settings", headers=FRENCH)
    assert "Navigateurs mémorisés" in page.text
    assert "Ce navigateur" in page.text
    assert "15 janv. 2027" in page.text
    assert "14 févr. 2027" in page.text
    assert "Oublier tous les navigateurs" in page.text
    assert (
        "Mémoriser ce navigateur pendant 30 jours"
        in (await browser.get("/mfa/challenge", headers=FRENCH)).text
    )


def item_of(page: httpx.Response, device_id: str) -> str:
    """The settings page's item of one remembered browser."""
    [item] = [i for i in page.text.split("<li data-device=")[1:] if i.startswith(f'"{device_id}"')]
    return item.split("</li>")[0]


def heading_of(item: str) -> str:
    match = re.search(r"<h3>(.*?)</h3>", item, re.S)
    assert match, "each remembered browser has a heading"
    return match.group(1)


def hidden_name_of(item: str) -> str:
    """What the Forget button says of the browser to screen readers."""
    match = re.search(r'<span class="visually-hidden">(.*?)</span></button>', item, re.S)
    assert match, "each Forget button names its browser"
    return match.group(1)


async def older_device(ga: GuardedApp, name: str) -> TrustedDevice:
    """A browser remembered before the kit kept the User-Agent (a name, no User-Agent), of the
    user's current epoch, in the store beside the others."""
    devices = ga.guard.trusted_devices
    assert devices is not None
    [current, *_] = await devices.devices.devices(USER)
    older = TrustedDevice(
        id="o" * 16,
        user_id=USER,
        token_hash=token_hash("o" * 43),
        name=name,
        created_at=ga.clock() - DAY,
        last_seen_at=ga.clock() - DAY,
        expires_at=ga.clock() + 10 * DAY,
        epoch=current.epoch,
    )
    await devices.devices.add(older, keep=10)
    return older


async def test_each_browser_is_named_in_the_pages_language(
    ga: GuardedApp, browser: httpx.AsyncClient
) -> None:
    """Named from the User-Agent it was remembered with, as the page speaks: in French,
    "Firefox sous Ubuntu", in the heading and in its Forget button; the stored name stays the
    English one (the JSON API's)."""
    await remembered(ga, browser)
    [stored] = await ga.guard.trusted_devices.devices.devices(USER)  # type: ignore[union-attr]
    assert (stored.name, stored.user_agent) == ("Firefox on Ubuntu", FIREFOX)

    english = item_of(await browser.get("/mfa/settings"), stored.id)
    assert heading_of(english) == 'Firefox on Ubuntu <span class="tag">This browser</span>'
    assert hidden_name_of(english) == "Firefox on Ubuntu"

    page = await browser.get("/mfa/settings", headers=FRENCH)
    french = item_of(page, stored.id)
    assert heading_of(french) == 'Firefox sous Ubuntu <span class="tag">Ce navigateur</span>'
    assert 'Oublier <span class="visually-hidden">Firefox sous Ubuntu</span>' in french
    assert "Firefox on Ubuntu" not in page.text
    api = await browser.get("/mfa/api/devices", headers=FRENCH)
    assert [d["name"] for d in api.json()["devices"]] == ["Firefox on Ubuntu"]


async def test_right_to_left_each_name_from_the_user_agent_is_isolated(
    ga: GuardedApp, browser: httpx.AsyncClient
) -> None:
    """In Arabic, "Firefox على Ubuntu" with each name in <bdi>, as Recent activity shows it,
    the same in the Forget button, escaped once; a browser remembered before keeps its stored
    name, isolated as a whole in the button."""
    await remembered(ga, browser)
    [stored] = await ga.guard.trusted_devices.devices.devices(USER)  # type: ignore[union-attr]
    older = await older_device(ga, "Chrome on Windows")

    page = await browser.get("/mfa/settings", headers={"Accept-Language": "ar"})
    assert 'dir="rtl"' in page.text
    firefox = item_of(page, stored.id)
    assert heading_of(firefox).startswith("<bdi>Firefox</bdi> على <bdi>Ubuntu</bdi> <span")
    assert hidden_name_of(firefox) == "<bdi>Firefox</bdi> على <bdi>Ubuntu</bdi>"
    chrome = item_of(page, older.id)
    assert heading_of(chrome) == "Chrome on Windows"
    assert hidden_name_of(chrome) == "<bdi>Chrome on Windows</bdi>"
    assert "&lt;bdi" not in page.text


async def test_a_browser_remembered_before_keeps_its_stored_name(
    ga: GuardedApp, browser: httpx.AsyncClient
) -> None:
    """No User-Agent to name it from: its English name, in every language."""
    await remembered(ga, browser)
    older = await older_device(ga, "Chrome on Windows")

    for headers, firefox in [({}, "Firefox on Ubuntu"), (FRENCH, "Firefox sous Ubuntu")]:
        page = await browser.get("/mfa/settings", headers=headers)
        assert len(devices_on(page)) == 2
        chrome = item_of(page, older.id)
        assert heading_of(chrome) == "Chrome on Windows"
        assert hidden_name_of(chrome) == "Chrome on Windows"
        assert firefox in page.text


@pytest.mark.parametrize("language", ["en", "fr", "ar"])
async def test_a_name_from_the_user_agent_is_escaped_once(ga: GuardedApp, language: str) -> None:
    """ua-parser's names come out of the User-Agent, which the client writes."""
    hostile = (
        "Mozilla/5.0 (Linux; Android 10; <i>Pwn</i> Build/QP1A) AppleWebKit/537.36 "
        "(KHTML, like Gecko) Chrome/120.0 Mobile Safari/537.36"
    )
    async with ga.client(base_url=BASE_URL, headers={"User-Agent": hostile}) as client:
        await remembered(ga, client)
        page = await client.get("/mfa/settings", headers={"Accept-Language": language})
    [device_id] = devices_on(page)
    item = item_of(page, device_id)
    for shown in (heading_of(item), hidden_name_of(item)):
        assert "&lt;i&gt;Pwn&lt;/i&gt;" in shown
        assert "<i>" not in shown
        assert "&amp;" not in shown


async def test_an_enrolled_user_without_remembered_browsers_is_told_how(
    ga: GuardedApp, browser: httpx.AsyncClient
) -> None:
    await sign_in(browser, USER)
    await enrol(ga, browser)
    page = await browser.get("/mfa/settings")
    assert "Remembered browsers" in page.text
    assert 'id="no-remembered-browsers"' in page.text
    assert "forget-all" not in page.text


async def test_a_user_without_2fa_sees_no_remembered_browsers(
    ga: GuardedApp, browser: httpx.AsyncClient
) -> None:
    await sign_in(browser, USER)
    page = await browser.get("/mfa/settings")
    assert page.status_code == 200
    assert "Remembered browsers" not in page.text
    assert "/settings/devices/" not in page.text


async def test_without_trusted_devices_the_section_and_routes_are_absent() -> None:
    ga = build_app()
    async with ga.client() as client:
        await sign_in(client, USER)
        await enrol(ga, client)
        page = await client.get("/mfa/settings")
        assert "Remembered browsers" not in page.text
        assert "Remembered browsers are forgotten too." not in page.text
        gone = await client.post(
            "/mfa/settings/devices/forget", data={"csrf_token": csrf_of(page), "device": "x"}
        )
        assert gone.status_code == 404


async def test_forgetting_this_browser(ga: GuardedApp, browser: httpx.AsyncClient) -> None:
    await remembered(ga, browser)
    page = await browser.get("/mfa/settings")
    [device_id] = devices_on(page)
    forgotten = await browser.post(
        "/mfa/settings/devices/forget", data={"csrf_token": csrf_of(page), "device": device_id}
    )
    assert forgotten.status_code == 200
    assert "Browser forgotten." in forgotten.text
    assert devices_on(forgotten) == []
    # Its cookie is dropped too.
    dropped = device_cookie(forgotten)
    assert dropped is not None
    assert attributes(dropped)["max-age"] == "0"
    assert EventKind.DEVICE_REVOKED in ga.events.kinds()
    again = await sign_in_again(browser)
    assert again.headers["location"] == "/mfa/challenge?next=/protected"


async def test_forgetting_another_browser_challenges_it_again(
    ga: GuardedApp, browser: httpx.AsyncClient
) -> None:
    secret = await remembered(ga, browser)
    async with ga.client(base_url=BASE_URL, headers={"User-Agent": SAFARI}) as phone:
        await sign_in(phone, USER)
        assert (await challenge(ga, phone, secret, remember=True)).status_code == 303
        # The phone signs in again: in by its device, no code.
        assert (await sign_in_again(phone)).status_code == 200

        page = await browser.get("/mfa/settings")
        safari = next(item for item in page.text.split("<li data-device=")[1:] if "Safari" in item)
        phone_id = safari.split('"')[1]
        forgotten = await browser.post(
            "/mfa/settings/devices/forget",
            data={"csrf_token": csrf_of(page), "device": phone_id},
        )
        assert forgotten.status_code == 200
        assert device_cookie(forgotten) is None  # not this browser's: its cookie stays
        assert phone_id not in devices_on(forgotten)
        assert len(devices_on(forgotten)) == 1

        # The phone's open session, verified by its device, ends at its next re-check.
        ga.clock.advance(ga.guard.settings.recheck_seconds)
        assert (await phone.get("/protected")).headers["location"] == (
            "/mfa/challenge?next=/protected"
        )
        assert (await sign_in_again(phone)).status_code == 303
    # This browser is still remembered.
    assert (await sign_in_again(browser)).status_code == 200


async def test_a_session_let_in_by_its_browser_that_forgets_it_must_enter_a_code(
    ga: GuardedApp, browser: httpx.AsyncClient
) -> None:
    await remembered(ga, browser)
    assert (await sign_in_again(browser)).status_code == 200  # in by the device
    page = await browser.get("/mfa/settings")
    [device_id] = devices_on(page)
    forgotten = await browser.post(
        "/mfa/settings/devices/forget", data={"csrf_token": csrf_of(page), "device": device_id}
    )
    assert forgotten.status_code == 303
    assert forgotten.headers["location"] == "/mfa/challenge?next=/mfa/settings"
    assert device_cookie(forgotten) is not None  # dropped on the way


async def test_forgetting_every_browser(ga: GuardedApp, browser: httpx.AsyncClient) -> None:
    secret = await remembered(ga, browser)
    async with ga.client(base_url=BASE_URL, headers={"User-Agent": SAFARI}) as phone:
        await sign_in(phone, USER)
        assert (await challenge(ga, phone, secret, remember=True)).status_code == 303
        page = await browser.get("/mfa/settings")
        assert len(devices_on(page)) == 2
        forgotten = await browser.post(
            "/mfa/settings/devices/forget-all", data={"csrf_token": csrf_of(page)}
        )
        assert forgotten.status_code == 200
        assert "Every remembered browser must enter a code again." in forgotten.text
        assert devices_on(forgotten) == []
        assert 'id="no-remembered-browsers"' in forgotten.text
        assert device_cookie(forgotten) is not None  # this browser's, dropped
        assert (await sign_in_again(phone)).status_code == 303
    assert (await sign_in_again(browser)).status_code == 303


async def test_forgetting_in_french(ga: GuardedApp, browser: httpx.AsyncClient) -> None:
    await remembered(ga, browser)
    page = await browser.get("/mfa/settings", headers=FRENCH)
    forgotten = await browser.post(
        "/mfa/settings/devices/forget-all", data={"csrf_token": csrf_of(page)}, headers=FRENCH
    )
    assert "Chaque navigateur mémorisé devra saisir un nouveau code." in forgotten.text
    unknown = await browser.post(
        "/mfa/settings/devices/forget",
        data={"csrf_token": csrf_of(page), "device": "nope"},
        headers=FRENCH,
    )
    assert unknown.status_code == 404
    assert "Ce navigateur mémorisé est introuvable." in unknown.text


@pytest.mark.parametrize(
    ("device", "status"),
    [
        pytest.param("", 400, id="empty"),
        pytest.param("no-such-device00", 404, id="unknown"),
        pytest.param("x" * 65, 404, id="too-long"),
        pytest.param("x" * 3000, 404, id="very-long"),
        pytest.param("bad\x00id", 404, id="nul"),
        pytest.param("../../etc", 404, id="path"),
    ],
)
async def test_a_bad_device_id_is_an_error_on_the_settings_page(
    ga: GuardedApp, browser: httpx.AsyncClient, device: str, status: int
) -> None:
    await remembered(ga, browser)
    page = await browser.get("/mfa/settings")
    refused = await browser.post(
        "/mfa/settings/devices/forget", data={"csrf_token": csrf_of(page), "device": device}
    )
    assert refused.status_code == status
    assert 'role="alert"' in refused.text
    assert "Remembered browsers" in refused.text  # the settings page, again
    assert len(devices_on(refused)) == 1  # nothing was forgotten
    assert device_cookie(refused) is None


async def test_another_users_device_cannot_be_forgotten(
    ga: GuardedApp, browser: httpx.AsyncClient
) -> None:
    await remembered(ga, browser)
    [device_id] = devices_on(await browser.get("/mfa/settings"))
    async with ga.client(base_url=BASE_URL) as other:
        await sign_in(other, "other@example.test")
        await enrol(ga, other)
        page = await other.get("/mfa/settings")
        refused = await other.post(
            "/mfa/settings/devices/forget",
            data={"csrf_token": csrf_of(page), "device": device_id},
        )
        assert refused.status_code == 404
    assert devices_on(await browser.get("/mfa/settings")) == [device_id]


@pytest.mark.parametrize("action", ["forget", "forget-all"])
async def test_forgetting_needs_the_forms_token_and_this_site(
    ga: GuardedApp, browser: httpx.AsyncClient, action: str
) -> None:
    await remembered(ga, browser)
    page = await browser.get("/mfa/settings")
    [device_id] = devices_on(page)
    path = f"/mfa/settings/devices/{action}"
    no_token = await browser.post(path, data={"device": device_id})
    assert no_token.status_code == 403
    assert "Request refused" in no_token.text
    stale = await browser.post(path, data={"device": device_id, "csrf_token": "stale"})
    assert stale.status_code == 403
    cross_site = await browser.post(
        path,
        data={"device": device_id, "csrf_token": csrf_of(page)},
        headers={"Origin": "https://evil.test"},
    )
    assert cross_site.status_code == 403
    get = await browser.get(path)
    assert get.status_code == 405
    assert devices_on(await browser.get("/mfa/settings")) == [device_id]
    assert EventKind.DEVICE_REVOKED not in ga.events.kinds()


@pytest.mark.parametrize("action", ["forget", "forget-all"])
async def test_a_session_that_has_not_entered_its_code_is_sent_to_the_challenge(
    ga: GuardedApp, action: str
) -> None:
    async with (
        ga.client(base_url=BASE_URL) as laptop,
        ga.client(base_url=BASE_URL, headers={"User-Agent": SAFARI}) as stranger,
    ):
        await remembered(ga, laptop)
        [device_id] = devices_on(await laptop.get("/mfa/settings"))
        await sign_in(stranger, USER)  # the password, but no code and no remembered browser
        page = await stranger.get("/mfa/challenge")
        refused = await stranger.post(
            f"/mfa/settings/devices/{action}",
            data={"csrf_token": csrf_of(page), "device": device_id},
        )
        assert refused.status_code == 303
        assert refused.headers["location"] == "/mfa/challenge?next=/mfa/settings"
        assert devices_on(await laptop.get("/mfa/settings")) == [device_id]


async def test_signed_out_visitors_are_sent_home(browser: httpx.AsyncClient) -> None:
    anonymous = await browser.post("/mfa/settings/devices/forget-all", data={"csrf_token": "x"})
    assert anonymous.status_code == 303
    assert anonymous.headers["location"] == "/"


# -- what else forgets them ------------------------------------------------------------------


async def test_new_recovery_codes_forget_every_browser(
    ga: GuardedApp, browser: httpx.AsyncClient
) -> None:
    await remembered(ga, browser)
    page = await browser.get("/mfa/settings")
    assert len(devices_on(page)) == 1
    codes = await browser.post("/mfa/settings/recovery-codes", data={"csrf_token": csrf_of(page)})
    assert codes.status_code == 200
    assert (
        "Your old recovery codes no longer work, and every remembered browser must enter a code "
        "again." in codes.text
    )
    assert devices_on(await browser.get("/mfa/settings")) == []
    assert (await sign_in_again(browser)).status_code == 303


async def test_signing_out_other_sessions_forgets_every_browser(
    ga: GuardedApp, browser: httpx.AsyncClient
) -> None:
    await remembered(ga, browser)
    page = await browser.get("/mfa/settings")
    assert "Remembered browsers are forgotten too." in page.text
    revoked = await browser.post("/mfa/settings/sessions", data={"csrf_token": csrf_of(page)})
    assert revoked.status_code == 200
    assert (
        "Your other sessions must enter a code again to continue, and every remembered browser "
        "is forgotten." in revoked.text
    )
    assert devices_on(revoked) == []
    devices = ga.guard.trusted_devices
    assert devices is not None
    assert await devices.devices.devices(USER) == []
    assert (await sign_in_again(browser)).status_code == 303


async def test_turning_2fa_off_forgets_every_browser(
    ga: GuardedApp, browser: httpx.AsyncClient
) -> None:
    secret = await remembered(ga, browser)
    page = await browser.get("/mfa/settings")
    ga.clock.advance(30)

    off = await browser.post(
        "/mfa/settings/disable",
        data={"csrf_token": csrf_of(page), "method": "totp", "code": ga.code(secret)},
    )

    assert off.status_code == 200
    assert "Two-factor authentication is off." in off.text
    devices = ga.guard.trusted_devices
    assert devices is not None
    assert await devices.devices.devices(USER) == []


async def test_without_trusted_devices_the_notices_are_as_before() -> None:
    ga = build_app()
    async with ga.client() as client:
        await sign_in(client, USER)
        await enrol(ga, client)
        page = await client.get("/mfa/settings")
        revoked = await client.post("/mfa/settings/sessions", data={"csrf_token": csrf_of(page)})
        assert "Your other sessions must enter a code again to continue." in revoked.text
        assert "remembered browser" not in revoked.text
        codes = await client.post(
            "/mfa/settings/recovery-codes", data={"csrf_token": csrf_of(page)}
        )
        assert "Your old recovery codes no longer work." in codes.text
        assert "remembered browser" not in codes.text


async def test_a_session_let_in_by_its_browser_that_signs_out_the_others_must_enter_a_code(
    ga: GuardedApp, browser: httpx.AsyncClient
) -> None:
    await remembered(ga, browser)
    assert (await sign_in_again(browser)).status_code == 200  # in by the device
    page = await browser.get("/mfa/settings")
    revoked = await browser.post("/mfa/settings/sessions", data={"csrf_token": csrf_of(page)})
    # The new epoch forgets this browser too: the session it let in is verified no more.
    assert revoked.status_code == 303
    assert revoked.headers["location"] == "/mfa/challenge?next=/mfa/settings"
    assert EventKind.SESSIONS_REVOKED in ga.events.kinds()
