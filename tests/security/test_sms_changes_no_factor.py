"""A text-message code signs in; it changes no factor (found by a security review), told as the
attack was made over HTTP: a session verified by text mints no recovery codes, moves no phone
and cannot turn 2FA off; turning 2FA off and an admin reset forget the number.

The stories run on the memory store, SQLite and PostgreSQL: the fixes live in the stores too."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from cryptography.fernet import Fernet

from mfa_guard import MFAStore
from mfa_guard.cli import main
from mfa_guard.stores.sql import SQLStore
from mfa_guard.testing.contract import RECOVERY
from tests.apps import enrol, store_app
from tests.databases import sqlite_url
from tests.scenarios import USER, csrf_of, error_of
from tests.sms_apps import MOBILE, build_sms_app, owner_with_phone, texted_code, verified_by_text

THIEFS_MOBILE = "+447400123456"


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
            "/mfa/api/disable", json={"method": "sms", "code": texted_code(app.outbox, MOBILE)}
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
                "code": texted_code(app.outbox, MOBILE),
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
            assert await store_app(store, USER, "token", step=1, recovery=RECOVERY, now=1.0)
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
