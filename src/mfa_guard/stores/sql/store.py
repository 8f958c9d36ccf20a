"""The MFA store on SQL (:class:`SQLStore`): enrolments, their authenticators (apps, passkeys and
security keys), recovery codes and pending WebAuthn challenges.

Every method is one transaction whose deciding statement is a conditional write, so a check and
its update cannot be split by another request, worker process or host: ``accept_step`` and
``accept_assertion`` are compare-and-set updates, ``use_recovery_code`` and
``consume_webauthn_challenge`` a ``DELETE`` whose row count says who won. A method that changes
the user's authenticators writes the user's enrolment row first (its compare-and-set, and a
lock), and reads what else decides only after it: on PostgreSQL a later statement sees what
another transaction committed while this one waited for the row. A method of one statement runs
it in autocommit (the statement is its own transaction): one round trip, not ``BEGIN``, the
statement and ``COMMIT``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, cast

from sqlalchemy import (
    Delete,
    Insert,
    Update,
    and_,
    delete,
    exists,
    func,
    insert,
    or_,
    select,
    update,
)
from sqlalchemy import exc as sa_exc
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncConnection

from mfa_guard.core.marker import EnrolmentSummary
from mfa_guard.core.recovery import SCRYPT_PARAMS, RecoveryCodeSet
from mfa_guard.settings import MFAGuardSettings
from mfa_guard.stores.base import (
    Authenticator,
    CeremonyPurpose,
    Enrolment,
    FactorKind,
    FactorStatus,
    SMSChallenge,
    SMSPurpose,
    StoredSecrets,
    WebAuthnChallenge,
)
from mfa_guard.stores.sql.adapter import SQLAdapter
from mfa_guard.stores.sql.engine import read_all, read_nothing, read_rowcount, read_scalar_or_none
from mfa_guard.stores.sql.schema import (
    ACCEPT_ASSERTION,
    ACCEPT_STEP,
    CONSUME_WEBAUTHN_CHALLENGE,
    GET_ENROLMENT,
    GET_SUMMARY,
    USE_RECOVERY_CODE,
    authenticators,
    enrolments,
    recovery_codes,
    webauthn_challenges,
)

# Ids per ``IN (…)`` list: well under SQLite's bound-variable limit (999 before 3.32).
_IN_CHUNK = 500

# What an epoch bump voids on the user's row: the unconfirmed set-up with its binding, and the
# pending SMS code. (The WebAuthn challenges, in a table of their own, go with them.)
_NO_SET_UP: dict[str, Any] = {"pending_secret": None, "pending_binding": None}
_NO_SMS_CODE: dict[str, Any] = {
    "sms_purpose": None,
    "sms_code_hash": None,
    "sms_phone": None,
    "sms_expires_at": None,
}
_NOTHING_PENDING: dict[str, Any] = {**_NO_SET_UP, **_NO_SMS_CODE}


class _Refused(Exception):
    """Raised inside a transaction to roll it back: the method then answers its refusal."""


class SQLStore(SQLAdapter):
    """Enrolments in a SQL database through SQLAlchemy's asyncio engine.

    Give either a database ``url`` (``sqlite+aiosqlite:///mfa_guard.db``,
    ``postgresql+asyncpg://user@host/db``; extra keyword arguments go to
    :func:`~sqlalchemy.ext.asyncio.create_async_engine`) or an existing ``engine``, which the
    store then shares and never disposes. With ``create_tables`` the tables are checked on
    first use (created in an empty database, migrated only with ``auto_migrate``: see
    :class:`~mfa_guard.stores.sql.adapter.SQLAdapter`). Backend failures raise
    :class:`~mfa_guard.errors.StoreUnavailable`. The site
    directory and the device store run on its engine with ``SQLSiteDirectory.sharing(store)``
    and ``SQLDeviceStore.sharing(store)``.
    """

    @classmethod
    def from_settings(cls, settings: MFAGuardSettings, **engine_options: Any) -> SQLStore:
        """A store on ``settings.database_url`` with ``database_auto_migrate``, and the pool
        settings and the connect and statement timeouts (PostgreSQL); the caller's options win."""
        options: dict[str, Any] = {"auto_migrate": settings.database_auto_migrate}
        url = make_url(settings.database_url)
        if url.get_backend_name() == "postgresql":
            options |= {
                "pool_size": settings.database_pool_size,
                "max_overflow": settings.database_max_overflow,
                "pool_timeout": settings.database_pool_timeout,
            }
            if url.get_driver_name() == "asyncpg":
                timeouts = {
                    "timeout": settings.database_connect_timeout,
                    "command_timeout": settings.database_statement_timeout,
                }
                given = engine_options.get("connect_args", {})
                engine_options = {**engine_options, "connect_args": {**timeouts, **given}}
        return cls(settings.database_url, **{**options, **engine_options})

    async def get(self, user_id: str) -> Enrolment | None:
        # One statement: the enrolment's row (once per recovery code), then its authenticators.
        rows = await self._db.rows(GET_ENROLMENT, {"uid": user_id}, retry=True)
        own = [row for row in rows if row["part"] == 0]
        if not own:
            return None
        first = own[0]
        recovery = None
        if first["recovery_salt"] is not None:
            recovery = RecoveryCodeSet(
                salt=first["recovery_salt"],
                hashes=tuple(row["code_hash"] for row in own if row["code_hash"] is not None),
                params=first["recovery_params"] or SCRYPT_PARAMS,
            )
        return Enrolment(
            user_id=user_id,
            epoch=first["epoch"],
            authenticators=tuple(_authenticator(row) for row in rows if row["part"] == 1),
            confirmed_at=first["confirmed_at"],
            pending_secret=first["pending_secret"],
            pending_binding=first["pending_binding"],
            recovery=recovery,
            phone=first["phone"],
            phone_verified_at=first["phone_verified_at"],
            sms_challenge=_challenge(first),
        )

    async def summary(self, user_id: str) -> EnrolmentSummary:
        rows = await self._db.rows(GET_SUMMARY, {"uid": user_id}, retry=True)
        if not rows:
            return EnrolmentSummary(enrolled=False, epoch=0)
        row = rows[0]
        return EnrolmentSummary(enrolled=bool(row["enrolled"]), epoch=int(row["epoch"]))

    async def statuses(self, user_ids: Sequence[str]) -> dict[str, FactorStatus]:
        found = dict.fromkeys(user_ids, FactorStatus(enrolled=False))
        if not found:
            return found
        wanted = list(found)
        phones: dict[str, bool] = {}
        kinds: dict[str, set[FactorKind]] = {}
        async with self._db.transaction() as conn:
            for start in range(0, len(wanted), _IN_CHUNK):
                # A row per kind of authenticator the user has (one with none if none).
                query = (
                    select(
                        enrolments.c.user_id,
                        enrolments.c.phone_verified_at.is_not(None).label("phone_verified"),
                        authenticators.c.kind,
                    )
                    .distinct()
                    .select_from(enrolments.outerjoin(authenticators))
                    .where(enrolments.c.user_id.in_(wanted[start : start + _IN_CHUNK]))
                )
                for row in await conn.execute(query):
                    phones[row.user_id] = bool(row.phone_verified)
                    held = kinds.setdefault(row.user_id, set())
                    if row.kind is not None:
                        held.add(FactorKind(row.kind))
        for user_id, phone_verified in phones.items():
            present = tuple(kind for kind in FactorKind if kind in kinds[user_id])
            found[user_id] = FactorStatus(
                enrolled=bool(present), phone_verified=phone_verified, kinds=present
            )
        return found

    async def begin_enrolment(
        self, user_id: str, pending_secret: str, *, binding: str | None = None
    ) -> None:
        statement = self._db.upsert(enrolments).values(
            user_id=user_id, epoch=0, pending_secret=pending_secret, pending_binding=binding
        )
        statement = statement.on_conflict_do_update(
            index_elements=[enrolments.c.user_id],
            set_={
                "pending_secret": statement.excluded.pending_secret,
                "pending_binding": statement.excluded.pending_binding,
                "updated_at": func.now(),
            },
        )
        # The same values twice are the same write: retried.
        await self._db.run(statement, {}, read_nothing, retry=True)

    async def add_authenticator(
        self,
        user_id: str,
        authenticator: Authenticator,
        *,
        now: float,
        recovery: RecoveryCodeSet | None = None,
        pending_secret: str | None = None,
        expected_epoch: int | None = None,
    ) -> int | None:
        # First the user's row: the compare-and-set on the pending secret and the epoch, which
        # bumps the epoch and locks the row, so that the user's authenticators cannot change
        # before this transaction ends (every change of them takes the row first).
        bump: dict[str, Any] = {
            "epoch": enrolments.c.epoch + 1,
            **_NO_SMS_CODE,
            **(_NO_SET_UP if pending_secret is not None else {}),
            "updated_at": func.now(),
        }
        conditions = []
        if pending_secret is not None:
            conditions.append(enrolments.c.pending_secret == pending_secret)
        if expected_epoch is not None:
            conditions.append(enrolments.c.epoch == expected_epoch)
        lock: Any
        if pending_secret is None and recovery is not None and expected_epoch in (None, 0):
            # A first factor may come for a user the store has never seen.
            lock = self._db.upsert(enrolments).values(user_id=user_id, epoch=1)
            lock = lock.on_conflict_do_update(
                index_elements=[enrolments.c.user_id],
                set_=bump,
                where=and_(*conditions) if conditions else None,
            )
        else:
            lock = update(enrolments).where(enrolments.c.user_id == user_id, *conditions)
            lock = lock.values(bump)
        # Then, read after the lock: the factors the user holds, and whether the id or the
        # credential is anyone's already (a unique violation meanwhile refuses it too).
        taken = authenticators.c.id == authenticator.id
        if authenticator.credential_id is not None:
            taken = or_(taken, authenticators.c.credential_id == authenticator.credential_id)
        check = select(
            select(func.count())
            .where(authenticators.c.user_id == user_id)
            .scalar_subquery()
            .label("held"),
            exists().where(taken).label("taken"),
        )
        try:
            async with self._db.transaction() as conn:
                epoch = (await conn.execute(lock.returning(enrolments.c.epoch))).scalar()
                if epoch is None:
                    raise _Refused
                found = (await conn.execute(check)).one()
                if found.taken or (not found.held and recovery is None):
                    raise _Refused
                if not found.held and recovery is not None:
                    await conn.execute(
                        update(enrolments)
                        .where(enrolments.c.user_id == user_id)
                        .values(
                            confirmed_at=now,
                            recovery_salt=recovery.salt,
                            recovery_params=recovery.params,
                        )
                    )
                    await _replace_codes(conn, user_id, recovery.hashes)
                await conn.execute(insert(authenticators).values(_row(user_id, authenticator)))
                await conn.execute(_drop_challenges(user_id))
        except (_Refused, sa_exc.IntegrityError):
            return None
        return int(epoch)

    async def accept_step(self, user_id: str, authenticator_id: str, step: int, now: float) -> bool:
        # A compare-and-set: retried, a step is still accepted at most once.
        params = {"uid": user_id, "aid": authenticator_id, "step": step, "now": now}
        return await self._db.count(ACCEPT_STEP, params, retry=True) == 1

    async def accept_assertion(
        self, user_id: str, authenticator_id: str, sign_count: int, now: float
    ) -> bool:
        # A compare-and-set: retried, a counter that stands still after the first run is
        # refused, as a replay would be (the user signs in again).
        params = {"uid": user_id, "aid": authenticator_id, "count": sign_count, "now": now}
        return await self._db.count(ACCEPT_ASSERTION, params, retry=True) == 1

    async def rename_authenticator(self, user_id: str, authenticator_id: str, name: str) -> bool:
        statement = (
            update(authenticators)
            .where(authenticators.c.id == authenticator_id, authenticators.c.user_id == user_id)
            .values(name=name)
        )
        # The same name twice is the same write: retried.
        return await self._db.run(statement, {}, read_rowcount, retry=True) == 1

    async def remove_authenticator(
        self, user_id: str, authenticator_id: str, *, expected_epoch: int | None = None
    ) -> int | None:
        # The user's row first (the epoch's compare-and-set, and its lock), then the removal,
        # whose count of the others is read after the lock: two removals at once cannot take
        # the last two.
        lock = update(enrolments).where(enrolments.c.user_id == user_id)
        if expected_epoch is not None:
            lock = lock.where(enrolments.c.epoch == expected_epoch)
        lock = lock.values(
            epoch=enrolments.c.epoch + 1, **_NOTHING_PENDING, updated_at=func.now()
        ).returning(enrolments.c.epoch)
        others = (
            select(func.count())
            .where(authenticators.c.user_id == user_id, authenticators.c.id != authenticator_id)
            .scalar_subquery()
        )
        remove = delete(authenticators).where(
            authenticators.c.id == authenticator_id,
            authenticators.c.user_id == user_id,
            others > 0,
        )
        try:
            async with self._db.transaction() as conn:
                epoch = (await conn.execute(lock)).scalar()
                if epoch is None or (await conn.execute(remove)).rowcount != 1:
                    raise _Refused
                await conn.execute(_drop_challenges(user_id))
        except _Refused:
            return None
        return int(epoch)

    async def start_webauthn_challenge(
        self, user_id: str, challenge: WebAuthnChallenge, now: float
    ) -> None:
        replaced = delete(webauthn_challenges).where(
            webauthn_challenges.c.user_id == user_id,
            or_(
                webauthn_challenges.c.expires_at <= now,
                and_(
                    webauthn_challenges.c.binding == challenge.binding,
                    webauthn_challenges.c.purpose == challenge.purpose.value,
                ),
            ),
        )
        stored = insert(webauthn_challenges).values(
            challenge_hash=challenge.challenge_hash,
            user_id=user_id,
            purpose=challenge.purpose.value,
            binding=challenge.binding,
            expires_at=challenge.expires_at,
        )
        if self._db.is_postgresql:
            # One statement: the deletion in its WITH clause (run before the insert).
            statement = stored.add_cte(replaced.cte("replaced"))
            await self._db.run(statement, {}, read_nothing, retry=False)
            return
        async with self._db.transaction() as conn:
            await conn.execute(replaced)
            await conn.execute(stored)

    async def consume_webauthn_challenge(
        self,
        user_id: str,
        purpose: CeremonyPurpose,
        challenge_hash: str,
        binding: str,
        now: float,
    ) -> bool:
        # The DELETE decides: of two answers to one challenge, one removes it. Retried, a
        # challenge the first run removed is not there for the second: refused.
        params = {
            "uid": user_id,
            "challenge_hash": challenge_hash,
            "purpose": purpose.value,
            "binding": binding,
        }
        rows = await self._db.rows(CONSUME_WEBAUTHN_CHALLENGE, params, retry=True)
        return bool(rows) and now < rows[0]["expires_at"]

    async def use_recovery_code(self, user_id: str, code_hash: str) -> bool:
        # The DELETE's row count decides: retried, a code is still used at most once.
        params = {"uid": user_id, "code_hash": code_hash}
        return await self._db.count(USE_RECOVERY_CODE, params, retry=True) == 1

    async def replace_recovery_codes(self, user_id: str, recovery: RecoveryCodeSet) -> bool:
        # Updating the user's row first locks it, so concurrent replacements take turns, and
        # whether the user still has a factor is read after the lock (a disable may have won).
        statement = (
            update(enrolments)
            .where(enrolments.c.user_id == user_id)
            .values(recovery_salt=recovery.salt, recovery_params=recovery.params)
        )
        held = select(exists().where(authenticators.c.user_id == user_id))
        try:
            async with self._db.transaction() as conn:
                if (await conn.execute(statement)).rowcount != 1 or not (
                    await conn.execute(held)
                ).scalar():
                    raise _Refused
                await _replace_codes(conn, user_id, recovery.hashes)
        except _Refused:
            return False
        return True

    async def disable(self, user_id: str) -> int:
        cleared = {
            "confirmed_at": None,
            "recovery_salt": None,
            "recovery_params": None,
            # The phone goes too: it comes back only verified again.
            "phone": None,
            "phone_verified_at": None,
            **_NOTHING_PENDING,
        }
        statement = (
            self._db.upsert(enrolments)
            .values(user_id=user_id, epoch=1, **cleared)
            .on_conflict_do_update(
                index_elements=[enrolments.c.user_id],
                set_={**cleared, "epoch": enrolments.c.epoch + 1, "updated_at": func.now()},
            )
            .returning(enrolments.c.epoch)
        )
        async with self._db.transaction() as conn:
            epoch = (await conn.execute(statement)).scalar_one()
            await conn.execute(delete(recovery_codes).where(recovery_codes.c.user_id == user_id))
            await conn.execute(delete(authenticators).where(authenticators.c.user_id == user_id))
            await conn.execute(_drop_challenges(user_id))
        return int(epoch)

    async def start_sms_challenge(self, user_id: str, challenge: SMSChallenge) -> None:
        values = {
            "sms_purpose": challenge.purpose.value,
            "sms_code_hash": challenge.code_hash,
            "sms_phone": challenge.phone,
            "sms_expires_at": challenge.expires_at,
        }
        statement = self._db.upsert(enrolments).values(user_id=user_id, epoch=0, **values)
        statement = statement.on_conflict_do_update(
            index_elements=[enrolments.c.user_id], set_={**values, "updated_at": func.now()}
        )
        await self._db.run(statement, {}, read_nothing, retry=True)

    async def consume_sms_challenge(
        self, user_id: str, purpose: SMSPurpose, code_hash: str, now: float
    ) -> SMSChallenge | None:
        pending = select(
            enrolments.c.sms_purpose,
            enrolments.c.sms_code_hash,
            enrolments.c.sms_phone,
            enrolments.c.sms_expires_at,
        ).where(enrolments.c.user_id == user_id)
        # The conditional UPDATE decides: of two requests with the same code, one clears it.
        consume = (
            update(enrolments)
            .where(
                enrolments.c.user_id == user_id,
                enrolments.c.sms_purpose == purpose.value,
                enrolments.c.sms_code_hash == code_hash,
                enrolments.c.sms_expires_at > now,
            )
            .values(sms_purpose=None, sms_code_hash=None, sms_phone=None, sms_expires_at=None)
        )
        async with self._db.transaction() as conn:
            row = (await conn.execute(pending)).first()
            challenge = None if row is None else _challenge(cast("Mapping[str, Any]", row._mapping))
            if challenge is None or challenge.code_hash != code_hash:
                return None
            if (await conn.execute(consume)).rowcount != 1:
                return None
        return challenge

    async def stored_secrets(self, after: str | None, limit: int) -> list[StoredSecrets]:
        app = and_(
            authenticators.c.user_id == enrolments.c.user_id,
            authenticators.c.kind == FactorKind.TOTP.value,
            authenticators.c.secret.is_not(None),
        )
        # In Python's order of strings, so that paging ``after`` a user id skips no one.
        ordered = self._db.in_code_point_order(enrolments.c.user_id)
        page = (
            select(enrolments.c.user_id)
            .where(or_(enrolments.c.pending_secret.is_not(None), exists().where(app)))
            .order_by(ordered)
            .limit(limit)
        )
        if after is not None:
            page = page.where(ordered > after)
        paged = page.subquery()
        query = (
            select(
                enrolments.c.user_id,
                enrolments.c.pending_secret,
                authenticators.c.id,
                authenticators.c.secret,
            )
            .select_from(
                paged.join(enrolments, enrolments.c.user_id == paged.c.user_id).outerjoin(
                    authenticators, app
                )
            )
            .order_by(ordered)
        )
        rows = await self._db.run(query, {}, read_all, retry=True)
        found: dict[str, tuple[str | None, list[tuple[str, str]]]] = {}
        for row in rows:
            _, apps = found.setdefault(row.user_id, (row.pending_secret, []))
            if row.id is not None:
                apps.append((row.id, row.secret))
        return [
            StoredSecrets(user_id, pending, tuple(sorted(apps)))
            for user_id, (pending, apps) in found.items()
        ]

    async def replace_secrets(self, old: StoredSecrets, new: StoredSecrets) -> bool:
        if new.user_id != old.user_id or [i for i, _ in new.apps] != [i for i, _ in old.apps]:
            return False
        user_id = old.user_id
        # The user's row first: the pending secret's compare-and-set, and the lock under which
        # the apps are read and rewritten (every change of them takes the row first).
        pending = (
            update(enrolments)
            .where(
                enrolments.c.user_id == user_id,
                enrolments.c.pending_secret.is_not_distinct_from(old.pending_secret),
            )
            .values(pending_secret=new.pending_secret, updated_at=func.now())
        )
        apps = select(authenticators.c.id, authenticators.c.secret).where(
            authenticators.c.user_id == user_id,
            authenticators.c.kind == FactorKind.TOTP.value,
            authenticators.c.secret.is_not(None),
        )
        try:
            async with self._db.transaction() as conn:
                if (await conn.execute(pending)).rowcount != 1:
                    raise _Refused
                held = tuple(sorted((row.id, row.secret) for row in await conn.execute(apps)))
                if held != old.apps:
                    raise _Refused
                for (app_id, secret), (_, was) in zip(new.apps, old.apps, strict=True):
                    if secret == was:
                        continue
                    rewrite = (
                        update(authenticators)
                        .where(
                            authenticators.c.id == app_id,
                            authenticators.c.user_id == user_id,
                            authenticators.c.secret == was,
                        )
                        .values(secret=secret)
                    )
                    if (await conn.execute(rewrite)).rowcount != 1:
                        raise _Refused
        except _Refused:
            # A second run after a first that landed finds the new values and reports a
            # change, which a rerun of the rotation then counts as already current.
            return False
        return True

    async def revoke_sessions(self, user_id: str) -> int:
        statement = (
            self._db.upsert(enrolments)
            .values(user_id=user_id, epoch=1)
            .on_conflict_do_update(
                index_elements=[enrolments.c.user_id],
                set_={
                    "epoch": enrolments.c.epoch + 1,
                    **_NOTHING_PENDING,
                    "updated_at": func.now(),
                },
            )
            .returning(enrolments.c.epoch)
        )
        # Not retried: a second run would bump the epoch twice (harmless, but not what was
        # asked).
        epoch = await self._bump_dropping_challenges(statement, user_id)
        if epoch is None:  # pragma: no cover - an upsert always writes
            raise AssertionError("the upsert wrote nothing")
        return epoch

    async def set_phone(
        self, user_id: str, phone: str, now: float, *, expected_epoch: int | None = None
    ) -> int | None:
        values = {"phone": phone, "phone_verified_at": now, **_NOTHING_PENDING}
        statement: Any
        if expected_epoch is not None:
            # A compare-and-set on the epoch: a bump that landed meanwhile wins. (The row is
            # there: the texted code that came back was stored in it.)
            statement = (
                update(enrolments)
                .where(enrolments.c.user_id == user_id, enrolments.c.epoch == expected_epoch)
                .values(**values, epoch=enrolments.c.epoch + 1, updated_at=func.now())
            )
        else:
            statement = (
                self._db.upsert(enrolments)
                .values(user_id=user_id, epoch=1, **values)
                .on_conflict_do_update(
                    index_elements=[enrolments.c.user_id],
                    set_={**values, "epoch": enrolments.c.epoch + 1, "updated_at": func.now()},
                )
            )
        # Not retried: a second run would count a second new phone, or (compare-and-set) find
        # the epoch moved and say "changed meanwhile" of its own change.
        return await self._bump_dropping_challenges(
            statement.returning(enrolments.c.epoch), user_id
        )

    async def _bump_dropping_challenges(self, bump: Insert | Update, user_id: str) -> int | None:
        """Runs ``bump`` (a write of the user's row returning its epoch) and, if it wrote, drops
        the user's WebAuthn challenges: on PostgreSQL in one statement (``WITH bumped AS
        (…RETURNING epoch), dropped AS (DELETE … WHERE EXISTS (SELECT FROM bumped)) SELECT
        epoch FROM bumped``: the deletion waits for the write's outcome), elsewhere in one
        transaction. The new epoch, or ``None`` if ``bump`` wrote nothing."""
        if self._db.is_postgresql:
            bumped = bump.cte("bumped")
            dropped = _drop_challenges(user_id).where(select(bumped.c.epoch).exists())
            statement = select(bumped.c.epoch).add_cte(dropped.cte("dropped"))
            epoch = await self._db.run(statement, {}, read_scalar_or_none, retry=False)
        else:
            async with self._db.transaction() as conn:
                epoch = (await conn.execute(bump)).scalar()
                if epoch is not None:
                    await conn.execute(_drop_challenges(user_id))
        return None if epoch is None else int(epoch)


async def _replace_codes(conn: AsyncConnection, user_id: str, hashes: tuple[str, ...]) -> None:
    await conn.execute(delete(recovery_codes).where(recovery_codes.c.user_id == user_id))
    unique = list(dict.fromkeys(hashes))
    if unique:
        await conn.execute(
            insert(recovery_codes), [{"user_id": user_id, "code_hash": h} for h in unique]
        )


def _challenge(row: Mapping[str, Any]) -> SMSChallenge | None:
    if row["sms_code_hash"] is None or row["sms_purpose"] is None:
        return None
    return SMSChallenge(
        purpose=SMSPurpose(row["sms_purpose"]),
        code_hash=row["sms_code_hash"],
        phone=row["sms_phone"],
        expires_at=row["sms_expires_at"],
    )


def _drop_challenges(user_id: str) -> Delete:
    return delete(webauthn_challenges).where(webauthn_challenges.c.user_id == user_id)


def _row(user_id: str, authenticator: Authenticator) -> dict[str, Any]:
    return {
        "id": authenticator.id,
        "user_id": user_id,
        "kind": authenticator.kind.value,
        "name": authenticator.name,
        "created_at": authenticator.created_at,
        "last_used_at": authenticator.last_used_at,
        "secret": authenticator.secret,
        "last_step": authenticator.last_step,
        "credential_id": authenticator.credential_id,
        "public_key": authenticator.public_key,
        "sign_count": authenticator.sign_count,
        "transports": ",".join(authenticator.transports) or None,
        "aaguid": authenticator.aaguid,
        "backed_up": authenticator.backed_up,
    }


def _authenticator(row: Mapping[str, Any]) -> Authenticator:
    transports = row["a_transports"]
    return Authenticator(
        id=row["a_id"],
        kind=FactorKind(row["a_kind"]),
        name=row["a_name"],
        created_at=row["a_created_at"],
        last_used_at=row["a_last_used_at"],
        secret=row["a_secret"],
        last_step=row["a_last_step"],
        credential_id=_bytes(row["a_credential_id"]),
        public_key=_bytes(row["a_public_key"]),
        sign_count=int(row["a_sign_count"]),
        transports=tuple(transports.split(",")) if transports else (),
        aaguid=row["a_aaguid"],
        # SQLite answers 0 or 1 through the union (its first part's column is a bare NULL).
        backed_up=bool(row["a_backed_up"]),
    )


def _bytes(value: bytes | memoryview | None) -> bytes | None:
    return None if value is None else bytes(value)
