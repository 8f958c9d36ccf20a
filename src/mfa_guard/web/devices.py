"""What the API and the pages share of trusted devices: the cookie, and a device as JSON."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from starlette.datastructures import Headers
from starlette.responses import Response

from mfa_guard.devices import Remembered, token_hash
from mfa_guard.enforcement import iso
from mfa_guard.stores.devices import TrustedDevice
from mfa_guard.web.requests import Caller

if TYPE_CHECKING:
    from mfa_guard.web.context import Kit


async def remember_browser(
    kit: Kit, caller: Caller, epoch: int, response: Response
) -> Remembered | None:
    """Remembers the caller's browser (after a second factor verified under ``epoch``) and sets
    its cookie on ``response``: ``HttpOnly``, ``SameSite=Lax``, ``Secure`` unless turned off,
    for the whole site, as long as the device is trusted."""
    devices = kit.trusted_devices
    if devices is None:
        return None
    user_agent = Headers(scope=caller.scope).get("user-agent", "")
    remembered = await devices.remember(caller.user_id, epoch, user_agent, caller.ip)
    response.set_cookie(
        devices.settings.cookie_name,
        remembered.token,
        max_age=devices.max_age,
        path="/",
        secure=devices.settings.cookie_secure,
        httponly=True,
        samesite="lax",
    )
    return remembered


def is_this_browser(kit: Kit, caller: Caller, device: TrustedDevice) -> bool:
    token = kit.gate.device_token(caller.scope)
    return token is not None and token_hash(token) == device.token_hash


def device_json(kit: Kit, caller: Caller, device: TrustedDevice) -> dict[str, Any]:
    return {
        "id": device.id,
        "name": device.name,
        "created_at": iso(device.created_at),
        "last_used_at": iso(device.last_seen_at),
        "expires_at": iso(device.expires_at),
        "current": is_this_browser(kit, caller, device),
    }


async def forget_browsers(kit: Kit, caller: Caller) -> None:
    """After a factor change or "sign out my other sessions": every remembered browser of the
    user must verify again. An epoch bump already made them untrusted; this removes their rows
    (and is what makes new recovery codes, which bump no epoch, forget them)."""
    if kit.trusted_devices is not None:
        await kit.trusted_devices.forget_all(caller.user_id, caller.ip)
