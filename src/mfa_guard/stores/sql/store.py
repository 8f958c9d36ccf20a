"""The MFA store on SQL (:class:`SQLStore`): enrolments and their recovery codes.

Every method is one transaction whose deciding statement is a conditional write, so a check and
its update cannot be split by another request, worker process or host: ``accept_step`` is a
compare-and-set ``UPDATE``, ``use_recovery_code`` a ``DELETE`` whose row count says who won. A
method of one statement runs it in autocommit (the statement is its own transaction): one round
trip, not ``BEGIN``, the statement and ``COMMIT``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, cast

from sqlalchemy import delete, func, insert, or_, select, update
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncConnection

from mfa_guard.core.marker import EnrolmentSummary
from mfa_guard.core.recovery import SCRYPT_PARAMS, RecoveryCodeSet
from mfa_guard.settings import MFAGuardSettings
from mfa_guard.stores.base import (
    Enrolment,
    FactorStatus,
    SMSChallenge,
    SMSPurpose,
    StoredSecrets,
)
from mfa_guard.stores.sql.adapter import SQLAdapter
from mfa_guard.stores.sql.engine import (
    read_all,
    read_nothing,
    read_rowcount,
    read_scalar,
    read_scalar_or_none,
)
from mfa_guard.stores.sql.schema import (
    ACCEPT_STEP,
    GET_ENROLMENT,
    GET_SUMMARY,
    USE_RECOVERY_CODE,
    enrolled,
    enrolments,
    recovery_codes,
)

# Ids per ``IN (…)`` list: well under SQLite's bound-variable limit (999 before 3.32).
_IN_CHUNK = 500

# What every epoch bump voids: the unconfirmed set-up with its binding, and the pending SMS code.
_NOTHING_PENDING: dict[str, Any] = {
    "pending_secret": None,
    "pending_binding": None,
    "sms_purpose": None,
    "sms_code_hash": None,
    "sms_phone": None,
    "sms_expires_at": None,
}


class SQLStore(SQLAdapter):
    """Enrolments in a SQL database through SQLAlchemy's asyncio engine.

    Give either a database ``url`` (``sqlite+aiosqlite:///mfa_guard.db``,
    ``postgresql+asyncpg://user@host/db``; extra keyword arguments go to
    :func:`~sqlalchemy.ext.asyncio.create_async_engine`) or an existing ``engine``, which the
    store then shares and never disposes. With ``create_tables`` the tables are created on first
    use if missing. Backend failures raise :class:`~mfa_guard.errors.StoreUnavailable`. The site
    directory and the device store run on its engine with ``SQLSiteDirectory.sharing(store)``
    and ``SQLDeviceStore.sharing(store)``.
    """

    @classmethod
    def from_settings(cls, settings: MFAGuardSettings, **engine_options: Any) -> SQLStore:
        """A store on ``settings.database_url`` with the pool settings (PostgreSQL)."""
        options: dict[str, Any] = {}
        if make_url(settings.database_url).get_backend_name() == "postgresql":
            options = {
                "pool_size": settings.database_pool_size,
                "max_overflow": settings.database_max_overflow,
                "pool_timeout": settings.database_pool_timeout,
            }
        return cls(settings.database_url, **{**options, **engine_options})

    async def get(self, user_id: str) -> Enrolment | None:
        rows = await self._db.rows(GET_ENROLMENT, {"uid": user_id}, retry=True)
        if not rows:
            return None
        first = rows[0]
        recovery = None
        if first["recovery_salt"] is not None:
            recovery = RecoveryCodeSet(
                salt=first["recovery_salt"],
                hashes=tuple(row["code_hash"] for row in rows if row["code_hash"] is not None),
                params=first["recovery_params"] or SCRYPT_PARAMS,
            )
        return Enrolment(
            user_id=user_id,
            epoch=first["epoch"],
            secret=first["secret"],
            confirmed_at=first["confirmed_at"],
            last_step=first["last_step"],
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
        async with self._db.transaction() as conn:
            for start in range(0, len(wanted), _IN_CHUNK):
                query = select(
                    enrolments.c.user_id,
                    enrolled().label("enrolled"),
                    enrolments.c.phone_verified_at.is_not(None).label("phone_verified"),
                ).where(enrolments.c.user_id.in_(wanted[start : start + _IN_CHUNK]))
                for row in await conn.execute(query):
                    found[row.user_id] = FactorStatus(
                        enrolled=bool(row.enrolled), phone_verified=bool(row.phone_verified)
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

    async def confirm_enrolment(
        self,
        user_id: str,
        pending_secret: str,
        *,
        step: int,
        recovery: RecoveryCodeSet,
        now: float,
    ) -> int | None:
        statement = (
            update(enrolments)
            .where(
                enrolments.c.user_id == user_id,
                enrolments.c.pending_secret == pending_secret,
                ~enrolled(),
            )
            .values(
                secret=enrolments.c.pending_secret,
                **_NOTHING_PENDING,
                confirmed_at=now,
                last_step=step,
                epoch=enrolments.c.epoch + 1,
                recovery_salt=recovery.salt,
                recovery_params=recovery.params,
            )
            .returning(enrolments.c.epoch)
        )
        async with self._db.transaction() as conn:
            epoch = (await conn.execute(statement)).scalar_one_or_none()
            if epoch is None:
                return None
            await _replace_codes(conn, user_id, recovery.hashes)
        return int(epoch)

    async def accept_step(self, user_id: str, step: int) -> bool:
        # A compare-and-set: retried, a step is still accepted at most once.
        count = await self._db.count(ACCEPT_STEP, {"uid": user_id, "step": step}, retry=True)
        return count == 1

    async def use_recovery_code(self, user_id: str, code_hash: str) -> bool:
        # The DELETE's row count decides: retried, a code is still used at most once.
        params = {"uid": user_id, "code_hash": code_hash}
        return await self._db.count(USE_RECOVERY_CODE, params, retry=True) == 1

    async def replace_recovery_codes(self, user_id: str, recovery: RecoveryCodeSet) -> bool:
        # Updating the user's row first locks it, so concurrent replacements take turns.
        statement = (
            update(enrolments)
            .where(enrolments.c.user_id == user_id, enrolled())
            .values(recovery_salt=recovery.salt, recovery_params=recovery.params)
        )
        async with self._db.transaction() as conn:
            if (await conn.execute(statement)).rowcount != 1:
                return False
            await _replace_codes(conn, user_id, recovery.hashes)
        return True

    async def disable(self, user_id: str) -> int:
        cleared = {
            "secret": None,
            "confirmed_at": None,
            "last_step": None,
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
        query = (
            select(enrolments.c.user_id, enrolments.c.secret, enrolments.c.pending_secret)
            .where(or_(enrolments.c.secret.is_not(None), enrolments.c.pending_secret.is_not(None)))
            .order_by(enrolments.c.user_id)
            .limit(limit)
        )
        if after is not None:
            query = query.where(enrolments.c.user_id > after)
        rows = await self._db.run(query, {}, read_all, retry=True)
        return [StoredSecrets(row.user_id, row.secret, row.pending_secret) for row in rows]

    async def replace_secrets(self, old: StoredSecrets, new: StoredSecrets) -> bool:
        statement = (
            update(enrolments)
            .where(
                enrolments.c.user_id == old.user_id,
                enrolments.c.secret.is_not_distinct_from(old.secret),
                enrolments.c.pending_secret.is_not_distinct_from(old.pending_secret),
            )
            .values(secret=new.secret, pending_secret=new.pending_secret, updated_at=func.now())
        )
        # A compare-and-set: a second run after a first that landed finds the new values and
        # reports a change, which a rerun of the rotation then counts as already current.
        return await self._db.run(statement, {}, read_rowcount, retry=True) == 1

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
        return int(await self._db.run(statement, {}, read_scalar, retry=False))

    async def set_phone(
        self, user_id: str, phone: str, now: float, *, expected_epoch: int | None = None
    ) -> int | None:
        values = {"phone": phone, "phone_verified_at": now, **_NOTHING_PENDING}
        if expected_epoch is not None:
            # A compare-and-set on the epoch: a bump that landed meanwhile wins. (The row is
            # there: the texted code that came back was stored in it.)
            cas = (
                update(enrolments)
                .where(enrolments.c.user_id == user_id, enrolments.c.epoch == expected_epoch)
                .values(**values, epoch=enrolments.c.epoch + 1, updated_at=func.now())
                .returning(enrolments.c.epoch)
            )
            # Not retried: a second run after a first that landed would find the epoch moved
            # and say "changed meanwhile" of its own change.
            epoch = await self._db.run(cas, {}, read_scalar_or_none, retry=False)
            return None if epoch is None else int(epoch)
        statement = (
            self._db.upsert(enrolments)
            .values(user_id=user_id, epoch=1, **values)
            .on_conflict_do_update(
                index_elements=[enrolments.c.user_id],
                set_={**values, "epoch": enrolments.c.epoch + 1, "updated_at": func.now()},
            )
            .returning(enrolments.c.epoch)
        )
        # Not retried: a second run would count a second new phone.
        return int(await self._db.run(statement, {}, read_scalar, retry=False))


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
