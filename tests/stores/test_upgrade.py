"""Upgrading in place: a database an earlier release made, whose enrolments each kept one TOTP
secret in ``mfa_guard_enrolments``, is taken over by the store of several authenticators per
user. Each confirmed secret becomes the user's first authenticator app, once, and everything
else stays as it was: on SQLite and on PostgreSQL, started once, twice, or by two workers at
the same moment."""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from cryptography.fernet import Fernet
from sqlalchemy import (
    BigInteger,
    Column,
    DateTime,
    Double,
    ForeignKey,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    func,
    insert,
    select,
    text,
)
from sqlalchemy import exc as sa_exc
from sqlalchemy.ext.asyncio import AsyncConnection, create_async_engine

from mfa_guard.core.recovery import TESTING_COST, generate, hash_code, hash_set, normalise
from mfa_guard.crypto import SecretBox
from mfa_guard.stores.base import Authenticator, FactorKind
from mfa_guard.stores.sql import SQLStore
from mfa_guard.stores.sql.schema import (
    LEGACY_APP_NAME,
    authenticators,
    enrolments,
    metadata,
    move_legacy_secrets,
    webauthn_challenges,
)
from tests.databases import POSTGRES_URL, fresh_schema, sqlite_url

# The store's two tables exactly as the release before several authenticators made them (the
# other tables did not change).
LEGACY = MetaData()
Table(
    "mfa_guard_enrolments",
    LEGACY,
    Column("user_id", String(255), primary_key=True),
    Column("epoch", Integer, nullable=False, default=0, server_default="0"),
    # A Fernet token, never the plain secret.
    Column("secret", Text, nullable=True),
    Column("confirmed_at", Double, nullable=True),
    Column("last_step", BigInteger, nullable=True),
    Column("pending_secret", Text, nullable=True),
    Column("pending_binding", String(64), nullable=True),
    Column("recovery_salt", String(64), nullable=True),
    Column("recovery_params", String(64), nullable=True),
    Column("phone", String(32), nullable=True),
    Column("phone_verified_at", Double, nullable=True),
    Column("sms_purpose", String(16), nullable=True),
    Column("sms_code_hash", String(64), nullable=True),
    Column("sms_phone", String(32), nullable=True),
    Column("sms_expires_at", Double, nullable=True),
    Column("created_at", DateTime(timezone=True), nullable=True, server_default=func.now()),
    Column(
        "updated_at",
        DateTime(timezone=True),
        nullable=True,
        server_default=func.now(),
        onupdate=func.now(),
    ),
)
Table(
    "mfa_guard_recovery_codes",
    LEGACY,
    Column(
        "user_id",
        String(255),
        ForeignKey("mfa_guard_enrolments.user_id", ondelete="CASCADE"),
        primary_key=True,
    ),
    Column("code_hash", String(128), primary_key=True),
)

BOX = SecretBox([Fernet.generate_key().decode()])
CONFIRMED_AT = 1_700_000_000.25
NOW = 1_800_000_000.0
# Worker processes starting at the same moment, each with an engine of its own.
WORKERS = 4


@dataclass(frozen=True, slots=True)
class LegacyUser:
    """One row of the earlier release, with the plain values behind its tokens and hashes."""

    user_id: str
    epoch: int
    secret: str | None = None
    confirmed_at: float | None = None
    last_step: int | None = None
    pending: str | None = None
    binding: str | None = None
    codes: tuple[str, ...] = ()
    phone: str | None = None
    phone_verified_at: float | None = None
    sms: dict[str, Any] = field(default_factory=dict)

    @property
    def enrolled(self) -> bool:
        return self.secret is not None and self.confirmed_at is not None


USERS = (
    # Enrolled, with recovery codes and a verified phone.
    LegacyUser(
        "alice@acme.test",
        epoch=4,
        secret="JBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXP",
        confirmed_at=CONFIRMED_AT,
        last_step=59_999_990,
        codes=tuple(generate(4)),
        phone="+33612345678",
        phone_verified_at=CONFIRMED_AT + 60,
    ),
    # Enrolled, setting up a new app (the earlier release let an enrolled user begin one), with
    # a text on its way.
    LegacyUser(
        "bob@acme.test",
        epoch=1,
        secret="KRSXG5CTMVRXEZLUKRSXG5CTMVRXEZLU",
        confirmed_at=CONFIRMED_AT + 1,
        last_step=56_666_700,
        pending="GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ",
        binding="c" * 32,
        codes=tuple(generate(2)),
        sms={
            "sms_purpose": "sign_in",
            "sms_code_hash": "a" * 64,
            "sms_phone": "+447400123456",
            "sms_expires_at": NOW + 600,
        },
    ),
    # A set-up begun, never confirmed.
    LegacyUser(
        "carol@acme.test", epoch=0, pending="MFRGGZDFMZTWQ2LKMFRGGZDFMZTWQ2LK", binding="d" * 32
    ),
    # Not enrolled: a verified phone only, then a user who turned 2FA off.
    LegacyUser("dave@acme.test", epoch=1, phone="+33699887766", phone_verified_at=CONFIRMED_AT + 5),
    LegacyUser("erin@acme.test", epoch=2),
)
ENROLLED = [user for user in USERS if user.enrolled]


async def make_legacy_database(url: str, connect_args: dict[str, Any]) -> None:
    engine = create_async_engine(url, connect_args=connect_args)
    try:
        async with engine.begin() as conn:
            await conn.run_sync(LEGACY.create_all)
            for user in USERS:
                recovery = hash_set(user.codes, TESTING_COST) if user.codes else None
                await conn.execute(
                    insert(LEGACY.tables["mfa_guard_enrolments"]).values(
                        user_id=user.user_id,
                        epoch=user.epoch,
                        secret=None if user.secret is None else BOX.encrypt(user.secret),
                        confirmed_at=user.confirmed_at,
                        last_step=user.last_step,
                        pending_secret=None if user.pending is None else BOX.encrypt(user.pending),
                        pending_binding=user.binding,
                        recovery_salt=None if recovery is None else recovery.salt,
                        recovery_params=None if recovery is None else recovery.params,
                        phone=user.phone,
                        phone_verified_at=user.phone_verified_at,
                        **user.sms,
                    )
                )
                if recovery is not None:
                    await conn.execute(
                        insert(LEGACY.tables["mfa_guard_recovery_codes"]),
                        [{"user_id": user.user_id, "code_hash": h} for h in recovery.hashes],
                    )
    finally:
        await engine.dispose()


@dataclass(frozen=True, slots=True)
class Database:
    url: str
    connect_args: dict[str, Any]

    def store(self) -> SQLStore:
        return SQLStore(self.url, connect_args=self.connect_args)


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def legacy_database(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Database]:
    """An empty database of the test's own: a SQLite file, or a PostgreSQL schema."""
    if request.param == "sqlite":
        yield Database(sqlite_url(tmp_path), {})
        return
    with fresh_schema("mfa_guard_legacy") as schema:
        yield Database(POSTGRES_URL, {"server_settings": {"search_path": schema}})


@pytest.fixture
async def upgraded(legacy_database: Database) -> AsyncIterator[SQLStore]:
    """The earlier release's database, taken over by the store (which upgrades it on first use)."""
    await make_legacy_database(legacy_database.url, legacy_database.connect_args)
    store = legacy_database.store()
    yield store
    await store.close()


async def make_new_tables(database: Database) -> None:
    """The two tables of several authenticators, made with the secrets left where they were."""
    engine = create_async_engine(database.url, connect_args=database.connect_args)
    try:
        async with engine.begin() as conn:
            await conn.run_sync(metadata.create_all, tables=[authenticators, webauthn_challenges])
    finally:
        await engine.dispose()


async def app_rows(store: SQLStore) -> list[Any]:
    async with store.engine.connect() as conn:
        query = select(authenticators).order_by(authenticators.c.user_id)
        return list(await conn.execute(query))


async def legacy_columns(store: SQLStore) -> set[tuple[Any, Any]]:
    async with store.engine.connect() as conn:
        rows = await conn.execute(select(enrolments.c.secret, enrolments.c.last_step))
        return {tuple(row) for row in rows}


async def test_each_confirmed_secret_becomes_the_users_first_app(upgraded: SQLStore) -> None:
    store = upgraded
    ids = set()
    for user in ENROLLED:
        enrolment = await store.get(user.user_id)
        assert enrolment is not None
        [app] = enrolment.authenticators
        assert (app.kind, app.name) == (FactorKind.TOTP, LEGACY_APP_NAME)
        assert re.fullmatch("[0-9a-f]{32}", app.id)
        ids.add(app.id)
        assert app.secret is not None
        assert BOX.decrypt(app.secret) == user.secret
        assert (app.created_at, app.last_step, app.last_used_at) == (
            user.confirmed_at,
            user.last_step,
            None,
        )
        assert app.credential_id is None
        assert enrolment.enrolled
        assert enrolment.confirmed_at == user.confirmed_at
        assert (await store.summary(user.user_id)).enrolled
        # The step used last before the upgrade stays used; the next one passes.
        assert user.last_step is not None
        assert not await store.accept_step(user.user_id, app.id, user.last_step, NOW)
        assert await store.accept_step(user.user_id, app.id, user.last_step + 1, NOW)
    assert len(ids) == len(ENROLLED)
    # The old columns are emptied: the secrets are in the authenticators alone.
    assert await legacy_columns(store) == {(None, None)}


async def test_everything_else_stays_as_it_was(upgraded: SQLStore) -> None:
    store = upgraded
    for user in USERS:
        enrolment = await store.get(user.user_id)
        assert enrolment is not None, user.user_id
        assert enrolment.epoch == user.epoch
        assert enrolment.enrolled == user.enrolled
        assert (enrolment.phone, enrolment.phone_verified_at) == (
            user.phone,
            user.phone_verified_at,
        )
        pending = (
            None if enrolment.pending_secret is None else BOX.decrypt(enrolment.pending_secret)
        )
        assert (pending, enrolment.pending_binding) == (user.pending, user.binding)
        assert (enrolment.sms_challenge is not None) == bool(user.sms)
        assert enrolment.recovery_codes_left == len(user.codes)
        if not user.enrolled:
            assert enrolment.authenticators == ()
            assert enrolment.confirmed_at is None
    # The recovery codes still sign in, once each, as the kit hashes them.
    for user in ENROLLED:
        enrolment = await store.get(user.user_id)
        assert enrolment is not None
        assert enrolment.recovery is not None
        for code in user.codes:
            canonical = normalise(code)
            assert canonical is not None
            digest = hash_code(canonical, enrolment.recovery.salt, enrolment.recovery.params)
            assert await store.use_recovery_code(user.user_id, digest)
            assert not await store.use_recovery_code(user.user_id, digest)
    # Bob's set-up in flight completes as a second app, beside the moved one.
    bob = await store.get("bob@acme.test")
    assert bob is not None
    assert bob.pending_secret is not None
    [moved] = bob.apps
    second = Authenticator(
        id="b" * 32,
        kind=FactorKind.TOTP,
        name="New phone",
        created_at=NOW,
        secret=bob.pending_secret,
        last_step=1,
    )
    epoch = await store.add_authenticator(
        "bob@acme.test", second, now=NOW, pending_secret=bob.pending_secret
    )
    assert epoch == 2
    after = await store.get("bob@acme.test")
    assert after is not None
    assert after.apps == (moved, second)


async def test_a_second_start_moves_nothing_again(
    upgraded: SQLStore, legacy_database: Database
) -> None:
    await upgraded.summary("alice@acme.test")  # the first start upgrades
    before = await app_rows(upgraded)
    await upgraded.close()

    again = legacy_database.store()
    try:
        await again.create_all()
        assert await app_rows(again) == before
        assert len(before) == len(ENROLLED)
        assert await legacy_columns(again) == {(None, None)}
    finally:
        await again.close()


@pytest.mark.parametrize("new_tables", [False, True], ids=["to-create", "made-before"])
async def test_workers_starting_at_once_move_each_secret_once(
    legacy_database: Database, new_tables: bool
) -> None:
    """With the new tables to create, the workers take turns creating them; with the tables
    made before (``init-db`` run, then an earlier release's worker confirmed a secret the old
    way), the workers move the secrets at the same moment."""
    await make_legacy_database(legacy_database.url, legacy_database.connect_args)
    if new_tables:
        engine = create_async_engine(legacy_database.url, connect_args=legacy_database.connect_args)
        try:
            async with engine.begin() as conn:
                await conn.run_sync(
                    metadata.create_all, tables=[authenticators, webauthn_challenges]
                )
        finally:
            await engine.dispose()
    workers = [legacy_database.store() for _ in range(WORKERS)]
    try:
        summaries = await asyncio.gather(
            *(worker.summary(user.user_id) for worker in workers for user in USERS)
        )

        assert [summary.enrolled for summary in summaries] == [u.enrolled for u in USERS] * WORKERS
        rows = await app_rows(workers[0])
        assert sorted(row.user_id for row in rows) == sorted(u.user_id for u in ENROLLED)
        assert await legacy_columns(workers[0]) == {(None, None)}
    finally:
        for worker in workers:
            await worker.close()


async def test_a_move_in_flight_holds_another_off_the_same_secrets(
    legacy_database: Database,
) -> None:
    """While one worker's move is not committed, another's cannot read the secrets it moves:
    it waits for the first (here it gives up after a short wait), then finds nothing left."""
    await make_legacy_database(legacy_database.url, legacy_database.connect_args)
    await make_new_tables(legacy_database)
    postgres = legacy_database.url.startswith("postgresql")
    first_engine = create_async_engine(
        legacy_database.url, connect_args=legacy_database.connect_args
    )
    # SQLite's busy timeout, in seconds: how long the second waits for the write lock.
    impatient = {} if postgres else {"timeout": 0.05}
    second_engine = create_async_engine(
        legacy_database.url, connect_args={**legacy_database.connect_args, **impatient}
    )

    async def move(conn: AsyncConnection, *, lock_timeout: bool = False) -> int:
        async with conn.begin():
            if lock_timeout and postgres:
                await conn.execute(text("SET LOCAL lock_timeout = '50ms'"))
            moved: int = await conn.run_sync(move_legacy_secrets)
            return moved

    try:
        async with first_engine.connect() as first, second_engine.connect() as second:
            async with first.begin():
                assert await first.run_sync(move_legacy_secrets) == len(ENROLLED)
                # It waits at the copy, before it copies anything.
                copy = r"lock[\s\S]*INSERT INTO mfa_guard_authenticators"
                with pytest.raises(sa_exc.DBAPIError, match=copy):
                    await move(second, lock_timeout=True)
            assert await move(second) == 0
        store = legacy_database.store()
        try:
            rows = await app_rows(store)
            assert sorted(row.user_id for row in rows) == sorted(u.user_id for u in ENROLLED)
        finally:
            await store.close()
    finally:
        await first_engine.dispose()
        await second_engine.dispose()
