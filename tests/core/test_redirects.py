"""docs/security.md checklist item 8: ``next=`` is only ever a same-origin path (ASVS 5.1.5)."""

from __future__ import annotations

import html
import re

import httpx
import pytest

from mfa_guard.core.redirects import MAX_NEXT_LENGTH, safe_next
from tests.apps import GuardedApp, sign_in

# The shared helpers' asserts explain a failure as this module's own do.
from tests.scenarios import TOKEN, USER, State, arrive

DEFAULT = "/home"
NEXT = re.compile(r'name="next" value="([^"]*)"')
ENCODED_CRLF = "/%0d%0aSet-Cookie:x"

HOSTILE = [
    pytest.param("https://evil.test", id="absolute-url"),
    pytest.param("//evil.test", id="protocol-relative"),
    pytest.param("///evil.test", id="three-slashes"),
    pytest.param("/\\evil.test", id="slash-backslash"),
    pytest.param("\\/evil.test", id="backslash-slash"),
    pytest.param("\\\\evil.test", id="two-backslashes"),
    pytest.param("/\\/evil.test", id="slash-backslash-slash"),
    pytest.param("https:evil.test", id="scheme-without-slashes"),
    pytest.param("%2F%2Fevil.test", id="percent-encoded-slashes"),
    pytest.param("javascript:alert(1)", id="javascript-url"),
    pytest.param("JavaScript:alert(1)", id="javascript-url-mixed-case"),
    pytest.param("evil.test", id="relative-host"),
    pytest.param(" //evil.test", id="leading-space"),
    pytest.param("/foo\r\nLocation: https://evil.test", id="crlf"),
    pytest.param("/\t/evil.test", id="tab-inside"),
    pytest.param("/\n/evil.test", id="newline-inside"),
    pytest.param("/\x00/evil.test", id="nul-inside"),
    pytest.param("/" + "a" * 3000, id="very-long-path"),  # over 2048, inside a 4 kB form
    pytest.param("http://testserver/inbox", id="absolute-url-to-this-site"),
    pytest.param("", id="empty"),
]

LOCAL = [
    "/inbox",
    "/inbox?x=1#y",
    "/",
    "/mfa/settings",
    "/caf%C3%A9?q=a%20b",
    "/search?q=https://example.org",
]


# -- safe_next --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "candidate",
    [
        *HOSTILE,
        pytest.param(None, id="none"),
        pytest.param(ENCODED_CRLF, id="percent-encoded-crlf"),
    ],
)
def test_a_hostile_next_gives_the_default(candidate: str | None) -> None:
    assert safe_next(candidate, DEFAULT) == DEFAULT


@pytest.mark.parametrize("path", LOCAL)
def test_a_local_path_is_kept(path: str) -> None:
    assert safe_next(path, DEFAULT) == path


def test_a_next_longer_than_the_limit_gives_the_default() -> None:
    longest = "/" + "a" * (MAX_NEXT_LENGTH - 1)
    assert safe_next(longest, DEFAULT) == longest
    assert safe_next(longest + "a", DEFAULT) == DEFAULT


# -- over HTTP --------------------------------------------------------------------------------


async def challenge_form(client: httpx.AsyncClient, url: str) -> tuple[str, str]:
    """The challenge page's CSRF token and the ``next`` its form carries."""
    page = await client.get(url)
    assert page.status_code == 200, page.text
    token, carried = TOKEN.search(page.text), NEXT.search(page.text)
    assert token is not None
    assert carried is not None
    return token.group(1), html.unescape(carried.group(1))


async def answer_challenge(
    guarded: GuardedApp, client: httpx.AsyncClient, secret: str, token: str, next_path: str
) -> httpx.Response:
    form = {"csrf_token": token, "code": guarded.code(secret), "next": next_path}
    response = await client.post("/mfa/challenge", data=form)
    assert response.status_code == 303, response.text
    return response


@pytest.mark.parametrize("hostile", HOSTILE)
async def test_a_hostile_next_posted_with_a_correct_code_lands_on_the_home_page(
    guarded: GuardedApp, client: httpx.AsyncClient, hostile: str
) -> None:
    secret = await arrive(guarded, client, State.CHALLENGED)
    token, _ = await challenge_form(client, "/mfa/challenge")
    response = await answer_challenge(guarded, client, secret, token, hostile)
    assert response.headers["location"] == "/"


@pytest.mark.parametrize(
    ("next_path", "returns_to"),
    [
        *(pytest.param(*p.values, "/", id=f"hostile-{p.id}") for p in HOSTILE),
        *(pytest.param(local, local, id=f"local-{local}") for local in LOCAL),
    ],
)
async def test_the_challenge_form_carries_the_links_next_only_when_it_is_local(
    guarded: GuardedApp, client: httpx.AsyncClient, next_path: str, returns_to: str
) -> None:
    """A local ``next`` is where the challenge returns; a hostile one is not carried at all."""
    secret = await arrive(guarded, client, State.CHALLENGED)
    url = httpx.URL("/mfa/challenge", params={"next": next_path})
    token, carried = await challenge_form(client, str(url))
    assert carried == returns_to
    response = await answer_challenge(guarded, client, secret, token, carried)
    assert response.headers["location"] == returns_to


async def test_a_percent_encoded_crlf_in_next_cannot_inject_a_header(
    guarded: GuardedApp, client: httpx.AsyncClient
) -> None:
    secret = await arrive(guarded, client, State.CHALLENGED)
    token, _ = await challenge_form(client, "/mfa/challenge")
    response = await answer_challenge(guarded, client, secret, token, ENCODED_CRLF)
    location = response.headers["location"]
    assert location in ("/", ENCODED_CRLF)  # same-origin either way, never decoded
    assert [
        c for c in response.headers.get_list("set-cookie") if not c.startswith("session=")
    ] == []


@pytest.mark.parametrize("hostile", HOSTILE)
async def test_a_user_without_two_factor_is_sent_on_from_the_challenge_to_a_safe_place(
    client: httpx.AsyncClient, hostile: str
) -> None:
    await sign_in(client, USER)
    response = await client.get("/mfa/challenge", params={"next": hostile})
    assert response.status_code == 303
    assert response.headers["location"] == "/"


@pytest.mark.parametrize("hostile", HOSTILE)
async def test_the_enrolment_page_carries_only_a_safe_next(
    client: httpx.AsyncClient, hostile: str
) -> None:
    await sign_in(client, USER)
    page = await client.get("/mfa/enrol", params={"next": hostile})
    assert page.status_code == 200
    assert [html.unescape(v) for v in NEXT.findall(page.text)] == ["/"]
    assert "evil.test" not in page.text


@pytest.mark.parametrize(
    ("protected", "challenge"),
    [
        ("/protected?x=1", "/mfa/challenge?next=/protected%3Fx%3D1"),
        ("/protected?x=1&y=a%20b", "/mfa/challenge?next=/protected%3Fx%3D1%26y%3Da%2520b"),
    ],
)
async def test_the_challenge_returns_to_the_protected_page_and_its_query(
    guarded: GuardedApp, client: httpx.AsyncClient, protected: str, challenge: str
) -> None:
    secret = await arrive(guarded, client, State.CHALLENGED)
    response = await client.get(protected)
    assert response.status_code == 303
    assert response.headers["location"] == challenge
    token, carried = await challenge_form(client, challenge)
    assert carried == protected
    response = await answer_challenge(guarded, client, secret, token, carried)
    assert response.headers["location"] == protected
    page = await client.get(response.headers["location"])
    assert page.status_code == 200
    assert page.text == "protected content"


async def test_every_new_sign_in_is_challenged_again_and_a_hostile_next_never_sticks(
    guarded: GuardedApp, client: httpx.AsyncClient
) -> None:
    secret = await arrive(guarded, client, State.CHALLENGED)
    for hostile in ("//evil.test", "/\\evil.test", "https:evil.test"):
        token, _ = await challenge_form(client, "/mfa/challenge")
        response = await answer_challenge(guarded, client, secret, token, hostile)
        assert response.headers["location"] == "/"
        # A step is accepted once: the next sign-in answers with the next code.
        guarded.clock.advance(30)
        await sign_in(client, USER)
        assert (await client.get("/protected")).status_code == 303
