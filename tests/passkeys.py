"""Passkeys through the JSON API for the tests: a site of one member, a policy of methods set
on it, a key added and used."""

from __future__ import annotations

import httpx

from mfa_guard.stores.sites import MemorySiteDirectory, MethodPolicy, Role, SitePolicy
from mfa_guard.testing import CountingSiteDirectory
from mfa_guard.testing.webauthn import SoftAuthenticator

ORIGIN = "https://app.example.test"
PASSKEYS = {"rp_id": "app.example.test", "origins": [ORIGIN]}


async def site_of(user: str) -> MemorySiteDirectory:
    directory = MemorySiteDirectory()
    await directory.save_site("acme", "Acme")
    await directory.add_member("acme", user, Role.OPERATOR)
    return directory


async def require(
    directory: MemorySiteDirectory | CountingSiteDirectory,
    methods: MethodPolicy,
    deadline: float,
) -> None:
    policy = SitePolicy(
        enforce=True, grace_deadline=0.0, methods=methods, methods_deadline=deadline
    )
    assert await directory.set_policy("acme", policy)


async def add_passkey(client: httpx.AsyncClient, key: SoftAuthenticator) -> None:
    options = (await client.post("/mfa/api/webauthn/register/options", json={})).json()
    answer = key.create(options["publicKey"], origin=ORIGIN)
    added = await client.post("/mfa/api/webauthn/register", json={"credential": answer})
    assert added.status_code == 200, added.text


async def with_passkey(client: httpx.AsyncClient, key: SoftAuthenticator) -> httpx.Response:
    options = (await client.post("/mfa/api/webauthn/authenticate/options", json={})).json()
    answer = key.get(options["publicKey"], origin=ORIGIN)
    return await client.post("/mfa/api/webauthn/authenticate", json={"credential": answer})
