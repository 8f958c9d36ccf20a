"""Property-based fuzzing (hypothesis) of every JSON endpoint and every form of the kit, with
random bodies, content types, headers and cookies: never a 500, never a stack trace, and a refused
request changes nothing.

schemathesis (tests/e2e/test_schemathesis.py) fuzzes the JSON API from its OpenAPI document; this
suite goes where a document does not: HTML forms, raw bytes, lying content types, odd headers,
forged and garbled cookies, in every state a session can be in.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlencode

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mfa_guard.events import AuditEvent, EventKind
from mfa_guard.sms import OutboxSMS
from mfa_guard.stores.events import MemoryEventStore
from mfa_guard.stores.sites import MemorySiteDirectory, Role
from tests.apps import GuardedApp, build_app
from tests.scenarios import USER, State, arrive, page_token
from tests.sms_apps import SMS

EXAMPLES = 300

# Every route of the kit that takes input, with the method it acts on.
ENDPOINTS = [
    ("POST", "/mfa/api/totp/setup"),
    ("POST", "/mfa/api/totp/confirm"),
    ("POST", "/mfa/api/verify"),
    ("POST", "/mfa/api/recovery-codes"),
    ("POST", "/mfa/api/disable"),
    ("POST", "/mfa/api/phone"),
    ("POST", "/mfa/api/phone/verify"),
    ("POST", "/mfa/api/sms/send"),
    ("POST", "/mfa/api/sessions/revoke"),
    ("GET", "/mfa/api/status"),
    ("GET", "/mfa/api/sites"),
    ("GET", "/mfa/api/sites/acme/members"),
    ("GET", "/mfa/api/sites/acme/events"),
    ("PUT", "/mfa/api/sites/acme/policy"),
    ("GET", "/mfa/api/devices"),
    ("DELETE", "/mfa/api/devices"),
    ("DELETE", "/mfa/api/devices/some-device"),
    ("POST", "/mfa/challenge"),
    ("POST", "/mfa/sms"),
    ("POST", "/mfa/enrol"),
    ("POST", "/mfa/enrol/confirm"),
    ("POST", "/mfa/settings/recovery-codes"),
    ("POST", "/mfa/settings/disable"),
    ("POST", "/mfa/settings/sessions"),
    ("POST", "/mfa/settings/phone"),
    ("POST", "/mfa/settings/phone/verify"),
    ("POST", "/mfa/settings/devices/forget"),
    ("POST", "/mfa/settings/devices/forget-all"),
    ("GET", "/mfa/challenge"),
    ("GET", "/mfa/enrol"),
    ("GET", "/mfa/settings"),
]
FIELDS = [
    "code",
    "method",
    "phone",
    "next",
    "csrf_token",
    "enforce",
    "grace_hours",
    "remember_device",
    "remember",
    "device",
    "pad",
]
CONTENT_TYPES = [
    "application/json",
    "application/json; charset=utf-8",
    "application/x-www-form-urlencoded",
    "multipart/form-data; boundary=xyz",
    "multipart/form-data",
    "text/plain",
    "application/JSON",
    "",
]

texts = st.text(max_size=40)
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | texts,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(texts, children, max_size=4),
    max_leaves=12,
)
json_objects = st.dictionaries(st.sampled_from(FIELDS) | texts, json_values, max_size=5)
header_values = st.text(alphabet=st.characters(min_codepoint=32, max_codepoint=126), max_size=60)


@st.composite
def bodies(draw: st.DrawFn) -> tuple[str | None, bytes]:
    """A content type and a body that may or may not match it."""
    content_type = draw(st.sampled_from(CONTENT_TYPES) | header_values)
    kind = draw(st.sampled_from(["json", "form", "bytes", "empty"]))
    if kind == "json":
        body = json.dumps(draw(json_objects | json_values)).encode()
    elif kind == "form":
        pairs = draw(st.lists(st.tuples(st.sampled_from(FIELDS) | texts, texts), max_size=6))
        body = urlencode(pairs).encode()
    elif kind == "bytes":
        body = draw(st.binary(max_size=300))
    else:
        body = b""
    return (content_type or None), body


@st.composite
def extra_headers(draw: st.DrawFn) -> dict[str, str]:
    headers: dict[str, str] = {}
    for name in ("origin", "sec-fetch-site", "accept", "referer", "x-forwarded-for"):
        if draw(st.booleans()):
            headers[name] = draw(
                st.sampled_from(["http://testserver", "https://evil.example", "null", "*/*"])
                | header_values
            )
    return headers


@st.composite
def cookies(draw: st.DrawFn, session: str) -> str:
    """The session's own cookie, or it garbled, or a forged one, or none; the own one may come
    with a device cookie of any shape."""
    choice = draw(st.sampled_from(["own", "garbled", "forged", "none", "device"]))
    if choice == "own":
        return f"session={session}"
    if choice == "device":
        token = draw(st.text(alphabet="AZaz09_-", min_size=43, max_size=43) | header_values)
        return f"session={session}; mfa_guard_device={token}"
    if choice == "garbled":
        cut = draw(st.integers(min_value=0, max_value=len(session)))
        return f"session={session[:cut]}{draw(header_values)}"
    if choice == "forged":
        return f"session={draw(header_values)}"
    return ""


class Fuzzed:
    """The app, a session in a given state, and what a refused request must leave as it was."""

    def __init__(self, runner: asyncio.Runner, state: State) -> None:
        self.runner = runner
        directory = MemorySiteDirectory()
        self.ga: GuardedApp = build_app(
            sms_provider=OutboxSMS(),
            sms=SMS,
            sites=directory,
            recheck_seconds=60,
            trusted_devices={"enabled": True},
            event_store=MemoryEventStore(),
        )

        async def prepare() -> str:
            await directory.save_site("acme", "Acme")
            await directory.add_member("acme", USER, Role.OWNER)
            async with self.ga.client() as client:
                await arrive(self.ga, client, state)
                if state is not State.SIGNED_OUT:
                    self.token = await page_token(client, state)
                return client.cookies.get("session") or ""

        self.token = ""
        self.session = runner.run(prepare())
        self.directory = directory

    async def snapshot(self) -> tuple[Any, ...]:
        site = await self.directory.site("acme")
        # Audit events and failure counts are what a refused attempt leaves, by design.
        devices = self.ga.guard.trusted_devices
        remembered = [] if devices is None else await devices.devices.devices(USER)
        return (await self.ga.store.get(USER), site, [d.id for d in remembered])

    async def send(
        self, method: str, path: str, content_type: str | None, body: bytes, headers: dict[str, str]
    ) -> tuple[httpx.Response, bool]:
        transport = httpx.ASGITransport(
            app=self.ga.app, client=("203.0.113.7", 4000), raise_app_exceptions=False
        )
        before = await self.snapshot()
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
            if content_type is not None:
                headers = {**headers, "content-type": content_type}
            response = await client.request(method, path, content=body, headers=headers)
        changed = await self.snapshot() != before
        return response, changed


@pytest.fixture(scope="module")
def runner() -> Iterator[asyncio.Runner]:
    with asyncio.Runner() as runner:
        yield runner


FUZZING = settings(
    max_examples=EXAMPLES,
    deadline=None,
    database=None,
    derandomize=True,
    suppress_health_check=list(HealthCheck),
)


@pytest.mark.parametrize("state", list(State), ids=str)
def test_no_request_is_a_500_and_a_refused_one_changes_nothing(
    runner: asyncio.Runner, state: State
) -> None:
    fuzzed = Fuzzed(runner, state)

    @FUZZING
    @given(
        endpoint=st.sampled_from(ENDPOINTS),
        proper=st.booleans(),
        fields=st.dictionaries(st.sampled_from(FIELDS), json_values, max_size=4),
        body=bodies(),
        headers=extra_headers(),
        cookie=cookies(fuzzed.session),
    )
    def check(
        endpoint: tuple[str, str],
        proper: bool,
        fields: dict[str, Any],
        body: tuple[str | None, bytes],
        headers: dict[str, str],
        cookie: str,
    ) -> None:
        method, path = endpoint
        content_type: str | None
        if proper:
            # A well-formed request of this session with random field values: past the
            # content-type, origin, cookie and CSRF checks, into the handlers themselves.
            headers, cookie = {}, f"session={fuzzed.session}"
            if "/api/" in path:
                content_type, content = "application/json", json.dumps(fields).encode()
            else:
                values = {name: str(value) for name, value in fields.items()}
                values["csrf_token"] = fuzzed.token
                content_type = "application/x-www-form-urlencoded"
                content = urlencode(values).encode()
        else:
            content_type, content = body
        if cookie:
            headers = {**headers, "cookie": cookie}
        response, changed = runner.run(fuzzed.send(method, path, content_type, content, headers))
        assert response.status_code < 500, (
            method,
            path,
            response.status_code,
            response.text[:300],
        )
        assert "Traceback" not in response.text
        assert 'File "' not in response.text
        if response.status_code >= 400:
            assert not changed, (method, path, response.status_code, response.text[:300])

    check()


# The security log's parameters, and a few of its values: the rest is random text.
EVENT_PARAMETERS = ["kind", "member", "since", "until", "cursor", "limit"]
EVENT_VALUES = ["verified", "locked_out", USER, "2027-01-15T08:00:00Z", "1", "200", "A" * 32]


def test_no_query_of_a_site_log_is_a_500(runner: asyncio.Runner) -> None:
    """Random query strings for GET sites/{site}/events, of a verified owner whose log holds
    events: every answer is the page (200) or a 400 with its code, never a 500."""
    fuzzed = Fuzzed(runner, State.VERIFIED)
    log = fuzzed.ga.guard.event_store
    assert isinstance(log, MemoryEventStore)
    for _ in range(3):
        event = AuditEvent(EventKind.VERIFIED, USER, fuzzed.ga.clock(), method="totp")
        runner.run(log.append(event))

    @FUZZING
    @given(
        pairs=st.lists(
            st.tuples(
                st.sampled_from(EVENT_PARAMETERS) | texts,
                st.sampled_from(EVENT_VALUES) | texts,
            ),
            max_size=6,
        )
    )
    def check(pairs: list[tuple[str, str]]) -> None:
        path = "/mfa/api/sites/acme/events?" + urlencode(pairs)
        headers = {"cookie": f"session={fuzzed.session}"}
        response, _ = runner.run(fuzzed.send("GET", path, None, b"", headers))
        assert response.status_code in (200, 400), (pairs, response.status_code, response.text)
        if response.status_code == 400:
            assert response.json()["error"]["code"] in ("invalid_input", "invalid_cursor")
        else:
            assert set(response.json()) == {"events", "next_cursor"}

    check()
