"""The JSON API: ``{mount}/api/...``. Errors are ``{"error": {"code", "message"}}``.

Its routes are the operations of the OpenAPI table (:data:`mfa_guard.web.openapi.OPERATIONS`),
each served by its handler. A handler reads its body into its request model, runs its flow
(:mod:`mfa_guard.web.flows`) and answers the result through its response model
(:mod:`mfa_guard.web.schemas`); a refusal is answered from the refusal table
(:mod:`mfa_guard.errors`)."""

from __future__ import annotations

import logging
import re
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from mfa_guard.core.ids import valid_id
from mfa_guard.core.sms import mask_phone
from mfa_guard.enforcement import MemberStatus, MembersWithoutMFA
from mfa_guard.errors import ConfigurationError, Denied, MFAGuardError, Reason, Refused
from mfa_guard.security_log import SecurityLogEntry
from mfa_guard.services import TextSent
from mfa_guard.services import Verified as ServiceVerified
from mfa_guard.sms import SMSError
from mfa_guard.stores.base import Authenticator
from mfa_guard.stores.sites import Role, Site
from mfa_guard.web import openapi, schemas
from mfa_guard.web.flows import (
    MAX_AUTHENTICATOR_ID,
    MAX_MEMBER_ID,
    MAX_SITE_ID,
    Flows,
    SignedIn,
)
from mfa_guard.web.http import (
    NAVIGATION_METHODS,
    denied_json,
    json_error,
    refusal_json,
    same_origin,
    unavailable_json,
)
from mfa_guard.web.requests import MAX_WEBAUTHN_BODY_BYTES, Caller, caller_of
from mfa_guard.web.schemas import (
    Code,
    Empty,
    MethodCode,
    NamedCode,
    Naming,
    PasskeyAssertion,
    PasskeyRegistration,
    Phone,
    Verification,
    json_response,
    policy_change,
    read_body,
)
from mfa_guard.web.wiring import misconfigured_response, report_miswiring

if TYPE_CHECKING:
    from mfa_guard.web.context import Kit

logger = logging.getLogger("mfa_guard")
Handler = Callable[[Request, Caller], Awaitable[Response]]
Endpoint = Callable[[Request], Awaitable[Response]]
ALL_METHODS = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]


async def _not_found(request: Request) -> Response:
    return refusal_json(Reason.NO_SUCH_ENDPOINT)


def site_param(request: Request) -> str:
    """The site id of the path; one no directory can hold is the same 404 as an unknown
    site."""
    site_id = str(request.path_params["site"])
    if not valid_id(site_id, MAX_SITE_ID):
        raise Refused(Reason.SITE_NOT_FOUND)
    return site_id


def authenticator_param(request: Request) -> str:
    """The authenticator id of the path; one no store can hold is the same 404 as an unknown
    one, before the body is read."""
    authenticator_id = str(request.path_params["authenticator"])
    if not valid_id(authenticator_id, MAX_AUTHENTICATOR_ID):
        raise Refused(Reason.AUTHENTICATOR_NOT_FOUND)
    return authenticator_id


def site_fields(site: Site, *, owner: bool) -> dict[str, Any]:
    """What :class:`~mfa_guard.web.schemas.Site` holds of a site: who last changed its policy
    is told to its owners only."""
    policy = site.policy
    told = {"changed_by": policy.changed_by} if owner else {}
    described = schemas.Policy(
        enforce=policy.enforce,
        deadline=policy.requires_by(),
        methods=policy.methods,
        methods_deadline=policy.methods_from(policy.methods),
        changed_at=policy.changed_at,
        **told,
    )
    return {"id": site.id, "name": site.name, "policy": described}


def authenticator_model(authenticator: Authenticator) -> schemas.Authenticator:
    return schemas.Authenticator(
        id=authenticator.id,
        kind=authenticator.kind,
        name=authenticator.name,
        created_at=authenticator.created_at,
        last_used_at=authenticator.last_used_at,
        transports=list(authenticator.transports),
        backed_up=authenticator.backed_up,
    )


def member_model(member: MemberStatus) -> schemas.Member:
    return schemas.Member.model_validate(member, from_attributes=True)


def logged_event_model(entry: SecurityLogEntry) -> schemas.LoggedEvent:
    """An event of the log as the API tells it: its User-Agent only as the browser's name."""
    event = entry.event
    return schemas.LoggedEvent(
        id=entry.id,
        kind=event.kind,
        at=event.at,
        user=event.user_id,
        method=event.method,
        site=event.site,
        detail=event.detail,
        ip=event.client_ip,
        browser=None if entry.browser is None else entry.browser.name,
    )


class API:
    """The JSON API of one kit: its routes and their handlers."""

    def __init__(self, kit: Kit) -> None:
        self.kit = kit
        self.flows = Flows(kit)
        self._openapi: dict[str, Any] | None = None

    def handlers(self) -> dict[tuple[str, str], Endpoint]:
        """What serves each operation of :data:`~mfa_guard.web.openapi.OPERATIONS`, by its
        method and path: the routes are made from that table, so each route is a documented
        operation and each operation needs its handler here."""
        signed_in = self._signed_in
        return {
            ("get", "/status"): signed_in(self.status),
            ("post", "/totp/setup"): signed_in(self.totp_setup),
            ("post", "/totp/confirm"): signed_in(self.totp_confirm),
            ("post", "/verify"): signed_in(self.verify),
            ("post", "/recovery-codes"): signed_in(self.recovery_codes),
            ("post", "/disable"): signed_in(self.disable),
            ("post", "/sessions/revoke"): signed_in(self.revoke_sessions),
            ("post", "/phone"): signed_in(self.phone),
            ("post", "/phone/verify"): signed_in(self.phone_verify),
            ("post", "/sms/send"): signed_in(self.sms_send),
            ("get", "/sites"): signed_in(self.sites),
            ("get", "/sites/{site}/members"): signed_in(self.site_members),
            ("get", "/sites/{site}/events"): signed_in(self.site_events),
            ("put", "/sites/{site}/policy"): signed_in(self.site_policy),
            ("post", "/sites/{site}/members/{member}/reset"): signed_in(self.reset_member),
            ("post", "/webauthn/register/options"): signed_in(self.passkey_registration),
            ("post", "/webauthn/register"): signed_in(self.register_passkey),
            ("post", "/webauthn/authenticate/options"): signed_in(self.passkey_sign_in),
            ("post", "/webauthn/authenticate"): signed_in(self.verify_passkey),
            ("get", "/authenticators"): signed_in(self.authenticators),
            ("patch", "/authenticators/{authenticator}"): signed_in(self.rename_authenticator),
            ("delete", "/authenticators/{authenticator}"): signed_in(self.remove_authenticator),
            ("get", "/devices"): signed_in(self.devices),
            ("delete", "/devices"): signed_in(self.forget_devices),
            ("delete", "/devices/{device}"): signed_in(self.forget_device),
            ("get", "/openapi.json"): self.openapi,
        }

    def routes(self) -> list[Route]:
        """A route for each path of the operations this app offers, then a JSON 404 for any
        other path under ``api/``."""
        handlers = self.handlers()
        by_path: dict[str, dict[str, Endpoint]] = {}
        for operation in openapi.OPERATIONS:
            if operation.offered(self.kit):
                endpoint = handlers[operation.method, operation.path]
                by_path.setdefault("/api" + operation.path, {})[operation.method.upper()] = endpoint
        routes = [
            # Every method reaches the endpoint, so a wrong one gets the JSON 405, not the
            # app's own (often text/plain) error page.
            Route(path, self._endpoint(endpoints), methods=ALL_METHODS)
            for path, endpoints in by_path.items()
        ]
        catch_all = Route("/api/{rest:path}", _not_found, methods=ALL_METHODS)
        catch_all.path_regex = re.compile(catch_all.path_regex.pattern, re.DOTALL)  # "%0A" too
        routes.append(catch_all)
        return routes

    def _signed_in(self, handler: Handler) -> Endpoint:
        """``handler`` for the signed-in user only: anybody else is answered a 401."""

        async def endpoint(request: Request) -> Response:
            caller = await caller_of(request, self.kit.gate)
            if caller is None:
                return refusal_json(Reason.NOT_AUTHENTICATED)
            return await handler(request, caller)

        return endpoint

    def _endpoint(self, endpoints: dict[str, Endpoint]) -> Endpoint:
        """One path's endpoint: its method's, after the same-origin check of a change, with
        the refusals and failures it raises answered as JSON errors."""
        if "GET" in endpoints:
            endpoints = {**endpoints, "HEAD": endpoints["GET"]}
        allow = ", ".join(sorted(endpoints))
        use = " or ".join(method for method in sorted(endpoints) if method != "HEAD")

        async def endpoint(request: Request) -> Response:
            chosen = endpoints.get(request.method)
            if chosen is None:
                response = refusal_json(Reason.METHOD_NOT_ALLOWED, methods=use)
                response.headers["Allow"] = allow
                return response
            try:
                changes = request.method not in NAVIGATION_METHODS
                if changes and not same_origin(request.scope, self.kit.settings):
                    return refusal_json(Reason.CROSS_SITE_REQUEST)
                return await chosen(request)
            except Refused as exc:
                return self._refused(exc.denied)
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

    def _refused(
        self, denied: Denied, *, members: list[schemas.Member] | None = None
    ) -> JSONResponse:
        return denied_json(denied, self.kit.clock(), members=members)

    async def openapi(self, request: Request) -> Response:
        """The OpenAPI 3.1 document of this API (public: it holds no user data)."""
        if self._openapi is None:
            self._openapi = openapi.document(self.kit)
        return JSONResponse(self._openapi)

    async def status(self, request: Request, caller: Caller) -> Response:
        status = await self.flows.status(caller)
        enrolment = status.enrolment
        enforcement = status.enforcement
        sites = [
            schemas.EnforcingSite(id=site.id, name=site.name, deadline=site.policy.requires_by())
            for site in enforcement.sites
        ]
        return json_response(
            schemas.Status(
                authenticated=True,
                enrolled=enrolment.enrolled,
                verified=status.verified,
                verified_method=status.method,
                methods=status.methods,
                authenticators=[authenticator_model(a) for a in enrolment.authenticators],
                recovery_codes_left=enrolment.recovery_codes_left,
                enrolment_pending=status.setup_pending,
                phone=None if enrolment.phone is None else mask_phone(enrolment.phone),
                phone_verified=enrolment.phone_verified_at is not None,
                enforcement=schemas.Enforcement(
                    required=enforcement.required,
                    everyone=enforcement.everyone,
                    deadline=enforcement.deadline,
                    sites=sites,
                ),
            )
        )

    async def sites(self, request: Request, caller: Caller) -> Response:
        result = await self.flows.sites(caller)
        if isinstance(result, Denied):
            return self._refused(result)
        sites = [
            schemas.Membership(**site_fields(m.site, owner=m.role is Role.OWNER), role=m.role)
            for m in result
        ]
        return json_response(schemas.Sites(sites=sites))

    async def site_members(self, request: Request, caller: Caller) -> Response:
        site_id = site_param(request)
        result = await self.flows.site_members(caller, site_id)
        if isinstance(result, Denied):
            return self._refused(result)
        site, members = result
        return json_response(
            schemas.SiteMembers(
                **site_fields(site, owner=True), members=[member_model(m) for m in members]
            )
        )

    async def reset_member(self, request: Request, caller: Caller) -> Response:
        site_id = site_param(request)
        member = str(request.path_params["member"])
        await read_body(request, Empty)
        result = await self.flows.reset_member(caller, site_id, member)
        if isinstance(result, Denied):
            return self._refused(result)
        return json_response(
            schemas.MemberReset(
                user_id=result.user_id,
                two_factor=False,
                devices_forgotten=result.devices_forgotten,
            )
        )

    async def site_events(self, request: Request, caller: Caller) -> Response:
        site_id = site_param(request)
        filters = schemas.event_filters(request.query_params, MAX_MEMBER_ID)
        result = await self.flows.site_events(caller, site_id, filters)
        if isinstance(result, Denied):
            return self._refused(result)
        return json_response(
            schemas.SiteEvents(
                events=[logged_event_model(entry) for entry in result.entries],
                next_cursor=result.next_cursor,
            )
        )

    async def site_policy(self, request: Request, caller: Caller) -> Response:
        site_id = site_param(request)
        change = await read_body(request, policy_change(self.kit.settings.max_grace_hours))
        result = await self.flows.set_site_policy(
            caller,
            site_id,
            enforce=change.enforce,
            grace_hours=change.grace_hours,
            methods=change.methods,
        )
        if isinstance(result, Denied):
            return self._refused(result)
        if isinstance(result, MembersWithoutMFA):
            members = [member_model(m) for m in result.members]
            return self._refused(result.denied, members=members)
        return json_response(schemas.Site(**site_fields(result, owner=True)))

    async def totp_setup(self, request: Request, caller: Caller) -> Response:
        await read_body(request, Empty)
        result = await self.flows.begin_setup(caller)
        if isinstance(result, Denied):
            return self._refused(result)
        return json_response(
            schemas.Setup(
                secret=result.secret,
                secret_grouped=result.grouped_secret,
                otpauth_uri=result.otpauth_uri,
                qr_svg=result.qr_svg,
            )
        )

    async def totp_confirm(self, request: Request, caller: Caller) -> Response:
        body = await read_body(request, NamedCode)
        result = await self.flows.confirm_setup(caller, body.code, body.name)
        if isinstance(result, Denied):
            return self._refused(result)
        return self._enrolled(result)

    def _enrolled(self, result: ServiceVerified) -> Response:
        if result.authenticator is None:
            raise RuntimeError("a set-up's result names the authenticator it added")
        return json_response(
            schemas.Enrolled(
                enrolled=True,
                verified=True,
                recovery_codes=list(result.recovery_codes),
                authenticator=authenticator_model(result.authenticator),
            )
        )

    async def passkey_registration(self, request: Request, caller: Caller) -> Response:
        await read_body(request, Empty)
        result = await self.flows.passkey_registration(caller)
        if isinstance(result, Denied):
            return self._refused(result)
        return json_response(schemas.PasskeyOptions(publicKey=result))

    async def register_passkey(self, request: Request, caller: Caller) -> Response:
        body = await read_body(request, PasskeyRegistration, MAX_WEBAUTHN_BODY_BYTES)
        result = await self.flows.register_passkey(caller, body.credential, body.name)
        if isinstance(result, Denied):
            return self._refused(result)
        return self._enrolled(result)

    async def passkey_sign_in(self, request: Request, caller: Caller) -> Response:
        await read_body(request, Empty)
        result = await self.flows.passkey_sign_in(caller)
        if isinstance(result, Denied):
            return self._refused(result)
        return json_response(schemas.PasskeyOptions(publicKey=result))

    async def verify_passkey(self, request: Request, caller: Caller) -> Response:
        body = await read_body(request, PasskeyAssertion, MAX_WEBAUTHN_BODY_BYTES)
        remember = body.remember_device
        result = await self.flows.verify_passkey(caller, body.credential, remember=remember)
        return self._verified(result, remember)

    def _verified(self, result: SignedIn | Denied, remember: bool) -> Response:
        """The answer of a verified second factor, with the remembered browser's cookie."""
        if isinstance(result, Denied):
            return self._refused(result)
        response = json_response(
            schemas.Verified(
                verified=True, method=result.verified.method, device_remembered=remember
            )
        )
        self.flows.set_device_cookie(response, result.remembered)
        return response

    async def authenticators(self, request: Request, caller: Caller) -> Response:
        """The user's second factors, oldest first."""
        result = await self.flows.authenticators(caller)
        if isinstance(result, Denied):
            return self._refused(result)
        return json_response(
            schemas.Authenticators(authenticators=[authenticator_model(a) for a in result])
        )

    async def rename_authenticator(self, request: Request, caller: Caller) -> Response:
        authenticator_id = authenticator_param(request)
        body = await read_body(request, Naming)
        result = await self.flows.rename_authenticator(caller, authenticator_id, body.name)
        if isinstance(result, Denied):
            return self._refused(result)
        return json_response(authenticator_model(result))

    async def remove_authenticator(self, request: Request, caller: Caller) -> Response:
        authenticator_id = authenticator_param(request)
        result = await self.flows.remove_authenticator(caller, authenticator_id)
        if isinstance(result, Denied):
            return self._refused(result)
        return json_response(schemas.Removed(enrolled=caller.marker.enrolled))

    async def verify(self, request: Request, caller: Caller) -> Response:
        body = await read_body(request, Verification)
        remember = body.remember_device
        result = await self.flows.verify(caller, body.method, body.code, remember=remember)
        return self._verified(result, remember)

    async def devices(self, request: Request, caller: Caller) -> Response:
        """The user's remembered browsers, most recently used first."""
        result = await self.flows.devices(caller)
        if isinstance(result, Denied):
            return self._refused(result)
        return json_response(schemas.Devices(devices=result))

    async def forget_device(self, request: Request, caller: Caller) -> Response:
        result = await self.flows.forget_device(caller, str(request.path_params["device"]))
        if isinstance(result, Denied):
            return self._refused(result)
        return json_response(schemas.Forgotten(forgotten=1))

    async def forget_devices(self, request: Request, caller: Caller) -> Response:
        result = await self.flows.forget_devices(caller)
        if isinstance(result, Denied):
            return self._refused(result)
        return json_response(schemas.Forgotten(forgotten=result))

    async def recovery_codes(self, request: Request, caller: Caller) -> Response:
        await read_body(request, Empty)
        result = await self.flows.regenerate_recovery_codes(caller)
        if isinstance(result, Denied):
            return self._refused(result)
        return json_response(schemas.RecoveryCodes(recovery_codes=result))

    async def disable(self, request: Request, caller: Caller) -> Response:
        body = await read_body(request, MethodCode)
        result = await self.flows.disable(caller, body.method, body.code)
        if isinstance(result, Denied):
            return self._refused(result)
        return json_response(schemas.Disabled(enrolled=False))

    async def revoke_sessions(self, request: Request, caller: Caller) -> Response:
        await read_body(request, Empty)
        result = await self.flows.revoke_other_sessions(caller)
        if isinstance(result, Denied):
            return self._refused(result)
        return json_response(schemas.SessionsRevoked(other_sessions_revoked=True))

    async def phone(self, request: Request, caller: Caller) -> Response:
        body = await read_body(request, Phone)
        return self._text_sent(await self.flows.register_phone(caller, body.phone))

    async def phone_verify(self, request: Request, caller: Caller) -> Response:
        body = await read_body(request, Code)
        result = await self.flows.verify_phone(caller, body.code)
        if isinstance(result, Denied):
            return self._refused(result)
        enrolment = await self.kit.service.enrolment(caller.user_id)
        phone = None if enrolment.phone is None else mask_phone(enrolment.phone)
        return json_response(schemas.PhoneVerified(phone=phone, phone_verified=True))

    async def sms_send(self, request: Request, caller: Caller) -> Response:
        await read_body(request, Empty)
        return self._text_sent(await self.flows.send_sign_in_code(caller))

    def _text_sent(self, result: TextSent | Denied) -> Response:
        if isinstance(result, Denied):
            return self._refused(result)
        expires_in = int(result.expires_at - self.kit.clock())
        return json_response(
            schemas.TextSent(sent=True, phone=mask_phone(result.phone), expires_in=expires_in),
            202,
        )
