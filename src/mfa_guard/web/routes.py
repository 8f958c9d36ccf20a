from __future__ import annotations

from typing import TYPE_CHECKING

from starlette.routing import BaseRoute

from mfa_guard.web.api import API
from mfa_guard.web.pages import Pages

if TYPE_CHECKING:
    from mfa_guard.web.context import Kit


def build_routes(kit: Kit) -> list[BaseRoute]:
    return [*Pages(kit).routes(), *API(kit).routes()]
