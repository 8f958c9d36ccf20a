"""A software FIDO2 authenticator, for testing passkeys and security keys without a browser.

:class:`SoftAuthenticator` plays both the browser and the authenticator of WebAuthn's two
ceremonies through their JSON forms: it takes the options the kit sends
(``PublicKeyCredentialCreationOptionsJSON``, ``PublicKeyCredentialRequestOptionsJSON``) and
returns what a browser's ``credential.toJSON()`` gives (``RegistrationResponseJSON``,
``AuthenticationResponseJSON``). Its keys are ES256 (P-256), made with ``cryptography``; its
attestation is "none". An app tests its own passkey pages with it::

    authenticator = SoftAuthenticator()
    options = (await client.post("/mfa/api/webauthn/register/begin")).json()
    answer = authenticator.create(options, origin="https://example.com")
    await client.post("/mfa/api/webauthn/register/finish", json=answer)

Knobs make it misbehave, for the tests that a relying party refuses what it must: another RP
ID hash, no user presence or verification, a counter that stands still or goes backwards, an
authenticator that does not count; the origin is the caller's to give. Where a real browser or
authenticator would refuse (a key already registered, no credential for the RP), it raises
:class:`CeremonyRefused` with the DOMException's name.
"""

from __future__ import annotations

import base64
import hashlib
import json
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import cbor2
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

ES256 = -7
# Authenticator data flags (WebAuthn 6.1).
UP, UV, BE, BS, AT = 0x01, 0x04, 0x08, 0x10, 0x40


class CeremonyRefused(Exception):
    """What a browser would throw instead of answering: ``name`` is the DOMException's
    (``InvalidStateError``: a key of the exclude list; ``NotAllowedError``: no credential for
    the request; ``NotSupportedError``: no algorithm it has)."""

    def __init__(self, name: str, message: str) -> None:
        super().__init__(f"{name}: {message}")
        self.name = name


@dataclass
class SoftCredential:
    """One credential the authenticator holds: its key, its relying party, the user handle
    (kept for a discoverable credential only) and its signature counter."""

    credential_id: bytes
    private_key: ec.EllipticCurvePrivateKey
    rp_id: str
    user_handle: bytes | None
    sign_count: int = 0


def b64url(data: bytes) -> str:
    """Base64url without padding, as WebAuthn's JSON forms write bytes."""
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def from_b64url(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class SoftAuthenticator:
    """A FIDO2 authenticator in memory (the public testing API of passkeys).

    - ``aaguid``: its model (16 bytes; zeros by default, as most passkey providers send).
    - ``transports``: what it reports at registration (``("internal", "hybrid")``).
    - ``attachment``: ``"platform"`` (a phone or laptop) or ``"cross-platform"`` (a key).
    - ``verifies_users``: it checks a PIN or biometric (the UV flag), when not discouraged.
    - ``discoverable``: it stores credentials with their user handle when the relying party
      prefers or requires a resident key, and gives the handle back when signing in.
    - ``counting``: its signature counter goes up at each sign-in; ``False``: always 0, as
      most synced passkeys.
    - ``backup_eligible`` / ``backed_up``: the BE and BS flags (a synced passkey has both).
    """

    def __init__(
        self,
        *,
        aaguid: bytes = bytes(16),
        transports: tuple[str, ...] = ("internal", "hybrid"),
        attachment: str = "platform",
        verifies_users: bool = True,
        discoverable: bool = True,
        counting: bool = True,
        backup_eligible: bool = False,
        backed_up: bool = False,
    ) -> None:
        if len(aaguid) != 16:
            raise ValueError("an AAGUID is 16 bytes")
        self.aaguid = aaguid
        self.transports = transports
        self.attachment = attachment
        self.verifies_users = verifies_users
        self.discoverable = discoverable
        self.counting = counting
        self.backup_eligible = backup_eligible
        self.backed_up = backed_up
        self.credentials: dict[bytes, SoftCredential] = {}

    def create(
        self,
        options: Mapping[str, Any],
        *,
        origin: str,
        rp_id: str | None = None,
        user_present: bool = True,
        user_verified: bool | None = None,
        cross_origin: bool = False,
    ) -> dict[str, Any]:
        """Register a new credential for ``options`` (creation options in their JSON form),
        as the page at ``origin`` would; the ``RegistrationResponseJSON``.

        ``rp_id``: the RP ID whose hash goes into the authenticator data (default: the
        options'); ``user_present`` / ``user_verified``: force the UP and UV flags (default:
        present; verified if the authenticator verifies users and the options do not
        discourage it); ``cross_origin``: as if run in a frame of another site."""
        for excluded in options.get("excludeCredentials") or ():
            if from_b64url(excluded["id"]) in self.credentials:
                raise CeremonyRefused("InvalidStateError", "this authenticator is registered")
        algorithms = [param.get("alg") for param in options["pubKeyCredParams"]]
        if ES256 not in algorithms:
            raise CeremonyRefused("NotSupportedError", "the relying party does not take ES256")
        selection = options.get("authenticatorSelection") or {}
        options_rp_id = options["rp"]["id"]
        resident = self.discoverable and selection.get("residentKey", "discouraged") in (
            "preferred",
            "required",
        )
        if selection.get("residentKey") == "required" and not resident:
            raise CeremonyRefused("NotAllowedError", "this authenticator stores no credential")
        credential = SoftCredential(
            credential_id=secrets.token_bytes(32),
            private_key=ec.generate_private_key(ec.SECP256R1()),
            rp_id=options_rp_id,
            user_handle=from_b64url(options["user"]["id"]) if resident else None,
        )
        self.credentials[credential.credential_id] = credential
        client_data = self._client_data("webauthn.create", options, origin, cross_origin)
        public = credential.private_key.public_key().public_numbers()
        cose_key = cbor2.dumps(
            {
                1: 2,  # kty: EC2
                3: ES256,  # alg
                -1: 1,  # crv: P-256
                -2: public.x.to_bytes(32, "big"),
                -3: public.y.to_bytes(32, "big"),
            },
            canonical=True,
        )
        attested = (
            self.aaguid
            + len(credential.credential_id).to_bytes(2, "big")
            + credential.credential_id
            + cose_key
        )
        flags = self._flags(selection.get("userVerification"), user_present, user_verified) | AT
        auth_data = (
            self._rp_id_hash(rp_id or options_rp_id)
            + bytes([flags])
            + credential.sign_count.to_bytes(4, "big")
            + attested
        )
        attestation_object = cbor2.dumps(
            {"fmt": "none", "attStmt": {}, "authData": auth_data}, canonical=True
        )
        spki = credential.private_key.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        return {
            "id": b64url(credential.credential_id),
            "rawId": b64url(credential.credential_id),
            "type": "public-key",
            "authenticatorAttachment": self.attachment,
            "clientExtensionResults": {},
            "response": {
                "clientDataJSON": b64url(client_data),
                "attestationObject": b64url(attestation_object),
                "authenticatorData": b64url(auth_data),
                "transports": list(self.transports),
                "publicKey": b64url(spki),
                "publicKeyAlgorithm": ES256,
            },
        }

    def get(
        self,
        options: Mapping[str, Any],
        *,
        origin: str,
        credential_id: bytes | None = None,
        rp_id: str | None = None,
        user_present: bool = True,
        user_verified: bool | None = None,
        sign_count: int | None = None,
        cross_origin: bool = False,
    ) -> dict[str, Any]:
        """Sign in for ``options`` (request options in their JSON form), as the page at
        ``origin`` would; the ``AuthenticationResponseJSON``.

        ``credential_id``: the credential to use (default: the first of ``allowCredentials``
        it holds, or, with none listed, its discoverable credential for the RP ID);
        ``rp_id``, ``user_present``, ``user_verified``, ``cross_origin``: as in :meth:`create`;
        ``sign_count``: the counter to report instead of the next one (kept as the
        credential's counter), to stand still or go backwards."""
        credential = self._credential_for(options, credential_id)
        if sign_count is not None:
            credential.sign_count = sign_count
        elif self.counting:
            credential.sign_count += 1
        client_data = self._client_data("webauthn.get", options, origin, cross_origin)
        flags = self._flags(options.get("userVerification"), user_present, user_verified)
        auth_data = (
            self._rp_id_hash(rp_id or options["rpId"])
            + bytes([flags])
            + credential.sign_count.to_bytes(4, "big")
        )
        signature = credential.private_key.sign(
            auth_data + hashlib.sha256(client_data).digest(), ec.ECDSA(hashes.SHA256())
        )
        response: dict[str, Any] = {
            "clientDataJSON": b64url(client_data),
            "authenticatorData": b64url(auth_data),
            "signature": b64url(signature),
        }
        if credential.user_handle is not None:
            response["userHandle"] = b64url(credential.user_handle)
        return {
            "id": b64url(credential.credential_id),
            "rawId": b64url(credential.credential_id),
            "type": "public-key",
            "authenticatorAttachment": self.attachment,
            "clientExtensionResults": {},
            "response": response,
        }

    def _credential_for(
        self, options: Mapping[str, Any], credential_id: bytes | None
    ) -> SoftCredential:
        if credential_id is not None:
            if credential_id not in self.credentials:
                raise CeremonyRefused("NotAllowedError", "no such credential here")
            return self.credentials[credential_id]
        allowed = [from_b64url(item["id"]) for item in options.get("allowCredentials") or ()]
        for candidate in allowed:
            if candidate in self.credentials:
                return self.credentials[candidate]
        if not allowed:
            for credential in self.credentials.values():
                if credential.rp_id == options["rpId"] and credential.user_handle is not None:
                    return credential
        raise CeremonyRefused("NotAllowedError", "no credential of this authenticator fits")

    def _flags(
        self, requirement: str | None, user_present: bool, user_verified: bool | None
    ) -> int:
        if user_verified is None:
            user_verified = self.verifies_users and requirement != "discouraged"
        flags = (UP if user_present else 0) | (UV if user_verified else 0)
        flags |= (BE if self.backup_eligible else 0) | (BS if self.backed_up else 0)
        return flags

    @staticmethod
    def _client_data(
        kind: str, options: Mapping[str, Any], origin: str, cross_origin: bool
    ) -> bytes:
        # The members in the order browsers write them (WebAuthn 5.8.1.1).
        data = {
            "type": kind,
            "challenge": options["challenge"],
            "origin": origin,
            "crossOrigin": cross_origin,
        }
        if cross_origin:
            data["topOrigin"] = "https://framing.example"
        return json.dumps(data, separators=(",", ":")).encode("utf-8")

    @staticmethod
    def _rp_id_hash(rp_id: str) -> bytes:
        return hashlib.sha256(rp_id.encode("utf-8")).digest()


__all__ = ["CeremonyRefused", "SoftAuthenticator", "SoftCredential", "b64url", "from_b64url"]
