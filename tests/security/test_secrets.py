"""Secrets ("secrets at rest", and where each secret comes from): every secret the kit
draws comes from ``secrets``; the database holds no TOTP key, recovery code or texted code in the
clear; a new encryption key put first opens the old secrets and seals the new ones; a secret no
configured key opens fails closed."""

from __future__ import annotations

import base64
import hashlib
import re
import secrets
import sqlite3
from contextlib import closing
from pathlib import Path

import pytest

from mfa_guard import MemoryStore
from mfa_guard.core import recovery, totp
from mfa_guard.core import sms as sms_codes
from mfa_guard.crypto import SecretBox
from mfa_guard.errors import SecretDecryptionError
from mfa_guard.sms import OutboxSMS
from mfa_guard.stores.sql import SQLStore
from tests.apps import ENCRYPTION_KEY, build_app, enrol, sign_in
from tests.scenarios import USER
from tests.sms_apps import SMS, texted_code

# A second Fernet key, for rotation.
NEW_KEY = "uJ2oAcdOJ9z7HnqXhbS6yGmjrzdbnLh8NUhwJB5x8bc="
MOBILE = "+33612345678"
TYPED_MOBILE = "+33 6 12 34 56 78"


# -- where secrets come from ----------------------------------------------------------------------


def test_every_secret_the_kit_draws_comes_from_the_secrets_module(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """TOTP keys, SMS codes and recovery codes are drawn from ``secrets`` (the operating
    system's CSPRNG), in the sizes the requirements ask for."""
    drawn: list[bytes] = []
    token_bytes = secrets.token_bytes

    def recorded_token_bytes(n: int | None = None) -> bytes:
        value = token_bytes(n)
        drawn.append(value)
        return value

    monkeypatch.setattr(secrets, "token_bytes", recorded_token_bytes)
    key = totp.new_secret()
    assert base64.b32decode(key) == drawn[-1]
    assert len(drawn[-1]) * 8 >= 160

    below: list[int] = []

    def fixed_randbelow(n: int) -> int:
        below.append(n)
        return 4217

    monkeypatch.setattr(secrets, "randbelow", fixed_randbelow)
    assert sms_codes.new_code() == "004217"
    assert below == [10**6]  # six digits, each of the 10**6 codes equally likely

    alphabets: list[str] = []

    def first_choice(alphabet: str) -> str:
        alphabets.append(alphabet)
        return alphabet[0]

    monkeypatch.setattr(secrets, "choice", first_choice)
    codes = recovery.generate()
    assert codes == ["aaaa-aaaa-aaaa-aaaa"] * 10
    # Sixteen draws from 32 symbols per code: 80 bits, over the 64 the requirements ask for.
    assert len(alphabets) == 16 * 10
    assert {len(set(a)) for a in alphabets} == {32}


# -- secrets at rest ------------------------------------------------------------------------------


async def test_the_database_holds_no_totp_key_recovery_code_or_sms_code_in_the_clear(
    tmp_path: Path,
) -> None:
    database = tmp_path / "mfa.db"
    store = SQLStore(f"sqlite+aiosqlite:///{database}")
    outbox = OutboxSMS()
    ga = build_app(store=store, sms_provider=outbox, sms=SMS)
    try:
        async with ga.client() as client:
            await sign_in(client)
            secret, codes = await enrol(ga, client)
            await client.post("/mfa/api/phone", json={"phone": TYPED_MOBILE})
            verified = await client.post(
                "/mfa/api/phone/verify", json={"code": texted_code(outbox)}
            )
            assert verified.status_code == 200, verified.text
            await sign_in(client)
            sent = await client.post("/mfa/api/sms/send", json={})
            assert sent.status_code == 202, sent.text
            sms_code = texted_code(outbox)
        enrolment = await store.get(USER)
        assert enrolment is not None
        [app] = enrolment.apps
        assert app.secret is not None
        # A Fernet token that the configured key opens, not the key itself.
        assert app.secret != secret
        assert SecretBox([ENCRYPTION_KEY]).decrypt(app.secret) == secret
    finally:
        await store.close()

    with closing(sqlite3.connect(database)) as db:
        dump = "\n".join(db.iterdump())
        (code_hash,) = db.execute(
            "SELECT sms_code_hash FROM mfa_guard_enrolments WHERE user_id = ?", (USER,)
        ).fetchone()
    assert "mfa_guard_recovery_codes" in dump
    for clear in (secret, secret.lower(), *codes, *(code.replace("-", "") for code in codes)):
        assert clear not in dump
    # The pending SMS code: a keyed hash of it, bound to the session, not even its plain SHA-256.
    assert re.fullmatch(r"[0-9a-f]{64}", code_hash)
    assert code_hash != hashlib.sha256(sms_code.encode()).hexdigest()
    assert re.search(rf"(?<!\d){sms_code}(?!\d)", code_hash) is None


async def test_a_new_key_put_first_opens_the_old_secrets_and_seals_the_new_ones() -> None:
    store = MemoryStore()
    before = build_app(store=store)
    async with before.client() as client:
        await sign_in(client, "alice@acme.test")
        alice_key, _ = await enrol(before, client)

    rotated = build_app(store=store, encryption_keys=[NEW_KEY, ENCRYPTION_KEY])
    rotated.clock.advance(30)  # alice's confirmation used the first step
    async with rotated.client() as client:
        await sign_in(client, "alice@acme.test")
        verified = await client.post("/mfa/api/verify", json={"code": rotated.code(alice_key)})
        assert verified.status_code == 200, verified.text
        await sign_in(client, "bob@acme.test")
        bob_key, _ = await enrol(rotated, client)
    bob_enrolment = await store.get("bob@acme.test")
    assert bob_enrolment is not None
    [bob] = bob_enrolment.apps
    assert bob.secret is not None
    assert SecretBox([NEW_KEY]).decrypt(bob.secret) == bob_key
    with pytest.raises(SecretDecryptionError):
        SecretBox([ENCRYPTION_KEY]).decrypt(bob.secret)

    # What a re-encryption pass would do to alice's secret: her old token, sealed anew.
    alice_enrolment = await store.get("alice@acme.test")
    assert alice_enrolment is not None
    [alice] = alice_enrolment.apps
    assert alice.secret is not None
    resealed = SecretBox([NEW_KEY, ENCRYPTION_KEY]).rotate(alice.secret)
    assert SecretBox([NEW_KEY]).decrypt(resealed) == alice_key


async def test_a_secret_no_configured_key_opens_fails_closed_never_open() -> None:
    store = MemoryStore()
    before = build_app(store=store)
    async with before.client() as client:
        await sign_in(client)
        key, _ = await enrol(before, client)
    # The old key retired before the secrets were re-encrypted.
    after = build_app(store=store, encryption_keys=[NEW_KEY])
    after.clock.advance(30)
    async with after.client() as client:
        await sign_in(client)
        response = await client.post("/mfa/api/verify", json={"code": after.code(key)})
        assert response.status_code == 503, response.text
        assert response.json()["error"]["code"] == "service_unavailable"
        assert "Traceback" not in response.text
        # Still enrolled, still challenged: never "2FA off".
        assert (await client.get("/protected")).status_code == 303
        assert (await client.get("/mfa/api/status")).json()["enrolled"] is True
