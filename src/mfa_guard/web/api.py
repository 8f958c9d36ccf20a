"""The JSON API: ``{mount}/api/...``. Errors are ``{"error": {"code", "message"}}``."""

from __future__ import annotations

import logging
import re
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from mfa_guard.core.sms import mask_phone
from mfa_guard.enforcement import Enforcement, MemberStatus, MembersWithoutMFA, iso
from mfa_guard.errors import ConfigurationError, Denied, MFAGuardError, Reason, Refused
from mfa_guard.services import Method, TextSent
from mfa_guard.sms import SMSError
from mfa_guard.stores.sites import Role, Site
from mfa_guard.web import openapi
from mfa_guard.web.devices import device_json, forget_browsers, remember_browser
from mfa_guard.web.http import (
    denied_json,
    json_error,
    refusal_json,
    same_origin,
    unavailable_json,
)
from mfa_guard.web.requests import Caller, caller_of, json_body, string_field
from mfa_guard.web.wiring import misconfigured_response, report_miswiring

if TYPE_CHECKING:
    from mfa_guard.web.context import Kit

# Longer site ids are no site of any directory: refused before a lookup.
MAX_SITE_ID = 255
# Device ids are 16 characters; anything much longer is no device.
MAX_DEVICE_ID = 64

logger = logging.getLogger("mfa_guard")
Handler = Callable[[Request, Caller], Awaitable[Response]]
ALL_METHODS = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]


async def _not_found(request: Request) -> Response:
    return refusal_json(Reason.NO_SUCH_ENDPOINT)


def site_param(request: Request) -> str:
    """The site id of the path; one no directory can hold (too long, a control character such
    as NUL, which PostgreSQL refuses) is the same 404 as an unknown site."""
    site_id = str(request.path_params["site"])
    if not site_id or len(site_id) > MAX_SITE_ID or not site_id.isprintable():
        raise Refused(Reason.SITE_NOT_FOUND)
    return site_id


def grace_field(data: dict[str, Any], max_hours: int) -> float | None:
    value = data.get("grace_hours")
    if value is None:
        return None
    # Compared before any conversion: a JSON integer too large for a float is just too large.
    number = isinstance(value, int | float) and not isinstance(value, bool)
    if not number or value != value or not 0 <= value <= max_hours:
        raise Refused(Reason.GRACE_HOURS_OUT_OF_RANGE, max_hours=max_hours)
    return float(value)


def site_json(site: Site, *, owner: bool) -> dict[str, Any]:
    policy = site.policy
    described: dict[str, Any] = {
        "enforce": policy.enforce,
        "deadline": iso(policy.requires_by()),
        "changed_at": iso(policy.changed_at),
    }
    if owner:
        described["changed_by"] = policy.changed_by
    return {"id": site.id, "name": site.name, "policy": described}


def member_json(member: MemberStatus) -> dict[str, Any]:
    return {
        "user_id": member.user_id,
        "role": member.role.value,
        "two_factor": member.two_factor,
        "method": member.method,
        "phone_verified": member.phone_verified,
    }


def method_field(value: str) -> Method:
    try:
        return Method(value)
    except ValueError:
        raise Refused(Reason.INVALID_METHOD) from None


class API:
    def __init__(self, kit: Kit) -> None:
        self.kit = kit
        self.service = kit.service
        self._openapi: dict[str, Any] | None = None

    def routes(self) -> list[Route]:
        table: list[tuple[str, str, Handler, bool]] = [
            ("/api/status", "GET", self.status, False),
            ("/api/totp/setup", "POST", self.totp_setup, True),
            ("/api/totp/confirm", "POST", self.totp_confirm, True),
            ("/api/verify", "POST", self.verify, True),
            ("/api/recovery-codes", "POST", self.recovery_codes, True),
            ("/api/disable", "POST", self.disable, True),
            ("/api/phone", "POST", self.phone, True),
            ("/api/phone/verify", "POST", self.phone_verify, True),
            ("/api/sms/send", "POST", self.sms_send, True),
            ("/api/sessions/revoke", "POST", self.revoke_sessions, True),
        ]
        if self.kit.sites is not None:
            table += [
                ("/api/sites", "GET", self.sites, False),
                ("/api/sites/{site}/members", "GET", self.site_members, False),
                ("/api/sites/{site}/policy", "PUT", self.site_policy, True),
            ]
        if self.kit.trusted_devices is not None:
            table += [
                ("/api/devices", "GET", self.devices, False),
                ("/api/devices", "DELETE", self.forget_devices, True),
                ("/api/devices/{device}", "DELETE", self.forget_device, True),
            ]
        by_path: dict[str, dict[str, tuple[Handler, bool]]] = {}
        for path, method, handler, mutates in table:
            by_path.setdefault(path, {})[method] = (handler, mutates)
        routes = [
            # Every method reaches the endpoint, so a wrong one gets the JSON 405, not the
            # app's own (often text/plain) error page.
            Route(path, self._endpoint(handlers), methods=ALL_METHODS)
            for path, handlers in by_path.items()
        ]
        routes.append(Route("/api/openapi.json", self.openapi, methods=["GET", "HEAD"]))
        catch_all = Route("/api/{rest:path}", _not_found, methods=ALL_METHODS)
        catch_all.path_regex = re.compile(catch_all.path_regex.pattern, re.DOTALL)  # "%0A" too
        routes.append(catch_all)
        return routes

    def _endpoint(
        self, handlers: dict[str, tuple[Handler, bool]]
    ) -> Callable[[Request], Awaitable[Response]]:
        if "GET" in handlers:
            handlers = {**handlers, "HEAD": handlers["GET"]}
        allow = ", ".join(sorted(handlers))
        use = " or ".join(method for method in sorted(handlers) if method != "HEAD")

        async def endpoint(request: Request) -> Response:
            chosen = handlers.get(request.method)
            if chosen is None:
                response = refusal_json(Reason.METHOD_NOT_ALLOWED, methods=use)
                response.headers["Allow"] = allow
                return response
            handler, mutates = chosen
            try:
                if mutates and not same_origin(request.scope, self.kit.settings):
                    return refusal_json(Reason.CROSS_SITE_REQUEST)
                caller = await caller_of(request, self.kit.gate)
                if caller is None:
                    return refusal_json(Reason.NOT_AUTHENTICATED)
                return await handler(request, caller)
            except Refused as exc:
                return denied_json(exc.denied, self.kit.clock())
            except SMSError as exc:
                logger.warning("mfa_guard could not send a text: %s", exc.detail or "no detail")
                row = Reason.SMS_UNAVAILABLE
                return json_error(row.status, row.code, exc.message, retry_after=row.retry_after)
            except ConfigurationError as exc:  # wired wrong: permanent, not an outage
                report_miswiring(exc)
                return misconfigured_response(request.scope, self.kit.settings)
            except MFAGuardError as exc:
                return unavailable_json(exc)

        return endpoint

    async def openapi(self, request: Request) -> Response:
        """The OpenAPI 3.1 document of this API (public: it holds no user data)."""
        if self._openapi is None:
            self._openapi = openapi.document(self.kit)
        return JSONResponse(self._openapi)

    async def status(self, request: Request, caller: Caller) -> Response:
        enrolment = await self.service.enrolment(caller.user_id)
        verified = caller.is_verified() and enrolment.enrolled
        methods = ["totp", "recovery"] if enrolment.enrolled else []
        if self.service.sms_offered(enrolment):
            methods.append("sms")
        return JSONResponse(
            {
                "authenticated": True,
                "enrolled": enrolment.enrolled,
                "verified": verified,
                "verified_method": caller.marker.method if verified else None,
                "methods": methods,
                "recovery_codes_left": enrolment.recovery_codes_left,
                # Only a set-up this session began: another session's is none of its business.
                "enrolment_pending": self.service.setup_pending(enrolment, caller.marker.nonce),
                "phone": None if enrolment.phone is None else mask_phone(enrolment.phone),
                "phone_verified": enrolment.phone_verified_at is not None,
                "enforcement": await self._enforcement(caller),
            },
            headers={"Cache-Control": "no-store"},
        )

    async def _enforcement(self, caller: Caller) -> dict[str, Any]:
        if self.kit.sites is None:
            enforcement = Enforcement(everyone_from=self.kit.settings.everyone.required_from())
        else:
            enforcement = await self.kit.site_service.enforcement(caller.user_id)
        return {
            "required": enforcement.required,
            "everyone": enforcement.everyone,
            "deadline": iso(enforcement.deadline),
            "sites": [
                {"id": site.id, "name": site.name, "deadline": iso(site.policy.requires_by())}
                for site in enforcement.sites
            ],
        }

    async def sites(self, request: Request, caller: Caller) -> Response:
        if (refused := await self._needs_verified(caller)) is not None:
            return refused
        memberships = await self.kit.site_service.memberships(caller.user_id)
        return JSONResponse(
            {
                "sites": [
                    site_json(m.site, owner=m.role is Role.OWNER) | {"role": m.role.value}
                    for m in memberships
                ]
            },
            headers={"Cache-Control": "no-store"},
        )

    async def site_members(self, request: Request, caller: Caller) -> Response:
        site_id = site_param(request)
        # Other people's e-mail, role, 2FA and phone state: never to a session that holds the
        # password only (and, before the lookup, not even whether the site exists).
        if (refused := await self._needs_verified(caller)) is not None:
            return refused
        service = self.kit.site_service
        result = await service.members(caller.user_id, site_id, caller.ip)
        if isinstance(result, Denied):
            return denied_json(result, self.kit.clock())
        site = await service.sites.site(site_id)
        if site is None:  # removed since the owner check
            return denied_json(Denied(Reason.SITE_NOT_FOUND), self.kit.clock())
        return JSONResponse(
            {**site_json(site, owner=True), "members": [member_json(m) for m in result]},
            headers={"Cache-Control": "no-store"},
        )

    async def site_policy(self, request: Request, caller: Caller) -> Response:
        site_id = site_param(request)
        data = await json_body(request)
        enforce = data.get("enforce")
        if not isinstance(enforce, bool):
            raise Refused(Reason.FIELD_NOT_A_BOOLEAN, field="enforce")
        grace_hours = grace_field(data, self.kit.settings.max_grace_hours)
        # The owner's own state, read now: a policy change is not decided on a stale marker.
        await caller.recheck()
        result = await self.kit.site_service.set_policy(
            caller.user_id,
            site_id,
            enforce=enforce,
            grace_hours=grace_hours,
            marker=caller.marker,
            ip=caller.ip,
        )
        if isinstance(result, Denied):
            return denied_json(result, self.kit.clock())
        if isinstance(result, MembersWithoutMFA):
            refused = Denied(Reason.MEMBERS_WITHOUT_MFA, params={"count": len(result.members)})
            members = [member_json(m) for m in result.members]
            return denied_json(refused, self.kit.clock(), extra={"members": members})
        return JSONResponse(site_json(result, owner=True), headers={"Cache-Control": "no-store"})

    async def totp_setup(self, request: Request, caller: Caller) -> Response:
        await json_body(request)
        result = await self.service.begin_setup(
            caller.user_id,
            self.kit.account_name(request.scope),
            caller.ip,
            session=caller.marker.nonce,
        )
        if isinstance(result, Denied):
            return denied_json(result, self.kit.clock())
        return JSONResponse(
            {
                "secret": result.secret,
                "secret_grouped": result.grouped_secret,
                "otpauth_uri": result.otpauth_uri,
                "qr_svg": result.qr_svg,
            },
            headers={"Cache-Control": "no-store"},
        )

    async def totp_confirm(self, request: Request, caller: Caller) -> Response:
        code = string_field(await json_body(request), "code")
        result = await self.service.confirm_setup(
            caller.user_id, code, caller.ip, session=caller.marker.nonce
        )
        if isinstance(result, Denied):
            return denied_json(result, self.kit.clock())
        caller.mark_verified(result.method.value, result.epoch)
        return JSONResponse(
            {"enrolled": True, "verified": True, "recovery_codes": list(result.recovery_codes)},
            headers={"Cache-Control": "no-store"},
        )

    async def verify(self, request: Request, caller: Caller) -> Response:
        data = await json_body(request)
        method = method_field(string_field(data, "method", default="totp"))
        code = string_field(data, "code")
        remember = data.get("remember_device", False)
        if not isinstance(remember, bool):
            raise Refused(Reason.FIELD_NOT_A_BOOLEAN, field="remember_device")
        if remember and self.kit.trusted_devices is None:
            # Refused before the code is checked: the code is not spent.
            return refusal_json(Reason.TRUSTED_DEVICES_DISABLED)
        result = await self.service.verify(
            caller.user_id, method, code, caller.ip, session=caller.marker.nonce
        )
        if isinstance(result, Denied):
            return denied_json(result, self.kit.clock())
        caller.mark_verified(result.method.value, result.epoch)
        response = JSONResponse(
            {"verified": True, "method": result.method.value, "device_remembered": remember},
            headers={"Cache-Control": "no-store"},
        )
        if remember:
            await remember_browser(self.kit, caller, result.epoch, response)
        return response

    async def devices(self, request: Request, caller: Caller) -> Response:
        """The user's remembered browsers, most recently used first."""
        if (refused := await self._needs_verified(caller)) is not None:
            return refused
        devices = self.kit.trusted_devices
        listed = [] if devices is None else await devices.trusted(caller.user_id)
        return JSONResponse(
            {"devices": [device_json(self.kit, caller, device) for device in listed]},
            headers={"Cache-Control": "no-store"},
        )

    async def forget_device(self, request: Request, caller: Caller) -> Response:
        if (refused := await self._needs_verified(caller)) is not None:
            return refused
        device_id = str(request.path_params["device"])
        devices = self.kit.trusted_devices
        # An id no store can hold (too long, a control character such as NUL, which PostgreSQL
        # refuses) is the same 404 as an unknown one, answered without a lookup.
        if (
            devices is None
            or len(device_id) > MAX_DEVICE_ID
            or not device_id.isprintable()
            or not await devices.forget(caller.user_id, device_id, caller.ip)
        ):
            return refusal_json(Reason.DEVICE_NOT_FOUND)
        return JSONResponse({"forgotten": 1}, headers={"Cache-Control": "no-store"})

    async def forget_devices(self, request: Request, caller: Caller) -> Response:
        if (refused := await self._needs_verified(caller)) is not None:
            return refused
        devices = self.kit.trusted_devices
        count = 0 if devices is None else await devices.forget_all(caller.user_id, caller.ip)
        return JSONResponse({"forgotten": count}, headers={"Cache-Control": "no-store"})

    async def _needs_verified(self, caller: Caller) -> Response | None:
        """401 ``mfa_required`` for an enrolled caller whose session has not completed its
        second factor: every read beyond the caller's own status (docs/api.md)."""
        await caller.recheck()
        if caller.marker.enrolled and not caller.is_verified():
            return refusal_json(Reason.MFA_REQUIRED)
        return None

    async def recovery_codes(self, request: Request, caller: Caller) -> Response:
        await json_body(request)
        await caller.recheck()
        if not caller.marker.enrolled:
            return denied_json(Denied(Reason.NOT_ENROLLED), self.kit.clock())
        if not caller.is_recently_verified():
            return refusal_json(Reason.RECENT_MFA_FOR_RECOVERY_CODES)
        if not caller.is_strongly_verified():
            return denied_json(Denied(Reason.STRONG_FACTOR_REQUIRED), self.kit.clock())
        result = await self.service.regenerate_recovery_codes(caller.user_id, caller.ip)
        if isinstance(result, Denied):
            return denied_json(result, self.kit.clock())
        await forget_browsers(self.kit, caller)
        return JSONResponse({"recovery_codes": result}, headers={"Cache-Control": "no-store"})

    async def disable(self, request: Request, caller: Caller) -> Response:
        data = await json_body(request)
        method = method_field(string_field(data, "method", default="totp"))
        code = string_field(data, "code")
        await caller.recheck()
        if caller.marker.enrolled and not caller.is_verified():
            return refusal_json(Reason.MFA_REQUIRED)
        result = await self.service.disable(
            caller.user_id, method, code, caller.ip, session=caller.marker.nonce
        )
        if isinstance(result, Denied):
            return denied_json(result, self.kit.clock())
        await forget_browsers(self.kit, caller)
        await caller.recheck()
        return JSONResponse({"enrolled": False}, headers={"Cache-Control": "no-store"})

    async def revoke_sessions(self, request: Request, caller: Caller) -> Response:
        await json_body(request)
        await caller.recheck()
        if caller.marker.enrolled and not caller.is_verified():
            return refusal_json(Reason.MFA_REQUIRED)
        result = await self.service.revoke_other_sessions(caller.user_id, caller.ip)
        if isinstance(result, Denied):
            return denied_json(result, self.kit.clock())
        # This session asked: it stays verified under the new epoch; every other one must
        # verify again at its next re-check. The epoch bump made every remembered browser
        # untrusted: they are forgotten.
        caller.adopt_epoch(result)
        await forget_browsers(self.kit, caller)
        return JSONResponse({"other_sessions_revoked": True}, headers={"Cache-Control": "no-store"})

    async def phone(self, request: Request, caller: Caller) -> Response:
        raw = string_field(await json_body(request), "phone")
        await caller.recheck()
        if caller.marker.enrolled and not caller.is_recently_verified():
            # A new number is a new authenticator (NIST SP 800-63B 5.1.3.3).
            return refusal_json(Reason.RECENT_MFA_FOR_PHONE)
        if caller.marker.enrolled and not caller.is_strongly_verified():
            # Not with a code texted to the number being replaced.
            return denied_json(Denied(Reason.STRONG_FACTOR_REQUIRED), self.kit.clock())
        result = await self.service.register_phone(
            caller.user_id, raw, caller.ip, session=caller.marker.nonce
        )
        return self._text_sent(result)

    async def phone_verify(self, request: Request, caller: Caller) -> Response:
        code = string_field(await json_body(request), "code")
        # Re-checked now, not from the marker's cache: a session revoked since it asked for the
        # text changes no phone, even within its re-check interval.
        await caller.recheck()
        if caller.marker.enrolled and not caller.is_verified():
            return refusal_json(Reason.MFA_REQUIRED)
        result = await self.service.verify_phone(
            caller.user_id,
            code,
            caller.ip,
            session=caller.marker.nonce,
            epoch=caller.marker.epoch,
        )
        if isinstance(result, Denied):
            if result.reason is Reason.CONFLICT:
                # A revocation landed meanwhile: this session learns it now, not at its re-check.
                await caller.recheck()
            return denied_json(result, self.kit.clock())
        # This session made the change: it keeps its verified state under the new epoch.
        caller.adopt_epoch(result)
        enrolment = await self.service.enrolment(caller.user_id)
        phone = None if enrolment.phone is None else mask_phone(enrolment.phone)
        return JSONResponse(
            {"phone": phone, "phone_verified": True}, headers={"Cache-Control": "no-store"}
        )

    async def sms_send(self, request: Request, caller: Caller) -> Response:
        await json_body(request)
        result = await self.service.send_sign_in_code(
            caller.user_id, caller.ip, session=caller.marker.nonce
        )
        return self._text_sent(result)

    def _text_sent(self, result: TextSent | Denied) -> Response:
        now = self.kit.clock()
        if isinstance(result, Denied):
            return denied_json(result, now)
        return JSONResponse(
            {
                "sent": True,
                "phone": mask_phone(result.phone),
                "expires_in": int(result.expires_at - now),
            },
            status_code=202,
            headers={"Cache-Control": "no-store"},
        )
