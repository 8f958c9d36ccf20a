"""Encryption of TOTP secrets at rest (Fernet, several keys for rotation)."""

from __future__ import annotations

import hashlib
import hmac
import logging
from collections.abc import Sequence

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from pydantic import SecretStr

from mfa_guard.errors import SecretDecryptionError

logger = logging.getLogger("mfa_guard")


class SecretBox:
    """Encrypts with the first key; decrypts with any of them (newest first)."""

    def __init__(self, keys: Sequence[SecretStr | str]) -> None:
        raw = [k.get_secret_value() if isinstance(k, SecretStr) else k for k in keys]
        if not raw:
            raise ValueError("SecretBox needs at least one key")
        self._fernet = MultiFernet([Fernet(k) for k in raw])
        self._newest = Fernet(raw[0])
        # The marker key derives from the oldest key, so adding a new key for a rotation does
        # not end every verified session; retiring the old key does.
        self.marker_key = hmac.new(
            raw[-1].encode("ascii"), b"mfa_guard session marker", hashlib.sha256
        ).digest()
        # Keys SMS codes are hashed with: a leaked table row does not reveal a 6-digit code.
        self.sms_key = hmac.new(raw[-1].encode("ascii"), b"mfa_guard sms", hashlib.sha256).digest()

    @classmethod
    def ephemeral(cls) -> SecretBox:
        logger.warning(
            "mfa_guard runs with an ephemeral encryption key (debug mode): enrolled secrets "
            "become unreadable when the process restarts. Set MFA_GUARD_ENCRYPTION_KEYS."
        )
        return cls([Fernet.generate_key().decode("ascii")])

    def encrypt(self, plaintext: str) -> str:
        return self._fernet.encrypt(plaintext.encode("utf-8")).decode("ascii")

    def decrypt(self, token: str) -> str:
        try:
            return self._fernet.decrypt(token.encode("ascii")).decode("utf-8")
        except (InvalidToken, UnicodeError) as exc:
            raise SecretDecryptionError(
                "a stored TOTP secret cannot be decrypted with any configured key; "
                "was a key removed from MFA_GUARD_ENCRYPTION_KEYS?"
            ) from exc

    def is_current(self, token: str) -> bool:
        """Whether ``token`` is encrypted under the newest key (nothing to rotate)."""
        try:
            self._newest.decrypt(token.encode("ascii"))
        except (InvalidToken, UnicodeError):
            return False
        return True

    def rotate(self, token: str) -> str:
        """The same secret, encrypted under the newest key."""
        try:
            return self._fernet.rotate(token.encode("ascii")).decode("ascii")
        except InvalidToken as exc:
            raise SecretDecryptionError("a stored secret cannot be decrypted for rotation") from exc


def generate_key() -> str:
    return Fernet.generate_key().decode("ascii")
