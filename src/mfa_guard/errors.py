"""The kit's errors. Each carries a stable machine ``code`` the JSON API returns."""

from __future__ import annotations


class MFAGuardError(Exception):
    code = "mfa_guard_error"
    status_code = 500

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class ConfigurationError(MFAGuardError):
    """Settings or wiring that cannot work safely: raised at start-up, or by the first request
    that shows it (no user or session in the scope, a user without an identity). A request
    refused for it gets a generic 500, never the 503 of an outage: the mistake is permanent."""

    code = "configuration_error"


class StoreUnavailable(MFAGuardError):
    """A backing store (database, rate-limit storage) did not answer: fail closed."""

    code = "service_unavailable"
    status_code = 503

    def __init__(self, message: str = "The authentication service is unavailable.") -> None:
        super().__init__(message)


class SecretDecryptionError(MFAGuardError):
    """A stored secret could not be decrypted with any configured key."""

    code = "secret_undecryptable"
