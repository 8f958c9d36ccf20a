"""WebAuthn (passkeys and security keys) as a second factor: the options of the two ceremonies
and the checks of their answers, on py_webauthn. No I/O: the caller stores the challenges and
the keys.

A ceremony, as the service runs it:

1. ``challenge = new_challenge()``; store ``hash_challenge(challenge)`` (single use, bound to
   the session, until ``RelyingParty.challenge_seconds`` from now); send the browser
   :func:`registration_options` or :func:`authentication_options`.
2. With the browser's answer (``credential.toJSON()``, parsed or not): :func:`challenge_of`
   names the challenge it signed; the caller consumes the stored challenge of that hash, and only
   then calls :func:`verify_registration` or :func:`verify_authentication` with it. A challenge
   nobody stored, or one used already, never reaches a verification.
3. A new key goes to the store as it is (:class:`NewKey`); an assertion's counter is recorded
   with the store's compare-and-set (``accept_assertion``), which two concurrent sign-ins with
   the same answer cannot both pass.

Every bad answer raises :class:`WebAuthnRejected`, whatever is wrong with it: malformed JSON,
base64url or CBOR, another origin or RP ID, another challenge, no user presence, no user
verification where ``user_verification`` is ``required``, a bad signature, a counter that did
not go up. Its ``why`` is for logs and tests, in English; the user is told less.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import re
import secrets
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from webauthn import (
    generate_authentication_options,
    generate_registration_options,
    options_to_json,
    verify_authentication_response,
    verify_registration_response,
)
from webauthn.helpers import (
    decode_credential_public_key,
    decoded_public_key_to_cryptography,
    encode_cbor,
    parse_cbor,
)
from webauthn.helpers.cose import COSEAlgorithmIdentifier
from webauthn.helpers.exceptions import WebAuthnException
from webauthn.helpers.structs import (
    AttestationConveyancePreference,
    AuthenticatorSelectionCriteria,
    AuthenticatorTransport,
    PublicKeyCredentialDescriptor,
    ResidentKeyRequirement,
    UserVerificationRequirement,
)

from mfa_guard.stores.base import Authenticator, FactorKind

if TYPE_CHECKING:
    from mfa_guard.settings import MFAGuardSettings

UserVerification = Literal["preferred", "required", "discouraged"]
ResidentKey = Literal["preferred", "required", "discouraged"]
Attestation = Literal["none", "direct"]

# The signature algorithms a new key may use, in the order the browser is asked to prefer them:
# ES256 (every authenticator), EdDSA (Ed25519), RS256 (Windows Hello, older TPMs).
ALGORITHMS = (
    COSEAlgorithmIdentifier.ECDSA_SHA_256,
    COSEAlgorithmIdentifier.EDDSA,
    COSEAlgorithmIdentifier.RSASSA_PKCS1_v1_5_SHA_256,
)
# 256 random bits; WebAuthn asks for at least 16 bytes (13.4.3).
CHALLENGE_BYTES = 32
MIN_CHALLENGE_BYTES = 16
USER_HANDLE_BYTES = 32
# WebAuthn 7.1: a relying party refuses a credential ID longer than this.
MAX_CREDENTIAL_ID_BYTES = 1023
MIN_RSA_BITS = 2048

# What py_webauthn and the parsers under it raise on a malformed or forged answer (found by
# tests/core/test_webauthn.py's fuzzing, each one named): its own errors (WebAuthnException:
# InvalidJSONStructure, InvalidRegistrationResponse, InvalidCBORData, InvalidBackupFlags…),
# ValueError (base64url and UTF-8 decoding, binascii.Error, points off the curve), TypeError
# (a JSON or CBOR value of an unexpected type), LookupError (a COSE key without a member).
_MALFORMED = (WebAuthnException, ValueError, TypeError, LookupError)

_BASE64URL = re.compile(r"[A-Za-z0-9_-]*")
_USER_HANDLE_LABEL = b"mfa_guard webauthn user handle\x00"
# The COSE members a key of each accepted kind must have (RFC 9053): kty, alg, crv where there
# is one, and the coordinates' lengths.
_KTY, _ALG, _CRV, _X, _Y, _N, _E = 1, 3, -1, -2, -3, -1, -2
_EC2, _OKP, _RSA = 2, 1, 3
_P256, _ED25519 = 1, 6


class WebAuthnRejected(Exception):
    """A registration or sign-in answer that does not hold; ``why`` says what, for logs and
    tests (never shown to the user as it is)."""

    def __init__(self, why: str) -> None:
        super().__init__(why)
        self.why = why


@dataclass(frozen=True, slots=True)
class RelyingParty:
    """The site as WebAuthn sees it: its ``id`` (the host name keys are bound to), ``name``
    (shown while registering), the ``origins`` its pages are served from, and its policy."""

    id: str
    name: str
    origins: tuple[str, ...]
    user_verification: UserVerification = "preferred"
    resident_key: ResidentKey = "preferred"
    attestation: Attestation = "none"
    timeout_ms: int = 300_000

    @classmethod
    def from_settings(cls, settings: MFAGuardSettings) -> RelyingParty | None:
        """The relying party of ``settings.webauthn``; ``None`` when ``rp_id`` is unset
        (passkeys and security keys are off). Its name defaults to the issuer."""
        group = settings.webauthn
        if group.rp_id is None:
            return None
        return cls(
            id=group.rp_id,
            name=group.rp_name or settings.issuer,
            origins=tuple(group.origins),
            user_verification=group.user_verification,
            resident_key=group.resident_key,
            attestation=group.attestation,
            timeout_ms=group.challenge_seconds * 1000,
        )

    @property
    def challenge_seconds(self) -> int:
        """How long a challenge may be answered: the timeout the browser is given."""
        return self.timeout_ms // 1000


@dataclass(frozen=True, slots=True)
class NewKey:
    """A verified registration: what the store keeps of the new passkey or security key."""

    credential_id: bytes
    # The COSE key, as py_webauthn re-encoded it (what verify_authentication takes back).
    public_key: bytes
    sign_count: int
    transports: tuple[str, ...]
    # The authenticator's model, "00000000-0000-0000-0000-000000000000" when it keeps it quiet.
    aaguid: str
    # Synced between the user's devices (a passkey in a password manager or a platform
    # account), not bound to one piece of hardware.
    backed_up: bool
    user_verified: bool


@dataclass(frozen=True, slots=True)
class Assertion:
    """A verified sign-in: the counter to record (compare-and-set) and the flags."""

    credential_id: bytes
    sign_count: int
    user_verified: bool
    backed_up: bool


def new_challenge() -> bytes:
    """A fresh challenge: 32 random bytes."""
    return secrets.token_bytes(CHALLENGE_BYTES)


def hash_challenge(challenge: bytes) -> str:
    """How the store keeps a challenge: its SHA-256, in hex (256 random bits need no key)."""
    return hashlib.sha256(challenge).hexdigest()


def user_handle(key: bytes, user_id: str) -> bytes:
    """The user's WebAuthn user handle: 32 bytes, an HMAC-SHA256 of ``user_id`` under ``key``.

    Authenticators store it with a passkey and give it back when signing in; it carries nothing
    of the user (no id, no e-mail), and is the same at every registration as long as ``key``
    is, so a user's passkeys on one authenticator share one account entry. ``key`` is a secret
    of the app that never rotates away (derive it from the oldest encryption key)."""
    if not key:
        raise ValueError("user_handle needs a non-empty key")
    return hmac.new(key, _USER_HANDLE_LABEL + user_id.encode("utf-8"), hashlib.sha256).digest()


def registration_options(
    rp: RelyingParty,
    *,
    user_handle: bytes,
    user_name: str,
    display_name: str,
    exclude: Sequence[Authenticator],
    challenge: bytes,
) -> dict[str, Any]:
    """The JSON-ready ``PublicKeyCredentialCreationOptions`` for ``navigator.credentials.create``
    (``PublicKeyCredential.parseCreationOptionsFromJSON`` reads them): ES256, EdDSA or RS256,
    the settings' resident key, user verification and attestation, and the user's keys in
    ``excludeCredentials`` (with their transports) so an authenticator registers once."""
    _check_challenge(challenge)
    if not 1 <= len(user_handle) <= 64:
        raise ValueError("a WebAuthn user handle is 1 to 64 bytes (WebAuthn 5.4.3)")
    if not user_name:
        raise ValueError("registration_options needs a user_name the user recognises")
    options = generate_registration_options(
        rp_id=rp.id,
        rp_name=rp.name,
        user_id=user_handle,
        user_name=user_name,
        user_display_name=display_name or user_name,
        challenge=challenge,
        timeout=rp.timeout_ms,
        attestation=AttestationConveyancePreference(rp.attestation),
        authenticator_selection=AuthenticatorSelectionCriteria(
            resident_key=ResidentKeyRequirement(rp.resident_key),
            user_verification=UserVerificationRequirement(rp.user_verification),
        ),
        exclude_credentials=_descriptors(exclude),
        supported_pub_key_algs=list(ALGORITHMS),
    )
    return _json_object(options_to_json(options))


def authentication_options(
    rp: RelyingParty, *, allow: Sequence[Authenticator], challenge: bytes
) -> dict[str, Any]:
    """The JSON-ready ``PublicKeyCredentialRequestOptions`` for ``navigator.credentials.get``:
    the user's keys in ``allowCredentials`` (with their transports), the settings' user
    verification."""
    _check_challenge(challenge)
    options = generate_authentication_options(
        rp_id=rp.id,
        challenge=challenge,
        timeout=rp.timeout_ms,
        allow_credentials=_descriptors(allow),
        user_verification=UserVerificationRequirement(rp.user_verification),
    )
    return _json_object(options_to_json(options))


def challenge_of(credential: object) -> bytes | None:
    """The challenge an answer's ``clientDataJSON`` carries, for the caller to find and consume
    the stored one (by :func:`hash_challenge`) before verifying; ``None`` when the answer is
    malformed. Never raises; proves nothing (the signature is checked later)."""
    try:
        client_data = _client_data(_as_object(credential))
    except WebAuthnRejected:
        return None
    challenge = client_data.get("challenge")
    decoded = _from_base64url(challenge) if isinstance(challenge, str) else None
    return decoded or None


def credential_id_of(credential: object) -> bytes | None:
    """The credential ID of an answer (its ``rawId``, which ``id`` must equal), for the caller
    to find the key it names; ``None`` when missing or malformed. Never raises."""
    try:
        return _credential_id(_as_object(credential))
    except WebAuthnRejected:
        return None


def verify_registration(rp: RelyingParty, credential: object, *, challenge: bytes) -> NewKey:
    """Check the browser's answer to :func:`registration_options` (``credential.toJSON()``, as
    a dict or its JSON text) against ``challenge``, the relying party's ID and origins and its
    policy; the new key, or :class:`WebAuthnRejected`.

    With ``attestation`` ``none`` the attestation statement is not looked at: the answer is
    checked as the browser would have anonymised it (WebAuthn 5.4.7), so no certificate parser
    sees an attacker's bytes. With ``direct`` it is verified too (its signature and chain; no
    vendor root is known, so it is not trusted to name the model)."""
    answer = _as_object(credential)
    credential_id = _credential_id(answer)
    _same_origin_only(_client_data(answer))
    response = answer["response"]
    if not isinstance(response, dict):
        raise WebAuthnRejected("the answer has no response object")
    anonymised = {**answer, "response": {**response, "attestationObject": _no_attestation(answer)}}
    try:
        verified = verify_registration_response(
            credential=anonymised,
            expected_challenge=challenge,
            expected_rp_id=rp.id,
            expected_origin=list(rp.origins),
            require_user_presence=True,
            require_user_verification=rp.user_verification == "required",
            supported_pub_key_algs=list(ALGORITHMS),
        )
    except _MALFORMED as exc:
        raise WebAuthnRejected(f"registration refused: {exc}") from exc
    if verified.credential_id != credential_id:
        raise WebAuthnRejected("the attested credential ID is not the answer's rawId")
    _check_public_key(verified.credential_public_key)
    if rp.attestation == "direct":
        _verify_attestation(rp, answer, challenge)
    return NewKey(
        credential_id=verified.credential_id,
        public_key=verified.credential_public_key,
        sign_count=verified.sign_count,
        transports=_transports(response.get("transports")),
        aaguid=verified.aaguid,
        backed_up=verified.credential_backed_up,
        user_verified=verified.user_verified,
    )


def verify_authentication(
    rp: RelyingParty,
    credential: object,
    *,
    challenge: bytes,
    key: Authenticator,
    user_handle: bytes | None = None,
) -> Assertion:
    """Check the browser's answer to :func:`authentication_options` against ``challenge``, the
    relying party and ``key`` (the user's passkey its ``rawId`` names); the assertion, or
    :class:`WebAuthnRejected`. ``user_handle``: the user's (:func:`user_handle`), which an
    answer that carries one must match.

    The signature counter must go up (refused otherwise, as a possibly cloned authenticator:
    WebAuthn 6.1.1), except from 0 to 0, the authenticators that do not count (most synced
    passkeys). The caller then records ``sign_count`` with the store's compare-and-set."""
    if key.kind is not FactorKind.WEBAUTHN or not key.credential_id or not key.public_key:
        raise ValueError(f"authenticator {key.id!r} is not a passkey or security key")
    answer = _as_object(credential)
    if _credential_id(answer) != key.credential_id:
        raise WebAuthnRejected("the answer is signed by another credential than the key given")
    _same_origin_only(_client_data(answer))
    response = answer["response"]
    handle = response.get("userHandle") if isinstance(response, dict) else None
    if handle is not None:
        given = _from_base64url(handle) if isinstance(handle, str) else None
        if given is None:
            raise WebAuthnRejected("the answer's userHandle is not base64url")
        if user_handle is not None and not hmac.compare_digest(given, user_handle):
            raise WebAuthnRejected("the answer's userHandle is another user's")
    try:
        verified = verify_authentication_response(
            credential=answer,
            expected_challenge=challenge,
            expected_rp_id=rp.id,
            expected_origin=list(rp.origins),
            credential_public_key=key.public_key,
            credential_current_sign_count=key.sign_count,
            require_user_verification=rp.user_verification == "required",
        )
    except _MALFORMED as exc:
        raise WebAuthnRejected(f"sign-in refused: {exc}") from exc
    return Assertion(
        credential_id=verified.credential_id,
        sign_count=verified.new_sign_count,
        user_verified=verified.user_verified,
        backed_up=verified.credential_backed_up,
    )


def _json_object(text: str) -> dict[str, Any]:
    # Through the JSON text, so that only JSON's own types remain (no enum members).
    options: dict[str, Any] = json.loads(text)
    return options


def _check_challenge(challenge: bytes) -> None:
    if len(challenge) < MIN_CHALLENGE_BYTES:
        raise ValueError(
            f"a WebAuthn challenge has at least {MIN_CHALLENGE_BYTES} random bytes: "
            "use new_challenge()"
        )


def _descriptors(keys: Sequence[Authenticator]) -> list[PublicKeyCredentialDescriptor]:
    known = {transport.value: transport for transport in AuthenticatorTransport}
    return [
        PublicKeyCredentialDescriptor(
            id=key.credential_id,
            transports=[known[name] for name in key.transports if name in known] or None,
        )
        for key in keys
        if key.kind is FactorKind.WEBAUTHN and key.credential_id
    ]


def _transports(value: object) -> tuple[str, ...]:
    """The transports a registration answer lists, the known ones, each once."""
    if not isinstance(value, list):
        return ()
    known = {transport.value for transport in AuthenticatorTransport}
    return tuple(dict.fromkeys(name for name in value if isinstance(name, str) and name in known))


def _as_object(credential: object) -> dict[str, Any]:
    """The answer as a JSON object: a dict as given, or the dict a JSON text holds."""
    if isinstance(credential, str | bytes):
        try:
            credential = json.loads(credential)
        # A text nested deeper than the parser's stack is malformed JSON too.
        except (ValueError, RecursionError) as exc:
            raise WebAuthnRejected("the answer is not JSON") from exc
    if not isinstance(credential, dict):
        raise WebAuthnRejected("the answer is not a JSON object")
    return credential


def _from_base64url(text: str) -> bytes | None:
    """Strict base64url, unpadded, as browsers write it; ``None`` for anything else."""
    if not _BASE64URL.fullmatch(text) or len(text) % 4 == 1:
        return None
    try:
        decoded = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except binascii.Error:
        return None
    # Non-zero bits after the last byte: another text for the same bytes, never a browser's.
    if base64.urlsafe_b64encode(decoded).rstrip(b"=") != text.encode("ascii"):
        return None
    return decoded


def _credential_id(answer: Mapping[str, object]) -> bytes:
    raw_id, text_id = answer.get("rawId"), answer.get("id")
    if not isinstance(raw_id, str) or raw_id != text_id:
        raise WebAuthnRejected("the answer's id and rawId are missing or differ")
    decoded = _from_base64url(raw_id)
    if not decoded or len(decoded) > MAX_CREDENTIAL_ID_BYTES:
        raise WebAuthnRejected(
            f"the answer's rawId is not base64url of 1 to {MAX_CREDENTIAL_ID_BYTES} bytes"
        )
    return decoded


def _client_data(answer: Mapping[str, object]) -> dict[str, Any]:
    response = answer.get("response")
    text = response.get("clientDataJSON") if isinstance(response, dict) else None
    raw = _from_base64url(text) if isinstance(text, str) else None
    if raw is None:
        raise WebAuthnRejected("the answer's clientDataJSON is missing or not base64url")
    try:
        client_data = json.loads(raw)
    # UnicodeDecodeError and JSONDecodeError are ValueErrors; nesting beyond the parser's stack.
    except (ValueError, RecursionError) as exc:
        raise WebAuthnRejected("the answer's clientDataJSON is not JSON") from exc
    if not isinstance(client_data, dict):
        raise WebAuthnRejected("the answer's clientDataJSON is not a JSON object")
    return client_data


def _same_origin_only(client_data: Mapping[str, object]) -> None:
    # The ceremony ran in a frame of another site (WebAuthn 5.8.1): the kit's pages are not
    # meant to be framed (frame_ancestors), and a framing site could have run it.
    if client_data.get("crossOrigin", False) is not False:
        raise WebAuthnRejected("the ceremony ran in a cross-origin frame")
    if "topOrigin" in client_data:
        raise WebAuthnRejected("the ceremony ran in a frame (topOrigin)")


def _no_attestation(answer: Mapping[str, Any]) -> str:
    """The answer's attestation object with a "none" statement (base64url): what the browser
    gives when the relying party asked for no attestation."""
    text = answer["response"].get("attestationObject")
    raw = _from_base64url(text) if isinstance(text, str) else None
    if raw is None:
        raise WebAuthnRejected("the answer's attestationObject is missing or not base64url")
    try:
        statement = parse_cbor(raw)
    except WebAuthnException as exc:
        raise WebAuthnRejected("the answer's attestationObject is not CBOR") from exc
    auth_data = statement.get("authData") if isinstance(statement, dict) else None
    if not isinstance(auth_data, bytes):
        raise WebAuthnRejected("the answer's attestationObject has no authData")
    encoded = encode_cbor({"fmt": "none", "attStmt": {}, "authData": auth_data})
    return base64.urlsafe_b64encode(encoded).rstrip(b"=").decode("ascii")


def _verify_attestation(rp: RelyingParty, answer: dict[str, Any], challenge: bytes) -> None:
    """The attestation statement as sent, checked by py_webauthn's format verifiers."""
    try:
        verify_registration_response(
            credential=answer,
            expected_challenge=challenge,
            expected_rp_id=rp.id,
            expected_origin=list(rp.origins),
            require_user_presence=True,
            require_user_verification=rp.user_verification == "required",
            supported_pub_key_algs=list(ALGORITHMS),
        )
    # Everything the kit relies on passed above with the narrow catch. Here only the statement
    # is new, read by X.509, ASN.1 and TPM parsers (cryptography, pyOpenSSL, pyasn1) whose
    # errors on hostile bytes are an open set: any of them means "not verified".
    except Exception as exc:
        raise WebAuthnRejected(f"the attestation statement does not verify: {exc}") from exc


def _check_public_key(public_key: bytes) -> None:
    """Refuse a COSE key the kit could not verify a signature with later: one of the accepted
    algorithms, with its curve and coordinates (an RSA modulus of at least 2048 bits), a point
    on the curve."""
    try:
        members = parse_cbor(public_key)
    except WebAuthnException as exc:
        raise WebAuthnRejected("the new key is not CBOR") from exc
    if not isinstance(members, dict):
        raise WebAuthnRejected("the new key is not a COSE key")
    kty, alg = _integer(members.get(_KTY)), _integer(members.get(_ALG))
    if (kty, alg) == (_EC2, COSEAlgorithmIdentifier.ECDSA_SHA_256):
        ok = _integer(members.get(_CRV)) == _P256 and _is_bytes(members.get(_X), 32)
        ok = ok and _is_bytes(members.get(_Y), 32)
    elif (kty, alg) == (_OKP, COSEAlgorithmIdentifier.EDDSA):
        ok = _integer(members.get(_CRV)) == _ED25519 and _is_bytes(members.get(_X), 32)
    elif (kty, alg) == (_RSA, COSEAlgorithmIdentifier.RSASSA_PKCS1_v1_5_SHA_256):
        modulus, exponent = members.get(_N), members.get(_E)
        ok = (
            isinstance(modulus, bytes)
            and int.from_bytes(modulus, "big").bit_length() >= MIN_RSA_BITS
            and isinstance(exponent, bytes)
            and 0 < len(exponent) <= 8
        )
    else:
        ok = False
    if not ok:
        raise WebAuthnRejected("the new key is not an ES256 (P-256), EdDSA or RS256 COSE key")
    try:
        decoded_public_key_to_cryptography(decode_credential_public_key(public_key))
    except _MALFORMED as exc:
        raise WebAuthnRejected(f"the new key is not a valid public key: {exc}") from exc


def _integer(value: object) -> int | None:
    # CBOR's true is no integer, though Python's True == 1.
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _is_bytes(value: object, length: int) -> bool:
    return isinstance(value, bytes) and len(value) == length
