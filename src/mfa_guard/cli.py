"""``mfa-guard``: operations from the command line."""

from __future__ import annotations

import argparse
import asyncio
import importlib
import os
import sys
import time
from collections.abc import Coroutine, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

from pydantic import Field
from pydantic_settings import BaseSettings

from mfa_guard.crypto import generate_key
from mfa_guard.settings import MFAGuardSettings, SecurityLogSettings
from mfa_guard.stores.events import StoringSink
from mfa_guard.version import __version__

if TYPE_CHECKING:
    from mfa_guard.events import AuditEvent
    from mfa_guard.guard import MFAGuard
    from mfa_guard.settings import EveryoneSettings
    from mfa_guard.stores.sql import SQLStore
    from mfa_guard.stores.sql.migrations import Outcome, SchemaState

T = TypeVar("T")

DEFAULT_DATABASE_URL: str = MFAGuardSettings.model_fields["database_url"].default

# The modules each extra brings (pyproject.toml's optional dependencies) that the commands use.
EXTRA_MODULES: dict[str, tuple[str, ...]] = {
    "sql": ("sqlalchemy", "aiosqlite", "alembic"),
    "postgres": ("sqlalchemy", "asyncpg", "alembic"),
    "redis": ("redis",),
    "twilio": ("httpx",),
}


def _run(
    command: str, work: Coroutine[Any, Any, T], *, where: str = "", hint: str = ""
) -> T | None:
    """Runs a command's ``work``. ``None`` when the kit refused it or a store did not answer:
    a line on stderr says which (``where``: the database, without its password), after which
    the command exits ``UNAVAILABLE``."""
    from mfa_guard.errors import MFAGuardError, StoreUnavailable

    try:
        return asyncio.run(work)
    except StoreUnavailable as exc:
        said = f"the database is unavailable: {where}" if where else exc.message
        print(f"mfa-guard {command}: {said}{hint}", file=sys.stderr)
    except MFAGuardError as exc:
        print(f"mfa-guard {command}: {exc.message}{hint}", file=sys.stderr)
    return None


def _keygen(args: argparse.Namespace) -> int:
    print(generate_key())
    return 0


def _migrate(args: argparse.Namespace) -> int:
    """``migrate`` and ``init-db``: the database to this release's revision (or, with ``--sql``,
    the SQL that would take it there)."""
    # The SQL extra is needed here only, not for the other commands.
    from sqlalchemy.engine import make_url

    from mfa_guard.stores.sql import SQLStore

    url = _database_url(args)
    if problem := _url_problem(url):
        print(f"mfa-guard {args.command}: {problem}", file=sys.stderr)
        return USAGE
    if args.sql:
        return _migration_sql(args, url)
    if args.start is not None:
        print(f"mfa-guard {args.command}: --from goes with --sql", file=sys.stderr)
        return USAGE

    async def migrate() -> Outcome:
        store = SQLStore(url, create_tables=False)
        try:
            return await store.migrate()
        finally:
            await store.close()

    where = make_url(url).render_as_string(hide_password=True)
    outcome = _run(args.command, migrate(), where=where)
    if outcome is None:
        return UNAVAILABLE
    done = {
        "none": f"at revision {outcome.after}, this release's: nothing to do",
        "created": f"created at revision {outcome.after}",
        "stamped": f"made before migrations in this release's layout: stamped {outcome.after}",
        "upgraded": (
            f"migrated from {outcome.before or 'a release before migrations'} to {outcome.after}"
        ),
    }[outcome.action]
    print(f"mfa_guard tables are ready in {where}: {done}")
    return OK


def _migration_sql(args: argparse.Namespace, url: str) -> int:
    """``--sql``: the upgrade's SQL on stdout, for a DBA to run, from ``--from`` (``base``: an
    empty database) or else the revision read from the database (read only)."""
    from mfa_guard.stores.sql import migrations

    start: str | None = args.start
    if start is None:
        state = _run(args.command, _schema_state(url), hint=" (or give --from)")
        if state is None:
            return UNAVAILABLE
        if state.version is None and not state.empty:
            print(
                f"mfa-guard {args.command}: the mfa_guard tables of this database have no "
                "revision (made before migrations, or by the application's own Alembic): run "
                "mfa-guard migrate once, which recognises them, or give --from",
                file=sys.stderr,
            )
            return USAGE
        start = state.version
    elif start == "base":
        start = None
    if start is not None and not migrations.known(start):
        print(f"mfa-guard {args.command}: {start} is no revision of mfa_guard's", file=sys.stderr)
        return USAGE
    if start == migrations.head():
        print(
            f"mfa-guard {args.command}: the database is at {start}, this release's: no SQL to run",
            file=sys.stderr,
        )
        return NOTHING_TO_DO
    migrations.offline_sql(url, start, sys.stdout)
    return OK


async def _schema_state(url: str) -> SchemaState:
    """The state of the kit's tables at ``url``, read without changing anything."""
    from sqlalchemy.exc import SQLAlchemyError

    from mfa_guard.errors import StoreUnavailable
    from mfa_guard.stores.sql import SQLStore, migrations

    store = SQLStore(url, create_tables=False)
    try:
        async with store.engine.connect() as conn:
            return await conn.run_sync(migrations.read_state)
    except (SQLAlchemyError, OSError) as exc:
        raise StoreUnavailable() from exc
    finally:
        await store.close()


# Exit codes scripts can rely on (2 is argparse's usage error).
OK, UNAVAILABLE, USAGE, NOTHING_TO_DO, INCOMPLETE, MISSING_EXTRA = 0, 1, 2, 3, 4, 5


class _DatabaseSettings(BaseSettings):
    """``database_url`` alone, read as the app reads it (``MFA_GUARD_*`` variables and ``.env``),
    for the commands that need nothing else and so no valid encryption key."""

    model_config = MFAGuardSettings.model_config
    database_url: str = DEFAULT_DATABASE_URL


def _database_url(args: argparse.Namespace) -> str:
    return str(args.database_url or _DatabaseSettings().database_url)


def _store_extra(url: str) -> str:
    """The extra holding the SQL store's driver for ``url`` (read without SQLAlchemy)."""
    scheme = url.split(":", 1)[0].split("+", 1)[0].lower()
    return "postgres" if scheme in ("postgresql", "postgres") else "sql"


def _missing_module(extra: str) -> str | None:
    """The first module of ``extra`` that cannot be imported, if any."""
    for module in EXTRA_MODULES[extra]:
        try:
            importlib.import_module(module)
        except ImportError:
            return module
    return None


def _install_hint(command: str, extra: str, module: str, what: str) -> int:
    print(
        f"mfa-guard {command}: {what} needs the {extra} extra ({module} is not installed): "
        f"pip install 'mfa-guard[{extra}]'",
        file=sys.stderr,
    )
    return MISSING_EXTRA


def _url_problem(url: str) -> str | None:
    """Why ``url`` cannot be the SQL store's database, before any driver is imported."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        backend = make_url(url).get_backend_name()
    except ArgumentError:
        return "the database URL is not a SQLAlchemy URL (e.g. postgresql+asyncpg://host/db)"
    if backend not in ("sqlite", "postgresql"):
        return f"the SQL store supports SQLite and PostgreSQL, not {backend!r}"
    return None


def _status(args: argparse.Namespace) -> int:
    from sqlalchemy import select

    from mfa_guard.enforcement import MemberStatus, iso, member_statuses
    from mfa_guard.stores.sites import Site
    from mfa_guard.stores.sql import SQLSiteDirectory, SQLStore, sites

    url = _database_url(args)
    if problem := _url_problem(url):
        print(f"mfa-guard status: {problem}", file=sys.stderr)
        return USAGE
    if args.site and (args.everyone or args.users_from):
        print(
            "mfa-guard status: --site lists one site's members; --everyone and --users-from "
            "list every account: use one or the other",
            file=sys.stderr,
        )
        return USAGE
    policy = _everyone_policy()
    if isinstance(policy, str):
        print(f"mfa-guard status: the settings are invalid: {policy}", file=sys.stderr)
        return USAGE
    listed: list[str] = []
    if args.users_from:
        read = _user_ids(args.users_from)
        if isinstance(read, str):
            print(f"mfa-guard status: {read}", file=sys.stderr)
            return USAGE
        listed = read
    # Every account: under the app-wide policy, or when asked (to see who a policy would send
    # to enrolment before turning it on).
    everyone = not args.site and (policy.required or args.everyone or bool(args.users_from))

    async def report() -> tuple[list[tuple[Site, list[MemberStatus]]], list[UserStatus]]:
        store = SQLStore(url)
        try:
            directory = SQLSiteDirectory.sharing(store)
            if args.site:
                site_ids = [args.site]
            else:
                await directory.create_all()
                async with directory.engine.connect() as conn:
                    rows = await conn.execute(select(sites.c.id).order_by(sites.c.id))
                    site_ids = [row.id for row in rows]
            found = []
            for site_id in site_ids:
                site = await directory.site(site_id)
                if site is not None:
                    found.append((site, await member_statuses(store, directory, site_id)))
            users = await _every_user(store, listed) if everyone else []
            return found, users
        finally:
            await store.close()

    reported = _run("status", report())
    if reported is None:
        return UNAVAILABLE
    found, users = reported
    if args.site and not found:
        print(f"mfa-guard status: there is no site {args.site!r}", file=sys.stderr)
        return NOTHING_TO_DO
    rows = [("SITE", "MEMBER", "ROLE", "2FA", "SMS")]
    for site, members in found:
        for member in members:
            if args.without_2fa and member.two_factor:
                continue
            rows.append(
                (
                    site.id,
                    member.user_id,
                    member.role.value,
                    "on" if member.two_factor else "OFF",
                    "yes" if member.phone_verified else "-",
                )
            )
    if found or not everyone:
        _print_table(rows)
    for site, members in found:
        policy_of_site = site.policy
        missing = sum(not m.two_factor for m in members)
        state = (
            "enforces 2FA from " + str(iso(policy_of_site.requires_by()))
            if policy_of_site.enforce
            else ("does not enforce 2FA")
        )
        print(f"{site.id} ({site.name}): {state}; {missing} of {len(members)} without 2FA")
    if not everyone:
        return OK
    if found:
        print()
    _print_table(
        [("USER", "2FA", "SMS")]
        + [
            (
                user.user_id,
                "on" if user.two_factor else "OFF",
                "yes" if user.phone_verified else "-",
            )
            for user in users
            if not (args.without_2fa and user.two_factor)
        ]
    )
    missing = sum(not user.two_factor for user in users)
    if not policy.required:
        state = "2FA is not required of every account (MFA_GUARD_EVERYONE__REQUIRED is off)"
    elif policy.deadline is None:
        state = "2FA is required of every account, at once"
    else:
        state = f"2FA is required of every account from {iso(policy.required_from())}"
    print(f"everyone: {state}; {missing} of {len(users)} known users without 2FA")
    if not args.users_from:
        print(
            "note: only the users the kit knows are listed (a row in its store, or a site "
            "membership): an account that never started setting up 2FA and belongs to no site "
            "is not; pass the app's user ids with --users-from FILE (or - for stdin)",
            file=sys.stderr,
        )
    return OK


@dataclass(frozen=True, slots=True)
class UserStatus:
    user_id: str
    two_factor: bool
    phone_verified: bool


async def _every_user(store: SQLStore, listed: list[str]) -> list[UserStatus]:
    """Every user the kit knows (a row in the store, a site membership) and the ``listed``
    ones, with their 2FA status, ordered by user id."""
    from sqlalchemy import select
    from sqlalchemy.exc import SQLAlchemyError

    from mfa_guard.errors import StoreUnavailable
    from mfa_guard.stores.sql import enrolments, site_members

    await store.create_all()
    try:
        async with store.engine.connect() as conn:
            known = await conn.execute(
                select(enrolments.c.user_id).union(select(site_members.c.user_id))
            )
            user_ids = {row[0] for row in known}
    except (SQLAlchemyError, OSError) as exc:
        raise StoreUnavailable() from exc
    user_ids.update(listed)
    statuses = await store.statuses(sorted(user_ids))
    return [
        UserStatus(user_id, status.enrolled, status.phone_verified)
        for user_id, status in statuses.items()
    ]


def _everyone_policy() -> EveryoneSettings | str:
    """The app-wide policy as the app reads it (``MFA_GUARD_EVERYONE__*``, ``.env``), alone:
    listing needs no encryption key. A string: why the settings are invalid."""
    from pydantic import Field, ValidationError
    from pydantic_settings import BaseSettings, SettingsConfigDict

    from mfa_guard.settings import EveryoneSettings

    class Everyone(BaseSettings):
        model_config = SettingsConfigDict(
            env_prefix="MFA_GUARD_", env_nested_delimiter="__", env_file=".env", extra="ignore"
        )
        everyone: EveryoneSettings = Field(default_factory=EveryoneSettings)

    try:
        return Everyone().everyone
    except ValidationError as exc:
        return "; ".join(str(error["msg"]) for error in exc.errors())


def _user_ids(source: str) -> list[str] | str:
    """The user ids of ``source`` (a file, or ``-`` for stdin), one a line; blank lines and
    lines starting with ``#`` are skipped. A string: why it could not be read."""
    try:
        if source == "-":
            lines = sys.stdin.read().splitlines()
        else:
            with open(source, encoding="utf-8") as file:
                lines = file.read().splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        return f"cannot read the user ids of {source}: {exc}"
    return [line.strip() for line in lines if line.strip() and not line.lstrip().startswith("#")]


def _print_table(rows: Sequence[tuple[str, ...]]) -> None:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        print(
            "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        )


def _app_settings(command: str, args: argparse.Namespace) -> tuple[MFAGuardSettings, str] | int:
    """The app's settings and the database URL to work on, or the exit code of a refusal."""
    from pydantic import ValidationError

    try:
        settings = MFAGuardSettings()
    except ValidationError as exc:
        print(f"mfa-guard {command}: the settings are invalid:\n{exc}", file=sys.stderr)
        return USAGE
    url = args.database_url or settings.database_url
    if problem := _url_problem(url):
        print(f"mfa-guard {command}: {problem}", file=sys.stderr)
        return USAGE
    return settings, url


def _reset_user(args: argparse.Namespace) -> int:
    if args.guard:
        return _reset_with_guard(args)
    from sqlalchemy.engine import make_url

    from mfa_guard.events import LoggingEventSink
    from mfa_guard.ratelimit import failure_limiters, storage_from_uri
    from mfa_guard.resets import Resets
    from mfa_guard.stores.sql import SQLDeviceStore, SQLEventStore, SQLStore

    # The app's own settings: where its failure counts live, and under which limits.
    loaded = _app_settings("reset-user", args)
    if isinstance(loaded, int):
        return loaded
    settings, url = loaded
    shared = not settings.storage_uri.startswith(("memory://", "async+memory"))
    kept: list[_Kept] = []

    async def reset() -> bool:
        store = SQLStore(url)
        codes, recovery = failure_limiters(
            storage_from_uri(settings.storage_uri), settings.rate_limits
        )
        # The audit log line, then the security log the kit's tables hold.
        sink = _Kept(LoggingEventSink(), SQLEventStore.sharing(store))
        kept.append(sink)
        resets = Resets(
            store=store,
            devices=SQLDeviceStore.sharing(store),
            limiters=(codes, recovery) if shared else (),
            events=sink,
            clock=time.time,
        )
        try:
            if not await resets.has_anything(args.user):
                return False
            await resets.reset(args.user, by=args.by)
            return True
        finally:
            await codes.aclose()  # the storage's connections, shared by both
            await store.close()

    done = _run("reset-user", reset())
    if done is None:
        return UNAVAILABLE
    if not done:
        print(f"mfa-guard reset-user: {args.user} has no two-factor authentication to reset")
        return NOTHING_TO_DO
    _say_reset(args.user)
    if shared:
        print("Their failed-attempt count is cleared.")
    else:
        print("Failure counts live in each app process (memory://): they expire with their window.")
    where = make_url(url).render_as_string(hide_password=True)
    went = (
        f"the audit log and the security log in {where} (the table mfa_guard_events)"
        if kept and kept[0].kept
        else "the audit log only: the security log could not be written (see the error above)"
    )
    print(
        f"The admin_reset event went to {went}. Pass --guard module:attribute (the app's "
        "MFAGuard) for the app's own event sink (its notifications) to hear of it."
    )
    return OK


class _Kept(StoringSink):
    """``reset-user``'s event sink without the app's guard (a :class:`StoringSink`), saying
    whether the event reached the security log (an append that failed is logged by the
    publisher, and the reset stands)."""

    kept = False

    async def emit(self, event: AuditEvent) -> None:
        await super().emit(event)
        self.kept = True


def _say_reset(user: str) -> None:
    print(
        f"{user}: two-factor authentication is off, their phone number is forgotten, and "
        "every session of theirs must sign in again with it at its next re-check; they enrol "
        "again (at once if the app requires 2FA of everyone or a site of theirs enforces it)."
    )


def _reset_with_guard(args: argparse.Namespace) -> int:
    """``reset-user --guard module:attribute``: through the app's own guard, its stores and
    its event sink (the user is notified as the app notifies them)."""

    guard = _load_guard(args.guard)
    if isinstance(guard, str):
        print(f"mfa-guard reset-user: {guard}", file=sys.stderr)
        return USAGE

    async def reset() -> bool:
        try:
            return await guard.reset_two_factor(args.user, by=args.by) is not None
        finally:
            await guard.aclose()
            close = getattr(guard.store, "close", None)
            if close is not None:
                await close()

    done = _run("reset-user", reset())
    if done is None:
        return UNAVAILABLE
    if not done:
        print(f"mfa-guard reset-user: {args.user} has no two-factor authentication to reset")
        return NOTHING_TO_DO
    _say_reset(args.user)
    print("Their failed-attempt count is cleared, and the app's event sink was told.")
    return OK


def _load_guard(spec: str) -> MFAGuard | str:
    """The app's guard named by ``module:attribute``: an MFAGuard, an app whose
    ``state.guard`` is one, or a function of no argument returning either; else why not."""
    from mfa_guard.guard import MFAGuard

    module_name, _, attribute = spec.partition(":")
    if not module_name or not attribute:
        return f"--guard takes module:attribute (e.g. myapp.main:guard), not {spec!r}"
    try:
        found: object = importlib.import_module(module_name)
        for part in attribute.split("."):
            found = getattr(found, part)
    except (ImportError, AttributeError) as exc:
        return f"--guard {spec}: {exc}"
    if callable(found) and not isinstance(found, MFAGuard):
        try:
            found = found()
        except TypeError as exc:
            return f"--guard {spec}: call it with no arguments: {exc}"
    guard = getattr(getattr(found, "state", None), "guard", found)
    if not isinstance(guard, MFAGuard):
        return (
            f"--guard {spec} is a {type(found).__name__}: name the app's MFAGuard, an app "
            "whose state.guard is one, or a function returning either"
        )
    return guard


class _SecurityLogSettings(BaseSettings):
    """``database_url`` and the security log's settings alone, read as the app reads them: a
    purge needs no encryption key, so the job that runs it need not hold one."""

    model_config = MFAGuardSettings.model_config
    database_url: str = DEFAULT_DATABASE_URL
    events: SecurityLogSettings = Field(default_factory=SecurityLogSettings)


def _retention_days(value: str) -> int:
    """``--days``: a whole number of days, within the bounds of ``events.retention_days``."""
    from pydantic import ValidationError

    try:
        return SecurityLogSettings.model_validate({"retention_days": value}).retention_days
    except ValidationError as exc:
        raise argparse.ArgumentTypeError(
            f"{value!r} is not a number of days to keep: {exc.errors()[0]['msg']}"
        ) from None


def _purge_events(args: argparse.Namespace) -> int:
    import time

    from pydantic import ValidationError
    from sqlalchemy.engine import make_url

    from mfa_guard.stores.sql import SQLEventStore

    try:
        settings = _SecurityLogSettings()
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(part) for part in error['loc'])}: {error['msg']}"
            for error in exc.errors()
        )
        print(f"mfa-guard purge-events: the settings are invalid: {problems}", file=sys.stderr)
        return USAGE
    url = args.database_url or settings.database_url
    if problem := _url_problem(url):
        print(f"mfa-guard purge-events: {problem}", file=sys.stderr)
        return USAGE
    days: int = settings.events.retention_days if args.days is None else args.days
    before = time.time() - days * 86_400

    async def purge() -> int:
        log = SQLEventStore(url)
        try:
            return await log.purge(before)
        finally:
            await log.close()

    where = make_url(url).render_as_string(hide_password=True)
    removed = _run("purge-events", purge(), where=where)
    if removed is None:
        return UNAVAILABLE
    print(
        f"removed {removed:,} event{'' if removed == 1 else 's'} older than {days} "
        f"day{'' if days == 1 else 's'} from the security log in {where}"
    )
    return OK


def _rotate_keys(args: argparse.Namespace) -> int:

    from mfa_guard.crypto import SecretBox
    from mfa_guard.rotation import RotationReport, rotate_keys
    from mfa_guard.stores.sql import SQLStore

    loaded = _app_settings("rotate-keys", args)
    if isinstance(loaded, int):
        return loaded
    settings, url = loaded
    if not settings.encryption_keys:
        print(
            "mfa-guard rotate-keys: set MFA_GUARD_ENCRYPTION_KEYS (newest first)", file=sys.stderr
        )
        return USAGE
    box = SecretBox(settings.encryption_keys)

    def progress(report: RotationReport) -> None:
        print(
            f"checked {report.checked:,}: rotated {report.rotated:,}, already under the newest "
            f"key {report.current:,}, changed meanwhile {report.changed_meanwhile:,}",
            file=sys.stderr,
            flush=True,
        )

    async def run() -> RotationReport:
        store = SQLStore(url)
        try:
            return await rotate_keys(store, box, batch=args.batch, progress=progress)
        finally:
            await store.close()

    report = _run("rotate-keys", run(), hint=" (rerun to go on)")
    if report is None:
        return UNAVAILABLE
    if not report.done:
        print(
            f"{report.changed_meanwhile:,} users changed their 2FA during the run: run "
            "mfa-guard rotate-keys again"
        )
        return INCOMPLETE
    print(
        f"every stored secret ({report.checked:,}) is under the newest key "
        f"({report.rotated:,} re-encrypted now): the older keys can be removed"
    )
    return OK


def _flatten(values: dict[str, object], prefix: str = "") -> list[tuple[str, object]]:
    rows: list[tuple[str, object]] = []
    for name, value in values.items():
        if isinstance(value, dict):
            rows.extend(_flatten(value, f"{prefix}{name}."))
        else:
            rows.append((f"{prefix}{name}", value))
    return rows


def _advice(settings: MFAGuardSettings) -> list[str]:
    """What is valid but unwise, in the kit's own terms."""
    advice = []
    local = settings.storage_uri.startswith(("memory://", "async+memory"))
    if settings.debug:
        advice.append("debug is on: never in production (ephemeral key, console SMS allowed)")
    if settings.workers > 1 and local:
        advice.append(
            f"{settings.workers} workers with rate limits in memory://: each process counts "
            "failures on its own; set MFA_GUARD_STORAGE_URI=redis://…"
        )
    if settings.workers > 1 and settings.database_url.startswith("sqlite"):
        advice.append("several workers on SQLite: use PostgreSQL (MFA_GUARD_DATABASE_URL)")
    if len(settings.encryption_keys) > 1:
        advice.append(
            f"{len(settings.encryption_keys)} encryption keys: run `mfa-guard rotate-keys`, "
            "then retire the old ones"
        )
    if settings.sms.enabled and settings.sms.provider == "console" and not settings.debug:
        advice.append("the console SMS provider prints codes to the logs: MFAGuard refuses it")
    return advice


def _demo(args: argparse.Namespace) -> int:
    """The demo inbox ships with the source (a git checkout or the sdist), not in the wheel:
    it is an app, with its own accounts and data folder, not a part of the library."""
    try:
        from examples.inbox.__main__ import main as run_demo
    except ImportError:
        print(
            "mfa-guard demo: the demo inbox comes with the source, not the installed package: "
            "run it from a git checkout or the unpacked sdist (`make demo`, or `mfa-guard "
            "demo` in that folder)",
            file=sys.stderr,
        )
        return USAGE
    os.environ["PORT"] = str(args.port)
    run_demo()
    return OK


def _check_config(args: argparse.Namespace) -> int:
    from pydantic import ValidationError

    try:
        settings = MFAGuardSettings()
    except ValidationError as exc:
        print("mfa-guard check-config: the settings are invalid:", file=sys.stderr)
        for error in exc.errors():
            where = ".".join(str(part) for part in error["loc"]) or "settings"
            print(f"  {where}: {error['msg']}", file=sys.stderr)
        return USAGE
    for name, value in _flatten(settings.model_dump(mode="json")):
        # Secrets come masked from the model (SecretStr): never printed.
        print(f"{name} = {value}")
    extra = _store_extra(settings.database_url)
    if module := _missing_module(extra):
        url_problem: str | None = (
            f"the SQL store needs the {extra} extra ({module} is not installed): "
            f"pip install 'mfa-guard[{extra}]'"
        )
    else:
        url_problem = _url_problem(settings.database_url)
    advice = _advice(settings) + ([f"database_url: {url_problem}"] if url_problem else [])
    for line in advice:
        print(f"warning: {line}", file=sys.stderr)
    # Rate limits in Redis: the app cannot start without the client.
    if settings.storage_uri.startswith(("redis", "async+redis")) and (
        missing := _missing_module("redis")
    ):
        return _install_hint("check-config", "redis", missing, "storage_uri")
    return OK


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="mfa-guard",
        description="mfa_guard operations.",
        epilog="Exit codes: 0 done, 1 unavailable, 2 usage or invalid settings, 3 nothing to do, "
        "4 incomplete (rerun), 5 an extra is missing (the pip command is printed).",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)
    keygen = commands.add_parser(
        "keygen",
        help="print a new Fernet key for MFA_GUARD_ENCRYPTION_KEYS",
        description=(
            "Print a new Fernet key. To rotate, put it first in MFA_GUARD_ENCRYPTION_KEYS and "
            "keep the old keys after it."
        ),
    )
    keygen.set_defaults(run=_keygen)
    migrate_help = (
        "Bring the mfa_guard tables in MFA_GUARD_DATABASE_URL (or --database-url) to this "
        "release's revision: create them in an empty database; recognise the tables a release "
        "before migrations made (completed as it would have, then stamped); run the "
        "migrations after the database's revision, in one transaction under a lock the "
        "workers take too (safe to rerun, and while workers start). An upgrade may drop "
        "columns: back the database up first. With --sql, print the SQL instead, for a DBA. "
        "Exit 0 when the tables are ready; 1 when the database is unavailable or refused "
        "(a later release migrated it; the application's own Alembic manages the branch); 2 "
        "for a URL the store cannot use; 3 with --sql when there is nothing to run."
    )
    for name, help_text in (
        ("migrate", "bring the SQL store's tables to this release (run before rolling it out)"),
        ("init-db", "the same as migrate (creates the tables of a new database)"),
    ):
        command = commands.add_parser(name, help=help_text, description=migrate_help)
        command.add_argument("--database-url", help="SQLAlchemy async URL (default: from settings)")
        command.add_argument(
            "--sql",
            action="store_true",
            help="print the SQL of the upgrade instead of running it (the database is only read "
            "for its revision, unless --from is given)",
        )
        command.add_argument(
            "--from",
            dest="start",
            metavar="REVISION",
            help="with --sql: the revision to start from (base: an empty database)",
        )
        command.set_defaults(run=_migrate, store=True)
    status = commands.add_parser(
        "status",
        help="list who has 2FA: each site's members (the green padlocks), and every account "
        "under the app-wide policy",
        description=(
            "List each site's members, their role and whether they have 2FA, then each site's "
            "policy. When the app requires 2FA of every account (MFA_GUARD_EVERYONE__REQUIRED, "
            "read as the app does, .env too), or with --everyone or --users-from, then list "
            "every user the kit knows (a row in its store, a site membership) and those of "
            "--users-from, with the policy and how many lack 2FA. Exit 0; 1 when the database "
            "is unavailable; 2 on invalid MFA_GUARD_EVERYONE__* settings or an unreadable "
            "--users-from; 3 for an unknown --site."
        ),
    )
    status.add_argument("--site", help="only this site (its id)")
    status.add_argument(
        "--without-2fa", action="store_true", help="only the members who have no 2FA yet"
    )
    status.add_argument(
        "--everyone",
        action="store_true",
        help="list every known account even when the app-wide policy is off",
    )
    status.add_argument(
        "--users-from",
        metavar="FILE",
        help="the app's user ids, one a line (- for stdin): listed too, even if the kit has "
        "never seen them",
    )
    status.add_argument("--database-url", help="SQLAlchemy async URL (default: from settings)")
    status.set_defaults(run=_status, store=True)
    reset_user = commands.add_parser(
        "reset-user",
        help="turn a user's 2FA off (lost device): they enrol again",
        description=(
            "Turn USER's 2FA off: their authenticators (apps, passkeys and security keys), "
            "recovery codes, phone and pending SMS code are removed and every session of "
            "theirs loses its verified state at its next re-check; their "
            "failed-attempt count is cleared (with a shared MFA_GUARD_STORAGE_URI). Reads the "
            "app's settings (MFA_GUARD_*, .env), or goes through the app's own guard "
            "(--guard). Writes an admin_reset audit event. Exit 0 when reset; 1 when the "
            "database is unavailable; 2 when the settings are invalid or --guard names no "
            "guard; 3 when the user had no 2FA."
        ),
    )
    reset_user.add_argument("user", help="the user id, as the app's identity gives it")
    reset_user.add_argument("--by", help="who asks (recorded in the audit event)")
    reset_user.add_argument(
        "--guard",
        metavar="MODULE:ATTRIBUTE",
        help="the app's MFAGuard (or an app whose state.guard is one, or a function returning "
        "either): the reset goes through its stores and event sink, so the user is notified "
        "as the app notifies them",
    )
    reset_user.add_argument("--database-url", help="SQLAlchemy async URL (default: from settings)")
    reset_user.set_defaults(run=_reset_user, store=True)
    purge_events = commands.add_parser(
        "purge-events",
        help="remove the security log's events older than its retention (run it daily)",
        description=(
            "Remove from the security log (the table mfa_guard_events) every event older than "
            "MFA_GUARD_EVENTS__RETENTION_DAYS (read as the app does, .env too; 365 by default) "
            "or --days, and print how many went. Needs no encryption key. Exit 0 when done, "
            "even with nothing to remove; 1 when the database is unavailable; 2 on invalid "
            "settings or --days."
        ),
    )
    purge_events.add_argument(
        "--days",
        type=_retention_days,
        metavar="N",
        help="keep the last N days instead of the setting (1 to 3650)",
    )
    purge_events.add_argument(
        "--database-url", help="SQLAlchemy async URL (default: from settings)"
    )
    purge_events.set_defaults(run=_purge_events, store=True)
    demo = commands.add_parser(
        "demo",
        help="serve the demo inbox (from a git checkout or the unpacked sdist)",
        description=(
            "Serve the demo inbox on http://127.0.0.1:PORT, as `make demo` does: the seeded "
            "accounts and sites are printed. The demo comes with the source (examples/), not "
            "in the wheel: run it in a checkout or the unpacked sdist. Exit 2 elsewhere."
        ),
    )
    demo.add_argument("--port", type=int, default=8000, help="port on 127.0.0.1 (default 8000)")
    demo.set_defaults(run=_demo)
    check = commands.add_parser(
        "check-config",
        help="print the effective settings (secrets masked) and every problem found",
        description=(
            "Read the settings as the app does (MFA_GUARD_* variables and .env), print each "
            "effective value with secrets masked, then a warning line on stderr for each "
            "valid but unwise choice. Exit 0 when the settings are valid (even with warnings); "
            "2 when they are not, with every problem listed."
        ),
    )
    check.set_defaults(run=_check_config)
    rotate = commands.add_parser(
        "rotate-keys",
        help="re-encrypt every stored TOTP secret under the newest key",
        description=(
            "Re-encrypt every stored TOTP secret (each authenticator app's, and a pending "
            "set-up's) that is not under the newest key of MFA_GUARD_ENCRYPTION_KEYS, in "
            "batches of users, showing progress; safe to interrupt "
            "and rerun (each write is a compare-and-set, what is current is skipped). Exit 0 "
            "when every secret is under the newest key (the old keys can go); 1 when the "
            "database is unavailable or a secret opens with no configured key; 2 on invalid "
            "settings; 4 when users changed their 2FA during the run (run it again)."
        ),
    )
    rotate.add_argument("--batch", type=int, default=500, help="users per batch (default 500)")
    rotate.add_argument("--database-url", help="SQLAlchemy async URL (default: from settings)")
    rotate.set_defaults(run=_rotate_keys, store=True)
    args = parser.parse_args(argv)
    if getattr(args, "store", False):
        # The SQL store is an extra (sql, or postgres for a PostgreSQL URL): say which one is
        # missing rather than fail on an import.
        extra = _store_extra(_database_url(args))
        if module := _missing_module(extra):
            return _install_hint(args.command, extra, module, "the SQL store")
    try:
        result: int = args.run(args)
    except ModuleNotFoundError as exc:
        # A module of an extra the command reached further on (a driver, the Redis client).
        top = (exc.name or "").split(".")[0]
        owner = next((e for e, modules in EXTRA_MODULES.items() if top in modules), None)
        if owner is None:
            raise
        if top == "sqlalchemy" and getattr(args, "store", False):
            owner = _store_extra(_database_url(args))
        return _install_hint(args.command, owner, top, "this command")
    return result


if __name__ == "__main__":
    sys.exit(main())
