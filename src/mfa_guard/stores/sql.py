"""The SQL store: enrolments in two tables, on SQLAlchemy's async Core (SQLite or PostgreSQL).

Every method is one transaction whose deciding statement is a conditional write, so a check and
its update cannot be split by another request, worker process or host: ``accept_step`` is a
compare-and-set ``UPDATE``, ``use_recovery_code`` a ``DELETE`` whose row count says who won.

The tables live on :data:`metadata`; add it to an Alembic ``target_metadata`` to manage them with
the application's own migrations (and pass ``create_tables=False``).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

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
    and_,
    delete,
    func,
    insert,
    or_,
    select,
    update,
)
from sqlalchemy import exc as sa_exc
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine
from sqlalchemy.pool import StaticPool
from sqlalchemy.sql.elements import ColumnElement

from mfa_guard.core.marker import EnrolmentSummary
from mfa_guard.core.recovery import SCRYPT_PARAMS, RecoveryCodeSet
from mfa_guard.errors import ConfigurationError, StoreUnavailable
from mfa_guard.settings import MFAGuardSettings
from mfa_guard.stores.base import Enrolment, SMSChallenge, SMSPurpose

metadata = MetaData()

enrolments = Table(
    "mfa_guard_enrolments",
    metadata,
    Column("user_id", String(255), primary_key=True),
    Column("epoch", Integer, nullable=False, default=0, server_default="0"),
    # A Fernet token, never the plain secret.
    Column("secret", Text, nullable=True),
    Column("confirmed_at", Double, nullable=True),
    Column("last_step", BigInteger, nullable=True),
    Column("pending_secret", Text, nullable=True),
    Column("recovery_salt", String(64), nullable=True),
    Column("recovery_params", String(64), nullable=True),
    # The verified phone (E.164) and the one pending SMS code: a keyed hash, never the code.
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

recovery_codes = Table(
    "mfa_guard_recovery_codes",
    metadata,
    Column(
        "user_id",
        String(255),
        ForeignKey("mfa_guard_enrolments.user_id", ondelete="CASCADE"),
        primary_key=True,
    ),
    Column("code_hash", String(128), primary_key=True),
)

_DIALECTS = ("sqlite", "postgresql")
# SQLSTATE classes meaning "the server is not answering", not "the statement was wrong":
# connection exception, insufficient resources, operator intervention (shutdown, restart).
_UNAVAILABLE_SQLSTATES = ("08", "53", "57P")
_UNAVAILABLE = (
    sa_exc.OperationalError,
    sa_exc.InterfaceError,
    sa_exc.DisconnectionError,
    # The connection pool ran dry for ``pool_timeout`` seconds.
    sa_exc.TimeoutError,
    # Also covers ConnectionError and asyncio.TimeoutError, which are OSErrors since 3.11.
    OSError,
)


def _enrolled() -> ColumnElement[bool]:
    return and_(enrolments.c.secret.is_not(None), enrolments.c.confirmed_at.is_not(None))


def _is_unavailable(exc: BaseException) -> bool:
    if isinstance(exc, _UNAVAILABLE):
        return True
    if isinstance(exc, sa_exc.DBAPIError):
        if exc.connection_invalidated:
            return True
        sqlstate = getattr(exc.orig, "sqlstate", None) or getattr(exc.orig, "pgcode", None)
        return isinstance(sqlstate, str) and sqlstate.startswith(_UNAVAILABLE_SQLSTATES)
    return False


class SQLStore:
    """Enrolments in a SQL database through SQLAlchemy's asyncio engine.

    Give either a database ``url`` (``sqlite+aiosqlite:///mfa_guard.db``,
    ``postgresql+asyncpg://user@host/db``; extra keyword arguments go to
    :func:`~sqlalchemy.ext.asyncio.create_async_engine`) or an existing ``engine``, which the
    store then shares and never disposes. With ``create_tables`` the tables are created on first
    use if missing. Backend failures raise :class:`~mfa_guard.errors.StoreUnavailable`.
    """

    def __init__(
        self,
        url: str | None = None,
        *,
        engine: AsyncEngine | None = None,
        create_tables: bool = True,
        **engine_options: Any,
    ) -> None:
        if engine is not None:
            if url is not None:
                raise ConfigurationError("SQLStore takes a database URL or an engine, not both.")
            if engine_options:
                raise ConfigurationError("SQLStore takes engine options only with a URL.")
            self._owns_engine = False
        elif url is not None:
            engine = create_async_engine(url, **_engine_options(url, engine_options))
            self._owns_engine = True
        else:
            raise ConfigurationError("SQLStore needs a database URL or an engine.")
        if engine.dialect.name not in _DIALECTS:
            name = engine.dialect.name
            if self._owns_engine:
                # Nothing was connected yet, but the pool would warn when collected.
                engine.sync_engine.dispose()
            raise ConfigurationError(f"SQLStore supports SQLite and PostgreSQL, not {name!r}.")
        self._engine = engine
        self._create_tables = create_tables
        self._tables_ready = False
        self._tables_lock = asyncio.Lock()
        # A StaticPool (SQLite ``:memory:``) hands the same connection to every caller, whose
        # transactions would then mix: take turns instead.
        self._one_at_a_time = asyncio.Lock() if isinstance(engine.pool, StaticPool) else None

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

    @property
    def engine(self) -> AsyncEngine:
        return self._engine

    async def create_all(self) -> None:
        """Create the tables that do not exist yet (what ``create_tables`` does on first use)."""
        async with self._guard():
            await self._create_all()
        self._tables_ready = True

    async def close(self) -> None:
        """Dispose of the engine's connections, if the store created the engine."""
        if self._owns_engine:
            await self._engine.dispose()

    async def get(self, user_id: str) -> Enrolment | None:
        query = (
            select(
                enrolments.c.epoch,
                enrolments.c.secret,
                enrolments.c.confirmed_at,
                enrolments.c.last_step,
                enrolments.c.pending_secret,
                enrolments.c.recovery_salt,
                enrolments.c.recovery_params,
                enrolments.c.phone,
                enrolments.c.phone_verified_at,
                enrolments.c.sms_purpose,
                enrolments.c.sms_code_hash,
                enrolments.c.sms_phone,
                enrolments.c.sms_expires_at,
                recovery_codes.c.code_hash,
            )
            .select_from(enrolments.outerjoin(recovery_codes))
            .where(enrolments.c.user_id == user_id)
            .order_by(recovery_codes.c.code_hash)
        )
        async with self._transaction() as conn:
            rows = (await conn.execute(query)).all()
        if not rows:
            return None
        first = rows[0]
        recovery = None
        if first.recovery_salt is not None:
            recovery = RecoveryCodeSet(
                salt=first.recovery_salt,
                hashes=tuple(row.code_hash for row in rows if row.code_hash is not None),
                params=first.recovery_params or SCRYPT_PARAMS,
            )
        return Enrolment(
            user_id=user_id,
            epoch=first.epoch,
            secret=first.secret,
            confirmed_at=first.confirmed_at,
            last_step=first.last_step,
            pending_secret=first.pending_secret,
            recovery=recovery,
            phone=first.phone,
            phone_verified_at=first.phone_verified_at,
            sms_challenge=_challenge(first),
        )

    async def summary(self, user_id: str) -> EnrolmentSummary:
        query = select(_enrolled().label("enrolled"), enrolments.c.epoch).where(
            enrolments.c.user_id == user_id
        )
        async with self._transaction() as conn:
            row = (await conn.execute(query)).first()
        if row is None:
            return EnrolmentSummary(enrolled=False, epoch=0)
        return EnrolmentSummary(enrolled=bool(row.enrolled), epoch=int(row.epoch))

    async def begin_enrolment(self, user_id: str, pending_secret: str) -> None:
        statement = self._upsert_enrolment().values(
            user_id=user_id, epoch=0, pending_secret=pending_secret
        )
        statement = statement.on_conflict_do_update(
            index_elements=[enrolments.c.user_id],
            set_={"pending_secret": statement.excluded.pending_secret, "updated_at": func.now()},
        )
        async with self._transaction() as conn:
            await conn.execute(statement)

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
                ~_enrolled(),
            )
            .values(
                secret=enrolments.c.pending_secret,
                pending_secret=None,
                confirmed_at=now,
                last_step=step,
                epoch=enrolments.c.epoch + 1,
                recovery_salt=recovery.salt,
                recovery_params=recovery.params,
            )
            .returning(enrolments.c.epoch)
        )
        async with self._transaction() as conn:
            epoch = (await conn.execute(statement)).scalar_one_or_none()
            if epoch is None:
                return None
            await _replace_codes(conn, user_id, recovery.hashes)
        return int(epoch)

    async def accept_step(self, user_id: str, step: int) -> bool:
        statement = (
            update(enrolments)
            .where(
                enrolments.c.user_id == user_id,
                _enrolled(),
                or_(enrolments.c.last_step.is_(None), enrolments.c.last_step < step),
            )
            .values(last_step=step)
        )
        async with self._transaction() as conn:
            result = await conn.execute(statement)
        return result.rowcount == 1

    async def use_recovery_code(self, user_id: str, code_hash: str) -> bool:
        statement = delete(recovery_codes).where(
            recovery_codes.c.user_id == user_id, recovery_codes.c.code_hash == code_hash
        )
        async with self._transaction() as conn:
            result = await conn.execute(statement)
        return result.rowcount == 1

    async def replace_recovery_codes(self, user_id: str, recovery: RecoveryCodeSet) -> bool:
        # Updating the user's row first locks it, so concurrent replacements take turns.
        statement = (
            update(enrolments)
            .where(enrolments.c.user_id == user_id, _enrolled())
            .values(recovery_salt=recovery.salt, recovery_params=recovery.params)
        )
        async with self._transaction() as conn:
            if (await conn.execute(statement)).rowcount != 1:
                return False
            await _replace_codes(conn, user_id, recovery.hashes)
        return True

    async def disable(self, user_id: str) -> int:
        cleared = {
            "secret": None,
            "confirmed_at": None,
            "last_step": None,
            "pending_secret": None,
            "recovery_salt": None,
            "recovery_params": None,
            # A pending SMS code goes too; the verified phone stays, as a setting of the account.
            "sms_purpose": None,
            "sms_code_hash": None,
            "sms_phone": None,
            "sms_expires_at": None,
        }
        statement = (
            self._upsert_enrolment()
            .values(user_id=user_id, epoch=1, **cleared)
            .on_conflict_do_update(
                index_elements=[enrolments.c.user_id],
                set_={**cleared, "epoch": enrolments.c.epoch + 1, "updated_at": func.now()},
            )
            .returning(enrolments.c.epoch)
        )
        async with self._transaction() as conn:
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
        statement = self._upsert_enrolment().values(user_id=user_id, epoch=0, **values)
        statement = statement.on_conflict_do_update(
            index_elements=[enrolments.c.user_id], set_={**values, "updated_at": func.now()}
        )
        async with self._transaction() as conn:
            await conn.execute(statement)

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
        async with self._transaction() as conn:
            row = (await conn.execute(pending)).first()
            challenge = None if row is None else _challenge(row)
            if challenge is None or challenge.code_hash != code_hash:
                return None
            if (await conn.execute(consume)).rowcount != 1:
                return None
        return challenge

    async def set_phone(self, user_id: str, phone: str, now: float) -> int:
        values = {"phone": phone, "phone_verified_at": now}
        statement = (
            self._upsert_enrolment()
            .values(user_id=user_id, epoch=1, **values)
            .on_conflict_do_update(
                index_elements=[enrolments.c.user_id],
                set_={**values, "epoch": enrolments.c.epoch + 1, "updated_at": func.now()},
            )
            .returning(enrolments.c.epoch)
        )
        async with self._transaction() as conn:
            epoch = (await conn.execute(statement)).scalar_one()
        return int(epoch)

    def _upsert_enrolment(self) -> postgresql.Insert | sqlite.Insert:
        if self._engine.dialect.name == "postgresql":
            return postgresql.insert(enrolments)
        return sqlite.insert(enrolments)

    async def _create_all(self) -> None:
        try:
            async with self._engine.begin() as conn:
                await conn.run_sync(metadata.create_all)
        except (sa_exc.OperationalError, sa_exc.ProgrammingError, sa_exc.IntegrityError):
            # Another worker may have created a table between our check and our CREATE; the
            # second pass sees it. A backend that is really down fails again.
            async with self._engine.begin() as conn:
                await conn.run_sync(metadata.create_all)

    async def _ensure_tables(self) -> None:
        if self._tables_ready or not self._create_tables:
            return
        async with self._tables_lock:
            if not self._tables_ready:
                await self._create_all()
                self._tables_ready = True

    @contextlib.asynccontextmanager
    async def _guard(self) -> AsyncIterator[None]:
        """Take turns if the pool has a single connection; report a backend failure as such."""
        try:
            async with self._one_at_a_time or contextlib.nullcontext():
                yield
        except Exception as exc:
            if _is_unavailable(exc):
                raise StoreUnavailable() from exc
            raise

    @contextlib.asynccontextmanager
    async def _transaction(self) -> AsyncIterator[AsyncConnection]:
        async with self._guard():
            await self._ensure_tables()
            async with self._engine.begin() as conn:
                yield conn


async def _replace_codes(conn: AsyncConnection, user_id: str, hashes: tuple[str, ...]) -> None:
    await conn.execute(delete(recovery_codes).where(recovery_codes.c.user_id == user_id))
    unique = list(dict.fromkeys(hashes))
    if unique:
        await conn.execute(
            insert(recovery_codes), [{"user_id": user_id, "code_hash": h} for h in unique]
        )


def _challenge(row: Any) -> SMSChallenge | None:
    if row.sms_code_hash is None or row.sms_purpose is None:
        return None
    return SMSChallenge(
        purpose=SMSPurpose(row.sms_purpose),
        code_hash=row.sms_code_hash,
        phone=row.sms_phone,
        expires_at=row.sms_expires_at,
    )


def _engine_options(url: str, options: dict[str, Any]) -> dict[str, Any]:
    """Defaults for an engine the store creates; the caller's options win."""
    parsed = make_url(url)
    defaults: dict[str, Any] = {
        # Bound values are secrets and code hashes: keep them out of logs and error messages.
        "hide_parameters": True,
    }
    connect_args: dict[str, Any] = {}
    if parsed.get_backend_name() == "sqlite":
        # Seconds to wait for another writer (another worker) before "database is locked".
        connect_args["timeout"] = 30
    elif parsed.get_backend_name() == "postgresql":
        # A server restart leaves dead pooled connections behind; test each one on checkout.
        defaults["pool_pre_ping"] = True
        if parsed.get_driver_name() == "asyncpg":
            # Fail closed within seconds, rather than asyncpg's minute, when the server is gone.
            connect_args["timeout"] = 10
    merged = {**defaults, **options}
    merged["connect_args"] = {**connect_args, **options.get("connect_args", {})}
    return merged


__all__ = ["SQLStore", "enrolments", "metadata", "recovery_codes"]
