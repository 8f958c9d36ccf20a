"""Key rotation: every stored secret re-encrypted under the newest key, safely rerunnable."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from cryptography.fernet import Fernet

from mfa_guard import MemoryStore
from mfa_guard.cli import main
from mfa_guard.core import totp
from mfa_guard.core.recovery import RecoveryCodeSet
from mfa_guard.crypto import SecretBox
from mfa_guard.rotation import RotationReport, rotate_keys
from mfa_guard.stores.base import MFAStore, StoredSecrets
from mfa_guard.stores.sql import SQLStore

OLD = Fernet.generate_key().decode()
NEW = Fernet.generate_key().decode()
RECOVERY = RecoveryCodeSet(salt="00", hashes=("11",))


async def enrolled_users(store: MFAStore, count: int, box: SecretBox) -> dict[str, str]:
    """``count`` enrolled users and one with a pending set-up, under ``box``'s key."""
    secrets = {}
    for n in range(count):
        user, secret = f"user{n:03d}@example.test", totp.new_secret()
        token = box.encrypt(secret)
        await store.begin_enrolment(user, token)
        assert await store.confirm_enrolment(user, token, step=1, recovery=RECOVERY, now=1.0)
        secrets[user] = secret
    pending = totp.new_secret()
    await store.begin_enrolment("pending@example.test", box.encrypt(pending))
    secrets["pending@example.test"] = pending
    return secrets


def only_newest(token: str | None) -> str | None:
    return None if token is None else SecretBox([NEW]).decrypt(token)


async def test_every_secret_ends_under_the_newest_key_and_a_rerun_has_nothing_to_do() -> None:
    store = MemoryStore()
    secrets = await enrolled_users(store, 7, SecretBox([OLD]))
    box = SecretBox([NEW, OLD])
    seen: list[tuple[int, int]] = []

    def progress(report: RotationReport) -> None:
        seen.append((report.checked, report.rotated))

    report = await rotate_keys(store, box, batch=3, progress=progress)
    assert (report.checked, report.rotated, report.current, report.done) == (8, 8, 0, True)
    assert seen == [(3, 3), (6, 6), (8, 8)]
    # Only the new key is needed now, and nothing else changed.
    for stored in await store.stored_secrets(None, 100):
        plain = only_newest(stored.secret) or only_newest(stored.pending_secret)
        assert plain == secrets[stored.user_id]
    summary = await store.summary("user000@example.test")
    assert (summary.enrolled, summary.epoch) == (True, 1)

    again = await rotate_keys(store, box, batch=3)
    assert (again.checked, again.rotated, again.current) == (8, 0, 8)


class Interrupted(Exception):
    pass


async def test_an_interrupted_run_is_finished_by_the_next() -> None:
    store = MemoryStore()
    await enrolled_users(store, 5, SecretBox([OLD]))
    box = SecretBox([NEW, OLD])

    def stop_after_the_first_batch(report: RotationReport) -> None:
        raise Interrupted

    with pytest.raises(Interrupted):
        await rotate_keys(store, box, batch=2, progress=stop_after_the_first_batch)
    report = await rotate_keys(store, box, batch=2)
    assert (report.checked, report.rotated, report.current) == (6, 4, 2)


class ChangesUnderfoot(MemoryStore):
    """A user re-enrols between the rotation's read and its write."""

    async def replace_secrets(self, old: StoredSecrets, new: StoredSecrets) -> bool:
        if old.user_id == "user001@example.test":
            await self.disable(old.user_id)
            await self.begin_enrolment(old.user_id, SecretBox([NEW]).encrypt("AAAA"))
        return await super().replace_secrets(old, new)


async def test_a_secret_changed_during_the_run_is_not_overwritten() -> None:
    store = ChangesUnderfoot()
    await enrolled_users(store, 3, SecretBox([OLD]))
    report = await rotate_keys(store, SecretBox([NEW, OLD]))
    assert (report.rotated, report.changed_meanwhile, report.done) == (3, 1, False)
    enrolment = await store.get("user001@example.test")
    assert enrolment is not None
    assert enrolment.pending_secret is not None
    assert only_newest(enrolment.pending_secret) == "AAAA"


@pytest.fixture
def keys(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MFA_GUARD_ENCRYPTION_KEYS", f"{NEW},{OLD}")
    monkeypatch.delenv("MFA_GUARD_DEBUG", raising=False)


async def seeded(url: str, count: int) -> dict[str, str]:
    store = SQLStore(url)
    try:
        return await enrolled_users(store, count, SecretBox([OLD]))
    finally:
        await store.close()


async def stored(url: str) -> list[StoredSecrets]:
    store = SQLStore(url)
    try:
        return await store.stored_secrets(None, 10)
    finally:
        await store.close()


@pytest.mark.usefixtures("keys")
def test_the_cli_rotates_a_sql_store_and_shows_progress(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path}/mfa.db"
    secrets = asyncio.run(seeded(url, 4))
    assert main(["rotate-keys", "--batch", "2", "--database-url", url]) == 0
    out, err = capsys.readouterr()
    assert "every stored secret (5) is under the newest key (5 re-encrypted now)" in out
    assert err.splitlines() == [
        "checked 2: rotated 2, already under the newest key 0, changed meanwhile 0",
        "checked 4: rotated 4, already under the newest key 0, changed meanwhile 0",
        "checked 5: rotated 5, already under the newest key 0, changed meanwhile 0",
    ]
    for row in asyncio.run(stored(url)):
        plain = only_newest(row.secret) or only_newest(row.pending_secret)
        assert plain == secrets[row.user_id]
    assert main(["rotate-keys", "--database-url", url]) == 0
    assert "(0 re-encrypted now)" in capsys.readouterr().out


def test_the_cli_refuses_a_secret_no_key_opens(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path}/mfa.db"
    asyncio.run(seeded(url, 1))
    monkeypatch.setenv("MFA_GUARD_ENCRYPTION_KEYS", NEW)  # the old key is gone too soon
    assert main(["rotate-keys", "--database-url", url]) == 1
    assert "cannot be decrypted" in capsys.readouterr().err
    monkeypatch.delenv("MFA_GUARD_ENCRYPTION_KEYS")
    monkeypatch.delenv("MFA_GUARD_DEBUG", raising=False)
    assert main(["rotate-keys", "--database-url", url]) == 2
