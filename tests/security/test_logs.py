"""Issue 5: no code, secret, phone or recovery code reaches the logs, at any level.

Every test of the suite runs under the guard of ``tests/log_guard.py`` (the autouse fixture
``no_secret_in_any_log`` of ``tests/conftest.py``): every record of every logger, DEBUG included,
is looked through for every secret the kit drew or received during the test. The tests here walk
each flow of the kit, on the memory store and on SQLite, and check that the guard collected the
flow's secrets (so that its silence means something) and that no record holds one; then that the
guard does catch a secret that is logged, however it is logged, and fails the test for it.
"""

from __future__ import annotations

import logging
import os
import re
import subprocess
import sys
import textwrap
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from mfa_guard import EventKind, MemoryStore, MFAStore
from mfa_guard.core import recovery, totp
from mfa_guard.core import sms as sms_codes
from mfa_guard.core.marker import EnrolmentSummary
from mfa_guard.errors import StoreUnavailable
from mfa_guard.sms import OutboxSMS
from mfa_guard.stores.base import Enrolment
from mfa_guard.stores.sql import SQLStore
from tests.apps import ENCRYPTION_KEY, SESSION_SECRET, build_app, enrol, sign_in
from tests.live import served
from tests.log_guard import LogGuard, Secrets, leaks, record_text
from tests.scenarios import State, page_token, wrong_code

ROOT = Path(__file__).resolve().parents[2]
USER = "solo@example.test"
MOBILE = "+33612345678"
TYPED_MOBILE = "+33 6 12 34 56 78"
SMS = {
    "enabled": True,
    "allowed_regions": ["FR"],
    "provider": "outbox",
    "resend_cooldown": "100/second",
}
MANUAL_KEY = re.compile(r'id="manual-key">([A-Z2-7 ]+)<')
SHOWN_CODE = re.compile(r"<li><code>([a-z2-7-]+)</code></li>")
TEXTED_CODE = re.compile(r"\b\d{6}\b")


def looked_for(guard: LogGuard) -> Secrets:
    return guard.secrets.merged(guard.outside)


def assert_collected_and_not_logged(guard: LogGuard, *kinds: str) -> None:
    """The guard holds secrets of each of ``kinds``, saw DEBUG records, and none holds one."""
    secrets = looked_for(guard)
    collected = {*secrets.words.values(), *secrets.needles.values()}
    assert set(kinds) <= collected, f"not collected: {set(kinds) - collected}"
    assert any(record.levelno == logging.DEBUG for record in guard.records)
    assert [str(leak) for leak in leaks(guard.records, secrets)] == []


def wrong(code: str) -> str:
    return str((int(code) + 1) % 10**6).zfill(6)


def texted_code(outbox: OutboxSMS) -> str:
    match = TEXTED_CODE.search(outbox.messages[-1].text)
    assert match is not None
    return match.group()


@pytest.fixture(params=["memory", "sqlite"])
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[MFAStore]:
    if request.param == "memory":
        yield MemoryStore()
        return
    sql = SQLStore(f"sqlite+aiosqlite:///{tmp_path / 'mfa.db'}")
    yield sql
    await sql.close()


# -- every flow, at DEBUG ---------------------------------------------------------------------


async def test_enrolment_sign_in_recovery_and_disabling_log_no_secret(
    store: MFAStore, no_secret_in_any_log: LogGuard
) -> None:
    ga = build_app(store)
    async with ga.client() as client:
        await sign_in(client, USER)
        token = await page_token(client, State.SIGNED_IN)
        started = await client.post("/mfa/enrol", data={"csrf_token": token})
        match = MANUAL_KEY.search(started.text)
        assert match is not None
        secret = match.group(1).replace(" ", "")
        token = await page_token(client, State.PENDING)
        refused = await client.post(
            "/mfa/enrol/confirm", data={"csrf_token": token, "code": wrong(ga.code(secret))}
        )
        assert refused.status_code == 422
        shown = await client.post(
            "/mfa/enrol/confirm", data={"csrf_token": token, "code": ga.code(secret)}
        )
        codes = SHOWN_CODE.findall(shown.text)
        assert len(codes) == recovery.COUNT

        await sign_in(client, USER)
        ga.clock.advance(30)
        assert (await client.post("/mfa/api/verify", json={"code": "000000"})).status_code == 422
        code = ga.code(secret)
        assert (await client.post("/mfa/api/verify", json={"code": code})).status_code == 200
        replayed = await client.post("/mfa/api/verify", json={"code": code})
        assert replayed.status_code == 422

        await sign_in(client, USER)
        used = await client.post("/mfa/api/verify", json={"method": "recovery", "code": codes[0]})
        assert used.status_code == 200, used.text
        regenerated = await client.post("/mfa/api/recovery-codes", json={})
        assert regenerated.status_code == 200, regenerated.text
        ga.clock.advance(30)
        disabled = await client.post("/mfa/api/disable", json={"code": ga.code(secret)})
        assert disabled.status_code == 200, disabled.text
    kinds = ga.events.kinds()
    for kind in (
        EventKind.VERIFICATION_FAILED,
        EventKind.CODE_REUSED,
        EventKind.RECOVERY_CODE_USED,
        EventKind.RECOVERY_CODES_REGENERATED,
        EventKind.DISABLED,
    ):
        assert kind in kinds
    assert_collected_and_not_logged(
        no_secret_in_any_log,
        "a TOTP key",
        "a TOTP code",
        "a submitted code",
        "a recovery code",
        "a secret setting",
        "a key derived from an encryption key",
    )


async def test_phone_registration_texts_and_a_lock_out_log_no_secret(
    store: MFAStore, no_secret_in_any_log: LogGuard
) -> None:
    outbox = OutboxSMS()
    ga = build_app(
        store, sms_provider=outbox, sms=SMS, rate_limits={"failures": "4/minute;100/day"}
    )
    async with ga.client() as client:
        await sign_in(client, USER)
        secret, _ = await enrol(ga, client)
        assert (await client.post("/mfa/api/phone", json={"phone": TYPED_MOBILE})).is_success
        phone_code = texted_code(outbox)
        refused = await client.post("/mfa/api/phone/verify", json={"code": wrong(phone_code)})
        assert refused.status_code == 422
        checked = await client.post("/mfa/api/phone/verify", json={"code": phone_code})
        assert checked.status_code == 200, checked.text

        await sign_in(client, USER)
        assert (await client.post("/mfa/api/sms/send", json={})).status_code == 202
        sms_code = texted_code(outbox)
        outbox.fail_next = 1  # the provider fails: a warning for the operator
        assert (await client.post("/mfa/api/sms/send", json={})).status_code == 503
        verified = await client.post("/mfa/api/verify", json={"method": "sms", "code": sms_code})
        assert verified.status_code == 200, verified.text

        await ga.guard.service.drain()  # the success clears the failure count in the background
        await sign_in(client, USER)
        ga.clock.advance(30)
        statuses = [
            (
                await client.post("/mfa/api/verify", json={"code": wrong(ga.code(secret))})
            ).status_code
            for _ in range(5)
        ]
        assert statuses[-1] == 429, statuses
    for kind in (EventKind.PHONE_VERIFIED, EventKind.SMS_FAILED, EventKind.LOCKED_OUT):
        assert kind in ga.events.kinds()
    assert_collected_and_not_logged(
        no_secret_in_any_log, "a phone number", "an SMS code", "a submitted code"
    )


async def test_a_remembered_browser_logs_no_secret(no_secret_in_any_log: LogGuard) -> None:
    ga = build_app(trusted_devices={"enabled": True})
    # https: the device cookie is Secure, and a client sends it back over TLS only.
    async with ga.client(base_url="https://testserver") as client:
        await sign_in(client, USER)
        secret, _ = await enrol(ga, client)
        await sign_in(client, USER)
        ga.clock.advance(30)
        remembered = await client.post(
            "/mfa/api/verify", json={"code": ga.code(secret), "remember_device": True}
        )
        assert remembered.status_code == 200, remembered.text
        await sign_in(client, USER)  # a new session, let in by the remembered browser
        assert (await client.get("/protected")).status_code == 200
    assert EventKind.DEVICE_TRUSTED in ga.events.kinds()
    assert_collected_and_not_logged(no_secret_in_any_log, "a device token")


class FailingStore(MemoryStore):
    """Answers until ``fails`` is set; then every read raises it."""

    def __init__(self) -> None:
        super().__init__()
        self.fails: Exception | None = None

    async def get(self, user_id: str) -> Enrolment | None:
        if self.fails is not None:
            raise self.fails
        return await super().get(user_id)

    async def summary(self, user_id: str) -> EnrolmentSummary:
        if self.fails is not None:
            raise self.fails
        return await super().summary(user_id)


async def test_a_store_that_is_down_or_breaks_logs_no_secret(
    no_secret_in_any_log: LogGuard,
) -> None:
    """The store down (503, failed closed, a warning) and the store raising what the kit does not
    expect, behind a real uvicorn: the 500 is logged by uvicorn with its traceback."""
    store = FailingStore()
    ga = build_app(store)
    with served(ga.app) as url:
        async with httpx.AsyncClient(base_url=url) as client:
            await sign_in(client, USER)
            secret, codes = await enrol(ga, client)
            await sign_in(client, USER)
            ga.clock.advance(30)
            store.fails = StoreUnavailable()
            down = await client.post("/mfa/api/verify", json={"code": ga.code(secret)})
            assert down.status_code == 503
            store.fails = RuntimeError("the store broke")
            broken = await client.post(
                "/mfa/api/verify", json={"method": "recovery", "code": codes[0]}
            )
            assert broken.status_code == 500
    records = no_secret_in_any_log.records
    assert any("failed closed" in record.getMessage() for record in records)
    assert any(record.name == "uvicorn.error" and record.exc_info for record in records)
    assert_collected_and_not_logged(
        no_secret_in_any_log, "a TOTP key", "a TOTP code", "a recovery code"
    )


# -- the guard catches what is logged -----------------------------------------------------------


def log_everywhere(logger: logging.Logger, secret: str) -> list[str]:
    """``secret`` logged in each way a handler could write it; returns how."""
    logger.debug("code %s", secret)
    logger.debug(f"code {secret}")
    logger.debug("a text was sent", extra={"detail": secret})
    logger.debug("%(code)s", {"code": secret})
    try:
        raise RuntimeError(f"bad code {secret}")
    except RuntimeError:
        logger.debug("failed", exc_info=True)
    return ["args", "message", "extra", "mapping", "exception"]


@pytest.mark.logs_secrets(reason="logs secrets on purpose, to see the guard find each of them")
def test_the_guard_finds_each_secret_however_it_is_logged(
    no_secret_in_any_log: LogGuard,
) -> None:
    guard = no_secret_in_any_log
    logger = logging.getLogger("mfa_guard")
    assert logger.getEffectiveLevel() > logging.DEBUG  # no level was lowered for the test
    key = totp.new_secret()
    (recovery_code,) = recovery.generate(1)
    texted = sms_codes.new_code()
    phone = sms_codes.normalise_phone(TYPED_MOBILE, ["FR"])
    assert isinstance(phone, str)
    grouped = totp.grouped(key)
    for shown, kind in (
        (texted, "an SMS code"),
        (texted[:3] + " " + texted[3:], "an SMS code"),
        (key, "a TOTP key"),
        (grouped.lower(), "a TOTP key"),
        (recovery_code, "a recovery code"),
        (recovery_code.replace("-", "").upper(), "a recovery code"),
        (phone, "a phone number"),
        (TYPED_MOBILE, "a phone number"),
        ("06 12 34 56 78", "a phone number"),
    ):
        guard.records.clear()
        ways = log_everywhere(logger, shown)
        found = leaks(guard.records, looked_for(guard))
        assert len(found) == len(ways), (shown, [str(leak) for leak in found])
        assert all(kind in leak.kinds for leak in found), (shown, kind)
        for leak in found:  # the report says where and what, never the secret itself
            assert shown not in str(leak)
    guard.records.clear()


def test_a_code_is_found_as_a_whole_word_only() -> None:
    secrets = Secrets()
    secrets.add("an SMS code", "123456")
    for text in (
        "code 123456",
        "code=123456&next=/",
        "code_123456",
        "[123456]",
        "123 456",
        "123-456",
        "0.123456 s",  # a word of its own: a timing this precise is not worth a blind spot
    ):
        assert secrets.find(text) == ["an SMS code"], text
    for text in (
        "1234567",
        "user123456@example.test",
        "a1b2c3123456d4e5f6",
        "1800000123456.0",
        "+33612345678",
    ):
        assert secrets.find(text) == [], text


def test_the_text_of_a_record_is_everything_a_handler_could_write() -> None:
    record = logging.LogRecord("mfa_guard", logging.DEBUG, __file__, 1, "%s", ("args",), None)
    record.__dict__["extra_field"] = "extra"
    record.stack_info = "the stack"
    try:
        raise ValueError("the exception")
    except ValueError:
        record.exc_info = sys.exc_info()
    text = record_text(record)
    for part in ("args", "extra_field='extra'", "the stack", "ValueError: the exception"):
        assert part in text


INNER_TESTS = """
import logging

import pytest

from mfa_guard.core import totp

def test_logs_a_code():
    code = totp.normalise_code("246 802", 6)
    logging.getLogger("mfa_guard").debug("code %s", code)

def test_logs_no_code():
    totp.normalise_code("246 802", 6)
    logging.getLogger("mfa_guard").debug("a code was checked")

@pytest.mark.logs_secrets(reason="says why")
def test_says_why_it_logs_a_code():
    logging.getLogger("mfa_guard").debug("code %s", totp.normalise_code("246802", 6))

@pytest.mark.logs_secrets
def test_does_not_say_why():
    pass
"""


def test_a_test_that_logs_a_secret_fails_at_teardown(tmp_path: Path) -> None:
    """The suite's own conftest, in a pytest run of its own: the test that logs a code at DEBUG
    (its logger at WARNING) errors at teardown, saying what was logged where, without the code."""
    (tmp_path / "test_inner.py").write_text(textwrap.dedent(INNER_TESTS))
    (tmp_path / "pytest.ini").write_text(
        "[pytest]\nmarkers =\n    logs_secrets(reason): logs a secret on purpose\n"
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    # This interpreter's pytest, with the suite's conftest as a plugin, on the file above.
    command = [sys.executable, "-m", "pytest", "-p", "tests.conftest", "-p", "no:cacheprovider"]
    run = subprocess.run(  # noqa: S603 (the command above, nothing from outside)
        [*command, "-q", "-rE", "test_inner.py"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    out = run.stdout + run.stderr
    assert run.returncode == 1, out
    assert "ERROR at teardown of test_logs_a_code" in out, out
    assert "1 log record(s) hold a secret" in out
    assert "mfa_guard DEBUG" in out
    assert "logged a submitted code: 'code %s'" in out
    assert "ERROR at teardown of test_does_not_say_why" not in out  # it errors at set-up
    assert "logs_secrets needs a reason" in out
    assert re.search(r"\b3 passed, 2 errors\b", out), out
    assert "246802" not in out
    assert "246 802" not in out


# -- one user's whole story, through pages and API, at DEBUG ------------------------------------


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
        phone_code = texted_code(outbox)
        typed.append(str((int(phone_code) + 1) % 10**6).zfill(6))
        await client.post("/mfa/api/phone/verify", json={"code": typed[-1]})
        assert (await client.post("/mfa/api/phone/verify", json={"code": phone_code})).is_success

        await sign_in(client)
        assert (await client.post("/mfa/api/sms/send", json={})).status_code == 202
        sms_code = texted_code(outbox)
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
    assert "event=verified" in logged
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
