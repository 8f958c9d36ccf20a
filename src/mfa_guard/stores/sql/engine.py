"""The engine the SQL adapters run on, and what they share.

:class:`Database` wraps a SQLAlchemy ``AsyncEngine``: the options of an engine it creates, the
lock taking turns on a single-connection pool, the one-time schema check (the tables created,
or migrated, by :func:`~mfa_guard.stores.sql.migrations.prepare`), one statement in
autocommit (retried on a dead connection where a second run cannot be wrong), the built-once
statements run on asyncpg directly, and the classification of errors into
:class:`~mfa_guard.errors.StoreUnavailable`. It also keeps the values in the kit's tables out of
SQLAlchemy's and aiosqlite's ``DEBUG`` logs, from the moment it is set up. The ``read_*``
functions take from a statement's result what its caller wants (:meth:`Database.run`).
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from typing import Any, TypeVar, cast

from sqlalchemy import Executable, Table, event
from sqlalchemy import exc as sa_exc
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import CursorResult, ExceptionContext, make_url
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine
from sqlalchemy.pool import ConnectionPoolEntry, StaticPool
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.elements import ClauseElement, ColumnElement
from sqlalchemy.util import greenlet_spawn

from mfa_guard.errors import ConfigurationError, StoreUnavailable
from mfa_guard.stores.sql import migrations

T = TypeVar("T")

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
# The engines the adapters create log on "sqlalchemy.engine.Engine.mfa_guard".
_LOGGING_NAME = "mfa_guard"


class Database:
    """The engine an adapter runs on, and its companions with it: its connection pool, the lock
    taking turns on a single-connection pool, the one-time schema check and the error
    wrapping. ``auto_migrate``: whether that check may migrate tables that exist (``None``: on
    SQLite only); an empty database is always created."""

    def __init__(
        self,
        owner: str,
        url: str | None,
        engine: AsyncEngine | None,
        *,
        create_tables: bool,
        auto_migrate: bool | None = None,
        engine_options: dict[str, Any],
    ) -> None:
        _keep_values_out_of_logs()
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
                event.listen(engine.sync_engine, "handle_error", _drop_timed_out)
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
        # The statements of every verify and re-check (built once, in schema.py) run on asyncpg
        # directly, on a connection of the same pool: SQLAlchemy's execution around a
        # statement costs twice its CPU (0.26 against 0.09 ms for a ``get``).
        self._on_asyncpg = engine.dialect.driver == "asyncpg"
        self._compiled: dict[int, tuple[str, tuple[str, ...], dict[str, Any]]] = {}
        self._create_tables = create_tables
        self._auto_migrate = (
            engine.dialect.name == "sqlite" if auto_migrate is None else auto_migrate
        )
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
            await migrations.prepare(self.engine, upgrade=self._auto_migrate)
        self._tables_ready = True

    async def migrate(self) -> migrations.Outcome:
        async with self._guard():
            outcome = await migrations.prepare(self.engine, upgrade=True)
        self._tables_ready = True
        return outcome

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
        return await self.run(statement, params, read_rowcount, retry=retry)

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
                        timed_out = isinstance(exc, TimeoutError)
                        if timed_out:
                            # No answer within the statement timeout: close the socket now (a
                            # polite goodbye would wait for the silent server too), and run the
                            # statement no second time, which would wait as long again.
                            _terminate(raw.driver_connection)
                        await greenlet_spawn(raw.invalidate, error)
                        if attempt + 1 < attempts and error is not None and not timed_out:
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

    async def _ensure_tables(self) -> None:
        if self._tables_ready or not self._create_tables:
            return
        async with self._tables_lock:
            if not self._tables_ready:
                await migrations.prepare(self.engine, upgrade=self._auto_migrate)
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


def read_all(result: CursorResult[Any]) -> Sequence[Any]:
    return result.all()


def read_first(result: CursorResult[Any]) -> Any:
    return result.first()


def read_one(result: CursorResult[Any]) -> Any:
    return result.one()


def read_scalar(result: CursorResult[Any]) -> Any:
    return result.scalar_one()


def read_scalar_or_none(result: CursorResult[Any]) -> Any:
    return result.scalar_one_or_none()


def read_rowcount(result: CursorResult[Any]) -> int:
    return result.rowcount


def read_nothing(result: CursorResult[Any]) -> None:
    return None


def _mappings(result: CursorResult[Any]) -> Sequence[Mapping[str, Any]]:
    return cast("Sequence[Mapping[str, Any]]", result.mappings().all())


async def _fetch(connection: Any, sql: str, args: list[Any]) -> Sequence[Mapping[str, Any]]:
    rows: Sequence[Mapping[str, Any]] = await connection.fetch(sql, *args)
    return rows


async def _status_count(connection: Any, sql: str, args: list[Any]) -> int:
    # asyncpg answers with the command tag: ``UPDATE 1``, ``DELETE 0``.
    status: str = await connection.execute(sql, *args)
    return int(status.rpartition(" ")[2])


def _is_unavailable(exc: BaseException) -> bool:
    if isinstance(exc, _UNAVAILABLE):
        return True
    if isinstance(exc, sa_exc.DBAPIError):
        if exc.connection_invalidated:
            return True
        sqlstate = getattr(exc.orig, "sqlstate", None) or getattr(exc.orig, "pgcode", None)
        return isinstance(sqlstate, str) and sqlstate.startswith(_UNAVAILABLE_SQLSTATES)
    # asyncpg's own errors, from the statements it runs itself (Database._on_driver).
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


def _refuse_closed(dbapi_connection: Any, record: ConnectionPoolEntry, proxy: Any) -> None:
    """A pool ``checkout`` hook: a pooled asyncpg connection that has seen its socket close (a
    server restart, a network cut) is thrown away and replaced, with no round trip to find out.
    """
    driver = record.driver_connection
    if driver is not None and driver.is_closed():
        raise sa_exc.DisconnectionError("the pooled connection was closed by the server")


def _drop_timed_out(context: ExceptionContext) -> None:
    """An engine ``handle_error`` hook: a statement the server did not answer within the
    statement timeout (asyncpg's ``command_timeout``) leaves its connection mid-statement. It is
    dropped, its socket closed at once (a rollback or a polite goodbye would wait for the silent
    server too), rather than handed back to the pool."""
    if not isinstance(context.original_exception, TimeoutError) or context.connection is None:
        return
    with contextlib.suppress(Exception):  # a connection already invalidated has no driver
        _terminate(context.connection.connection.driver_connection)
    context.is_disconnect = True


def _terminate(driver: Any) -> None:
    """Closes an asyncpg connection's socket at once, with no goodbye to the server."""
    if driver is not None:
        driver.terminate()


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


def _keep_values_out_of_logs() -> None:
    """Puts :class:`_NoValuesLogged` on the kit's engine logger and aiosqlite's, once: run as
    each :class:`Database` is set up, before its engine runs a statement."""
    for name in (f"sqlalchemy.engine.Engine.{_LOGGING_NAME}", "aiosqlite"):
        log = logging.getLogger(name)
        if not any(isinstance(installed, _NoValuesLogged) for installed in log.filters):
            log.addFilter(_NoValuesLogged())


def _engine_options(url: str, options: dict[str, Any]) -> dict[str, Any]:
    """Defaults for an engine the adapter creates; the caller's options win."""
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
    # meets a dead one anyway runs again on a new one where that is safe (Database.run).
    merged = {**defaults, **options}
    merged["connect_args"] = {**connect_args, **options.get("connect_args", {})}
    return merged
