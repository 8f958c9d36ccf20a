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
from mfa_guard.stores.base import Authenticator, FactorKind, MFAStore, StoredSecrets
from mfa_guard.stores.sql import SQLStore

OLD = Fernet.generate_key().decode()
NEW = Fernet.generate_key().decode()
RECOVERY = RecoveryCodeSet(salt="00", hashes=("11",))


async def enrolled_users(store: MFAStore, count: int, box: SecretBox) -> dict[str, list[str]]:
    """``count`` enrolled users (every other one with a second app and a passkey) and one with
    a pending set-up, under ``box``'s key: each user's plain secrets, in the order rotation
    reads them (the pending one, then the apps by id)."""
    secrets: dict[str, list[str]] = {}
    for n in range(count):
        user = f"user{n:03d}@example.test"
        apps = [totp.new_secret() for _ in range(1 + n % 2)]
        for index, secret in enumerate(apps):
            token = box.encrypt(secret)
            app = Authenticator(
                id=f"app{index}-{n:03d}",
                kind=FactorKind.TOTP,
                name=f"Phone {index}",
                created_at=1.0 + index,
                secret=token,
                last_step=1,
            )
            await store.begin_enrolment(user, token)
            assert await store.add_authenticator(
                user, app, now=1.0, recovery=RECOVERY, pending_secret=token
            )
        if n % 2:
            passkey = Authenticator(
                id=f"key-{n:03d}",
                kind=FactorKind.WEBAUTHN,
                name="Passkey",
                created_at=3.0,
                credential_id=n.to_bytes(4, "big"),
                public_key=b"cose",
            )
            assert await store.add_authenticator(user, passkey, now=3.0)
        secrets[user] = apps
    pending = totp.new_secret()
    await store.begin_enrolment("pending@example.test", box.encrypt(pending))
    secrets["pending@example.test"] = [pending]
    return secrets


def only_newest(stored: StoredSecrets) -> list[str]:
    """The user's plain secrets, opened with the newest key alone."""
    box = SecretBox([NEW])
    tokens = [] if stored.pending_secret is None else [stored.pending_secret]
    return [box.decrypt(token) for token in [*tokens, *(secret for _, secret in stored.apps)]]


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
        assert only_newest(stored) == secrets[stored.user_id]
    summary = await store.summary("user000@example.test")
    assert (summary.enrolled, summary.epoch) == (True, 1)
    two_apps = await store.get("user001@example.test")
    assert two_apps is not None
    assert (two_apps.epoch, [a.last_step for a in two_apps.apps]) == (3, [1, 1])
    assert [a.public_key for a in two_apps.keys] == [b"cose"]

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
    assert enrolment.authenticators == ()
    assert enrolment.pending_secret is not None
    assert SecretBox([NEW]).decrypt(enrolment.pending_secret) == "AAAA"
    # The next run finishes it.
    again = await rotate_keys(store, SecretBox([NEW, OLD]))
    assert (again.checked, again.rotated, again.current, again.done) == (4, 0, 4, True)


async def test_an_app_added_during_the_run_is_left_to_the_next() -> None:
    """A user adds an app between the rotation's read and its write: nothing of theirs is
    written (the new app's secret, under the old key, would be missed otherwise)."""
    store = AppAddedUnderfoot()
    secrets = await enrolled_users(store, 2, SecretBox([OLD]))
    report = await rotate_keys(store, SecretBox([NEW, OLD]))
    assert (report.checked, report.rotated, report.changed_meanwhile) == (3, 2, 1)
    again = await rotate_keys(store, SecretBox([NEW, OLD]))
    assert (again.rotated, again.current, again.done) == (1, 2, True)
    [stored] = [
        s for s in await store.stored_secrets(None, 10) if s.user_id == AppAddedUnderfoot.USER
    ]
    assert only_newest(stored) == [*secrets[AppAddedUnderfoot.USER], "BBBB"]


class AppAddedUnderfoot(MemoryStore):
    USER = "user000@example.test"

    async def replace_secrets(self, old: StoredSecrets, new: StoredSecrets) -> bool:
        if old.user_id == self.USER and len(old.apps) == 1:
            token = SecretBox([OLD]).encrypt("BBBB")
            await self.begin_enrolment(old.user_id, token)
            added = Authenticator(
                id="zz-added", kind=FactorKind.TOTP, name="New", created_at=9.0, secret=token
            )
            assert await self.add_authenticator(old.user_id, added, now=9.0, pending_secret=token)
        return await super().replace_secrets(old, new)


@pytest.fixture
def keys(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MFA_GUARD_ENCRYPTION_KEYS", f"{NEW},{OLD}")
    monkeypatch.delenv("MFA_GUARD_DEBUG", raising=False)


async def seeded(url: str, count: int) -> dict[str, list[str]]:
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
        assert only_newest(row) == secrets[row.user_id]
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
