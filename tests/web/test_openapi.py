"""The OpenAPI 3.1 document of the JSON API: served, and true to what the API answers.

Every response of a scripted walk through the API (successes and refusals of each kind) is
validated against the document by schemathesis: its status must be documented, its content type
and its body must match the schema.
"""

from __future__ import annotations

from typing import Any

import httpx
import pytest
import schemathesis

from mfa_guard import __version__
from mfa_guard.stores.events import MemoryEventStore
from mfa_guard.stores.sites import MemorySiteDirectory, Role
from tests.apps import GuardedApp, build_app, enrol, sign_in


async def acme_app(**settings: Any) -> GuardedApp:
    directory = MemorySiteDirectory()
    await directory.save_site("acme", "Acme")
    await directory.add_member("acme", "owner@acme.test", Role.OWNER)
    await directory.add_member("acme", "agent@acme.test", Role.OPERATOR)
    return build_app(sites=directory, event_store=MemoryEventStore(), **settings)


async def test_the_document_is_public_openapi_3_1_for_this_mount() -> None:
    ga = await acme_app(mount_path="/2fa")
    async with ga.client() as anonymous:
        response = await anonymous.get("/2fa/api/openapi.json")
    assert response.status_code == 200
    document = response.json()
    assert document["openapi"] == "3.1.0"
    assert document["info"]["version"] == __version__
    assert "/2fa/api/verify" in document["paths"]
    assert "/2fa/api/sites/{site}/policy" in document["paths"]
    # schemathesis refuses a document that is not valid OpenAPI.
    schema = schemathesis.openapi.from_dict(document)
    assert len(list(schema.get_all_operations())) == len(
        [method for item in document["paths"].values() for method in item]
    )


async def test_without_a_site_directory_the_document_has_no_site_paths() -> None:
    ga = build_app()
    async with ga.client() as client:
        paths = (await client.get("/mfa/api/openapi.json")).json()["paths"]
    assert not [path for path in paths if "/sites" in path]


class Recorder:
    """Keeps every response a client got, to validate them all against the document."""

    def __init__(self) -> None:
        self.responses: list[httpx.Response] = []

    async def __call__(self, response: httpx.Response) -> None:
        await response.aread()
        if "/mfa/api/" in response.request.url.path:
            self.responses.append(response)


async def test_every_answer_of_a_walk_through_the_api_conforms_to_the_document() -> None:
    ga = await acme_app(rate_limits={"failures": "3/minute;100/day"})
    recorder = Recorder()

    def client() -> httpx.AsyncClient:
        return ga.client(event_hooks={"response": [recorder]})

    async with client() as owner, client() as agent, client() as anonymous:
        await anonymous.get("/mfa/api/status")  # 401
        await anonymous.post("/mfa/api/verify", json={"code": "123456"})
        await sign_in(agent, "agent@acme.test")
        await agent.get("/mfa/api/status")
        await agent.post("/mfa/api/verify", json={"code": "123456"})  # not enrolled
        await agent.post("/mfa/api/totp/setup", content=b"code=1")  # 415
        await agent.post(
            "/mfa/api/totp/setup", content=b"[", headers={"content-type": "application/json"}
        )
        await agent.post("/mfa/api/totp/setup", json={"pad": "x" * 5000})  # 413
        await agent.post("/mfa/api/totp/setup", json={}, headers={"origin": "https://evil.example"})
        await agent.post("/mfa/api/sms/send", json={})  # SMS is off: 409
        await agent.post("/mfa/api/phone", json={"phone": "+44 7400 123456"})
        await agent.post("/mfa/api/recovery-codes", json={})
        await agent.get("/mfa/api/sites")
        await agent.get("/mfa/api/sites/acme/members")  # 403
        await agent.get("/mfa/api/sites/nope/members")  # 404

        await sign_in(owner, "owner@acme.test")
        await owner.put("/mfa/api/sites/acme/policy", json={"enforce": True})  # 403, not verified
        secret, _ = await enrol(ga, owner)
        await owner.get("/mfa/api/status")
        await owner.post("/mfa/api/totp/setup", json={})  # already enrolled
        await owner.get("/mfa/api/sites/acme/members")
        await owner.get("/mfa/api/sites/acme/events", params={"kind": "enrolled", "limit": 1})
        await owner.get("/mfa/api/sites/acme/events", params={"since": "2027"})  # 400
        await owner.put("/mfa/api/sites/acme/policy", json={"enforce": True})  # 409 + members
        await owner.put("/mfa/api/sites/acme/policy", json={"enforce": "yes"})  # 400
        await owner.put("/mfa/api/sites/acme/policy", json={"enforce": True, "grace_hours": 2})
        await owner.post("/mfa/api/disable", json={"code": ga.code(secret)})  # enforced: 409
        await agent.get("/mfa/api/status")  # enforcement: required
        ga.clock.advance(30)
        await owner.post("/mfa/api/verify", json={"code": ga.code(secret)})
        await owner.post("/mfa/api/verify", json={"code": ga.code(secret)})  # replay: 422
        await owner.post("/mfa/api/recovery-codes", json={})
        for _ in range(4):
            await owner.post("/mfa/api/verify", json={"code": "000000"})  # then 429
        await owner.put("/mfa/api/sites/acme/policy", json={"enforce": False})
        await owner.get("/mfa/api/nothing-here")  # the API's own 404
        await owner.get("/mfa/api/openapi.json")

    document = (await ga.client().get("/mfa/api/openapi.json")).json()
    schema = schemathesis.openapi.from_dict(document)
    statuses = set()
    for response in recorder.responses:
        path = response.request.url.path
        operation = schema.find_operation_by_path(response.request.method, path)
        if operation is None:
            # Only the catch-all 404 answers paths the document does not list.
            assert response.status_code == 404, path
            assert response.json()["error"]["code"] == "not_found"
            continue
        statuses.add(response.status_code)
        documented = document["paths"][operation.path][operation.method.lower()]["responses"]
        assert str(response.status_code) in documented, (operation.label, response.text)
        assert response.headers["content-type"] == "application/json", operation.label
        # Raises when the body does not match the schema of its status.
        operation.validate_response(response)
    # The walk covered every kind of answer the document describes.
    assert statuses >= {200, 400, 401, 403, 404, 409, 413, 415, 422, 429}


@pytest.mark.parametrize("mount", ["/mfa", "/auth/2fa"])
async def test_operation_paths_follow_the_mount_path(mount: str) -> None:
    ga = build_app(mount_path=mount)
    async with ga.client() as client:
        paths = (await client.get(f"{mount}/api/openapi.json")).json()["paths"]
    assert all(path.startswith(f"{mount}/api/") for path in paths)


async def test_every_operation_but_the_document_declares_the_cookie_and_the_bearer_token() -> None:
    ga = await acme_app()
    async with ga.client() as anonymous:
        document = (await anonymous.get("/mfa/api/openapi.json")).json()
    schemes = document["components"]["securitySchemes"]
    assert schemes["BearerToken"] == {
        "type": "http",
        "scheme": "bearer",
        "description": schemes["BearerToken"]["description"],
    }
    assert (schemes["SessionCookie"]["in"], schemes["SessionCookie"]["name"]) == (
        "cookie",
        "session",
    )
    for path, item in document["paths"].items():
        for method, operation in item.items():
            if path.endswith("/openapi.json"):
                assert "security" not in operation  # public
                continue
            # Either one: a list of alternatives, each naming a declared scheme.
            assert operation["security"] == [{"SessionCookie": []}, {"BearerToken": []}], (
                method,
                path,
            )


async def test_a_bearer_token_is_enough_for_the_operations_that_declare_it() -> None:
    """What Swagger's "Try it out" sends with a token: the Authorization header alone."""
    from starlette.middleware import Middleware
    from starlette.middleware.authentication import AuthenticationMiddleware
    from starlette.middleware.sessions import SessionMiddleware

    from mfa_guard.tokens import TokenSessionMiddleware, TokenSessions

    ga = build_app()
    sessions = TokenSessions(clock=ga.clock)
    await sessions.start("a-token-the-app-issued", {"user": "solo@example.test"})
    # The same app with the token sessions between the cookie and the authentication.
    ga.app.user_middleware.insert(1, Middleware(TokenSessionMiddleware, sessions=sessions))
    stack: list[object] = [middleware.cls for middleware in ga.app.user_middleware[:3]]
    assert stack == [SessionMiddleware, TokenSessionMiddleware, AuthenticationMiddleware]
    async with ga.client() as client:
        status = await client.get(
            "/mfa/api/status", headers={"Authorization": "Bearer a-token-the-app-issued"}
        )
    assert status.status_code == 200
    assert status.json()["authenticated"] is True
    assert not client.cookies


@pytest.mark.parametrize(
    ("path", "code"),
    [("/mfa/api/sites/%0A%C2%81%5C/members", "site_not_found"), ("/mfa/api/x%0Ay", "not_found")],
)
async def test_a_path_with_a_newline_gets_the_apis_json_not_the_apps_plain_404(
    path: str, code: str
) -> None:
    # Starlette's "{path:path}" stops at a newline: the mount matches it anyway.
    ga = await acme_app()
    async with ga.client() as client:
        await sign_in(client, "agent@acme.test")
        response = await client.get(path)
    assert response.status_code == 404
    assert response.json()["error"]["code"] == code
