"""Site enforcement in the demo inbox, told as Crisp's story: Acme's owner checks the green
padlocks on the Team page, then forces the operators to turn on 2FA in the Inbox settings; a
new operator who signs up is shown the QR code at once."""

from __future__ import annotations

import html
import os
import re
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from examples.inbox import DEMO_PASSWORD
from examples.inbox.sites import DEMO_SITES, DemoSite, seed_sites

from mfa_guard.stores.sites import Member, MemorySiteDirectory, Role, SitePolicy
from mfa_guard.testing import FrozenClock, current_code
from tests.demo import (
    MANUAL_KEY,
    OWNER,
    Demo,
    answer_challenge,
    csrf_token,
    owner_with_2fa,
    post_policy,
    running_demo,
    turn_on_two_factor,
)

AGENT = "agent@acme.test"
SOLO = "solo@example.test"
NEWCOMER = "newcomer@acme.test"
NEW_PASSWORD = "correct horse battery"
PADLOCK = 'aria-label="Two-factor authentication on"'
NO_2FA = "no 2FA yet"
ENROL = "/mfa/enrol?next=/inbox"
HOSTILE = {"origin": "https://evil.test"}


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


async def sign_in(browser: httpx.AsyncClient, email: str, password: str = DEMO_PASSWORD) -> None:
    response = await browser.post("/login", data={"email": email, "password": password})
    assert response.status_code == 303, response.text


def text_of(page: str) -> str:
    """The page with its runs of white space made single spaces."""
    return re.sub(r"\s+", " ", page)


def member_rows(page: str) -> dict[str, str]:
    """The Team page's rows: member → the row's HTML."""
    rows = re.findall(r'<tr data-member="([^"]+)">(.*?)</tr>', page, re.DOTALL)
    return dict(rows)


async def sign_up(
    browser: httpx.AsyncClient, email: str = NEWCOMER, password: str = NEW_PASSWORD
) -> httpx.Response:
    page = await browser.get("/signup")
    assert page.status_code == 200
    return await browser.post(
        "/signup",
        data={"csrf_token": csrf_token(page.text), "email": email, "password": password},
    )


async def enrol_from_the_page(browser: httpx.AsyncClient, page: httpx.Response, now: float) -> None:
    """Confirms the set-up whose QR code and key ``page`` shows."""
    key = MANUAL_KEY.search(page.text)
    assert key is not None, page.text
    confirmed = await browser.post(
        "/mfa/enrol/confirm",
        data={
            "csrf_token": csrf_token(page.text),
            "next": "/inbox",
            "code": current_code(key.group(1), now),
        },
    )
    assert confirmed.status_code == 200
    assert 'id="recovery-codes"' in confirmed.text


# --- The seeded sites -------------------------------------------------------------------------


async def test_the_demo_sites_are_seeded_at_start_up(demo: Demo) -> None:
    sites = demo.app.state.sites
    acme, solo = await sites.site("acme"), await sites.site("solo")
    assert acme is not None
    assert (acme.name, acme.policy.enforce) == ("Acme", False)
    assert solo is not None
    assert solo.name == "Solo"
    assert await sites.members("acme") == [
        Member(AGENT, Role.OPERATOR),
        Member(OWNER, Role.OWNER),
    ]
    assert await sites.members("solo") == [Member(SOLO, Role.OWNER)]


async def test_a_restart_keeps_the_policy_and_forgets_the_sign_ups(
    tmp_path: Path, clock: FrozenClock
) -> None:
    async with running_demo(tmp_path, clock) as demo, demo.browser() as owner:
        await owner_with_2fa(demo, owner)
        assert (await post_policy(owner, enforce=True, grace="168")).status_code == 303
        async with demo.browser() as newcomer:
            assert (await sign_up(newcomer)).status_code == 303
        enforced = await demo.policy()

    async with running_demo(tmp_path, clock) as demo:
        assert await demo.policy() == enforced
        sites = demo.app.state.sites
        # Sign-ups live in memory: gone with the process, and off the team.
        assert await sites.members("acme") == [
            Member(AGENT, Role.OPERATOR),
            Member(OWNER, Role.OWNER),
        ]
        async with demo.browser() as newcomer:
            refused = await newcomer.post(
                "/login", data={"email": NEWCOMER, "password": NEW_PASSWORD}
            )
            assert refused.status_code == 400


async def test_seeding_again_restores_the_members_and_keeps_the_policy() -> None:
    sites = MemorySiteDirectory()
    await seed_sites(sites)
    enforced = SitePolicy(enforce=True, grace_deadline=1.0, changed_by=OWNER, changed_at=1.0)
    await sites.set_policy("acme", enforced)
    await sites.add_member("acme", NEWCOMER, Role.OPERATOR)
    await sites.add_member("acme", AGENT, Role.OWNER)

    await seed_sites(sites)
    await seed_sites(sites)

    assert await sites.members("acme") == [
        Member(AGENT, Role.OPERATOR),
        Member(OWNER, Role.OWNER),
    ]
    acme = await sites.site("acme")
    assert acme is not None
    assert acme.policy == enforced
    assert [site.id for site in DEMO_SITES] == ["acme", "solo"]
    assert isinstance(DEMO_SITES[0], DemoSite)


@pytest.mark.parametrize(
    ("email", "sees", "does_not_see"),
    [
        pytest.param(
            OWNER,
            ['href="/sites/acme/team"', 'href="/sites/acme/settings"', "owner"],
            ["Solo"],
            id="owner",
        ),
        pytest.param(AGENT, ["Acme", "operator"], ["/sites/acme/", "Solo"], id="operator"),
        pytest.param(
            SOLO,
            ['href="/sites/solo/team"', 'href="/sites/solo/settings"'],
            ["Acme"],
            id="solo-owner",
        ),
    ],
)
async def test_the_inbox_lists_the_users_sites(
    demo: Demo, email: str, sees: list[str], does_not_see: list[str]
) -> None:
    async with demo.browser() as browser:
        await sign_in(browser, email)
        inbox = await browser.get("/inbox")

    assert inbox.status_code == 200
    start = inbox.text.index('<nav aria-labelledby="sites-heading"')
    nav = inbox.text[start : inbox.text.index("</nav>", start)]
    for text in sees:
        assert text in nav
    for text in does_not_see:
        assert text not in nav


# --- The Team page ----------------------------------------------------------------------------


async def test_the_team_page_shows_a_green_padlock_next_to_each_member_with_2fa(
    demo: Demo,
) -> None:
    async with demo.browser() as owner, demo.browser() as agent:
        await owner_with_2fa(demo, owner)
        team = await owner.get("/sites/acme/team")
        assert team.status_code == 200
        assert team.headers["cache-control"] == "no-store"
        rows = member_rows(team.text)
        assert list(rows) == [AGENT, OWNER]
        assert PADLOCK in rows[OWNER]
        assert NO_2FA not in rows[OWNER]
        assert NO_2FA in rows[AGENT]
        assert PADLOCK not in rows[AGENT]
        assert "operator" in rows[AGENT]

        await sign_in(agent, AGENT)
        await turn_on_two_factor(agent, demo.clock)

        rows = member_rows((await owner.get("/sites/acme/team")).text)
        assert all(PADLOCK in row and NO_2FA not in row for row in rows.values())


@pytest.mark.parametrize(
    ("email", "path", "status"),
    [
        pytest.param(AGENT, "/sites/acme/team", 403, id="operator-team"),
        pytest.param(AGENT, "/sites/acme/settings", 403, id="operator-settings"),
        pytest.param(SOLO, "/sites/acme/team", 404, id="non-member-team"),
        pytest.param(SOLO, "/sites/acme/settings", 404, id="non-member-settings"),
        pytest.param(OWNER, "/sites/solo/team", 404, id="owner-of-another-site"),
        pytest.param(OWNER, "/sites/nowhere/settings", 404, id="no-such-site"),
        pytest.param(OWNER, f"/sites/{'x' * 300}/team", 404, id="overlong-site-id"),
    ],
)
async def test_only_the_sites_owners_see_its_team_and_settings(
    demo: Demo, email: str, path: str, status: int
) -> None:
    async with demo.browser() as browser:
        await sign_in(browser, email)
        page = await browser.get(path)

    assert page.status_code == status
    assert 'role="alert"' in page.text
    message = "There is no such site." if status == 404 else "Only the site's owners can do this."
    assert message in html.unescape(page.text)
    assert "Team of" not in page.text
    assert "Inbox settings of" not in page.text


async def test_an_operator_cannot_change_the_policy(demo: Demo) -> None:
    async with demo.browser() as agent:
        await sign_in(agent, AGENT)
        # Any page with one of the demo's forms gives the session its token.
        form = await agent.get("/signup")
        refused = await agent.post(
            "/sites/acme/settings",
            data={"csrf_token": csrf_token(form.text), "enforce": "on", "grace": "0"},
        )

    assert refused.status_code == 403
    assert "Only the site's owners can do this." in html.unescape(refused.text)
    assert not (await demo.policy()).enforce


@pytest.mark.parametrize(("enforce", "grace"), [(True, "keep"), (False, "keep"), (False, "now")])
async def test_an_operator_learns_nothing_from_saving_the_policy_unchanged(
    demo: Demo, enforce: bool, grace: str
) -> None:
    async with demo.browser() as agent:
        await sign_in(agent, AGENT)
        form = await agent.get("/signup")
        data = {"csrf_token": csrf_token(form.text), "grace": grace}
        if enforce:
            data["enforce"] = "on"
        refused = await agent.post("/sites/acme/settings", data=data)

    assert refused.status_code == 403
    assert "Nothing changed" not in refused.text


def selected_options(page: str) -> list[str]:
    """The "From when" list's chosen options, as their text."""
    grace = page[page.index('<select id="grace"') :]
    grace = grace[: grace.index("</select>")]
    return [
        text_of(option).strip()
        for option in re.findall(r"<option [^>]*\bselected>(.*?)</option>", grace, re.DOTALL)
    ]


async def test_the_settings_show_the_policy_in_force_and_save_it_unchanged(demo: Demo) -> None:
    """Forced at once on a member without 2FA, the page shows that policy chosen (not "at once,
    every member has 2FA", which the kit would refuse): saved as shown, nothing changes."""
    async with demo.browser() as owner:
        await owner_with_2fa(demo, owner)
        assert (await post_policy(owner, enforce=True, grace="0")).status_code == 303
        enforced = await demo.policy()
        demo.clock.advance(3600)

        page = await owner.get("/sites/acme/settings")
        assert 'id="enforce" name="enforce" value="on" checked' in page.text
        assert selected_options(page.text) == ["Unchanged: since Jan 15, 2027, 08:00 UTC"]
        missing = page.text[page.text.index('<ul id="members-without-2fa"') :]
        assert AGENT in missing[: missing.index("</ul>")]

        saved = await post_policy(owner, enforce=True, grace="keep")

        assert saved.status_code == 303
        assert saved.headers["location"] == "/sites/acme/settings"
        assert await demo.policy() == enforced  # not even who changed it and when
        after = await owner.get("/sites/acme/settings")
        assert "Nothing changed: two-factor authentication stays enforced on this site." in (
            after.text
        )
        assert 'id="settings-error"' not in after.text


async def test_a_grace_period_is_shown_and_kept_when_saved_unchanged(demo: Demo) -> None:
    async with demo.browser() as owner:
        await owner_with_2fa(demo, owner)
        assert (await post_policy(owner, enforce=True, grace="24")).status_code == 303
        deadline = (await demo.policy()).grace_deadline
        demo.clock.advance(3600)

        page = await owner.get("/sites/acme/settings")
        assert selected_options(page.text) == ["Unchanged: from Jan 16, 2027, 08:00 UTC"]
        # "In 24 hours" is still offered, and would move the deadline: it is not chosen.
        assert '<option value="24">In 24 hours</option>' in page.text
        assert (await post_policy(owner, enforce=True, grace="keep")).status_code == 303

    assert (await demo.policy()).grace_deadline == deadline


async def test_saving_an_unenforced_policy_unchanged_changes_nothing(demo: Demo) -> None:
    async with demo.browser() as owner:
        await owner_with_2fa(demo, owner)
        page = await owner.get("/sites/acme/settings")
        assert 'value="keep"' not in page.text
        assert selected_options(page.text) == ["At once (every member has 2FA)"]
        saved = await post_policy(owner, enforce=False)
        assert saved.status_code == 303
        after = await owner.get("/sites/acme/settings")

    assert "Nothing changed: two-factor authentication is still not enforced" in after.text
    assert await demo.policy() == SitePolicy()


async def test_the_site_pages_send_a_signed_out_visitor_to_sign_in(demo: Demo) -> None:
    async with demo.browser() as browser:
        page = await browser.get("/sites/acme/team")

    assert page.status_code == 303
    assert page.headers["location"] == "/login?next=/sites/acme/team"


# --- Inbox settings: force the operators to turn on 2FA ---------------------------------------


async def test_forcing_2fa_at_once_first_lists_the_members_without_it(demo: Demo) -> None:
    async with demo.browser() as owner, demo.browser() as agent:
        await owner_with_2fa(demo, owner)
        settings = await owner.get("/sites/acme/settings")
        assert "Force operators to have their Two Factor Authentication enabled" in settings.text
        assert "Not enforced." in settings.text

        refused = await post_policy(owner, enforce=True, grace="now")

        assert refused.status_code == 409
        assert 'id="settings-error"' in refused.text
        assert "1 member of this site has not turned on two-factor authentication" in refused.text
        missing = refused.text[refused.text.index('<ul id="members-without-2fa"') :]
        assert AGENT in missing[: missing.index("</ul>")]
        assert OWNER not in missing[: missing.index("</ul>")]
        assert 'id="enforce" name="enforce" value="on" checked' in refused.text
        assert '<option value="0">At once, even for the members without 2FA' in refused.text
        assert not (await demo.policy()).enforce

        forced = await post_policy(owner, enforce=True, grace="0")

        assert forced.status_code == 303
        assert forced.headers["location"] == "/sites/acme/settings"
        policy = await demo.policy()
        assert (policy.enforce, policy.grace_deadline, policy.changed_by) == (
            True,
            demo.clock(),
            OWNER,
        )
        page = await owner.get("/sites/acme/settings")
        assert "Two-factor authentication is now enforced on this site." in page.text
        assert "Enforced." in page.text
        assert f"Turned on by {OWNER}" in page.text
        # The notice is shown once.
        assert "is now enforced" not in (await owner.get("/sites/acme/settings")).text

        await sign_in(agent, AGENT)
        blocked = await agent.get("/inbox")
        assert blocked.status_code == 303
        assert blocked.headers["location"] == ENROL
        assert (await agent.get("/sites/acme/team")).headers["location"].startswith("/mfa/enrol")
        await turn_on_two_factor(agent, demo.clock)
        assert (await agent.get("/inbox")).status_code == 200


async def test_at_once_applies_when_every_member_has_2fa(demo: Demo) -> None:
    async with demo.browser() as owner, demo.browser() as agent:
        await owner_with_2fa(demo, owner)
        await sign_in(agent, AGENT)
        await turn_on_two_factor(agent, demo.clock)
        settings = await owner.get("/sites/acme/settings")
        assert "Every member has turned on two-factor authentication" in settings.text
        assert 'value="0"' not in settings.text  # nobody to force

        saved = await post_policy(owner, enforce=True, grace="now")

    assert saved.status_code == 303
    policy = await demo.policy()
    assert policy.enforce
    assert policy.grace_deadline == demo.clock()


async def test_a_grace_period_lets_operators_in_until_it_ends(demo: Demo) -> None:
    async with demo.browser() as owner, demo.browser() as agent:
        await owner_with_2fa(demo, owner)
        saved = await post_policy(owner, enforce=True, grace="24")
        assert saved.status_code == 303
        deadline = demo.clock() + 24 * 3600
        assert (await demo.policy()).grace_deadline == deadline
        page = text_of((await owner.get("/sites/acme/settings")).text)
        assert (
            "Members need two-factor authentication from "
            '<time datetime="2027-01-16T08:00:00Z">Jan 16, 2027, 08:00 UTC</time>'
        ) in page

        await sign_in(agent, AGENT)
        inbox = await agent.get("/inbox")
        assert inbox.status_code == 200
        assert 'id="enrolment-notice"' in inbox.text
        assert "Jan 16, 2027, 08:00 UTC" in inbox.text
        assert "two-factor authentication enforced" in inbox.text

        demo.clock.advance(24 * 3600 - 1)
        assert (await agent.get("/inbox")).status_code == 200
        demo.clock.advance(1)
        assert (await agent.get("/inbox")).headers["location"] == ENROL


async def test_turning_enforcement_off_lets_operators_in_again(demo: Demo) -> None:
    async with demo.browser() as owner, demo.browser() as agent:
        await owner_with_2fa(demo, owner)
        assert (await post_policy(owner, enforce=True, grace="0")).status_code == 303
        await sign_in(agent, AGENT)
        assert (await agent.get("/inbox")).headers["location"] == ENROL

        # Unchecked, the box turns enforcement off; the grace list is then not read.
        turned_off = await post_policy(owner, enforce=False, grace="anything")

        assert turned_off.status_code == 303
        policy = await demo.policy()
        assert (policy.enforce, policy.changed_by) == (False, OWNER)
        page = await owner.get("/sites/acme/settings")
        assert "Two-factor authentication is no longer enforced on this site." in page.text
        assert f"Turned off by {OWNER}" in page.text
        demo.clock.advance(60)  # the agent's session re-checks its sites within a minute
        assert (await agent.get("/inbox")).status_code == 200


async def test_an_owner_without_2fa_cannot_force_it_on_others(demo: Demo) -> None:
    async with demo.browser() as owner:
        await sign_in(owner, OWNER)
        page = await owner.get("/sites/acme/settings")
        assert 'id="owner-hint"' in page.text

        refused = await post_policy(owner, enforce=True, grace="168")

    assert refused.status_code == 403
    assert "Turn on two-factor authentication for your own account" in refused.text
    assert '<option value="168" selected>' in refused.text
    assert not (await demo.policy()).enforce


async def test_an_owner_must_have_verified_2fa_in_this_session(demo: Demo) -> None:
    async with demo.browser() as owner:
        secret = await owner_with_2fa(demo, owner)
        await owner.post("/logout")
        await sign_in(owner, OWNER)
        # Not verified yet: the middleware challenges before the settings page is reached.
        challenged = await owner.get("/sites/acme/settings")
        assert challenged.headers["location"] == "/mfa/challenge?next=/sites/acme/settings"
        demo.clock.advance(30)
        assert (await answer_challenge(owner, secret, demo.clock)).status_code == 303

        saved = await post_policy(owner, enforce=True, grace="168")

    assert saved.status_code == 303
    assert (await demo.policy()).grace_deadline == demo.clock() + 168 * 3600


@pytest.mark.parametrize("grace", ["", "12", "1e9", "-1", "now\x00"])
async def test_a_grace_not_from_the_list_is_refused(demo: Demo, grace: str) -> None:
    async with demo.browser() as owner:
        await owner_with_2fa(demo, owner)
        refused = await post_policy(owner, enforce=True, grace=grace)

    assert refused.status_code == 400
    assert "Choose from the list when the policy starts." in refused.text
    assert not (await demo.policy()).enforce


# --- Sign-up -----------------------------------------------------------------------------------


async def test_a_new_operator_of_an_enforcing_site_is_shown_the_qr_code_at_sign_up(
    demo: Demo,
) -> None:
    async with demo.browser() as owner, demo.browser() as newcomer:
        await owner_with_2fa(demo, owner)
        assert (await post_policy(owner, enforce=True, grace="0")).status_code == 303

        signed_up = await sign_up(newcomer)

        assert signed_up.status_code == 303
        assert signed_up.headers["location"] == ENROL
        enrol = await newcomer.get(ENROL)
        assert enrol.status_code == 200
        assert 'id="manual-key"' in enrol.text
        assert "<svg" in enrol.text
        assert 'id="enrolment-notice"' in enrol.text
        # Until the code is confirmed, every page of the inbox leads back there.
        for path in ("/", "/inbox", "/sites/acme/team"):
            response = await newcomer.get(path, follow_redirects=True)
            assert response.url.path == "/mfa/enrol"

        await enrol_from_the_page(newcomer, enrol, demo.clock())

        inbox = await newcomer.get("/inbox")
        assert inbox.status_code == 200
        assert "Two-factor authentication is on" in inbox.text
        rows = member_rows((await owner.get("/sites/acme/team")).text)
        assert list(rows) == [AGENT, NEWCOMER, OWNER]
        assert "operator" in rows[NEWCOMER]
        assert PADLOCK in rows[NEWCOMER]

    async with demo.browser() as again:
        await sign_in(again, NEWCOMER, NEW_PASSWORD)
        assert (await again.get("/inbox")).headers["location"] == "/mfa/challenge?next=/inbox"


async def test_without_enforcement_a_new_operator_goes_to_the_inbox(demo: Demo) -> None:
    async with demo.browser() as newcomer:
        signed_up = await sign_up(newcomer, "  NewComer@Acme.TEST ")

        assert signed_up.status_code == 303
        assert signed_up.headers["location"] == "/inbox"
        inbox = await newcomer.get("/inbox")
        assert inbox.status_code == 200
        assert NEWCOMER in inbox.text
        assert "Two-factor authentication is off." in inbox.text
        assert 'id="enrolment-notice"' not in inbox.text
    assert await demo.app.state.sites.role("acme", NEWCOMER) is Role.OPERATOR


@pytest.mark.parametrize(
    ("email", "password", "status", "message"),
    [
        pytest.param(OWNER, NEW_PASSWORD, 409, "already has an account", id="taken"),
        pytest.param(" Owner@ACME.test", NEW_PASSWORD, 409, "already has an account", id="case"),
        pytest.param("not-an-address", NEW_PASSWORD, 400, "Enter an e-mail", id="no-at"),
        pytest.param("a@b", NEW_PASSWORD, 400, "Enter an e-mail", id="no-domain"),
        pytest.param("a@b.test\nBcc: x@y.test", NEW_PASSWORD, 400, "Enter an e-mail", id="crlf"),
        pytest.param("é@acme.test", NEW_PASSWORD, 400, "Enter an e-mail", id="non-ascii"),
        pytest.param(f"{'a' * 250}@acme.test", NEW_PASSWORD, 400, "Enter an e-mail", id="long"),
        pytest.param("", "", 400, "Enter an e-mail", id="empty"),
        pytest.param(NEWCOMER, "short", 400, "Choose a password of 8", id="short-password"),
        pytest.param(NEWCOMER, "p" * 1025, 400, "Choose a password of 8", id="long-password"),
    ],
)
async def test_sign_up_refuses_taken_addresses_and_bad_input(
    demo: Demo, email: str, password: str, status: int, message: str
) -> None:
    async with demo.browser() as browser:
        refused = await sign_up(browser, email, password)

        assert refused.status_code == status
        assert 'id="signup-error"' in refused.text
        assert message in refused.text
        assert '<form method="post" action="/signup">' in refused.text
        assert (await browser.get("/inbox")).headers["location"] == "/login?next=/inbox"
    assert [m.user_id for m in await demo.app.state.sites.members("acme")] == [AGENT, OWNER]


async def test_the_owner_can_still_sign_in_with_the_demo_password_after_a_taken_sign_up(
    demo: Demo,
) -> None:
    async with demo.browser() as browser:
        assert (await sign_up(browser, OWNER, "another password")).status_code == 409
        await sign_in(browser, OWNER)
        assert (await browser.get("/inbox")).status_code == 200


# --- Forms refused: cross-site posts, missing tokens, unreadable bodies ------------------------


@pytest.mark.parametrize(
    ("token", "headers"),
    [
        pytest.param("page", HOSTILE, id="cross-site-origin"),
        pytest.param("page", {"sec-fetch-site": "cross-site"}, id="cross-site-fetch"),
        pytest.param(None, {}, id="no-token"),
        pytest.param("forged-token-forged-token-forged-token", {}, id="wrong-token"),
    ],
)
async def test_forged_policy_and_sign_up_posts_are_refused(
    demo: Demo, token: str | None, headers: dict[str, str]
) -> None:
    async with demo.browser() as owner, demo.browser() as visitor:
        await owner_with_2fa(demo, owner)
        page = await owner.get("/sites/acme/settings")
        data = {"enforce": "on", "grace": "0"}
        if token is not None:
            data["csrf_token"] = csrf_token(page.text) if token == "page" else token
        policy = await owner.post("/sites/acme/settings", data=data, headers=headers)

        signup_page = await visitor.get("/signup")
        data = {"email": NEWCOMER, "password": NEW_PASSWORD}
        if token is not None:
            data["csrf_token"] = csrf_token(signup_page.text) if token == "page" else token
        signup = await visitor.post("/signup", data=data, headers=headers)

    for refused in (policy, signup):
        assert refused.status_code == 403
        assert "Request refused" in refused.text
    assert not (await demo.policy()).enforce
    assert NEWCOMER not in demo.app.state.accounts


@pytest.mark.parametrize(
    ("content", "content_type"),
    [
        pytest.param(b"--x\r\nbroken", "multipart/form-data; boundary=x", id="broken-multipart"),
        pytest.param(b"a=1&" * 50, "application/x-www-form-urlencoded", id="too-many-fields"),
        pytest.param(b'{"enforce": true}', "application/json", id="json"),
    ],
)
@pytest.mark.parametrize("path", ["/sites/acme/settings", "/signup"])
async def test_unreadable_forms_are_refused_without_a_server_error(
    demo: Demo, path: str, content: bytes, content_type: str
) -> None:
    async with demo.browser() as owner:
        await owner_with_2fa(demo, owner)
        refused = await owner.post(path, content=content, headers={"content-type": content_type})

    assert refused.status_code in (400, 403)
    assert "Request refused" in refused.text
    assert not (await demo.policy()).enforce


async def test_an_owner_verified_minutes_ago_confirms_a_code_before_the_change(demo: Demo) -> None:
    async with demo.browser() as owner:
        secret = await owner_with_2fa(demo, owner)
        demo.clock.advance(301)  # past recent_mfa_seconds: step-up
        stepped_up = await post_policy(owner, enforce=True, grace="168")
        assert stepped_up.status_code == 303
        assert stepped_up.headers["location"] == "/mfa/challenge?next=/sites/acme/settings"
        assert not (await demo.policy()).enforce
        assert (await answer_challenge(owner, secret, demo.clock)).status_code == 303
        saved = await post_policy(owner, enforce=True, grace="168")
    assert saved.status_code == 303
    assert (await demo.policy()).enforce
