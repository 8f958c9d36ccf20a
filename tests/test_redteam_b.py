"""Red-team findings of issue 15 (the members list, the SMS allow-list, framing, the audit log,
signing out): each a scenario an attacker played, and what they now meet."""

from __future__ import annotations

import logging
import re

import httpx
import pytest
from pydantic import ValidationError
from starlette.routing import Route

from mfa_guard import AuditEvent, EventKind, LoggingEventSink
from tests.apps import GuardedApp, build_app, enrol, settings_for, sign_in

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
