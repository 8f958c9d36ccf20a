"""schemathesis fuzzes the live demo's JSON API with the API's own OpenAPI document.

The demo runs behind a real uvicorn server. Each operation is called with generated bodies and
parameters, valid and invalid, by two signed-in sessions: the operator of Acme without 2FA, and
Acme's owner with 2FA verified. Every answer must be a documented status, never a 500, with the
documented content type and a body that matches its schema; invalid input must be refused.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import schemathesis
from examples.inbox import DEMO_PASSWORD
from hypothesis import HealthCheck, given, settings
from schemathesis import Case
from schemathesis.checks import (
    content_type_conformance,
    negative_data_rejection,
    not_a_server_error,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)
from schemathesis.core.result import Ok
from schemathesis.generation import GenerationMode
from schemathesis.schemas import APIOperation

from mfa_guard.testing import current_code
from tests.apps import demo_inbox
from tests.live import served

# positive_data_acceptance is left out on purpose: a well-formed code that is wrong (422), a
# well-formed phone number that is not a mobile (400) are schema-valid and rightly refused.
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
    response_headers_conformance,
    negative_data_rejection,
]
EXAMPLES = 25
Operation = APIOperation[Any, Any, Any, Any]


@pytest.fixture(autouse=True)
def _demo_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    # The demo reads MFA_GUARD_* from the environment; this test uses its own defaults.
    for name in ("MFA_GUARD_ENCRYPTION_KEYS", "MFA_GUARD_DATABASE_URL", "MFA_GUARD_STORAGE_URI"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture(scope="module")
def live_demo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with served(demo_inbox(tmp_path_factory.mktemp("schemathesis"))) as url:
        yield url


def signed_in(url: str, email: str, *, with_2fa: bool) -> str:
    """The ``Cookie`` header of a session of ``email``, enrolled and verified if asked."""
    with httpx.Client(base_url=url) as client:
        response = client.post("/login", data={"email": email, "password": DEMO_PASSWORD})
        assert response.status_code == 303, response.text
        if with_2fa:
            secret = client.post("/mfa/api/totp/setup", json={}).json()["secret"]
            confirm = client.post(
                "/mfa/api/totp/confirm", json={"code": current_code(secret, time.time())}
            )
            assert confirm.status_code == 200, confirm.text
        return "; ".join(f"{name}={value}" for name, value in client.cookies.items())


@pytest.fixture(scope="module")
def sessions(live_demo: str) -> dict[str, str]:
    return {
        "operator without 2FA": signed_in(live_demo, "agent@acme.test", with_2fa=False),
        "owner with 2FA": signed_in(live_demo, "owner@acme.test", with_2fa=True),
    }


@pytest.fixture(scope="module")
def operations(live_demo: str) -> list[Operation]:
    schema = schemathesis.openapi.from_url(f"{live_demo}/mfa/api/openapi.json")
    found = []
    for result in schema.get_all_operations():
        assert isinstance(result, Ok), result  # the document is valid OpenAPI
        found.append(result.ok())
    return found


def fuzz(operation: Operation, mode: GenerationMode, cookie: str, url: str) -> None:
    """Calls ``operation`` with up to EXAMPLES generated cases of ``mode``, checking each."""

    @given(case=operation.as_strategy(generation_mode=mode))
    @settings(
        max_examples=EXAMPLES,
        deadline=None,
        suppress_health_check=list(HealthCheck),
        database=None,
        derandomize=True,
    )
    def check(case: Case[Any]) -> None:
        case.call_and_validate(base_url=url, headers={"Cookie": cookie}, checks=CHECKS)

    check()


@pytest.mark.parametrize("mode", list(GenerationMode), ids=str)
@pytest.mark.parametrize("who", ["operator without 2FA", "owner with 2FA"])
def test_the_live_api_honours_its_document(
    operations: list[Operation],
    sessions: dict[str, str],
    live_demo: str,
    who: str,
    mode: GenerationMode,
) -> None:
    fuzzed = 0
    for operation in operations:
        if mode is GenerationMode.NEGATIVE and not (
            len(operation.body) or len(operation.path_parameters)
        ):
            continue  # nothing to make invalid (GET status): the positive run covers it
        fuzz(operation, mode, sessions[who], live_demo)
        fuzzed += 1
    assert fuzzed >= 9


def test_the_document_is_what_the_demo_serves(live_demo: str) -> None:
    document = httpx.get(f"{live_demo}/mfa/api/openapi.json").json()
    # The demo has a site directory: the fuzzing covers the site endpoints too, and its
    # security log's query parameters.
    assert "/mfa/api/sites/{site}/policy" in document["paths"]
    assert "/mfa/api/sites/{site}/events" in document["paths"]
    # And passkeys: the fuzzing covers the WebAuthn answers (malformed JSON, CBOR, base64url).
    assert {"/mfa/api/webauthn/register", "/mfa/api/webauthn/authenticate"} <= set(
        document["paths"]
    )
