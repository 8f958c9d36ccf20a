"""What the kit's middleware and routes work with: the parts the guard composed, and nothing of
the guard itself (the web layer does not import it)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from starlette.routing import BaseRoute

from mfa_guard.clock import Clock
from mfa_guard.devices import TrustedDevices
from mfa_guard.enforcement import SiteService
from mfa_guard.errors import ConfigurationError
from mfa_guard.identity import AccountNameGetter, SignOutFields
from mfa_guard.services import MFAService
from mfa_guard.session import SessionGate
from mfa_guard.settings import MFAGuardSettings
from mfa_guard.stores.events import EventStore
from mfa_guard.web.i18n import LanguageGetter


@dataclass(frozen=True, slots=True, eq=False)
class Kit:
    """The settings, the session gate and the services, as one guard wired them."""

    settings: MFAGuardSettings
    gate: SessionGate
    service: MFAService
    trusted_devices: TrustedDevices | None
    sites: SiteService | None
    account_name: AccountNameGetter
    template_directory: str | Path | None
    sign_out_fields: SignOutFields | None
    event_store: EventStore | None = None
    # The app's choice of language for the signed-in user (None: the browser's).
    language: LanguageGetter | None = None

    @property
    def clock(self) -> Clock:
        return self.gate.clock

    @property
    def site_service(self) -> SiteService:
        """Members' 2FA status and site policies; needs ``MFAGuard(sites=...)``."""
        if self.sites is None:
            raise ConfigurationError("site enforcement needs MFAGuard(sites=a SiteDirectory)")
        return self.sites


class HasKit(Protocol):
    """What the middleware is given (``MFAGuardMiddleware(app, guard=guard)``): a guard, its
    parts and the routes of its mount."""

    @property
    def kit(self) -> Kit: ...

    @property
    def routes(self) -> list[BaseRoute]: ...
