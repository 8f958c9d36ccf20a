"""The request path: who is let through, who is challenged, and what it costs."""

from __future__ import annotations

import base64
import collections
import json
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from itsdangerous import TimestampSigner
from starlette.authentication import SimpleUser, UnauthenticatedUser
from starlette.types import Message, Receive, Scope, Send

from mfa_guard import MemoryStore, StoreUnavailable
from mfa_guard.core.marker import EnrolmentSummary
from mfa_guard.identity import user_identity
from mfa_guard.testing import CountingStore
from mfa_guard.web import middleware as middleware_module
from mfa_guard.web.middleware import MFAGuardMiddleware
from tests.apps import SESSION_SECRET, GuardedApp, build_app, enrol, sign_in
from tests.scenarios import websocket_messages


def read_session(client: httpx.AsyncClient) -> dict[str, Any]:
    signed = client.cookies["session"]
    payload = TimestampSigner(SESSION_SECRET).unsign(signed.encode())
    data: dict[str, Any] = json.loads(base64.b64decode(payload))
    return data


def write_session(client: httpx.AsyncClient, data: dict[str, Any]) -> None:
    """Replaces the session cookie, where the app's responses set it (so they replace it too)."""
    payload = base64.b64encode(json.dumps(data).encode())
    domains = [cookie.domain for cookie in client.cookies.jar if cookie.name == "session"]
    client.cookies.delete("session")
    client.cookies.set(
        "session", TimestampSigner(SESSION_SECRET).sign(payload).decode(), domain=domains[-1]
    )


async def challenged(
    ga: GuardedApp, client: httpx.AsyncClient, user: str = "solo@example.test"
) -> str:
    """Enrols ``user``, signs out and in again: the session now waits for its second factor."""
    await sign_in(client, user)
    secret, _ = await enrol(ga, client)
    await client.post("/logout")
    await sign_in(client, user)
    return secret


async def test_anonymous_requests_pass_through(client: httpx.AsyncClient) -> None:
    response = await client.get("/protected")
    assert response.status_code == 200
    assert response.text == "protected content"


async def test_a_user_without_2fa_passes_through(client: httpx.AsyncClient) -> None:
    await sign_in(client)
    assert (await client.get("/protected")).status_code == 200


async def test_an_enrolled_user_is_challenged_at_every_new_sign_in(guarded: GuardedApp) -> None:
    async with guarded.client() as client:
        secret = await challenged(guarded, client)
        response = await client.get("/protected?tab=2")
        assert response.status_code == 303
        assert response.headers["location"] == "/mfa/challenge?next=/protected%3Ftab%3D2"
        guarded.clock.advance(30)
        verified = await client.post("/mfa/api/verify", json={"code": guarded.code(secret)})
        assert verified.status_code == 200
        assert (await client.get("/protected")).text == "protected content"


@pytest.mark.parametrize(
    ("method", "path", "headers"),
    [
        ("GET", "/api/data", {}),
        ("GET", "/protected", {"accept": "application/json"}),
        ("POST", "/protected", {}),
        ("POST", "/api/data", {"accept": "text/html"}),
    ],
)
async def test_api_requests_get_401_mfa_required(
    guarded: GuardedApp, method: str, path: str, headers: dict[str, str]
) -> None:
    async with guarded.client() as client:
        await challenged(guarded, client)
        response = await client.request(method, path, headers=headers)
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "mfa_required"


async def test_exempt_paths_and_the_mount_are_never_guarded(guarded: GuardedApp) -> None:
    async with guarded.client() as client:
        await challenged(guarded, client)
        assert (await client.get("/mfa/challenge")).status_code == 200
        assert (await client.post("/logout")).status_code == 303


async def test_a_verified_session_makes_no_store_call_until_the_recheck_interval() -> None:
    store = CountingStore(MemoryStore())
    ga = build_app(store=store, recheck_seconds=60)
    async with ga.client() as client:
        secret = await challenged(ga, client)
        ga.clock.advance(30)
        assert (await client.post("/mfa/api/verify", json={"code": ga.code(secret)})).is_success
        store.calls.clear()
        for _ in range(5):
            assert (await client.get("/protected")).status_code == 200
        assert store.total == 0
        ga.clock.advance(60)
        assert (await client.get("/protected")).status_code == 200
        assert dict(store.calls) == {"summary": 1}
        assert (await client.get("/protected")).status_code == 200
        assert dict(store.calls) == {"summary": 1}


async def test_an_anonymous_request_makes_no_store_call() -> None:
    store = CountingStore(MemoryStore())
    ga = build_app(store=store)
    async with ga.client() as client:
        await client.get("/protected")
    assert store.total == 0


async def test_the_session_cookie_holds_no_user_id_or_secret_in_the_marker(
    guarded: GuardedApp,
) -> None:
    async with guarded.client() as client:
        secret = await challenged(guarded, client)
        await client.get("/protected")
        marker = json.dumps(read_session(client)["mfa_guard"])
    assert "solo" not in marker
    assert secret not in marker


async def test_a_marker_copied_onto_another_users_session_is_ignored(guarded: GuardedApp) -> None:
    async with guarded.client() as alice, guarded.client() as mallory:
        alice_secret = await challenged(guarded, alice, "alice@acme.test")
        await challenged(guarded, mallory, "mallory@acme.test")
        guarded.clock.advance(30)
        await alice.post("/mfa/api/verify", json={"code": guarded.code(alice_secret)})
        assert (await alice.get("/protected")).status_code == 200
        stolen = read_session(alice)["mfa_guard"]
        forged = read_session(mallory) | {"mfa_guard": stolen}
        write_session(mallory, forged)
        assert (await mallory.get("/protected")).status_code == 303


async def test_a_marker_of_the_previous_version_is_rechecked_and_challenged_once() -> None:
    store = CountingStore(MemoryStore())
    ga = build_app(store=store)
    async with ga.client() as client:
        await sign_in(client)
        secret, _ = await enrol(ga, client)
        assert (await client.get("/protected")).status_code == 200
        current = read_session(client)["mfa_guard"]
        # Version 1: an object, with an HMAC-SHA256 subject, written before the upgrade.
        _, _, nonce, checked_at, epoch, _, verified_at, method, enrol_by, *_ = current
        old = {
            "v": 1,
            "sub": "x" * 24,
            "n": nonce,
            "chk": checked_at,
            "ep": epoch,
            "enr": True,
            "vat": verified_at,
            "m": method,
            "eb": enrol_by,
        }
        write_session(client, read_session(client) | {"mfa_guard": old})
        store.calls.clear()
        response = await client.get("/protected")
        assert response.status_code == 303
        assert dict(store.calls) == {"summary": 1}
        # Re-checked into the current version: once verified again, no more store calls.
        assert read_session(client)["mfa_guard"][0] == 2
        ga.clock.advance(30)
        assert (await client.post("/mfa/api/verify", json={"code": ga.code(secret)})).is_success
        store.calls.clear()
        assert (await client.get("/protected")).status_code == 200
        assert store.total == 0


@pytest.mark.parametrize(
    ("position", "value"),
    [(5, 1), (4, True), (6, True), (3, "1800000000"), (1, 42), (7, "magic")],
    ids=[
        "enrolled as 1",
        "epoch as true",
        "verified_at as true",
        "checked_at as text",
        "subject as a number",
        "unknown method",
    ],
)
async def test_a_marker_with_a_field_of_the_wrong_type_counts_as_none(
    position: int, value: object
) -> None:
    store = CountingStore(MemoryStore())
    ga = build_app(store=store)
    async with ga.client() as client:
        secret = await challenged(ga, client)
        ga.clock.advance(30)
        assert (await client.post("/mfa/api/verify", json={"code": ga.code(secret)})).is_success
        marker = read_session(client)["mfa_guard"]
        marker[position] = value
        write_session(client, read_session(client) | {"mfa_guard": marker})
        store.calls.clear()
        # Re-checked from the store as if the session had no marker: challenged again.
        assert (await client.get("/protected")).status_code == 303
        assert dict(store.calls) == {"summary": 1}


@pytest.mark.parametrize(
    ("position", "value", "status", "store_calls"),
    [
        (6, None, 303, 0),
        (6, "yes", 303, 1),
        (7, "magic", 303, 1),
        (1, "x" * 36, 303, 1),
        (3, 0.0, 200, 1),
        (5, False, 200, 0),
    ],
    ids=[
        "not verified: challenged",
        "verified_at as text: no marker, re-checked",
        "unknown method: no marker, re-checked",
        "another subject: no marker, re-checked",
        "checked long ago: re-checked, still verified",
        "not enrolled: let in",
    ],
)
async def test_a_marker_changed_after_it_was_let_in_is_read_and_decided_again(
    position: int, value: object, status: int, store_calls: int
) -> None:
    # The middleware lets in again, with no check, only the very values it let in (``==``,
    # so JSON's 1 and true or 2 and 2.0 count as the same: only the session's signer could
    # write either, and the app is handed the checked marker). Any other value under the same
    # nonce goes the whole way, as a marker seen for the first time.
    store = CountingStore(MemoryStore())
    ga = build_app(store=store)
    async with ga.client() as client:
        secret = await challenged(ga, client)
        ga.clock.advance(30)
        assert (await client.post("/mfa/api/verify", json={"code": ga.code(secret)})).is_success
        for _ in range(2):  # let in twice: remembered
            assert (await client.get("/protected")).status_code == 200
        marker = read_session(client)["mfa_guard"]
        marker[position] = value
        write_session(client, read_session(client) | {"mfa_guard": marker})
        store.calls.clear()
        assert (await client.get("/protected")).status_code == status
        assert store.total == store_calls


async def test_each_session_of_one_user_is_let_in_again_with_no_store_call() -> None:
    store = CountingStore(MemoryStore())
    ga = build_app(store=store, recheck_seconds=60)
    async with ga.client() as laptop, ga.client() as phone:
        secret = await challenged(ga, laptop)
        await sign_in(phone)
        for client in (laptop, phone):
            ga.clock.advance(30)
            assert (await client.post("/mfa/api/verify", json={"code": ga.code(secret)})).is_success
        assert read_session(laptop)["mfa_guard"][2] != read_session(phone)["mfa_guard"][2]
        store.calls.clear()
        for _ in range(3):
            for client in (laptop, phone):
                assert (await client.get("/protected")).status_code == 200
        assert store.total == 0


async def test_a_marker_let_in_twice_is_let_in_again_without_being_read() -> None:
    # The first request writes the session's marker; the next two read and check it (the keyed
    # hash of the user id, the types, the window); from the fourth on, the same marker of the
    # same user is let in as it was, with no hash.
    ga = build_app()
    gate = ga.guard.gate
    hashed: list[str] = []
    subject = gate.subject

    def counted(user_id: str) -> str:
        hashed.append(user_id)
        return subject(user_id)

    gate.subject = counted
    async with ga.client() as client:
        await sign_in(client)
        for _ in range(3):
            assert (await client.get("/protected")).status_code == 200
        assert hashed
        before = len(hashed)
        for _ in range(3):
            assert (await client.get("/protected")).status_code == 200
    assert len(hashed) == before


async def test_admitted_markers_are_forgotten_all_at_once_past_the_limit(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(middleware_module, "ADMITTED_LIMIT", 2)
    ga = build_app()
    reached: list[str] = []

    async def inner(scope: Scope, receive: Receive, send: Send) -> None:
        reached.append(scope["user"].username)

    middleware = MFAGuardMiddleware(inner, guard=ga.guard)
    sessions = {name: DictSession() for name in ("ann", "bob", "cat")}

    async def request(name: str) -> None:
        scope: Scope = {
            "type": "http",
            "method": "GET",
            "path": "/protected",
            "root_path": "",
            "query_string": b"",
            "headers": [],
            "user": SimpleUser(name),
            "session": sessions[name],
        }
        await middleware(scope, receive_nothing, refuse_to_answer)

    def remembered() -> set[str]:
        return {admitted.user_id for admitted in middleware._admitted.values()}

    for name in ("ann", "bob"):
        await request(name)  # a marker written (a re-check): the next requests read it
        await request(name)  # read, checked and let in once: only its nonce is noted
        assert name not in remembered()
        await request(name)  # let in a second time: remembered
    assert len(middleware._admitted) == 2
    for _ in range(3):
        await request("cat")  # the third admitted marker: the first two are forgotten
    assert [admitted.user_id for admitted in middleware._admitted.values()] == ["cat"]
    await request("ann")  # read and checked again; its nonce was forgotten too
    assert remembered() == {"cat"}
    await request("ann")  # let in a second time: remembered
    assert remembered() == {"cat", "ann"}
    assert reached == ["ann"] * 3 + ["bob"] * 3 + ["cat"] * 3 + ["ann"] * 2


async def receive_nothing() -> Message:
    return {"type": "http.request", "body": b""}


async def refuse_to_answer(message: Message) -> None:
    raise AssertionError(f"the middleware answered {message}")


async def test_the_verified_state_has_an_absolute_lifetime() -> None:
    ga = build_app(verified_lifetime_seconds=3600, recheck_seconds=60)
    async with ga.client() as client:
        secret = await challenged(ga, client)
        ga.clock.advance(30)
        await client.post("/mfa/api/verify", json={"code": ga.code(secret)})
        for _ in range(59):
            ga.clock.advance(59)
            assert (await client.get("/protected")).status_code == 200
        ga.clock.advance(3600 - 59 * 59)
        assert (await client.get("/protected")).status_code == 303


async def test_disabling_2fa_elsewhere_reaches_this_session_within_the_recheck_interval() -> None:
    ga = build_app(recheck_seconds=60)
    async with ga.client() as first, ga.client() as second:
        secret = await challenged(ga, first)
        await sign_in(second)
        ga.clock.advance(30)
        await second.post("/mfa/api/verify", json={"code": ga.code(secret)})
        ga.clock.advance(30)
        await first.post("/mfa/api/verify", json={"code": ga.code(secret)})
        ga.clock.advance(30)
        disabled = await second.post("/mfa/api/disable", json={"code": ga.code(secret)})
        assert disabled.status_code == 200
        # Re-enrol with a new key in the second session: the first session's old proof is void.
        await enrol(ga, second)
        assert (await first.get("/protected")).status_code == 200  # within the interval
        ga.clock.advance(29)
        assert (await first.get("/protected")).status_code == 200
        ga.clock.advance(1)
        assert (await first.get("/protected")).status_code == 303


class DownStore(MemoryStore):
    def __init__(self) -> None:
        super().__init__()
        self.down = False

    async def summary(self, user_id: str) -> EnrolmentSummary:
        if self.down:
            raise StoreUnavailable()
        return await super().summary(user_id)


async def test_a_store_outage_fails_closed_and_verified_sessions_keep_working() -> None:
    store = DownStore()
    ga = build_app(store=store, recheck_seconds=60)
    async with ga.client() as verified, ga.client() as fresh:
        secret = await challenged(ga, verified)
        ga.clock.advance(30)
        await verified.post("/mfa/api/verify", json={"code": ga.code(secret)})
        await sign_in(fresh, "other@acme.test")
        store.down = True
        assert (await verified.get("/protected")).status_code == 200
        html = await fresh.get("/protected")
        assert html.status_code == 503
        assert "Traceback" not in html.text
        api = await fresh.get("/api/data")
        assert api.status_code == 503
        assert api.json()["error"]["code"] == "service_unavailable"
        store.down = False
        assert (await fresh.get("/protected")).status_code == 200


async def test_websockets_of_unverified_sessions_are_closed_before_accept(
    guarded: GuardedApp,
) -> None:
    async with guarded.client() as client:
        secret = await challenged(guarded, client)
        refused = await websocket_messages(guarded, client)
        assert refused == [{"type": "websocket.close", "code": 1008, "reason": ""}]
        guarded.clock.advance(30)
        await client.post("/mfa/api/verify", json={"code": guarded.code(secret)})
        accepted = await websocket_messages(guarded, client)
    assert accepted[0]["type"] == "websocket.accept"
    assert {"type": "websocket.send", "text": "hello"} in accepted


class DictSession(collections.UserDict[str, Any]):
    """A session that is a MutableMapping without being a dict."""


async def test_a_session_of_any_mutable_mapping_class_is_guarded() -> None:
    ga = build_app()
    reached: list[str] = []

    async def inner(scope: Scope, receive: Receive, send: Send) -> None:
        reached.append(scope["path"])

    async def receive() -> Message:
        return {"type": "http.request", "body": b""}

    async def send(message: Message) -> None:
        raise AssertionError(f"the middleware answered {message}")

    middleware = MFAGuardMiddleware(inner, guard=ga.guard)
    for _ in range(2):  # the class is checked once, then known
        scope: Scope = {
            "type": "http",
            "method": "GET",
            "path": "/protected",
            "root_path": "",
            "query_string": b"",
            "headers": [],
            "user": SimpleUser("plain@acme.test"),
            "session": DictSession(),
        }
        await middleware(scope, receive, send)
        assert "mfa_guard" in scope["session"]
    assert reached == ["/protected", "/protected"]


async def test_a_session_that_is_no_mapping_is_refused_closed(
    caplog: pytest.LogCaptureFixture,
) -> None:
    ga = build_app()

    async def inner(scope: Scope, receive: Receive, send: Send) -> None:
        raise AssertionError("reached the app")

    async def receive() -> Message:
        return {"type": "http.request", "body": b""}

    sent: list[Message] = []

    async def send(message: Message) -> None:
        sent.append(message)

    scope: Scope = {
        "type": "http",
        "method": "GET",
        "path": "/protected",
        "root_path": "",
        "query_string": b"",
        "headers": [],
        "user": SimpleUser("plain@acme.test"),
        "session": ["not", "a", "mapping"],
    }
    await MFAGuardMiddleware(inner, guard=ga.guard)(scope, receive, send)
    assert sent[0]["status"] == 500
    assert sent[1]["body"] == b"Internal Server Error"
    assert "found no session" in caplog.text


async def test_lifespan_and_other_scopes_pass_through() -> None:
    ga = build_app()
    seen: list[str] = []

    async def inner(scope: Scope, receive: Receive, send: Send) -> None:
        seen.append(scope["type"])

    middleware = MFAGuardMiddleware(inner, guard=ga.guard)

    async def receive() -> Message:
        return {"type": "lifespan.startup"}

    async def send(message: Message) -> None:
        raise AssertionError("the middleware must not answer a lifespan scope")

    await middleware({"type": "lifespan", "asgi": {"version": "3.0"}}, receive, send)
    assert seen == ["lifespan"]


async def test_a_verify_makes_two_store_calls() -> None:
    store = CountingStore(MemoryStore())
    ga = build_app(store=store)
    async with ga.client() as client:
        secret = await challenged(ga, client)
        await client.get("/protected")  # the marker is fresh: the verify alone is counted
        store.calls.clear()
        ga.clock.advance(30)
        assert (await client.post("/mfa/api/verify", json={"code": ga.code(secret)})).is_success
    # One read of the enrolment, one compare-and-set of the time step: nothing else.
    assert dict(store.calls) == {"get": 1, "accept_step": 1}


@pytest.mark.parametrize(
    ("path", "exempt"),
    [
        ("/login", True),
        ("/login/sso", True),
        ("/static/app.css", True),
        ("/mfa", True),
        ("/mfa/anything", True),
        ("/loginx", False),
        ("/mfax", False),
        ("/protected", False),
    ],
)
async def test_exempt_prefixes_end_at_a_path_segment(
    guarded: GuardedApp, path: str, exempt: bool
) -> None:
    reached: list[str] = []

    async def inner(scope: Scope, receive: Receive, send: Send) -> None:
        reached.append(scope["path"])

    middleware = MFAGuardMiddleware(inner, guard=guarded.guard)
    async with guarded.client() as client:
        await challenged(guarded, client)
        session = read_session(client)
    challenged_user = type(
        "User",
        (),
        {"is_authenticated": True, "identity": "solo@example.test", "display_name": "Solo"},
    )
    scope: Scope = {
        "type": "http",
        "method": "GET",
        "path": path,
        "root_path": "",
        "query_string": b"",
        "headers": [],
        "user": challenged_user(),
        "session": session,
    }
    sent: list[Message] = []

    async def receive() -> Message:
        return {"type": "http.request", "body": b""}

    async def send(message: Message) -> None:
        sent.append(message)

    await middleware(scope, receive, send)
    assert (reached == [path]) is exempt
    assert (sent and sent[0]["status"] == 303) is not exempt


class AccountUser(SimpleUser):
    @property
    def identity(self) -> str:
        return "account-42"


@dataclass
class RecordUser:
    identity: str
    display_name: str = "someone@acme.test"
    is_authenticated: bool = True


class SignInUser(SimpleUser):
    """A SimpleUser of the app's own, named by its username as SimpleUser is."""


@dataclass
class AnonymousVisitor:
    display_name: str = ""
    is_authenticated: bool = False


@pytest.mark.parametrize(
    ("user", "expected"),
    [
        (SimpleUser("solo@example.test"), "solo@example.test"),
        (SignInUser("solo@example.test"), "solo@example.test"),
        (AccountUser("solo@example.test"), "account-42"),
        (RecordUser("record-7"), "record-7"),
        (UnauthenticatedUser(), None),
        (AnonymousVisitor(), None),
        (None, None),
    ],
)
def test_the_default_identity_of_each_kind_of_user(user: object, expected: str | None) -> None:
    assert user_identity({"type": "http", "user": user}) == expected
