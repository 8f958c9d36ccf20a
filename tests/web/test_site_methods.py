"""The second factors a site accepts, over HTTP: an owner limits them to no texted code or to
passkeys and security keys only, at once (refused while anybody, the owner first, would be
locked out) or after a grace period, and a change of methods never postpones the 2FA deadline
in force; the demo's Team page names each member's kind of factor and its settings choose the
methods. Passkeys come from a software authenticator; time is the injected clock."""

from __future__ import annotations

import os
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from examples.inbox.app import DEFAULT_PORT, PASSKEY_HOST

from mfa_guard.enforcement import iso
from mfa_guard.events import EventKind
from mfa_guard.stores.sites import MemorySiteDirectory, MethodPolicy, Requirements, Role
from mfa_guard.testing import FrozenClock
from mfa_guard.testing.webauthn import SoftAuthenticator
from tests.apps import GuardedApp, build_app, enrol, sign_in
from tests.demo import Demo, csrf_token, owner_with_2fa, running_demo, turn_on_two_factor
from tests.demo import sign_in as demo_sign_in
from tests.scenarios import USER, assert_json_error, error_of
from tests.sms_apps import build_sms_app, owner_with_phone, verified_by_app, verified_by_text

OWNER = "owner@acme.test"
AGENT = "agent@acme.test"
API = "/mfa/api"
ORIGIN = "https://app.example.test"
PASSKEYS = {"rp_id": "app.example.test", "origins": [ORIGIN]}
HOUR = 3600.0


@dataclass
class Acme:
    """Acme (an owner and an operator) on an app that offers passkeys."""

    ga: GuardedApp
    directory: MemorySiteDirectory

    def client(self) -> httpx.AsyncClient:
        return self.ga.client(base_url=ORIGIN)

    async def policy(self) -> Any:
        site = await self.directory.site("acme")
        assert site is not None
        return site.policy


async def acme_app(**overrides: Any) -> Acme:
    directory = MemorySiteDirectory()
    await directory.save_site("acme", "Acme")
    await directory.add_member("acme", OWNER, Role.OWNER)
    await directory.add_member("acme", AGENT, Role.OPERATOR)
    settings: dict[str, Any] = {"webauthn": PASSKEYS, "recheck_seconds": 60, **overrides}
    return Acme(build_app(sites=directory, **settings), directory)


@pytest.fixture
async def acme() -> Acme:
    return await acme_app()


async def put_policy(client: httpx.AsyncClient, body: object) -> httpx.Response:
    return await client.put(f"{API}/sites/acme/policy", json=body)


async def add_passkey(client: httpx.AsyncClient, key: SoftAuthenticator) -> None:
    """Registers ``key`` for the signed-in user (their first factor, or one more within
    minutes of a verification)."""
    options = await client.post(f"{API}/webauthn/register/options", json={})
    assert options.status_code == 200, options.text
    answer = key.create(options.json()["publicKey"], origin=ORIGIN)
    added = await client.post(f"{API}/webauthn/register", json={"credential": answer})
    assert added.status_code == 200, added.text


async def verify_with(client: httpx.AsyncClient, key: SoftAuthenticator) -> None:
    options = await client.post(f"{API}/webauthn/authenticate/options", json={})
    assert options.status_code == 200, options.text
    answer = key.get(options.json()["publicKey"], origin=ORIGIN)
    verified = await client.post(f"{API}/webauthn/authenticate", json={"credential": answer})
    assert verified.status_code == 200, verified.text


async def with_passkey(acme: Acme, client: httpx.AsyncClient, user: str) -> SoftAuthenticator:
    """``user`` signs in and turns 2FA on with a passkey (the session verified by it)."""
    key = SoftAuthenticator()
    await sign_in(client, user)
    await add_passkey(client, key)
    acme.ga.clock.advance(30)
    return key


async def with_app(acme: Acme, client: httpx.AsyncClient, user: str) -> str:
    """``user`` signs in and turns 2FA on with an authenticator app."""
    await sign_in(client, user)
    secret, _ = await enrol(acme.ga, client)
    acme.ga.clock.advance(30)
    return secret


def refused_members(response: httpx.Response) -> list[tuple[str, list[str]]]:
    return [(m["user_id"], m["factors"]) for m in response.json()["error"]["members"]]


# -- the body ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "methods",
    ["sms", "ANY", "phishing-resistant", "", 1, True, ["any"], {"any": True}],
    ids=["sms", "upper-case", "dash", "empty", "number", "boolean", "list", "object"],
)
async def test_an_unknown_methods_policy_gets_400_and_changes_nothing(
    acme: Acme, methods: object
) -> None:
    async with acme.client() as owner:
        await with_passkey(acme, owner, OWNER)
        refused = await put_policy(owner, {"enforce": True, "grace_hours": 1, "methods": methods})
        assert assert_json_error(refused) == "invalid_input"
        assert refused.status_code == 400
        assert refused.json()["error"]["message"] == (
            "The field 'methods' must be one of: any, no_sms, phishing_resistant."
        )
    assert (await acme.policy()).enforce is False


@pytest.mark.parametrize("methods", ["no_sms", "phishing_resistant"])
async def test_methods_without_enforcement_get_400(acme: Acme, methods: str) -> None:
    async with acme.client() as owner:
        await with_passkey(acme, owner, OWNER)
        refused = await put_policy(owner, {"enforce": False, "methods": methods})
        assert error_of(refused) == (400, "invalid_input")
        assert "'enforce': true" in refused.json()["error"]["message"]
        # "any", absent or null: the policy as before.
        for body in (
            {"enforce": False, "methods": "any"},
            {"enforce": False, "methods": None},
            {"enforce": False},
        ):
            assert (await put_policy(owner, body)).status_code == 200
    assert acme.ga.events.kinds().count(EventKind.SITE_POLICY_CHANGED) == 3


async def test_a_policy_tells_its_methods_to_owners_and_operators(acme: Acme) -> None:
    async with acme.client() as owner, acme.client() as agent:
        await with_passkey(acme, owner, OWNER)
        now = acme.ga.clock()
        accepted = await put_policy(
            owner, {"enforce": True, "grace_hours": 24, "methods": "no_sms"}
        )
        assert accepted.status_code == 200, accepted.text
        assert accepted.json()["policy"] == {
            "enforce": True,
            "deadline": iso(now + 24 * HOUR),
            "methods": "no_sms",
            "methods_deadline": iso(now + 24 * HOUR),
            "changed_at": iso(now),
            "changed_by": OWNER,
        }
        await sign_in(agent, AGENT)
        [site] = (await agent.get(f"{API}/sites")).json()["sites"]
        assert (site["policy"]["methods"], site["policy"]["methods_deadline"]) == (
            "no_sms",
            iso(now + 24 * HOUR),
        )
        # Off again: no methods either.
        off = await put_policy(owner, {"enforce": False})
        assert (off.json()["policy"]["methods"], off.json()["policy"]["methods_deadline"]) == (
            "any",
            None,
        )
    assert (await acme.policy()).methods is MethodPolicy.ANY


# -- at once: nobody locked out, the owner first --------------------------------------------


async def test_no_sms_at_once_is_refused_while_members_lack_2fa(acme: Acme) -> None:
    async with acme.client() as owner, acme.client() as agent:
        await with_passkey(acme, owner, OWNER)
        refused = await put_policy(owner, {"enforce": True, "methods": "no_sms"})
        assert error_of(refused) == (409, "members_without_mfa")
        assert refused_members(refused) == [(AGENT, [])]
        assert (await acme.policy()).enforce is False

        await with_app(acme, agent, AGENT)  # an app is enough
        now = acme.ga.clock()
        accepted = await put_policy(owner, {"enforce": True, "methods": "no_sms"})
        assert accepted.status_code == 200, accepted.text
    policy = await acme.policy()
    assert (policy.grace_deadline, policy.methods, policy.methods_deadline) == (
        now,
        MethodPolicy.NO_SMS,
        now,
    )
    assert await acme.directory.requirements(AGENT) == Requirements(now, now, None)


async def test_passkeys_only_at_once_is_refused_while_members_lack_one(acme: Acme) -> None:
    async with acme.client() as owner, acme.client() as agent:
        await with_passkey(acme, owner, OWNER)
        await with_app(acme, agent, AGENT)
        refused = await put_policy(owner, {"enforce": True, "methods": "phishing_resistant"})
        assert error_of(refused) == (409, "members_without_allowed_factor")
        error = refused.json()["error"]
        assert error["message"] == (
            "1 member of this site has no passkey or security key: ask them to add one, or give "
            "a grace period (grace_hours; 0 requires one at once)."
        )
        assert error["members"] == [
            {
                "user_id": AGENT,
                "role": "operator",
                "two_factor": True,
                "method": "totp",
                "factors": ["totp"],
                "phone_verified": False,
            }
        ]
        assert (await acme.policy()).enforce is False
        assert EventKind.SITE_POLICY_CHANGED not in acme.ga.events.kinds()

        await add_passkey(agent, SoftAuthenticator())
        accepted = await put_policy(owner, {"enforce": True, "methods": "phishing_resistant"})
        assert accepted.status_code == 200, accepted.text
        assert accepted.json()["policy"]["methods"] == "phishing_resistant"


async def test_a_member_without_2fa_is_listed_as_lacking_a_passkey(acme: Acme) -> None:
    async with acme.client() as owner:
        await with_passkey(acme, owner, OWNER)
        refused = await put_policy(owner, {"enforce": True, "methods": "phishing_resistant"})
        assert error_of(refused) == (409, "members_without_allowed_factor")
        assert refused_members(refused) == [(AGENT, [])]


async def test_an_owner_without_a_passkey_cannot_require_one_at_once(acme: Acme) -> None:
    async with acme.client() as owner, acme.client() as agent:
        await with_passkey(acme, agent, AGENT)
        await with_app(acme, owner, OWNER)
        # No grace period: the owner is the member who lacks one.
        refused = await put_policy(owner, {"enforce": True, "methods": "phishing_resistant"})
        assert error_of(refused) == (409, "members_without_allowed_factor")
        assert refused_members(refused) == [(OWNER, ["totp"])]
        # Grace 0 ("at once, even for those without") holds the others, not the owner.
        refused = await put_policy(
            owner, {"enforce": True, "grace_hours": 0, "methods": "phishing_resistant"}
        )
        assert error_of(refused) == (409, "members_without_allowed_factor")
        assert refused.json()["error"]["message"] == (
            "Add a passkey or security key to your own account before requiring one of every "
            "member at once."
        )
        assert refused_members(refused) == [(OWNER, ["totp"])]
        assert (await acme.policy()).enforce is False
        # With time to add one, the owner is held to it as everybody.
        now = acme.ga.clock()
        accepted = await put_policy(
            owner, {"enforce": True, "grace_hours": 24, "methods": "phishing_resistant"}
        )
        assert accepted.status_code == 200, accepted.text
    assert (await acme.policy()).methods_deadline == now + 24 * HOUR


async def test_grace_0_requires_a_passkey_at_once_of_members_without_one(acme: Acme) -> None:
    async with acme.client() as owner:
        await with_passkey(acme, owner, OWNER)
        now = acme.ga.clock()
        accepted = await put_policy(
            owner, {"enforce": True, "grace_hours": 0, "methods": "phishing_resistant"}
        )
        assert accepted.status_code == 200, accepted.text
    assert await acme.directory.requirements(AGENT) == Requirements(now, now, now)


async def test_the_owners_session_must_be_verified_by_a_passkey_to_require_one_at_once(
    acme: Acme,
) -> None:
    key = SoftAuthenticator()
    async with acme.client() as owner, acme.client() as agent:
        secret = await with_app(acme, owner, OWNER)
        await add_passkey(owner, key)
        await with_passkey(acme, agent, AGENT)
    async with acme.client() as session:
        # A new session, through the challenge with the app's code.
        await sign_in(session, OWNER)
        acme.ga.clock.advance(30)
        verified = await session.post(f"{API}/verify", json={"code": acme.ga.code(secret)})
        assert verified.status_code == 200, verified.text
        for grace in ({}, {"grace_hours": 0}):
            body = {"enforce": True, "methods": "phishing_resistant", **grace}
            refused = await put_policy(session, body)
            assert error_of(refused) == (401, "mfa_reauthentication_required")
            assert "passkey" in refused.json()["error"]["message"]
        assert (await acme.policy()).enforce is False
        # With a grace period the app's code is enough: the session is not held yet.
        ok = await put_policy(
            session, {"enforce": True, "grace_hours": 1, "methods": "phishing_resistant"}
        )
        assert ok.status_code == 200, ok.text
        await put_policy(session, {"enforce": False})
        # Verified by the passkey, the owner's session meets the policy the instant it applies.
        await verify_with(session, key)
        accepted = await put_policy(session, {"enforce": True, "methods": "phishing_resistant"})
        assert accepted.status_code == 200, accepted.text


async def test_refusing_texted_codes_at_once_needs_a_session_not_verified_by_one() -> None:
    directory = MemorySiteDirectory()
    await directory.save_site("solo", "Solo")
    await directory.add_member("solo", USER, Role.OWNER)
    app = build_sms_app(settings={"sites": directory})
    async with app.client() as owner:
        secret = await owner_with_phone(app, owner)
    async with app.client() as texted:
        await verified_by_text(app, texted)
        refused = await texted.put(
            f"{API}/sites/solo/policy", json={"enforce": True, "methods": "no_sms"}
        )
        assert error_of(refused) == (401, "mfa_reauthentication_required")
        assert "text-message code is not enough" in refused.json()["error"]["message"]
        # A grace period leaves the session as it is until then.
        ok = await texted.put(
            f"{API}/sites/solo/policy",
            json={"enforce": True, "grace_hours": 1, "methods": "no_sms"},
        )
        assert ok.status_code == 200, ok.text
    async with app.client() as by_app:
        await verified_by_app(app, by_app, secret)
        await by_app.put(f"{API}/sites/solo/policy", json={"enforce": False})
        accepted = await by_app.put(
            f"{API}/sites/solo/policy", json={"enforce": True, "methods": "no_sms"}
        )
        assert accepted.status_code == 200, accepted.text


async def test_passkeys_cannot_be_required_where_none_is_offered() -> None:
    directory = MemorySiteDirectory()
    await directory.save_site("acme", "Acme")
    await directory.add_member("acme", OWNER, Role.OWNER)
    ga = build_app(sites=directory)
    async with ga.client() as owner:
        await sign_in(owner, OWNER)
        await enrol(ga, owner)
        body = {"enforce": True, "grace_hours": 24, "methods": "phishing_resistant"}
        refused = await owner.put(f"{API}/sites/acme/policy", json=body)
        assert error_of(refused) == (409, "passkeys_disabled")
        assert "a site cannot require them" in refused.json()["error"]["message"]
        # Refusing texted codes needs nothing the app lacks.
        body["methods"] = "no_sms"
        assert (await owner.put(f"{API}/sites/acme/policy", json=body)).status_code == 200


# -- deadlines -------------------------------------------------------------------------------


async def test_with_a_grace_period_members_get_until_then(acme: Acme) -> None:
    async with acme.client() as owner:
        await with_passkey(acme, owner, OWNER)
        now = acme.ga.clock()
        # The agent has no 2FA at all: a grace period is accepted all the same.
        accepted = await put_policy(
            owner, {"enforce": True, "grace_hours": 48, "methods": "phishing_resistant"}
        )
        assert accepted.status_code == 200, accepted.text
    deadline = now + 48 * HOUR
    assert await acme.directory.requirements(AGENT) == Requirements(deadline, deadline, deadline)
    event = acme.ga.events.events[-1]
    assert (event.kind, event.user_id, event.site, event.detail) == (
        EventKind.SITE_POLICY_CHANGED,
        OWNER,
        "acme",
        f"enforce=on deadline={iso(deadline)} methods=phishing_resistant "
        f"methods_deadline={iso(deadline)}",
    )


async def later(
    acme: Acme, owner: httpx.AsyncClient, key: SoftAuthenticator, hours: float
) -> float:
    """``hours`` on, the owner confirms their passkey again (a policy change needs a recent
    verification); returns the time."""
    acme.ga.clock.advance(hours * HOUR)
    await verify_with(owner, key)
    return acme.ga.clock()


async def test_new_methods_never_postpone_the_2fa_deadline_in_force(acme: Acme) -> None:
    async with acme.client() as owner:
        key = await with_passkey(acme, owner, OWNER)
        enforced_at = acme.ga.clock()
        assert (await put_policy(owner, {"enforce": True, "grace_hours": 2})).status_code == 200
        now = await later(acme, owner, key, 1)
        changed = await put_policy(
            owner, {"enforce": True, "grace_hours": 168, "methods": "no_sms"}
        )
        assert changed.status_code == 200, changed.text
        policy = await acme.policy()
        assert (policy.grace_deadline, policy.methods_deadline) == (
            enforced_at + 2 * HOUR,
            now + 168 * HOUR,
        )
        # Once passed, it stays passed: the agent, still without 2FA, stays confined.
        await later(acme, owner, key, 2)
        changed = await put_policy(
            owner, {"enforce": True, "grace_hours": 24, "methods": "phishing_resistant"}
        )
        assert changed.status_code == 200, changed.text
        assert (await acme.policy()).grace_deadline == enforced_at + 2 * HOUR
        # A shorter grace period than the one left brings it forward.
        now = await later(acme, owner, key, 1)
        await put_policy(owner, {"enforce": False})
        await put_policy(owner, {"enforce": True, "grace_hours": 48})
        changed = await put_policy(owner, {"enforce": True, "grace_hours": 1, "methods": "no_sms"})
        assert changed.status_code == 200, changed.text
        assert (await acme.policy()).grace_deadline == now + HOUR
    assert (await acme.directory.requirements(AGENT)).enrol_by == now + HOUR


async def test_the_same_methods_again_keep_their_deadline(acme: Acme) -> None:
    async with acme.client() as owner, acme.client() as agent:
        key = await with_passkey(acme, owner, OWNER)
        set_at = acme.ga.clock()
        body = {"enforce": True, "grace_hours": 24, "methods": "no_sms"}
        assert (await put_policy(owner, body)).status_code == 200
        await later(acme, owner, key, 1)
        assert (await put_policy(owner, {**body, "grace_hours": 168})).status_code == 200
        assert (await acme.policy()).methods_deadline == set_at + 24 * HOUR
        # Saved again at once (everyone has 2FA now): the 2FA deadline moves, theirs stays.
        await with_app(acme, agent, AGENT)
        now = await later(acme, owner, key, 0)
        assert (await put_policy(owner, {"enforce": True, "methods": "no_sms"})).status_code == 200
        policy = await acme.policy()
        assert (policy.grace_deadline, policy.methods_deadline) == (now, set_at + 24 * HOUR)
        # Other methods start their own deadline; the 2FA one stays.
        other = await put_policy(owner, {**body, "methods": "phishing_resistant"})
        assert other.status_code == 200, other.text
        policy = await acme.policy()
        assert (policy.grace_deadline, policy.methods_deadline) == (now, now + 24 * HOUR)


async def test_the_document_describes_the_methods_and_their_refusals(acme: Acme) -> None:
    async with acme.client() as client:
        document = (await client.get(f"{API}/openapi.json")).json()
    schemas = document["components"]["schemas"]
    assert schemas["MethodPolicy"]["enum"] == ["any", "no_sms", "phishing_resistant"]
    assert schemas["PolicyChange"]["properties"]["methods"]["default"] == "any"
    assert {"methods", "methods_deadline"} <= set(schemas["Policy"]["required"])
    put = document["paths"][f"{API}/sites/{{site}}/policy"]["put"]
    assert (
        "409 passkeys_disabled, members_without_mfa, members_without_allowed_factor"
        in (put["description"])
    )


# -- the demo: the Team page names the kind, the settings choose the methods ------------------

DEMO_ORIGIN = f"http://{PASSKEY_HOST}:{DEFAULT_PORT}"


@pytest.fixture
async def demo(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Demo]:
    # The demo reads MFA_GUARD_* and PORT from the environment; these tests use its defaults.
    for name in os.environ:
        if name.upper().startswith("MFA_GUARD_") or name == "PORT":
            monkeypatch.delenv(name)
    async with running_demo(tmp_path, FrozenClock()) as demo:
        yield demo


async def demo_passkey(browser: httpx.AsyncClient, key: SoftAuthenticator) -> None:
    """Adds ``key`` to the signed-in demo user, as the page's script would."""
    options = await browser.post(f"{API}/webauthn/register/options", json={})
    assert options.status_code == 200, options.text
    answer = key.create(options.json()["publicKey"], origin=DEMO_ORIGIN)
    added = await browser.post(f"{API}/webauthn/register", json={"credential": answer})
    assert added.status_code == 200, added.text


async def demo_verify(browser: httpx.AsyncClient, key: SoftAuthenticator) -> None:
    options = await browser.post(f"{API}/webauthn/authenticate/options", json={})
    assert options.status_code == 200, options.text
    answer = key.get(options.json()["publicKey"], origin=DEMO_ORIGIN)
    verified = await browser.post(f"{API}/webauthn/authenticate", json={"credential": answer})
    assert verified.status_code == 200, verified.text


async def save_settings(
    browser: httpx.AsyncClient, *, grace: str, methods: str, enforce: bool = True
) -> httpx.Response:
    page = await browser.get("/sites/acme/settings")
    assert page.status_code == 200, page.text
    data = {"csrf_token": csrf_token(page.text), "grace": grace, "methods": methods}
    if enforce:
        data["enforce"] = "on"
    return await browser.post("/sites/acme/settings", data=data)


def text_of(page: str) -> str:
    return re.sub(r"\s+", " ", page)


def listed(page: str, list_id: str) -> list[str]:
    start = page.index(f'<ul id="{list_id}"')
    return re.findall(r"<li>(\S+) ", page[start : page.index("</ul>", start)])


def chosen(page: str, select_id: str) -> str:
    start = page.index(f'<select id="{select_id}"')
    found = re.search(r'<option value="([^"]*)" selected>', page[start:])
    assert found is not None
    return found.group(1)


async def test_the_demo_team_page_names_each_members_kind_of_factor(demo: Demo) -> None:
    async with demo.browser() as owner, demo.browser() as agent:
        await owner_with_2fa(demo, owner)
        assert (await demo_sign_in(agent, AGENT)).status_code == 303
        await demo_passkey(agent, SoftAuthenticator())

        team = await owner.get("/sites/acme/team")

    rows = dict(re.findall(r'<tr data-member="([^"]+)">(.*?)</tr>', team.text, re.DOTALL))
    assert re.search(r'class="factor">passkey<', rows[AGENT])
    assert re.search(r'class="factor">app<', rows[OWNER])


async def test_the_demo_settings_require_passkeys_once_everyone_can(demo: Demo) -> None:
    key = SoftAuthenticator()
    async with demo.browser() as owner, demo.browser() as agent:
        await owner_with_2fa(demo, owner)
        await demo_sign_in(agent, AGENT)
        await turn_on_two_factor(agent, demo.clock)
        page = await owner.get("/sites/acme/settings")
        assert chosen(page.text, "methods") == "any"
        assert 'value="0"' not in page.text  # every member has 2FA: nobody to hold at once

        refused = await save_settings(owner, grace="now", methods="phishing_resistant")

        assert refused.status_code == 409
        assert "2 members of this site have no passkey or security key yet" in refused.text
        assert listed(refused.text, "members-without-passkey") == [AGENT, OWNER]
        assert chosen(refused.text, "methods") == "phishing_resistant"
        assert "At once, even for the members without a passkey" in refused.text
        assert not (await demo.policy()).enforce

        # The owner's own passkey, and a week for the agent to add one.
        await demo_passkey(owner, key)
        await demo_verify(owner, key)
        saved = await save_settings(owner, grace="168", methods="phishing_resistant")
        assert saved.status_code == 303, saved.text
        page = await owner.get("/sites/acme/settings")
        assert "Second factors: Passkeys and security keys only" in text_of(page.text)
        assert chosen(page.text, "methods") == "phishing_resistant"
    policy = await demo.policy()
    assert (policy.methods, policy.methods_deadline) == (
        MethodPolicy.PHISHING_RESISTANT,
        demo.clock() + 168 * HOUR,
    )


async def test_the_demo_asks_the_owner_to_confirm_with_a_passkey_first(demo: Demo) -> None:
    key = SoftAuthenticator()
    async with demo.browser() as owner, demo.browser() as agent:
        await owner_with_2fa(demo, owner)
        await demo_passkey(owner, key)
        await demo_sign_in(agent, AGENT)
        await demo_passkey(agent, SoftAuthenticator())

        refused = await save_settings(owner, grace="now", methods="phishing_resistant")

        assert refused.status_code == 401
        assert "confirm with your passkey or security key, then save again" in refused.text
        assert 'href="/mfa/challenge?next=/sites/acme/settings" id="confirm-again"' in (
            refused.text
        )
        await demo_verify(owner, key)
        saved = await save_settings(owner, grace="now", methods="phishing_resistant")
        assert saved.status_code == 303, saved.text
    assert (await demo.policy()).methods_deadline == demo.clock()


@pytest.mark.parametrize(
    ("grace", "methods", "message"),
    [
        ("168", "sms", "Choose from the list which second factors members may use."),
        ("168", "no_sms\x00", "Choose from the list which second factors members may use."),
        ("keep", "no_sms", "Choose from the list when the new second factors apply"),
    ],
    ids=["unknown", "nul", "unchanged-deadline"],
)
async def test_the_demo_refuses_methods_not_from_the_lists(
    demo: Demo, grace: str, methods: str, message: str
) -> None:
    async with demo.browser() as owner:
        await owner_with_2fa(demo, owner)
        assert (await save_settings(owner, grace="24", methods="any")).status_code == 303
        enforced = await demo.policy()

        refused = await save_settings(owner, grace=grace, methods=methods)

        assert refused.status_code == 400
        assert message in refused.text
    assert await demo.policy() == enforced
