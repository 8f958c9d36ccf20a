"""Findings 1, 2 and 4 of the security review (issue 15), told as the attacks were made, over
HTTP with two clients: a revoked session finishing a phone change, a pending authenticator key
read by another session, and a text-message code turning 2FA off.

The stories run on the memory store, SQLite and PostgreSQL: the fixes live in the stores too."""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest
from cryptography.fernet import Fernet
from playwright.sync_api import expect

from mfa_guard import MFAStore
from mfa_guard.cli import main
from mfa_guard.stores.memory import MemoryStore
from mfa_guard.stores.sql import SQLStore
from mfa_guard.testing.contract import RECOVERY
from tests.apps import enrol, sign_in
from tests.chromium import TIMEOUT_MS, launched, screenshot
from tests.databases import empty_postgres_store, fresh_schema, sqlite_url
from tests.live import served
from tests.sms_apps import SMSApp, build_sms_app

USER = "solo@example.test"
MOBILE = "+33612345678"
THIEFS_MOBILE = "+447400123456"
RECHECK = 60
CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')
TEXTED = re.compile(r"\b(\d{6}) is your ")


@pytest.fixture(scope="module")
def postgres_schema() -> Iterator[str]:
    with fresh_schema("mfa_guard_redteam") as schema:
        yield schema


@pytest.fixture(params=["memory", "sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """Which store: the memory store, a SQLite file, or a PostgreSQL schema (made here, outside
    the event loop)."""
    if request.param == "sqlite":
        return sqlite_url(tmp_path)
    if request.param == "postgresql":
        schema: str = request.getfixturevalue("postgres_schema")
        return f"postgresql:{schema}"
    return "memory"


@pytest.fixture
async def store(backend: str) -> AsyncIterator[MFAStore]:
    if backend == "memory":
        yield MemoryStore()
        return
    sql = (
        await empty_postgres_store(backend.removeprefix("postgresql:"))
        if backend.startswith("postgresql:")
        else SQLStore(backend)
    )
    yield sql
    await sql.close()


def texted_to(app: SMSApp, phone: str) -> str:
    message = app.outbox.last_to(phone)
    assert message is not None, f"a text went to {phone}"
    found = TEXTED.search(message.text)
    assert found is not None, message.text
    return found.group(1)


def csrf_of(page: httpx.Response) -> str:
    found = CSRF.search(page.text)
    assert found is not None, "the page carries a form"
    return found.group(1)


def error_of(response: httpx.Response) -> tuple[int, str]:
    return response.status_code, response.json()["error"]["code"]


async def owner_with_phone(app: SMSApp, owner: httpx.AsyncClient) -> str:
    """The owner enrols, verifies their mobile number; returns the TOTP secret."""
    await sign_in(owner, USER)
    secret, _ = await enrol(app.ga, owner)
    assert (await owner.post("/mfa/api/phone", json={"phone": MOBILE})).status_code == 202
    verified = await owner.post("/mfa/api/phone/verify", json={"code": texted_to(app, MOBILE)})
    assert verified.status_code == 200, verified.text
    return secret


async def verified_by_app(app: SMSApp, client: httpx.AsyncClient, secret: str) -> None:
    """Signs ``client`` in as the owner and through the challenge with the next TOTP code."""
    await sign_in(client, USER)
    app.ga.clock.advance(30)
    verified = await client.post("/mfa/api/verify", json={"code": app.ga.code(secret)})
    assert verified.status_code == 200, verified.text


async def verified_by_text(app: SMSApp, client: httpx.AsyncClient) -> None:
    """Signs ``client`` in as the owner and through the challenge with a texted code."""
    await sign_in(client, USER)
    assert (await client.post("/mfa/api/sms/send", json={})).status_code == 202
    verified = await client.post(
        "/mfa/api/verify", json={"method": "sms", "code": texted_to(app, MOBILE)}
    )
    assert verified.status_code == 200, verified.text


# -- 1. Revocation voids a phone change in flight -------------------------------------------------


async def test_a_revoked_session_cannot_finish_the_phone_change_it_started(
    store: MFAStore,
) -> None:
    app = build_sms_app(store, settings={"recheck_seconds": RECHECK})
    async with app.client() as owner, app.client() as thief:
        secret = await owner_with_phone(app, owner)
        await verified_by_app(app, thief, secret)
        started = await thief.post("/mfa/api/phone", json={"phone": THIEFS_MOBILE})
        assert started.status_code == 202, started.text
        code = texted_to(app, THIEFS_MOBILE)

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
        code = texted_to(app, THIEFS_MOBILE)

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
            "/mfa/api/phone/verify", json={"code": texted_to(app, THIEFS_MOBILE)}
        )
        assert error_of(refused) == (409, "conflict")
        enrolment = await store.get(USER)
        assert enrolment is not None
        assert enrolment.phone == MOBILE
        assert (await thief.get("/mfa/api/status")).json()["verified"] is False


# -- 2. A pending authenticator key belongs to the session that asked for it ----------------------


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


# -- 4. A text-message code signs in; it changes no factor ----------------------------------------


async def test_a_session_verified_by_text_cannot_mint_codes_turn_2fa_off_or_move_the_phone(
    store: MFAStore,
) -> None:
    app = build_sms_app(store)
    async with app.client() as owner, app.client() as holder:
        secret = await owner_with_phone(app, owner)
        before = await store.get(USER)
        assert before is not None
        assert before.recovery is not None
        await verified_by_text(app, holder)

        minted = await holder.post("/mfa/api/recovery-codes", json={})
        assert error_of(minted) == (403, "strong_factor_required")
        assert (await holder.post("/mfa/api/sms/send", json={})).status_code == 202
        disabled = await holder.post(
            "/mfa/api/disable", json={"method": "sms", "code": texted_to(app, MOBILE)}
        )
        assert error_of(disabled) == (403, "strong_factor_required")
        moved = await holder.post("/mfa/api/phone", json={"phone": THIEFS_MOBILE})
        assert error_of(moved) == (403, "strong_factor_required")
        assert app.outbox.last_to(THIEFS_MOBILE) is None

        after = await store.get(USER)
        assert after is not None
        assert after.recovery is not None
        assert after.enrolled
        assert set(after.recovery.hashes) == set(before.recovery.hashes)
        assert after.phone == MOBILE

        # The authenticator app's code is strong enough, in the same session.
        app.ga.clock.advance(30)
        stepped_up = await holder.post("/mfa/api/verify", json={"code": app.ga.code(secret)})
        assert stepped_up.status_code == 200
        assert (await holder.post("/mfa/api/recovery-codes", json={})).status_code == 200


async def test_the_settings_pages_ask_a_session_verified_by_text_for_a_stronger_code() -> None:
    app = build_sms_app()
    async with app.client() as owner, app.client() as holder:
        await owner_with_phone(app, owner)
        await verified_by_text(app, holder)
        before = await app.ga.store.get(USER)
        assert before is not None
        assert before.recovery is not None
        settings = await holder.get("/mfa/settings")
        assert settings.status_code == 200

        minted = await holder.post(
            "/mfa/settings/recovery-codes", data={"csrf_token": csrf_of(settings)}
        )
        assert minted.status_code == 303
        assert minted.headers["location"] == "/mfa/challenge?next=/mfa/settings&strong=1"
        challenge = await holder.get(minted.headers["location"])
        assert "a text-message code is not enough" in challenge.text
        assert 'action="/mfa/sms"' not in challenge.text
        assert 'name="method" value="sms"' not in challenge.text

        moved = await holder.post(
            "/mfa/settings/phone",
            data={"csrf_token": csrf_of(settings), "phone": "+44 7400 123456"},
        )
        assert moved.headers["location"] == "/mfa/challenge?next=/mfa/settings&strong=1"
        assert (await holder.post("/mfa/api/sms/send", json={})).status_code == 202
        disabled = await holder.post(
            "/mfa/settings/disable",
            data={
                "csrf_token": csrf_of(settings),
                "method": "sms",
                "code": texted_to(app, MOBILE),
            },
        )
        assert disabled.status_code == 403
        assert "authenticator app" in disabled.text
        after = await app.ga.store.get(USER)
        assert after is not None
        assert after.recovery is not None
        assert after.enrolled
        assert after.phone == MOBILE
        assert set(after.recovery.hashes) == set(before.recovery.hashes)
        assert app.outbox.last_to(THIEFS_MOBILE) is None


async def test_turning_2fa_off_forgets_the_phone(store: MFAStore) -> None:
    app = build_sms_app(store)
    async with app.client() as owner:
        secret = await owner_with_phone(app, owner)
        app.ga.clock.advance(30)
        off = await owner.post("/mfa/api/disable", json={"code": app.ga.code(secret)})
        assert off.status_code == 200, off.text
        status = (await owner.get("/mfa/api/status")).json()
        assert (status["phone"], status["phone_verified"]) == (None, False)

        # Enrolled again, the old number does not come back with it.
        app.ga.clock.advance(30)
        await enrol(app.ga, owner)
        status = (await owner.get("/mfa/api/status")).json()
        assert status["methods"] == ["totp", "recovery"]
        assert error_of(await owner.post("/mfa/api/sms/send", json={})) == (
            409,
            "no_verified_phone",
        )


async def test_the_disable_form_forgets_the_phone() -> None:
    app = build_sms_app()
    async with app.client() as owner:
        secret = await owner_with_phone(app, owner)
        settings = await owner.get("/mfa/settings")
        assert 'id="verified-phone"' in settings.text
        app.ga.clock.advance(30)
        off = await owner.post(
            "/mfa/settings/disable",
            data={"csrf_token": csrf_of(settings), "method": "totp", "code": app.ga.code(secret)},
        )
        assert off.status_code == 200, off.text
        assert "Two-factor authentication is off." in off.text
        assert 'id="verified-phone"' not in off.text


@pytest.fixture
def app_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MFA_GUARD_ENCRYPTION_KEYS", Fernet.generate_key().decode())
    monkeypatch.delenv("MFA_GUARD_STORAGE_URI", raising=False)
    monkeypatch.delenv("MFA_GUARD_DEBUG", raising=False)


@pytest.mark.usefixtures("app_environment")
def test_an_admin_reset_forgets_the_phone(tmp_path: Path) -> None:
    url = sqlite_url(tmp_path)

    async def seed() -> None:
        store = SQLStore(url)
        try:
            await store.begin_enrolment(USER, "token")
            assert await store.confirm_enrolment(USER, "token", step=1, recovery=RECOVERY, now=1.0)
            await store.set_phone(USER, MOBILE, 2.0)
        finally:
            await store.close()

    async def phone_after() -> tuple[str | None, float | None, bool]:
        store = SQLStore(url)
        try:
            enrolment = await store.get(USER)
            assert enrolment is not None
            return enrolment.phone, enrolment.phone_verified_at, enrolment.enrolled
        finally:
            await store.close()

    asyncio.run(seed())
    assert main(["reset-user", USER, "--database-url", url]) == 0
    assert asyncio.run(phone_after()) == (None, None, False)


# -- What the person sees -------------------------------------------------------------------------


def test_the_challenge_asking_for_a_stronger_code_reads_well_on_a_phone_and_a_desktop(
    tmp_path: Path,
) -> None:
    """A session verified by text asks for new recovery codes: the challenge it is sent to says
    why, offers the app's code and a recovery code, and no text option; at 390 and 1280 px."""
    app = build_sms_app()
    clock = app.ga.clock
    with served(app.ga.app) as url, launched() as browser:
        owner = browser.new_context(base_url=url)
        assert owner.request.post("/login", form={"user": USER}).ok
        secret = owner.request.post("/mfa/api/totp/setup", data={}).json()["secret"]
        assert owner.request.post("/mfa/api/totp/confirm", data={"code": app.ga.code(secret)}).ok
        assert owner.request.post("/mfa/api/phone", data={"phone": MOBILE}).status == 202
        assert owner.request.post("/mfa/api/phone/verify", data={"code": texted_to(app, MOBILE)}).ok
        clock.advance(30)
        for width in (390, 1280):
            holder = browser.new_context(base_url=url, viewport={"width": width, "height": 900})
            holder.set_default_timeout(TIMEOUT_MS)
            assert holder.request.post("/login", form={"user": USER}).ok
            assert holder.request.post("/mfa/api/sms/send", data={}).status == 202
            assert holder.request.post(
                "/mfa/api/verify", data={"method": "sms", "code": texted_to(app, MOBILE)}
            ).ok
            page = holder.new_page()
            page.goto("/mfa/settings")
            page.get_by_role("button", name="Generate new recovery codes").click()
            expect(page).to_have_url(re.compile(r"/mfa/challenge\?next=/mfa/settings&strong=1$"))
            notice = page.get_by_text("a text-message code is not enough")
            expect(notice).to_be_visible()
            expect(page.get_by_label("Authentication code")).to_be_visible()
            expect(page.get_by_text("Lost your device? Use a recovery code")).to_be_visible()
            expect(page.get_by_role("button", name="Text me a code")).to_have_count(0)
            # Nothing wider than the screen: no sideways scrolling on a phone.
            assert page.evaluate("document.documentElement.scrollWidth") <= width
            box = notice.bounding_box()
            assert box is not None
            assert box["x"] >= 0
            assert box["x"] + box["width"] <= width
            screenshot(page, tmp_path, f"strong-challenge-{width}.png")
            holder.close()
        owner.close()
