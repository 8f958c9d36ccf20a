"""SECURITY.md lines no other test proved in full: the failure cap, where secrets come from, what
an authenticator app on its defaults does, what the database holds, key rotation, the session
nonce, forged cookies, client-supplied time, and failures as audit events that leak nothing.
Each test names the line it proves in docs/security.md's table."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import logging
import re
import secrets
import sqlite3
from collections.abc import Callable
from contextlib import closing
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from itsdangerous import TimestampSigner
from pydantic import ValidationError

from mfa_guard import MemoryStore
from mfa_guard.core import recovery, totp
from mfa_guard.core import sms as sms_codes
from mfa_guard.core.marker import Marker
from mfa_guard.crypto import SecretBox
from mfa_guard.errors import SecretDecryptionError
from mfa_guard.events import EventKind
from mfa_guard.session import SESSION_KEY
from mfa_guard.sms import OutboxSMS
from mfa_guard.stores.sql import SQLStore
from tests.apps import (
    ENCRYPTION_KEY,
    SESSION_SECRET,
    GuardedApp,
    build_app,
    enrol,
    settings_for,
    sign_in,
)
from tests.scenarios import USER, State, arrive, page_token

# A second Fernet key, for rotation.
NEW_KEY = "uJ2oAcdOJ9z7HnqXhbS6yGmjrzdbnLh8NUhwJB5x8bc="
MOBILE = "+33612345678"
TYPED_MOBILE = "+33 6 12 34 56 78"
SMS = {
    "enabled": True,
    "provider": "outbox",
    "allowed_regions": ["FR", "GB"],
    # The resend cooldown runs on the real clock of `limits`: widened so a test never waits.
    "resend_cooldown": "100/second",
}
TEXTED_CODE = re.compile(r"\b(\d{6}) is your ")


def wrong_code(ga: GuardedApp, secret: str) -> str:
    """Six digits that no step inside the drift window accepts."""
    valid = {ga.code(secret, steps) for steps in (-1, 0, 1)}
    return next(code for n in range(10) if (code := str(n) * 6) not in valid)


def last_texted_code(outbox: OutboxSMS) -> str:
    assert outbox.messages, "a text was sent"
    match = TEXTED_CODE.search(outbox.messages[-1].text)
    assert match is not None, outbox.messages[-1].text
    return match.group(1)


def session_of(client: httpx.AsyncClient) -> dict[str, Any]:
    """The session as the client holds it: Starlette signs the cookie, it does not encrypt it."""
    payload = TimestampSigner(SESSION_SECRET).unsign(client.cookies["session"].encode())
    data: dict[str, Any] = json.loads(base64.b64decode(payload))
    return data


def marker_of(ga: GuardedApp, client: httpx.AsyncClient, user: str = USER) -> Marker:
    """The session's marker, read as the kit reads it (whatever its stored shape)."""
    marker = Marker.load(session_of(client).get(SESSION_KEY), ga.guard.gate.subject(user))
    assert marker is not None
    return marker


# -- throttling: at most 100 failures -----------------------------------------------------------


async def test_after_ninety_failures_in_a_row_even_the_right_code_waits_for_another_path() -> None:
    # By default the codes' path locks after 90 failures in a row and the recovery codes' after
    # 10: at most 100 on the account (NIST SP 800-63B), whatever the windows allow.
    ga = build_app(rate_limits={"failures": "100/day"})
    async with ga.client() as client:
        secret = await arrive(ga, client, State.CHALLENGED)
        wrong = wrong_code(ga, secret)
        for _ in range(90):
            refused = await client.post("/mfa/api/verify", json={"code": wrong})
            assert refused.status_code == 422, refused.text
        locked = await client.post("/mfa/api/verify", json={"code": ga.code(secret)})
    assert locked.status_code == 429, locked.text
    assert locked.json()["error"]["code"] == "locked_after_failures"
    # Not a window that reopens in a day: only a success on another path (or an admin) does.
    assert int(locked.headers["retry-after"]) > 300 * 86_400
    assert (await ga.store.get(USER)) is not None
    assert EventKind.LOCKED_OUT in ga.events.kinds()


@pytest.mark.parametrize(
    ("failures", "accepted"),
    [
        ("100/day", True),
        ("5/minute;20/hour;100/day", True),
        ("101/day", False),
        ("5/minute;101/year", False),
    ],
)
def test_no_window_of_the_failure_limit_may_allow_more_than_a_hundred(
    failures: str, accepted: bool
) -> None:
    if accepted:
        assert settings_for(rate_limits={"failures": failures}).rate_limits.failures == failures
    else:
        with pytest.raises(ValidationError, match="at most 100"):
            settings_for(rate_limits={"failures": failures})


@pytest.mark.parametrize("failures", ["100/second", "10/minute"])
def test_a_failure_limit_that_lets_more_than_a_hundred_attempts_a_day_through_is_refused(
    failures: str,
) -> None:
    with pytest.raises(ValidationError):
        settings_for(rate_limits={"failures": failures})


# -- where secrets come from ----------------------------------------------------------------------


def test_every_secret_the_kit_draws_comes_from_the_secrets_module(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """TOTP keys, SMS codes and recovery codes are drawn from ``secrets`` (the operating
    system's CSPRNG), in the sizes SECURITY.md asks for."""
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
    # Sixteen draws from 32 symbols per code: 80 bits, over the 64 SECURITY.md asks for.
    assert len(alphabets) == 16 * 10
    assert {len(set(a)) for a in alphabets} == {32}


# -- TOTP as every authenticator app does it ------------------------------------------------------


def rfc6238_sha1_6_digits_30_seconds(base32_key: str, now: float) -> str:
    """RFC 6238 with the Key Uri Format defaults, written out here, independent of the kit."""
    key = base64.b32decode(base32_key)
    mac = hmac.new(key, int(now // 30).to_bytes(8, "big"), hashlib.sha1).digest()
    offset = mac[-1] & 0x0F
    value = (int.from_bytes(mac[offset : offset + 4], "big") & 0x7FFFFFFF) % 10**6
    return f"{value:06d}"


async def test_an_authenticator_app_on_its_defaults_enrols_and_signs_in(
    guarded: GuardedApp, client: httpx.AsyncClient
) -> None:
    await sign_in(client)
    setup = (await client.post("/mfa/api/totp/setup", json={})).json()
    query = parse_qs(urlsplit(setup["otpauth_uri"]).query)
    # Absent parameters mean SHA1, 6 digits and 30 s to an app; present ones must say so.
    assert query.get("algorithm", ["SHA1"]) == ["SHA1"]
    assert query.get("digits", ["6"]) == ["6"]
    assert query.get("period", ["30"]) == ["30"]
    key = query["secret"][0]
    confirmed = await client.post(
        "/mfa/api/totp/confirm",
        json={"code": rfc6238_sha1_6_digits_30_seconds(key, guarded.clock())},
    )
    assert confirmed.status_code == 200, confirmed.text
    await sign_in(client)
    guarded.clock.advance(30)
    verified = await client.post(
        "/mfa/api/verify", json={"code": rfc6238_sha1_6_digits_30_seconds(key, guarded.clock())}
    )
    assert verified.status_code == 200, verified.text


@pytest.mark.parametrize(
    ("send", "accepted"),
    [
        pytest.param({"headers": {"date": "Thu, 01 Jan 1970 00:00:00 GMT"}}, False, id="date"),
        pytest.param({"params": {"time": "0", "now": "0", "t": "0"}}, False, id="query"),
        pytest.param({"headers": {"x-client-time": "0"}}, False, id="header"),
        pytest.param({"headers": {"date": "Thu, 01 Jan 1970 00:00:00 GMT"}}, True, id="date-ok"),
        pytest.param({"params": {"time": "0"}, "json_time": 0}, True, id="query-and-body-ok"),
    ],
)
async def test_no_client_supplied_time_moves_the_servers_clock(
    guarded: GuardedApp, client: httpx.AsyncClient, send: dict[str, Any], accepted: bool
) -> None:
    """A code of ten steps ago stays refused and the current one accepted, whatever time the
    client claims in a header, the query or the body."""
    secret = await arrive(guarded, client, State.CHALLENGED)
    code = guarded.code(secret) if accepted else guarded.code(secret, steps=-10)
    body: dict[str, Any] = {"code": code}
    if "json_time" in send:
        body |= {"time": send["json_time"], "timestamp": send["json_time"]}
    response = await client.post(
        "/mfa/api/verify",
        json=body,
        headers=send.get("headers", {}),
        params=send.get("params", {}),
    )
    assert response.status_code == (200 if accepted else 422), response.text


# -- SMS: the restricted defaults, and one number however it is spelt ----------------------------


def test_sms_is_off_by_default_and_a_code_lives_ten_minutes_at_most() -> None:
    settings = settings_for()
    assert settings.sms.enabled is False
    assert settings.sms.code_ttl_seconds == 600
    assert settings_for(sms={"code_ttl_seconds": 60}).sms.code_ttl_seconds == 60
    for too_long in (601, 3600):
        with pytest.raises(ValidationError, match="code_ttl_seconds"):
            settings_for(sms={"code_ttl_seconds": too_long})
    # Turned on, it needs a country allow-list (SMS pumping to premium ranges).
    with pytest.raises(ValidationError, match="allow-list"):
        settings_for(sms={"enabled": True})


async def register(ga: GuardedApp, user: str, phone: str) -> httpx.Response:
    async with ga.client() as client:
        await sign_in(client, user)
        return await client.post("/mfa/api/phone", json={"phone": phone})


async def test_every_spelling_of_one_number_shares_its_send_limit() -> None:
    """The per-number limit counts the E.164 number: another spelling is no new number."""
    outbox = OutboxSMS()
    ga = build_app(sms_provider=outbox, sms=SMS | {"per_number": "1/hour"})
    assert (await register(ga, "first@example.test", TYPED_MOBILE)).status_code == 202
    spellings = ["+33612345678", "0033 6 12 34 56 78", "+33-6-12-34-56-78", "+33 (6) 12.34.56.78"]
    for n, spelling in enumerate(spellings):
        response = await register(ga, f"user{n}@example.test", spelling)
        assert response.status_code == 429, (spelling, response.text)
        assert response.json()["error"]["code"] == "too_many_texts"
    # Spellings the kit does not guess at (an extension, other digits) are refused outright.
    for n, spelling in enumerate(["+33 6 12 34 56 78 ext 5", "+３３６１２３４５６７８"]):  # noqa: RUF001
        response = await register(ga, f"other{n}@example.test", spelling)
        assert response.status_code == 400, (spelling, response.text)
        assert response.json()["error"]["code"] == "invalid_phone"
    assert [message.to for message in outbox.messages] == [MOBILE]


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
                "/mfa/api/phone/verify", json={"code": last_texted_code(outbox)}
            )
            assert verified.status_code == 200, verified.text
            await sign_in(client)
            sent = await client.post("/mfa/api/sms/send", json={})
            assert sent.status_code == 202, sent.text
            sms_code = last_texted_code(outbox)
        enrolment = await store.get(USER)
        assert enrolment is not None
        assert enrolment.secret is not None
        # A Fernet token that the configured key opens, not the key itself.
        assert enrolment.secret != secret
        assert SecretBox([ENCRYPTION_KEY]).decrypt(enrolment.secret) == secret
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
    bob = await store.get("bob@acme.test")
    assert bob is not None
    assert bob.secret is not None
    assert SecretBox([NEW_KEY]).decrypt(bob.secret) == bob_key
    with pytest.raises(SecretDecryptionError):
        SecretBox([ENCRYPTION_KEY]).decrypt(bob.secret)

    # What a re-encryption pass would do to alice's secret: her old token, sealed anew.
    alice = await store.get("alice@acme.test")
    assert alice is not None
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


# -- sessions -------------------------------------------------------------------------------------


@pytest.mark.parametrize("way", ["api-totp", "api-recovery", "challenge-form"])
async def test_completing_the_second_factor_gives_the_session_a_new_nonce(
    guarded: GuardedApp, client: httpx.AsyncClient, way: str
) -> None:
    secret = await arrive(guarded, client, State.CHALLENGED)
    assert (await client.get("/protected")).status_code == 303
    before = marker_of(guarded, client)
    assert before.verified_at is None
    if way == "challenge-form":
        token = await page_token(client, State.CHALLENGED)
        done = await client.post(
            "/mfa/challenge", data={"csrf_token": token, "code": guarded.code(secret)}
        )
        assert done.status_code == 303, done.text
    else:
        body = (
            {"code": guarded.code(secret)}
            if way == "api-totp"
            else {"method": "recovery", "code": await a_recovery_code(guarded, client)}
        )
        done = await client.post("/mfa/api/verify", json=body)
        assert done.status_code == 200, done.text
    after = marker_of(guarded, client)
    assert after.nonce != before.nonce
    assert after.verified_at == guarded.clock()
    assert (await client.get("/protected")).status_code == 200


async def a_recovery_code(guarded: GuardedApp, client: httpx.AsyncClient) -> str:
    """Replaces the scenario's shared recovery codes with ten this test knows."""
    codes = recovery.generate()
    assert await guarded.store.replace_recovery_codes(USER, recovery.hash_set(codes))
    return codes[0]


def forged_payload(client: httpx.AsyncClient, changes: dict[str, Any]) -> str:
    """The client's own cookie with its payload changed and its old timestamp and signature."""
    _, timestamp, signature = client.cookies["session"].rsplit(".", 2)
    payload = base64.b64encode(json.dumps(session_of(client) | changes).encode()).decode()
    return f"{payload}.{timestamp}.{signature}"


def signed_with_another_key(client: httpx.AsyncClient, changes: dict[str, Any]) -> str:
    payload = base64.b64encode(json.dumps(session_of(client) | changes).encode())
    return TimestampSigner("the attacker's own secret").sign(payload).decode()


Forge = Callable[[httpx.AsyncClient, dict[str, Any]], str]


@pytest.mark.parametrize("forge", [forged_payload, signed_with_another_key])
async def test_a_cookie_the_client_rewrote_is_no_session(guarded: GuardedApp, forge: Forge) -> None:
    """Mallory, signed in, rewrites her cookie to be Alice, with or without Alice's verified
    marker; without the app's secret the cookie is refused whole: no user, no marker."""
    async with guarded.client() as alice, guarded.client() as mallory:
        await arrive(guarded, alice, State.VERIFIED)
        stolen = session_of(alice)
        for changes in (
            {"user": USER},
            {"user": USER, SESSION_KEY: stolen[SESSION_KEY]},
            stolen,
        ):
            mallory.cookies.clear()
            await sign_in(mallory, "mallory@acme.test")
            forged = forge(mallory, changes)
            mallory.cookies.clear()
            mallory.cookies.set("session", forged)
            status = await mallory.get("/mfa/api/status")
            assert status.status_code == 401, status.text
            assert status.json()["error"]["code"] == "not_authenticated"
            # The app sees no user either: its home page greets nobody.
            assert (await mallory.get("/")).text == "home of anonymous"


# -- logs and events ------------------------------------------------------------------------------


async def test_a_failed_second_factor_is_a_warning_event_naming_no_code(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    ga = build_app()
    async with ga.client() as client:
        secret = await arrive(ga, client, State.CHALLENGED)
        wrong = wrong_code(ga, secret)
        refused = await client.post("/mfa/api/verify", json={"code": wrong})
        assert refused.status_code == 422
    (failed,) = [e for e in ga.events.events if e.kind is EventKind.VERIFICATION_FAILED]
    assert (failed.user_id, failed.method, failed.client_ip) == (USER, "totp", "203.0.113.7")
    lines = [
        r
        for r in caplog.records
        if r.name == "mfa_guard.audit" and "event=verification_failed" in r.getMessage()
    ]
    assert len(lines) == 1
    assert lines[0].levelno == logging.WARNING
    assert wrong not in caplog.text
    assert secret not in caplog.text


def everything_logged(caplog: pytest.LogCaptureFixture) -> str:
    """Every record as formatted, with its raw arguments and attributes."""
    return caplog.text + "".join(repr(vars(record)) for record in caplog.records)


async def test_no_code_key_phone_or_secret_reaches_any_log_through_a_whole_story(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """One user's story through pages and API, with failures, a replay, a failed text and a
    lock-out, logged at DEBUG on every logger: no secret of any kind is in the log."""
    caplog.set_level(logging.DEBUG)
    outbox = OutboxSMS()
    ga = build_app(sms_provider=outbox, sms=SMS, rate_limits={"failures": "6/minute;100/day"})
    typed: list[str] = []  # every code the story types in
    async with ga.client() as client:
        await sign_in(client)
        token = await page_token(client, State.SIGNED_IN)
        started = await client.post("/mfa/enrol", data={"csrf_token": token})
        match = re.search(r'id="manual-key">([A-Z2-7 ]+)<', started.text)
        assert match is not None
        secret = match.group(1).replace(" ", "")
        typed.append(wrong_code(ga, secret))
        refused = await client.post("/mfa/api/totp/confirm", json={"code": typed[-1]})
        assert refused.status_code == 422, refused.text
        typed.append(ga.code(secret))
        confirmed = await client.post("/mfa/api/totp/confirm", json={"code": typed[-1]})
        first_codes: list[str] = confirmed.json()["recovery_codes"]
        new_codes: list[str] = (await client.post("/mfa/api/recovery-codes", json={})).json()[
            "recovery_codes"
        ]
        assert (await client.post("/mfa/api/phone", json={"phone": TYPED_MOBILE})).is_success
        phone_code = last_texted_code(outbox)
        typed.append(str((int(phone_code) + 1) % 10**6).zfill(6))
        await client.post("/mfa/api/phone/verify", json={"code": typed[-1]})
        assert (await client.post("/mfa/api/phone/verify", json={"code": phone_code})).is_success

        await sign_in(client)
        assert (await client.post("/mfa/api/sms/send", json={})).status_code == 202
        sms_code = last_texted_code(outbox)
        outbox.fail_next = 1
        failed = await client.post("/mfa/api/sms/send", json={})  # a warning for the operator
        assert failed.status_code == 503, failed.text
        sms = await client.post("/mfa/api/verify", json={"method": "sms", "code": sms_code})
        assert sms.status_code == 200, sms.text
        await sign_in(client)
        used = await client.post(
            "/mfa/api/verify", json={"method": "recovery", "code": new_codes[0]}
        )
        assert used.status_code == 200, used.text
        await sign_in(client)
        ga.clock.advance(30)
        typed.append(ga.code(secret))
        assert (await client.post("/mfa/api/verify", json={"code": typed[-1]})).is_success
        replayed = await client.post("/mfa/api/verify", json={"code": typed[-1]})
        assert replayed.status_code == 422, replayed.text
        await sign_in(client)
        statuses = []
        for _ in range(7):  # to the lock-out
            typed.append(wrong_code(ga, secret))
            statuses.append(
                (await client.post("/mfa/api/verify", json={"code": typed[-1]})).status_code
            )
        assert statuses[-1] == 429, statuses
        cookie = client.cookies["session"]
    kinds = ga.events.kinds()
    for kind in (
        EventKind.VERIFICATION_FAILED,
        EventKind.CODE_REUSED,
        EventKind.LOCKED_OUT,
        EventKind.SMS_FAILED,
        EventKind.RECOVERY_CODE_USED,
        EventKind.PHONE_VERIFIED,
    ):
        assert kind in kinds, kind
    logged = everything_logged(caplog)
    assert "event=code_reused" in logged
    for needle in (
        secret,
        secret.lower(),
        " ".join(secret[i : i + 4] for i in range(0, len(secret), 4)),
        *first_codes,
        *new_codes,
        *(code.replace("-", "") for code in (*first_codes, *new_codes)),
        MOBILE,
        TYPED_MOBILE,
        "612345678",
        ENCRYPTION_KEY,
        SESSION_SECRET,
        cookie,
    ):
        assert needle not in logged, needle
    for code in (*typed, phone_code, sms_code):
        assert re.search(rf"(?<!\d){code}(?!\d)", logged) is None, code
