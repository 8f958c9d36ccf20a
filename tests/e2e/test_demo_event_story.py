"""A whole story of the demo, read back through the owner's API in the order it happened:
``GET /mfa/api/sites/acme/events`` walked page by page (two events a page, by the cursor) gives
every event of Acme and of its members, newest first, once each; reversed, it is the story.

The agent turns 2FA on and signs in again with a wrong code then the right one; the owner turns
2FA on, requires it of Acme at once, and resets the agent, who lost their phone; the agent's
session is sent to enrolment at its next re-check. Solo, who is no member of Acme, does things
too, and none of them is in Acme's log.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from mfa_guard.testing import FrozenClock, current_code
from tests.demo import (
    OWNER,
    Demo,
    csrf_token,
    owner_with_2fa,
    post_policy,
    running_demo,
    sign_in,
    turn_on_two_factor,
)

AGENT = "agent@acme.test"
SOLO = "solo@example.test"


@pytest.fixture(autouse=True)
def _demo_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in os.environ:
        if name.upper().startswith("MFA_GUARD_") and name != "MFA_GUARD_SCREENSHOTS":
            monkeypatch.delenv(name)


@pytest.fixture
async def demo(tmp_path: Path) -> AsyncIterator[Demo]:
    async with running_demo(tmp_path, FrozenClock()) as demo:
        yield demo


async def challenged(demo: Demo, browser: httpx.AsyncClient, email: str, secret: str) -> None:
    """Signed in again: a wrong code at the challenge, then the right one."""
    assert (await browser.post("/logout")).status_code == 303
    assert (await sign_in(browser, email)).status_code == 303
    demo.clock.advance(30)
    assert (await browser.get("/inbox")).headers["location"].startswith("/mfa/challenge")
    page = await browser.get("/mfa/challenge", params={"next": "/inbox"})
    form = {"csrf_token": csrf_token(page.text), "next": "/inbox", "method": "totp"}
    assert (
        await browser.post("/mfa/challenge", data={**form, "code": "000000"})
    ).status_code == 422
    right = await browser.post(
        "/mfa/challenge", data={**form, "code": current_code(secret, demo.clock())}
    )
    assert right.status_code == 303, right.text


async def every_event(owner: httpx.AsyncClient) -> list[dict[str, object]]:
    """Acme's log through the API, two events a page, following ``next_cursor``."""
    found: list[dict[str, object]] = []
    params: dict[str, str] = {"limit": "2"}
    for _ in range(100):
        page = await owner.get("/mfa/api/sites/acme/events", params=params)
        assert page.status_code == 200, page.text
        body = page.json()
        assert len(body["events"]) <= 2
        found.extend(body["events"])
        if body["next_cursor"] is None:
            return found
        params["cursor"] = body["next_cursor"]
    raise AssertionError("the cursor never ended")


async def test_the_story_reads_back_through_the_api_in_order(demo: Demo) -> None:
    async with demo.browser() as agent, demo.browser() as owner, demo.browser() as solo:
        assert (await sign_in(agent, AGENT)).status_code == 303
        agent_secret = await turn_on_two_factor(agent, demo.clock)
        await challenged(demo, agent, AGENT, agent_secret)
        assert (await sign_in(solo, SOLO)).status_code == 303
        await turn_on_two_factor(solo, demo.clock)  # not a member of Acme
        await owner_with_2fa(demo, owner)
        demo.clock.advance(30)
        assert (await post_policy(owner, enforce=True)).status_code == 303
        team = await owner.get("/sites/acme/team")
        assert team.status_code == 200
        confirm = await owner.get(f"/sites/acme/members/{AGENT}/reset")
        assert confirm.status_code == 200, confirm.text
        reset = await owner.post(
            f"/sites/acme/members/{AGENT}/reset", data={"csrf_token": csrf_token(confirm.text)}
        )
        assert reset.status_code == 303, reset.text
        # The agent's session learns of it at its next re-check: enrolment, Acme enforcing.
        demo.clock.advance(60)
        assert (await agent.get("/inbox")).headers["location"].startswith("/mfa/enrol")
        await demo.app.state.guard.service.drain()
        events = await every_event(owner)

    story = [(event["kind"], event["user"]) for event in reversed(events)]
    assert story == [
        ("enrolment_started", AGENT),
        ("enrolled", AGENT),
        ("challenged", AGENT),
        ("verification_failed", AGENT),
        ("verified", AGENT),
        ("enrolment_started", OWNER),
        ("enrolled", OWNER),
        ("site_policy_changed", OWNER),
        ("admin_reset", AGENT),
        ("enrolment_required", AGENT),
    ]
    ids = [event["id"] for event in events]
    assert len(set(ids)) == len(ids)
    assert all(event["user"] != SOLO for event in events)
    reset_event = events[1]
    assert (reset_event["site"], reset_event["detail"]) == ("acme", f"by={OWNER}")
