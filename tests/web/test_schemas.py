"""The pydantic models of the JSON API's bodies (mfa_guard.web.schemas) and the API cannot drift.

Every answer of a walk through the API is read back into the response model the OpenAPI document
names for its path and status, and written out again byte for byte; every request body the
models refuse, the API refuses with the same status, code and message (and lets through what
they accept); every limit the document states is one the API enforces.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from typing import Any, get_args

import httpx
import pytest
from pydantic import ValidationError

from mfa_guard.core.marker import METHODS
from mfa_guard.sms import OutboxSMS
from mfa_guard.stores.events import MemoryEventStore
from mfa_guard.stores.sites import MemorySiteDirectory, Role
from mfa_guard.testing.webauthn import SoftAuthenticator
from mfa_guard.web import schemas
from mfa_guard.web.api import ALL_METHODS, API
from mfa_guard.web.openapi import OPERATIONS, refusal_status
from tests.apps import GuardedApp, build_app, enrol, sign_in

SMS = {
    "enabled": True,
    "provider": "outbox",
    "allowed_regions": ["GB"],
    # The resend cooldown runs on the real clock of `limits`: widened so the walk never waits.
    "resend_cooldown": "100/second",
}
MOBILE = "+44 7400 123456"
TEXTED_CODE = re.compile(r"\b(\d{6}) is your ")
ABSENT = object()
JSON = "application/json"


ORIGIN = "https://app.example.test"


async def acme_app(outbox: OutboxSMS | None = None, **settings: Any) -> GuardedApp:
    """Everything on: a site directory (Acme: an owner and an operator) and its security log,
    SMS and trusted devices."""
    directory = MemorySiteDirectory()
    await directory.save_site("acme", "Acme")
    await directory.add_member("acme", "owner@acme.test", Role.OWNER)
    await directory.add_member("acme", "agent@acme.test", Role.OPERATOR)
    return build_app(
        sites=directory,
        sms_provider=outbox or OutboxSMS(),
        sms=SMS,
        trusted_devices={"enabled": True},
        webauthn={"rp_id": "app.example.test", "origins": [ORIGIN]},
        event_store=MemoryEventStore(),
        **settings,
    )


async def the_document(ga: GuardedApp) -> dict[str, Any]:
    async with ga.client() as anonymous:
        document: dict[str, Any] = (await anonymous.get("/mfa/api/openapi.json")).json()
    return document


def operation_of(document: dict[str, Any], method: str, path: str) -> tuple[str, Any] | None:
    """The document's path template matching ``path`` and its operation for ``method``."""
    for template, item in document["paths"].items():
        pattern = re.sub(r"\\{\w+\\}", "[^/]+", re.escape(template))
        if re.fullmatch(pattern, path) and method.lower() in item:
            return template, item[method.lower()]
    return None


def answer_model(document: dict[str, Any], response: dict[str, Any]) -> str | None:
    """The component the document names for an answer (``None``: any JSON)."""
    if "$ref" in response:
        response = document["components"]["responses"][response["$ref"].rsplit("/", 1)[1]]
    ref = response["content"]["application/json"]["schema"].get("$ref")
    return None if ref is None else str(ref).rsplit("/", 1)[1]


class Recorder:
    """Keeps every response of the API a client got."""

    def __init__(self) -> None:
        self.responses: list[httpx.Response] = []

    async def __call__(self, response: httpx.Response) -> None:
        await response.aread()
        if "/mfa/api/" in response.request.url.path:
            self.responses.append(response)


def texted_code(outbox: OutboxSMS) -> str:
    match = TEXTED_CODE.search(outbox.messages[-1].text)
    assert match is not None
    return match.group(1)


async def walk(ga: GuardedApp, outbox: OutboxSMS, recorder: Recorder) -> None:
    """Every operation answered, and refusals of every kind."""

    def client() -> httpx.AsyncClient:
        # https: the device cookie is Secure, sent back over TLS only.
        return ga.client(base_url=ORIGIN, event_hooks={"response": [recorder]})

    async with client() as owner, client() as agent, client() as anonymous:
        await anonymous.get("/mfa/api/status")
        await anonymous.get("/mfa/api/openapi.json")
        await sign_in(agent, "agent@acme.test")
        await agent.get("/mfa/api/status")
        await agent.post("/mfa/api/totp/setup", content=b"code=1")
        await agent.post("/mfa/api/totp/setup", json={"pad": "x" * 5000})
        await agent.post("/mfa/api/totp/setup", json={}, headers={"origin": "https://evil.test"})
        await agent.post("/mfa/api/verify", content=b"[", headers={"content-type": JSON})
        await agent.post("/mfa/api/verify", json={"code": "1" * 65})
        await agent.post("/mfa/api/verify", json={"method": "fax", "code": "123456"})
        await agent.post("/mfa/api/phone", json={"phone": "+44 1632 960000"})  # not a mobile
        await agent.post("/mfa/api/phone", json={"phone": MOBILE})
        await agent.post("/mfa/api/phone/verify", json={"code": texted_code(outbox)})
        await agent.post("/mfa/api/sms/send", json={})  # not enrolled
        secret, _ = await enrol(ga, agent)
        await agent.get("/mfa/api/status")
        ga.clock.advance(30)
        remember = {"code": ga.code(secret), "remember_device": True}
        await agent.post("/mfa/api/verify", json=remember)
        await agent.post("/mfa/api/verify", json=remember)  # the step is used
        devices = (await agent.get("/mfa/api/devices")).json()["devices"]
        await agent.delete(f"/mfa/api/devices/{devices[0]['id']}")
        await agent.delete("/mfa/api/devices/no-such-device")
        await agent.delete("/mfa/api/devices")
        await agent.post("/mfa/api/sms/send", json={})
        await agent.post("/mfa/api/verify", json={"method": "sms", "code": texted_code(outbox)})
        await agent.post("/mfa/api/recovery-codes", json={})  # verified by a text
        ga.clock.advance(30)
        await agent.post("/mfa/api/verify", json={"code": ga.code(secret)})
        await agent.post("/mfa/api/recovery-codes", json={})
        apps = (await agent.get("/mfa/api/authenticators")).json()["authenticators"]
        await agent.patch(f"/mfa/api/authenticators/{apps[0]['id']}", json={"name": "Phone"})
        await agent.patch("/mfa/api/authenticators/nope", json={"name": "Phone"})
        await agent.patch(f"/mfa/api/authenticators/{apps[0]['id']}", json={"name": "\u0007"})
        second = (await agent.post("/mfa/api/totp/setup", json={})).json()["secret"]
        await agent.post("/mfa/api/totp/confirm", json={"code": ga.code(second), "name": "Tab"})
        apps = (await agent.get("/mfa/api/authenticators")).json()["authenticators"]
        await agent.delete(f"/mfa/api/authenticators/{apps[1]['id']}")
        await agent.get("/mfa/api/sites")
        await agent.get("/mfa/api/sites/acme/members")  # not the owner
        await agent.get("/mfa/api/sites/nope/members")
        await agent.post("/mfa/api/sessions/revoke", json={})
        ga.clock.advance(30)
        await agent.post("/mfa/api/disable", json={"code": ga.code(secret)})

        await sign_in(owner, "owner@acme.test")
        await enrol(ga, owner)
        key = SoftAuthenticator()
        options = (await owner.post("/mfa/api/webauthn/register/options", json={})).json()
        answer = key.create(options["publicKey"], origin=ORIGIN)
        await owner.post("/mfa/api/webauthn/register", json={"credential": {"id": "x"}})
        await owner.post("/mfa/api/webauthn/register", json={"credential": answer, "name": "Key"})
        options = (await owner.post("/mfa/api/webauthn/authenticate/options", json={})).json()
        answer = key.get(options["publicKey"], origin=ORIGIN)
        await owner.post("/mfa/api/webauthn/authenticate", json={"credential": answer})
        await owner.post("/mfa/api/webauthn/authenticate", json={"credential": answer})
        await agent.post("/mfa/api/webauthn/authenticate/options", json={})  # no passkey
        await owner.get("/mfa/api/sites")
        await owner.get("/mfa/api/sites/acme/members")
        page = (await owner.get("/mfa/api/sites/acme/events", params={"limit": 2})).json()
        await owner.get("/mfa/api/sites/acme/events", params={"cursor": page["next_cursor"]})
        await owner.get("/mfa/api/sites/acme/events", params={"kind": "nope"})
        await owner.get("/mfa/api/sites/acme/events", params={"cursor": "x"})
        await agent.get("/mfa/api/sites/acme/events")  # not the owner
        await owner.put("/mfa/api/sites/acme/policy", json={"enforce": True})  # members lack 2FA
        await owner.put("/mfa/api/sites/acme/policy", json={"enforce": True, "grace_hours": 2})
        await agent.get("/mfa/api/status")  # required by Acme
        await owner.post("/mfa/api/disable", json={"code": "123456"})  # enforced by Acme
        reset = "/mfa/api/sites/acme/members/agent@acme.test/reset"
        await owner.post(reset, json={})  # nothing to reset
        await enrol(ga, agent)
        await owner.post(reset, json={})
        for _ in range(4):
            await owner.post("/mfa/api/verify", json={"code": "000000"})  # then 429


async def test_every_answer_is_its_documented_model_written_back_byte_for_byte() -> None:
    outbox = OutboxSMS()
    ga = await acme_app(outbox, rate_limits={"failures": "3/minute;100/day"})
    recorder = Recorder()
    await walk(ga, outbox, recorder)
    document = await the_document(ga)
    answered = set()
    for response in recorder.responses:
        found = operation_of(document, response.request.method, response.request.url.path)
        assert found is not None, response.request.url
        template, operation = found
        status = str(response.status_code)
        assert status in operation["responses"], (template, response.text)
        answered.add((response.request.method, template, response.status_code))
        name = answer_model(document, operation["responses"][status])
        if name is None:  # the document itself
            continue
        model = getattr(schemas, name)
        assert issubclass(model, schemas.ResponseBody), name
        body = model.model_validate(response.json())
        retry_after = response.headers.get("retry-after")
        again = schemas.json_response(
            body,
            response.status_code,
            retry_after=None if retry_after is None else int(retry_after),
        )
        # The fields in the same order, the optional ones given or left out alike.
        assert again.body == response.content, (template, name)
        assert again.headers["cache-control"] == response.headers["cache-control"]
    successes = {(method, path) for method, path, status in answered if status < 300}
    assert successes == {
        (operation.method.upper(), "/mfa/api" + operation.path) for operation in OPERATIONS
    }
    statuses = {status for _, _, status in answered}
    assert statuses >= {200, 202, 400, 401, 403, 404, 409, 413, 415, 422, 429}


def wrong_values(max_grace_hours: int) -> list[object]:
    return [
        ABSENT,
        None,
        True,
        False,
        0,
        -1,
        5,
        1.5,
        float("nan"),
        float("inf"),
        10**400,
        "",
        "x",
        "totp",
        "sms",
        "TOTP",
        [],
        {},
        ["123456"],
        "1" * schemas.MAX_CODE_LENGTH,
        "1" * (schemas.MAX_CODE_LENGTH + 1),
        max_grace_hours,
        max_grace_hours + 1,
    ]


# A body each model accepts, and where to send it.
VALID_BODIES: dict[type[schemas.RequestBody], list[tuple[str, str]]] = {
    schemas.Code: [("/mfa/api/phone/verify", "post")],
    schemas.NamedCode: [("/mfa/api/totp/confirm", "post")],
    schemas.Naming: [("/mfa/api/authenticators/x", "patch")],
    schemas.PasskeyRegistration: [("/mfa/api/webauthn/register", "post")],
    schemas.PasskeyAssertion: [("/mfa/api/webauthn/authenticate", "post")],
    schemas.MethodCode: [("/mfa/api/disable", "post")],
    schemas.Verification: [("/mfa/api/verify", "post")],
    schemas.Phone: [("/mfa/api/phone", "post")],
    schemas.PolicyChange: [("/mfa/api/sites/acme/policy", "put")],
}
BASE: dict[str, Any] = {
    "code": "123456",
    "phone": MOBILE,
    "enforce": False,
    "name": "Key",
    "credential": {"id": "x"},
}


def bodies(model: type[schemas.RequestBody], max_grace_hours: int) -> Iterator[dict[str, Any]]:
    """``model``'s valid body with each of its fields in turn set to each wrong value."""
    valid = {name: BASE[name] for name, field in model.model_fields.items() if field.is_required()}
    for name in model.model_fields:
        for value in wrong_values(max_grace_hours):
            body = dict(valid)
            body.pop(name, None)
            if value is not ABSENT:
                body[name] = value
            yield body


def refusal_of(model: type[schemas.RequestBody], body: dict[str, Any]) -> tuple[int, str, str]:
    try:
        model.model_validate(body)
    except ValidationError as exc:
        denied = schemas.refused(exc).denied
        return denied.status, denied.code, denied.message
    return 0, "", ""


@pytest.mark.parametrize("max_grace_hours", [schemas.DEFAULT_MAX_GRACE_HOURS, 48])
async def test_a_body_the_models_refuse_the_api_refuses_alike_and_what_they_accept_it_reads(
    max_grace_hours: int,
) -> None:
    ga = await acme_app(max_grace_hours=max_grace_hours)
    checked = 0
    async with ga.client() as agent:
        await sign_in(agent, "agent@acme.test")
        for base, targets in VALID_BODIES.items():
            model = base
            if base is schemas.PolicyChange:
                model = schemas.policy_change(max_grace_hours)
            for path, method in targets:
                for body in bodies(model, max_grace_hours):
                    content = json.dumps(body).encode()
                    response = await agent.request(
                        method, path, content=content, headers={"content-type": JSON}
                    )
                    refused = refusal_of(model, body)
                    error = response.json().get("error", {})
                    answer = (response.status_code, error.get("code"), error.get("message"))
                    if refused[0]:
                        assert answer == refused, (path, body)
                    else:  # read: whatever the API then answers, it is no field's refusal
                        assert answer[1] not in ("invalid_input", "invalid_method"), (path, body)
                    checked += 1
    fields = sum(len(model.model_fields) * len(to) for model, to in VALID_BODIES.items())
    assert checked == fields * len(wrong_values(max_grace_hours))


def limits(schema: dict[str, Any]) -> Iterator[tuple[str, int]]:
    """The upper limits a property's schema states: maxLength, maximum (in anyOf too)."""
    for option in [schema, *schema.get("anyOf", [])]:
        for keyword in ("maxLength", "maximum"):
            if keyword in option:
                yield keyword, int(option[keyword])


@pytest.mark.parametrize("max_grace_hours", [schemas.DEFAULT_MAX_GRACE_HOURS, 48])
async def test_every_limit_the_document_states_is_enforced(max_grace_hours: int) -> None:
    ga = await acme_app(max_grace_hours=max_grace_hours)
    document = await the_document(ga)
    components = document["components"]["schemas"]
    found = set()
    async with ga.client() as agent:
        await sign_in(agent, "agent@acme.test")
        for template, item in document["paths"].items():
            for method, operation in item.items():
                path = (
                    template.replace("{site}", "acme")
                    .replace("{device}", "x")
                    .replace("{authenticator}", "x")
                )
                for parameter in operation.get("parameters", []):
                    name = parameter["name"]
                    for keyword, limit in limits(parameter["schema"]):
                        found.add((template, name, limit))
                        if parameter["in"] == "query":
                            at, beyond = (
                                ("x" * limit, "x" * (limit + 1))
                                if keyword == "maxLength"
                                else (limit, limit + 1)
                            )
                            refused = await agent.request(method, path, params={name: beyond})
                            assert refused.status_code == 400, (template, name, refused.text)
                            read = await agent.request(method, path, params={name: at})
                            assert read.status_code != 400, (template, name, read.text)
                            continue
                        long = template.replace("{" + name + "}", "x" * (limit + 1))
                        response = await agent.request(method, long, json={})
                        assert response.status_code == 404, (long, response.text)
                if "requestBody" not in operation:
                    continue
                ref = operation["requestBody"]["content"][JSON]["schema"]["$ref"]
                component = components[ref.rsplit("/", 1)[1]]
                for name, schema in component["properties"].items():
                    for keyword, limit in limits(schema):
                        found.add((template, name, limit))
                        valid = {key: BASE[key] for key in component.get("required", [])}
                        if keyword == "maxLength":
                            at, beyond = BASE[name].ljust(limit), BASE[name].ljust(limit + 1)
                        else:
                            at, beyond = limit, limit + 1
                        refused = await agent.request(method, path, json={**valid, name: beyond})
                        assert refused.status_code == 400, (template, name, refused.text)
                        read = await agent.request(method, path, json={**valid, name: at})
                        assert read.status_code != 400, (template, name, read.text)
    code = schemas.MAX_CODE_LENGTH
    assert found >= {
        ("/mfa/api/totp/confirm", "code", code),
        ("/mfa/api/verify", "code", code),
        ("/mfa/api/disable", "code", code),
        ("/mfa/api/phone/verify", "code", code),
        ("/mfa/api/phone", "phone", 32),
        ("/mfa/api/sites/{site}/policy", "grace_hours", max_grace_hours),
        ("/mfa/api/sites/{site}/members", "site", 255),
        ("/mfa/api/sites/{site}/events", "member", 255),
        ("/mfa/api/sites/{site}/events", "limit", 200),
        ("/mfa/api/devices/{device}", "device", 64),
        ("/mfa/api/totp/confirm", "name", 64),
        ("/mfa/api/authenticators/{authenticator}", "name", 64),
        ("/mfa/api/authenticators/{authenticator}", "authenticator", 32),
    }


@pytest.mark.parametrize("everything", [True, False], ids=["sites and devices", "neither"])
async def test_the_api_serves_every_path_and_method_the_document_describes_and_no_other(
    everything: bool,
) -> None:
    ga = await acme_app() if everything else build_app()
    document = await the_document(ga)
    served = {route.path for route in API(ga.guard.kit).routes()} - {"/api/{rest:path}"}
    assert {"/mfa" + path for path in served} == set(document["paths"])
    async with ga.client() as anonymous:
        for template, item in document["paths"].items():
            path = template.replace("{site}", "acme").replace("{device}", "x")
            documented = {method.upper() for method in item}
            if "GET" in documented:
                documented.add("HEAD")
            answered = set()
            for method in ALL_METHODS:
                response = await anonymous.request(method, path)
                if response.status_code == 405:
                    if method != "HEAD":  # HEAD: the same answer, without its body
                        assert response.json()["error"]["code"] == "method_not_allowed"
                    assert response.headers["allow"] == ", ".join(sorted(documented)), template
                else:
                    answered.add(method)
                    # Nobody is signed in: only an operation the document makes public answers.
                    operation = item["get" if method == "HEAD" else method.lower()]
                    assert (response.status_code == 401) == ("security" in operation), template
            assert answered == documented, template


def test_every_operation_has_its_handler_and_every_handler_its_operation() -> None:
    handlers = API(build_app().guard.kit).handlers()
    assert set(handlers) == {(operation.method, operation.path) for operation in OPERATIONS}


def test_every_refusal_an_operation_lists_has_its_status() -> None:
    for operation in OPERATIONS:
        for code in operation.refusals:
            assert 400 <= refusal_status(code) < 600, code


def test_a_verified_method_is_one_a_session_marker_holds() -> None:
    assert get_args(schemas.VerifiedBy) == METHODS
