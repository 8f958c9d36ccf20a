"""A way out of every kit page (settings ``sign_out``): the app's sign-out in the header of each
page, as a form with the app's hidden fields or as a link; "Cancel" back to a safe ``next`` while
enrolment is optional; and the setting refused at start-up when it could not work. In a real
browser: tests/e2e/test_rendered_pages.py and tests/e2e/test_browser_story.py."""

from __future__ import annotations

import re
from typing import Any

import httpx
import pytest
from pydantic import ValidationError
from starlette.types import Scope

from mfa_guard import MFAGuardSettings
from mfa_guard.stores.sites import MemorySiteDirectory, Role, SitePolicy
from tests.apps import ENCRYPTION_KEY, GuardedApp, build_app, sign_in

POST_SIGN_OUT = {"url": "/logout", "method": "post"}
HEADER = re.compile(r'<header class="account">(.*?)</header>', re.S)


def header(page: httpx.Response) -> str | None:
    found = HEADER.search(page.text)
    return None if found is None else found.group(1)


def the_apps_csrf_field(scope: Scope) -> dict[str, str]:
    return {"app_csrf": "token-of-" + str(scope["session"].get("user"))}


# -- the setting ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "url",
    ["/logout", "/logout?next=/", "https://id.example.com/logout", "http://localhost:8000/out"],
)
def test_a_sign_out_is_a_local_path_or_an_absolute_url(url: str) -> None:
    settings = MFAGuardSettings(
        _env_file=None, encryption_keys=[ENCRYPTION_KEY], sign_out={"url": url}
    )
    assert settings.sign_out.url == url
    assert settings.sign_out.method == "post"


REFUSED = [
    pytest.param("//evil.test/logout", "must be a local path", id="scheme-relative"),
    pytest.param("/\\evil.test", "must be a local path", id="backslash"),
    pytest.param("logout", "must be a local path", id="relative"),
    pytest.param("javascript:alert(1)", "must be a local path", id="javascript"),
    pytest.param("https:evil.test", "must be a local path", id="no-host"),
    pytest.param("ftp://files.example.com/", "must be a local path", id="ftp"),
    pytest.param("/logout\r\nSet-Cookie: x=1", "must be a local path", id="crlf"),
    pytest.param('https://id.example.com/"><script>', "must be a local path", id="quote"),
    pytest.param("/account/sign-out", "not under exempt_paths", id="guarded-path"),
]


@pytest.mark.parametrize(("url", "message"), REFUSED)
def test_a_sign_out_that_could_not_work_is_refused_at_start_up(url: str, message: str) -> None:
    with pytest.raises(ValidationError, match=message) as refused:
        MFAGuardSettings(_env_file=None, encryption_keys=[ENCRYPTION_KEY], sign_out={"url": url})
    assert "sign_out.url" in str(refused.value)


def test_a_guarded_sign_out_path_is_refused_with_the_fix() -> None:
    with pytest.raises(ValidationError) as refused:
        MFAGuardSettings(
            _env_file=None, encryption_keys=[ENCRYPTION_KEY], sign_out={"url": "/account/out"}
        )
    assert "add its path to MFA_GUARD_EXEMPT_PATHS (e.g. '/account/out')" in str(refused.value)
    # Exempt, it is fine.
    settings = MFAGuardSettings(
        _env_file=None,
        encryption_keys=[ENCRYPTION_KEY],
        exempt_paths=["/login", "/account/out"],
        sign_out={"url": "/account/out?bye=1"},
    )
    assert settings.sign_out.url == "/account/out?bye=1"


def test_the_sign_out_comes_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MFA_GUARD_ENCRYPTION_KEYS", ENCRYPTION_KEY)
    monkeypatch.setenv("MFA_GUARD_SIGN_OUT__URL", "https://id.example.com/logout")
    monkeypatch.setenv("MFA_GUARD_SIGN_OUT__METHOD", "get")
    settings = MFAGuardSettings(_env_file=None)
    assert (settings.sign_out.url, settings.sign_out.method) == (
        "https://id.example.com/logout",
        "get",
    )
    monkeypatch.setenv("MFA_GUARD_SIGN_OUT__METHOD", "delete")
    with pytest.raises(ValidationError, match=r"sign_out\.method"):
        MFAGuardSettings(_env_file=None)


def test_no_sign_out_by_default() -> None:
    settings = MFAGuardSettings(_env_file=None, encryption_keys=[ENCRYPTION_KEY])
    assert settings.sign_out.url is None
    blank = MFAGuardSettings(
        _env_file=None, encryption_keys=[ENCRYPTION_KEY], sign_out={"url": "  "}
    )
    assert blank.sign_out.url is None


# -- on every page -------------------------------------------------------------------------------


async def pages_of_an_enrolled_user(guarded: GuardedApp) -> dict[str, httpx.Response]:
    """Every kit page a person meets, each as served: enrolment (before and with the QR code),
    recovery codes, the challenge, settings, and an error page."""
    seen: dict[str, httpx.Response] = {}
    async with guarded.client() as client:
        await sign_in(client)
        seen["enrol"] = await client.get("/mfa/enrol")
        token = re.search(r'name="csrf_token" value="([^"]+)"', seen["enrol"].text)
        assert token is not None
        seen["enrol, QR code"] = await client.post(
            "/mfa/enrol", data={"csrf_token": token.group(1), "next": "/"}
        )
        secret = re.search(r'id="manual-key">([^<]+)<', seen["enrol, QR code"].text)
        assert secret is not None
        seen["recovery codes"] = await client.post(
            "/mfa/enrol/confirm",
            data={
                "csrf_token": token.group(1),
                "code": guarded.code(secret.group(1).replace(" ", "")),
            },
        )
        seen["settings"] = await client.get("/mfa/settings")
        seen["error"] = await client.post("/mfa/settings/disable", data={"csrf_token": "stale"})
        await client.post("/logout")
        await sign_in(client)
        seen["challenge"] = await client.get("/mfa/challenge?next=/protected")
    return seen


async def test_every_kit_page_offers_the_apps_sign_out_form_with_its_fields() -> None:
    guarded = build_app(sign_out=POST_SIGN_OUT, sign_out_fields=the_apps_csrf_field)
    seen = await pages_of_an_enrolled_user(guarded)
    assert [seen[name].status_code for name in seen] == [200, 200, 200, 200, 403, 200]
    for name, page in seen.items():
        found = header(page)
        assert found is not None, name
        assert "Signed in as <strong>solo@example.test</strong>. Not you?" in found, name
        assert '<form method="post" action="/logout">' in found, name
        assert '<input type="hidden" name="app_csrf" value="token-of-solo@example.test">' in found
        assert '<button type="submit" id="sign-out">Sign out</button>' in found, name


async def test_a_get_sign_out_is_a_link_and_takes_no_fields() -> None:
    called: list[Scope] = []

    def fields(scope: Scope) -> dict[str, str]:
        called.append(scope)
        return {}

    guarded = build_app(
        sign_out={"url": "https://id.example.com/logout?a=1&b=2", "method": "get"},
        sign_out_fields=fields,
    )
    async with guarded.client() as client:
        await sign_in(client)
        page = await client.get("/mfa/enrol")
    found = header(page)
    assert found is not None
    assert '<a href="https://id.example.com/logout?a=1&amp;b=2" id="sign-out">Sign out</a>' in found
    assert "<form" not in found
    assert called == []


async def test_in_french_too() -> None:
    guarded = build_app(sign_out=POST_SIGN_OUT)
    async with guarded.client(headers={"Accept-Language": "fr"}) as client:
        await sign_in(client)
        page = await client.get("/mfa/enrol")
    found = header(page)
    assert found is not None
    assert "Connecté en tant que <strong>solo@example.test</strong>" in found
    assert ">Se déconnecter</button>" in found
    assert ">Annuler</a>" in page.text


async def test_the_account_name_is_escaped() -> None:
    guarded = build_app(sign_out=POST_SIGN_OUT)
    async with guarded.client() as client:
        await sign_in(client, user="<b>mallory</b>@example.test")
        page = await client.get("/mfa/enrol")
    found = header(page)
    assert found is not None
    assert "<strong>&lt;b&gt;mallory&lt;/b&gt;@example.test</strong>" in found


async def test_without_a_sign_out_the_pages_have_no_header() -> None:
    guarded = build_app()
    seen = await pages_of_an_enrolled_user(guarded)
    assert all(header(page) is None for page in seen.values())


# -- "Cancel" while enrolment is optional --------------------------------------------------------

CANCEL = re.compile(r'<a href="([^"]*)" id="cancel-enrolment">Cancel</a>')


@pytest.mark.parametrize(
    ("next_path", "cancel_to"),
    [
        ("/protected?tab=2", "/protected?tab=2"),
        (None, "/"),
        ("//evil.test/", "/"),
        ("https://evil.test/", "/"),
        ("/%2F%2Fevil.test", "/"),
        ("javascript:alert(1)", "/"),
    ],
)
async def test_an_optional_enrolment_cancels_back_to_a_safe_next(
    next_path: str | None, cancel_to: str
) -> None:
    guarded = build_app(sign_out=POST_SIGN_OUT)
    async with guarded.client() as client:
        await sign_in(client)
        params = {} if next_path is None else {"next": next_path}
        start = await client.get("/mfa/enrol", params=params)
        token = re.search(r'name="csrf_token" value="([^"]+)"', start.text)
        assert token is not None
        with_qr = await client.post(
            "/mfa/enrol", data={"csrf_token": token.group(1), "next": next_path or ""}
        )
    for page in (start, with_qr):
        cancel = CANCEL.search(page.text)
        assert cancel is not None
        assert cancel.group(1) == cancel_to.replace("&", "&amp;")


async def enforcing_app(grace_deadline: float, **overrides: Any) -> GuardedApp:
    sites = MemorySiteDirectory()
    await sites.save_site("acme", "Acme")
    await sites.add_member("acme", "solo@example.test", Role.OPERATOR)
    await sites.set_policy("acme", SitePolicy(enforce=True, grace_deadline=grace_deadline))
    return build_app(sites=sites, sign_out=POST_SIGN_OUT, **overrides)


async def test_a_forced_enrolment_has_no_cancel_only_the_sign_out() -> None:
    guarded = await enforcing_app(grace_deadline=0.0)
    async with guarded.client() as client:
        await sign_in(client)
        sent = await client.get("/protected")
        assert sent.status_code == 303
        assert sent.headers["location"] == "/mfa/enrol?next=/protected"
        page = await client.get(sent.headers["location"])
    assert 'id="enrolment-notice"' in page.text
    assert CANCEL.search(page.text) is None
    assert header(page) is not None


async def test_within_a_grace_period_enrolment_can_still_wait() -> None:
    guarded = await enforcing_app(grace_deadline=10**10)
    async with guarded.client() as client:
        await sign_in(client)
        assert (await client.get("/protected")).status_code == 200
        page = await client.get("/mfa/enrol?next=/protected")
    assert 'id="enrolment-notice"' in page.text
    cancel = CANCEL.search(page.text)
    assert cancel is not None
    assert cancel.group(1) == "/protected"


# -- the QR code: one scalable drawing, on the page and in the API -------------------------------


async def test_the_page_and_the_api_draw_the_same_scalable_qr_code() -> None:
    guarded = build_app()
    async with guarded.client() as client:
        await sign_in(client)
        setup = (await client.post("/mfa/api/totp/setup", json={})).json()
        page = await client.get("/mfa/enrol")
    assert setup["qr_svg"] in page.text
    opening = re.match(r"<svg ([^>]*)>", setup["qr_svg"])
    assert opening is not None
    assert re.fullmatch(r'viewBox="0 0 (\d+) \1" class="mfa-qr"', opening.group(1))
