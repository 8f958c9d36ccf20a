"""A site's owner resets a member who lost their phone: ``POST api/sites/{site}/members/{member}/
reset``. Every refusal (not an owner, not a member, a member of another owner's site, no recent
factor, the cooldown), and every effect: factors, recovery codes, phone and remembered browsers
gone, failure counts cleared, the member told, and their sessions on another worker sent to
enrolment within ``recheck_seconds``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from mfa_guard import MemoryStore
from mfa_guard.core.marker import Marker
from mfa_guard.errors import Denied, Reason
from mfa_guard.events import EventKind
from mfa_guard.notifications import MemoryNotifier, Notice
from mfa_guard.stores import MemoryDeviceStore
from mfa_guard.stores.sites import MemorySiteDirectory, Role, SitePolicy
from tests.apps import GuardedApp, build_app, enrol, sign_in
from tests.scenarios import assert_json_error, wrong_code

OWNER = "owner@acme.test"
AGENT = "agent@acme.test"
OTHER_OWNER = "boss@globex.test"
OUTSIDER = "solo@example.test"
RECHECK = 60
SETTINGS: dict[str, Any] = {"recheck_seconds": RECHECK, "trusted_devices": {"enabled": True}}


@dataclass
class Team:
    ga: GuardedApp
    directory: MemorySiteDirectory
    store: MemoryStore
    devices: MemoryDeviceStore
    notifier: MemoryNotifier

    def client(self) -> httpx.AsyncClient:
        return self.ga.client()

    def worker(self) -> GuardedApp:
        """Another worker of the same app: the same stores, its own process state."""
        other = build_app(self.store, sites=self.directory, devices=self.devices, **SETTINGS)
        other.clock.now = self.ga.clock.now
        return other


async def team_directory() -> MemorySiteDirectory:
    directory = MemorySiteDirectory()
    await directory.save_site("acme", "Acme")
    await directory.add_member("acme", OWNER, Role.OWNER)
    await directory.add_member("acme", AGENT, Role.OPERATOR)
    await directory.save_site("globex", "Globex")
    await directory.add_member("globex", OTHER_OWNER, Role.OWNER)
    await directory.save_site("solo", "Solo")
    await directory.add_member("solo", OUTSIDER, Role.OWNER)
    return directory


@pytest.fixture
async def team() -> Team:
    directory = await team_directory()
    store = MemoryStore()
    devices = MemoryDeviceStore()
    notifier = MemoryNotifier()
    ga = build_app(store, sites=directory, devices=devices, notifier=notifier, **SETTINGS)
    return Team(ga, directory, store, devices, notifier)


async def verified(team: Team, client: httpx.AsyncClient, user: str) -> str:
    """``user`` signed in, enrolled and verified in ``client``'s session; their secret."""
    await sign_in(client, user)
    secret, _ = await enrol(team.ga, client)
    team.ga.clock.advance(30)
    return secret


async def reset(
    client: httpx.AsyncClient, member: str = AGENT, site: str = "acme"
) -> httpx.Response:
    return await client.post(f"/mfa/api/sites/{site}/members/{member}/reset", json={})


async def agent_enrolled(team: Team) -> str:
    async with team.client() as agent:
        return await verified(team, agent, AGENT)


def refused_events(team: Team) -> list[str | None]:
    return [e.detail for e in team.ga.events.events if e.kind is EventKind.MEMBER_RESET_REFUSED]


# -- what a reset does ------------------------------------------------------------------------


async def test_an_owner_resets_a_member_who_lost_their_phone(team: Team) -> None:
    async with team.client() as agent:
        secret = await verified(team, agent, AGENT)
        await agent.post("/logout")
        await sign_in(agent, AGENT)
        team.ga.clock.advance(30)
        remembered = await agent.post(
            "/mfa/api/verify", json={"code": team.ga.code(secret), "remember_device": True}
        )
        assert remembered.status_code == 200, remembered.text
    assert len(await team.devices.devices(AGENT)) == 1
    async with team.client() as owner:
        await verified(team, owner, OWNER)
        answer = await reset(owner)
    assert answer.status_code == 200, answer.text
    assert answer.json() == {"user_id": AGENT, "two_factor": False, "devices_forgotten": 1}
    assert answer.headers["cache-control"] == "no-store"
    enrolment = await team.store.get(AGENT)
    assert enrolment is not None
    assert (enrolment.enrolled, enrolment.authenticators, enrolment.recovery) == (False, (), None)
    assert enrolment.phone is None
    assert await team.devices.devices(AGENT) == []
    event = team.ga.events.events[-1]
    assert (event.kind, event.user_id, event.site, event.detail) == (
        EventKind.ADMIN_RESET,
        AGENT,
        "acme",
        f"by={OWNER}",
    )
    told = [n for n in team.notifier.notifications if n.user_id == AGENT]
    assert [n.notice for n in told][-1] is Notice.ADMIN_RESET


async def test_the_members_failure_count_is_cleared_so_they_enrol_at_once(team: Team) -> None:
    async with team.client() as agent:
        secret = await verified(team, agent, AGENT)
        await agent.post("/logout")
        await sign_in(agent, AGENT)
        # They lost the phone and guessed until locked out.
        for _ in range(10):
            await agent.post("/mfa/api/verify", json={"code": wrong_code(team.ga, secret)})
        locked = await agent.post("/mfa/api/verify", json={"code": team.ga.code(secret)})
        assert locked.status_code == 429
        async with team.client() as owner:
            await verified(team, owner, OWNER)
            assert (await reset(owner)).status_code == 200
        # Their session re-checks (a new epoch) and enrols again, its first code accepted.
        team.ga.clock.advance(RECHECK)
        again, _ = await enrol(team.ga, agent)
        assert again != secret


async def test_the_members_sessions_on_another_worker_enrol_within_recheck_seconds(
    team: Team,
) -> None:
    now = team.ga.clock()
    policy = SitePolicy(enforce=True, grace_deadline=now, changed_by=OWNER, changed_at=now)
    assert await team.directory.set_policy("acme", policy)
    other = team.worker()
    async with other.client() as agent:
        await sign_in(agent, AGENT)
        await enrol(other, agent)
        assert (await agent.get("/protected")).status_code == 200
        async with team.client() as owner:
            await verified(team, owner, OWNER)
            assert (await reset(owner)).status_code == 200
        # Within recheck_seconds the session still trusts its marker: no store call.
        other.clock.advance(RECHECK - 1)
        assert (await agent.get("/protected")).status_code == 200
        other.clock.advance(1)
        page = await agent.get("/protected")
        assert (page.status_code, page.headers["location"]) == (
            303,
            "/mfa/enrol?next=/protected",
        )


# -- who may not reset whom -------------------------------------------------------------------


async def test_a_member_who_is_not_an_owner_is_refused(team: Team) -> None:
    async with team.client() as agent:
        await verified(team, agent, AGENT)
        answer = await reset(agent, OWNER)
    assert (answer.status_code, assert_json_error(answer)) == (403, "not_site_owner")
    assert team.ga.events.events[-1].kind is EventKind.SITE_ACCESS_DENIED
    assert (await team.store.get(OWNER)) is None


async def test_someone_outside_the_site_learns_nothing(team: Team) -> None:
    await agent_enrolled(team)
    async with team.client() as outsider:
        await verified(team, outsider, OUTSIDER)
        answer = await reset(outsider)
    assert (answer.status_code, assert_json_error(answer)) == (404, "site_not_found")
    assert (await team.store.get(AGENT)).enrolled  # type: ignore[union-attr]


@pytest.mark.parametrize("member", [OUTSIDER, "nobody%40acme.test", "x" * 256, "a%00b", "%0A"])
async def test_a_user_who_is_not_a_member_is_not_found(team: Team, member: str) -> None:
    async with team.client() as owner:
        await verified(team, owner, OWNER)
        answer = await owner.post(
            f"/mfa/api/sites/acme/members/{member}/reset",
            json={},
        )
    assert (answer.status_code, assert_json_error(answer)) == (404, "member_not_found")


async def test_an_owner_cannot_reset_themselves_here(team: Team) -> None:
    async with team.client() as owner:
        await verified(team, owner, OWNER)
        answer = await reset(owner, OWNER)
        assert (answer.status_code, assert_json_error(answer)) == (403, "cannot_reset_self")
        assert "security settings page" in answer.json()["error"]["message"]
    assert (await team.store.get(OWNER)).enrolled  # type: ignore[union-attr]
    assert refused_events(team) == [f"member={OWNER} refused=cannot_reset_self"]


async def test_a_member_of_a_site_the_owner_does_not_own_is_refused_without_its_name(
    team: Team,
) -> None:
    await team.directory.add_member("globex", AGENT, Role.OPERATOR)
    await agent_enrolled(team)
    async with team.client() as owner:
        await verified(team, owner, OWNER)
        answer = await reset(owner)
    assert (answer.status_code, assert_json_error(answer)) == (409, "member_of_other_sites")
    message = answer.json()["error"]["message"]
    assert "1 site you do not own" in message
    assert "globex" not in message.lower()
    assert (await team.store.get(AGENT)).enrolled  # type: ignore[union-attr]


async def test_an_owner_of_every_site_of_the_member_may_reset_them(team: Team) -> None:
    await team.directory.add_member("globex", AGENT, Role.OPERATOR)
    await team.directory.add_member("globex", OWNER, Role.OWNER)
    await agent_enrolled(team)
    async with team.client() as owner:
        await verified(team, owner, OWNER)
        assert (await reset(owner)).status_code == 200


async def test_an_owner_without_2fa_is_refused(team: Team) -> None:
    await agent_enrolled(team)
    async with team.client() as owner:
        await sign_in(owner, OWNER)
        answer = await reset(owner)
    assert (answer.status_code, assert_json_error(answer)) == (403, "verified_mfa_required")


async def test_an_owner_who_has_not_verified_in_this_session_is_refused(team: Team) -> None:
    await agent_enrolled(team)
    async with team.client() as owner:
        await verified(team, owner, OWNER)
    async with team.client() as owner:
        await sign_in(owner, OWNER)
        answer = await reset(owner)
    assert (answer.status_code, assert_json_error(answer)) == (401, "mfa_required")


async def test_an_owner_whose_verification_is_not_recent_must_confirm_again(team: Team) -> None:
    await agent_enrolled(team)
    async with team.client() as owner:
        secret = await verified(team, owner, OWNER)
        team.ga.clock.advance(team.ga.guard.settings.recent_mfa_seconds + 1)
        stale = await reset(owner)
        assert (stale.status_code, assert_json_error(stale)) == (
            401,
            "mfa_reauthentication_required",
        )
        assert "before resetting a member" in stale.json()["error"]["message"]
        assert (await owner.post("/mfa/api/verify", json={"code": team.ga.code(secret)})).is_success
        assert (await reset(owner)).status_code == 200


async def test_a_member_with_nothing_to_reset_is_told_so(team: Team) -> None:
    async with team.client() as owner:
        await verified(team, owner, OWNER)
        answer = await reset(owner)
    assert (answer.status_code, assert_json_error(answer)) == (409, "nothing_to_reset")


async def test_a_member_is_reset_once_per_cooldown(team: Team) -> None:
    await agent_enrolled(team)
    async with team.client() as owner:
        secret = await verified(team, owner, OWNER)
        assert (await reset(owner)).status_code == 200
        team.ga.clock.advance(RECHECK)
        await agent_enrolled(team)
        await owner.post("/mfa/api/verify", json={"code": team.ga.code(secret)})
        again = await reset(owner)
        assert (again.status_code, assert_json_error(again)) == (429, "reset_cooldown")
        assert 1 <= int(again.headers["retry-after"]) <= 3600
        assert (await team.store.get(AGENT)).enrolled  # type: ignore[union-attr]
        # Another worker counts in the same storage (memory:// here is per process, so the
        # other worker is the same guard): the window, not the process, lets it through.
        team.ga.clock.advance(3600)
        await owner.post("/mfa/api/verify", json={"code": team.ga.code(secret, steps=0)})
        assert (await reset(owner)).status_code == 200


async def test_a_cross_site_request_is_refused_before_anything(team: Team) -> None:
    await agent_enrolled(team)
    async with team.client() as owner:
        await verified(team, owner, OWNER)
        answer = await owner.post(
            "/mfa/api/sites/acme/members/agent@acme.test/reset",
            json={},
            headers={"origin": "https://evil.example"},
        )
    assert (answer.status_code, assert_json_error(answer)) == (403, "cross_site_request")
    assert (await team.store.get(AGENT)).enrolled  # type: ignore[union-attr]


# -- the service's step-up rule, for the factors an HTTP test cannot reach simply -----------


@pytest.mark.parametrize(
    ("method", "reason"),
    [("sms", Reason.STRONG_FACTOR_FOR_RESET), ("device", Reason.RECENT_MFA_FOR_RESET)],
)
async def test_a_session_verified_by_a_text_or_a_remembered_browser_is_not_enough(
    team: Team, method: str, reason: Reason
) -> None:
    await agent_enrolled(team)
    now = team.ga.clock()
    marker = Marker("subject", "nonce", now, 1, True, now - 1, method)
    refused = await team.ga.guard.site_service.reset_member(
        OWNER, "acme", AGENT, marker=marker, ip=None
    )
    assert isinstance(refused, Denied)
    assert refused.reason is reason
