"""Revocation: "sign out my other sessions" ends the verified state of every other session
within the re-check interval, and the session that asked stays verified."""

from __future__ import annotations

import re

from mfa_guard.events import EventKind
from tests.apps import build_app, enrol, sign_in

USER = "solo@example.test"
RECHECK = 60
CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')


async def test_other_sessions_must_verify_again_within_the_recheck_interval() -> None:
    ga = build_app(recheck_seconds=RECHECK)
    async with ga.client() as laptop, ga.client() as phone:
        await sign_in(laptop, USER)
        secret, _ = await enrol(ga, laptop)
        await sign_in(phone, USER)
        ga.clock.advance(30)
        assert (await phone.post("/mfa/api/verify", json={"code": ga.code(secret)})).is_success
        assert (await phone.get("/protected")).status_code == 200
        checked_at = ga.clock()

        ga.clock.advance(5)
        revoked = await laptop.post("/mfa/api/sessions/revoke", json={})
        assert (revoked.status_code, revoked.json()) == (200, {"other_sessions_revoked": True})
        # The phone's marker is trusted until its re-check is due, not a second longer.
        ga.clock.now = checked_at + RECHECK - 1
        assert (await phone.get("/protected")).status_code == 200
        ga.clock.now = checked_at + RECHECK
        challenged = await phone.get("/protected")
        assert challenged.headers["location"] == "/mfa/challenge?next=/protected"
        # The laptop asked: it stays verified, through its own re-checks too.
        ga.clock.advance(RECHECK)
        assert (await laptop.get("/protected")).status_code == 200
        assert (await laptop.get("/mfa/api/status")).json()["verified"] is True
    assert EventKind.SESSIONS_REVOKED in ga.events.kinds()
    enrolment = await ga.store.get(USER)
    assert enrolment is not None
    assert enrolment.enrolled


async def test_revoking_needs_a_verified_session_of_an_enrolled_user() -> None:
    ga = build_app()
    async with ga.client() as client:
        anonymous = await client.post("/mfa/api/sessions/revoke", json={})
        assert anonymous.status_code == 401
        await sign_in(client, USER)
        not_enrolled = await client.post("/mfa/api/sessions/revoke", json={})
        assert (not_enrolled.status_code, not_enrolled.json()["error"]["code"]) == (
            409,
            "not_enrolled",
        )
        await enrol(ga, client)
        await sign_in(client, USER)  # a new session, not verified yet
        refused = await client.post("/mfa/api/sessions/revoke", json={})
        assert (refused.status_code, refused.json()["error"]["code"]) == (401, "mfa_required")
        cross_site = await client.post(
            "/mfa/api/sessions/revoke", json={}, headers={"origin": "https://evil.example"}
        )
        assert cross_site.status_code == 403
    assert EventKind.SESSIONS_REVOKED not in ga.events.kinds()


async def test_the_settings_page_signs_out_the_other_sessions() -> None:
    ga = build_app(recheck_seconds=RECHECK)
    async with ga.client() as laptop, ga.client() as phone:
        await sign_in(laptop, USER)
        secret, _ = await enrol(ga, laptop)
        await sign_in(phone, USER)
        ga.clock.advance(30)
        assert (await phone.post("/mfa/api/verify", json={"code": ga.code(secret)})).is_success
        page = await laptop.get("/mfa/settings")
        token = CSRF.search(page.text)
        assert token is not None
        done = await laptop.post("/mfa/settings/sessions", data={"csrf_token": token.group(1)})
        assert done.status_code == 200
        assert "Your other sessions must enter a code again to continue." in done.text
        ga.clock.advance(RECHECK)
        assert (await phone.get("/protected")).status_code == 303
        assert (await laptop.get("/protected")).status_code == 200
        french = await laptop.get("/mfa/settings", headers={"accept-language": "fr"})
        assert "Déconnecter mes autres sessions" in french.text
