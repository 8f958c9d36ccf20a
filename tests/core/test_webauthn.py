"""Passkeys and security keys (WebAuthn): the settings, the two ceremonies played end to end by a
software authenticator through the JSON forms a browser sends, and every answer a relying party
must refuse, malformed ones fuzzed: always ``WebAuthnRejected`` (or ``None``), never another
exception."""

from __future__ import annotations

import base64
import hashlib
import json
import re
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import cbor2
import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from mfa_guard import MFAGuardSettings
from mfa_guard.core import webauthn
from mfa_guard.core.webauthn import (
    Assertion,
    NewKey,
    RelyingParty,
    WebAuthnRejected,
    authentication_options,
    challenge_of,
    credential_id_of,
    registration_options,
    verify_authentication,
    verify_registration,
)
from mfa_guard.stores.base import Authenticator, FactorKind
from mfa_guard.testing.webauthn import CeremonyRefused, SoftAuthenticator, b64url, from_b64url
from tests.apps import ENCRYPTION_KEY, settings_for

ORIGIN = "https://example.com"
RP = RelyingParty(id="example.com", name="Acme Inbox", origins=(ORIGIN, "https://app.example.com"))
HANDLE_KEY = b"handle key of the app"
ANN = webauthn.user_handle(HANDLE_KEY, "ann")
EXAMPLES = 300


def stored(key: NewKey, *, key_id: str = "key-1") -> Authenticator:
    """The authenticator the store keeps of a registered key."""
    return Authenticator(
        id=key_id,
        kind=FactorKind.WEBAUTHN,
        name="YubiKey",
        created_at=0.0,
        credential_id=key.credential_id,
        public_key=key.public_key,
        sign_count=key.sign_count,
        transports=key.transports,
        aaguid=key.aaguid,
        backed_up=key.backed_up,
    )


def register(
    authenticator: SoftAuthenticator,
    rp: RelyingParty = RP,
    *,
    exclude: tuple[Authenticator, ...] = (),
    **knobs: Any,
) -> tuple[dict[str, Any], bytes]:
    """A registration answer of ``authenticator`` and the challenge it answers."""
    challenge = webauthn.new_challenge()
    options = registration_options(
        rp,
        user_handle=ANN,
        user_name="ann@example.com",
        display_name="Ann",
        exclude=exclude,
        challenge=challenge,
    )
    return authenticator.create(options, origin=knobs.pop("origin", ORIGIN), **knobs), challenge


def enrolled(
    authenticator: SoftAuthenticator | None = None, rp: RelyingParty = RP
) -> tuple[SoftAuthenticator, Authenticator]:
    authenticator = authenticator or SoftAuthenticator()
    answer, challenge = register(authenticator, rp)
    return authenticator, stored(verify_registration(rp, answer, challenge=challenge))


def sign_in(
    authenticator: SoftAuthenticator, key: Authenticator, rp: RelyingParty = RP, **knobs: Any
) -> tuple[dict[str, Any], bytes]:
    """A sign-in answer of ``authenticator`` for ``key`` and the challenge it answers."""
    challenge = webauthn.new_challenge()
    options = authentication_options(rp, allow=[key], challenge=challenge)
    return authenticator.get(options, origin=knobs.pop("origin", ORIGIN), **knobs), challenge


def edited(answer: dict[str, Any], path: tuple[str, ...], value: object) -> dict[str, Any]:
    """A copy of ``answer`` with the member at ``path`` set to ``value``."""
    copy: dict[str, Any] = json.loads(json.dumps(answer))
    target = copy
    for name in path[:-1]:
        target = target[name]
    target[path[-1]] = value
    return copy


# -- settings ------------------------------------------------------------------------------


def test_passkeys_are_off_until_an_rp_id_is_set() -> None:
    settings = settings_for()
    assert settings.webauthn.rp_id is None
    assert RelyingParty.from_settings(settings) is None


def test_the_relying_party_comes_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MFA_GUARD_ENCRYPTION_KEYS", ENCRYPTION_KEY)
    monkeypatch.setenv("MFA_GUARD_ISSUER", "Acme Inbox")
    monkeypatch.setenv("MFA_GUARD_WEBAUTHN__RP_ID", "example.com")
    monkeypatch.setenv(
        "MFA_GUARD_WEBAUTHN__ORIGINS", "https://example.com, https://APP.example.com:8443"
    )
    monkeypatch.setenv("MFA_GUARD_WEBAUTHN__USER_VERIFICATION", "required")
    monkeypatch.setenv("MFA_GUARD_WEBAUTHN__CHALLENGE_SECONDS", "120")
    rp = RelyingParty.from_settings(MFAGuardSettings(_env_file=None))
    assert rp == RelyingParty(
        id="example.com",
        name="Acme Inbox",  # the issuer, when rp_name is unset
        origins=("https://example.com", "https://app.example.com:8443"),
        user_verification="required",
        resident_key="preferred",
        attestation="none",
        timeout_ms=120_000,
    )
    assert rp.challenge_seconds == 120


def test_the_rp_name_and_the_policy_can_be_set() -> None:
    settings = settings_for(
        webauthn={
            "rp_id": "localhost",
            "rp_name": "Acme (dev)",
            "origins": ["http://localhost:8000", "http://localhost:8000", "https://localhost"],
            "resident_key": "discouraged",
            "attestation": "direct",
        }
    )
    rp = RelyingParty.from_settings(settings)
    assert rp is not None
    assert (rp.name, rp.resident_key, rp.attestation) == ("Acme (dev)", "discouraged", "direct")
    assert rp.origins == ("http://localhost:8000", "https://localhost")  # each once


@pytest.mark.parametrize(
    ("rp_id", "message"),
    [
        ("https://example.com", "is a URL: give its host name alone"),
        ("example.com:8443", "without port, path or user"),
        ("example.com/login", "without port, path or user"),
        ("Example.com", "must be lowercase: 'example.com'"),
        ("192.0.2.10", "is an IP address, which WebAuthn refuses"),
        ("[2001:db8::1]", "is an IP address"),
        ("2001:db8::1", "is an IP address"),
        ("com", "is a single label"),
        ("intranet", "is a single label"),
        ("example.com.", "no trailing dot"),
        ("exa_mple.com", "is not a host name"),
        ("-example.com", "is not a host name"),
        ("a" * 64 + ".com", "is not a host name"),
        ("10.0.0.300", "ends with a numeric label"),
        ("bücher.example", "must be ASCII: write it as 'xn--bcher-kva.example'"),
    ],
)
def test_a_bad_rp_id_is_refused_with_how_to_fix_it(rp_id: str, message: str) -> None:
    with pytest.raises(ValidationError, match=f"webauthn.rp_id .*{re.escape(message)}"):
        settings_for(webauthn={"rp_id": rp_id, "origins": [f"https://{rp_id}"]})


@pytest.mark.parametrize(
    ("rp_id", "origin", "message"),
    [
        ("example.com", "http://example.com", "no secure context"),
        ("example.com", "http://localhost:8000", "no secure context"),
        ("localhost", "http://127.0.0.1:8000", "no secure context"),
        ("example.com", "https://evil.example", "is not on the RP ID 'example.com'"),
        ("example.com", "https://notexample.com", "is not on the RP ID"),
        ("app.example.com", "https://example.com", "is not on the RP ID"),
        ("example.com", "https://example.com/", "without path, query or '/' at the end"),
        ("example.com", "https://example.com/mfa", "'https://example.com'"),
        ("example.com", "https://example.com?next=/", "without path, query"),
        ("example.com", "https://example.com:443", "drop ':443'"),
        ("example.com", "https://example.com:99999", "not a number from 1 to 65535"),
        ("example.com", "https://example.com:", "as browsers write an origin"),
        ("example.com", "https://ann@example.com", "user name or password"),
        ("example.com", "example.com", "must look like https://example.com"),
        ("example.com", "wss://example.com", "must look like https://"),
        ("example.com", "https://bücher.example.com", "write it as 'xn--bcher-kva"),
    ],
)
def test_a_bad_origin_is_refused_with_how_to_fix_it(rp_id: str, origin: str, message: str) -> None:
    with pytest.raises(ValidationError, match=f"webauthn.origins: .*{re.escape(message)}"):
        settings_for(
            webauthn={"rp_id": rp_id, "origins": [ORIGIN.replace("example.com", rp_id), origin]}
        )


def test_origins_and_rp_id_go_together() -> None:
    with pytest.raises(
        ValidationError, match=r"set MFA_GUARD_WEBAUTHN__ORIGINS .* https://example\.com"
    ):
        settings_for(webauthn={"rp_id": "example.com"})
    with pytest.raises(ValidationError, match="set MFA_GUARD_WEBAUTHN__RP_ID"):
        settings_for(webauthn={"origins": [ORIGIN]})


@pytest.mark.parametrize(
    ("seconds", "accepted"), [(29, False), (30, True), (600, True), (601, False)]
)
def test_the_challenge_lifetime_is_30_to_600_seconds(seconds: int, accepted: bool) -> None:
    values = {"rp_id": "example.com", "origins": [ORIGIN], "challenge_seconds": seconds}
    if accepted:
        assert settings_for(webauthn=values).webauthn.challenge_seconds == seconds
    else:
        with pytest.raises(ValidationError, match="challenge_seconds"):
            settings_for(webauthn=values)


# -- user handles, challenges, options ------------------------------------------------------


def test_a_user_handle_is_32_bytes_stable_and_says_nothing_of_the_user() -> None:
    assert len(ANN) == 32
    assert webauthn.user_handle(HANDLE_KEY, "ann") == ANN
    assert webauthn.user_handle(HANDLE_KEY, "bob") != ANN
    assert webauthn.user_handle(b"another app's key", "ann") != ANN
    assert b"ann" not in ANN
    with pytest.raises(ValueError, match="non-empty key"):
        webauthn.user_handle(b"", "ann")


def test_challenges_are_fresh_and_stored_as_their_hash() -> None:
    challenges = {webauthn.new_challenge() for _ in range(50)}
    assert len(challenges) == 50
    assert {len(c) for c in challenges} == {32}
    challenge = challenges.pop()
    assert webauthn.hash_challenge(challenge) == hashlib.sha256(challenge).hexdigest()


def test_the_registration_options_exclude_the_users_keys_with_their_transports() -> None:
    usb = Authenticator(
        id="k1",
        kind=FactorKind.WEBAUTHN,
        name="key",
        created_at=0.0,
        credential_id=b"\x01" * 16,
        public_key=b"cose",
        transports=("usb", "nfc", "carrier-pigeon"),
    )
    app = Authenticator(id="a1", kind=FactorKind.TOTP, name="app", created_at=0.0, secret="x")
    challenge = webauthn.new_challenge()
    options = registration_options(
        RP,
        user_handle=ANN,
        user_name="ann@example.com",
        display_name="Ann",
        exclude=[usb, app],
        challenge=challenge,
    )
    assert json.loads(json.dumps(options)) == options  # JSON's own types only
    assert options["rp"] == {"id": "example.com", "name": "Acme Inbox"}
    assert options["user"] == {"id": b64url(ANN), "name": "ann@example.com", "displayName": "Ann"}
    assert options["challenge"] == b64url(challenge)
    assert [p["alg"] for p in options["pubKeyCredParams"]] == [-7, -8, -257]
    assert options["excludeCredentials"] == [
        {"id": b64url(b"\x01" * 16), "type": "public-key", "transports": ["usb", "nfc"]}
    ]
    assert options["authenticatorSelection"]["residentKey"] == "preferred"
    assert options["authenticatorSelection"]["userVerification"] == "preferred"
    assert (options["attestation"], options["timeout"]) == ("none", 300_000)


def test_the_sign_in_options_allow_the_users_keys() -> None:
    rp = replace(RP, user_verification="required")
    _, key = enrolled(rp=rp)
    challenge = webauthn.new_challenge()
    options = authentication_options(rp, allow=[key], challenge=challenge)
    assert options == {
        "challenge": b64url(challenge),
        "timeout": 300_000,
        "rpId": "example.com",
        "allowCredentials": [
            {
                "id": b64url(key.credential_id or b""),
                "type": "public-key",
                "transports": ["internal", "hybrid"],
            }
        ],
        "userVerification": "required",
    }


def test_a_short_challenge_is_a_programming_error() -> None:
    with pytest.raises(ValueError, match="new_challenge"):
        authentication_options(RP, allow=[], challenge=b"0123456789")


# -- the ceremonies ------------------------------------------------------------------------


def test_a_key_registers_and_signs_in_its_counter_going_up() -> None:
    authenticator = SoftAuthenticator(aaguid=bytes(range(16)), transports=("usb", "nfc"))
    answer, challenge = register(authenticator)
    assert challenge_of(answer) == challenge
    assert credential_id_of(answer) == from_b64url(answer["rawId"])
    new = verify_registration(RP, answer, challenge=challenge)
    assert new.credential_id == from_b64url(answer["rawId"])
    assert (new.sign_count, new.transports, new.user_verified, new.backed_up) == (
        0,
        ("usb", "nfc"),
        True,
        False,
    )
    assert new.aaguid == "00010203-0405-0607-0809-0a0b0c0d0e0f"
    key = stored(new)
    for expected in (1, 2):
        answer, challenge = sign_in(authenticator, key)
        assert challenge_of(answer) == challenge
        assertion = verify_authentication(RP, answer, challenge=challenge, key=key, user_handle=ANN)
        assert assertion == Assertion(
            credential_id=key.credential_id or b"",
            sign_count=expected,
            user_verified=True,
            backed_up=False,
        )
        key = replace(key, sign_count=assertion.sign_count)  # the store's compare-and-set


def test_a_synced_passkey_that_does_not_count_signs_in_at_zero() -> None:
    passkey = SoftAuthenticator(counting=False, backup_eligible=True, backed_up=True)
    passkey, key = enrolled(passkey)
    assert key.backed_up
    for _ in range(2):
        answer, challenge = sign_in(passkey, key)
        assertion = verify_authentication(RP, answer, challenge=challenge, key=key)
        assert (assertion.sign_count, assertion.backed_up) == (0, True)


def test_the_page_may_be_on_any_configured_origin() -> None:
    authenticator, key = enrolled()
    answer, challenge = sign_in(authenticator, key, origin="https://app.example.com")
    assert verify_authentication(RP, answer, challenge=challenge, key=key).sign_count == 1


def test_a_key_already_registered_is_excluded_by_the_authenticator() -> None:
    authenticator, key = enrolled()
    with pytest.raises(CeremonyRefused) as refused:
        register(authenticator, exclude=(key,))
    assert refused.value.name == "InvalidStateError"
    register(SoftAuthenticator(), exclude=(key,))  # another authenticator registers


def test_a_discoverable_passkey_names_its_user() -> None:
    authenticator, key = enrolled()
    answer, challenge = sign_in(authenticator, key)
    assert from_b64url(answer["response"]["userHandle"]) == ANN
    bob = webauthn.user_handle(HANDLE_KEY, "bob")
    with pytest.raises(WebAuthnRejected, match="another user's"):
        verify_authentication(RP, answer, challenge=challenge, key=key, user_handle=bob)


def test_a_server_side_credential_carries_no_user_handle() -> None:
    rp = replace(RP, resident_key="discouraged")
    authenticator, key = enrolled(rp=rp)
    answer, challenge = sign_in(authenticator, key, rp)
    assert "userHandle" not in answer["response"]
    verify_authentication(rp, answer, challenge=challenge, key=key, user_handle=ANN)


def test_user_verification_may_be_missing_unless_required() -> None:
    relaxed = SoftAuthenticator(verifies_users=False)
    answer, challenge = register(relaxed)
    new = verify_registration(RP, answer, challenge=challenge)
    assert not new.user_verified
    answer, challenge = sign_in(relaxed, stored(new))
    assert not verify_authentication(RP, answer, challenge=challenge, key=stored(new)).user_verified


# -- what must be refused --------------------------------------------------------------------

STRICT = replace(RP, user_verification="required")

REGISTRATIONS_REFUSED: list[tuple[str, RelyingParty, dict[str, Any], str]] = [
    ("another origin", RP, {"origin": "https://evil.example"}, "origin"),
    ("another port of the origin", RP, {"origin": "https://example.com:8443"}, "origin"),
    ("another RP ID", RP, {"rp_id": "evil.example"}, "RP ID hash"),
    ("a parent of the RP ID", RP, {"rp_id": "com"}, "RP ID hash"),
    ("no user presence", RP, {"user_present": False}, "presence"),
    ("no user verification, required", STRICT, {"user_verified": False}, "verification"),
    ("in a cross-origin frame", RP, {"cross_origin": True}, "cross-origin frame"),
]


@pytest.mark.parametrize(
    ("rp", "knobs", "why"),
    [case[1:] for case in REGISTRATIONS_REFUSED],
    ids=[case[0] for case in REGISTRATIONS_REFUSED],
)
def test_a_registration_is_refused(rp: RelyingParty, knobs: dict[str, Any], why: str) -> None:
    answer, challenge = register(SoftAuthenticator(), rp, **knobs)
    with pytest.raises(WebAuthnRejected, match=why):
        verify_registration(rp, answer, challenge=challenge)


def test_a_registration_answers_its_own_challenge_only() -> None:
    answer, _ = register(SoftAuthenticator())
    with pytest.raises(WebAuthnRejected, match="challenge"):
        verify_registration(RP, answer, challenge=webauthn.new_challenge())


SIGN_INS_REFUSED: list[tuple[str, RelyingParty, dict[str, Any], str]] = [
    ("another origin", RP, {"origin": "https://evil.example"}, "origin"),
    ("http on the same host", RP, {"origin": "http://example.com"}, "origin"),
    ("another RP ID", RP, {"rp_id": "evil.example"}, "RP ID hash"),
    ("no user presence", RP, {"user_present": False}, "not present"),
    ("no user verification, required", STRICT, {"user_verified": False}, "verification"),
    ("a counter standing still", RP, {"sign_count": 7}, "sign count of 7 was not greater than"),
    ("a counter going backwards", RP, {"sign_count": 3}, "sign count of 3 was not greater than"),
    ("a counter that stopped", RP, {"sign_count": 0}, "sign count of 0 was not greater than"),
    ("in a cross-origin frame", RP, {"cross_origin": True}, "cross-origin frame"),
]


@pytest.mark.parametrize(
    ("rp", "knobs", "why"),
    [case[1:] for case in SIGN_INS_REFUSED],
    ids=[case[0] for case in SIGN_INS_REFUSED],
)
def test_a_sign_in_is_refused(rp: RelyingParty, knobs: dict[str, Any], why: str) -> None:
    authenticator, key = enrolled(rp=rp)
    key = replace(key, sign_count=7)  # the key has signed in before
    answer, challenge = sign_in(authenticator, key, rp, **knobs)
    with pytest.raises(WebAuthnRejected, match=why):
        verify_authentication(rp, answer, challenge=challenge, key=key)


def test_a_sign_in_answers_its_own_challenge_only() -> None:
    authenticator, key = enrolled()
    answer, _ = sign_in(authenticator, key)
    with pytest.raises(WebAuthnRejected, match="challenge"):
        verify_authentication(RP, answer, challenge=webauthn.new_challenge(), key=key)


def test_a_sign_in_without_user_verification_passes_when_it_is_only_preferred() -> None:
    authenticator, key = enrolled()
    answer, challenge = sign_in(authenticator, key, user_verified=False)
    assert not verify_authentication(RP, answer, challenge=challenge, key=key).user_verified


def test_another_credentials_signature_is_refused() -> None:
    authenticator, key = enrolled()
    _, other_key = enrolled(authenticator)  # a second key of the same authenticator
    answer, challenge = sign_in(authenticator, other_key)
    # The answer of the other key, presented as the first one's.
    forged = edited(
        edited(answer, ("id",), b64url(key.credential_id or b"")),
        ("rawId",),
        b64url(key.credential_id or b""),
    )
    with pytest.raises(WebAuthnRejected, match="Could not verify authentication signature"):
        verify_authentication(RP, forged, challenge=challenge, key=key)
    # As it is, the other key's answer is not the first key's.
    with pytest.raises(WebAuthnRejected, match="another credential"):
        verify_authentication(RP, answer, challenge=challenge, key=key)


def test_a_tampered_signature_or_authenticator_data_is_refused() -> None:
    authenticator, key = enrolled(SoftAuthenticator(verifies_users=False))
    answer, challenge = sign_in(authenticator, key)
    signature = bytearray(from_b64url(answer["response"]["signature"]))
    signature[-1] ^= 0x01
    with pytest.raises(WebAuthnRejected, match="signature"):
        verify_authentication(
            RP,
            edited(answer, ("response", "signature"), b64url(bytes(signature))),
            challenge=challenge,
            key=key,
        )
    data = bytearray(from_b64url(answer["response"]["authenticatorData"]))
    assert not data[32] & 0x04
    data[32] |= 0x04  # claims user verification after the fact
    with pytest.raises(WebAuthnRejected, match="signature"):
        verify_authentication(
            RP,
            edited(answer, ("response", "authenticatorData"), b64url(bytes(data))),
            challenge=challenge,
            key=key,
        )


def test_an_answer_of_one_ceremony_does_not_pass_for_the_other() -> None:
    authenticator, key = enrolled()
    answer, challenge = sign_in(authenticator, key)
    with pytest.raises(WebAuthnRejected):
        verify_registration(RP, answer, challenge=challenge)
    registration, challenge = register(SoftAuthenticator())
    with pytest.raises(WebAuthnRejected):
        verify_authentication(RP, registration, challenge=challenge, key=key)


def test_a_verification_needs_a_passkey() -> None:
    app = Authenticator(id="a1", kind=FactorKind.TOTP, name="app", created_at=0.0, secret="x")
    authenticator, key = enrolled()
    answer, challenge = sign_in(authenticator, key)
    with pytest.raises(ValueError, match="not a passkey"):
        verify_authentication(RP, answer, challenge=challenge, key=app)


# -- the new key and its attestation ---------------------------------------------------------


def with_auth_data(answer: dict[str, Any], change: Callable[[bytes], bytes]) -> dict[str, Any]:
    statement = cbor2.loads(from_b64url(answer["response"]["attestationObject"]))
    statement["authData"] = change(statement["authData"])
    return edited(answer, ("response", "attestationObject"), b64url(cbor2.dumps(statement)))


def with_cose_key(answer: dict[str, Any], cose_key: object) -> dict[str, Any]:
    credential_id = from_b64url(answer["rawId"])
    start = 37 + 16 + 2 + len(credential_id)
    return with_auth_data(answer, lambda data: data[:start] + cbor2.dumps(cose_key))


@pytest.mark.parametrize(
    "cose_key",
    [
        {1: 2, 3: -7, -1: 1, -2: b"\x01" * 32, -3: b"\x02" * 32},  # a point off the curve
        {1: 2, 3: -7, -1: 2, -2: b"\x01" * 32, -3: b"\x02" * 32},  # P-384 for ES256
        {1: 2, 3: -8, -1: 1, -2: b"\x01" * 32, -3: b"\x02" * 32},  # EdDSA on an EC2 key
        {1: 1, 3: -8, -1: 6, -2: "not bytes"},
        {1: 3, 3: -257, -1: b"\xff" * 128, -2: b"\x01\x00\x01"},  # a 1024-bit RSA modulus
        4,  # what py_webauthn takes for an "uncompressed" U2F point
        [1, 2, 3],
        None,
    ],
    ids=[
        "off the curve",
        "wrong curve",
        "wrong algorithm",
        "x not bytes",
        "RSA-1024",
        "a bare 4",
        "a list",
        "null",
    ],
)
def test_a_key_the_kit_could_not_verify_with_is_not_registered(cose_key: object) -> None:
    answer, challenge = register(SoftAuthenticator())
    with pytest.raises(WebAuthnRejected):
        verify_registration(RP, with_cose_key(answer, cose_key), challenge=challenge)


def test_the_attested_credential_must_be_the_answers() -> None:
    answer, challenge = register(SoftAuthenticator())
    other = b64url(b"\x07" * 32)
    with pytest.raises(WebAuthnRejected, match="not the answer's rawId"):
        verify_registration(
            RP, edited(edited(answer, ("id",), other), ("rawId",), other), challenge=challenge
        )


def self_attested(
    authenticator: SoftAuthenticator, answer: dict[str, Any], *, good: bool
) -> dict[str, Any]:
    """The answer with a "packed" self attestation: signed by the new key itself, or not."""
    credential = authenticator.credentials[from_b64url(answer["rawId"])]
    statement = cbor2.loads(from_b64url(answer["response"]["attestationObject"]))
    client_data = from_b64url(answer["response"]["clientDataJSON"])
    signed = statement["authData"] + hashlib.sha256(client_data).digest()
    signature = credential.private_key.sign(
        signed if good else b"something else", ec.ECDSA(hashes.SHA256())
    )
    statement.update(fmt="packed", attStmt={"alg": -7, "sig": signature})
    return edited(answer, ("response", "attestationObject"), b64url(cbor2.dumps(statement)))


def test_a_direct_attestation_is_verified() -> None:
    direct = replace(RP, attestation="direct")
    authenticator = SoftAuthenticator()
    answer, challenge = register(authenticator, direct)
    verify_registration(
        direct, self_attested(authenticator, answer, good=True), challenge=challenge
    )
    answer, challenge = register(authenticator, direct)
    with pytest.raises(WebAuthnRejected, match="attestation statement does not verify"):
        verify_registration(
            direct, self_attested(authenticator, answer, good=False), challenge=challenge
        )


def test_with_no_attestation_asked_the_statement_is_not_read() -> None:
    # As a browser anonymises it when the relying party asks for none (WebAuthn 5.4.7).
    authenticator = SoftAuthenticator()
    answer, challenge = register(authenticator)
    forged = self_attested(authenticator, answer, good=False)
    assert verify_registration(RP, forged, challenge=challenge).credential_id == from_b64url(
        answer["rawId"]
    )


# -- malformed answers ---------------------------------------------------------------------

AUTHENTICATOR, KEY = enrolled()
REGISTRATION, REGISTRATION_CHALLENGE = register(SoftAuthenticator())
SIGN_IN, SIGN_IN_CHALLENGE = sign_in(AUTHENTICATOR, KEY)


def refused_or_accepted(verify: Callable[[object], object], answer: object) -> bool:
    """Whether ``verify`` accepted ``answer``; any exception but WebAuthnRejected fails the
    test, and challenge_of and credential_id_of never raise."""
    challenge_of(answer)
    credential_id_of(answer)
    try:
        verify(answer)
    except WebAuthnRejected:
        return False
    return True


def registration_of(answer: object) -> object:
    return verify_registration(RP, answer, challenge=REGISTRATION_CHALLENGE)


def sign_in_of(answer: object) -> object:
    return verify_authentication(RP, answer, challenge=SIGN_IN_CHALLENGE, key=KEY, user_handle=ANN)


def test_the_fuzzing_starts_from_answers_that_pass() -> None:
    assert refused_or_accepted(registration_of, REGISTRATION)
    assert refused_or_accepted(sign_in_of, SIGN_IN)
    assert refused_or_accepted(sign_in_of, json.dumps(SIGN_IN))  # its JSON text too


MALFORMED_ANSWERS: list[object] = [
    None,
    42,
    [],
    "",
    "not json",
    "[1, 2]",
    b"\xff\xfe",
    "[" * 100_000 + "]" * 100_000,
    {},
    {"id": "AA", "rawId": "AA"},
    {"id": "AA", "rawId": "AA", "response": "nope"},
    {"id": "AA", "rawId": "AA", "response": {"clientDataJSON": "!!"}},
    {"id": "AA", "rawId": "AA", "response": {"clientDataJSON": b64url(b"\xff")}},
    {"id": "AA", "rawId": "AA", "response": {"clientDataJSON": b64url(b"[" * 50_000)}},
    {"id": "AA", "rawId": "AA", "response": {"clientDataJSON": b64url(b"[]")}},
]


@pytest.mark.parametrize("answer", MALFORMED_ANSWERS, ids=range(len(MALFORMED_ANSWERS)))
def test_a_malformed_answer_is_refused(answer: object) -> None:
    assert challenge_of(answer) is None
    assert not refused_or_accepted(registration_of, answer)
    assert not refused_or_accepted(sign_in_of, answer)


@pytest.mark.parametrize(
    ("raw_id", "text_id"),
    [
        (None, None),
        ("", ""),
        ("AA==", "AA=="),
        ("AB", "AB"),
        ("A", "A"),
        ("a+b/", "a+b/"),
        ("AAAA", "AAAB"),
        (b64url(bytes(1024)), b64url(bytes(1024))),
        (7, 7),
    ],
    ids=[
        "missing",
        "empty",
        "padded",
        "stray bits",
        "one character",
        "not url-safe",
        "id is not rawId",
        "1024 bytes",
        "a number",
    ],
)
def test_a_malformed_credential_id_is_none(raw_id: object, text_id: object) -> None:
    answer = edited(edited(SIGN_IN, ("rawId",), raw_id), ("id",), text_id)
    assert credential_id_of(answer) is None
    assert not refused_or_accepted(sign_in_of, answer)


# What py_webauthn does not read (the extension results, the attachment, the registration's
# copies of the authenticator data and public key) or what is optional.
OPTIONAL_MEMBERS = {
    "registration": {
        "authenticatorAttachment",
        "clientExtensionResults",
        "transports",
        "authenticatorData",
        "publicKey",
        "publicKeyAlgorithm",
    },
    "sign-in": {"authenticatorAttachment", "clientExtensionResults", "userHandle"},
}


@pytest.mark.parametrize("ceremony", ["registration", "sign-in"])
def test_the_members_an_answer_needs_are_each_required(ceremony: str) -> None:
    answer, verify = (
        (REGISTRATION, registration_of) if ceremony == "registration" else (SIGN_IN, sign_in_of)
    )
    for name in [*answer, *answer["response"]]:
        without = json.loads(json.dumps(answer))
        del (without if name in answer else without["response"])[name]
        assert refused_or_accepted(verify, without) == (name in OPTIONAL_MEMBERS[ceremony]), name


FUZZ = settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow])
JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3)
    ),
    max_leaves=8,
)
CBOR_VALUES = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**70), 2**70)
    | st.binary(max_size=48)
    | st.text(max_size=10)
    | st.floats(),
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.dictionaries(st.integers(-5, 5) | st.text(max_size=8), inner, max_size=6)
    ),
    max_leaves=12,
)
REGISTRATION_PATHS = [
    ("id",),
    ("rawId",),
    ("type",),
    ("authenticatorAttachment",),
    ("response",),
    ("response", "clientDataJSON"),
    ("response", "attestationObject"),
    ("response", "transports"),
]
SIGN_IN_PATHS = [
    ("id",),
    ("rawId",),
    ("type",),
    ("response",),
    ("response", "clientDataJSON"),
    ("response", "authenticatorData"),
    ("response", "signature"),
    ("response", "userHandle"),
]


@FUZZ
@given(path=st.sampled_from(REGISTRATION_PATHS), value=JSON_VALUES)
def test_fuzz_any_json_in_any_member_of_a_registration(
    path: tuple[str, ...], value: object
) -> None:
    answer = edited(REGISTRATION, path, value)
    if refused_or_accepted(registration_of, answer):
        # Only members outside what is signed and checked may change and pass.
        assert path in {("authenticatorAttachment",), ("response", "transports")}


@FUZZ
@given(path=st.sampled_from(SIGN_IN_PATHS), value=JSON_VALUES)
def test_fuzz_any_json_in_any_member_of_a_sign_in(path: tuple[str, ...], value: object) -> None:
    answer = edited(SIGN_IN, path, value)
    if refused_or_accepted(sign_in_of, answer):
        # The same value, or no user handle (it is optional).
        assert value == _member(SIGN_IN, path) or (path[-1] == "userHandle" and value is None)


@FUZZ
@given(
    path=st.sampled_from([p for p in SIGN_IN_PATHS if p[0] == "response" and len(p) == 2]),
    data=st.binary(max_size=300),
)
def test_fuzz_any_bytes_in_a_signed_member_of_a_sign_in(path: tuple[str, ...], data: bytes) -> None:
    answer = edited(SIGN_IN, path, b64url(data))
    accepted = refused_or_accepted(sign_in_of, answer)
    assert not accepted or b64url(data) == _member(SIGN_IN, path)


@FUZZ
@given(
    path=st.sampled_from([("response", "clientDataJSON"), ("response", "attestationObject")]),
    data=st.binary(max_size=300),
)
def test_fuzz_any_bytes_in_a_registration(path: tuple[str, ...], data: bytes) -> None:
    refused_or_accepted(registration_of, edited(REGISTRATION, path, b64url(data)))


CLIENT_DATA_MEMBERS = ["type", "challenge", "origin", "crossOrigin", "topOrigin", "tokenBinding"]


@FUZZ
@given(member=st.sampled_from(CLIENT_DATA_MEMBERS), value=JSON_VALUES, registration=st.booleans())
def test_fuzz_any_json_in_the_client_data(member: str, value: object, registration: bool) -> None:
    answer, verify = (REGISTRATION, registration_of) if registration else (SIGN_IN, sign_in_of)
    client_data = json.loads(from_b64url(answer["response"]["clientDataJSON"]))
    before = client_data.get(member)
    client_data[member] = value
    text = b64url(json.dumps(client_data).encode("utf-8"))
    changed = edited(answer, ("response", "clientDataJSON"), text)
    if refused_or_accepted(verify, changed):
        # A sign-in's client data is signed; a registration's "none" attestation signs nothing,
        # and py_webauthn ignores a token binding it cannot read.
        assert registration
        assert member == "tokenBinding" or value == before


@FUZZ
@given(member=st.sampled_from(["fmt", "attStmt", "authData"]), value=CBOR_VALUES)
def test_fuzz_any_cbor_in_the_attestation_object(member: str, value: object) -> None:
    statement = cbor2.loads(from_b64url(REGISTRATION["response"]["attestationObject"]))
    statement[member] = value
    changed = edited(
        REGISTRATION, ("response", "attestationObject"), b64url(cbor2.dumps(statement))
    )
    if refused_or_accepted(registration_of, changed):
        assert member != "authData"  # fmt and attStmt are not read when none is asked for


@FUZZ
@given(value=CBOR_VALUES)
def test_fuzz_any_cbor_as_the_attestation_object(value: object) -> None:
    changed = edited(REGISTRATION, ("response", "attestationObject"), b64url(cbor2.dumps(value)))
    assert not refused_or_accepted(registration_of, changed)


@FUZZ
@given(member=st.sampled_from([1, 3, -1, -2, -3, 4]), value=CBOR_VALUES, drop=st.booleans())
def test_fuzz_any_cbor_in_the_new_cose_key(member: int, value: object, drop: bool) -> None:
    statement = cbor2.loads(from_b64url(REGISTRATION["response"]["attestationObject"]))
    start = 37 + 16 + 2 + len(from_b64url(REGISTRATION["rawId"]))
    original = cbor2.loads(statement["authData"][start:])
    cose_key = dict(original)
    if drop:
        cose_key.pop(member, None)
    else:
        cose_key[member] = value
    changed = with_cose_key(REGISTRATION, cose_key)
    if refused_or_accepted(registration_of, changed):
        # Member 4 (key_ops) is not read; any other must be the same value, of the same type.
        assert member == 4 or [(k, type(v), v) for k, v in cose_key.items()] == [
            (k, type(v), v) for k, v in original.items()
        ]


@FUZZ
@given(value=CBOR_VALUES)
def test_fuzz_any_cbor_as_the_new_cose_key(value: object) -> None:
    assert not refused_or_accepted(registration_of, with_cose_key(REGISTRATION, value))


@FUZZ
@given(
    at=st.integers(0, 200), byte=st.integers(0, 255), cut=st.one_of(st.none(), st.integers(0, 200))
)
def test_fuzz_garbled_authenticator_data_of_a_registration(
    at: int, byte: int, cut: int | None
) -> None:
    def garble(data: bytes) -> bytes:
        changed = bytearray(data)
        changed[at % len(data)] = byte
        return bytes(changed[:cut])

    refused_or_accepted(registration_of, with_auth_data(REGISTRATION, garble))


@FUZZ
@given(value=JSON_VALUES | st.text() | st.binary())
def test_fuzz_anything_as_the_answer(value: object) -> None:
    assert not refused_or_accepted(registration_of, value)
    assert not refused_or_accepted(sign_in_of, value)


def _member(answer: dict[str, Any], path: tuple[str, ...]) -> object:
    value: Any = answer
    for name in path:
        value = value.get(name) if isinstance(value, dict) else None
    return value


def test_base64url_is_read_strictly() -> None:
    text = SIGN_IN["response"]["clientDataJSON"]
    padded = text + "=" * (-len(text) % 4)
    for variant in (padded, text + "!", " " + text, text.replace("-", "+").replace("_", "/")):
        if variant != text:
            answer = edited(SIGN_IN, ("response", "clientDataJSON"), variant)
            assert challenge_of(answer) is None
            assert not refused_or_accepted(sign_in_of, answer)
    assert base64.urlsafe_b64decode(padded) == from_b64url(text)
