"""Key rotation: re-encrypt every stored TOTP secret under the newest encryption key.

Put a new key first in ``MFA_GUARD_ENCRYPTION_KEYS`` (old ones after it: they still decrypt), then
run ``mfa-guard rotate-keys``: it pages through the store, re-encrypts each user's secrets that
are not under the newest key yet (every authenticator app's, and a pending set-up's), and writes
them back with a compare-and-set, so a user who adds or removes an app, begins a set-up or turns
2FA off meanwhile is never overwritten. It is safe to interrupt and to rerun: what is already
under the newest key is skipped. Once it reports nothing left, the old key can go. (Passkeys and
security keys hold no secret: their public keys are not encrypted.)
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from mfa_guard.crypto import SecretBox
from mfa_guard.stores.base import MFAStore, StoredSecrets

BATCH = 500


@dataclass(slots=True)
class RotationReport:
    checked: int = 0  # users with an app's secret or a pending one
    rotated: int = 0  # rewritten under the newest key
    current: int = 0  # already under it
    changed_meanwhile: int = 0  # changed their 2FA during the run: left to the next run

    @property
    def done(self) -> bool:
        """Whether every secret seen is under the newest key (nothing left for a rerun)."""
        return self.changed_meanwhile == 0


Progress = Callable[[RotationReport], None]


async def rotate_keys(
    store: MFAStore,
    box: SecretBox,
    *,
    batch: int = BATCH,
    progress: Progress | None = None,
) -> RotationReport:
    """Re-encrypts every secret not under ``box``'s newest key, a user at a time (all of the
    user's secrets in one compare-and-set); ``progress`` is called after each batch. Raises
    :class:`~mfa_guard.errors.SecretDecryptionError` on a secret no configured key opens
    (nothing after it is touched; rerun once the key is back)."""
    report = RotationReport()
    after: str | None = None
    while page := await store.stored_secrets(after, batch):
        for stored in page:
            report.checked += 1
            new = StoredSecrets(
                stored.user_id,
                None if stored.pending_secret is None else _newest(box, stored.pending_secret),
                tuple((app_id, _newest(box, secret)) for app_id, secret in stored.apps),
            )
            if new == stored:
                report.current += 1
            elif await store.replace_secrets(stored, new):
                report.rotated += 1
            else:
                report.changed_meanwhile += 1
        after = page[-1].user_id
        if progress is not None:
            progress(report)
    return report


def _newest(box: SecretBox, token: str) -> str:
    return token if box.is_current(token) else box.rotate(token)
