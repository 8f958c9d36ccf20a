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

from mfa_guard.core.marker import EnrolmentSummary
from mfa_guard.core.recovery import RecoveryCodeSet
from mfa_guard.stores.base import (
    Enrolment,
    FactorStatus,
    MFAStore,
    SMSChallenge,
    SMSPurpose,
    StoredSecrets,
)

__all__ = ["MFAStoreContract"]

# Stand-ins for Fernet tokens and scrypt hashes: a store keeps them, it never reads them.
PENDING = "gAAAAA-pending-key-one"
OTHER_PENDING = "gAAAAA-pending-key-two"
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


async def enrol(
    store: MFAStore,
    user_id: str,
    *,
    pending: str = PENDING,
    step: int = STEP,
    recovery: RecoveryCodeSet = RECOVERY,
) -> int:
    """Begin and confirm an enrolment, as the set-up page does; the new epoch."""
    await store.begin_enrolment(user_id, pending)
    epoch = await store.confirm_enrolment(user_id, pending, step=step, recovery=recovery, now=NOW)
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

    async def test_beginning_an_enrolment_keeps_the_secret_pending(self, store: MFAStore) -> None:
        await store.begin_enrolment("alice", PENDING)

        enrolment = await current(store, "alice")
        assert enrolment.user_id == "alice"
        assert enrolment.pending_secret == PENDING
        assert enrolment.secret is None
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
        assert await store.replace_secrets(stored, StoredSecrets("alice", None, "rotated"))
        assert (await current(store, "alice")).pending_binding == OTHER_BINDING
        # Confirmed, nothing is pending any more, the binding included.
        epoch = await store.confirm_enrolment(
            "alice", "rotated", step=STEP, recovery=RECOVERY, now=NOW
        )
        assert epoch == 1
        enrolment = await current(store, "alice")
        assert (enrolment.pending_secret, enrolment.pending_binding) == (None, None)
        # A set-up begun without a binding is no session's.
        await store.begin_enrolment("bob", PENDING)
        assert (await current(store, "bob")).pending_binding is None

    async def test_beginning_again_replaces_the_pending_secret(self, store: MFAStore) -> None:
        await store.begin_enrolment("alice", PENDING)
        await store.begin_enrolment("alice", OTHER_PENDING)

        assert (await current(store, "alice")).pending_secret == OTHER_PENDING
        confirmed = await store.confirm_enrolment(
            "alice", PENDING, step=STEP, recovery=RECOVERY, now=NOW
        )
        assert confirmed is None

    async def test_confirming_without_beginning_fails(self, store: MFAStore) -> None:
        confirmed = await store.confirm_enrolment(
            "alice", PENDING, step=STEP, recovery=RECOVERY, now=NOW
        )

        assert confirmed is None
        assert (await store.summary("alice")).enrolled is False

    async def test_confirming_another_pending_secret_fails(self, store: MFAStore) -> None:
        await store.begin_enrolment("alice", PENDING)

        confirmed = await store.confirm_enrolment(
            "alice", OTHER_PENDING, step=STEP, recovery=RECOVERY, now=NOW
        )

        assert confirmed is None
        enrolment = await current(store, "alice")
        assert not enrolment.enrolled
        assert enrolment.pending_secret == PENDING
        assert enrolment.epoch == 0

    async def test_confirming_enrols_the_user_and_bumps_the_epoch(self, store: MFAStore) -> None:
        await store.begin_enrolment("alice", PENDING)

        epoch = await store.confirm_enrolment(
            "alice", PENDING, step=STEP, recovery=RECOVERY, now=NOW
        )

        assert epoch == 1
        enrolment = await current(store, "alice")
        assert enrolment.enrolled
        assert enrolment.epoch == 1
        assert enrolment.secret == PENDING
        assert enrolment.pending_secret is None
        assert enrolment.confirmed_at == NOW
        assert enrolment.last_step == STEP
        assert enrolment.recovery is not None
        assert enrolment.recovery.salt == RECOVERY.salt
        assert enrolment.recovery.params == RECOVERY.params
        assert sorted(enrolment.recovery.hashes) == sorted(RECOVERY.hashes)
        assert await store.summary("alice") == EnrolmentSummary(enrolled=True, epoch=1)

    async def test_a_pending_secret_is_confirmed_only_once(self, store: MFAStore) -> None:
        await enrol(store, "alice")

        again = await store.confirm_enrolment(
            "alice", PENDING, step=STEP + 1, recovery=NEW_RECOVERY, now=NOW + 30
        )

        assert again is None
        enrolment = await current(store, "alice")
        assert enrolment.epoch == 1
        assert enrolment.last_step == STEP
        assert hashes_of(enrolment) == set(RECOVERY.hashes)

    async def test_beginning_again_does_not_unenrol(self, store: MFAStore) -> None:
        await enrol(store, "alice")

        await store.begin_enrolment("alice", OTHER_PENDING)

        enrolment = await current(store, "alice")
        assert enrolment.enrolled
        assert enrolment.secret == PENDING
        assert enrolment.epoch == 1
        assert enrolment.last_step == STEP
        assert hashes_of(enrolment) == set(RECOVERY.hashes)
        # Nor can the new pending secret take over while the user is enrolled.
        takeover = await store.confirm_enrolment(
            "alice", OTHER_PENDING, step=STEP + 1, recovery=NEW_RECOVERY, now=NOW
        )
        assert takeover is None
        assert (await current(store, "alice")).secret == PENDING

    async def test_concurrent_confirmations_enrol_once(self, store: MFAStore) -> None:
        await store.begin_enrolment("alice", PENDING)

        results = await asyncio.gather(
            *(
                store.confirm_enrolment("alice", PENDING, step=STEP, recovery=RECOVERY, now=NOW)
                for _ in range(CONCURRENT_REQUESTS)
            )
        )

        assert [r for r in results if r is not None] == [1]
        assert await store.summary("alice") == EnrolmentSummary(enrolled=True, epoch=1)

    async def test_a_newer_step_is_accepted_once(self, store: MFAStore) -> None:
        await enrol(store, "alice")

        assert await store.accept_step("alice", STEP + 1) is True
        assert await store.accept_step("alice", STEP + 1) is False
        assert await store.accept_step("alice", STEP) is False
        assert await store.accept_step("alice", STEP - 10) is False
        assert (await current(store, "alice")).last_step == STEP + 1
        assert await store.accept_step("alice", STEP + 3) is True
        assert (await current(store, "alice")).last_step == STEP + 3

    async def test_the_confirming_code_cannot_be_replayed(self, store: MFAStore) -> None:
        await enrol(store, "alice", step=STEP)

        assert await store.accept_step("alice", STEP) is False

    async def test_no_step_is_accepted_without_an_enrolment(self, store: MFAStore) -> None:
        await store.begin_enrolment("bob", PENDING)

        assert await store.accept_step("alice", STEP) is False
        assert await store.accept_step("bob", STEP) is False
        assert await store.get("alice") is None
        assert (await current(store, "bob")).last_step is None

    async def test_concurrent_replays_of_one_step_succeed_once(self, store: MFAStore) -> None:
        await enrol(store, "alice")

        results = await asyncio.gather(
            *(store.accept_step("alice", STEP + 1) for _ in range(CONCURRENT_REQUESTS))
        )

        assert results.count(True) == 1
        assert (await current(store, "alice")).last_step == STEP + 1

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
        # A new set of codes is not a new enrolment: sessions stay verified.
        assert enrolment.epoch == 1

    async def test_recovery_codes_need_an_enrolment(self, store: MFAStore) -> None:
        await store.begin_enrolment("bob", PENDING)

        assert await store.replace_recovery_codes("alice", NEW_RECOVERY) is False
        assert await store.replace_recovery_codes("bob", NEW_RECOVERY) is False

        assert await store.get("alice") is None
        assert (await current(store, "bob")).recovery_codes_left == 0
        assert await store.use_recovery_code("bob", "n1") is False

    async def test_disabling_removes_everything_and_bumps_the_epoch(self, store: MFAStore) -> None:
        await enrol(store, "alice")
        await store.begin_enrolment("alice", OTHER_PENDING)

        epoch = await store.disable("alice")

        assert epoch == 2
        enrolment = await current(store, "alice")
        assert enrolment.epoch == 2
        assert not enrolment.enrolled
        assert enrolment.secret is None
        assert enrolment.pending_secret is None
        assert enrolment.confirmed_at is None
        assert enrolment.recovery_codes_left == 0
        assert await store.summary("alice") == EnrolmentSummary(enrolled=False, epoch=2)
        assert await store.accept_step("alice", STEP + 1) is False
        assert await store.use_recovery_code("alice", "h1") is False
        stale = await store.confirm_enrolment(
            "alice", OTHER_PENDING, step=STEP, recovery=RECOVERY, now=NOW
        )
        assert stale is None

    async def test_disabling_an_unknown_user_starts_at_epoch_1(self, store: MFAStore) -> None:
        assert await store.disable("alice") == 1

        assert await store.summary("alice") == EnrolmentSummary(enrolled=False, epoch=1)

    async def test_a_disabled_user_can_enrol_again(self, store: MFAStore) -> None:
        await enrol(store, "alice")
        await store.disable("alice")

        epoch = await enrol(store, "alice", pending=OTHER_PENDING, recovery=NEW_RECOVERY)

        assert epoch == 3
        enrolment = await current(store, "alice")
        assert enrolment.enrolled
        assert enrolment.secret == OTHER_PENDING
        assert hashes_of(enrolment) == set(NEW_RECOVERY.hashes)
        assert await store.accept_step("alice", STEP + 1) is True

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
        before = await store.get("alice")
        assert await store.revoke_sessions("alice") == epoch + 1
        after = await store.get("alice")
        assert before is not None
        assert after is not None
        assert after == dataclasses.replace(before, epoch=epoch + 1)
        assert await store.summary("alice") == EnrolmentSummary(enrolled=True, epoch=epoch + 1)
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
        assert (alice.enrolled, alice.secret, alice.phone) == (True, PENDING, None)
        assert hashes_of(alice) == set(RECOVERY.hashes)
        assert await store.consume_sms_challenge("alice", SMSPurpose.PHONE, SMS_HASH, NOW) is None
        bob = await current(store, "bob")
        assert (bob.sms_challenge, bob.pending_secret, bob.pending_binding) == (None, None, None)
        stale = await store.confirm_enrolment("bob", PENDING, step=STEP, recovery=RECOVERY, now=NOW)
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
        assert await store.set_phone("alice", OTHER_PHONE, NOW + 5, expected_epoch=epoch) is None
        enrolment = await current(store, "alice")
        assert (enrolment.phone, enrolment.phone_verified_at) == (PHONE, NOW)
        assert enrolment.epoch == epoch + 1
        # Concurrent changes from one epoch: one lands.
        results = await asyncio.gather(
            *(
                store.set_phone("alice", OTHER_PHONE, NOW + 9, expected_epoch=epoch + 1)
                for _ in range(10)
            )
        )
        assert [r for r in results if r is not None] == [epoch + 2]
        assert (await store.summary("alice")).epoch == epoch + 2

    async def test_stored_secrets_page_through_users_with_a_secret(self, store: MFAStore) -> None:
        for user in ("carol", "alice", "dave"):
            await enrol(store, user)
        await store.begin_enrolment("bob", "bob-pending")  # pending only
        await store.set_phone("erin", PHONE, NOW)  # no secret at all
        first = await store.stored_secrets(None, 2)
        assert first == [
            StoredSecrets("alice", PENDING, None),
            StoredSecrets("bob", None, "bob-pending"),
        ]
        rest = await store.stored_secrets(first[-1].user_id, 10)
        assert [s.user_id for s in rest] == ["carol", "dave"]
        assert await store.stored_secrets("dave", 10) == []

    async def test_replacing_secrets_is_a_compare_and_set(self, store: MFAStore) -> None:
        epoch = await enrol(store, "alice")
        await store.begin_enrolment("bob", "bob-pending")
        [alice, bob] = await store.stored_secrets(None, 10)
        assert await store.replace_secrets(alice, StoredSecrets("alice", "rotated", None))
        enrolment = await store.get("alice")
        assert enrolment is not None
        assert (enrolment.secret, enrolment.enrolled) == ("rotated", True)
        # Changed since it was read: nothing is written.
        assert not await store.replace_secrets(alice, StoredSecrets("alice", "stale", None))
        await store.begin_enrolment("bob", "newer-pending")
        assert not await store.replace_secrets(bob, StoredSecrets("bob", None, "stale"))
        bob_now = await store.get("bob")
        assert bob_now is not None
        assert bob_now.pending_secret == "newer-pending"  # noqa: S105 (a token, for the test)
        # The same secret under another key: no new authenticator, no epoch bump.
        assert await store.summary("alice") == EnrolmentSummary(enrolled=True, epoch=epoch)

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
        await store.begin_enrolment("carol", PENDING)

        assert await store.accept_step("alice", STEP + 1) is True
        assert await store.accept_step("bob", STEP + 1) is True
        assert await store.use_recovery_code("alice", "h1") is True
        assert await store.use_recovery_code("bob", "h1") is True
        await store.disable("alice")

        bob = await current(store, "bob")
        assert bob.enrolled
        assert bob.epoch == 1
        assert bob.secret == OTHER_PENDING
        assert bob.last_step == STEP + 1
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
        assert enrolment.secret == PENDING
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

    async def test_statuses_of_unknown_users_are_not_enrolled(self, store: MFAStore) -> None:
        statuses = await store.statuses(["alice", "bob", "alice"])

        nothing = FactorStatus(enrolled=False, phone_verified=False)
        assert statuses == {"alice": nothing, "bob": nothing}
        assert await store.get("alice") is None

    async def test_statuses_of_no_users_are_empty(self, store: MFAStore) -> None:
        assert await store.statuses([]) == {}

    async def test_statuses_show_who_is_enrolled(self, store: MFAStore) -> None:
        await enrol(store, "alice")
        await store.begin_enrolment("bob", PENDING)

        statuses = await store.statuses(["alice", "bob", "carol"])

        assert statuses == {
            "alice": FactorStatus(enrolled=True, phone_verified=False),
            "bob": FactorStatus(enrolled=False, phone_verified=False),
            "carol": FactorStatus(enrolled=False, phone_verified=False),
        }

    async def test_statuses_show_a_verified_phone(self, store: MFAStore) -> None:
        await enrol(store, "alice")
        await store.set_phone("alice", PHONE, NOW)
        await store.set_phone("bob", OTHER_PHONE, NOW)
        # A code sent to a number is not a verified number.
        await store.start_sms_challenge("carol", SIGN_IN_CHALLENGE)

        statuses = await store.statuses(["alice", "bob", "carol"])

        assert statuses == {
            "alice": FactorStatus(enrolled=True, phone_verified=True),
            "bob": FactorStatus(enrolled=False, phone_verified=True),
            "carol": FactorStatus(enrolled=False, phone_verified=False),
        }

    async def test_statuses_of_disabled_users_are_not_enrolled(self, store: MFAStore) -> None:
        await enrol(store, "alice")
        await store.set_phone("alice", PHONE, NOW)
        await enrol(store, "bob")
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
