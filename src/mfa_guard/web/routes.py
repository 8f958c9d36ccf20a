from __future__ import annotations

from typing import TYPE_CHECKING

from starlette.routing import BaseRoute

from mfa_guard.web.api import API
from mfa_guard.web.pages import Pages

if TYPE_CHECKING:
    from mfa_guard.guard import MFAGuard


def build_routes(guard: MFAGuard) -> list[BaseRoute]:
    return [*Pages(guard).routes(), *API(guard).routes()]
