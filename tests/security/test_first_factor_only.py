"""What a session with the password only may read (found by a security review,
and docs/security.md checklist 10): its own status and the API's document, nothing else; the members
list of a site it owns neither."""

from __future__ import annotations

import httpx

from mfa_guard.stores.events import MemoryEventStore
from mfa_guard.stores.sites import MemorySiteDirectory, Role
from tests.apps import GuardedApp, build_app, enrol, sign_in

OWNER = "owner@acme.test"
# The only reads of the JSON API a session that has not completed its second factor may make:
# its own status, and the public document of the API.
READABLE_BEFORE_2FA = {"/mfa/api/status", "/mfa/api/openapi.json"}


async def acme_guard() -> GuardedApp:
    directory = MemorySiteDirectory()
    await directory.save_site("acme", "Acme")
    await directory.add_member("acme", OWNER, Role.OWNER)
    await directory.add_member("acme", "agent@acme.test", Role.OPERATOR)
    return build_app(
        sites=directory, trusted_devices={"enabled": True}, event_store=MemoryEventStore()
    )


async def api_reads(client: httpx.AsyncClient) -> list[str]:
    """Every GET of the JSON API, from its OpenAPI document (which tests/web/test_openapi.py keeps
    true to the routes), a path parameter filled in."""
    document = (await client.get("/mfa/api/openapi.json")).json()
    return [
        path.replace("{site}", "acme") for path, item in document["paths"].items() if "get" in item
    ]


async def test_an_owner_with_the_password_only_cannot_read_the_members() -> None:
    """The red team's finding: signed in with the password only, an enrolled owner's session
    read every member's e-mail, role, 2FA and phone state."""
    ga = await acme_guard()
    async with ga.client() as owner:
        await sign_in(owner, OWNER)
        secret, _ = await enrol(ga, owner)
        await sign_in(owner, OWNER)  # a new sign-in: the password only
        members = await owner.get("/mfa/api/sites/acme/members")
        assert members.status_code == 401, members.text
        assert members.json()["error"]["code"] == "mfa_required"
        assert "agent@acme.test" not in members.text

        ga.clock.advance(30)
        assert (await verify_code(owner, ga.code(secret))).status_code == 200
        members = await owner.get("/mfa/api/sites/acme/members")
        assert members.status_code == 200, members.text
        assert sorted(m["user_id"] for m in members.json()["members"]) == [
            "agent@acme.test",
            OWNER,
        ]


async def test_every_read_beyond_its_own_status_needs_the_second_factor() -> None:
    """Every GET of the API, enumerated from the routes: an enrolled session that has not
    completed its second factor gets 401 mfa_required and no data, but for its own status
    and the API's document; once verified, every read answers."""
    ga = await acme_guard()
    async with ga.client() as owner:
        reads = await api_reads(owner)
        assert {
            "/mfa/api/sites",
            "/mfa/api/sites/acme/members",
            "/mfa/api/sites/acme/events",
            "/mfa/api/devices",
        } <= set(reads)
        await sign_in(owner, OWNER)
        secret, _ = await enrol(ga, owner)
        await sign_in(owner, OWNER)
        for path in reads:
            response = await owner.get(path)
            if path in READABLE_BEFORE_2FA:
                assert response.status_code == 200, path
            else:
                assert response.status_code == 401, (path, response.text)
                assert response.json() == {
                    "error": {
                        "code": "mfa_required",
                        "message": "Complete two-factor authentication first.",
                    }
                }
        ga.clock.advance(30)
        assert (await verify_code(owner, ga.code(secret))).status_code == 200
        for path in reads:
            assert (await owner.get(path)).status_code == 200, path


async def verify_code(client: httpx.AsyncClient, code: str) -> httpx.Response:
    return await client.post("/mfa/api/verify", json={"method": "totp", "code": code})
