"""The contract every :class:`~mfa_guard.stores.base.MFAStore` keeps, as a pytest class.

Subclass it in a test module (the name must start with ``Test``) and provide an async fixture
``store`` that yields a fresh, empty store::

    from mfa_guard.testing.contract import MFAStoreContract

    class TestMyStore(MFAStoreContract):
        @pytest.fixture
        async def store(self) -> AsyncIterator[MyStore]:
            store = MyStore(...)
            yield store
            await store.close()

The tests need pytest-asyncio (``asyncio_mode = "auto"``) or an equivalent runner.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Awaitable, Callable

from mfa_guard.core.marker import EnrolmentSummary
from mfa_guard.core.recovery import RecoveryCodeSet
from mfa_guard.stores.base import (
    Authenticator,
    CeremonyPurpose,
    Enrolment,
    FactorKind,
    FactorStatus,
    MFAStore,
    SMSChallenge,
    SMSPurpose,
    StoredSecrets,
    WebAuthnChallenge,
)

__all__ = ["MFAStoreContract"]

# Stand-ins for Fernet tokens and scrypt hashes: a store keeps them, it never reads them.
PENDING = "gAAAAA-pending-key-one"
OTHER_PENDING = "gAAAAA-pending-key-two"
THIRD_PENDING = "gAAAAA-pending-key-three"
FOURTH_PENDING = "gAAAAA-pending-key-four"
ROTATED = "gAAAAA-under-the-newest-key"
NOW = 1_800_000_000.5
STEP = 60_000_000
RECOVERY = RecoveryCodeSet(salt="c2FsdA==", hashes=("h1", "h2", "h3", "h4"))
NEW_RECOVERY = RecoveryCodeSet(salt="cGVwcGVy", hashes=("n1", "n2", "n3"), params="scrypt:16:8:1")
CONCURRENT_REQUESTS = 50
# A big site's member list, read in one call.
MANY_USERS = 1_200
# Stand-ins for keyed hashes of SMS codes, and numbers in E.164.
SMS_HASH = "a" * 64
OTHER_SMS_HASH = "b" * 64
PHONE = "+33612345678"
OTHER_PHONE = "+447400123456"
SIGN_IN_CHALLENGE = SMSChallenge(
    purpose=SMSPurpose.SIGN_IN, code_hash=SMS_HASH, phone=PHONE, expires_at=NOW + 600
)
PHONE_CHALLENGE = SMSChallenge(
    purpose=SMSPurpose.PHONE, code_hash=SMS_HASH, phone=OTHER_PHONE, expires_at=NOW + 600
)
# Stand-ins for the keyed hashes of two sessions' nonces a pending set-up is bound to.
BINDING = "c" * 32
OTHER_BINDING = "d" * 32
# What WebAuthn registers of a passkey: a credential id (up to 1023 bytes), a COSE key.
CREDENTIAL = bytes(range(64))
OTHER_CREDENTIAL = bytes(range(64, 128))
PUBLIC_KEY = b"\xa5\x01\x02\x03&" + bytes(77)
# Stand-ins for the hashes of WebAuthn challenges.
CHALLENGE_HASH = "e" * 64
OTHER_CHALLENGE_HASH = "f" * 64
CHALLENGE_LIFETIME = 300


def app_id(user_id: str, n: int = 1) -> str:
    """The id :func:`enrol` gives a user's ``n``-th app (ids are unique across users)."""
    return f"app{n}-{user_id}"


def app(
    authenticator_id: str,
    *,
    secret: str = PENDING,
    step: int | None = STEP,
    created_at: float = NOW,
    name: str = "Phone",
) -> Authenticator:
    """An authenticator app as the set-up adds it: its secret and the step its first code used."""
    return Authenticator(
        id=authenticator_id,
        kind=FactorKind.TOTP,
        name=name,
        created_at=created_at,
        secret=secret,
        last_step=step,
    )


def key(
    authenticator_id: str,
    *,
    credential_id: bytes = CREDENTIAL,
    sign_count: int = 0,
    created_at: float = NOW,
    name: str = "YubiKey",
) -> Authenticator:
    """A security key (or passkey) as a registration adds it."""
    return Authenticator(
        id=authenticator_id,
        kind=FactorKind.WEBAUTHN,
        name=name,
        created_at=created_at,
        credential_id=credential_id,
        public_key=PUBLIC_KEY,
        sign_count=sign_count,
        transports=("nfc", "usb"),
        aaguid="2fc0579f-8113-47ea-b116-bb5a8db9202a",
        backed_up=False,
    )


def challenge(
    challenge_hash: str = CHALLENGE_HASH,
    *,
    purpose: CeremonyPurpose = CeremonyPurpose.SIGN_IN,
    binding: str = BINDING,
    expires_at: float = NOW + CHALLENGE_LIFETIME,
) -> WebAuthnChallenge:
    return WebAuthnChallenge(
        purpose=purpose, challenge_hash=challenge_hash, binding=binding, expires_at=expires_at
    )


async def enrol(
    store: MFAStore,
    user_id: str,
    *,
    pending: str = PENDING,
    step: int = STEP,
    recovery: RecoveryCodeSet = RECOVERY,
) -> int:
    """Begin an app's set-up and add it as the user's first factor, as the set-up page does
    (its id :func:`app_id`); the new epoch."""
    await store.begin_enrolment(user_id, pending)
    epoch = await store.add_authenticator(
        user_id,
        app(app_id(user_id), secret=pending, step=step),
        now=NOW,
        recovery=recovery,
        pending_secret=pending,
    )
    assert epoch is not None
    return epoch


async def current(store: MFAStore, user_id: str) -> Enrolment:
    enrolment = await store.get(user_id)
    assert enrolment is not None
    return enrolment


def hashes_of(enrolment: Enrolment) -> set[str]:
    return set() if enrolment.recovery is None else set(enrolment.recovery.hashes)


class MFAStoreContract:
    """Scenarios an MFA store must pass; subclasses provide the ``store`` fixture."""

    async def test_an_unknown_user_is_not_enrolled_at_epoch_0(self, store: MFAStore) -> None:
        assert await store.summary("alice") == EnrolmentSummary(enrolled=False, epoch=0)
        assert await store.get("alice") is None

    # -- setting up an app, the first factor -----------------------------------------------

    async def test_beginning_an_enrolment_keeps_the_secret_pending(self, store: MFAStore) -> None:
        await store.begin_enrolment("alice", PENDING)

        enrolment = await current(store, "alice")
        assert enrolment.user_id == "alice"
        assert enrolment.pending_secret == PENDING
        assert enrolment.authenticators == ()
        assert not enrolment.enrolled
        assert enrolment.recovery_codes_left == 0
        assert await store.summary("alice") == EnrolmentSummary(enrolled=False, epoch=0)

    async def test_a_pending_secret_keeps_the_binding_of_its_session(self, store: MFAStore) -> None:
        await store.begin_enrolment("alice", PENDING, binding=BINDING)
        assert (await current(store, "alice")).pending_binding == BINDING

        # The newest set-up wins, with its own session's binding.
        await store.begin_enrolment("alice", OTHER_PENDING, binding=OTHER_BINDING)
        enrolment = await current(store, "alice")
        assert (enrolment.pending_secret, enrolment.pending_binding) == (
            OTHER_PENDING,
            OTHER_BINDING,
        )
        # Key rotation re-seals the secret and leaves the binding as it is.
        [stored] = await store.stored_secrets(None, 10)
        assert await store.replace_secrets(stored, StoredSecrets("alice", ROTATED))
        assert (await current(store, "alice")).pending_binding == OTHER_BINDING
        # Added, nothing is pending any more, the binding included.
        added = await store.add_authenticator(
            "alice",
            app("a1", secret=ROTATED),
            now=NOW,
            recovery=RECOVERY,
            pending_secret=ROTATED,
        )
        assert added == 1
        enrolment = await current(store, "alice")
        assert (enrolment.pending_secret, enrolment.pending_binding) == (None, None)
        # A set-up begun without a binding is no session's.
        await store.begin_enrolment("bob", PENDING)
        assert (await current(store, "bob")).pending_binding is None

    async def test_beginning_again_replaces_the_pending_secret(self, store: MFAStore) -> None:
        await store.begin_enrolment("alice", PENDING)
        await store.begin_enrolment("alice", OTHER_PENDING)

        assert (await current(store, "alice")).pending_secret == OTHER_PENDING
        stale = await store.add_authenticator(
            "alice", app("a1"), now=NOW, recovery=RECOVERY, pending_secret=PENDING
        )
        assert stale is None
        assert (await current(store, "alice")).authenticators == ()

    async def test_adding_an_app_without_beginning_fails(self, store: MFAStore) -> None:
        added = await store.add_authenticator(
            "alice", app("a1"), now=NOW, recovery=RECOVERY, pending_secret=PENDING
        )

        assert added is None
        assert (await store.summary("alice")).enrolled is False

    async def test_adding_another_pending_secret_fails(self, store: MFAStore) -> None:
        await store.begin_enrolment("alice", PENDING)

        added = await store.add_authenticator(
            "alice",
            app("a1", secret=OTHER_PENDING),
            now=NOW,
            recovery=RECOVERY,
            pending_secret=OTHER_PENDING,
        )

        assert added is None
        enrolment = await current(store, "alice")
        assert not enrolment.enrolled
        assert enrolment.pending_secret == PENDING
        assert enrolment.epoch == 0
        assert enrolment.recovery is None

    async def test_adding_the_first_app_enrols_the_user_and_bumps_the_epoch(
        self, store: MFAStore
    ) -> None:
        await store.begin_enrolment("alice", PENDING, binding=BINDING)
        added = app("a1", name="Work phone")

        epoch = await store.add_authenticator(
            "alice", added, now=NOW + 7, recovery=RECOVERY, pending_secret=PENDING
        )

        assert epoch == 1
        enrolment = await current(store, "alice")
        assert enrolment.enrolled
        assert enrolment.epoch == 1
        assert enrolment.authenticators == (added,)
        assert enrolment.apps == (added,)
        assert enrolment.keys == ()
        assert enrolment.authenticator("a1") == added
        assert (enrolment.pending_secret, enrolment.pending_binding) == (None, None)
        assert enrolment.confirmed_at == NOW + 7
        assert enrolment.recovery is not None
        assert enrolment.recovery.salt == RECOVERY.salt
        assert enrolment.recovery.params == RECOVERY.params
        assert sorted(enrolment.recovery.hashes) == sorted(RECOVERY.hashes)
        assert await store.summary("alice") == EnrolmentSummary(enrolled=True, epoch=1)

    async def test_a_first_factor_needs_the_recovery_codes(self, store: MFAStore) -> None:
        await store.begin_enrolment("alice", PENDING)

        assert (
            await store.add_authenticator("alice", app("a1"), now=NOW, pending_secret=PENDING)
            is None
        )
        assert await store.add_authenticator("alice", key("k1"), now=NOW) is None
        assert (
            await store.add_authenticator("bob", key("k2", credential_id=OTHER_CREDENTIAL), now=NOW)
            is None
        )

        enrolment = await current(store, "alice")
        assert (enrolment.enrolled, enrolment.epoch, enrolment.pending_secret) == (
            False,
            0,
            PENDING,
        )
        assert enrolment.recovery is None
        assert await store.get("bob") is None
        # Nothing was kept of the refused ones: their ids and credential are free.
        assert await store.add_authenticator("bob", key("k1"), now=NOW, recovery=RECOVERY) == 1

    async def test_a_passkey_can_be_the_first_factor_of_a_user_never_seen(
        self, store: MFAStore
    ) -> None:
        passkey = key("k1", sign_count=3)

        epoch = await store.add_authenticator("alice", passkey, now=NOW, recovery=RECOVERY)

        assert epoch == 1
        enrolment = await current(store, "alice")
        assert enrolment.authenticators == (passkey,)
        assert enrolment.keys == (passkey,)
        assert (enrolment.confirmed_at, enrolment.pending_secret) == (NOW, None)
        assert hashes_of(enrolment) == set(RECOVERY.hashes)
        assert await store.summary("alice") == EnrolmentSummary(enrolled=True, epoch=1)

    async def test_an_authenticator_is_kept_as_given(self, store: MFAStore) -> None:
        """Every field comes back as it went in: bytes, the transports, the flags."""
        synced = dataclasses.replace(
            key("k1", credential_id=bytes(range(256)) * 3 + bytes(255), sign_count=2**32 - 1),
            transports=("hybrid", "internal"),
            backed_up=True,
            last_used_at=NOW - 5,
        )
        bare = dataclasses.replace(
            key("k2", credential_id=b"\x00"), transports=(), aaguid=None, public_key=b"\x01"
        )
        unused_app = app("a1", step=None, created_at=NOW + 2)

        assert len(synced.credential_id or b"") == 1023
        assert await store.add_authenticator("alice", synced, now=NOW, recovery=RECOVERY) == 1
        assert await store.add_authenticator("alice", bare, now=NOW) == 2
        await store.begin_enrolment("alice", PENDING)
        assert (
            await store.add_authenticator("alice", unused_app, now=NOW, pending_secret=PENDING) == 3
        )

        enrolment = await current(store, "alice")
        assert enrolment.authenticators == (synced, bare, unused_app)
        assert enrolment.kinds == (FactorKind.TOTP, FactorKind.WEBAUTHN)

    async def test_a_pending_secret_is_added_only_once(self, store: MFAStore) -> None:
        await enrol(store, "alice")

        again = await store.add_authenticator(
            "alice", app("a2"), now=NOW + 30, recovery=NEW_RECOVERY, pending_secret=PENDING
        )

        assert again is None
        enrolment = await current(store, "alice")
        assert enrolment.epoch == 1
        assert [a.id for a in enrolment.authenticators] == [app_id("alice")]
        assert hashes_of(enrolment) == set(RECOVERY.hashes)

    async def test_an_enrolled_user_adds_another_app_and_keeps_the_codes(
        self, store: MFAStore
    ) -> None:
        await enrol(store, "alice")

        await store.begin_enrolment("alice", OTHER_PENDING, binding=BINDING)

        # Beginning changes nothing of what the user has.
        enrolment = await current(store, "alice")
        assert enrolment.enrolled
        assert [a.secret for a in enrolment.apps] == [PENDING]
        assert (enrolment.epoch, enrolment.apps[0].last_step) == (1, STEP)
        # Added, the new app sits beside the first; codes given with it are ignored.
        second = app("a2", secret=OTHER_PENDING, step=STEP + 4, created_at=NOW + 60)
        epoch = await store.add_authenticator(
            "alice", second, now=NOW + 60, recovery=NEW_RECOVERY, pending_secret=OTHER_PENDING
        )
        assert epoch == 2
        enrolment = await current(store, "alice")
        assert [a.id for a in enrolment.apps] == [app_id("alice"), "a2"]
        assert enrolment.authenticator("a2") == second
        assert hashes_of(enrolment) == set(RECOVERY.hashes)
        assert enrolment.recovery is not None
        assert enrolment.recovery.salt == RECOVERY.salt
        assert enrolment.confirmed_at == NOW
        assert (enrolment.pending_secret, enrolment.pending_binding) == (None, None)

    async def test_concurrent_adds_of_one_pending_secret_add_it_once(self, store: MFAStore) -> None:
        await store.begin_enrolment("alice", PENDING)

        results = await asyncio.gather(
            *(
                store.add_authenticator(
                    "alice", app(f"a{n}"), now=NOW, recovery=RECOVERY, pending_secret=PENDING
                )
                for n in range(CONCURRENT_REQUESTS)
            )
        )

        assert [r for r in results if r is not None] == [1]
        assert len((await current(store, "alice")).authenticators) == 1
        assert await store.summary("alice") == EnrolmentSummary(enrolled=True, epoch=1)

    async def test_adding_at_an_expected_epoch_is_a_compare_and_set(self, store: MFAStore) -> None:
        epoch = await enrol(store, "alice")
        await store.revoke_sessions("alice")  # another session moved the epoch meanwhile

        stale = await store.add_authenticator("alice", key("k1"), now=NOW, expected_epoch=epoch)

        assert stale is None
        assert [a.id for a in (await current(store, "alice")).authenticators] == [app_id("alice")]
        assert (
            await store.add_authenticator("alice", key("k1"), now=NOW, expected_epoch=epoch + 1)
            == epoch + 2
        )
        # A user the store has never seen is at epoch 0.
        assert (
            await store.add_authenticator(
                "bob",
                key("k2", credential_id=OTHER_CREDENTIAL),
                now=NOW,
                recovery=RECOVERY,
                expected_epoch=1,
            )
            is None
        )
        assert (
            await store.add_authenticator(
                "bob",
                key("k2", credential_id=OTHER_CREDENTIAL),
                now=NOW,
                recovery=RECOVERY,
                expected_epoch=0,
            )
            == 1
        )

    async def test_a_credential_registers_once_for_anyone(self, store: MFAStore) -> None:
        assert await store.add_authenticator("alice", key("k1"), now=NOW, recovery=RECOVERY) == 1
        await store.begin_enrolment("bob", PENDING, binding=BINDING)

        # The same credential again, under another id: for the same user, or another.
        assert await store.add_authenticator("alice", key("k2"), now=NOW) is None
        assert await store.add_authenticator("bob", key("k3"), now=NOW, recovery=RECOVERY) is None
        # The same id again, for another credential or an app.
        assert (
            await store.add_authenticator(
                "alice", key("k1", credential_id=OTHER_CREDENTIAL), now=NOW
            )
            is None
        )
        assert (
            await store.add_authenticator(
                "bob", app("k1"), now=NOW, recovery=RECOVERY, pending_secret=PENDING
            )
            is None
        )

        assert [a.id for a in (await current(store, "alice")).authenticators] == ["k1"]
        assert (await store.summary("alice")).epoch == 1
        bob = await current(store, "bob")
        assert (bob.enrolled, bob.epoch, bob.pending_secret, bob.recovery) == (
            False,
            0,
            PENDING,
            None,
        )

    async def test_concurrent_registrations_of_one_credential_land_once(
        self, store: MFAStore
    ) -> None:
        users = [f"user{n}" for n in range(10)]

        results = await asyncio.gather(
            *(
                store.add_authenticator(user, key(f"k-{user}"), now=NOW, recovery=RECOVERY)
                for user in users
            )
        )

        assert sorted(results, key=lambda r: r is None) == [1] + [None] * 9
        statuses = await store.statuses(users)
        assert sum(status.enrolled for status in statuses.values()) == 1

    async def test_adding_a_factor_drops_a_pending_sms_code_and_challenges(
        self, store: MFAStore
    ) -> None:
        await enrol(store, "alice")
        await store.start_sms_challenge("alice", SIGN_IN_CHALLENGE)
        await store.start_webauthn_challenge(
            "alice", challenge(purpose=CeremonyPurpose.REGISTER), NOW
        )

        assert await store.add_authenticator("alice", key("k1"), now=NOW) == 2

        assert (await current(store, "alice")).sms_challenge is None
        assert not await store.consume_webauthn_challenge(
            "alice", CeremonyPurpose.REGISTER, CHALLENGE_HASH, BINDING, NOW
        )

    # -- accepting a step (apps) -------------------------------------------------------------

    async def test_a_newer_step_is_accepted_once(self, store: MFAStore) -> None:
        await enrol(store, "alice")
        alice_app = app_id("alice")

        assert await store.accept_step("alice", alice_app, STEP + 1, NOW + 30) is True
        assert await store.accept_step("alice", alice_app, STEP + 1, NOW + 31) is False
        assert await store.accept_step("alice", alice_app, STEP, NOW + 32) is False
        assert await store.accept_step("alice", alice_app, STEP - 10, NOW + 33) is False
        used = (await current(store, "alice")).authenticator(alice_app)
        assert used is not None
        # The refused ones left no trace: the last use is the accepted one's.
        assert (used.last_step, used.last_used_at) == (STEP + 1, NOW + 30)
        assert await store.accept_step("alice", alice_app, STEP + 3, NOW + 90) is True
        used = (await current(store, "alice")).authenticator(alice_app)
        assert used is not None
        assert (used.last_step, used.last_used_at) == (STEP + 3, NOW + 90)
        # Nothing else moved: the epoch stays.
        assert (await store.summary("alice")).epoch == 1

    async def test_the_code_that_added_an_app_cannot_be_replayed(self, store: MFAStore) -> None:
        await enrol(store, "alice", step=STEP)

        assert await store.accept_step("alice", app_id("alice"), STEP, NOW) is False

    async def test_an_app_without_a_step_accepts_its_first(self, store: MFAStore) -> None:
        await store.begin_enrolment("alice", PENDING)
        await store.add_authenticator(
            "alice", app("a1", step=None), now=NOW, recovery=RECOVERY, pending_secret=PENDING
        )

        assert await store.accept_step("alice", "a1", 1, NOW) is True
        assert await store.accept_step("alice", "a1", 1, NOW) is False

    async def test_no_step_is_accepted_without_an_app_of_the_user(self, store: MFAStore) -> None:
        await store.begin_enrolment("bob", PENDING)
        await enrol(store, "carol")
        await store.add_authenticator("carol", key("k1"), now=NOW)

        assert await store.accept_step("alice", app_id("alice"), STEP + 1, NOW) is False
        assert await store.accept_step("bob", app_id("bob"), STEP + 1, NOW) is False
        # Another user's app, a passkey, an id that is no one's.
        assert await store.accept_step("bob", app_id("carol"), STEP + 1, NOW) is False
        assert await store.accept_step("carol", "k1", STEP + 1, NOW) is False
        assert await store.accept_step("carol", "nope", STEP + 1, NOW) is False
        assert await store.get("alice") is None
        carol = await current(store, "carol")
        assert [(a.last_step, a.last_used_at) for a in carol.authenticators] == [
            (STEP, None),
            (None, None),
        ]

    async def test_each_app_refuses_its_own_replays(self, store: MFAStore) -> None:
        await enrol(store, "alice")
        await store.begin_enrolment("alice", OTHER_PENDING)
        await store.add_authenticator(
            "alice",
            app("a2", secret=OTHER_PENDING, step=STEP - 5, created_at=NOW + 1),
            now=NOW,
            pending_secret=OTHER_PENDING,
        )

        # One step, once on each app.
        assert await store.accept_step("alice", app_id("alice"), STEP + 1, NOW) is True
        assert await store.accept_step("alice", "a2", STEP + 1, NOW) is True
        assert await store.accept_step("alice", app_id("alice"), STEP + 1, NOW) is False
        assert await store.accept_step("alice", "a2", STEP + 1, NOW) is False
        # A step one app has passed is still new to the other.
        assert await store.accept_step("alice", "a2", STEP + 3, NOW) is True
        assert await store.accept_step("alice", app_id("alice"), STEP + 2, NOW) is True
        steps = [a.last_step for a in (await current(store, "alice")).apps]
        assert steps == [STEP + 2, STEP + 3]

    async def test_concurrent_replays_of_one_step_succeed_once(self, store: MFAStore) -> None:
        await enrol(store, "alice")

        results = await asyncio.gather(
            *(
                store.accept_step("alice", app_id("alice"), STEP + 1, NOW)
                for _ in range(CONCURRENT_REQUESTS)
            )
        )

        assert results.count(True) == 1
        assert (await current(store, "alice")).apps[0].last_step == STEP + 1

    # -- accepting an assertion (passkeys and security keys) --------------------------------

    async def test_a_counter_that_does_not_count_is_accepted_each_time(
        self, store: MFAStore
    ) -> None:
        await store.add_authenticator("alice", key("k1"), now=NOW, recovery=RECOVERY)

        assert await store.accept_assertion("alice", "k1", 0, NOW + 1) is True
        assert await store.accept_assertion("alice", "k1", 0, NOW + 2) is True

        used = (await current(store, "alice")).authenticator("k1")
        assert used is not None
        assert (used.sign_count, used.last_used_at) == (0, NOW + 2)

    async def test_a_counter_must_go_up(self, store: MFAStore) -> None:
        await store.add_authenticator("alice", key("k1"), now=NOW, recovery=RECOVERY)

        assert await store.accept_assertion("alice", "k1", 5, NOW + 1) is True
        # Standing still, going back, or back to 0: a cloned authenticator.
        for refused in (5, 3, 0):
            assert await store.accept_assertion("alice", "k1", refused, NOW + 2) is False
        used = (await current(store, "alice")).authenticator("k1")
        assert used is not None
        assert (used.sign_count, used.last_used_at) == (5, NOW + 1)
        assert await store.accept_assertion("alice", "k1", 6, NOW + 3) is True
        assert await store.accept_assertion("alice", "k1", 2**32 - 1, NOW + 4) is True
        used = (await current(store, "alice")).authenticator("k1")
        assert used is not None
        assert (used.sign_count, used.last_used_at) == (2**32 - 1, NOW + 4)

    async def test_a_counter_registered_above_0_must_go_above_it(self, store: MFAStore) -> None:
        await store.add_authenticator("alice", key("k1", sign_count=10), now=NOW, recovery=RECOVERY)

        assert await store.accept_assertion("alice", "k1", 0, NOW) is False
        assert await store.accept_assertion("alice", "k1", 10, NOW) is False
        assert await store.accept_assertion("alice", "k1", 11, NOW) is True

    async def test_no_assertion_is_accepted_without_a_key_of_the_user(
        self, store: MFAStore
    ) -> None:
        await enrol(store, "alice")
        await store.add_authenticator("bob", key("k1"), now=NOW, recovery=RECOVERY)

        assert await store.accept_assertion("alice", app_id("alice"), 1, NOW) is False
        assert await store.accept_assertion("alice", "k1", 1, NOW) is False
        assert await store.accept_assertion("alice", "nope", 1, NOW) is False
        assert await store.accept_assertion("carol", "k1", 1, NOW) is False

        bob_key = (await current(store, "bob")).authenticator("k1")
        assert bob_key is not None
        assert (bob_key.sign_count, bob_key.last_used_at) == (0, None)
        alice_app = (await current(store, "alice")).apps[0]
        assert (alice_app.sign_count, alice_app.last_step) == (0, STEP)

    async def test_concurrent_assertions_with_one_counter_succeed_once(
        self, store: MFAStore
    ) -> None:
        await store.add_authenticator("alice", key("k1", sign_count=7), now=NOW, recovery=RECOVERY)

        results = await asyncio.gather(
            *(store.accept_assertion("alice", "k1", 8, NOW) for _ in range(CONCURRENT_REQUESTS))
        )

        assert results.count(True) == 1
        used = (await current(store, "alice")).authenticator("k1")
        assert used is not None
        assert used.sign_count == 8

    # -- renaming and removing ---------------------------------------------------------------

    async def test_an_authenticator_is_renamed(self, store: MFAStore) -> None:
        await enrol(store, "alice")
        await store.add_authenticator("alice", key("k1"), now=NOW)

        assert await store.rename_authenticator("alice", "k1", "Blue key") is True
        assert await store.rename_authenticator("alice", app_id("alice"), "Old phone") is True
        # The same name again is a rename that changes nothing, not a refusal.
        assert await store.rename_authenticator("alice", "k1", "Blue key") is True

        enrolment = await current(store, "alice")
        assert [a.name for a in enrolment.authenticators] == ["Old phone", "Blue key"]
        # A new name is no new factor: sessions stay verified.
        assert enrolment.epoch == 2

    async def test_only_the_users_own_authenticator_is_renamed(self, store: MFAStore) -> None:
        await enrol(store, "alice")
        await enrol(store, "bob")

        assert await store.rename_authenticator("alice", app_id("bob"), "Mine now") is False
        assert await store.rename_authenticator("alice", "nope", "Nothing") is False
        assert await store.rename_authenticator("carol", app_id("bob"), "Nothing") is False

        assert (await current(store, "bob")).apps[0].name == "Phone"

    async def test_removing_an_authenticator_bumps_the_epoch_and_voids_what_was_pending(
        self, store: MFAStore
    ) -> None:
        await enrol(store, "alice")
        await store.add_authenticator("alice", key("k1"), now=NOW)
        await store.begin_enrolment("alice", OTHER_PENDING, binding=BINDING)
        await store.start_sms_challenge("alice", SIGN_IN_CHALLENGE)
        await store.start_webauthn_challenge("alice", challenge(), NOW)

        epoch = await store.remove_authenticator("alice", app_id("alice"))

        assert epoch == 3
        enrolment = await current(store, "alice")
        assert [a.id for a in enrolment.authenticators] == ["k1"]
        assert enrolment.kinds == (FactorKind.WEBAUTHN,)
        assert (enrolment.pending_secret, enrolment.pending_binding) == (None, None)
        assert enrolment.sms_challenge is None
        assert not await store.consume_webauthn_challenge(
            "alice", CeremonyPurpose.SIGN_IN, CHALLENGE_HASH, BINDING, NOW
        )
        # The codes and the first factor's time stay; the removed app takes no step.
        assert hashes_of(enrolment) == set(RECOVERY.hashes)
        assert enrolment.confirmed_at == NOW
        assert await store.summary("alice") == EnrolmentSummary(enrolled=True, epoch=3)
        assert await store.accept_step("alice", app_id("alice"), STEP + 1, NOW) is False
        assert await store.remove_authenticator("alice", app_id("alice")) is None

    async def test_the_last_authenticator_is_not_removed(self, store: MFAStore) -> None:
        await enrol(store, "alice")
        await store.begin_enrolment("alice", OTHER_PENDING)

        assert await store.remove_authenticator("alice", app_id("alice")) is None

        enrolment = await current(store, "alice")
        assert [a.id for a in enrolment.authenticators] == [app_id("alice")]
        assert (enrolment.epoch, enrolment.pending_secret) == (1, OTHER_PENDING)

    async def test_only_the_users_own_authenticator_is_removed(self, store: MFAStore) -> None:
        await enrol(store, "alice")
        await store.add_authenticator("alice", key("k1"), now=NOW)
        await enrol(store, "bob")
        await store.add_authenticator("bob", key("k2", credential_id=OTHER_CREDENTIAL), now=NOW)

        assert await store.remove_authenticator("alice", "k2") is None
        assert await store.remove_authenticator("alice", "nope") is None
        assert await store.remove_authenticator("carol", "k2") is None

        bob = await current(store, "bob")
        assert ([a.id for a in bob.authenticators], bob.epoch) == ([app_id("bob"), "k2"], 2)
        assert (await store.summary("alice")).epoch == 2
        assert await store.get("carol") is None

    async def test_removing_at_an_expected_epoch_is_a_compare_and_set(
        self, store: MFAStore
    ) -> None:
        await enrol(store, "alice")
        epoch = await store.add_authenticator("alice", key("k1"), now=NOW)
        assert epoch == 2

        assert await store.remove_authenticator("alice", "k1", expected_epoch=1) is None
        assert len((await current(store, "alice")).authenticators) == 2
        assert await store.remove_authenticator("alice", "k1", expected_epoch=2) == 3

    async def test_concurrent_removals_leave_the_last_authenticator(self, store: MFAStore) -> None:
        await enrol(store, "alice")
        await store.add_authenticator("alice", key("k1"), now=NOW)

        results = await asyncio.gather(
            *(
                store.remove_authenticator("alice", authenticator_id)
                for _ in range(10)
                for authenticator_id in (app_id("alice"), "k1")
            )
        )

        assert [r for r in results if r is not None] == [3]
        enrolment = await current(store, "alice")
        assert len(enrolment.authenticators) == 1
        assert await store.summary("alice") == EnrolmentSummary(enrolled=True, epoch=3)

    # -- WebAuthn challenges -----------------------------------------------------------------

    async def test_a_webauthn_challenge_is_answered_once(self, store: MFAStore) -> None:
        await store.start_webauthn_challenge("alice", challenge(), NOW)

        answer = ("alice", CeremonyPurpose.SIGN_IN, CHALLENGE_HASH, BINDING, NOW + 1)
        assert await store.consume_webauthn_challenge(*answer) is True
        assert await store.consume_webauthn_challenge(*answer) is False

    async def test_a_webauthn_challenge_waits_for_a_user_not_enrolled(
        self, store: MFAStore
    ) -> None:
        registering = challenge(purpose=CeremonyPurpose.REGISTER)

        await store.start_webauthn_challenge("alice", registering, NOW)

        assert await store.summary("alice") == EnrolmentSummary(enrolled=False, epoch=0)
        assert await store.consume_webauthn_challenge(
            "alice", CeremonyPurpose.REGISTER, CHALLENGE_HASH, BINDING, NOW
        )

    async def test_a_webauthn_challenge_expires_at_its_deadline(self, store: MFAStore) -> None:
        deadline = NOW + CHALLENGE_LIFETIME
        await store.start_webauthn_challenge("alice", challenge(), NOW)
        await store.start_webauthn_challenge("bob", challenge(OTHER_CHALLENGE_HASH), NOW)

        assert not await store.consume_webauthn_challenge(
            "alice", CeremonyPurpose.SIGN_IN, CHALLENGE_HASH, BINDING, deadline
        )
        assert await store.consume_webauthn_challenge(
            "bob", CeremonyPurpose.SIGN_IN, OTHER_CHALLENGE_HASH, BINDING, deadline - 1
        )
        # Expired, it is gone for good, even to a clock that goes back.
        assert not await store.consume_webauthn_challenge(
            "alice", CeremonyPurpose.SIGN_IN, CHALLENGE_HASH, BINDING, NOW
        )

    async def test_a_webauthn_challenge_is_answered_only_as_it_was_asked(
        self, store: MFAStore
    ) -> None:
        await store.start_webauthn_challenge("alice", challenge(), NOW)

        # Another purpose, session, user or challenge: refused, and the challenge waits on.
        for wrong in (
            ("alice", CeremonyPurpose.REGISTER, CHALLENGE_HASH, BINDING),
            ("alice", CeremonyPurpose.SIGN_IN, CHALLENGE_HASH, OTHER_BINDING),
            ("bob", CeremonyPurpose.SIGN_IN, CHALLENGE_HASH, BINDING),
            ("alice", CeremonyPurpose.SIGN_IN, OTHER_CHALLENGE_HASH, BINDING),
        ):
            assert await store.consume_webauthn_challenge(*wrong, NOW) is False
        assert await store.consume_webauthn_challenge(
            "alice", CeremonyPurpose.SIGN_IN, CHALLENGE_HASH, BINDING, NOW
        )

    async def test_a_new_challenge_replaces_the_sessions_own_of_that_purpose(
        self, store: MFAStore
    ) -> None:
        await store.start_webauthn_challenge("alice", challenge("1" * 64), NOW)
        # Another session's, and the same session's for the other purpose.
        await store.start_webauthn_challenge(
            "alice", challenge("2" * 64, binding=OTHER_BINDING), NOW
        )
        await store.start_webauthn_challenge(
            "alice", challenge("3" * 64, purpose=CeremonyPurpose.REGISTER), NOW
        )

        await store.start_webauthn_challenge("alice", challenge("4" * 64), NOW + 10)

        sign_in = CeremonyPurpose.SIGN_IN
        assert not await store.consume_webauthn_challenge("alice", sign_in, "1" * 64, BINDING, NOW)
        assert await store.consume_webauthn_challenge("alice", sign_in, "4" * 64, BINDING, NOW)
        assert await store.consume_webauthn_challenge(
            "alice", sign_in, "2" * 64, OTHER_BINDING, NOW
        )
        assert await store.consume_webauthn_challenge(
            "alice", CeremonyPurpose.REGISTER, "3" * 64, BINDING, NOW
        )

    async def test_starting_a_challenge_drops_the_users_expired_ones_only(
        self, store: MFAStore
    ) -> None:
        await store.start_webauthn_challenge("alice", challenge("1" * 64, expires_at=NOW + 10), NOW)
        await store.start_webauthn_challenge(
            "alice", challenge("2" * 64, binding=OTHER_BINDING, expires_at=NOW + 100), NOW
        )
        await store.start_webauthn_challenge("bob", challenge("3" * 64, expires_at=NOW + 10), NOW)

        third = challenge("5" * 64, purpose=CeremonyPurpose.REGISTER, expires_at=NOW + 200)
        await store.start_webauthn_challenge("alice", third, NOW + 50)

        sign_in = CeremonyPurpose.SIGN_IN
        # Alice's unexpired challenge of another session, and Bob's, wait on.
        assert await store.consume_webauthn_challenge(
            "alice", sign_in, "2" * 64, OTHER_BINDING, NOW + 60
        )
        assert await store.consume_webauthn_challenge("bob", sign_in, "3" * 64, BINDING, NOW + 5)
        assert not await store.consume_webauthn_challenge(
            "alice", sign_in, "1" * 64, BINDING, NOW + 5
        )

    async def test_every_epoch_bump_drops_the_webauthn_challenges(self, store: MFAStore) -> None:
        await enrol(store, "alice")
        await store.add_authenticator("alice", key("k1"), now=NOW)
        bumps: dict[str, Callable[[], Awaitable[object]]] = {
            "revoke_sessions": lambda: store.revoke_sessions("alice"),
            "set_phone": lambda: store.set_phone("alice", PHONE, NOW),
            "add_authenticator": lambda: store.add_authenticator(
                "alice", key("k2", credential_id=OTHER_CREDENTIAL), now=NOW
            ),
            "remove_authenticator": lambda: store.remove_authenticator("alice", "k2"),
            "disable": lambda: store.disable("alice"),
        }
        for name, bump in bumps.items():
            await store.start_webauthn_challenge("alice", challenge(), NOW)
            await store.start_webauthn_challenge("bob", challenge(OTHER_CHALLENGE_HASH), NOW)
            assert await bump() is not None, name
            assert not await store.consume_webauthn_challenge(
                "alice", CeremonyPurpose.SIGN_IN, CHALLENGE_HASH, BINDING, NOW
            ), name
            # Another user's stays.
            assert await store.consume_webauthn_challenge(
                "bob", CeremonyPurpose.SIGN_IN, OTHER_CHALLENGE_HASH, BINDING, NOW
            ), name

    async def test_concurrent_answers_to_one_challenge_succeed_once(self, store: MFAStore) -> None:
        await store.start_webauthn_challenge("alice", challenge(), NOW)

        results = await asyncio.gather(
            *(
                store.consume_webauthn_challenge(
                    "alice", CeremonyPurpose.SIGN_IN, CHALLENGE_HASH, BINDING, NOW
                )
                for _ in range(CONCURRENT_REQUESTS)
            )
        )

        assert results.count(True) == 1

    # -- recovery codes ----------------------------------------------------------------------

    async def test_a_recovery_code_is_used_once(self, store: MFAStore) -> None:
        await enrol(store, "alice")

        assert await store.use_recovery_code("alice", "h2") is True
        assert await store.use_recovery_code("alice", "h2") is False

        enrolment = await current(store, "alice")
        assert hashes_of(enrolment) == {"h1", "h3", "h4"}
        assert enrolment.recovery_codes_left == 3
        assert enrolment.enrolled

    async def test_the_last_recovery_code_can_be_used(self, store: MFAStore) -> None:
        await enrol(store, "alice", recovery=RecoveryCodeSet(salt="c2FsdA==", hashes=("h1",)))

        assert await store.use_recovery_code("alice", "h1") is True

        enrolment = await current(store, "alice")
        assert enrolment.recovery_codes_left == 0
        assert enrolment.enrolled

    async def test_concurrent_uses_of_one_recovery_code_succeed_once(self, store: MFAStore) -> None:
        await enrol(store, "alice")

        results = await asyncio.gather(
            *(store.use_recovery_code("alice", "h1") for _ in range(CONCURRENT_REQUESTS))
        )

        assert results.count(True) == 1
        assert hashes_of(await current(store, "alice")) == {"h2", "h3", "h4"}

    async def test_an_unknown_recovery_code_is_refused(self, store: MFAStore) -> None:
        await enrol(store, "alice")

        assert await store.use_recovery_code("alice", "nope") is False
        assert await store.use_recovery_code("nobody", "h1") is False
        assert (await current(store, "alice")).recovery_codes_left == len(RECOVERY.hashes)

    async def test_replacing_recovery_codes_drops_the_old_ones(self, store: MFAStore) -> None:
        await enrol(store, "alice")
        await store.use_recovery_code("alice", "h1")

        assert await store.replace_recovery_codes("alice", NEW_RECOVERY) is True

        enrolment = await current(store, "alice")
        assert enrolment.recovery is not None
        assert enrolment.recovery.salt == NEW_RECOVERY.salt
        assert enrolment.recovery.params == NEW_RECOVERY.params
        assert hashes_of(enrolment) == set(NEW_RECOVERY.hashes)
        assert await store.use_recovery_code("alice", "h2") is False
        assert await store.use_recovery_code("alice", "n2") is True
        # A new set of codes is not a new factor: sessions stay verified.
        assert enrolment.epoch == 1

    async def test_recovery_codes_need_an_enrolment(self, store: MFAStore) -> None:
        await store.begin_enrolment("bob", PENDING)
        await enrol(store, "carol")
        await store.disable("carol")

        for user in ("alice", "bob", "carol"):
            assert await store.replace_recovery_codes(user, NEW_RECOVERY) is False, user
            assert await store.use_recovery_code(user, "n1") is False, user

        assert await store.get("alice") is None
        for user in ("bob", "carol"):
            enrolment = await current(store, user)
            assert (enrolment.recovery, enrolment.recovery_codes_left) == (None, 0)

    # -- turning 2FA off, revoking sessions --------------------------------------------------

    async def test_disabling_removes_everything_and_bumps_the_epoch(self, store: MFAStore) -> None:
        await enrol(store, "alice")
        await store.add_authenticator("alice", key("k1"), now=NOW)
        await store.begin_enrolment("alice", OTHER_PENDING, binding=BINDING)

        epoch = await store.disable("alice")

        assert epoch == 3
        enrolment = await current(store, "alice")
        assert enrolment.epoch == 3
        assert not enrolment.enrolled
        assert enrolment.authenticators == ()
        assert (enrolment.pending_secret, enrolment.pending_binding) == (None, None)
        assert enrolment.confirmed_at is None
        assert enrolment.recovery_codes_left == 0
        assert await store.summary("alice") == EnrolmentSummary(enrolled=False, epoch=3)
        assert await store.accept_step("alice", app_id("alice"), STEP + 1, NOW) is False
        assert await store.accept_assertion("alice", "k1", 1, NOW) is False
        assert await store.use_recovery_code("alice", "h1") is False
        stale = await store.add_authenticator(
            "alice", app("a2"), now=NOW, recovery=RECOVERY, pending_secret=OTHER_PENDING
        )
        assert stale is None

    async def test_disabling_an_unknown_user_starts_at_epoch_1(self, store: MFAStore) -> None:
        assert await store.disable("alice") == 1

        assert await store.summary("alice") == EnrolmentSummary(enrolled=False, epoch=1)

    async def test_a_disabled_user_can_enrol_again(self, store: MFAStore) -> None:
        await enrol(store, "alice")
        await store.add_authenticator("alice", key("k1"), now=NOW)
        await store.disable("alice")

        # The same ids and credential are free again.
        epoch = await enrol(store, "alice", pending=OTHER_PENDING, recovery=NEW_RECOVERY)
        assert await store.add_authenticator("alice", key("k1"), now=NOW) == epoch + 1

        assert epoch == 4
        enrolment = await current(store, "alice")
        assert enrolment.enrolled
        assert [a.secret for a in enrolment.apps] == [OTHER_PENDING]
        assert hashes_of(enrolment) == set(NEW_RECOVERY.hashes)
        assert await store.accept_step("alice", app_id("alice"), STEP + 1, NOW) is True

    async def test_epochs_strictly_increase(self, store: MFAStore) -> None:
        epochs = [(await store.summary("alice")).epoch]
        for cycle in range(3):
            epochs.append(await enrol(store, "alice", step=STEP + cycle))
            assert (await store.summary("alice")).epoch == epochs[-1]
            epochs.append(await store.disable("alice"))
            assert (await store.summary("alice")).epoch == epochs[-1]
        epochs.append(await store.disable("alice"))

        assert epochs == sorted(set(epochs))

    async def test_revoking_sessions_bumps_the_epoch_and_keeps_the_enrolment(
        self, store: MFAStore
    ) -> None:
        epoch = await enrol(store, "alice")
        await store.add_authenticator("alice", key("k1"), now=NOW)
        before = await store.get("alice")
        assert await store.revoke_sessions("alice") == epoch + 2
        after = await store.get("alice")
        assert before is not None
        assert after is not None
        assert after == dataclasses.replace(before, epoch=epoch + 2)
        assert await store.summary("alice") == EnrolmentSummary(enrolled=True, epoch=epoch + 2)
        # A user the store has never seen starts at epoch 1, not enrolled.
        assert await store.revoke_sessions("bob") == 1
        assert await store.summary("bob") == EnrolmentSummary(enrolled=False, epoch=1)

    async def test_revoking_sessions_voids_a_pending_text_and_set_up(self, store: MFAStore) -> None:
        """A phone change or a set-up in flight dies with the revocation: nothing begun under the
        old epoch completes under the new one."""
        await enrol(store, "alice")
        await store.start_sms_challenge("alice", PHONE_CHALLENGE)
        await store.start_sms_challenge("bob", PHONE_CHALLENGE)
        await store.begin_enrolment("bob", PENDING, binding=BINDING)

        assert await store.revoke_sessions("alice") == 2
        assert await store.revoke_sessions("bob") == 1

        alice = await current(store, "alice")
        assert alice.sms_challenge is None
        assert (alice.enrolled, alice.phone) == (True, None)
        assert [a.secret for a in alice.apps] == [PENDING]
        assert hashes_of(alice) == set(RECOVERY.hashes)
        assert await store.consume_sms_challenge("alice", SMSPurpose.PHONE, SMS_HASH, NOW) is None
        bob = await current(store, "bob")
        assert (bob.sms_challenge, bob.pending_secret, bob.pending_binding) == (None, None, None)
        stale = await store.add_authenticator(
            "bob", app("b1"), now=NOW, recovery=RECOVERY, pending_secret=PENDING
        )
        assert stale is None

    async def test_every_epoch_bump_voids_what_was_pending(self, store: MFAStore) -> None:
        # Enrolling: a phone code asked for before is void.
        await store.start_sms_challenge("alice", PHONE_CHALLENGE)
        await enrol(store, "alice")
        assert (await current(store, "alice")).sms_challenge is None
        # A new phone: a set-up begun before is void.
        await store.begin_enrolment("bob", PENDING, binding=BINDING)
        assert await store.set_phone("bob", PHONE, NOW) == 1
        bob = await current(store, "bob")
        assert (bob.pending_secret, bob.pending_binding, bob.phone) == (None, None, PHONE)
        # Turning 2FA off: both.
        await store.start_sms_challenge("alice", SIGN_IN_CHALLENGE)
        await store.disable("alice")
        await store.begin_enrolment("carol", PENDING, binding=BINDING)
        await store.start_sms_challenge("carol", PHONE_CHALLENGE)
        await store.disable("carol")
        for user in ("alice", "carol"):
            enrolment = await current(store, user)
            assert (enrolment.sms_challenge, enrolment.pending_secret) == (None, None)
            assert enrolment.pending_binding is None

    async def test_setting_the_phone_at_an_expected_epoch_is_a_compare_and_set(
        self, store: MFAStore
    ) -> None:
        epoch = await enrol(store, "alice")
        assert await store.set_phone("alice", PHONE, NOW, expected_epoch=epoch) == epoch + 1
        # Another change (a revocation) moved the epoch since it was read: nothing is written.
        await store.start_webauthn_challenge("alice", challenge(), NOW)
        assert await store.set_phone("alice", OTHER_PHONE, NOW + 5, expected_epoch=epoch) is None
        enrolment = await current(store, "alice")
        assert (enrolment.phone, enrolment.phone_verified_at) == (PHONE, NOW)
        assert enrolment.epoch == epoch + 1
        assert await store.consume_webauthn_challenge(
            "alice", CeremonyPurpose.SIGN_IN, CHALLENGE_HASH, BINDING, NOW
        )
        # Concurrent changes from one epoch: one lands.
        results = await asyncio.gather(
            *(
                store.set_phone("alice", OTHER_PHONE, NOW + 9, expected_epoch=epoch + 1)
                for _ in range(10)
            )
        )
        assert [r for r in results if r is not None] == [epoch + 2]
        assert (await store.summary("alice")).epoch == epoch + 2

    # -- key rotation ------------------------------------------------------------------------

    async def test_stored_secrets_page_through_users_with_a_secret(self, store: MFAStore) -> None:
        for user in ("carol", "alice", "dave"):
            await enrol(store, user)
        await store.begin_enrolment("bob", "bob-pending")  # pending only
        await store.set_phone("erin", PHONE, NOW)  # no secret at all
        await store.add_authenticator("fred", key("k1"), now=NOW, recovery=RECOVERY)  # a key only
        # Alice: a second app, and a third set-up pending.
        await store.begin_enrolment("alice", THIRD_PENDING)
        await store.add_authenticator(
            "alice", app("0-alice", secret=THIRD_PENDING), now=NOW, pending_secret=THIRD_PENDING
        )
        await store.begin_enrolment("alice", FOURTH_PENDING)

        first = await store.stored_secrets(None, 2)

        assert first == [
            StoredSecrets(
                "alice",
                FOURTH_PENDING,
                # Ordered by id.
                (("0-alice", THIRD_PENDING), (app_id("alice"), PENDING)),
            ),
            StoredSecrets("bob", "bob-pending"),
        ]
        rest = await store.stored_secrets(first[-1].user_id, 10)
        assert rest == [
            StoredSecrets("carol", None, ((app_id("carol"), PENDING),)),
            StoredSecrets("dave", None, ((app_id("dave"), PENDING),)),
        ]
        assert await store.stored_secrets("dave", 10) == []

    async def test_replacing_secrets_rewrites_the_pending_one_and_each_app(
        self, store: MFAStore
    ) -> None:
        epoch = await enrol(store, "alice")
        await store.begin_enrolment("alice", OTHER_PENDING)
        second = app("app2-alice", secret=OTHER_PENDING, created_at=NOW + 1)
        await store.add_authenticator("alice", second, now=NOW, pending_secret=OTHER_PENDING)
        await store.begin_enrolment("alice", THIRD_PENDING, binding=BINDING)
        [stored] = await store.stored_secrets(None, 10)

        rotated = StoredSecrets(
            "alice",
            "third-rotated",
            ((app_id("alice"), "first-rotated"), ("app2-alice", "second-rotated")),
        )
        assert await store.replace_secrets(stored, rotated) is True

        enrolment = await current(store, "alice")
        assert [(a.id, a.secret) for a in enrolment.apps] == list(rotated.apps)
        assert (enrolment.pending_secret, enrolment.pending_binding) == ("third-rotated", BINDING)
        assert await store.stored_secrets(None, 10) == [rotated]
        # The same secrets under another key: no new factor, no epoch bump, steps kept.
        assert await store.summary("alice") == EnrolmentSummary(enrolled=True, epoch=epoch + 1)
        assert [a.last_step for a in enrolment.apps] == [STEP, STEP]

    async def test_replacing_secrets_is_a_compare_and_set(self, store: MFAStore) -> None:
        await enrol(store, "alice")
        await store.begin_enrolment("bob", "bob-pending")
        await enrol(store, "carol")
        await enrol(store, "dave")
        await store.add_authenticator("dave", key("k1"), now=NOW)
        [alice, bob, carol, dave] = await store.stored_secrets(None, 10)
        assert await store.replace_secrets(
            alice, StoredSecrets("alice", None, ((app_id("alice"), "rotated"),))
        )
        assert [a.secret for a in (await current(store, "alice")).apps] == ["rotated"]

        # Changed since it was read: nothing is written.
        stale = StoredSecrets("alice", None, ((app_id("alice"), "stale"),))
        assert not await store.replace_secrets(alice, stale)
        await store.begin_enrolment("bob", THIRD_PENDING)
        assert not await store.replace_secrets(bob, StoredSecrets("bob", "stale"))
        assert (await current(store, "bob")).pending_secret == THIRD_PENDING
        # An app came meanwhile (here a pending set-up too), or went.
        await store.begin_enrolment("carol", OTHER_PENDING)
        await store.add_authenticator(
            "carol", app("c2", secret=OTHER_PENDING), now=NOW, pending_secret=OTHER_PENDING
        )
        assert not await store.replace_secrets(
            carol, StoredSecrets("carol", None, ((app_id("carol"), "stale"),))
        )
        await store.remove_authenticator("dave", app_id("dave"))
        assert not await store.replace_secrets(
            dave, StoredSecrets("dave", None, ((app_id("dave"), "stale"),))
        )
        # Nor is a rewrite that names other apps than it read.
        [carol_now] = [s for s in await store.stored_secrets(None, 10) if s.user_id == "carol"]
        assert not await store.replace_secrets(
            carol_now, StoredSecrets("carol", None, ((app_id("carol"), "stale"),))
        )
        carol_apps = (await current(store, "carol")).apps
        assert [a.secret for a in carol_apps] == [PENDING, OTHER_PENDING]
        assert (await current(store, "dave")).apps == ()

    async def test_a_disable_meanwhile_wins_over_a_rotation(self, store: MFAStore) -> None:
        await enrol(store, "alice")
        [stored] = await store.stored_secrets(None, 10)
        await store.disable("alice")

        rotated = StoredSecrets("alice", None, ((app_id("alice"), "rotated"),))
        assert await store.replace_secrets(stored, rotated) is False

        assert (await current(store, "alice")).authenticators == ()
        assert await store.stored_secrets(None, 10) == []

    # -- concurrency, users apart ------------------------------------------------------------

    async def test_concurrent_revocations_each_get_their_own_epoch(self, store: MFAStore) -> None:
        await enrol(store, "alice")
        epochs = await asyncio.gather(*(store.revoke_sessions("alice") for _ in range(20)))
        assert sorted(epochs) == list(range(2, 22))

    async def test_concurrent_disables_each_get_their_own_epoch(self, store: MFAStore) -> None:
        epochs = await asyncio.gather(*(store.disable("alice") for _ in range(20)))

        assert sorted(epochs) == list(range(1, 21))
        assert (await store.summary("alice")).epoch == 20

    async def test_users_do_not_interfere(self, store: MFAStore) -> None:
        await enrol(store, "alice")
        await enrol(store, "bob", pending=OTHER_PENDING)
        await store.add_authenticator("bob", key("k1"), now=NOW)
        await store.begin_enrolment("carol", PENDING)

        assert await store.accept_step("alice", app_id("alice"), STEP + 1, NOW) is True
        assert await store.accept_step("bob", app_id("bob"), STEP + 1, NOW) is True
        assert await store.use_recovery_code("alice", "h1") is True
        assert await store.use_recovery_code("bob", "h1") is True
        await store.disable("alice")

        bob = await current(store, "bob")
        assert bob.enrolled
        assert bob.epoch == 2
        assert [(a.secret, a.last_step) for a in bob.apps] == [(OTHER_PENDING, STEP + 1)]
        assert [a.id for a in bob.keys] == ["k1"]
        assert hashes_of(bob) == {"h2", "h3", "h4"}
        carol = await current(store, "carol")
        assert carol.pending_secret == PENDING
        assert carol.epoch == 0
        assert await store.summary("alice") == EnrolmentSummary(enrolled=False, epoch=2)

    # -- SMS ---------------------------------------------------------------------------------

    async def test_an_sms_challenge_is_consumed_once(self, store: MFAStore) -> None:
        await enrol(store, "alice")
        await store.start_sms_challenge("alice", SIGN_IN_CHALLENGE)

        consumed = await store.consume_sms_challenge("alice", SMSPurpose.SIGN_IN, SMS_HASH, NOW)

        assert consumed == SIGN_IN_CHALLENGE
        assert await store.consume_sms_challenge("alice", SMSPurpose.SIGN_IN, SMS_HASH, NOW) is None
        assert (await current(store, "alice")).sms_challenge is None

    async def test_the_pending_sms_challenge_is_part_of_the_enrolment(
        self, store: MFAStore
    ) -> None:
        await enrol(store, "alice")

        await store.start_sms_challenge("alice", SIGN_IN_CHALLENGE)

        enrolment = await current(store, "alice")
        assert enrolment.sms_challenge == SIGN_IN_CHALLENGE
        # A pending code is not a verified phone, and changes nothing else.
        assert enrolment.phone is None
        assert enrolment.phone_verified_at is None
        assert enrolment.enrolled
        assert enrolment.epoch == 1
        assert await store.summary("alice") == EnrolmentSummary(enrolled=True, epoch=1)

    async def test_an_sms_challenge_can_wait_for_a_user_not_enrolled(self, store: MFAStore) -> None:
        phone_check = SMSChallenge(
            purpose=SMSPurpose.PHONE, code_hash=SMS_HASH, phone=PHONE, expires_at=NOW + 600
        )

        await store.start_sms_challenge("alice", phone_check)

        assert (await current(store, "alice")).sms_challenge == phone_check
        assert await store.summary("alice") == EnrolmentSummary(enrolled=False, epoch=0)
        consumed = await store.consume_sms_challenge("alice", SMSPurpose.PHONE, SMS_HASH, NOW)
        assert consumed == phone_check

    async def test_a_wrong_sms_code_leaves_the_challenge_waiting(self, store: MFAStore) -> None:
        await store.start_sms_challenge("alice", SIGN_IN_CHALLENGE)

        wrong = await store.consume_sms_challenge("alice", SMSPurpose.SIGN_IN, OTHER_SMS_HASH, NOW)

        assert wrong is None
        assert (await current(store, "alice")).sms_challenge == SIGN_IN_CHALLENGE
        right = await store.consume_sms_challenge("alice", SMSPurpose.SIGN_IN, SMS_HASH, NOW)
        assert right == SIGN_IN_CHALLENGE

    async def test_an_sms_code_serves_only_its_purpose(self, store: MFAStore) -> None:
        await store.start_sms_challenge("alice", SIGN_IN_CHALLENGE)

        assert await store.consume_sms_challenge("alice", SMSPurpose.PHONE, SMS_HASH, NOW) is None

        assert (await current(store, "alice")).sms_challenge == SIGN_IN_CHALLENGE

    async def test_an_sms_code_expires_at_its_deadline(self, store: MFAStore) -> None:
        await store.start_sms_challenge("alice", SIGN_IN_CHALLENGE)
        deadline = SIGN_IN_CHALLENGE.expires_at

        for now in (deadline, deadline + 1):
            assert (
                await store.consume_sms_challenge("alice", SMSPurpose.SIGN_IN, SMS_HASH, now)
                is None
            )
        assert (
            await store.consume_sms_challenge("alice", SMSPurpose.SIGN_IN, SMS_HASH, deadline - 1)
            == SIGN_IN_CHALLENGE
        )

    async def test_a_resent_sms_code_replaces_the_previous_one(self, store: MFAStore) -> None:
        resent = SMSChallenge(
            purpose=SMSPurpose.SIGN_IN,
            code_hash=OTHER_SMS_HASH,
            phone=PHONE,
            expires_at=NOW + 660,
        )
        await store.start_sms_challenge("alice", SIGN_IN_CHALLENGE)
        await store.start_sms_challenge("alice", resent)

        assert (await current(store, "alice")).sms_challenge == resent
        assert await store.consume_sms_challenge("alice", SMSPurpose.SIGN_IN, SMS_HASH, NOW) is None
        consumed = await store.consume_sms_challenge(
            "alice", SMSPurpose.SIGN_IN, OTHER_SMS_HASH, NOW
        )
        assert consumed == resent

    async def test_no_sms_challenge_is_consumed_for_another_user(self, store: MFAStore) -> None:
        await store.start_sms_challenge("alice", SIGN_IN_CHALLENGE)

        assert await store.consume_sms_challenge("bob", SMSPurpose.SIGN_IN, SMS_HASH, NOW) is None

        assert await store.get("bob") is None
        assert (await current(store, "alice")).sms_challenge == SIGN_IN_CHALLENGE

    async def test_concurrent_uses_of_one_sms_code_succeed_once(self, store: MFAStore) -> None:
        await enrol(store, "alice")
        await store.start_sms_challenge("alice", SIGN_IN_CHALLENGE)

        results = await asyncio.gather(
            *(
                store.consume_sms_challenge("alice", SMSPurpose.SIGN_IN, SMS_HASH, NOW)
                for _ in range(20)
            )
        )

        assert [r for r in results if r is not None] == [SIGN_IN_CHALLENGE]
        assert (await current(store, "alice")).sms_challenge is None

    async def test_setting_the_phone_verifies_it_and_bumps_the_epoch(self, store: MFAStore) -> None:
        await enrol(store, "alice")

        epoch = await store.set_phone("alice", PHONE, NOW + 5)

        assert epoch == 2
        enrolment = await current(store, "alice")
        assert (enrolment.phone, enrolment.phone_verified_at) == (PHONE, NOW + 5)
        assert enrolment.epoch == 2
        assert enrolment.enrolled
        assert [a.secret for a in enrolment.apps] == [PENDING]
        assert enrolment.recovery_codes_left == len(RECOVERY.hashes)
        assert await store.summary("alice") == EnrolmentSummary(enrolled=True, epoch=2)
        # A new number is a new authenticator: another epoch again.
        assert await store.set_phone("alice", OTHER_PHONE, NOW + 10) == 3
        assert (await current(store, "alice")).phone == OTHER_PHONE
        assert await store.summary("alice") == EnrolmentSummary(enrolled=True, epoch=3)

    async def test_a_user_not_enrolled_can_have_a_verified_phone(self, store: MFAStore) -> None:
        assert await store.set_phone("alice", PHONE, NOW) == 1

        enrolment = await current(store, "alice")
        assert (enrolment.phone, enrolment.phone_verified_at) == (PHONE, NOW)
        assert await store.summary("alice") == EnrolmentSummary(enrolled=False, epoch=1)
        # And enrols later without losing it.
        assert await enrol(store, "alice") == 2
        assert (await current(store, "alice")).phone == PHONE

    async def test_disabling_forgets_the_phone(self, store: MFAStore) -> None:
        """The number comes back only verified again, after a reset too."""
        await enrol(store, "alice")
        await store.set_phone("alice", PHONE, NOW)

        epoch = await store.disable("alice")

        assert epoch == 3
        enrolment = await current(store, "alice")
        assert not enrolment.enrolled
        assert (enrolment.phone, enrolment.phone_verified_at) == (None, None)
        assert await store.summary("alice") == EnrolmentSummary(enrolled=False, epoch=3)
        assert await enrol(store, "alice", pending=OTHER_PENDING) == 4
        assert (await current(store, "alice")).phone is None

    async def test_disabling_drops_a_pending_sms_code(self, store: MFAStore) -> None:
        await enrol(store, "alice")
        await store.start_sms_challenge("alice", SIGN_IN_CHALLENGE)

        await store.disable("alice")

        assert (await current(store, "alice")).sms_challenge is None
        assert await store.consume_sms_challenge("alice", SMSPurpose.SIGN_IN, SMS_HASH, NOW) is None

    # -- a site's member list ----------------------------------------------------------------

    async def test_statuses_of_unknown_users_are_not_enrolled(self, store: MFAStore) -> None:
        statuses = await store.statuses(["alice", "bob", "alice"])

        nothing = FactorStatus(enrolled=False, phone_verified=False)
        assert statuses == {"alice": nothing, "bob": nothing}
        assert await store.get("alice") is None

    async def test_statuses_of_no_users_are_empty(self, store: MFAStore) -> None:
        assert await store.statuses([]) == {}

    async def test_statuses_show_who_is_enrolled_and_with_what(self, store: MFAStore) -> None:
        await enrol(store, "alice")
        await store.begin_enrolment("bob", PENDING)
        await store.add_authenticator("dave", key("k1"), now=NOW, recovery=RECOVERY)
        # Erin's key came first, her two apps after: the kinds are in their own order, once.
        await store.add_authenticator(
            "erin", key("k2", credential_id=OTHER_CREDENTIAL), now=NOW, recovery=RECOVERY
        )
        await enrol(store, "erin")
        await store.begin_enrolment("erin", OTHER_PENDING)
        await store.add_authenticator(
            "erin", app("e2", secret=OTHER_PENDING), now=NOW, pending_secret=OTHER_PENDING
        )

        statuses = await store.statuses(["alice", "bob", "carol", "dave", "erin"])

        both = (FactorKind.TOTP, FactorKind.WEBAUTHN)
        assert statuses == {
            "alice": FactorStatus(enrolled=True, kinds=(FactorKind.TOTP,)),
            "bob": FactorStatus(enrolled=False),
            "carol": FactorStatus(enrolled=False),
            "dave": FactorStatus(enrolled=True, kinds=(FactorKind.WEBAUTHN,)),
            "erin": FactorStatus(enrolled=True, kinds=both),
        }

    async def test_statuses_show_a_verified_phone(self, store: MFAStore) -> None:
        await enrol(store, "alice")
        await store.set_phone("alice", PHONE, NOW)
        await store.set_phone("bob", OTHER_PHONE, NOW)
        # A code sent to a number is not a verified number.
        await store.start_sms_challenge("carol", SIGN_IN_CHALLENGE)

        statuses = await store.statuses(["alice", "bob", "carol"])

        assert statuses == {
            "alice": FactorStatus(enrolled=True, phone_verified=True, kinds=(FactorKind.TOTP,)),
            "bob": FactorStatus(enrolled=False, phone_verified=True),
            "carol": FactorStatus(enrolled=False, phone_verified=False),
        }

    async def test_statuses_of_disabled_users_are_not_enrolled(self, store: MFAStore) -> None:
        await enrol(store, "alice")
        await store.set_phone("alice", PHONE, NOW)
        await enrol(store, "bob")
        await store.add_authenticator("bob", key("k1"), now=NOW)
        await store.disable("alice")
        await store.disable("bob")

        statuses = await store.statuses(["alice", "bob"])

        # The phone went with the rest.
        assert statuses == {
            "alice": FactorStatus(enrolled=False, phone_verified=False),
            "bob": FactorStatus(enrolled=False, phone_verified=False),
        }

    async def test_statuses_of_a_big_site_in_one_call(self, store: MFAStore) -> None:
        user_ids = [f"user-{n:04}" for n in range(MANY_USERS)]
        enrolled = {user_ids[0], user_ids[MANY_USERS // 2], user_ids[-1]}
        for user_id in enrolled:
            await enrol(store, user_id)
        await store.set_phone(user_ids[1], PHONE, NOW)

        statuses = await store.statuses(user_ids)

        assert sorted(statuses) == user_ids
        assert {u for u, status in statuses.items() if status.enrolled} == enrolled
        assert {u for u, status in statuses.items() if status.phone_verified} == {user_ids[1]}
