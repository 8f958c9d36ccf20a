"""Red-team findings of issue 15 (the members list, the SMS allow-list, framing, the audit log,
signing out): each a scenario an attacker played, and what they now meet."""

from __future__ import annotations

import logging
import os
import re
import uuid
from pathlib import Path

import httpx
import pytest
from examples.inbox import DEMO_PASSWORD
from playwright.sync_api import Error as PlaywrightError
from playwright.sync_api import Page, expect
from pydantic import ValidationError
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse
from starlette.routing import Route
from starlette.routing import Route as StarletteRoute

from mfa_guard import AuditEvent, EventKind, LoggingEventSink
from mfa_guard.settings import SMSSettings
from mfa_guard.sms import OutboxSMS
from mfa_guard.stores.sites import MemorySiteDirectory, Role
from tests.apps import GuardedApp, build_app, demo_inbox, enrol, settings_for, sign_in
from tests.chromium import launched
from tests.live import served

# -- the audit log: a value is one field, whatever it holds (finding 8) ---------------------------

# logfmt as log shippers read it: key=value, or key="value" with \" and \\ inside.
ESCAPES = {"t": "\t", "r": "\r", "n": "\n"}
LOGFMT_PAIR = re.compile(r'(\w+)=("(?:[^"\\]|\\.)*"|[^\s"]*)(?:\s|$)')


def logfmt(line: str) -> list[tuple[str, str]]:
    """The pairs of a line, values unquoted, refusing anything between them."""
    assert line.startswith("mfa_guard "), line
    rest, pairs = line.removeprefix("mfa_guard "), []
    while rest:
        match = LOGFMT_PAIR.match(rest)
        assert match is not None, f"not a key=value pair at: {rest!r}"
        key, value = match.groups()
        if value.startswith('"'):
            value = re.sub(r"\\(.)", lambda m: ESCAPES.get(m[1], m[1]), value[1:-1])
        pairs.append((key, value))
        rest = rest[match.end() :]
    return pairs


HOSTILE = [
    pytest.param("acme ip=10.0.0.1 event=site_policy_changed user=root", id="spaces-and-equals"),
    pytest.param('acme" ip="10.0.0.1', id="quotes"),
    pytest.param('acme\\" event=verified', id="backslash-quote"),
    pytest.param("", id="empty"),
    pytest.param("=", id="equals-alone"),
    pytest.param("-", id="what-none-reads-as"),
    pytest.param("acme\tevent=verified", id="tab"),
]


@pytest.mark.parametrize("hostile", HOSTILE)
async def test_a_hostile_site_or_user_id_stays_one_field_of_its_audit_line(
    hostile: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="mfa_guard.audit")
    sink = LoggingEventSink()
    await sink.emit(
        AuditEvent(
            EventKind.SITE_POLICY_CHANGED,
            user_id=f"owner {hostile}",
            at=0.0,
            client_ip="203.0.113.7",
            site=hostile,
            detail="enforce=off",
        )
    )
    await sink.emit(AuditEvent(EventKind.VERIFIED, user_id=hostile, at=0.0, method="totp"))
    site_line, user_line = (r for r in caplog.records if r.name == "mfa_guard.audit")

    assert logfmt(site_line.getMessage()) == [
        ("event", "site_policy_changed"),
        ("user", f"owner {hostile}"),
        ("site", hostile),
        ("enforce", "off"),
        ("ip", "203.0.113.7"),
    ]
    assert logfmt(user_line.getMessage()) == [
        ("event", "verified"),
        ("user", hostile),
        ("method", "totp"),
        ("ip", "-"),
    ]
    # The same values, unescaped, as structured fields of the record (JSON log formatters).
    assert site_line.audit == {  # type: ignore[attr-defined]
        "event": "site_policy_changed",
        "user": f"owner {hostile}",
        "method": None,
        "site": hostile,
        "detail": "enforce=off",
        "ip": "203.0.113.7",
    }
    assert user_line.audit["user"] == hostile  # type: ignore[attr-defined]


async def test_a_line_break_in_an_id_is_escaped_inside_its_quoted_field(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="mfa_guard.audit")
    forged = "eve\r\nmfa_guard event=verified user=admin"
    await LoggingEventSink().emit(AuditEvent(EventKind.VERIFIED, forged, 0.0))
    line = caplog.records[-1].getMessage()
    assert "\r" not in line
    assert "\n" not in line
    assert logfmt(line)[1] == ("user", forged)


# -- framing: no page of the kit can be put in another site's frame (finding 7) -------------------


def page_routes(ga: GuardedApp) -> list[tuple[str, str]]:
    """Every (path, method) of the kit that is not its JSON API, from the routes themselves: a
    page added tomorrow is in this list."""
    mount = ga.guard.settings.mount_path
    found = []
    for route in ga.guard.routes:
        assert isinstance(route, Route), route
        if route.path.startswith("/api/"):
            continue
        found += [(mount + route.path, method) for method in sorted(route.methods or ())]
    return found


def assert_not_frameable(response: httpx.Response, ancestors: str = "'none'") -> None:
    where = f"{response.request.method} {response.request.url.path} {response.status_code}"
    assert response.headers.get("x-frame-options") == "DENY", where
    assert response.headers.get("content-security-policy") == f"frame-ancestors {ancestors}", where


async def test_every_page_response_forbids_framing() -> None:
    """One-click forms (new recovery codes, sign out other sessions, forget browsers) must not
    be clickjacked: every response of every page route, in every state of the session (signed
    out, challenged, verified; a form with or without its token; GET and POST), says no frame."""
    ga = build_app(trusted_devices={"enabled": True})
    routes = page_routes(ga)
    assert ("/mfa/settings/devices/forget-all", "POST") in routes
    assert ("/mfa/challenge", "GET") in routes
    seen: set[int] = set()
    async with ga.client(base_url="https://testserver") as client:
        for path, method in routes:  # signed out: sent home
            assert_not_frameable(await client.request(method, path))
        await sign_in(client)
        secret, _ = await enrol(ga, client)
        await sign_in(client)  # enrolled, challenged
        for path, method in routes:
            response = await client.request(method, path)
            assert_not_frameable(response)
            seen.add(response.status_code)
        ga.clock.advance(30)
        verified = await client.post("/mfa/api/verify", json={"code": ga.code(secret)})
        assert verified.status_code == 200, verified.text
        for path, method in routes:
            response = await client.request(method, path)  # a POST without its token: refused
            assert_not_frameable(response)
            seen.add(response.status_code)
        settings = await client.get("/mfa/settings")
        assert settings.headers["content-type"].startswith("text/html")
        token = re.search(r'name="csrf_token" value="([^"]+)"', settings.text)
        assert token is not None
        for path, method in routes:  # with the token and nothing else: the form again
            if method == "POST":
                response = await client.post(path, data={"csrf_token": token[1]})
                assert_not_frameable(response)
                seen.add(response.status_code)
    assert {200, 303, 400, 422} <= seen  # pages, redirects, refused forms, forms shown again


async def test_the_pages_may_be_framed_by_the_origins_the_setting_names() -> None:
    ga = build_app(frame_ancestors="'self' https://app.example.com")
    async with ga.client() as client:
        await sign_in(client)
        page = await client.get("/mfa/enrol")
    assert page.status_code == 200
    assert page.headers["content-security-policy"] == (
        "frame-ancestors 'self' https://app.example.com"
    )
    # X-Frame-Options cannot name an origin: left out, the CSP decides (every current browser).
    assert "x-frame-options" not in page.headers
    same_origin = build_app(frame_ancestors="'self'")
    async with same_origin.client() as client:
        await sign_in(client)
        page = await client.get("/mfa/enrol")
    assert page.headers["x-frame-options"] == "SAMEORIGIN"


@pytest.mark.parametrize(
    "value",
    [
        "",
        "'none' 'self'",
        "https://app.example.com; script-src *",
        "https://app.example.com,https://b.example.com",
        "'self'\r\nSet-Cookie: a=b",
        "javascript:alert(1)",
        "'unsafe-inline'",
    ],
)
def test_a_frame_ancestors_setting_that_is_no_source_list_is_refused(value: str) -> None:
    with pytest.raises(ValidationError, match="frame_ancestors"):
        settings_for(frame_ancestors=value)


# -- what a session with the password only may read (finding 5) ----------------------------------

OWNER = "owner@acme.test"
# The only reads of the JSON API a session that has not completed its second factor may make:
# its own status, and the public document of the API.
READABLE_BEFORE_2FA = {"/mfa/api/status", "/mfa/api/openapi.json"}


async def acme_guard() -> GuardedApp:
    directory = MemorySiteDirectory()
    await directory.save_site("acme", "Acme")
    await directory.add_member("acme", OWNER, Role.OWNER)
    await directory.add_member("acme", "agent@acme.test", Role.OPERATOR)
    return build_app(sites=directory, trusted_devices={"enabled": True})


async def api_reads(client: httpx.AsyncClient) -> list[str]:
    """Every GET of the JSON API, from its OpenAPI document (which tests/test_openapi.py keeps
    true to the routes), a path parameter filled in."""
    document = (await client.get("/mfa/api/openapi.json")).json()
    return [
        path.replace("{site}", "acme") for path, item in document["paths"].items() if "get" in item
    ]


async def test_an_owner_with_the_password_only_cannot_read_the_members() -> None:
    """The red team's finding: signed in with the password only, an enrolled owner's session
    read every member's e-mail, role, 2FA and phone state."""
    ga = await acme_guard()
    async with ga.client() as owner:
        await sign_in(owner, OWNER)
        secret, _ = await enrol(ga, owner)
        await sign_in(owner, OWNER)  # a new sign-in: the password only
        members = await owner.get("/mfa/api/sites/acme/members")
        assert members.status_code == 401, members.text
        assert members.json()["error"]["code"] == "mfa_required"
        assert "agent@acme.test" not in members.text

        ga.clock.advance(30)
        assert (await verify_code(owner, ga.code(secret))).status_code == 200
        members = await owner.get("/mfa/api/sites/acme/members")
        assert members.status_code == 200, members.text
        assert sorted(m["user_id"] for m in members.json()["members"]) == [
            "agent@acme.test",
            OWNER,
        ]


async def test_every_read_beyond_its_own_status_needs_the_second_factor() -> None:
    """Every GET of the API, enumerated from the routes: an enrolled session that has not
    completed its second factor gets 401 mfa_required and no data, but for its own status
    and the API's document; once verified, every read answers."""
    ga = await acme_guard()
    async with ga.client() as owner:
        reads = await api_reads(owner)
        assert {"/mfa/api/sites", "/mfa/api/sites/acme/members", "/mfa/api/devices"} <= set(reads)
        await sign_in(owner, OWNER)
        secret, _ = await enrol(ga, owner)
        await sign_in(owner, OWNER)
        for path in reads:
            response = await owner.get(path)
            if path in READABLE_BEFORE_2FA:
                assert response.status_code == 200, path
            else:
                assert response.status_code == 401, (path, response.text)
                assert response.json() == {
                    "error": {
                        "code": "mfa_required",
                        "message": "Complete two-factor authentication first.",
                    }
                }
        ga.clock.advance(30)
        assert (await verify_code(owner, ga.code(secret))).status_code == 200
        for path in reads:
            assert (await owner.get(path)).status_code == 200, path


async def verify_code(client: httpx.AsyncClient, code: str) -> httpx.Response:
    return await client.post("/mfa/api/verify", json={"method": "totp", "code": code})


# -- a number gets at most ten texts a day (finding 6) -------------------------------------------


async def test_one_number_gets_at_most_ten_texts_a_day_whoever_asks() -> None:
    """The 10-minute window alone (3 per 10 minutes) let 432 texts a day go to one number; the
    daily cap refuses the eleventh with 429 and Retry-After, before the provider is called."""
    assert SMSSettings().per_number_daily == "10/day"
    outbox = OutboxSMS()
    ga = build_app(
        sms_provider=outbox,
        sms={
            "enabled": True,
            "provider": "outbox",
            "allowed_regions": ["FR"],
            "per_number": "100/minute",  # the short window out of the way: the day decides
            "per_ip": "100/hour",
        },
    )
    number = f"+3361234{uuid.uuid4().int % 10**4:04d}"
    for n in range(11):
        async with ga.client() as client:
            await sign_in(client, f"user{n}@example.test")
            response = await client.post("/mfa/api/phone", json={"phone": number})
        if n < 10:
            assert response.status_code == 202, response.text
    assert response.status_code == 429, response.text
    assert response.json()["error"]["code"] == "too_many_texts"
    assert 1 <= int(response.headers["Retry-After"]) <= 86_400
    assert len(outbox.messages) == 10


# -- in a real browser: another site's frame shows nothing of the kit ------------------------------


def evil_site(target: str) -> Starlette:
    """Another origin's page that frames ``target`` (a clickjacking page would then hide it)."""

    async def page(request: Request) -> HTMLResponse:
        return HTMLResponse(
            f'<!doctype html><title>Win a prize</title><iframe id="bait" src="{target}" '
            'width="800" height="600"></iframe>'
        )

    return Starlette(routes=[StarletteRoute("/", page)])


def framed_text(browser_page: Page, evil_url: str) -> str:
    """The text inside the other site's frame: the framed page's, or Chromium's error page."""
    browser_page.goto(evil_url)
    browser_page.wait_for_load_state("load")
    frame = browser_page.frame_locator("#bait")
    try:
        return frame.locator("body").inner_text(timeout=3000)
    except PlaywrightError:
        return ""


def test_chromium_refuses_to_show_a_kit_page_in_another_sites_frame(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in os.environ:
        if name.upper().startswith("MFA_GUARD_"):
            monkeypatch.delenv(name)
    with (
        served(demo_inbox(tmp_path / "data")) as demo,
        served(evil_site(f"{demo}/mfa/settings")) as kit_framed,
        served(evil_site(f"{demo}/login")) as app_framed,
        launched() as browser,
    ):
        context = browser.new_context(base_url=demo)
        page = context.new_page()
        page.goto("/login")
        page.get_by_label("E-mail address").fill("solo@example.test")
        page.get_by_label("Password").fill(DEMO_PASSWORD)
        page.get_by_role("button", name="Sign in").click()
        page.wait_for_url(re.compile(r".*/inbox"))
        # The settings page itself, with its style (a CSP of frame-ancestors only).
        for width in (390, 1280):
            page.set_viewport_size({"width": width, "height": 900})
            page.goto("/mfa/settings")
            expect(page.get_by_role("heading", level=1)).to_be_visible()
            # The pages' inline <style> still applies: the kit's blue button.
            button = page.get_by_role("button", name="Add the number")
            assert button.evaluate("e => getComputedStyle(e).backgroundColor") == (
                "rgb(29, 78, 216)"
            )
            assert page.evaluate("document.documentElement.scrollWidth") <= width
            page.screenshot(path=str(tmp_path / f"settings-{width}.png"), full_page=True)
        # A page of the app, which sends no such header, shows in the frame (the test can
        # see a frame's content); the kit's page does not.
        assert "Sign in" in framed_text(page, app_framed)
        shown = framed_text(page, kit_framed)
        assert "refused to connect" in shown  # Chromium's page for a blocked frame
        assert "two-factor" not in shown.lower()
