"""The SQL store and site directory, on SQLAlchemy's async Core (SQLite or PostgreSQL).

Enrolments live in two tables, sites and their members in two more. Every method is one
transaction whose deciding statement is a conditional write, so a check and its update cannot be
split by another request, worker process or host: ``accept_step`` is a compare-and-set
``UPDATE``, ``use_recovery_code`` a ``DELETE`` whose row count says who won, ``add_member`` an
``INSERT … SELECT`` from the site's row. A method of one statement runs it in autocommit (the
statement is its own transaction): one round trip, not ``BEGIN``, the statement and ``COMMIT``.

The tables live on :data:`metadata`; add it to an Alembic ``target_metadata`` to manage them with
the application's own migrations (and pass ``create_tables=False``).
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from typing import Any, Self, TypeVar, cast

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    DateTime,
    Double,
    Executable,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    and_,
    bindparam,
    delete,
    event,
    false,
    func,
    insert,
    inspect,
    literal,
    or_,
    select,
    text,
    update,
)
from sqlalchemy import exc as sa_exc
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection, CursorResult, make_url
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine
from sqlalchemy.pool import ConnectionPoolEntry, StaticPool
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.elements import ClauseElement, ColumnElement
from sqlalchemy.util import greenlet_spawn

from mfa_guard.core.marker import EnrolmentSummary
from mfa_guard.core.recovery import SCRYPT_PARAMS, RecoveryCodeSet
from mfa_guard.errors import ConfigurationError, StoreUnavailable
from mfa_guard.settings import MFAGuardSettings
from mfa_guard.stores.base import (
    Enrolment,
    FactorStatus,
    SMSChallenge,
    SMSPurpose,
    StoredSecrets,
)
from mfa_guard.stores.sites import Member, Membership, Role, Site, SitePolicy

T = TypeVar("T")
logger = logging.getLogger("mfa_guard")
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
    # The session that began the pending set-up: a keyed hash of its nonce, never the nonce.
    # Added after the first release: the store adds it to an older table (empty) when it makes
    # its tables (``_create_and_add_columns``).
    Column("pending_binding", String(64), nullable=True),
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

sites = Table(
    "mfa_guard_sites",
    metadata,
    Column("id", String(255), primary_key=True),
    Column("name", String(255), nullable=False),
    # The 2FA policy: while ``enforce`` is on, members need 2FA from ``grace_deadline`` on.
    Column("enforce", Boolean, nullable=False, default=False, server_default=false()),
    Column("grace_deadline", Double, nullable=True),
    Column("policy_changed_by", String(255), nullable=True),
    Column("policy_changed_at", Double, nullable=True),
    Column("created_at", DateTime(timezone=True), nullable=True, server_default=func.now()),
    Column(
        "updated_at",
        DateTime(timezone=True),
        nullable=True,
        server_default=func.now(),
        onupdate=func.now(),
    ),
)

site_members = Table(
    "mfa_guard_site_members",
    metadata,
    Column(
        "site_id",
        String(255),
        ForeignKey("mfa_guard_sites.id", ondelete="CASCADE"),
        primary_key=True,
    ),
    Column("user_id", String(255), primary_key=True),
    Column("role", String(16), nullable=False),
    # A user's sites (``deadline``, ``memberships``): the primary key leads with the site.
    Index("ix_mfa_guard_site_members_user_id", "user_id"),
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

# Ids per ``IN (…)`` list: well under SQLite's bound-variable limit (999 before 3.32).
_IN_CHUNK = 500


def _enrolled() -> ColumnElement[bool]:
    return and_(enrolments.c.secret.is_not(None), enrolments.c.confirmed_at.is_not(None))


def _create_and_add_columns(conn: Connection) -> None:
    """Creates the missing tables, then adds to a table made by an earlier release the nullable
    columns it lacks (``create_all`` never alters an existing table), so an upgrade keeps every
    row. A missing column that cannot be added empty is refused with the statement to run."""
    metadata.create_all(conn)
    inspector = inspect(conn)
    for table in metadata.sorted_tables:
        present = {column["name"] for column in inspector.get_columns(table.name, table.schema)}
        for column in table.columns:
            if column.name in present:
                continue
            preparer = conn.dialect.identifier_preparer
            statement = (
                f"ALTER TABLE {preparer.format_table(table)} ADD COLUMN "
                f"{preparer.format_column(column)} {column.type.compile(dialect=conn.dialect)}"
            )
            if not column.nullable:
                raise ConfigurationError(
                    f"the table {table.name} was made by an earlier mfa_guard and lacks the "
                    f"column {column.name}, which cannot be added empty: migrate it ({statement} "
                    "with a value for every row)"
                )
            conn.execute(text(statement))
            logger.warning(
                "mfa_guard added the column %s.%s (%s)", table.name, column.name, statement
            )


def _lost_a_race(exc: BaseException) -> bool:
    """A CREATE that met a table another worker made meanwhile (SQLite reports it as an
    OperationalError, PostgreSQL as a duplicate table or a unique violation)."""
    text = str(getattr(exc, "orig", exc)).lower()
    return "already exists" in text or "duplicate" in text


def _is_unavailable(exc: BaseException) -> bool:
    if isinstance(exc, _UNAVAILABLE):
        return True
    if isinstance(exc, sa_exc.DBAPIError):
        if exc.connection_invalidated:
            return True
        sqlstate = getattr(exc.orig, "sqlstate", None) or getattr(exc.orig, "pgcode", None)
        return isinstance(sqlstate, str) and sqlstate.startswith(_UNAVAILABLE_SQLSTATES)
    # asyncpg's own errors, from the statements it runs itself (_Database.on_driver).
    return _connection_lost(exc) or _sqlstate_unavailable(exc)


def _connection_lost(exc: BaseException) -> bool:
    """An error of asyncpg (run directly) that leaves its connection unusable: the socket
    failed or closed, or the server ended the session (shutdown, restart)."""
    if isinstance(exc, OSError):  # ConnectionError, TimeoutError
        return True
    if not type(exc).__module__.startswith("asyncpg"):
        return False
    asyncpg: Any = importlib.import_module("asyncpg")
    sqlstate = getattr(exc, "sqlstate", None)
    return isinstance(exc, asyncpg.PostgresConnectionError | asyncpg.InterfaceError) or (
        isinstance(sqlstate, str) and sqlstate.startswith(("08", "57P"))
    )


def _sqlstate_unavailable(exc: BaseException) -> bool:
    sqlstate = getattr(exc, "sqlstate", None)
    return (
        type(exc).__module__.startswith("asyncpg")
        and isinstance(sqlstate, str)
        and sqlstate.startswith(_UNAVAILABLE_SQLSTATES)
    )


class _Database:
    """The engine a store and its site directory share: its connection pool, the lock taking
    turns on a single-connection pool, the one-time table creation and the error wrapping."""

    def __init__(
        self,
        owner: str,
        url: str | None,
        engine: AsyncEngine | None,
        *,
        create_tables: bool,
        engine_options: dict[str, Any],
    ) -> None:
        if engine is not None:
            if url is not None:
                raise ConfigurationError(f"{owner} takes a database URL or an engine, not both.")
            if engine_options:
                raise ConfigurationError(f"{owner} takes engine options only with a URL.")
            self.owns_engine = False
        elif url is not None:
            engine = create_async_engine(url, **_engine_options(url, engine_options))
            if engine.dialect.driver == "asyncpg":
                event.listen(engine.sync_engine.pool, "checkout", _refuse_closed)
            self.owns_engine = True
        else:
            raise ConfigurationError(f"{owner} needs a database URL or an engine.")
        if engine.dialect.name not in _DIALECTS:
            name = engine.dialect.name
            if self.owns_engine:
                # Nothing was connected yet, but the pool would warn when collected.
                engine.sync_engine.dispose()
            raise ConfigurationError(f"{owner} supports SQLite and PostgreSQL, not {name!r}.")
        self.engine = engine
        # A statement on its own needs no transaction round trips: in autocommit it commits as
        # it runs. The option engine shares the pool; the level is set and reset on each
        # connection as it is handed out and back, with no round trip.
        self._autocommit = engine.execution_options(isolation_level="AUTOCOMMIT")
        # The statements of every verify and re-check (built once, below) run on asyncpg
        # directly, on a connection of the same pool: SQLAlchemy's execution around a
        # statement costs twice its CPU (0.26 against 0.09 ms for a ``get``).
        self._on_asyncpg = engine.dialect.driver == "asyncpg"
        self._compiled: dict[int, tuple[str, tuple[str, ...], dict[str, Any]]] = {}
        self._create_tables = create_tables
        self._tables_ready = False
        self._tables_lock = asyncio.Lock()
        # A StaticPool (SQLite ``:memory:``) hands the same connection to every caller, whose
        # transactions would then mix: take turns instead.
        self._one_at_a_time = asyncio.Lock() if isinstance(engine.pool, StaticPool) else None

    @property
    def is_postgresql(self) -> bool:
        return self.engine.dialect.name == "postgresql"

    async def create_all(self) -> None:
        async with self._guard():
            await self._create_all()
        self._tables_ready = True

    async def close(self) -> None:
        if self.owns_engine:
            await self.engine.dispose()

    def upsert(self, table: Table) -> postgresql.Insert | sqlite.Insert:
        if self.is_postgresql:
            return postgresql.insert(table)
        return sqlite.insert(table)

    def in_code_point_order(self, column: ColumnElement[str]) -> ColumnElement[str]:
        """Sort as Python sorts strings. SQLite compares bytes already; PostgreSQL would use
        the database's locale (``Zoe`` after ``alice`` in ``en_US``), so ask for ``"C"``."""
        return column.collate("C") if self.is_postgresql else column

    @contextlib.asynccontextmanager
    async def transaction(self) -> AsyncIterator[AsyncConnection]:
        """Several statements as one transaction (``BEGIN`` … ``COMMIT``)."""
        async with self._guard():
            await self._ensure_tables()
            async with self.engine.begin() as conn:
                yield conn

    async def run(
        self,
        statement: Executable,
        params: Mapping[str, Any],
        read: Callable[[CursorResult[Any]], T],
        *,
        retry: bool,
    ) -> T:
        """One statement, committed as it runs, and what ``read`` takes from its result.

        With ``retry``, a statement that met a dead connection (``connection_invalidated``: a
        server restart or a network cut left it in the pool, or it died under the statement)
        runs once more on a new one, which the pool opens as the dead one is thrown away. Only
        for statements a second run cannot make wrong: reads, writes of the same values, and
        compare-and-set writes, whose second run after a first one that did reach the server
        finds its own change and reports no match, as the user's own retry would.
        """
        async with self._guard():
            await self._ensure_tables()
            try:
                async with self._autocommit.connect() as conn:
                    return read(await conn.execute(statement, params))
            except sa_exc.DBAPIError as exc:
                if not (retry and exc.connection_invalidated):
                    raise
            async with self._autocommit.connect() as conn:
                return read(await conn.execute(statement, params))

    async def rows(
        self, statement: Executable, params: Mapping[str, Any], *, retry: bool
    ) -> Sequence[Mapping[str, Any]]:
        """The rows of a built-once statement, by column name, committed as it runs (retried
        as :meth:`run` says)."""
        if self._on_asyncpg:
            return await self._on_driver(statement, params, _fetch, retry=retry)
        return await self.run(statement, params, _mappings, retry=retry)

    async def count(self, statement: Executable, params: Mapping[str, Any], *, retry: bool) -> int:
        """The rows a built-once ``UPDATE`` or ``DELETE`` changed, committed as it runs."""
        if self._on_asyncpg:
            return await self._on_driver(statement, params, _status_count, retry=retry)
        return await self.run(statement, params, _rowcount, retry=retry)

    async def _on_driver(
        self,
        statement: Executable,
        params: Mapping[str, Any],
        call: Callable[[Any, str, list[Any]], Awaitable[T]],
        *,
        retry: bool,
    ) -> T:
        """``statement`` run by asyncpg itself on a pooled connection, outside a transaction
        (so committed as it runs), from its SQL compiled once and asyncpg's own cache of
        prepared statements. The same pool, checkout hook and retry as :meth:`run`."""
        sql, names, defaults = self._compile(statement)
        values = {**defaults, **params}
        args = [values[name] for name in names]
        async with self._guard():
            await self._ensure_tables()
            attempts = 2 if retry else 1
            for attempt in range(attempts):
                raw = await self.engine.raw_connection()
                try:
                    result = await call(raw.driver_connection, sql, args)
                except BaseException as exc:
                    # Cancelled mid-statement, the connection's state is unknown: drop it too.
                    if _connection_lost(exc) or not isinstance(exc, Exception):
                        error = exc if isinstance(exc, Exception) else None
                        await greenlet_spawn(raw.invalidate, error)
                        if attempt + 1 < attempts and error is not None:
                            continue
                    else:
                        await greenlet_spawn(raw.close)
                    raise
                # In SQLAlchemy's async context: a connection beyond the pool's size is closed.
                await greenlet_spawn(raw.close)
                return result
        raise AssertionError("unreachable")  # pragma: no cover

    def _compile(self, statement: Executable) -> tuple[str, tuple[str, ...], dict[str, Any]]:
        found = self._compiled.get(id(statement))
        if found is None:
            compiled = cast(
                "SQLCompiler", cast("ClauseElement", statement).compile(dialect=self.engine.dialect)
            )
            names = tuple(compiled.positiontup or ())
            # Values built into the statement (``coalesce(…, 0.0)``), beside the caller's.
            defaults = {
                name: bind.value
                for name, bind in compiled.binds.items()
                if not bind.required and bind.callable is None
            }
            found = (str(compiled), names, defaults)
            self._compiled[id(statement)] = found
        return found

    async def _create_all(self) -> None:
        # Another worker may create a table between our check and our CREATE: each pass sees
        # the tables the others made, so one pass per table settles it. A backend that is really
        # down fails every pass, and the last failure is raised.
        passes = len(metadata.tables) + 1
        for attempt in range(passes):
            try:
                async with self.engine.begin() as conn:
                    await conn.run_sync(_create_and_add_columns)
                return
            except (sa_exc.OperationalError, sa_exc.ProgrammingError, sa_exc.IntegrityError) as exc:
                if attempt == passes - 1 or (_is_unavailable(exc) and not _lost_a_race(exc)):
                    raise

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


# The statements every verify and re-check makes, built once with bound parameters: building
# and caching a statement per call costs more than running it.
_GET = (
    select(
        enrolments.c.epoch,
        enrolments.c.secret,
        enrolments.c.confirmed_at,
        enrolments.c.last_step,
        enrolments.c.pending_secret,
        enrolments.c.pending_binding,
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
    .where(enrolments.c.user_id == bindparam("uid"))
    .order_by(recovery_codes.c.code_hash)
)
_SUMMARY = select(_enrolled().label("enrolled"), enrolments.c.epoch).where(
    enrolments.c.user_id == bindparam("uid")
)
_ACCEPT_STEP = (
    update(enrolments)
    .where(
        enrolments.c.user_id == bindparam("uid"),
        _enrolled(),
        or_(enrolments.c.last_step.is_(None), enrolments.c.last_step < bindparam("step")),
    )
    .values(last_step=bindparam("step"))
)
_USE_RECOVERY_CODE = delete(recovery_codes).where(
    recovery_codes.c.user_id == bindparam("uid"),
    recovery_codes.c.code_hash == bindparam("code_hash"),
)
# An enforcing policy without a deadline enforces at once, as SitePolicy.requires_by.
_DEADLINE = (
    select(func.min(func.coalesce(sites.c.grace_deadline, 0.0)).label("deadline"))
    .select_from(sites.join(site_members))
    .where(site_members.c.user_id == bindparam("uid"), sites.c.enforce)
)


# What every epoch bump voids: the unconfirmed set-up with its binding, and the pending SMS code.
_NOTHING_PENDING: dict[str, Any] = {
    "pending_secret": None,
    "pending_binding": None,
    "sms_purpose": None,
    "sms_code_hash": None,
    "sms_phone": None,
    "sms_expires_at": None,
}


def _all(result: CursorResult[Any]) -> Sequence[Any]:
    return result.all()


def _mappings(result: CursorResult[Any]) -> Sequence[Mapping[str, Any]]:
    return cast("Sequence[Mapping[str, Any]]", result.mappings().all())


async def _fetch(connection: Any, sql: str, args: list[Any]) -> Sequence[Mapping[str, Any]]:
    rows: Sequence[Mapping[str, Any]] = await connection.fetch(sql, *args)
    return rows


async def _status_count(connection: Any, sql: str, args: list[Any]) -> int:
    # asyncpg answers with the command tag: ``UPDATE 1``, ``DELETE 0``.
    status: str = await connection.execute(sql, *args)
    return int(status.rpartition(" ")[2])


def _first(result: CursorResult[Any]) -> Any:
    return result.first()


def _one(result: CursorResult[Any]) -> Any:
    return result.one()


def _scalar(result: CursorResult[Any]) -> Any:
    return result.scalar_one()


def _scalar_or_none(result: CursorResult[Any]) -> Any:
    return result.scalar_one_or_none()


def _rowcount(result: CursorResult[Any]) -> int:
    return result.rowcount


def _nothing(result: CursorResult[Any]) -> None:
    return None


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
        self._db = _Database(
            "SQLStore", url, engine, create_tables=create_tables, engine_options=engine_options
        )

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
        return self._db.engine

    def site_directory(self) -> SQLSiteDirectory:
        """The site directory in this store's database, on the same engine (and its lock and
        table creation); closing the directory leaves the engine to the store."""
        return SQLSiteDirectory._sharing(self._db)

    async def create_all(self) -> None:
        """Create the tables that do not exist yet (what ``create_tables`` does on first use)."""
        await self._db.create_all()

    async def close(self) -> None:
        """Dispose of the engine's connections, if the store created the engine."""
        await self._db.close()

    async def get(self, user_id: str) -> Enrolment | None:
        rows = await self._db.rows(_GET, {"uid": user_id}, retry=True)
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
        rows = await self._db.rows(_SUMMARY, {"uid": user_id}, retry=True)
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
                    _enrolled().label("enrolled"),
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
        await self._db.run(statement, {}, _nothing, retry=True)

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
        count = await self._db.count(_ACCEPT_STEP, {"uid": user_id, "step": step}, retry=True)
        return count == 1

    async def use_recovery_code(self, user_id: str, code_hash: str) -> bool:
        # The DELETE's row count decides: retried, a code is still used at most once.
        params = {"uid": user_id, "code_hash": code_hash}
        return await self._db.count(_USE_RECOVERY_CODE, params, retry=True) == 1

    async def replace_recovery_codes(self, user_id: str, recovery: RecoveryCodeSet) -> bool:
        # Updating the user's row first locks it, so concurrent replacements take turns.
        statement = (
            update(enrolments)
            .where(enrolments.c.user_id == user_id, _enrolled())
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
        await self._db.run(statement, {}, _nothing, retry=True)

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
        rows = await self._db.run(query, {}, _all, retry=True)
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
        return await self._db.run(statement, {}, _rowcount, retry=True) == 1

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
        return int(await self._db.run(statement, {}, _scalar, retry=False))

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
            epoch = await self._db.run(cas, {}, _scalar_or_none, retry=False)
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
        return int(await self._db.run(statement, {}, _scalar, retry=False))


class _SQLAdapter:
    """What the store's companions (the site directory, the trusted devices) share: built like
    :class:`SQLStore`, from a ``url`` with engine options or a shared ``engine``, or on a
    store's own engine (its lock and table creation), which closing them leaves to the store."""

    _db: _Database
    _owns_db: bool

    def __init__(
        self,
        url: str | None = None,
        *,
        engine: AsyncEngine | None = None,
        create_tables: bool = True,
        **engine_options: Any,
    ) -> None:
        self._db = _Database(
            type(self).__name__,
            url,
            engine,
            create_tables=create_tables,
            engine_options=engine_options,
        )
        self._owns_db = True

    @classmethod
    def _sharing(cls, db: _Database) -> Self:
        adapter = cls.__new__(cls)
        adapter._db = db
        adapter._owns_db = False
        return adapter

    @property
    def engine(self) -> AsyncEngine:
        return self._db.engine

    async def create_all(self) -> None:
        """Create the tables that do not exist yet (what ``create_tables`` does on first use)."""
        await self._db.create_all()

    async def close(self) -> None:
        """Dispose of the engine's connections, if this created the engine (one built on a
        store's engine leaves that to the store)."""
        if self._owns_db:
            await self._db.close()


class SQLSiteDirectory(_SQLAdapter):
    """Sites, their members and their 2FA policies in a SQL database, next to the enrolments.

    Built like :class:`SQLStore` (a ``url`` with engine options, or a shared ``engine``), or from
    a store with :meth:`SQLStore.site_directory` to share the store's engine. Backend failures
    raise :class:`~mfa_guard.errors.StoreUnavailable`.
    """

    async def deadline(self, user_id: str) -> float | None:
        rows = await self._db.rows(_DEADLINE, {"uid": user_id}, retry=True)
        deadline = rows[0]["deadline"]
        return None if deadline is None else float(deadline)

    async def memberships(self, user_id: str) -> list[Membership]:
        query = (
            select(*_SITE_COLUMNS, site_members.c.role)
            .select_from(sites.join(site_members))
            .where(site_members.c.user_id == user_id)
            .order_by(
                self._db.in_code_point_order(sites.c.name),
                self._db.in_code_point_order(sites.c.id),
            )
        )
        rows = await self._db.run(query, {}, _all, retry=True)
        return [Membership(_site(row), Role(row.role)) for row in rows]

    async def site(self, site_id: str) -> Site | None:
        query = select(*_SITE_COLUMNS).where(sites.c.id == site_id)
        row = await self._db.run(query, {}, _first, retry=True)
        return None if row is None else _site(row)

    async def role(self, site_id: str, user_id: str) -> Role | None:
        query = select(site_members.c.role).where(
            site_members.c.site_id == site_id, site_members.c.user_id == user_id
        )
        role = await self._db.run(query, {}, _scalar_or_none, retry=True)
        return None if role is None else Role(role)

    async def members(self, site_id: str) -> list[Member]:
        query = (
            select(site_members.c.user_id, site_members.c.role)
            .where(site_members.c.site_id == site_id)
            .order_by(self._db.in_code_point_order(site_members.c.user_id))
        )
        rows = await self._db.run(query, {}, _all, retry=True)
        return [Member(row.user_id, Role(row.role)) for row in rows]

    async def set_policy(self, site_id: str, policy: SitePolicy) -> bool:
        statement = (
            update(sites)
            .where(sites.c.id == site_id)
            .values(
                enforce=policy.enforce,
                grace_deadline=policy.grace_deadline,
                policy_changed_by=policy.changed_by,
                policy_changed_at=policy.changed_at,
            )
        )
        # Setting the same policy twice is setting it once: retried. (A second run matches
        # the row again: PostgreSQL and SQLite count matched rows, not changed ones.)
        return await self._db.run(statement, {}, _rowcount, retry=True) == 1

    async def save_site(self, site_id: str, name: str) -> Site:
        insert_site = self._db.upsert(sites).values(id=site_id, name=name)
        statement = insert_site.on_conflict_do_update(
            index_elements=[sites.c.id],
            set_={"name": insert_site.excluded.name, "updated_at": func.now()},
        ).returning(*_SITE_COLUMNS)
        return _site(await self._db.run(statement, {}, _one, retry=True))

    async def add_member(self, site_id: str, user_id: str, role: Role) -> bool:
        # The row comes from the site's own row, so an unknown site inserts nothing: no reliance
        # on the foreign key, which SQLite enforces only with PRAGMA foreign_keys=ON.
        from_site = select(
            sites.c.id, literal(user_id, String(255)), literal(role.value, String(16))
        ).where(sites.c.id == site_id)
        insert_member = self._db.upsert(site_members).from_select(
            ["site_id", "user_id", "role"], from_site
        )
        statement = insert_member.on_conflict_do_update(
            index_elements=[site_members.c.site_id, site_members.c.user_id],
            set_={"role": insert_member.excluded.role},
        ).returning(site_members.c.site_id)
        return await self._db.run(statement, {}, _first, retry=True) is not None

    async def remove_member(self, site_id: str, user_id: str) -> bool:
        statement = delete(site_members).where(
            site_members.c.site_id == site_id, site_members.c.user_id == user_id
        )
        # Not retried: a second run after a first that reached the server would say "no such
        # member" of one it just removed.
        return await self._db.run(statement, {}, _rowcount, retry=False) == 1


_SITE_COLUMNS = (
    sites.c.id,
    sites.c.name,
    sites.c.enforce,
    sites.c.grace_deadline,
    sites.c.policy_changed_by,
    sites.c.policy_changed_at,
)


def _site(row: Any) -> Site:
    policy = SitePolicy(
        enforce=bool(row.enforce),
        grace_deadline=row.grace_deadline,
        changed_by=row.policy_changed_by,
        changed_at=row.policy_changed_at,
    )
    return Site(id=row.id, name=row.name, policy=policy)


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


def _refuse_closed(dbapi_connection: Any, record: ConnectionPoolEntry, proxy: Any) -> None:
    """A pool ``checkout`` hook: a pooled asyncpg connection that has seen its socket close (a
    server restart, a network cut) is thrown away and replaced, with no round trip to find out.
    """
    driver = record.driver_connection
    if driver is not None and driver.is_closed():
        raise sa_exc.DisconnectionError("the pooled connection was closed by the server")


# The engines the stores create log on "sqlalchemy.engine.Engine.mfa_guard".
_LOGGING_NAME = "mfa_guard"


class _NoValuesLogged(logging.Filter):
    """Drops the DEBUG records that print what the kit's tables hold or are given (phone numbers
    in the clear): SQLAlchemy's rows on the kit's engine logger (``hide_parameters`` does not
    cover rows) and aiosqlite's calls on the kit's tables, which it logs with their values."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno > logging.DEBUG:
            return True
        if record.name != "aiosqlite":
            return False
        args = record.args if isinstance(record.args, tuple) else ()
        return not any(
            isinstance(call := getattr(arg, "args", None), tuple)
            and any(isinstance(part, str) and "mfa_guard_" in part for part in call)
            for arg in args
        )


logging.getLogger(f"sqlalchemy.engine.Engine.{_LOGGING_NAME}").addFilter(_NoValuesLogged())
logging.getLogger("aiosqlite").addFilter(_NoValuesLogged())


def _engine_options(url: str, options: dict[str, Any]) -> dict[str, Any]:
    """Defaults for an engine the store creates; the caller's options win."""
    parsed = make_url(url)
    defaults: dict[str, Any] = {
        # Bound values are secrets and code hashes: keep them out of logs and error messages.
        "hide_parameters": True,
        # Rows too (see _NoValuesLogged).
        "logging_name": _LOGGING_NAME,
    }
    connect_args: dict[str, Any] = {}
    if parsed.get_backend_name() == "sqlite":
        # Seconds to wait for another writer (another worker) before "database is locked".
        connect_args["timeout"] = 30
    elif parsed.get_backend_name() == "postgresql" and parsed.get_driver_name() == "asyncpg":
        # Fail closed within seconds, rather than asyncpg's minute, when the server is gone.
        connect_args["timeout"] = 10
    # No pool_pre_ping for PostgreSQL (a round trip before every call): a pooled connection
    # asyncpg knows is closed is replaced on checkout (_refuse_closed), and a statement that
    # meets a dead one anyway runs again on a new one where that is safe (_Database.run).
    merged = {**defaults, **options}
    merged["connect_args"] = {**connect_args, **options.get("connect_args", {})}
    return merged


__all__ = [
    "SQLSiteDirectory",
    "SQLStore",
    "enrolments",
    "metadata",
    "recovery_codes",
    "site_members",
    "sites",
]
