"""docs/security.md checklist item 9: a form needs this session's token and a post from this site;
a JSON post is refused when the browser says it comes from another site; GET changes nothing."""

from __future__ import annotations

import secrets
from dataclasses import dataclass

import httpx
import pytest

from tests.apps import GuardedApp, build_app, sign_in

# The shared helpers' asserts explain a failure as this module's own do.
from tests.scenarios import (
    USER,
    State,
    arrive,
    assert_json_error,
    assert_refused_page,
    page_token,
    snapshot,
)


@dataclass(frozen=True)
class Action:
    """A state-changing post, and the state in which it succeeds."""

    path: str
    state: State
    sends_code: bool

    def fields(self, guarded: GuardedApp, secret: str) -> dict[str, str]:
        # Never empty: a browser's form post always has a body and a content type.
        fields = {"next": "/"}
        if self.sends_code:
            fields["code"] = guarded.code(secret)
        return fields


FORMS = [
    pytest.param(Action("/mfa/challenge", State.CHALLENGED, True), id="challenge"),
    pytest.param(Action("/mfa/enrol", State.SIGNED_IN, False), id="enrol"),
    pytest.param(Action("/mfa/enrol/confirm", State.PENDING, True), id="enrol-confirm"),
    pytest.param(
        Action("/mfa/settings/recovery-codes", State.VERIFIED, False), id="recovery-codes"
    ),
    pytest.param(Action("/mfa/settings/disable", State.VERIFIED, True), id="disable"),
]
POST_ONLY_FORMS = [
    p for p in FORMS if p.id in ("enrol-confirm", "recovery-codes", "disable")
]  # the challenge and enrolment pages answer GET too
FORM_SUCCESS = {
    "/mfa/challenge": 303,
    "/mfa/enrol": 200,
    "/mfa/enrol/confirm": 200,
    "/mfa/settings/recovery-codes": 200,
    "/mfa/settings/disable": 200,
}
JSON_POSTS = [
    pytest.param(Action("/mfa/api/totp/setup", State.SIGNED_IN, False), id="totp-setup"),
    pytest.param(Action("/mfa/api/totp/confirm", State.PENDING, True), id="totp-confirm"),
    pytest.param(Action("/mfa/api/verify", State.CHALLENGED, True), id="verify"),
    pytest.param(Action("/mfa/api/recovery-codes", State.VERIFIED, False), id="recovery-codes"),
    pytest.param(Action("/mfa/api/disable", State.VERIFIED, True), id="disable"),
]
CROSS_SITE = [
    pytest.param({"origin": "https://evil.test"}, id="origin-evil"),
    pytest.param({"origin": "null"}, id="origin-null"),
    pytest.param({"sec-fetch-site": "cross-site"}, id="fetch-site-cross-site"),
    pytest.param({"sec-fetch-site": "same-site"}, id="fetch-site-same-site"),
    pytest.param(
        {"origin": "https://evil.test", "sec-fetch-site": "same-origin"}, id="origin-evil-lying"
    ),
    pytest.param({"origin": "https://testserver.evil.test"}, id="origin-suffixed-host"),
]
SAME_ORIGIN = [
    pytest.param({}, id="no-browser-headers"),
    pytest.param({"origin": "http://testserver"}, id="origin-this-site"),
    pytest.param(
        {"origin": "http://testserver", "sec-fetch-site": "same-origin"}, id="both-this-site"
    ),
]
# (headers, the post comes from this site): every sender, and what the browser tells of it.
SENDERS = [
    *(pytest.param(*p.values, False, id=p.id) for p in CROSS_SITE),
    *(pytest.param(*p.values, True, id=p.id) for p in SAME_ORIGIN),
]


def assert_cross_site_refusal(response: httpx.Response) -> None:
    assert response.status_code == 403, response.text
    assert assert_json_error(response) == "cross_site_request"


# -- HTML forms -----------------------------------------------------------------------------


async def another_sessions_token(guarded: GuardedApp) -> str:
    async with guarded.client() as attacker:
        await sign_in(attacker, "mallory@example.test")
        return await page_token(attacker, State.SIGNED_IN)


@pytest.mark.parametrize("token", ["missing", "empty", "wrong", "another-session"])
@pytest.mark.parametrize("action", FORMS)
async def test_a_form_without_this_sessions_token_is_refused_and_changes_nothing(
    guarded: GuardedApp, client: httpx.AsyncClient, action: Action, token: str
) -> None:
    secret = await arrive(guarded, client, action.state)
    await page_token(client, action.state)  # the session has a token; the post lacks it
    fields = action.fields(guarded, secret)
    if token == "empty":
        fields["csrf_token"] = ""
    elif token == "wrong":
        fields["csrf_token"] = secrets.token_urlsafe(32)
    elif token == "another-session":
        fields["csrf_token"] = await another_sessions_token(guarded)
    before = await snapshot(guarded, client)
    assert_refused_page(await client.post(action.path, data=fields), 403)
    assert await snapshot(guarded, client) == before


@pytest.mark.parametrize(("headers", "from_this_site"), SENDERS)
@pytest.mark.parametrize("action", FORMS)
async def test_a_form_with_its_token_goes_through_from_this_site_and_only_from_it(
    guarded: GuardedApp,
    client: httpx.AsyncClient,
    action: Action,
    headers: dict[str, str],
    from_this_site: bool,
) -> None:
    secret = await arrive(guarded, client, action.state)
    fields = {"csrf_token": await page_token(client, action.state)}
    fields |= action.fields(guarded, secret)
    before = await snapshot(guarded, client)
    response = await client.post(action.path, data=fields, headers=headers)
    if from_this_site:
        assert response.status_code == FORM_SUCCESS[action.path], response.text
    else:  # refused even with a valid token, and nothing changed
        assert_refused_page(response, 403)
        assert await snapshot(guarded, client) == before


# -- JSON API -------------------------------------------------------------------------------


@pytest.mark.parametrize(("headers", "from_this_site"), SENDERS)
@pytest.mark.parametrize("action", JSON_POSTS)
async def test_a_json_post_goes_through_from_this_site_and_only_from_it(
    guarded: GuardedApp,
    client: httpx.AsyncClient,
    action: Action,
    headers: dict[str, str],
    from_this_site: bool,
) -> None:
    secret = await arrive(guarded, client, action.state)
    before = await snapshot(guarded, client)
    response = await client.post(action.path, json=action.fields(guarded, secret), headers=headers)
    if from_this_site:
        assert response.status_code == 200, response.text
    else:  # refused, and nothing changed
        assert_cross_site_refusal(response)
        assert await snapshot(guarded, client) == before


@pytest.mark.parametrize("headers", CROSS_SITE)
async def test_a_cross_site_json_post_is_refused_before_asking_who_is_signed_in(
    client: httpx.AsyncClient, headers: dict[str, str]
) -> None:
    assert_cross_site_refusal(await client.post("/mfa/api/verify", json={}, headers=headers))


@pytest.mark.parametrize(
    ("origin", "allowed"),
    [
        ("https://admin.example", True),
        ("HTTPS://ADMIN.EXAMPLE", True),
        ("http://admin.example", False),
        ("https://admin.example:8443", False),
        ("https://admin.example.evil.test", False),
        ("https://evil.test", False),
    ],
)
async def test_a_trusted_origin_may_post_and_only_that_one(origin: str, allowed: bool) -> None:
    guarded = build_app(trusted_origins=["https://admin.example"])
    async with guarded.client() as client:
        secret = await arrive(guarded, client, State.CHALLENGED)
        headers = {"origin": origin, "sec-fetch-site": "cross-site"}
        before = await snapshot(guarded, client)
        response = await client.post(
            "/mfa/api/verify", json={"code": guarded.code(secret)}, headers=headers
        )
        if allowed:
            assert response.status_code == 200, response.text
        else:
            assert_cross_site_refusal(response)
            assert await snapshot(guarded, client) == before


async def test_a_trusted_origin_may_post_a_form_with_its_token() -> None:
    guarded = build_app(trusted_origins=["https://admin.example"])
    async with guarded.client() as client:
        secret = await arrive(guarded, client, State.CHALLENGED)
        token = await page_token(client, State.CHALLENGED)
        response = await client.post(
            "/mfa/challenge",
            data={"csrf_token": token, "code": guarded.code(secret)},
            headers={"origin": "https://admin.example"},
        )
        assert response.status_code == 303, response.text


@pytest.mark.parametrize(
    "headers",
    [
        pytest.param({"origin": "https://testserver"}, id="other-scheme"),
        pytest.param(
            {"origin": "https://testserver", "sec-fetch-site": "cross-site"},
            id="other-scheme-said-cross-site",
        ),
    ],
)
async def test_the_same_host_under_another_scheme_is_another_site(
    guarded: GuardedApp, client: httpx.AsyncClient, headers: dict[str, str]
) -> None:
    await arrive(guarded, client, State.SIGNED_IN)
    before = await snapshot(guarded, client)
    response = await client.post("/mfa/api/totp/setup", json={}, headers=headers)
    assert_cross_site_refusal(response)
    assert await snapshot(guarded, client) == before


# -- GET never changes state ----------------------------------------------------------------


async def test_opening_the_enrolment_page_starts_no_set_up(
    guarded: GuardedApp, client: httpx.AsyncClient
) -> None:
    await sign_in(client, USER)
    for url in ("/mfa/enrol", "/mfa/enrol?next=/inbox", "/mfa/settings", "/mfa/api/status"):
        assert (await client.get(url)).status_code == 200
    assert await guarded.store.get(USER) is None
    assert guarded.events.kinds() == []


async def test_opening_the_challenge_page_counts_no_attempt(
    guarded: GuardedApp, client: httpx.AsyncClient
) -> None:
    secret = await arrive(guarded, client, State.CHALLENGED)
    for _ in range(10):  # twice the default limit of failures a minute
        page = await client.get("/mfa/challenge", params={"code": "000000", "method": "totp"})
        assert page.status_code == 200
    assert guarded.events.kinds() == []
    response = await client.post("/mfa/api/verify", json={"code": guarded.code(secret)})
    assert response.status_code == 200, response.text


@pytest.mark.logs_secrets(
    reason="the test's own client puts the code in a GET's query string, and httpx logs the URL "
    "it requests; the kit refuses the GET and logs nothing of it"
)
@pytest.mark.parametrize("action", [*JSON_POSTS, *POST_ONLY_FORMS])
async def test_a_get_to_a_post_only_route_is_refused_and_changes_nothing(
    guarded: GuardedApp, client: httpx.AsyncClient, action: Action
) -> None:
    secret = await arrive(guarded, client, action.state)
    before = await snapshot(guarded, client)
    response = await client.get(action.path, params=action.fields(guarded, secret))
    assert response.status_code == 405
    assert response.headers["allow"] == "POST"
    assert await snapshot(guarded, client) == before
