"""The agent lost their phone: Acme's owner resets their 2FA from the Team page of the demo
inbox. "Reset 2FA" next to each member who has something to reset (never the owner's own row),
a page that says what the reset does, and its button; the Team page then shows the agent without
a padlock. Every refusal of the kit is a message on that page (a step-up with the way to the
challenge and back), never a server error; forged posts are refused before anything.
"""

from __future__ import annotations

import html
import os
import re
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from mfa_guard.stores.sites import Role, SitePolicy
from mfa_guard.testing import FrozenClock, current_code
from tests.demo import (
    OWNER,
    Demo,
    csrf_token,
    owner_with_2fa,
    running_demo,
    sign_in,
    turn_on_two_factor,
)

AGENT = "agent@acme.test"
SOLO = "solo@example.test"
TEAM = "/sites/acme/team"
RESET = "/sites/acme/members/agent%40acme.test/reset"
OWN_RESET = "/sites/acme/members/owner%40acme.test/reset"
PADLOCK = 'aria-label="Two-factor authentication on"'
BUTTON = '<button type="submit" class="danger">Reset 2FA</button>'
RECHECK = 60  # the demo's recheck_seconds: how soon the agent's open session sees the reset
RECENT = 300  # the demo's recent_mfa_seconds: the owner's step-up window


@pytest.fixture(autouse=True)
def _demo_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    # The demo reads MFA_GUARD_* from the environment; these tests use its own defaults.
    for name in os.environ:
        if name.upper().startswith("MFA_GUARD_"):
            monkeypatch.delenv(name)


@pytest.fixture
def clock() -> FrozenClock:
    return FrozenClock()


@pytest.fixture
async def demo(tmp_path: Path, clock: FrozenClock) -> AsyncIterator[Demo]:
    async with running_demo(tmp_path, clock) as demo:
        yield demo


def member_rows(page: str) -> dict[str, str]:
    """The Team page's rows: member → the row's HTML."""
    return dict(re.findall(r'<tr data-member="([^"]+)">(.*?)</tr>', page, re.DOTALL))


def text_of(page: str) -> str:
    """The page's text as read: entities decoded, runs of white space made single spaces."""
    return re.sub(r"\s+", " ", html.unescape(page))


def alert(page: str) -> str:
    """The refusal shown on the confirmation page."""
    match = re.search(r'<p class="error" role="alert" id="reset-error">(.*?)</p>', page, re.DOTALL)
    assert match is not None, page
    return text_of(re.sub(r"<[^>]+>", "", match.group(1)))


async def agent_with_2fa(demo: Demo, agent: httpx.AsyncClient) -> str:
    assert (await sign_in(agent, AGENT)).status_code == 303
    return await turn_on_two_factor(agent, demo.clock)


async def agent_enrolled(demo: Demo) -> bool:
    enrolment = await demo.app.state.store.get(AGENT)
    return enrolment is not None and bool(enrolment.enrolled)


async def post_reset(browser: httpx.AsyncClient, path: str = RESET) -> httpx.Response:
    """The confirmation page's button: its form posted with the page's token."""
    page = await browser.get(path)
    form = page if BUTTON in page.text else await browser.get("/signup")
    return await browser.post(path, data={"csrf_token": csrf_token(form.text)})


async def enforce_at_once(demo: Demo) -> None:
    now = demo.clock()
    policy = SitePolicy(enforce=True, grace_deadline=now, changed_by=OWNER, changed_at=now)
    assert await demo.app.state.sites.set_policy("acme", policy)


# --- The Team page's button ---------------------------------------------------------------


async def test_reset_2fa_is_offered_next_to_other_members_with_2fa_only(demo: Demo) -> None:
    async with demo.browser() as owner, demo.browser() as agent:
        await owner_with_2fa(demo, owner)
        rows = member_rows((await owner.get(TEAM)).text)
        # The agent has nothing to reset yet; the owner never resets themselves here.
        assert not any("Reset 2FA" in row for row in rows.values())
        assert 'id="reset-hint"' in (await owner.get(TEAM)).text

        await agent_with_2fa(demo, agent)

        rows = member_rows((await owner.get(TEAM)).text)
        assert (
            f'<a class="button small" href="{RESET}" aria-label="Reset 2FA of {AGENT}">'
            "Reset 2FA</a>"
        ) in rows[AGENT]
        assert "Reset 2FA" not in rows[OWNER]


@pytest.mark.parametrize("method", ["GET", "POST"])
@pytest.mark.parametrize(
    ("email", "path", "status", "message"),
    [
        pytest.param(AGENT, RESET, 403, "Only the site's owners can do this.", id="operator"),
        pytest.param(
            AGENT, OWN_RESET, 403, "Only the site's owners can do this.", id="operator-owner"
        ),
        pytest.param(SOLO, RESET, 404, "There is no such site.", id="non-member"),
        pytest.param(
            OWNER,
            "/sites/acme/members/nobody%40acme.test/reset",
            404,
            "There is no such member of this site.",
            id="no-such-member",
        ),
        pytest.param(
            OWNER,
            "/sites/acme/members/solo%40example.test/reset",
            404,
            "There is no such member of this site.",
            id="member-of-another-site",
        ),
        pytest.param(
            OWNER,
            f"/sites/acme/members/{'x' * 300}/reset",
            404,
            "There is no such member of this site.",
            id="overlong-member",
        ),
        pytest.param(
            OWNER,
            "/sites/acme/members/a%00b/reset",
            404,
            "There is no such member of this site.",
            id="nul-in-member",
        ),
        pytest.param(
            OWNER,
            "/sites/solo/members/solo%40example.test/reset",
            404,
            "There is no such site.",
            id="another-owners-site",
        ),
        pytest.param(
            OWNER, f"/sites/{'x' * 300}/members/x/reset", 404, "There is no such site.", id="long"
        ),
    ],
)
async def test_only_the_sites_owners_reach_a_member_of_it(
    demo: Demo, method: str, email: str, path: str, status: int, message: str
) -> None:
    async with demo.browser() as agent, demo.browser() as other:
        await agent_with_2fa(demo, agent)
        browser = agent if email == AGENT else other
        if email == OWNER:
            await owner_with_2fa(demo, browser)
        elif email == SOLO:
            assert (await sign_in(browser, email)).status_code == 303
        if method == "GET":
            page = await browser.get(path)
        else:
            form = await browser.get("/signup")  # any of the demo's forms gives the token
            page = await browser.post(path, data={"csrf_token": csrf_token(form.text)})

    assert page.status_code == status
    assert 'role="alert"' in page.text
    assert message in html.unescape(page.text)
    assert "Reset the two-factor authentication" not in page.text
    assert await agent_enrolled(demo)


async def test_a_signed_out_visitor_is_sent_to_sign_in(demo: Demo) -> None:
    async with demo.browser() as browser:
        page = await browser.get(RESET)

    assert page.status_code == 303
    assert page.headers["location"] == "/login?next=/sites/acme/members/agent%40acme.test/reset"


# --- The confirmation page ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("policy", "sessions"),
    [
        pytest.param(
            None,
            "Within a minute, every browser signed in as them goes on without two-factor "
            "authentication: nothing requires it of them, so ask them to turn it on again.",
            id="not-enforced",
        ),
        pytest.param(
            0,
            "Within a minute, every browser signed in as them must set up two-factor "
            "authentication again before going on.",
            id="enforced",
        ),
        pytest.param(
            24,
            "Every browser signed in as them must set up two-factor authentication again from "
            '<time datetime="2027-01-16T08:00:00Z">Jan 16, 2027, 08:00 UTC</time> on; until then '
            "they can go on without it.",
            id="grace-period",
        ),
    ],
)
async def test_the_confirmation_page_says_plainly_what_the_reset_does(
    demo: Demo, policy: int | None, sessions: str
) -> None:
    async with demo.browser() as owner, demo.browser() as agent:
        await owner_with_2fa(demo, owner)
        await agent_with_2fa(demo, agent)
        if policy is not None:
            now = demo.clock()
            enforced = SitePolicy(enforce=True, grace_deadline=now + policy * 3600)
            assert await demo.app.state.sites.set_policy("acme", enforced)
        page = await owner.get(RESET)

    assert page.status_code == 200
    assert page.headers["cache-control"] == "no-store"
    text = text_of(page.text)
    assert f"Reset the two-factor authentication of {AGENT}?" in re.sub(r"<[^>]+>", "", text)
    for removed in (
        "their authenticator apps, passkeys and security keys",
        "their recovery codes",
        "their phone number",
        "the browsers they asked to be remembered",
    ):
        assert removed in text
    assert sessions in text
    assert "They are told it was reset." in text
    assert f'<form method="post" action="{RESET}" class="actions">' in page.text
    assert BUTTON in page.text
    assert f'<a href="{TEAM}">Cancel</a>' in page.text
    assert 'role="alert"' not in page.text
    assert await agent_enrolled(demo)  # a page to read: nothing reset yet


# --- The reset ------------------------------------------------------------------------------


async def test_the_owner_resets_the_agent_who_must_set_2fa_up_again(demo: Demo) -> None:
    async with demo.browser() as owner, demo.browser() as agent:
        await owner_with_2fa(demo, owner)
        old_secret = await agent_with_2fa(demo, agent)
        await enforce_at_once(demo)

        done = await post_reset(owner)

        assert done.status_code == 303
        assert done.headers["location"] == TEAM
        assert not await agent_enrolled(demo)
        team = await owner.get(TEAM)
        assert f"The two-factor authentication of {AGENT} was reset." in team.text
        assert 'role="status" id="team-notice"' in team.text
        rows = member_rows(team.text)
        assert PADLOCK not in rows[AGENT]
        assert "no 2FA yet" in rows[AGENT]
        assert "Reset 2FA" not in rows[AGENT]
        assert PADLOCK in rows[OWNER]
        # The notice is shown once.
        assert "was reset" not in (await owner.get(TEAM)).text

        # The agent's open session trusts its state for recheck_seconds, then enrols again.
        demo.clock.advance(RECHECK - 1)
        assert (await agent.get("/inbox")).status_code == 200
        demo.clock.advance(1)
        sent = await agent.get("/inbox")
        assert (sent.status_code, sent.headers["location"]) == (303, "/mfa/enrol?next=/inbox")
        new_secret = await turn_on_two_factor(agent, demo.clock)
        assert new_secret != old_secret
        rows = member_rows((await owner.get(TEAM)).text)
        assert PADLOCK in rows[AGENT]


# --- Refusals: each a message on the page, never a server error ----------------------------


async def test_the_owner_cannot_reset_themselves(demo: Demo) -> None:
    async with demo.browser() as owner:
        await owner_with_2fa(demo, owner)
        page = await owner.get(OWN_RESET)
        assert page.status_code == 403
        assert BUTTON not in page.text
        assert alert(page.text).startswith(
            "You cannot reset your own two-factor authentication here"
        )

        # A post made by hand: the kit refuses it, and says so on the page.
        refused = await post_reset(owner, OWN_RESET)

    assert refused.status_code == 403
    assert "change your factors on your security settings page" in alert(refused.text)
    assert f'<a href="{TEAM}">Back to the team</a>' in refused.text
    owner_enrolment = await demo.app.state.store.get(OWNER)
    assert owner_enrolment is not None
    assert owner_enrolment.enrolled


async def test_an_owner_verified_minutes_ago_confirms_a_code_first_and_comes_back(
    demo: Demo,
) -> None:
    async with demo.browser() as owner, demo.browser() as agent:
        secret = await owner_with_2fa(demo, owner)
        await agent_with_2fa(demo, agent)
        demo.clock.advance(RECENT + 1)  # past recent_mfa_seconds: step-up

        refused = await post_reset(owner)

        assert refused.status_code == 401
        assert alert(refused.text).startswith(
            "Confirm it is you again before resetting a member's two-factor authentication: "
            "the reset needs a confirmation from the last 5 minutes, with your authenticator "
            "app, your passkey or a recovery code."
        )
        assert BUTTON not in refused.text
        assert await agent_enrolled(demo)
        link = re.search(r'<a href="([^"]+)" id="confirm-again">Confirm now</a>', refused.text)
        assert link is not None
        challenge_url = html.unescape(link.group(1))
        assert challenge_url == "/mfa/challenge?next=/sites/acme/members/agent%2540acme.test/reset"

        # The challenge, then back to the confirmation page, and its button again.
        challenge = await owner.get(challenge_url)
        assert challenge.status_code == 200
        answered = await owner.post(
            "/mfa/challenge",
            data={
                "csrf_token": csrf_token(challenge.text),
                "next": "/sites/acme/members/agent%40acme.test/reset",
                "method": "totp",
                "code": current_code(secret, demo.clock()),
            },
        )
        assert answered.status_code == 303
        assert answered.headers["location"] == RESET
        assert BUTTON in (await owner.get(RESET)).text
        assert (await post_reset(owner)).status_code == 303
    assert not await agent_enrolled(demo)


async def test_a_member_reset_a_moment_ago_is_not_reset_again_yet(demo: Demo) -> None:
    async with demo.browser() as owner, demo.browser() as agent:
        await owner_with_2fa(demo, owner)
        await agent_with_2fa(demo, agent)
        assert (await post_reset(owner)).status_code == 303
        demo.clock.advance(RECHECK)
        await turn_on_two_factor(agent, demo.clock)  # a new phone, set up at once

        again = await post_reset(owner)

    assert again.status_code == 429
    assert 1 <= int(again.headers["retry-after"]) <= 3600
    message = alert(again.text)
    assert message.startswith(
        "This member's two-factor authentication was reset a short while ago: it cannot be "
        "reset again yet."
    )
    assert message.endswith("You can reset it again from Jan 15, 2027, 09:00 UTC.")
    assert BUTTON not in again.text
    assert await agent_enrolled(demo)


async def test_a_member_without_2fa_has_nothing_to_reset(demo: Demo) -> None:
    async with demo.browser() as owner:
        await owner_with_2fa(demo, owner)
        page = await owner.get(RESET)
        assert page.status_code == 409
        assert BUTTON not in page.text
        assert alert(page.text) == "This member has no two-factor authentication to reset."

        refused = await post_reset(owner)

    assert refused.status_code == 409
    assert alert(refused.text) == "This member has no two-factor authentication to reset."


async def test_an_owner_without_2fa_is_sent_to_turn_it_on_first(demo: Demo) -> None:
    async with demo.browser() as owner, demo.browser() as agent:
        await agent_with_2fa(demo, agent)
        assert (await sign_in(owner, OWNER)).status_code == 303
        assert BUTTON in (await owner.get(RESET)).text

        refused = await post_reset(owner)

    assert refused.status_code == 403
    assert alert(refused.text) == (
        "Turn on two-factor authentication for your own account before resetting a member's. "
        "Two-factor settings"
    )
    assert '<a href="/mfa/settings" id="own-settings">Two-factor settings</a>' in refused.text
    assert await agent_enrolled(demo)


async def test_a_member_of_a_site_the_owner_does_not_own_is_left_to_its_owner(
    demo: Demo,
) -> None:
    await demo.app.state.sites.add_member("solo", AGENT, Role.OPERATOR)
    async with demo.browser() as owner, demo.browser() as agent:
        await owner_with_2fa(demo, owner)
        await agent_with_2fa(demo, agent)

        refused = await post_reset(owner)

    assert refused.status_code == 409
    message = alert(refused.text)
    assert message.startswith("This member also belongs to 1 site you do not own")
    assert "Solo" not in message
    assert await agent_enrolled(demo)


# --- Forged posts ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("token", "headers"),
    [
        pytest.param("page", {"origin": "https://evil.test"}, id="cross-site-origin"),
        pytest.param("page", {"sec-fetch-site": "cross-site"}, id="cross-site-fetch"),
        pytest.param(None, {}, id="no-token"),
        pytest.param("forged-token-forged-token-forged-token", {}, id="wrong-token"),
    ],
)
async def test_a_forged_reset_is_refused(
    demo: Demo, token: str | None, headers: dict[str, str]
) -> None:
    async with demo.browser() as owner, demo.browser() as agent:
        await owner_with_2fa(demo, owner)
        await agent_with_2fa(demo, agent)
        page = await owner.get(RESET)
        data = {}
        if token is not None:
            data["csrf_token"] = csrf_token(page.text) if token == "page" else token
        refused = await owner.post(RESET, data=data, headers=headers)

    assert refused.status_code == 403
    assert "Request refused" in refused.text
    assert await agent_enrolled(demo)


@pytest.mark.parametrize(
    ("content", "content_type"),
    [
        pytest.param(b"--x\r\nbroken", "multipart/form-data; boundary=x", id="broken-multipart"),
        pytest.param(b"a=1&" * 50, "application/x-www-form-urlencoded", id="too-many-fields"),
        pytest.param(b"{}", "application/json", id="json"),
    ],
)
async def test_an_unreadable_reset_form_is_refused_without_a_server_error(
    demo: Demo, content: bytes, content_type: str
) -> None:
    async with demo.browser() as owner, demo.browser() as agent:
        await owner_with_2fa(demo, owner)
        await agent_with_2fa(demo, agent)
        refused = await owner.post(RESET, content=content, headers={"content-type": content_type})

    assert refused.status_code in (400, 403)
    assert "Request refused" in refused.text
    assert await agent_enrolled(demo)
