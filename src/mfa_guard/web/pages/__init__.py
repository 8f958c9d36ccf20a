"""The HTML pages: challenge, enrolment, settings. Usable without JavaScript (passkeys and
security keys aside, which the pages' own script adds where the browser offers them); every form
carries a CSRF token; bad input re-renders the form with a message.

``base`` holds what every page shares (templates, forms, rendering, refusals); ``signin`` the
challenge, the text message's page and enrolment; ``settings`` the settings page and its forms;
``assets`` the scripts the pages link. What a form does is a flow of
:mod:`mfa_guard.web.flows`, shared with the JSON API."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from mfa_guard.web.pages.assets import serve_asset
from mfa_guard.web.pages.settings import SettingsPages
from mfa_guard.web.pages.signin import SignInPages

__all__ = ["Pages"]


class Pages(SignInPages, SettingsPages):
    """Every page of the kit, and their routes under the mount path."""

    def routes(self) -> list[Route]:
        routes = [
            Route(
                "/challenge", self._page(self.challenge), methods=["GET", "POST"], name="challenge"
            ),
            Route("/sms", self._page(self.sms), methods=["GET", "POST"], name="sms"),
            Route("/enrol", self._page(self.enrol), methods=["GET", "POST"], name="enrol"),
            Route("/enrol/confirm", self._page(self.enrol_confirm), methods=["POST"]),
            Route("/settings", self._page(self.settings), methods=["GET"], name="settings"),
            Route(
                "/settings/recovery-codes", self._page(self.new_recovery_codes), methods=["POST"]
            ),
            Route("/settings/disable", self._page(self.disable), methods=["POST"]),
            Route("/settings/sessions", self._page(self.revoke_sessions), methods=["POST"]),
            Route("/settings/phone", self._page(self.phone), methods=["POST"]),
            Route("/settings/phone/verify", self._page(self.phone_verify), methods=["POST"]),
            Route("/settings/apps", self._page(self.add_app), methods=["POST"]),
            Route("/settings/apps/confirm", self._page(self.confirm_app), methods=["POST"]),
            Route(
                "/settings/authenticators/rename",
                self._page(self.rename_authenticator),
                methods=["POST"],
            ),
            Route(
                "/settings/authenticators/remove",
                self._page(self.remove_authenticator),
                methods=["POST"],
            ),
            # The pages' scripts, for anybody (they hold nothing of a user's).
            Route("/static/{name}", self._static, methods=["GET"], name="static"),
        ]
        if self.kit.trusted_devices is not None:
            routes += [
                Route("/settings/devices/forget", self._page(self.forget_device), methods=["POST"]),
                Route(
                    "/settings/devices/forget-all",
                    self._page(self.forget_devices),
                    methods=["POST"],
                ),
            ]
        return routes

    async def _static(self, request: Request) -> Response:
        """A script of the pages, with their framing headers (as every response of theirs)."""
        response = await serve_asset(request)
        response.headers.update(self._framing_headers())
        return response
