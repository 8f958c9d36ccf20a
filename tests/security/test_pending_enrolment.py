"""A pending authenticator key belongs to the session that asked for it (found by a security
review), told as the attack was made over HTTP with two clients: another session of the
user is not shown the key and cannot confirm it, and the newest set-up replaces an older one.

The stories run on the memory store, SQLite and PostgreSQL: the fixes live in the stores too."""

from __future__ import annotations

from mfa_guard import MFAStore
from tests.apps import sign_in
from tests.scenarios import USER, csrf_of, error_of
from tests.sms_apps import build_sms_app

RECHECK = 60


async def test_a_pending_key_is_shown_only_to_the_session_that_began_the_set_up(
    store: MFAStore,
) -> None:
    app = build_sms_app(store, settings={"recheck_seconds": RECHECK})
    async with app.client() as victim, app.client() as intruder:
        await sign_in(victim, USER)
        await sign_in(intruder, USER)  # the password only
        setup = await victim.post("/mfa/api/totp/setup", json={})
        assert setup.status_code == 200
        secret = setup.json()["secret"]
        grouped = setup.json()["secret_grouped"]

        page = await intruder.get("/mfa/enrol")
        assert page.status_code == 200
        assert secret not in page.text
        assert grouped not in page.text
        assert 'id="manual-key"' not in page.text
        assert (await intruder.get("/mfa/api/status")).json()["enrolment_pending"] is False
        assert (await victim.get("/mfa/api/status")).json()["enrolment_pending"] is True
        # The victim's code does not confirm anything from the intruder's session either.
        stolen = await intruder.post("/mfa/api/totp/confirm", json={"code": app.ga.code(secret)})
        assert error_of(stolen) == (409, "no_pending_enrolment")

        confirmed = await victim.post("/mfa/api/totp/confirm", json={"code": app.ga.code(secret)})
        assert confirmed.status_code == 200, confirmed.text
        app.ga.clock.advance(RECHECK)  # the intruder's next re-check: challenged, no key to pass
        assert (await intruder.get("/protected")).status_code == 303
        assert (await victim.get("/protected")).status_code == 200
        victims_page = await victim.get("/mfa/enrol")
        assert victims_page.status_code == 303


async def test_the_newest_set_up_wins_and_the_older_one_fails_cleanly(store: MFAStore) -> None:
    app = build_sms_app(store)
    async with app.client() as first, app.client() as second:
        await sign_in(first, USER)
        await sign_in(second, USER)
        page = await first.get("/mfa/enrol")
        begun = await first.post(
            "/mfa/enrol", data={"csrf_token": csrf_of(page), "next": "/protected"}
        )
        assert 'id="manual-key"' in begun.text
        first_secret = (await first.post("/mfa/api/totp/setup", json={})).json()["secret"]

        second_secret = (await second.post("/mfa/api/totp/setup", json={})).json()["secret"]
        assert second_secret != first_secret

        late = await first.post("/mfa/api/totp/confirm", json={"code": app.ga.code(first_secret)})
        assert error_of(late) == (409, "no_pending_enrolment")
        assert "newer set-up" in late.json()["error"]["message"]
        page = await first.get("/mfa/enrol")
        assert first_secret not in page.text
        assert second_secret not in page.text
        form = await first.post(
            "/mfa/enrol/confirm",
            data={"csrf_token": csrf_of(page), "code": app.ga.code(first_secret)},
        )
        assert form.status_code == 409
        assert "newer set-up" in form.text

        confirmed = await second.post(
            "/mfa/api/totp/confirm", json={"code": app.ga.code(second_secret)}
        )
        assert confirmed.status_code == 200, confirmed.text
