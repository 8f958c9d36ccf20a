"""The use cases the pages and the JSON API share. A flow takes the :class:`Caller` (and the
inputs its surface parsed) and returns its result, or a :class:`~mfa_guard.errors.Denied` from
the refusal table: ``api.py`` answers it as JSON, ``pages.py`` as a page, a redirect or a form's
error. The session rules (re-checked now, verified, recently and strongly verified for a change
of factor) are written here once."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from starlette.datastructures import Headers
from starlette.responses import Response

from mfa_guard.core.ids import MAX_USER_ID, valid_id
from mfa_guard.devices import Remembered, token_hash
from mfa_guard.enforcement import Enforcement, MemberStatus, MembersWithoutMFA
from mfa_guard.errors import Denied, Reason
from mfa_guard.resets import ResetDone
from mfa_guard.security_log import SecurityLogPage
from mfa_guard.services import MAX_NAME, Method, Setup, TextSent, Verified, clean_name
from mfa_guard.stores.base import Authenticator, Enrolment
from mfa_guard.stores.devices import TrustedDevice
from mfa_guard.stores.sites import Membership, MethodPolicy, Site
from mfa_guard.web import schemas
from mfa_guard.web.requests import Caller

if TYPE_CHECKING:
    from mfa_guard.web.context import Kit

# Longer site ids are no site of any directory: refused before a lookup.
MAX_SITE_ID = 255
MAX_MEMBER_ID = MAX_USER_ID
# Device ids are 16 characters; anything much longer is no device.
MAX_DEVICE_ID = 64
# Authenticator ids are 16 characters (32 for an app moved from an older release's table,
# whose column holds no more).
MAX_AUTHENTICATOR_ID = 32


@dataclass(frozen=True, slots=True)
class Status:
    """The caller's own 2FA state (``api/status``)."""

    enrolment: Enrolment
    verified: bool
    method: str | None
    methods: list[str]
    # Only a set-up this session began: another session's is none of its business.
    setup_pending: bool
    enforcement: Enforcement


@dataclass(frozen=True, slots=True)
class SignedIn:
    """A verified second factor, and the browser remembered with it (if asked)."""

    verified: Verified
    remembered: Remembered | None


class Flows:
    """The shared use cases, for one kit."""

    def __init__(self, kit: Kit) -> None:
        self.kit = kit
        self.service = kit.service

    # -- the session -------------------------------------------------------------------------

    async def verified(self, caller: Caller) -> Denied | None:
        """The session re-checked now; an enrolled user who has not completed the second factor
        in it may read and change nothing beyond its own status (``mfa_required``)."""
        await caller.recheck()
        if caller.marker.enrolled and not caller.is_verified():
            return Denied(Reason.MFA_REQUIRED)
        return None

    async def _stepped_up(self, caller: Caller, reason: Reason) -> Denied | None:
        """For a new factor (recovery codes, a phone number): the session re-checked now, and
        an enrolled user's second factor verified within ``recent_mfa_seconds`` (else
        ``reason``), with the app or a recovery code, not a text (NIST SP 800-63B 5.1.3.3:
        a new number is a new authenticator)."""
        await caller.recheck()
        if not caller.marker.enrolled:
            return None
        if not caller.is_recently_verified():
            return Denied(reason)
        if not caller.is_strongly_verified():
            return Denied(Reason.STRONG_FACTOR_REQUIRED)
        return None

    async def status(self, caller: Caller) -> Status:
        enrolment = await self.service.enrolment(caller.user_id)
        verified = caller.is_verified() and enrolment.enrolled
        # Strongest first: a passkey, the app, then the fallbacks.
        methods = []
        if enrolment.keys:
            methods.append("webauthn")
        if enrolment.apps:
            methods.append("totp")
        if enrolment.enrolled:
            methods.append("recovery")
        if self.service.sms_offered(enrolment):
            methods.append("sms")
        if self.kit.sites is None:
            enforcement = Enforcement(everyone_from=self.kit.settings.everyone.required_from())
        else:
            enforcement = await self.kit.sites.enforcement(caller.user_id)
        return Status(
            enrolment=enrolment,
            verified=verified,
            method=caller.marker.method if verified else None,
            methods=methods,
            setup_pending=self.service.setup_pending(enrolment, caller.marker.nonce),
            enforcement=enforcement,
        )

    async def revoke_other_sessions(self, caller: Caller) -> int | Denied:
        """Every other session of the user verifies again at its next re-check; this one stays
        verified under the new epoch. The epoch bump made every remembered browser untrusted:
        they are forgotten."""
        if (refused := await self.verified(caller)) is not None:
            return refused
        result = await self.service.revoke_other_sessions(caller.user_id, caller.ip)
        if isinstance(result, Denied):
            return result
        caller.adopt_epoch(result)
        await self.forget_browsers(caller)
        return result

    # -- enrolment and second factors ----------------------------------------------------------

    async def begin_setup(self, caller: Caller) -> Setup | Denied:
        """A new authenticator app: the user's first, or another one after a recent strong
        second factor."""
        if (refused := await self._adding(caller)) is not None:
            return refused
        return await self.service.begin_setup(
            caller.user_id,
            self.kit.account_name(caller.scope),
            caller.ip,
            session=caller.marker.nonce,
        )

    async def pending_setup(self, caller: Caller) -> Setup | None:
        """The set-up this session began, to show its QR code again."""
        return await self.service.pending_setup(
            caller.user_id, self.kit.account_name(caller.scope), session=caller.marker.nonce
        )

    async def confirm_setup(
        self, caller: Caller, code: str, name: str | None = None
    ) -> Verified | Denied:
        """The set-up's app added with its first code. The first one turns 2FA on and verifies
        the session; another one keeps the session verified under the new epoch (every other
        session verifies again)."""
        if name is not None and (name := clean_name(name)) is None:
            return Denied(Reason.INVALID_NAME, params={"max_length": MAX_NAME})
        return await self._add(
            caller,
            lambda: self.service.confirm_setup(
                caller.user_id,
                code,
                caller.ip,
                session=caller.marker.nonce,
                name=name,
                epoch=caller.marker.epoch,
            ),
        )

    async def _adding(self, caller: Caller) -> Denied | None:
        """Before an authenticator is added, renamed or removed: nothing for a user without
        2FA; else the session verified recently with a strong factor. Under a policy that
        accepts only passkeys, a member who has one changes their factors with it (or with a
        recovery code, the way back after losing it): an app's code, which a look-alike page
        can relay, does not add the relaying party's own key."""
        refused = await self._stepped_up(caller, Reason.RECENT_MFA_FOR_FACTORS)
        if refused is not None or not caller.marker.enrolled:
            return refused
        passkey_by = caller.marker.passkey_by
        if passkey_by is None or self.kit.clock() < passkey_by:
            return None
        if caller.marker.method in (Method.WEBAUTHN.value, Method.RECOVERY.value):
            return None
        if (await self.service.enrolment(caller.user_id)).keys:
            return Denied(Reason.PASSKEY_FOR_FACTORS)
        return None

    async def _add(
        self, caller: Caller, add: Callable[[], Awaitable[Verified | Denied]]
    ) -> Verified | Denied:
        """An authenticator added by ``add`` once the session may: the user's first verifies
        the session; another keeps it verified under the new epoch. A conflict (another
        request changed the factors first) is learnt by the session at once."""
        if (refused := await self._adding(caller)) is not None:
            return refused
        first = not caller.marker.enrolled
        result = await add()
        if isinstance(result, Denied):
            if result.reason is Reason.CONFLICT:
                await caller.recheck()
            return result
        await self._factor_added(caller, result, first=first)
        return result

    async def _factor_added(self, caller: Caller, result: Verified, *, first: bool) -> None:
        if first:
            caller.mark_verified(result.method.value, result.epoch)
            return
        caller.adopt_epoch(result.epoch)
        # The epoch moved: every remembered browser must enter a code again.
        await self.forget_browsers(caller)

    # -- passkeys and security keys ------------------------------------------------------------

    async def passkey_registration(self, caller: Caller) -> dict[str, Any] | Denied:
        if (refused := await self._adding(caller)) is not None:
            return refused
        return await self.service.passkey_registration(
            caller.user_id, self.kit.account_name(caller.scope), session=caller.marker.nonce
        )

    async def register_passkey(
        self, caller: Caller, credential: object, name: str | None = None
    ) -> Verified | Denied:
        """The passkey or security key added, as an app is by :meth:`confirm_setup`."""
        return await self._add(
            caller,
            lambda: self.service.register_passkey(
                caller.user_id,
                credential,
                caller.ip,
                session=caller.marker.nonce,
                name=name,
                epoch=caller.marker.epoch,
            ),
        )

    async def passkey_sign_in(self, caller: Caller) -> dict[str, Any] | Denied:
        return await self.service.passkey_sign_in(caller.user_id, session=caller.marker.nonce)

    async def verify_passkey(
        self, caller: Caller, credential: object, *, remember: bool
    ) -> SignedIn | Denied:
        """The session verified by a passkey or security key; ``remember`` as :meth:`verify`."""
        if remember and self.kit.trusted_devices is None:
            return Denied(Reason.TRUSTED_DEVICES_DISABLED)
        result = await self.service.verify_passkey(
            caller.user_id, credential, caller.ip, session=caller.marker.nonce
        )
        if isinstance(result, Denied):
            return result
        return await self._signed_in(caller, result, remember=remember)

    # -- the user's authenticators -------------------------------------------------------------

    async def authenticators(self, caller: Caller) -> list[Authenticator] | Denied:
        if (refused := await self.verified(caller)) is not None:
            return refused
        return list((await self.service.enrolment(caller.user_id)).authenticators)

    async def rename_authenticator(
        self, caller: Caller, authenticator_id: str, name: str
    ) -> Authenticator | Denied:
        if not valid_id(authenticator_id, MAX_AUTHENTICATOR_ID):
            return Denied(Reason.AUTHENTICATOR_NOT_FOUND)
        if (refused := await self._adding(caller)) is not None:
            return refused
        if not caller.marker.enrolled:
            return Denied(Reason.AUTHENTICATOR_NOT_FOUND)
        return await self.service.rename_authenticator(
            caller.user_id, authenticator_id, name, caller.ip
        )

    async def remove_authenticator(self, caller: Caller, authenticator_id: str) -> int | Denied:
        """One authenticator removed (the last one turns 2FA off, under the disable rules):
        this session stays verified under the new epoch if another factor is left; every
        other session, and every remembered browser, verifies again."""
        if not valid_id(authenticator_id, MAX_AUTHENTICATOR_ID):
            return Denied(Reason.AUTHENTICATOR_NOT_FOUND)
        if (refused := await self._adding(caller)) is not None:
            return refused
        if not caller.marker.enrolled:
            return Denied(Reason.AUTHENTICATOR_NOT_FOUND)
        result = await self.service.remove_authenticator(
            caller.user_id, authenticator_id, caller.ip, epoch=caller.marker.epoch
        )
        if isinstance(result, Denied):
            if result.reason is Reason.CONFLICT:
                await caller.recheck()
            return result
        caller.adopt_epoch(result)
        await self.forget_browsers(caller)
        await caller.recheck()
        return result

    async def verify(
        self, caller: Caller, method: Method, code: str, *, remember: bool
    ) -> SignedIn | Denied:
        """The session verified by a code of ``method``; ``remember``: the browser too (its
        cookie goes on the answer: :meth:`set_device_cookie`). Remembering with trusted
        devices off is refused before the code is checked: the code is not spent."""
        if remember and self.kit.trusted_devices is None:
            return Denied(Reason.TRUSTED_DEVICES_DISABLED)
        if method is Method.SMS and self.texts_refused(caller):
            return Denied(Reason.SMS_REFUSED_BY_POLICY)
        result = await self.service.verify(
            caller.user_id, method, code, caller.ip, session=caller.marker.nonce
        )
        if isinstance(result, Denied):
            return result
        return await self._signed_in(caller, result, remember=remember)

    async def _signed_in(self, caller: Caller, result: Verified, *, remember: bool) -> SignedIn:
        caller.mark_verified(result.method.value, result.epoch)
        remembered = None
        if remember and self.kit.trusted_devices is not None:
            user_agent = Headers(scope=caller.scope).get("user-agent", "")
            remembered = await self.kit.trusted_devices.remember(
                caller.user_id, result.epoch, user_agent, caller.ip
            )
        return SignedIn(result, remembered)

    async def regenerate_recovery_codes(self, caller: Caller) -> list[str] | Denied:
        """New recovery codes (the old ones stop working); a factor change, so every
        remembered browser must enter a code again."""
        refused = await self._stepped_up(caller, Reason.RECENT_MFA_FOR_RECOVERY_CODES)
        if refused is not None:
            return refused
        if not caller.marker.enrolled:
            return Denied(Reason.NOT_ENROLLED)
        result = await self.service.regenerate_recovery_codes(caller.user_id, caller.ip)
        if not isinstance(result, Denied):
            await self.forget_browsers(caller)
        return result

    async def disable(self, caller: Caller, method: Method, code: str) -> int | Denied:
        """2FA off, after a code of the app or a recovery code (a texted code is refused by the
        service); the session is re-checked after it."""
        if (refused := await self.verified(caller)) is not None:
            return refused
        result = await self.service.disable(
            caller.user_id, method, code, caller.ip, session=caller.marker.nonce
        )
        if isinstance(result, Denied):
            return result
        await self.forget_browsers(caller)
        await caller.recheck()
        return result

    # -- text messages -------------------------------------------------------------------------

    async def register_phone(self, caller: Caller, raw_phone: str) -> TextSent | Denied:
        """Texts a code to a new number; it counts once the code comes back."""
        if (refused := await self._stepped_up(caller, Reason.RECENT_MFA_FOR_PHONE)) is not None:
            return refused
        return await self.service.register_phone(
            caller.user_id, raw_phone, caller.ip, session=caller.marker.nonce
        )

    async def verify_phone(self, caller: Caller, code: str) -> int | Denied:
        """The texted number verified; the session keeps its verified state under the new
        epoch. Re-checked now, not from the marker's cache: a session revoked since it asked
        for the text changes no phone, even within its re-check interval."""
        if (refused := await self.verified(caller)) is not None:
            return refused
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
            return result
        caller.adopt_epoch(result)
        return result

    def texts_refused(self, caller: Caller) -> bool:
        """Whether a policy of the user's sites (or the app) refuses texted codes by now (from
        the marker: re-read every ``recheck_seconds``)."""
        refused_from = caller.marker.refuses_from(Method.SMS.value)
        return refused_from is not None and self.kit.clock() >= refused_from

    async def send_sign_in_code(self, caller: Caller) -> TextSent | Denied:
        if self.texts_refused(caller):
            return Denied(Reason.SMS_REFUSED_BY_POLICY)
        return await self.service.send_sign_in_code(
            caller.user_id, caller.ip, session=caller.marker.nonce
        )

    # -- remembered browsers -------------------------------------------------------------------

    async def devices(self, caller: Caller) -> list[schemas.Device] | Denied:
        """The user's remembered browsers, most recently used first."""
        if (refused := await self.verified(caller)) is not None:
            return refused
        return await self.device_rows(caller)

    async def device_rows(self, caller: Caller) -> list[schemas.Device]:
        devices = self.kit.trusted_devices
        listed = [] if devices is None else await devices.trusted(caller.user_id)
        return [self.device_row(caller, device) for device in listed]

    def device_row(self, caller: Caller, device: TrustedDevice) -> schemas.Device:
        """A remembered browser as the JSON API lists it (``name`` in English)."""
        return schemas.Device(
            id=device.id,
            name=device.name,
            created_at=device.created_at,
            last_used_at=device.last_seen_at,
            expires_at=device.expires_at,
            current=self.is_this_browser(caller, device),
        )

    def is_this_browser(self, caller: Caller, device: TrustedDevice) -> bool:
        token = self.kit.gate.device_token(caller.scope)
        return token is not None and token_hash(token) == device.token_hash

    async def forget_device(self, caller: Caller, device_id: str) -> bool | Denied:
        """Forgets one remembered browser: it must enter a code again. Whether it was the
        browser making this request (its cookie can go too)."""
        if (refused := await self.verified(caller)) is not None:
            return refused
        if not device_id:
            return Denied(Reason.NO_DEVICE_CHOSEN)
        devices = self.kit.trusted_devices
        if devices is None or not valid_id(device_id, MAX_DEVICE_ID):
            return Denied(Reason.DEVICE_NOT_FOUND)
        # Whether it is this browser, known before it is gone.
        this_browser = next(
            (
                self.is_this_browser(caller, device)
                for device in await devices.devices.devices(caller.user_id)
                if device.id == device_id
            ),
            None,
        )
        if this_browser is None or not await devices.forget(caller.user_id, device_id, caller.ip):
            return Denied(Reason.DEVICE_NOT_FOUND)
        return this_browser

    async def forget_devices(self, caller: Caller) -> int | Denied:
        """Forgets every remembered browser of the user: how many there were."""
        if (refused := await self.verified(caller)) is not None:
            return refused
        devices = self.kit.trusted_devices
        return 0 if devices is None else await devices.forget_all(caller.user_id, caller.ip)

    async def forget_browsers(self, caller: Caller) -> None:
        """After a factor change or "sign out my other sessions": every remembered browser of
        the user must verify again. An epoch bump already made them untrusted; this removes
        their rows (and is what makes new recovery codes, which bump no epoch, forget them)."""
        if self.kit.trusted_devices is not None:
            await self.kit.trusted_devices.forget_all(caller.user_id, caller.ip)

    def set_device_cookie(self, response: Response, remembered: Remembered | None) -> None:
        """The remembered browser's cookie, on ``response``: ``HttpOnly``, ``SameSite=Lax``,
        ``Secure`` unless turned off, for the whole site, as long as the device is trusted."""
        devices = self.kit.trusted_devices
        if devices is None or remembered is None:
            return
        response.set_cookie(
            devices.settings.cookie_name,
            remembered.token,
            max_age=devices.max_age,
            path="/",
            secure=devices.settings.cookie_secure,
            httponly=True,
            samesite="lax",
        )

    def drop_device_cookie(self, response: Response) -> None:
        """This browser was forgotten: its cookie goes too (it would open nothing anyway)."""
        devices = self.kit.trusted_devices
        if devices is not None:
            response.delete_cookie(
                devices.settings.cookie_name,
                path="/",
                secure=devices.settings.cookie_secure,
                httponly=True,
                samesite="lax",
            )

    # -- sites ---------------------------------------------------------------------------------

    async def sites(self, caller: Caller) -> list[Membership] | Denied:
        """The user's sites, with their policies and the user's role."""
        if (refused := await self.verified(caller)) is not None:
            return refused
        return await self.kit.site_service.memberships(caller.user_id)

    async def site_members(
        self, caller: Caller, site_id: str
    ) -> tuple[Site, list[MemberStatus]] | Denied:
        """A site and its members with their 2FA, for its owners. Other people's e-mail,
        role, 2FA and phone state: never to a session that holds the password only (and,
        before the lookup, not even whether the site exists)."""
        if (refused := await self.verified(caller)) is not None:
            return refused
        service = self.kit.site_service
        members = await service.members(caller.user_id, site_id, caller.ip)
        if isinstance(members, Denied):
            return members
        site = await service.sites.site(site_id)
        if site is None:  # removed since the owner check
            return Denied(Reason.SITE_NOT_FOUND)
        return site, members

    async def reset_member(self, caller: Caller, site_id: str, member: str) -> ResetDone | Denied:
        """A member's second factor reset by an owner of the site, decided on the owner's own
        state read now (the step-up), not on a stale marker."""
        # The session re-checked now (verified() reads the stores), the step-up decided on it.
        if (refused := await self.verified(caller)) is not None:
            return refused
        return await self.kit.site_service.reset_member(
            caller.user_id, site_id, member, marker=caller.marker, ip=caller.ip
        )

    async def site_events(
        self, caller: Caller, site_id: str, filters: schemas.EventFilters
    ) -> SecurityLogPage | Denied:
        """A page of the site's security log, for its owners; as for its members, never to a
        session that holds the password only."""
        if (refused := await self.verified(caller)) is not None:
            return refused
        return await self.kit.site_service.events(
            caller.user_id,
            site_id,
            kinds=filters.kinds,
            member=filters.member,
            since=filters.since,
            until=filters.until,
            cursor=filters.cursor,
            limit=filters.limit,
            ip=caller.ip,
        )

    async def set_site_policy(
        self,
        caller: Caller,
        site_id: str,
        *,
        enforce: bool,
        grace_hours: float | None,
        methods: MethodPolicy = MethodPolicy.ANY,
    ) -> Site | MembersWithoutMFA | Denied:
        """A site's policy changed by an owner, decided on the owner's own state read now,
        not on a stale marker."""
        await caller.recheck()
        return await self.kit.site_service.set_policy(
            caller.user_id,
            site_id,
            enforce=enforce,
            grace_hours=grace_hours,
            methods=methods,
            marker=caller.marker,
            ip=caller.ip,
        )
