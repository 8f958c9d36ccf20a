"""Passkeys and security keys through the JSON API, with a software authenticator: registration
and sign-in, and everything a relying party must refuse (another origin or RP ID, a challenge
used twice, expired or another session's, another user's credential, a removed key's, a counter
going backwards), the first key turning 2FA on with the recovery codes, and a key added or
removed like an app."""

from __future__ import annotations

import asyncio
from typing import Any

import cbor2
import httpx
import pytest
from cryptography.fernet import Fernet
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route

from mfa_guard import ConfigurationError, EventKind
from mfa_guard.fastapi import RequireRecentMFA
from mfa_guard.stepup import require_recent_mfa
from mfa_guard.stores.memory import MemoryStore
from mfa_guard.testing import CountingStore
from mfa_guard.testing.webauthn import SoftAuthenticator, b64url, from_b64url
from tests.apps import GuardedApp, build_app, enrol, sign_in

API = "/mfa/api"
ORIGIN = "https://app.example.test"
PASSKEYS = {"rp_id": "app.example.test", "origins": [ORIGIN]}


def passkey_app(**overrides: Any) -> GuardedApp:
    return build_app(webauthn=PASSKEYS, **overrides)


def client_of(ga: GuardedApp) -> httpx.AsyncClient:
    return ga.client(base_url=ORIGIN)


def code_of(response: httpx.Response) -> str:
    return str(response.json()["error"]["code"])


async def register(
    client: httpx.AsyncClient,
    key: SoftAuthenticator,
    *,
    name: str | None = None,
    origin: str = ORIGIN,
    **knobs: Any,
) -> httpx.Response:
    options = await client.post(f"{API}/webauthn/register/options", json={})
    assert options.status_code == 200, options.text
    answer = key.create(options.json()["publicKey"], origin=origin, **knobs)
    body: dict[str, Any] = {"credential": answer}
    if name is not None:
        body["name"] = name
    return await client.post(f"{API}/webauthn/register", json=body)


async def sign_in_options(client: httpx.AsyncClient) -> dict[str, Any]:
    options = await client.post(f"{API}/webauthn/authenticate/options", json={})
    assert options.status_code == 200, options.text
    found: dict[str, Any] = options.json()["publicKey"]
    return found


async def assert_with(
    client: httpx.AsyncClient, key: SoftAuthenticator, *, origin: str = ORIGIN, **knobs: Any
) -> httpx.Response:
    answer = key.get(await sign_in_options(client), origin=origin, **knobs)
    return await client.post(f"{API}/webauthn/authenticate", json={"credential": answer})


async def test_a_passkey_turns_2fa_on_and_signs_in() -> None:
    ga = passkey_app()
    key = SoftAuthenticator()
    async with client_of(ga) as client:
        await sign_in(client)
        added = await register(client, key, name="Laptop")
        assert added.status_code == 200, added.text
        body = added.json()
        assert len(body["recovery_codes"]) == 10
        assert body["authenticator"]["kind"] == "webauthn"
        assert body["authenticator"]["name"] == "Laptop"
        assert body["authenticator"]["transports"] == ["internal", "hybrid"]
        status = (await client.get(f"{API}/status")).json()
        assert (status["enrolled"], status["verified"], status["verified_method"]) == (
            True,
            True,
            "webauthn",
        )
        assert status["methods"] == ["webauthn", "recovery"]
        assert EventKind.ENROLLED in ga.events.kinds()

        await client.post("/logout")
        await sign_in(client)
        assert (await client.get("/protected")).status_code == 303
        verified = await assert_with(client, key)
        assert verified.status_code == 200, verified.text
        assert verified.json()["method"] == "webauthn"
        assert (await client.get("/protected")).status_code == 200
        enrolment = await ga.store.get("solo@example.test")
        assert enrolment is not None
        [stored] = enrolment.keys
        assert stored.sign_count == 1  # 0 at registration, 1 at this sign-in
        assert stored.last_used_at == ga.clock()


async def test_the_registration_options_exclude_the_users_keys_and_name_no_user_id() -> None:
    ga = passkey_app()
    key = SoftAuthenticator()
    async with client_of(ga) as client:
        await sign_in(client)
        assert (await register(client, key)).status_code == 200
        options = (await client.post(f"{API}/webauthn/register/options", json={})).json()
        public_key = options["publicKey"]
        assert public_key["rp"]["id"] == "app.example.test"
        assert len(public_key["excludeCredentials"]) == 1
        assert "solo" not in public_key["user"]["id"]
        assert public_key["attestation"] == "none"
        assert public_key["authenticatorSelection"]["userVerification"] == "preferred"


@pytest.mark.parametrize(
    ("origin", "knobs"),
    [
        ("https://evil.example.test", {}),
        ("http://app.example.test", {}),
        (ORIGIN, {"rp_id": "example.test"}),
        (ORIGIN, {"user_present": False}),
    ],
    ids=["another-origin", "plain-http", "another-rp-id", "no-user-presence"],
)
async def test_a_registration_from_elsewhere_is_refused_and_adds_nothing(
    origin: str, knobs: dict[str, Any]
) -> None:
    ga = passkey_app()
    async with client_of(ga) as client:
        await sign_in(client)
        refused = await register(client, SoftAuthenticator(), origin=origin, **knobs)
        assert (refused.status_code, code_of(refused)) == (422, "webauthn_rejected")
        assert (await client.get(f"{API}/status")).json()["enrolled"] is False


@pytest.mark.parametrize(
    ("origin", "knobs"),
    [
        ("https://evil.example.test", {}),
        (ORIGIN, {"rp_id": "example.test"}),
        (ORIGIN, {"user_present": False}),
    ],
    ids=["another-origin", "another-rp-id", "no-user-presence"],
)
async def test_a_sign_in_from_elsewhere_is_refused(origin: str, knobs: dict[str, Any]) -> None:
    ga = passkey_app()
    key = SoftAuthenticator()
    async with client_of(ga) as client:
        await sign_in(client)
        assert (await register(client, key)).status_code == 200
        await client.post("/logout")
        await sign_in(client)
        refused = await assert_with(client, key, origin=origin, **knobs)
        assert (refused.status_code, code_of(refused)) == (422, "webauthn_rejected")
        assert (await client.get("/protected")).status_code == 303
        assert EventKind.VERIFICATION_FAILED in ga.events.kinds()


async def test_user_verification_required_refuses_a_key_without_it() -> None:
    ga = build_app(webauthn={**PASSKEYS, "user_verification": "required"})
    async with client_of(ga) as client:
        await sign_in(client)
        refused = await register(client, SoftAuthenticator(verifies_users=False))
        assert (refused.status_code, code_of(refused)) == (422, "webauthn_rejected")
        assert (await register(client, SoftAuthenticator())).status_code == 200


async def test_an_answer_is_taken_once() -> None:
    ga = passkey_app()
    key = SoftAuthenticator()
    async with client_of(ga) as client:
        await sign_in(client)
        assert (await register(client, key)).status_code == 200
        await client.post("/logout")
        await sign_in(client)
        answer = key.get(await sign_in_options(client), origin=ORIGIN)
        first = await client.post(f"{API}/webauthn/authenticate", json={"credential": answer})
        assert first.status_code == 200
        await client.post("/logout")
        await sign_in(client)
        replayed = await client.post(f"{API}/webauthn/authenticate", json={"credential": answer})
        assert (replayed.status_code, code_of(replayed)) == (422, "webauthn_challenge_expired")


async def test_a_challenge_expires_and_belongs_to_the_session_that_asked() -> None:
    ga = passkey_app()
    key = SoftAuthenticator()
    async with client_of(ga) as client, client_of(ga) as other:
        await sign_in(client)
        assert (await register(client, key)).status_code == 200
        await client.post("/logout")
        await sign_in(client)
        await sign_in(other)
        # Another session's challenge is no challenge here.
        answer = key.get(await sign_in_options(other), origin=ORIGIN)
        stolen = await client.post(f"{API}/webauthn/authenticate", json={"credential": answer})
        assert code_of(stolen) == "webauthn_challenge_expired"
        # A challenge outlives neither its lifetime...
        answer = key.get(await sign_in_options(client), origin=ORIGIN)
        ga.clock.advance(301)
        late = await client.post(f"{API}/webauthn/authenticate", json={"credential": answer})
        assert code_of(late) == "webauthn_challenge_expired"
        # ... nor a newer challenge of the same session.
        older = key.get(await sign_in_options(client), origin=ORIGIN)
        newer = key.get(await sign_in_options(client), origin=ORIGIN)
        replaced = await client.post(f"{API}/webauthn/authenticate", json={"credential": older})
        assert code_of(replaced) == "webauthn_challenge_expired"
        taken = await client.post(f"{API}/webauthn/authenticate", json={"credential": newer})
        assert taken.status_code == 200, taken.text


async def test_another_users_key_or_a_removed_one_does_not_sign_in() -> None:
    ga = passkey_app()
    alices, bobs = SoftAuthenticator(), SoftAuthenticator()
    async with client_of(ga) as alice, client_of(ga) as bob:
        await sign_in(alice, "alice@example.test")
        assert (await register(alice, alices)).status_code == 200
        await sign_in(bob, "bob@example.test")
        assert (await register(bob, bobs)).status_code == 200
        await bob.post("/logout")
        await sign_in(bob, "bob@example.test")
        # Bob's session asks; Alice's key answers, for Bob's options.
        options = await sign_in_options(bob)
        options["allowCredentials"] = []
        with_alices = alices.get(options, origin=ORIGIN)
        refused = await bob.post(f"{API}/webauthn/authenticate", json={"credential": with_alices})
        assert (refused.status_code, code_of(refused)) == (422, "webauthn_rejected")

        # Alice adds a second key, removes the first: it signs in no more.
        spare = SoftAuthenticator(transports=("usb",), attachment="cross-platform")
        added = await register(alice, spare)
        assert added.status_code == 200, added.text
        assert added.json()["recovery_codes"] == []
        assert added.json()["authenticator"]["name"] == "Security key"
        first = (await alice.get(f"{API}/authenticators")).json()["authenticators"][0]
        removed = await alice.delete(f"{API}/authenticators/{first['id']}")
        assert removed.json() == {"enrolled": True}
        await alice.post("/logout")
        await sign_in(alice, "alice@example.test")
        options = await sign_in_options(alice)
        assert len(options["allowCredentials"]) == 1
        options["allowCredentials"] = []
        gone = await alice.post(
            f"{API}/webauthn/authenticate", json={"credential": alices.get(options, origin=ORIGIN)}
        )
        assert (gone.status_code, code_of(gone)) == (422, "webauthn_rejected")
        assert (await assert_with(alice, spare)).status_code == 200


async def test_a_counter_that_goes_backwards_is_refused_and_one_that_never_counts_is_not() -> None:
    ga = passkey_app()
    cloned, synced = SoftAuthenticator(), SoftAuthenticator(counting=False)
    async with client_of(ga) as client:
        await sign_in(client)
        assert (await register(client, cloned)).status_code == 200
        assert (await register(client, synced)).status_code == 200
        for _ in range(2):
            await client.post("/logout")
            await sign_in(client)
            assert (await assert_with(client, synced)).status_code == 200
        await client.post("/logout")
        await sign_in(client)
        assert (await assert_with(client, cloned)).status_code == 200
        # The copy of the key signs with the counter it had before.
        for credential in cloned.credentials.values():
            credential.sign_count -= 1
        await client.post("/logout")
        await sign_in(client)
        refused = await assert_with(client, cloned)
        assert (refused.status_code, code_of(refused)) == (422, "webauthn_counter_regressed")


async def test_a_key_registers_once() -> None:
    ga = passkey_app()
    key = SoftAuthenticator()
    async with client_of(ga) as client:
        await sign_in(client)
        options = (await client.post(f"{API}/webauthn/register/options", json={})).json()
        answer = key.create(options["publicKey"], origin=ORIGIN)
        first = await client.post(f"{API}/webauthn/register", json={"credential": answer})
        assert first.status_code == 200
        # The same answer again: its challenge is used up.
        again = await client.post(f"{API}/webauthn/register", json={"credential": answer})
        assert code_of(again) == "webauthn_challenge_expired"
        assert len((await client.get(f"{API}/authenticators")).json()["authenticators"]) == 1


async def test_an_enrolled_user_adds_a_key_after_a_recent_factor_only() -> None:
    ga = passkey_app(recent_mfa_seconds=300)
    async with client_of(ga) as client:
        await sign_in(client)
        await enrol(ga, client)
        ga.clock.advance(301)
        stale = await client.post(f"{API}/webauthn/register/options", json={})
        assert (stale.status_code, code_of(stale)) == (401, "mfa_reauthentication_required")


async def test_no_passkey_means_no_sign_in_options_and_passkeys_off_means_no_routes() -> None:
    ga = passkey_app()
    async with client_of(ga) as client:
        await sign_in(client)
        await enrol(ga, client)
        refused = await client.post(f"{API}/webauthn/authenticate/options", json={})
        assert (refused.status_code, code_of(refused)) == (409, "no_passkey")
    off = build_app()
    async with off.client() as client:
        await sign_in(client)
        gone = await client.post(f"{API}/webauthn/register/options", json={})
        assert gone.status_code == 404


@pytest.mark.parametrize(
    "credential",
    [
        None,
        "text",
        [],
        {},
        {"id": "x", "rawId": "x", "type": "public-key", "response": {}},
        {"id": "!!", "rawId": "!!", "type": "public-key", "response": {"clientDataJSON": "!!"}},
        {"response": {"clientDataJSON": "e30", "attestationObject": "oA"}},
    ],
    ids=["null", "string", "list", "empty", "no-client-data", "not-base64", "empty-cbor"],
)
async def test_a_malformed_answer_is_a_clear_4xx(credential: object) -> None:
    ga = passkey_app()
    async with client_of(ga) as client:
        await sign_in(client)
        for path in ("/webauthn/register", "/webauthn/authenticate"):
            response = await client.post(API + path, json={"credential": credential})
            assert 400 <= response.status_code < 500, (path, response.text)
            assert code_of(response) in ("invalid_input", "webauthn_rejected", "not_enrolled")


async def test_a_step_up_accepts_a_passkey_and_can_demand_one() -> None:
    ga = passkey_app()
    guard = ga.guard

    async def payout(request: Request) -> Response:
        return PlainTextResponse("changed")

    async def export(request: Request) -> Response:
        return PlainTextResponse("exported")

    ga.app.router.routes.insert(
        0, Route("/payout", require_recent_mfa(guard, methods=("webauthn",))(payout))
    )
    ga.app.router.routes.insert(0, Route("/export", require_recent_mfa(guard)(export)))
    key = SoftAuthenticator()
    async with client_of(ga) as client:
        await sign_in(client)
        secret, _ = await enrol(ga, client)
        assert (await register(client, key)).status_code == 200
        await client.post("/logout")
        await sign_in(client)
        ga.clock.advance(30)
        assert (
            await client.post(f"{API}/verify", json={"code": ga.code(secret)})
        ).status_code == 200
        assert (await client.get("/export")).status_code == 200
        demanded = await client.get("/payout", headers={"accept": "application/json"})
        assert demanded.status_code == 401
        assert demanded.json()["error"]["message"].startswith("Confirm with your passkey")
        assert (await assert_with(client, key)).status_code == 200
        assert (await client.get("/payout")).text == "changed"
        assert (await client.get("/export")).text == "exported"


@pytest.mark.parametrize("methods", [(), ("webauthn", "fax"), ("device",), "webauthn"])
def test_a_step_up_demanding_no_known_method_is_a_wiring_error(methods: Any) -> None:
    ga = passkey_app()
    with pytest.raises(ConfigurationError, match="methods"):
        require_recent_mfa(ga.guard, methods=methods)
    with pytest.raises(ConfigurationError, match="methods"):
        RequireRecentMFA(ga.guard, methods=methods)


async def test_a_passkey_signs_in_after_the_oldest_encryption_key_is_retired() -> None:
    old, new = Fernet.generate_key().decode(), Fernet.generate_key().decode()
    before = passkey_app(encryption_keys=[old])
    key = SoftAuthenticator()
    async with client_of(before) as client:
        await sign_in(client)
        assert (await register(client, key)).status_code == 200
    after = passkey_app(store=before.store, encryption_keys=[new])
    async with client_of(after) as client:
        await sign_in(client)
        verified = await assert_with(client, key)
        assert verified.status_code == 200, verified.text


@pytest.mark.parametrize("path", ["/verify", "/disable"])
async def test_a_code_is_never_taken_as_a_passkey(path: str) -> None:
    ga = passkey_app()
    async with client_of(ga) as client:
        await sign_in(client)
        _, codes = await enrol(ga, client)
        await client.post("/logout")
        await sign_in(client)
        refused = await client.post(API + path, json={"method": "webauthn", "code": codes[0]})
        assert (refused.status_code, code_of(refused)) == (400, "invalid_method")
        status = (await client.get(f"{API}/status")).json()
        assert (status["verified"], status["recovery_codes_left"]) == (False, 10)


def with_credential_id(answer: dict[str, Any], credential_id: bytes) -> dict[str, Any]:
    """A registration answer (attestation "none": nothing signs it) naming another credential
    id: what a forged client can send."""
    response = answer["response"]
    attestation = cbor2.loads(from_b64url(response["attestationObject"]))
    data = attestation["authData"]
    length = int.from_bytes(data[53:55], "big")
    data = data[:53] + len(credential_id).to_bytes(2, "big") + credential_id + data[55 + length :]
    attestation["authData"] = data
    encoded = b64url(credential_id)
    return {
        **answer,
        "id": encoded,
        "rawId": encoded,
        "response": {
            **response,
            "attestationObject": b64url(cbor2.dumps(attestation)),
            "authenticatorData": b64url(data),
        },
    }


@pytest.mark.parametrize("enrolled", [False, True], ids=["first-factor", "another-factor"])
async def test_a_key_registered_to_another_account_is_said_so(enrolled: bool) -> None:
    ga = passkey_app()
    alices = SoftAuthenticator()
    async with client_of(ga) as alice, client_of(ga) as bob:
        await sign_in(alice, "alice@example.test")
        assert (await register(alice, alices)).status_code == 200
        [credential_id] = alices.credentials
        await sign_in(bob, "bob@example.test")
        if enrolled:
            await enrol(ga, bob)
        options = (await bob.post(f"{API}/webauthn/register/options", json={})).json()
        forged = with_credential_id(
            SoftAuthenticator().create(options["publicKey"], origin=ORIGIN), credential_id
        )
        refused = await bob.post(f"{API}/webauthn/register", json={"credential": forged})
        assert (refused.status_code, code_of(refused)) == (409, "authenticator_already_registered")
        status = (await bob.get(f"{API}/status")).json()
        assert status["enrolled"] is enrolled
        assert all(a["kind"] == "totp" for a in status["authenticators"])


async def test_a_passkey_verify_makes_three_store_calls() -> None:
    store = CountingStore(MemoryStore())
    ga = build_app(store, webauthn=PASSKEYS)
    key = SoftAuthenticator()
    async with client_of(ga) as client:
        await sign_in(client)
        assert (await register(client, key)).status_code == 200
        await client.post("/logout")
        await sign_in(client)
        await client.get("/protected")  # the marker is fresh: the verify alone is counted
        options = await sign_in_options(client)
        answer = key.get(options, origin=ORIGIN)
        store.calls.clear()
        verified = await client.post(f"{API}/webauthn/authenticate", json={"credential": answer})
        assert verified.status_code == 200
    # The enrolment read and the challenge used up together (with the failure budget's slot),
    # then the counter's compare-and-set: nothing else.
    assert dict(store.calls) == {
        "get": 1,
        "consume_webauthn_challenge": 1,
        "accept_assertion": 1,
    }


async def test_two_sign_ins_with_the_same_counter_at_once_let_one_in() -> None:
    ga = passkey_app()
    key = SoftAuthenticator()
    async with client_of(ga) as one, client_of(ga) as two:
        await sign_in(one)
        assert (await register(one, key)).status_code == 200
        await one.post("/logout")
        await sign_in(one)
        await sign_in(two)
        # A key and its copy sign with the same counter, each for its own session's challenge.
        answers = [
            key.get(await sign_in_options(c), origin=ORIGIN, sign_count=5) for c in (one, two)
        ]
        results = await asyncio.gather(
            *(
                c.post(f"{API}/webauthn/authenticate", json={"credential": a})
                for c, a in zip((one, two), answers, strict=True)
            )
        )
        assert sorted(r.status_code for r in results) == [200, 422]
        refused = next(r for r in results if r.status_code == 422)
        assert code_of(refused) == "webauthn_counter_regressed"
