"""FastAPI: the dependencies' answers, the one-call include, the merged OpenAPI document, and the
example API's whole story for a client with a bearer token."""

from __future__ import annotations

import os
import re
import secrets
import sys
import time
import types
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import schemathesis
from cryptography.fernet import Fernet
from examples.fastapi_api.app import EXPORT_MAX_AGE, TOKEN_LIFETIME, build
from fastapi import Depends, FastAPI, WebSocket
from pydantic import BaseModel
from starlette.middleware import Middleware
from starlette.middleware.authentication import AuthenticationMiddleware
from starlette.middleware.sessions import SessionMiddleware

from mfa_guard import ConfigurationError, MemoryEventSink, MemoryStore, MFAGuard
from mfa_guard.core.marker import EnrolmentSummary
from mfa_guard.errors import Reason, StoreUnavailable
from mfa_guard.fastapi import (
    MFARefusal,
    MFASession,
    RequireMFA,
    RequireRecentMFA,
    include_mfa_guard,
    install_refusal_handler,
    refusal_responses,
)
from mfa_guard.stores.devices import MemoryDeviceStore
from mfa_guard.stores.sites import MemorySiteDirectory, Role, SitePolicy
from mfa_guard.testing import FrozenClock, current_code
from mfa_guard.tokens import TokenSessionMiddleware
from tests.apps import SESSION_SECRET, GuardedApp, SessionAuth, enrol, login, settings_for, sign_in
from tests.scenarios import websocket_messages

MAX_AGE = 300


class DownStore(MemoryStore):
    def __init__(self) -> None:
        super().__init__()
        self.down = False

    async def summary(self, user_id: str) -> EnrolmentSummary:
        if self.down:
            raise StoreUnavailable()
        return await super().summary(user_id)


class Report(BaseModel):
    title: str


@dataclass
class FastAPIApp(GuardedApp):
    app: FastAPI


def report_app(
    *,
    store: MemoryStore | None = None,
    sites: MemorySiteDirectory | None = None,
    middleware: bool = False,
    devices: MemoryDeviceStore | None = None,
    **overrides: Any,
) -> FastAPIApp:
    """A FastAPI app as its author writes it: sessions, authentication, the kit in one call, and
    routes that need the second factor (``/api/...`` answers JSON, the others are pages)."""
    clock = FrozenClock()
    events = MemoryEventSink()
    store = store if store is not None else MemoryStore()
    guard = MFAGuard(
        settings=settings_for(**overrides),
        store=store,
        clock=clock,
        events=events,
        sites=sites,
        devices=devices,
    )
    app = FastAPI(
        middleware=[
            Middleware(SessionMiddleware, secret_key=SESSION_SECRET),
            Middleware(AuthenticationMiddleware, backend=SessionAuth()),
        ]
    )
    include_mfa_guard(app, guard, middleware=middleware)
    app.add_route("/login", login, methods=["POST"])
    verified = RequireMFA(guard)
    recent = RequireRecentMFA(guard, max_age=MAX_AGE)

    def described(mfa: MFASession) -> dict[str, Any]:
        return {
            "user": mfa.user_id,
            "enrolled": mfa.enrolled,
            "verified_at": mfa.verified_at,
            "method": mfa.method,
        }

    @app.get("/api/reports", responses=refusal_responses())
    async def reports(mfa: MFASession = Depends(verified)) -> dict[str, Any]:
        return described(mfa)

    @app.get("/reports")
    async def reports_page(mfa: MFASession = Depends(verified)) -> dict[str, Any]:
        return described(mfa)

    @app.post("/api/account/close", responses=refusal_responses())
    async def close_account(mfa: MFASession = Depends(recent)) -> dict[str, Any]:
        return described(mfa)

    @app.get("/account/close")
    async def close_account_page(mfa: MFASession = Depends(recent)) -> dict[str, Any]:
        return described(mfa)

    @app.get("/api/open")
    async def open_route() -> Report:
        return Report(title="no dependency here")

    @app.websocket("/ws")
    async def live(websocket: WebSocket, mfa: MFASession = Depends(verified)) -> None:
        await websocket.accept()
        await websocket.send_text(mfa.user_id)
        await websocket.close()

    return FastAPIApp(app=app, guard=guard, store=store, clock=clock, events=events)


async def challenged(ga: GuardedApp, client: httpx.AsyncClient, user: str) -> str:
    """Enrols ``user``, signs out and in again: the session waits for its second factor."""
    await sign_in(client, user)
    secret, _ = await enrol(ga, client)
    client.cookies.clear()
    await sign_in(client, user)
    return secret


def error_code(response: httpx.Response) -> tuple[int, str]:
    return response.status_code, response.json()["error"]["code"]


# RequireMFA


async def test_a_verified_session_gets_the_route_with_its_user_and_marker() -> None:
    ga = report_app()
    async with ga.client() as client:
        await sign_in(client, "owner@acme.test")
        await enrol(ga, client)
        response = await client.get("/api/reports")
    assert response.status_code == 200
    assert response.json() == {
        "user": "owner@acme.test",
        "enrolled": True,
        "verified_at": ga.clock(),
        "method": "totp",
    }


async def test_an_enrolled_session_without_its_code_is_challenged_until_it_verifies() -> None:
    ga = report_app()
    async with ga.client() as client:
        secret = await challenged(ga, client, "owner@acme.test")
        api = await client.get("/api/reports")
        assert error_code(api) == (401, "mfa_required")
        assert api.headers["cache-control"] == "no-store"
        page = await client.get("/reports?week=12")
        assert page.status_code == 303
        assert page.headers["location"] == "/mfa/challenge?next=/reports%3Fweek%3D12"
        ga.clock.advance(30)
        verified = await client.post("/mfa/api/verify", json={"code": ga.code(secret)})
        assert verified.status_code == 200
        assert (await client.get("/api/reports")).json()["verified_at"] == ga.clock()
        # The verification lasts verified_lifetime_seconds, as for the middleware.
        ga.clock.advance(ga.guard.settings.verified_lifetime_seconds)
        assert error_code(await client.get("/api/reports")) == (401, "mfa_required")


@pytest.mark.parametrize("accept", ["*/*", "text/html", None])
async def test_a_bearer_request_for_a_page_route_gets_the_dependencies_json(
    accept: str | None,
) -> None:
    """curl and httpx send Accept */*: a bearer call is an API call on any route."""
    ga = report_app()
    bearer = {"Authorization": "Bearer any-token", **({"Accept": accept} if accept else {})}
    async with ga.client() as client:
        anonymous = await client.get("/reports", headers=bearer)
        assert error_code(anonymous) == (401, "not_authenticated")
        secret = await challenged(ga, client, "owner@acme.test")
        page = await client.get("/reports", headers=bearer)
        assert error_code(page) == (401, "mfa_required")
        ga.clock.advance(30)
        await client.post("/mfa/api/verify", json={"code": ga.code(secret)})
        ga.clock.advance(MAX_AGE + 1)
        step_up = await client.get("/account/close", headers=bearer)
    assert error_code(step_up) == (401, "mfa_reauthentication_required")
    assert "location" not in step_up.headers


async def test_a_remembered_browser_passes_the_dependency_but_not_the_step_up() -> None:
    ga = report_app(devices=MemoryDeviceStore(), trusted_devices={"enabled": True})
    async with ga.client(base_url="https://testserver") as client:
        secret = await challenged(ga, client, "owner@acme.test")
        ga.clock.advance(30)
        remembered = await client.post(
            "/mfa/api/verify", json={"code": ga.code(secret), "remember_device": True}
        )
        assert remembered.json()["device_remembered"] is True
        await sign_in(client, "owner@acme.test")  # a new session; the device cookie stays

        passed = await client.get("/api/reports")
        step_up = await client.post("/api/account/close")

    assert (passed.status_code, passed.json()["method"]) == (200, "device")
    assert error_code(step_up) == (401, "mfa_reauthentication_required")


async def test_a_user_without_2fa_passes_until_a_site_of_theirs_enforces_it() -> None:
    sites = MemorySiteDirectory()
    await sites.save_site("acme", "Acme")
    await sites.add_member("acme", "agent@acme.test", Role.OPERATOR)
    ga = report_app(sites=sites, recheck_seconds=60)
    async with ga.client() as client:
        await sign_in(client, "agent@acme.test")
        allowed = await client.get("/api/reports")
        assert allowed.status_code == 200
        assert allowed.json()["enrolled"] is False
        deadline = ga.clock() + 3600
        await sites.set_policy("acme", SitePolicy(enforce=True, grace_deadline=deadline))
        ga.clock.advance(60)  # the session re-checks its sites
        assert (await client.get("/api/reports")).status_code == 200  # in the grace period
        ga.clock.advance(3600)
        assert error_code(await client.get("/api/reports")) == (403, "mfa_enrolment_required")
        page = await client.get("/reports")
        assert (page.status_code, page.headers["location"]) == (303, "/mfa/enrol?next=/reports")
        await enrol(ga, client)
        assert (await client.get("/api/reports")).json()["method"] == "totp"


async def test_anonymous_requests_are_refused() -> None:
    ga = report_app()
    async with ga.client() as client:
        assert error_code(await client.get("/api/reports")) == (401, "not_authenticated")
        page = await client.get("/reports")
        assert (page.status_code, page.headers["location"]) == (303, "/")
        assert error_code(await client.post("/api/account/close")) == (401, "not_authenticated")


async def test_a_store_outage_answers_503_and_never_lets_a_session_through() -> None:
    store = DownStore()
    ga = report_app(store=store, recheck_seconds=60)
    async with ga.client() as verified, ga.client() as fresh:
        await sign_in(verified, "owner@acme.test")
        await enrol(ga, verified)
        await sign_in(fresh, "agent@acme.test")
        store.down = True
        # A marker re-checked within recheck_seconds needs no store.
        assert (await verified.get("/api/reports")).status_code == 200
        api = await fresh.get("/api/reports")
        assert error_code(api) == (503, "service_unavailable")
        assert api.headers["retry-after"] == "5"
        page = await fresh.get("/reports")
        assert page.status_code == 503
        assert "Traceback" not in page.text
        assert error_code(await fresh.post("/api/account/close")) == (503, "service_unavailable")
        store.down = False
        assert (await fresh.get("/api/reports")).status_code == 200


async def test_a_websocket_route_closes_unverified_sessions_before_accept() -> None:
    ga = report_app()
    async with ga.client() as client:
        secret = await challenged(ga, client, "owner@acme.test")
        assert await websocket_messages(ga, client) == [
            {"type": "websocket.close", "code": 1008, "reason": ""}
        ]
        ga.clock.advance(30)
        await client.post("/mfa/api/verify", json={"code": ga.code(secret)})
        opened = await websocket_messages(ga, client)
        assert [message["type"] for message in opened] == [
            "websocket.accept",
            "websocket.send",
            "websocket.close",
        ]
        assert opened[1]["text"] == "owner@acme.test"


# RequireRecentMFA


async def test_a_sensitive_route_needs_a_code_entered_within_max_age() -> None:
    ga = report_app()
    async with ga.client() as client:
        await sign_in(client, "owner@acme.test")
        secret, _ = await enrol(ga, client)
        ga.clock.advance(MAX_AGE)
        closed = await client.post("/api/account/close")
        assert closed.status_code == 200
        assert closed.json()["user"] == "owner@acme.test"
        ga.clock.advance(1)
        assert error_code(await client.post("/api/account/close")) == (
            401,
            "mfa_reauthentication_required",
        )
        page = await client.get("/account/close")
        assert page.headers["location"] == "/mfa/challenge?next=/account/close"
        # The session is still verified for RequireMFA: verified, not recently.
        assert (await client.get("/api/reports")).status_code == 200
        ga.clock.advance(30)
        await client.post("/mfa/api/verify", json={"code": ga.code(secret)})
        assert (await client.post("/api/account/close")).json()["verified_at"] == ga.clock()


async def test_a_user_without_2fa_cannot_step_up_and_is_sent_to_enrolment() -> None:
    ga = report_app()
    async with ga.client() as client:
        await sign_in(client, "agent@acme.test")
        assert error_code(await client.post("/api/account/close")) == (
            403,
            "mfa_enrolment_required",
        )
        page = await client.get("/account/close")
        assert page.headers["location"] == "/mfa/enrol?next=/account/close"


def test_max_age_must_fit_in_the_verified_lifetime() -> None:
    guard = MFAGuard(settings=settings_for(), store=MemoryStore())
    for bad in (0, -5, guard.settings.verified_lifetime_seconds + 1):
        with pytest.raises(ConfigurationError, match="max_age"):
            RequireRecentMFA(guard, max_age=bad)
    assert RequireRecentMFA(guard).max_age == guard.settings.recent_mfa_seconds


# The refusal handler and include_mfa_guard


def bare_app(guard: MFAGuard) -> FastAPI:
    app = FastAPI(
        middleware=[
            Middleware(SessionMiddleware, secret_key=SESSION_SECRET),
            Middleware(AuthenticationMiddleware, backend=SessionAuth()),
        ]
    )
    verified = RequireMFA(guard)

    @app.get("/api/reports")
    async def reports(mfa: MFASession = Depends(verified)) -> str:
        return mfa.user_id

    return app


async def test_without_the_refusal_handler_the_dependency_says_what_is_missing() -> None:
    guard = MFAGuard(settings=settings_for(), store=MemoryStore(), clock=FrozenClock())
    app = bare_app(guard)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
        with pytest.raises(ConfigurationError, match="install_refusal_handler"):
            await client.get("/api/reports")


async def test_the_refusal_handler_alone_serves_an_app_that_mounts_the_kit_itself() -> None:
    guard = MFAGuard(settings=settings_for(), store=MemoryStore(), clock=FrozenClock())
    app = bare_app(guard)
    install_refusal_handler(app)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
        assert error_code(await client.get("/api/reports")) == (401, "not_authenticated")


def test_a_refusal_is_an_http_exception_with_the_code() -> None:
    scope = {"type": "http", "method": "GET", "path": "/api/reports", "headers": []}
    refusal = MFARefusal(Reason.MFA_REQUIRED_TO_CONTINUE, scope, settings_for())
    assert (refusal.status_code, refusal.code) == (401, "mfa_required")
    assert refusal.detail == "Complete two-factor authentication to continue."
    assert refusal.headers == {"cache-control": "no-store"}


def test_a_refusal_of_a_page_navigation_is_a_redirect_without_a_code() -> None:
    scope = {"type": "http", "method": "GET", "path": "/reports", "headers": []}
    refusal = MFARefusal(Reason.MFA_REQUIRED_TO_CONTINUE, scope, settings_for())
    assert (refusal.status_code, refusal.code, refusal.detail) == (303, None, "See Other")
    assert refusal.headers == {
        "location": "/mfa/challenge?next=/reports",
        "cache-control": "no-store",
    }


async def test_the_include_mounts_the_kit_and_leaves_routes_without_dependencies_open() -> None:
    ga = report_app()
    async with ga.client() as client:
        await challenged(ga, client, "owner@acme.test")
        status = await client.get("/mfa/api/status")
        assert status.status_code == 200
        assert status.json()["verified"] is False
        # No middleware: only the routes with a dependency are guarded.
        assert (await client.get("/api/open")).status_code == 200


async def test_with_middleware_every_route_is_guarded_even_when_auth_is_added_after() -> None:
    clock = FrozenClock()
    guard = MFAGuard(settings=settings_for(), store=MemoryStore(), clock=clock)
    app = FastAPI()
    include_mfa_guard(app, guard, middleware=True)
    # Added after the include, so outside it: the guard still runs after them.
    app.add_middleware(AuthenticationMiddleware, backend=SessionAuth())
    app.add_middleware(SessionMiddleware, secret_key=SESSION_SECRET)
    app.add_route("/login", login, methods=["POST"])

    @app.get("/api/open")
    async def open_route() -> str:
        return "open"

    ga = GuardedApp(app=app, guard=guard, store=guard.store, clock=clock, events=MemoryEventSink())
    async with ga.client() as client:
        await challenged(ga, client, "owner@acme.test")
        assert error_code(await client.get("/api/open")) == (401, "mfa_required")


async def test_the_include_is_refused_once_the_app_serves() -> None:
    guard = MFAGuard(settings=settings_for(), store=MemoryStore())
    app = FastAPI()
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
        await client.get("/docs")
    with pytest.raises(ConfigurationError, match="before the app starts"):
        include_mfa_guard(app, guard)


# The merged OpenAPI document


def refs(node: object) -> Iterator[str]:
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "$ref" and isinstance(value, str):
                yield value
            else:
                yield from refs(value)
    elif isinstance(node, list):
        for item in node:
            yield from refs(item)


def resolve(document: dict[str, Any], ref: str) -> object:
    assert ref.startswith("#/"), ref
    node: object = document
    for part in ref[2:].split("/"):
        assert isinstance(node, dict), ref
        assert part in node, ref
        node = node[part]
    return node


async def test_docs_show_the_kits_api_next_to_the_apps_own_routes() -> None:
    sites = MemorySiteDirectory()
    ga = report_app(sites=sites)
    async with ga.client() as client:
        response = await client.get("/openapi.json")
        kit = (await client.get("/mfa/api/openapi.json")).json()
    document = response.json()
    assert document["openapi"].startswith("3.1")
    for path in kit["paths"]:
        assert path in document["paths"], path
    assert "/mfa/api/sites/{site}/policy" in document["paths"]
    # The kit's components are prefixed, and every reference resolves.
    schemas = document["components"]["schemas"]
    assert {"MFAGuardError", "MFAGuardStatus", "MFAGuardSite"} <= set(schemas)
    assert "Error" not in schemas
    assert "MFAGuardE401" in document["components"]["responses"]
    for ref in set(refs(document)):
        resolve(document, ref)
    verify = document["paths"]["/mfa/api/verify"]["post"]
    assert verify["tags"] == ["Two-factor authentication"]
    # The kit's ways in, prefixed like its other components; each requirement names a scheme.
    assert verify["security"] == [{"MFAGuardSessionCookie": []}, {"MFAGuardBearerToken": []}]
    schemes = document["components"]["securitySchemes"]
    for item in document["paths"].values():
        for operation in item.values():
            for requirement in operation.get("security", []):
                assert set(requirement) <= set(schemes), requirement
    assert verify["responses"]["422"] == {"$ref": "#/components/responses/MFAGuardE422"}
    # schemathesis refuses a document that is not valid OpenAPI.
    schema = schemathesis.openapi.from_dict(document)
    assert len(list(schema.get_all_operations())) == len(
        [method for item in document["paths"].values() for method in item]
    )


async def test_the_apps_own_paths_and_components_are_left_as_fastapi_wrote_them() -> None:
    ga = report_app()
    merged = ga.app.openapi()
    plain = FastAPI.openapi(ga.app)  # FastAPI's own method, without the kit
    own = {path: item for path, item in merged["paths"].items() if not path.startswith("/mfa/")}
    assert own == plain["paths"]
    for name, schema in plain["components"]["schemas"].items():
        assert merged["components"]["schemas"][name] == schema
    assert merged["info"] == plain["info"]
    # Built once per document FastAPI builds, and FastAPI's own cache is left unmerged.
    assert ga.app.openapi() is merged
    assert "/mfa/api/verify" not in plain["paths"]


class Error(BaseModel):
    """An app's own model, named like one of the kit's components."""

    reason: str


async def test_an_app_component_named_like_the_kits_keeps_both() -> None:
    ga = report_app()

    @ga.app.get("/api/failure")
    async def failure() -> Error:
        return Error(reason="none")

    document = ga.app.openapi()
    assert document["components"]["schemas"]["Error"]["properties"] == {
        "reason": {"title": "Reason", "type": "string"}
    }
    assert "error" in document["components"]["schemas"]["MFAGuardError"]["properties"]
    schemathesis.openapi.from_dict(document)


async def test_an_app_path_in_the_kits_place_is_refused() -> None:
    ga = report_app()

    @ga.app.get("/mfa/api/status")
    async def shadow() -> str:
        return "mine"

    with pytest.raises(ConfigurationError, match="/mfa/api/status"):
        ga.app.openapi()


def test_the_document_can_be_left_alone() -> None:
    guard = MFAGuard(settings=settings_for(), store=MemoryStore())
    app = FastAPI()
    include_mfa_guard(app, guard, openapi=False)
    assert not [path for path in app.openapi()["paths"] if path.startswith("/mfa")]


# The example API: a client with a bearer token


class Recorder:
    """Keeps every response, to check them all against the app's document afterwards."""

    def __init__(self) -> None:
        self.responses: list[httpx.Response] = []

    async def __call__(self, response: httpx.Response) -> None:
        await response.aread()
        self.responses.append(response)


async def bearer(client: httpx.AsyncClient, email: str) -> dict[str, str]:
    response = await client.post("/token", json={"email": email, "password": "demo"})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["token_type"] == "bearer"
    assert body["expires_in"] == TOKEN_LIFETIME
    return {"Authorization": f"Bearer {body['access_token']}"}


async def test_an_api_client_signs_in_with_a_token_and_lives_the_enforcement_story() -> None:
    clock = FrozenClock()
    example = build(settings_for(), clock=clock)
    app = example.app
    recorder = Recorder()
    transport = httpx.ASGITransport(app=app)

    def code(secret: str) -> str:
        return current_code(secret, clock())

    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(
            transport=transport,
            base_url="http://testserver",
            event_hooks={"response": [recorder]},
        ) as client,
    ):
        refused = await client.post("/token", json={"email": "agent@acme.test", "password": "x"})
        assert error_code(refused) == (401, "invalid_credentials")
        owner = await bearer(client, "owner@acme.test")
        agent = await bearer(client, "agent@acme.test")

        # Acme does not enforce 2FA yet: the agent works without it.
        me = await client.get("/api/me", headers=agent)
        assert me.json() == {
            "user": "agent@acme.test",
            "two_factor": {"enrolled": False, "verified_at": None, "method": None},
        }

        # The owner turns 2FA on through the kit's JSON API, with the token alone...
        setup = await client.post("/mfa/api/totp/setup", json={}, headers=owner)
        owner_secret = setup.json()["secret"]
        confirmed = await client.post(
            "/mfa/api/totp/confirm", json={"code": code(owner_secret)}, headers=owner
        )
        assert confirmed.json()["verified"] is True
        # ... and forces it on Acme at once, a code entered just now being recent enough.
        policy = await client.put(
            "/mfa/api/sites/acme/policy", json={"enforce": True, "grace_hours": 0}, headers=owner
        )
        assert policy.status_code == 200, policy.text

        # Within recheck_seconds the change reaches the agent's open session, and the token is
        # held at enrolment on every route of the API.
        clock.advance(example.guard.settings.recheck_seconds)
        for path in ("/api/me", "/api/conversations"):
            assert error_code(await client.get(path, headers=agent)) == (
                403,
                "mfa_enrolment_required",
            )
        status = (await client.get("/mfa/api/status", headers=agent)).json()
        assert status["enforcement"]["required"] is True
        assert [site["id"] for site in status["enforcement"]["sites"]] == ["acme"]
        setup = await client.post("/mfa/api/totp/setup", json={}, headers=agent)
        agent_secret = setup.json()["secret"]
        await client.post("/mfa/api/totp/confirm", json={"code": code(agent_secret)}, headers=agent)
        me = await client.get("/api/me", headers=agent)
        assert me.json()["two_factor"] == {
            "enrolled": True,
            "verified_at": clock(),
            "method": "totp",
        }
        assert len((await client.get("/api/conversations", headers=agent)).json()) == 3

        # A second token (another device) has a session of its own: it verifies on its own.
        clock.advance(30)
        laptop = await bearer(client, "agent@acme.test")
        assert error_code(await client.get("/api/me", headers=laptop)) == (401, "mfa_required")
        verified = await client.post(
            "/mfa/api/verify", json={"code": code(agent_secret)}, headers=laptop
        )
        assert verified.status_code == 200
        assert (await client.get("/api/me", headers=laptop)).status_code == 200

        # Exporting needs a code entered within five minutes.
        export = await client.post("/api/conversations/export", headers=laptop)
        assert export.json()["exported_by"] == "agent@acme.test"
        clock.advance(EXPORT_MAX_AGE + 1)
        assert error_code(await client.post("/api/conversations/export", headers=laptop)) == (
            401,
            "mfa_reauthentication_required",
        )
        await client.post("/mfa/api/verify", json={"code": code(agent_secret)}, headers=laptop)
        assert (await client.post("/api/conversations/export", headers=laptop)).status_code == 200

        # Signing the token out ends its session; the other token keeps its own.
        assert (await client.delete("/token", headers=laptop)).status_code == 204
        gone = await client.get("/api/me", headers=laptop)
        assert error_code(gone) == (401, "not_authenticated")
        assert (await client.get("/api/me", headers=agent)).status_code == 200
        # A bearer client never gets a cookie.
        assert not client.cookies

        document = (await client.get("/openapi.json")).json()

    # Every answer of the story is one the app's document describes.
    schema = schemathesis.openapi.from_dict(document)
    checked = set()
    for response in recorder.responses:
        if response.request.url.path == "/openapi.json":
            continue
        operation = schema.find_operation_by_path(
            response.request.method, response.request.url.path
        )
        assert operation is not None, response.request.url.path
        documented = document["paths"][operation.path][operation.method.lower()]["responses"]
        assert str(response.status_code) in documented, (operation.label, response.text)
        operation.validate_response(response)
        checked.add((operation.path, response.status_code))
    assert ("/api/me", 403) in checked
    assert ("/mfa/api/sites/{site}/policy", 200) in checked


async def test_tokens_expire_and_unknown_ones_are_anonymous() -> None:
    clock = FrozenClock()
    example = build(settings_for(), clock=clock)
    app = example.app
    transport = httpx.ASGITransport(app=app)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=transport, base_url="http://testserver") as client,
    ):
        token = await bearer(client, "solo@example.test")
        assert (await client.get("/api/me", headers=token)).status_code == 200
        for header in ("Bearer nope", "Bearer ", "bearer  "):
            forged = await client.get("/api/me", headers={"Authorization": header})
            assert error_code(forged) == (401, "not_authenticated"), header
        clock.advance(TOKEN_LIFETIME)
        assert error_code(await client.get("/api/me", headers=token)) == (401, "not_authenticated")
        # The token's session, and the marker in it, are gone with it.
        gone = await example.tokens.open(token["Authorization"].removeprefix("Bearer "))
        assert gone.data == {}


async def test_a_browser_signs_in_with_the_cookie_and_gets_the_same_rules() -> None:
    clock = FrozenClock()
    example = build(settings_for(), clock=clock)
    app = example.app
    transport = httpx.ASGITransport(app=app)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=transport, base_url="http://testserver") as client,
    ):
        assert error_code(await client.get("/api/me")) == (401, "not_authenticated")
        signed_in = await client.post(
            "/login", json={"email": "solo@example.test", "password": "demo"}
        )
        assert signed_in.json() == {"user": "solo@example.test"}
        assert (await client.get("/api/me")).status_code == 200
        assert error_code(await client.post("/api/conversations/export")) == (
            403,
            "mfa_enrolment_required",
        )
        assert (await client.get("/health")).json() == {"status": "ok"}


async def test_the_example_wires_the_token_session_between_cookie_and_authentication() -> None:
    example = build(settings_for(), clock=FrozenClock())
    stack: list[object] = [middleware.cls for middleware in example.app.user_middleware]
    assert stack == [SessionMiddleware, TokenSessionMiddleware, AuthenticationMiddleware]


# docs/fastapi.md: the guide's app, exactly as a reader copies it


def guide_app(title: str = "app.py") -> types.ModuleType:
    page = Path(__file__).resolve().parents[2] / "docs" / "fastapi.md"
    fence = re.compile(rf'^```python title="{re.escape(title)}"\n(.*?)^```$', re.M | re.S)
    (code,) = fence.findall(page.read_text(encoding="utf-8"))
    module = types.ModuleType("fastapi_guide_" + title.removesuffix(".py"))
    # As an import would: dataclasses look their module up there.
    sys.modules[module.__name__] = module
    exec(compile(code, str(page), "exec"), module.__dict__)  # noqa: S102
    return module


@pytest.fixture
def guide_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # What the guide's step 2 exports, in a folder of its own (its SQLite file, no stray .env).
    monkeypatch.chdir(tmp_path)
    for name in list(os.environ):
        if name.startswith("MFA_GUARD_") or name == "WEB_CONCURRENCY":
            monkeypatch.delenv(name)
    monkeypatch.setenv("MFA_GUARD_ENCRYPTION_KEYS", Fernet.generate_key().decode())
    monkeypatch.setenv("SESSION_SECRET", secrets.token_urlsafe(32))
    monkeypatch.setenv("JWT_SECRET", secrets.token_urlsafe(32))


@pytest.mark.usefixtures("guide_environment")
async def test_the_guides_app_runs_as_printed() -> None:
    guide = guide_app()
    app: FastAPI = guide.app
    ((email, password),) = guide.PASSWORDS.items()
    transport = httpx.ASGITransport(app=app)

    def client() -> httpx.AsyncClient:
        return httpx.AsyncClient(transport=transport, base_url="http://testserver")

    async with app.router.lifespan_context(app), client() as ada, client() as laptop:
        assert error_code(await ada.get("/api/inbox")) == (401, "not_authenticated")
        wrong = await ada.post("/login", json={"email": "eve@example.com", "password": ""})
        assert error_code(wrong) == (401, "invalid_credentials")
        await ada.post("/login", json={"email": email, "password": password})
        # No second factor yet: the inbox opens, closing the account needs one.
        assert (await ada.get("/api/inbox")).json()["verified_at"] is None
        assert error_code(await ada.delete("/api/account")) == (403, "mfa_enrolment_required")

        setup = await ada.post("/mfa/api/totp/setup", json={})
        code = current_code(setup.json()["secret"], time.time())
        confirm = await ada.post("/mfa/api/totp/confirm", json={"code": code})
        recovery_codes = confirm.json()["recovery_codes"]
        assert (await ada.delete("/api/account")).json() == {"closed": email}

        # A new session owes its code: a recovery code completes it.
        await laptop.post("/login", json={"email": email, "password": password})
        assert error_code(await laptop.get("/api/inbox")) == (401, "mfa_required")
        verified = await laptop.post(
            "/mfa/api/verify", json={"method": "recovery", "code": recovery_codes[0]}
        )
        assert verified.status_code == 200, verified.text
        assert (await laptop.get("/api/inbox")).status_code == 200

        document = (await laptop.get("/openapi.json")).json()
        assert {"/login", "/api/inbox", "/mfa/api/verify"} <= set(document["paths"])
        assert "403" in document["paths"]["/api/inbox"]["get"]["responses"]
        schemathesis.openapi.from_dict(document)


# docs/fastapi.md#bearer-tokens: tokens the app issues, and tokens fastapi-users issues


@pytest.mark.usefixtures("guide_environment")
async def test_the_guides_token_app_runs_as_printed() -> None:
    guide = guide_app("token_app.py")
    app: FastAPI = guide.app
    ((email, password),) = guide.PASSWORDS.items()
    transport = httpx.ASGITransport(app=app)

    async def token(client: httpx.AsyncClient) -> dict[str, str]:
        issued = await client.post("/token", json={"email": email, "password": password})
        assert issued.status_code == 200, issued.text
        return {"Authorization": f"Bearer {issued.json()['access_token']}"}

    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=transport, base_url="http://testserver") as client,
    ):
        assert error_code(await client.get("/api/inbox")) == (401, "not_authenticated")
        wrong = await client.post("/token", json={"email": email, "password": "guess"})
        assert error_code(wrong) == (401, "invalid_credentials")
        phone = await token(client)
        assert (await client.get("/api/inbox", headers=phone)).json()["verified_at"] is None
        setup = await client.post("/mfa/api/totp/setup", json={}, headers=phone)
        code = current_code(setup.json()["secret"], time.time())
        confirm = await client.post("/mfa/api/totp/confirm", json={"code": code}, headers=phone)
        recovery_codes = confirm.json()["recovery_codes"]

        # Another token of Ada's owes its own code, as JSON whatever it accepts.
        laptop = await token(client)
        for accept in ("*/*", "text/html"):
            refused = await client.get("/api/inbox", headers={**laptop, "Accept": accept})
            assert error_code(refused) == (401, "mfa_required")
        verified = await client.post(
            "/mfa/api/verify",
            json={"method": "recovery", "code": recovery_codes[0]},
            headers=laptop,
        )
        assert verified.status_code == 200, verified.text
        assert (await client.get("/api/inbox", headers=laptop)).status_code == 200

        assert (await client.post("/logout", headers=laptop)).status_code == 204
        signed_out = await client.get("/api/inbox", headers=laptop)
        assert error_code(signed_out) == (401, "not_authenticated")
        assert (await client.get("/api/inbox", headers=phone)).status_code == 200
        assert not client.cookies


@pytest.mark.usefixtures("guide_environment")
async def test_a_fastapi_users_app_lives_the_story_with_its_own_jwts() -> None:
    guide = guide_app("users_app.py")
    app: FastAPI = guide.app
    email, password = "ada@example.com", "correct horse battery staple"
    transport = httpx.ASGITransport(app=app)

    async def login(client: httpx.AsyncClient) -> dict[str, str]:
        form = {"username": email, "password": password}
        signed_in = await client.post("/auth/jwt/login", data=form)
        assert signed_in.status_code == 200, signed_in.text
        assert signed_in.json()["token_type"] == "bearer"
        return {"Authorization": f"Bearer {signed_in.json()['access_token']}"}

    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=transport, base_url="http://testserver") as client,
    ):
        registered = await client.post(
            "/auth/register", json={"email": email, "password": password}
        )
        assert registered.status_code == 201, registered.text
        user_id = registered.json()["id"]
        phone = await login(client)

        # The library's token alone: no 2FA yet, so the inbox answers; closing the account
        # needs a second factor Ada does not have.
        inbox = await client.get("/api/inbox", headers=phone)
        assert inbox.json() == {"user": email, "verified_at": None, "conversations": []}
        refused = await client.delete("/api/account", headers={**phone, "Accept": "*/*"})
        assert error_code(refused) == (403, "mfa_enrolment_required")

        setup = await client.post("/mfa/api/totp/setup", json={}, headers=phone)
        assert setup.status_code == 200, setup.text
        assert "ada%40example.com" in setup.json()["otpauth_uri"]  # the account's name
        code = current_code(setup.json()["secret"], time.time())
        confirm = await client.post("/mfa/api/totp/confirm", json={"code": code}, headers=phone)
        assert confirm.status_code == 200, confirm.text
        assert (await client.delete("/api/account", headers=phone)).json() == {"closed": email}
        # The kit keys the enrolment by the user's id, not the e-mail.
        status = await guide.guard.store.summary(user_id)
        assert status.enrolled

        # A second sign-in, in the same second: its own token, its own session.
        laptop = await login(client)
        assert laptop != phone
        for accept in ("*/*", "text/html"):
            refused = await client.get("/api/inbox", headers={**laptop, "Accept": accept})
            assert error_code(refused) == (401, "mfa_required")
        verified = await client.post(
            "/mfa/api/verify",
            json={"method": "recovery", "code": confirm.json()["recovery_codes"][0]},
            headers=laptop,
        )
        assert verified.status_code == 200, verified.text
        assert (await client.get("/api/inbox", headers=laptop)).status_code == 200

        # The library's sign-out ends the token's session: the JWT itself stays valid until
        # its exp, so the first factor passes and the second is owed again.
        assert (await client.post("/auth/jwt/logout", headers=laptop)).status_code == 204
        again = await client.get("/api/inbox", headers=laptop)
        assert error_code(again) == (401, "mfa_required")
        assert (await client.get("/api/inbox", headers=phone)).status_code == 200

        # A token the library refuses is nobody, for the kit too.
        forged = {"Authorization": "Bearer " + phone["Authorization"][7:-2] + "xx"}
        assert error_code(await client.get("/mfa/api/status", headers=forged)) == (
            401,
            "not_authenticated",
        )
        assert (await client.get("/api/inbox", headers=forged)).status_code == 401
        assert not client.cookies

        document = (await client.get("/openapi.json")).json()
    schemathesis.openapi.from_dict(document)
    # Authorize in /docs (the library's OAuth2 password flow) sends the token to the kit too.
    verify = document["paths"]["/mfa/api/verify"]["post"]
    assert {"OAuth2PasswordBearer": []} in verify["security"]
