"""Several authenticators per user, through the JSON API: another authenticator app with its own
secret and replay step, the list, renaming and removing (after a recent second factor), and the
last one turning 2FA off under the disable rules."""

from __future__ import annotations

from typing import Any

import httpx

from mfa_guard import EventKind
from mfa_guard.stores.sites import MemorySiteDirectory, Role, SitePolicy
from tests.apps import GuardedApp, build_app, enrol, sign_in

API = "/mfa/api"


async def second_app(
    ga: GuardedApp, client: httpx.AsyncClient, name: str | None = "Tablet"
) -> tuple[str, dict[str, Any]]:
    """Adds another authenticator app from a recently verified session: its secret and the
    confirmation's answer."""
    setup = await client.post(f"{API}/totp/setup", json={})
    assert setup.status_code == 200, setup.text
    secret = str(setup.json()["secret"])
    body: dict[str, Any] = {"code": ga.code(secret)}
    if name is not None:
        body["name"] = name
    confirm = await client.post(f"{API}/totp/confirm", json=body)
    assert confirm.status_code == 200, confirm.text
    return secret, confirm.json()


async def listed(client: httpx.AsyncClient) -> list[dict[str, Any]]:
    response = await client.get(f"{API}/authenticators")
    assert response.status_code == 200, response.text
    found: list[dict[str, Any]] = response.json()["authenticators"]
    return found


def code_of(response: httpx.Response) -> str:
    return str(response.json()["error"]["code"])


async def test_a_second_app_is_added_listed_and_each_app_signs_in() -> None:
    ga = build_app()
    async with ga.client() as client, ga.client() as other:
        await sign_in(client)
        first, codes = await enrol(ga, client)
        assert len(codes) == 10
        ga.clock.advance(30)
        second, answer = await second_app(ga, client, name="  Work   tablet ")
        # No new recovery codes: one set per user, made with the first factor.
        assert answer["recovery_codes"] == []
        assert answer["authenticator"]["name"] == "Work tablet"
        assert answer["authenticator"]["kind"] == "totp"
        apps = await listed(client)
        assert [(a["kind"], a["name"]) for a in apps] == [
            ("totp", "Authenticator app"),
            ("totp", "Work tablet"),
        ]
        assert "secret" not in str(apps).lower()
        status = (await client.get(f"{API}/status")).json()
        assert status["verified"] is True
        assert status["recovery_codes_left"] == 10
        assert [a["id"] for a in status["authenticators"]] == [a["id"] for a in apps]
        assert ga.events.kinds().count(EventKind.AUTHENTICATOR_ADDED) == 1

        # Each app signs in another session, each with its own replay step: the same time
        # step is taken once by each app.
        ga.clock.advance(30)
        for secret in (first, second):
            await other.post("/logout")
            await sign_in(other)
            verified = await other.post(f"{API}/verify", json={"code": ga.code(secret)})
            assert verified.status_code == 200, verified.text
        await other.post("/logout")
        await sign_in(other)
        again = await other.post(f"{API}/verify", json={"code": ga.code(second)})
        assert code_of(again) == "code_already_used"


async def test_adding_an_app_without_a_name_numbers_the_usual_one() -> None:
    ga = build_app()
    async with ga.client() as client:
        await sign_in(client)
        await enrol(ga, client)
        ga.clock.advance(30)
        _, answer = await second_app(ga, client, name=None)
        assert answer["authenticator"]["name"] == "Authenticator app 2"


async def test_adding_renaming_or_removing_needs_a_recent_strong_factor() -> None:
    ga = build_app(recent_mfa_seconds=300)
    async with ga.client() as client:
        await sign_in(client)
        await enrol(ga, client)
        [app] = await listed(client)
        ga.clock.advance(301)
        for method, path, body in [
            ("POST", "/totp/setup", {}),
            ("POST", "/totp/confirm", {"code": "123456"}),
            ("PATCH", f"/authenticators/{app['id']}", {"name": "Phone"}),
            ("DELETE", f"/authenticators/{app['id']}", None),
        ]:
            response = await client.request(method, API + path, json=body)
            assert response.status_code == 401, (path, response.text)
            assert code_of(response) == "mfa_reauthentication_required"
        assert [a["name"] for a in await listed(client)] == ["Authenticator app"]


async def test_a_name_is_checked_and_another_users_authenticator_is_no_authenticator() -> None:
    ga = build_app()
    async with ga.client() as alice, ga.client() as bob:
        await sign_in(alice, "alice@example.test")
        await enrol(ga, alice)
        await sign_in(bob, "bob@example.test")
        await enrol(ga, bob)
        [bobs] = await listed(bob)
        [alices] = await listed(alice)
        for name in ["", "   ", "x" * 65, "bell\u0007"]:
            refused = await alice.patch(f"{API}/authenticators/{alices['id']}", json={"name": name})
            assert refused.status_code == 400, (name, refused.text)
            assert code_of(refused) == "invalid_input"
        for path in [f"/authenticators/{bobs['id']}", "/authenticators/nope"]:
            renamed = await alice.patch(API + path, json={"name": "Mine"})
            assert (renamed.status_code, code_of(renamed)) == (404, "authenticator_not_found")
            removed = await alice.delete(API + path)
            assert (removed.status_code, code_of(removed)) == (404, "authenticator_not_found")
        assert [a["name"] for a in await listed(bob)] == ["Authenticator app"]
        renamed = await alice.patch(f"{API}/authenticators/{alices['id']}", json={"name": "Pixel"})
        assert renamed.status_code == 200
        assert renamed.json()["name"] == "Pixel"
        assert [a["name"] for a in await listed(alice)] == ["Pixel"]


async def test_removing_an_app_ends_its_codes_and_every_other_session() -> None:
    ga = build_app()
    async with ga.client() as client, ga.client() as other:
        await sign_in(client)
        first, _ = await enrol(ga, client)
        ga.clock.advance(30)
        second, answer = await second_app(ga, client)
        ga.clock.advance(30)
        await sign_in(other)
        assert (await other.post(f"{API}/verify", json={"code": ga.code(first)})).status_code == 200
        removed = await client.delete(f"{API}/authenticators/{answer['authenticator']['id']}")
        assert removed.status_code == 200, removed.text
        assert removed.json() == {"enrolled": True}
        # This session stays verified; the other one verifies again.
        assert (await client.get(f"{API}/status")).json()["verified"] is True
        ga.clock.advance(ga.guard.settings.recheck_seconds)
        assert (await other.get("/protected")).status_code == 303
        ga.clock.advance(30)
        refused = await other.post(f"{API}/verify", json={"code": ga.code(second)})
        assert code_of(refused) == "invalid_code"
        assert (await other.post(f"{API}/verify", json={"code": ga.code(first)})).status_code == 200
        assert EventKind.AUTHENTICATOR_REMOVED in ga.events.kinds()


async def test_removing_the_last_authenticator_turns_2fa_off() -> None:
    ga = build_app()
    async with ga.client() as client:
        await sign_in(client)
        await enrol(ga, client)
        [app] = await listed(client)
        removed = await client.delete(f"{API}/authenticators/{app['id']}")
        assert removed.status_code == 200, removed.text
        assert removed.json() == {"enrolled": False}
        status = (await client.get(f"{API}/status")).json()
        assert (status["enrolled"], status["recovery_codes_left"], status["methods"]) == (
            False,
            0,
            [],
        )
        assert EventKind.DISABLED in ga.events.kinds()


async def test_the_last_authenticator_stays_while_a_site_or_the_app_requires_2fa() -> None:
    sites = MemorySiteDirectory()
    await sites.save_site("acme", "Acme")
    await sites.add_member("acme", "solo@example.test", Role.OWNER)
    required_by_site = build_app(sites=sites)
    required_of_everyone = build_app(everyone={"required": True})
    for ga, refusal in [
        (required_by_site, "mfa_enforced_by_site"),
        (required_of_everyone, "mfa_required_for_everyone"),
    ]:
        async with ga.client() as client:
            await sign_in(client)
            first, _ = await enrol(ga, client)
            if ga is required_by_site:
                await sites.set_policy("acme", SitePolicy(enforce=True))
            ga.clock.advance(30)
            _, answer = await second_app(ga, client)
            [app, _] = await listed(client)
            # One of two goes; the last one does not.
            gone = await client.delete(f"{API}/authenticators/{answer['authenticator']['id']}")
            assert gone.status_code == 200, gone.text
            kept = await client.delete(f"{API}/authenticators/{app['id']}")
            assert (kept.status_code, code_of(kept)) == (409, refusal)
            assert [a["id"] for a in await listed(client)] == [app["id"]]
            assert (await client.get(f"{API}/status")).json()["enrolled"] is True
            assert first
