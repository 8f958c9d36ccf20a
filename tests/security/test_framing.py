"""Framing (found by a security review): no page of the kit can be put in another
site's frame, in any state of the session, unless the ``frame_ancestors`` setting names the
origins that may; a setting that is no source list is refused. In Chromium:
tests/e2e/test_clickjacking.py."""

from __future__ import annotations

import re

import httpx
import pytest
from pydantic import ValidationError
from starlette.routing import Route

from tests.apps import GuardedApp, build_app, enrol, settings_for, sign_in


def page_routes(ga: GuardedApp) -> list[tuple[str, str]]:
    """Every (path, method) of the kit that is not its JSON API, from the routes themselves: a
    page added tomorrow is in this list."""
    mount = ga.guard.settings.mount_path
    found = []
    for route in ga.guard.routes:
        assert isinstance(route, Route), route
        # The JSON API, and the scripts the pages load (no page: nothing to frame).
        if route.path.startswith(("/api/", "/static/")):
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
