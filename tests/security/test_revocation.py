"""Revocation: "sign out my other sessions" ends the verified state of every other session
within the re-check interval, and the session that asked stays verified; and a phone change in
flight dies with it (found by a security review, told as the attack was made,
on the memory store, SQLite and PostgreSQL: the fix lives in the stores too)."""

from __future__ import annotations

from mfa_guard import MFAStore
from mfa_guard.events import EventKind
from mfa_guard.stores.memory import MemoryStore
from tests.apps import build_app, enrol, sign_in
from tests.scenarios import csrf_of, error_of
from tests.sms_apps import MOBILE, build_sms_app, owner_with_phone, texted_code, verified_by_app

USER = "solo@example.test"
THIEFS_MOBILE = "+447400123456"
RECHECK = 60


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
        done = await laptop.post("/mfa/settings/sessions", data={"csrf_token": csrf_of(page)})
        assert done.status_code == 200
        assert "Your other sessions must enter a code again to continue." in done.text
        ga.clock.advance(RECHECK)
        assert (await phone.get("/protected")).status_code == 303
        assert (await laptop.get("/protected")).status_code == 200
        french = await laptop.get("/mfa/settings", headers={"accept-language": "fr"})
        assert "Déconnecter mes autres sessions" in french.text


# -- a revocation voids a phone change in flight -------------------------------------


async def test_a_revoked_session_cannot_finish_the_phone_change_it_started(
    store: MFAStore,
) -> None:
    app = build_sms_app(store, settings={"recheck_seconds": RECHECK})
    async with app.client() as owner, app.client() as thief:
        secret = await owner_with_phone(app, owner)
        await verified_by_app(app, thief, secret)
        started = await thief.post("/mfa/api/phone", json={"phone": THIEFS_MOBILE})
        assert started.status_code == 202, started.text
        code = texted_code(app.outbox, THIEFS_MOBILE)

        revoked = await owner.post("/mfa/api/sessions/revoke", json={})
        assert revoked.status_code == 200
        # The pending text died with the revocation, in the store itself.
        enrolment = await store.get(USER)
        assert enrolment is not None
        assert enrolment.sms_challenge is None

        # Still within the thief's re-check window: the code is refused all the same.
        refused = await thief.post("/mfa/api/phone/verify", json={"code": code})
        assert error_of(refused) == (401, "mfa_required")
        status = (await thief.get("/mfa/api/status")).json()
        assert (status["verified"], status["phone"]) == (False, "+33 •••• ••78")
        # Signing in by text goes to the owner's number, not the thief's.
        assert (await thief.post("/mfa/api/sms/send", json={})).status_code == 202
        assert app.outbox.last_to(THIEFS_MOBILE) is not None
        assert [m.to for m in app.outbox.messages].count(THIEFS_MOBILE) == 1
        # The owner stays verified, with the number they had.
        assert (await owner.get("/mfa/api/status")).json()["verified"] is True
        enrolment = await store.get(USER)
        assert enrolment is not None
        assert enrolment.phone == MOBILE


async def test_the_settings_pages_refuse_a_revoked_sessions_phone_change(
    store: MFAStore,
) -> None:
    app = build_sms_app(store, settings={"recheck_seconds": RECHECK})
    async with app.client() as owner, app.client() as thief:
        secret = await owner_with_phone(app, owner)
        await verified_by_app(app, thief, secret)
        settings = await thief.get("/mfa/settings")
        sent = await thief.post(
            "/mfa/settings/phone",
            data={"csrf_token": csrf_of(settings), "phone": "+44 7400 123456"},
        )
        assert sent.status_code == 200, sent.text
        code = texted_code(app.outbox, THIEFS_MOBILE)

        page = await owner.get("/mfa/settings")
        assert (
            await owner.post("/mfa/settings/sessions", data={"csrf_token": csrf_of(page)})
        ).status_code == 200

        refused = await thief.post(
            "/mfa/settings/phone/verify", data={"csrf_token": csrf_of(sent), "code": code}
        )
        assert refused.status_code == 303
        assert refused.headers["location"] == "/mfa/challenge?next=/mfa/settings"
        enrolment = await store.get(USER)
        assert enrolment is not None
        assert (enrolment.phone, enrolment.sms_challenge) == (MOBILE, None)


class RevokedMeanwhile(MemoryStore):
    """A store where another session's "sign out my other sessions" lands between a request's
    re-check and its own change (``race`` names the change it lands before)."""

    race = ""

    async def revoke_sessions(self, user_id: str) -> int:
        if self.race == "revoke":
            self.race = ""
            await super().revoke_sessions(user_id)
        return await super().revoke_sessions(user_id)

    async def set_phone(
        self, user_id: str, phone: str, now: float, *, expected_epoch: int | None = None
    ) -> int | None:
        if self.race == "phone":
            self.race = ""
            await self.revoke_sessions(user_id)
        return await super().set_phone(user_id, phone, now, expected_epoch=expected_epoch)


async def test_a_session_keeps_its_verified_state_only_if_nothing_else_moved_the_epoch() -> None:
    store = RevokedMeanwhile()
    app = build_sms_app(store, settings={"recheck_seconds": RECHECK})
    async with app.client() as owner:
        await owner_with_phone(app, owner)
        store.race = "revoke"
        assert (await owner.post("/mfa/api/sessions/revoke", json={})).status_code == 200
        # Another revocation came between: this session is not the only one left verified.
        status = (await owner.get("/mfa/api/status")).json()
        assert status["verified"] is False


async def test_a_phone_change_racing_a_revocation_does_not_land() -> None:
    store = RevokedMeanwhile()
    app = build_sms_app(store, settings={"recheck_seconds": RECHECK})
    async with app.client() as owner, app.client() as thief:
        secret = await owner_with_phone(app, owner)
        await verified_by_app(app, thief, secret)
        assert (
            await thief.post("/mfa/api/phone", json={"phone": THIEFS_MOBILE})
        ).status_code == 202
        # The revocation lands after the thief's re-check and code check, before its write.
        store.race = "phone"
        refused = await thief.post(
            "/mfa/api/phone/verify", json={"code": texted_code(app.outbox, THIEFS_MOBILE)}
        )
        assert error_of(refused) == (409, "conflict")
        enrolment = await store.get(USER)
        assert enrolment is not None
        assert enrolment.phone == MOBILE
        assert (await thief.get("/mfa/api/status")).json()["verified"] is False
