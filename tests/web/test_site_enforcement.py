"""Site enforcement over HTTP: owners force their operators to have 2FA, with a grace period.

Time is the injected clock; a policy change reaches open sessions within ``recheck_seconds``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import httpx
import pytest

from mfa_guard import MemoryStore
from mfa_guard.core.marker import Marker
from mfa_guard.errors import Denied, Reason, StoreUnavailable
from mfa_guard.events import EventKind
from mfa_guard.stores.sites import Membership, MemorySiteDirectory, Requirements, Role, SitePolicy
from mfa_guard.testing import CountingSiteDirectory, CountingStore
from tests.apps import GuardedApp, build_app, enrol, sign_in
from tests.scenarios import assert_json_error, websocket_messages

OWNER = "owner@acme.test"
AGENT = "agent@acme.test"
SOLO = "solo@example.test"
RECHECK = 60


@dataclass
class Acme:
    ga: GuardedApp
    directory: MemorySiteDirectory

    async def enforce(self, *, in_seconds: float = 0, site: str = "acme") -> float:
        """Turns enforcement on straight in the directory (as another worker would)."""
        now = self.ga.clock()
        deadline = now + in_seconds
        policy = SitePolicy(enforce=True, grace_deadline=deadline, changed_by=OWNER, changed_at=now)
        assert await self.directory.set_policy(site, policy)
        return deadline


async def acme_directory() -> MemorySiteDirectory:
    directory = MemorySiteDirectory()
    await directory.save_site("acme", "Acme")
    await directory.add_member("acme", OWNER, Role.OWNER)
    await directory.add_member("acme", AGENT, Role.OPERATOR)
    await directory.save_site("solo", "Solo")
    await directory.add_member("solo", SOLO, Role.OWNER)
    return directory


@pytest.fixture
async def acme() -> Acme:
    directory = await acme_directory()
    return Acme(build_app(sites=directory, recheck_seconds=RECHECK), directory)


async def verified_owner(acme: Acme, client: httpx.AsyncClient) -> str:
    await sign_in(client, OWNER)
    secret, _ = await enrol(acme.ga, client)
    acme.ga.clock.advance(30)
    return secret


async def put_policy(client: httpx.AsyncClient, body: object, site: str = "acme") -> httpx.Response:
    return await client.put(f"/mfa/api/sites/{site}/policy", json=body)


# -- what an operator of an enforcing site can reach ---------------------------------------


async def test_an_operator_without_2fa_reaches_only_enrolment_once_the_deadline_passed(
    acme: Acme,
) -> None:
    await acme.enforce()
    async with acme.ga.client() as agent:
        await sign_in(agent, AGENT)
        page = await agent.get("/protected?tab=2")
        assert page.status_code == 303
        assert page.headers["location"] == "/mfa/enrol?next=/protected%3Ftab%3D2"
        assert page.headers["cache-control"] == "no-store"
        api = await agent.get("/api/data")
        assert api.status_code == 403
        assert assert_json_error(api) == "mfa_enrolment_required"
        posted = await agent.post("/protected", headers={"accept": "application/json"})
        assert (posted.status_code, posted.json()["error"]["code"]) == (
            403,
            "mfa_enrolment_required",
        )
        assert await websocket_messages(acme.ga, agent) == [
            {"type": "websocket.close", "code": 1008, "reason": ""}
        ]
        # The kit's own routes and the exempt paths stay open.
        enrol_page = await agent.get("/mfa/enrol?next=/protected")
        assert enrol_page.status_code == 200
        assert "requires two-factor authentication" in enrol_page.text
        assert (await agent.get("/mfa/api/status")).status_code == 200
        assert (await agent.post("/logout")).status_code == 303


async def test_enrolling_opens_the_app_and_the_next_path(acme: Acme) -> None:
    await acme.enforce()
    async with acme.ga.client() as agent:
        await sign_in(agent, AGENT)
        assert (await agent.get("/protected")).status_code == 303
        await enrol(acme.ga, agent)
        page = await agent.get("/protected")
        assert (page.status_code, page.text) == (200, "protected content")
        assert (await websocket_messages(acme.ga, agent))[0]["type"] == "websocket.accept"


async def test_the_grace_deadline_is_honoured_to_the_second(acme: Acme) -> None:
    deadline = await acme.enforce(in_seconds=3600)
    async with acme.ga.client() as agent:
        await sign_in(agent, AGENT)
        acme.ga.clock.now = deadline - 1
        assert (await agent.get("/protected")).status_code == 200
        status = (await agent.get("/mfa/api/status")).json()["enforcement"]
        assert status["required"] is True
        assert status["deadline"] == "2027-01-15T09:00:00Z"
        assert status["sites"] == [
            {"id": "acme", "name": "Acme", "deadline": "2027-01-15T09:00:00Z"}
        ]
        acme.ga.clock.now = deadline
        # No store call decides this: the deadline rides in the session's marker.
        page = await agent.get("/protected")
        assert (page.status_code, page.headers["location"]) == (303, "/mfa/enrol?next=/protected")


async def test_a_policy_change_reaches_open_sessions_within_the_recheck_interval(
    acme: Acme,
) -> None:
    async with acme.ga.client() as agent:
        await sign_in(agent, AGENT)
        assert (await agent.get("/protected")).status_code == 200  # checked now
        checked_at = acme.ga.clock()
        acme.ga.clock.advance(10)
        await acme.enforce()
        acme.ga.clock.now = checked_at + RECHECK - 1
        assert (await agent.get("/protected")).status_code == 200
        acme.ga.clock.now = checked_at + RECHECK
        assert (await agent.get("/protected")).status_code == 303
        # And back: once enforcement is off, the next re-check lets the operator in.
        assert await acme.directory.set_policy("acme", SitePolicy())
        acme.ga.clock.advance(RECHECK - 1)
        assert (await agent.get("/protected")).status_code == 303
        acme.ga.clock.advance(1)
        assert (await agent.get("/protected")).status_code == 200


async def test_a_user_who_joins_an_enforcing_site_enrols_at_sign_up(acme: Acme) -> None:
    await acme.enforce()
    newcomer = "new@acme.test"
    assert await acme.ga.guard.site_service.add_member("acme", newcomer, Role.OPERATOR, by=OWNER)
    async with acme.ga.client() as client:
        await sign_in(client, newcomer)
        page = await client.get("/")
        assert (page.status_code, page.headers["location"]) == (303, "/mfa/enrol?next=/")
    added = [e for e in acme.ga.events.events if e.kind is EventKind.SITE_MEMBER_ADDED]
    assert [(e.user_id, e.site, e.detail) for e in added] == [
        (OWNER, "acme", "member=new@acme.test role=operator")
    ]


async def test_the_earliest_deadline_of_the_users_enforcing_sites_applies(acme: Acme) -> None:
    await acme.directory.save_site("beta", "Beta")
    await acme.directory.add_member("beta", AGENT, Role.OPERATOR)
    await acme.directory.save_site("gamma", "Gamma")
    await acme.directory.add_member("gamma", AGENT, Role.OPERATOR)
    await acme.enforce(in_seconds=7200)
    first = await acme.enforce(in_seconds=600, site="beta")  # gamma does not enforce
    async with acme.ga.client() as agent:
        await sign_in(agent, AGENT)
        status = (await agent.get("/mfa/api/status")).json()["enforcement"]
        assert [site["id"] for site in status["sites"]] == ["acme", "beta"]
        acme.ga.clock.now = first
        assert (await agent.get("/protected")).status_code == 303
        # Leaving the site frees the operator at the next re-check.
        assert await acme.directory.remove_member("beta", AGENT)
        acme.ga.clock.advance(RECHECK)
        assert (await agent.get("/protected")).status_code == 200


async def test_an_enrolled_operator_is_challenged_not_sent_to_enrolment(acme: Acme) -> None:
    async with acme.ga.client() as agent:
        await sign_in(agent, AGENT)
        await enrol(acme.ga, agent)
    await acme.enforce()
    acme.ga.clock.advance(30)
    async with acme.ga.client() as again:
        await sign_in(again, AGENT)
        page = await again.get("/protected")
        assert page.headers["location"] == "/mfa/challenge?next=/protected"


async def test_members_of_other_sites_and_users_of_no_site_are_not_concerned(acme: Acme) -> None:
    await acme.enforce()
    async with acme.ga.client() as client:
        for user in (SOLO, "nobody@example.test"):
            await sign_in(client, user)
            assert (await client.get("/protected")).status_code == 200
            status = (await client.get("/mfa/api/status")).json()["enforcement"]
            assert status == {"required": False, "everyone": False, "deadline": None, "sites": []}


# -- the banner ------------------------------------------------------------------------------


async def test_the_pages_tell_of_a_coming_deadline_and_then_of_the_obligation(
    acme: Acme,
) -> None:
    deadline = await acme.enforce(in_seconds=86400)
    async with acme.ga.client() as agent:
        await sign_in(agent, AGENT)
        settings = await agent.get("/mfa/settings")
        assert 'id="enrolment-notice"' in settings.text
        assert '<time datetime="2027-01-16T08:00:00Z">Jan 16, 2027, 08:00 UTC</time>' in (
            settings.text
        )
        acme.ga.clock.now = deadline
        enrol_page = await agent.get("/mfa/enrol")
        assert "Turn it on to continue." in enrol_page.text
        await enrol(acme.ga, agent)
        assert 'id="enrolment-notice"' not in (await agent.get("/mfa/settings")).text


async def test_the_guard_gives_the_apps_own_pages_the_notice(acme: Acme) -> None:
    deadline = await acme.enforce(in_seconds=600)
    async with acme.ga.client() as agent:
        await sign_in(agent, AGENT)
        # /banner is the app's own page: it asks guard.enrolment_notice(request.scope).
        assert (await agent.get("/banner")).json() == {
            "deadline": deadline,
            "overdue": False,
            "text": "15 Jan 2027, 08:10 UTC",
        }
        await enrol(acme.ga, agent)
        assert (await agent.get("/banner")).json() is None


# -- the owner's API -------------------------------------------------------------------------


async def test_enforcing_at_once_is_refused_while_members_lack_2fa(acme: Acme) -> None:
    async with acme.ga.client() as owner:
        await verified_owner(acme, owner)
        refused = await put_policy(owner, {"enforce": True})
        assert refused.status_code == 409
        error = refused.json()["error"]
        assert error["code"] == "members_without_mfa"
        assert "grace_hours" in error["message"]
        assert error["members"] == [
            {
                "user_id": AGENT,
                "role": "operator",
                "two_factor": False,
                "method": None,
                "factors": [],
                "phone_verified": False,
            }
        ]
        site = await acme.directory.site("acme")
        assert site is not None
        assert site.policy == SitePolicy()  # nothing changed
        assert EventKind.SITE_POLICY_CHANGED not in acme.ga.events.kinds()


async def test_enforcing_with_a_grace_period_sets_the_deadline(acme: Acme) -> None:
    async with acme.ga.client() as owner:
        await verified_owner(acme, owner)
        now = acme.ga.clock()
        accepted = await put_policy(owner, {"enforce": True, "grace_hours": 24})
        assert accepted.status_code == 200, accepted.text
        assert accepted.json() == {
            "id": "acme",
            "name": "Acme",
            "policy": {
                "enforce": True,
                "deadline": "2027-01-16T08:00:30Z",
                "methods": "any",
                "methods_deadline": None,
                "changed_at": "2027-01-15T08:00:30Z",
                "changed_by": OWNER,
            },
        }
        site = await acme.directory.site("acme")
        assert site is not None
        assert site.policy == SitePolicy(True, now + 86400, OWNER, now)
        event = acme.ga.events.events[-1]
        assert (event.kind, event.user_id, event.site, event.detail, event.client_ip) == (
            EventKind.SITE_POLICY_CHANGED,
            OWNER,
            "acme",
            "enforce=on deadline=2027-01-16T08:00:30Z methods=any",
            "203.0.113.7",
        )


async def test_grace_hours_0_enforces_at_once_and_the_agent_must_enrol(acme: Acme) -> None:
    async with acme.ga.client() as owner, acme.ga.client() as agent:
        await verified_owner(acme, owner)
        assert (await put_policy(owner, {"enforce": True, "grace_hours": 0})).status_code == 200
        await sign_in(agent, AGENT)
        assert (await agent.get("/")).headers["location"] == "/mfa/enrol?next=/"
        await enrol(acme.ga, agent)
        assert (await agent.get("/")).status_code == 200
        # Everyone has 2FA now: enforcing without a grace period is accepted.
        acme.ga.clock.advance(30)
        assert (await put_policy(owner, {"enforce": True})).status_code == 200


async def test_enforcing_needs_the_owners_own_2fa_verified_within_minutes(acme: Acme) -> None:
    async with acme.ga.client() as owner:
        await sign_in(owner, OWNER)
        refused = await put_policy(owner, {"enforce": True, "grace_hours": 0})
        assert refused.status_code == 403
        assert assert_json_error(refused) == "verified_mfa_required"
        secret, _ = await enrol(acme.ga, owner)
        # Verified at enrolment; recent_mfa_seconds (300) later it is no longer recent enough.
        acme.ga.clock.advance(301)
        for body in ({"enforce": True, "grace_hours": 1}, {"enforce": False}):
            refused = await put_policy(owner, body)
            assert (refused.status_code, refused.json()["error"]["code"]) == (
                401,
                "mfa_reauthentication_required",
            )
    acme.ga.clock.advance(30)
    async with acme.ga.client() as new_session:
        # Enrolled, but not verified in this session: no change of any kind.
        await sign_in(new_session, OWNER)
        refused = await put_policy(new_session, {"enforce": False})
        assert refused.status_code == 401
        verified = await new_session.post("/mfa/api/verify", json={"code": acme.ga.code(secret)})
        assert verified.status_code == 200
        ok = await put_policy(new_session, {"enforce": True, "grace_hours": 1})
        assert ok.status_code == 200
    site = await acme.directory.site("acme")
    assert site is not None
    assert site.policy.grace_deadline == acme.ga.clock() + 3600


async def test_the_service_checks_the_grace_period_for_apps_too(acme: Acme) -> None:
    service = acme.ga.guard.site_service
    now = acme.ga.clock()
    # An owner who verified 2FA a second ago: only the grace period is wrong.
    marker = Marker("subject", "nonce", now, 1, True, now - 1, "totp")
    for hours in (-1.0, float("inf"), float("nan"), 721.0):
        refused = await service.set_policy(
            OWNER, "acme", enforce=True, grace_hours=hours, marker=marker, ip=None
        )
        assert isinstance(refused, Denied)
        assert refused.reason is Reason.INVALID_GRACE


async def test_turning_enforcement_off_is_always_allowed_to_owners(acme: Acme) -> None:
    await acme.directory.add_member("acme", "second-owner@acme.test", Role.OWNER)
    await acme.enforce(in_seconds=3600)
    async with acme.ga.client() as owner:
        # An owner without 2FA may turn it off (and back on only with 2FA).
        await sign_in(owner, "second-owner@acme.test")
        off = await put_policy(owner, {"enforce": False})
        assert off.status_code == 200, off.text
        assert off.json()["policy"] == {
            "enforce": False,
            "deadline": None,
            "methods": "any",
            "methods_deadline": None,
            "changed_at": "2027-01-15T08:00:00Z",
            "changed_by": "second-owner@acme.test",
        }
    event = acme.ga.events.events[-1]
    assert (event.kind, event.detail) == (EventKind.SITE_POLICY_CHANGED, "enforce=off")


async def test_operators_get_403_and_outsiders_the_same_404_as_for_no_site(acme: Acme) -> None:
    async with acme.ga.client() as client:
        await sign_in(client, AGENT)
        await enrol(acme.ga, client)
        for response in (
            await put_policy(client, {"enforce": True, "grace_hours": 0}),
            await client.get("/mfa/api/sites/acme/members"),
        ):
            assert response.status_code == 403
            assert assert_json_error(response) == "not_site_owner"
        await sign_in(client, SOLO)
        await enrol(acme.ga, client)
        answers = []
        for site_id in ("acme", "no-such-site", "x" * 300):
            for response in (
                await put_policy(client, {"enforce": False}, site=site_id),
                await client.get(f"/mfa/api/sites/{site_id}/members"),
            ):
                assert response.status_code == 404
                answers.append(response.json())
        # A non-member cannot tell a real site from a made-up one.
        assert all(answer == answers[0] for answer in answers)
        assert answers[0]["error"]["code"] == "site_not_found"
    site = await acme.directory.site("acme")
    assert site is not None
    assert site.policy == SitePolicy()
    denied = [e for e in acme.ga.events.events if e.kind is EventKind.SITE_ACCESS_DENIED]
    assert [(e.user_id, e.site, e.detail) for e in denied] == [
        (AGENT, "acme", "wanted=policy"),
        (AGENT, "acme", "wanted=members"),
        (SOLO, "acme", "wanted=policy"),
        (SOLO, "acme", "wanted=members"),
        (SOLO, "no-such-site", "wanted=policy"),
        (SOLO, "no-such-site", "wanted=members"),
    ]


async def test_members_show_each_members_green_padlock(acme: Acme) -> None:
    async with acme.ga.client() as owner:
        await verified_owner(acme, owner)
        members = await owner.get("/mfa/api/sites/acme/members")
        assert members.status_code == 200
        body = members.json()
        assert body["name"] == "Acme"
        assert [
            (m["user_id"], m["role"], m["two_factor"], m["method"]) for m in body["members"]
        ] == [
            (AGENT, "operator", False, None),
            (OWNER, "owner", True, "totp"),
        ]
        assert members.headers["cache-control"] == "no-store"


async def test_a_user_lists_their_own_sites(acme: Acme) -> None:
    await acme.enforce(in_seconds=60)
    async with acme.ga.client() as agent:
        await sign_in(agent, AGENT)
        sites = (await agent.get("/mfa/api/sites")).json()["sites"]
    # An operator sees the policy, not who set it.
    assert sites == [
        {
            "id": "acme",
            "name": "Acme",
            "role": "operator",
            "policy": {
                "enforce": True,
                "deadline": "2027-01-15T08:01:00Z",
                "methods": "any",
                "methods_deadline": None,
                "changed_at": "2027-01-15T08:00:00Z",
            },
        }
    ]


@pytest.mark.parametrize(
    "body",
    [
        {},
        {"enforce": "yes"},
        {"enforce": 1},
        {"enforce": None},
        {"enforce": True, "grace_hours": -1},
        {"enforce": True, "grace_hours": "24"},
        {"enforce": True, "grace_hours": True},
        {"enforce": True, "grace_hours": 10_000},
        {"enforce": True, "grace_hours": [1]},
    ],
)
async def test_bad_policy_bodies_get_400_and_change_nothing(acme: Acme, body: object) -> None:
    async with acme.ga.client() as owner:
        await verified_owner(acme, owner)
        refused = await put_policy(owner, body)
        assert refused.status_code == 400
        assert assert_json_error(refused) == "invalid_input"
    site = await acme.directory.site("acme")
    assert site is not None
    assert site.policy == SitePolicy()


async def test_an_infinite_grace_period_is_refused(acme: Acme) -> None:
    async with acme.ga.client() as owner:
        await verified_owner(acme, owner)
        refused = await owner.put(
            "/mfa/api/sites/acme/policy",
            content=b'{"enforce": true, "grace_hours": 1e400}',
            headers={"content-type": "application/json"},
        )
        assert (refused.status_code, refused.json()["error"]["code"]) == (400, "invalid_input")


async def test_policy_changes_refuse_other_methods_content_types_and_cross_site(
    acme: Acme,
) -> None:
    async with acme.ga.client() as owner:
        await verified_owner(acme, owner)
        wrong_method = await owner.post("/mfa/api/sites/acme/policy", json={"enforce": False})
        assert (wrong_method.status_code, wrong_method.headers["allow"]) == (405, "PUT")
        form = await owner.put("/mfa/api/sites/acme/policy", data={"enforce": "true"})
        assert form.status_code == 415
        cross = await owner.put(
            "/mfa/api/sites/acme/policy",
            json={"enforce": True, "grace_hours": 0},
            headers={"origin": "https://evil.example"},
        )
        assert (cross.status_code, cross.json()["error"]["code"]) == (403, "cross_site_request")
    async with acme.ga.client() as anonymous:
        refused = await put_policy(anonymous, {"enforce": False})
        assert (refused.status_code, refused.json()["error"]["code"]) == (401, "not_authenticated")
    site = await acme.directory.site("acme")
    assert site is not None
    assert site.policy == SitePolicy()


async def test_without_a_site_directory_there_is_no_site_api() -> None:
    ga = build_app()
    async with ga.client() as client:
        await sign_in(client)
        missing = await client.get("/mfa/api/sites")
        assert (missing.status_code, missing.json()["error"]["code"]) == (404, "not_found")
        status = (await client.get("/mfa/api/status")).json()
        assert status["enforcement"] == {
            "required": False,
            "everyone": False,
            "deadline": None,
            "sites": [],
        }


# -- disabling while enforced ----------------------------------------------------------------


async def test_disabling_is_refused_while_a_site_enforces_2fa(acme: Acme) -> None:
    async with acme.ga.client() as agent:
        await sign_in(agent, AGENT)
        secret, _ = await enrol(acme.ga, agent)
        await acme.enforce(in_seconds=3600)  # even during the grace period
        acme.ga.clock.advance(30)
        code = acme.ga.code(secret)
        refused = await agent.post("/mfa/api/disable", json={"code": code})
        assert refused.status_code == 409
        assert assert_json_error(refused) == "mfa_enforced_by_site"
        assert "Acme requires it" in refused.json()["error"]["message"]
        enrolment = await acme.ga.store.get(AGENT)
        assert enrolment is not None
        assert enrolment.enrolled
        # The code was not spent on the refusal.
        assert (await agent.post("/mfa/api/verify", json={"code": code})).status_code == 200
        page = await agent.get("/mfa/settings")
        assert 'id="enforced-by"' in page.text
        assert "disable-code" not in page.text
        assert EventKind.DISABLE_REFUSED in acme.ga.events.kinds()
        await acme.directory.set_policy("acme", SitePolicy())
        acme.ga.clock.advance(30)
        accepted = await agent.post("/mfa/api/disable", json={"code": acme.ga.code(secret)})
        assert accepted.status_code == 200, accepted.text


async def test_the_disable_form_is_refused_with_the_message_while_enforced(acme: Acme) -> None:
    async with acme.ga.client() as agent:
        await sign_in(agent, AGENT)
        secret, _ = await enrol(acme.ga, agent)
        await acme.enforce()
        page = await agent.get("/mfa/settings")
        token = page.text.split('name="csrf_token" value="')[1].split('"')[0]
        acme.ga.clock.advance(30)
        refused = await agent.post(
            "/mfa/settings/disable",
            data={"csrf_token": token, "method": "totp", "code": acme.ga.code(secret)},
        )
        assert refused.status_code == 409
        assert "Acme requires it" in refused.text
        assert 'role="alert"' in refused.text


async def test_site_events_reach_the_audit_log(
    acme: Acme, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="mfa_guard.audit")
    async with acme.ga.client() as owner:
        secret = await verified_owner(acme, owner)
        assert (await put_policy(owner, {"enforce": True, "grace_hours": 2})).status_code == 200
    lines = [r.getMessage() for r in caplog.records if r.name == "mfa_guard.audit"]
    assert lines[-1] == (
        "mfa_guard event=site_policy_changed user=owner@acme.test site=acme "
        "enforce=on deadline=2027-01-15T10:00:30Z methods=any ip=203.0.113.7"
    )
    assert not any(secret in line for line in lines)


class DownDirectory(MemorySiteDirectory):
    """A directory whose backend can be switched off: every read raises StoreUnavailable."""

    def __init__(self) -> None:
        super().__init__()
        self.down = False

    async def deadline(self, user_id: str) -> float | None:
        self._check()
        return await super().deadline(user_id)

    async def requirements(self, user_id: str) -> Requirements:
        self._check()
        return await super().requirements(user_id)

    async def memberships(self, user_id: str) -> list[Membership]:
        self._check()
        return await super().memberships(user_id)

    async def role(self, site_id: str, user_id: str) -> Role | None:
        self._check()
        return await super().role(site_id, user_id)

    def _check(self) -> None:
        if self.down:
            raise StoreUnavailable()


async def test_a_directory_outage_fails_closed_and_changes_nothing() -> None:
    directory = DownDirectory()
    await directory.save_site("acme", "Acme")
    await directory.add_member("acme", OWNER, Role.OWNER)
    await directory.add_member("acme", AGENT, Role.OPERATOR)
    ga = build_app(sites=directory, recheck_seconds=RECHECK)
    async with ga.client() as owner, ga.client() as agent:
        await sign_in(owner, OWNER)
        secret, _ = await enrol(ga, owner)
        await sign_in(agent, AGENT)
        directory.down = True
        # A session that must re-check cannot be let through on a guess: 503, not open.
        page = await agent.get("/protected")
        assert (page.status_code, page.headers["retry-after"]) == (503, "5")
        assert "Traceback" not in page.text
        api = await agent.get("/api/data")
        assert (api.status_code, api.json()["error"]["code"]) == (503, "service_unavailable")
        for response in (
            await agent.get("/mfa/api/status"),
            await put_policy(owner, {"enforce": True, "grace_hours": 0}),
            await owner.get("/mfa/api/sites/acme/members"),
            await owner.post("/mfa/api/disable", json={"code": ga.code(secret, steps=1)}),
        ):
            assert response.status_code == 503, response.text
            assert response.json()["error"]["code"] == "service_unavailable"
        enrolment = await ga.store.get(OWNER)
        assert enrolment is not None
        assert enrolment.enrolled
        directory.down = False
        assert (await agent.get("/protected")).status_code == 200


async def test_with_a_site_directory_the_hot_path_still_makes_no_call() -> None:
    store = CountingStore(MemoryStore())
    directory = CountingSiteDirectory(await acme_directory())
    ga = build_app(store=store, sites=directory, recheck_seconds=RECHECK)
    async with ga.client() as owner, ga.client() as agent:
        await sign_in(owner, OWNER)
        await enrol(ga, owner)
        await sign_in(agent, AGENT)
        await agent.get("/protected")
        await acme_enforce(directory, ga)
        ga.clock.advance(RECHECK)
        for client in (owner, agent):
            # Past the re-check interval: one store call and one directory call, no more.
            store.calls.clear()
            directory.calls.clear()
            await client.get("/protected")
            assert (dict(store.calls), dict(directory.calls)) == (
                {"summary": 1},
                {"requirements": 1},
            )
        store.calls.clear()
        directory.calls.clear()
        for _ in range(5):
            assert (await owner.get("/protected")).status_code == 200
            assert (await agent.get("/protected")).status_code == 303
        assert (store.total, directory.total) == (0, 0)


async def acme_enforce(directory: CountingSiteDirectory, ga: GuardedApp) -> None:
    now = ga.clock()
    policy = SitePolicy(enforce=True, grace_deadline=now, changed_by=OWNER, changed_at=now)
    assert await directory.set_policy("acme", policy)
