"""``mfa-guard``: operations from the command line."""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from collections.abc import Sequence

from mfa_guard.crypto import generate_key
from mfa_guard.settings import MFAGuardSettings

DEFAULT_DATABASE_URL: str = MFAGuardSettings.model_fields["database_url"].default


def _keygen(args: argparse.Namespace) -> int:
    print(generate_key())
    return 0


def _init_db(args: argparse.Namespace) -> int:
    # The SQL extra is needed here only, not for the other commands.
    from sqlalchemy.engine import make_url

    from mfa_guard.errors import MFAGuardError
    from mfa_guard.stores import sql_devices  # noqa: F401  (puts the devices' table on the metadata)
    from mfa_guard.stores.sql import SQLStore

    url = _database_url(args)
    if problem := _url_problem(url):
        print(f"mfa-guard init-db: {problem}", file=sys.stderr)
        return USAGE

    async def create() -> None:
        store = SQLStore(url, create_tables=False)
        try:
            await store.create_all()
        finally:
            await store.close()

    try:
        asyncio.run(create())
    except MFAGuardError as exc:
        print(f"mfa-guard init-db: {exc.message}", file=sys.stderr)
        return 1
    print(f"mfa_guard tables are ready in {make_url(url).render_as_string(hide_password=True)}")
    return 0


# Exit codes scripts can rely on (2 is argparse's usage error).
OK, UNAVAILABLE, USAGE, NOTHING_TO_DO, INCOMPLETE = 0, 1, 2, 3, 4


def _database_url(args: argparse.Namespace) -> str:
    return str(
        args.database_url or os.environ.get("MFA_GUARD_DATABASE_URL") or DEFAULT_DATABASE_URL
    )


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
    from mfa_guard.errors import MFAGuardError
    from mfa_guard.stores.sites import Site
    from mfa_guard.stores.sql import SQLStore, sites

    url = _database_url(args)
    if problem := _url_problem(url):
        print(f"mfa-guard status: {problem}", file=sys.stderr)
        return USAGE

    async def report() -> list[tuple[Site, list[MemberStatus]]]:
        store = SQLStore(url)
        try:
            directory = store.site_directory()
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
            return found
        finally:
            await store.close()

    try:
        found = asyncio.run(report())
    except MFAGuardError as exc:
        print(f"mfa-guard status: {exc.message}", file=sys.stderr)
        return UNAVAILABLE
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
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        print(
            "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        )
    for site, members in found:
        policy = site.policy
        missing = sum(not m.two_factor for m in members)
        state = (
            "enforces 2FA from " + str(iso(policy.requires_by()))
            if policy.enforce
            else ("does not enforce 2FA")
        )
        print(f"{site.id} ({site.name}): {state}; {missing} of {len(members)} without 2FA")
    return OK


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
    import time

    from mfa_guard.errors import MFAGuardError
    from mfa_guard.events import AuditEvent, EventKind, LoggingEventSink, field
    from mfa_guard.ratelimit import failure_limiters, reset_all, storage_from_uri
    from mfa_guard.stores.sql import SQLStore
    from mfa_guard.stores.sql_devices import SQLDeviceStore

    # The app's own settings: where its failure counts live, and under which limits.
    loaded = _app_settings("reset-user", args)
    if isinstance(loaded, int):
        return loaded
    settings, url = loaded
    shared = not settings.storage_uri.startswith(("memory://", "async+memory"))

    async def reset() -> bool:
        store = SQLStore(url)
        try:
            enrolment = await store.get(args.user)
            if enrolment is None or not (enrolment.enrolled or enrolment.pending_secret):
                return False
            await store.disable(args.user)
            # The new epoch already makes every remembered browser untrusted: remove the rows.
            await SQLDeviceStore.sharing(store).remove_all(args.user)
        finally:
            await store.close()
        if shared:
            # A user who lost their device has often locked themselves out trying: the new
            # enrolment must not wait for the window. Both budgets: codes and recovery codes.
            storage = storage_from_uri(settings.storage_uri)
            codes, recovery = failure_limiters(storage, settings.rate_limits)
            try:
                await reset_all(args.user, [codes, recovery])
            finally:
                await codes.aclose()  # the storage's connections, shared by both
        event = AuditEvent(
            kind=EventKind.ADMIN_RESET,
            user_id=args.user,
            at=time.time(),
            detail=f"by={field(args.by)}" if args.by else None,
        )
        await LoggingEventSink().emit(event)
        return True

    try:
        done = asyncio.run(reset())
    except MFAGuardError as exc:
        print(f"mfa-guard reset-user: {exc.message}", file=sys.stderr)
        return UNAVAILABLE
    if not done:
        print(f"mfa-guard reset-user: {args.user} has no two-factor authentication to reset")
        return NOTHING_TO_DO
    print(
        f"{args.user}: two-factor authentication is off and every session of theirs must sign "
        "in again with it at its next re-check; they enrol again (at once if a site of theirs "
        "enforces 2FA)."
    )
    if shared:
        print("Their failed-attempt count is cleared.")
    else:
        print("Failure counts live in each app process (memory://): they expire with their window.")
    return OK


def _rotate_keys(args: argparse.Namespace) -> int:

    from mfa_guard.crypto import SecretBox
    from mfa_guard.errors import MFAGuardError
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

    try:
        report = asyncio.run(run())
    except MFAGuardError as exc:
        print(f"mfa-guard rotate-keys: {exc.message} (rerun to go on)", file=sys.stderr)
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
    url_problem = _url_problem(settings.database_url)
    advice = _advice(settings) + ([f"database_url: {url_problem}"] if url_problem else [])
    for line in advice:
        print(f"warning: {line}", file=sys.stderr)
    return OK


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="mfa-guard", description="mfa_guard operations.")
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
    init_db = commands.add_parser(
        "init-db",
        help="create the SQL store's tables (safe to rerun)",
        description=(
            "Create the mfa_guard tables that do not exist yet in MFA_GUARD_DATABASE_URL (or "
            "--database-url). Apps managing their schema with Alembic add "
            "mfa_guard.stores.sql.metadata to their migrations instead."
        ),
    )
    init_db.add_argument("--database-url", help="SQLAlchemy async URL (default: from settings)")
    init_db.set_defaults(run=_init_db)
    status = commands.add_parser(
        "status",
        help="list the members of each site with their 2FA status (the green padlocks)",
        description=(
            "List each site's members, their role and whether they have 2FA, then each site's "
            "policy. Exit 0; 1 when the database is unavailable; 3 for an unknown --site."
        ),
    )
    status.add_argument("--site", help="only this site (its id)")
    status.add_argument(
        "--without-2fa", action="store_true", help="only the members who have no 2FA yet"
    )
    status.add_argument("--database-url", help="SQLAlchemy async URL (default: from settings)")
    status.set_defaults(run=_status)
    reset_user = commands.add_parser(
        "reset-user",
        help="turn a user's 2FA off (lost device): they enrol again",
        description=(
            "Turn USER's 2FA off: their secret, recovery codes and pending SMS code are removed "
            "and every session of theirs loses its verified state at its next re-check; their "
            "failed-attempt count is cleared (with a shared MFA_GUARD_STORAGE_URI). Reads the "
            "app's settings (MFA_GUARD_*, .env). Writes an admin_reset audit event. Exit 0 when "
            "reset; 1 when the database or the rate-limit storage is unavailable; 2 when the "
            "settings are invalid; 3 when the user had no 2FA."
        ),
    )
    reset_user.add_argument("user", help="the user id, as the app's identity gives it")
    reset_user.add_argument("--by", help="who asks (recorded in the audit event)")
    reset_user.add_argument("--database-url", help="SQLAlchemy async URL (default: from settings)")
    reset_user.set_defaults(run=_reset_user)
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
            "Re-encrypt every stored TOTP secret (and pending one) that is not under the newest "
            "key of MFA_GUARD_ENCRYPTION_KEYS, in batches, showing progress; safe to interrupt "
            "and rerun (each write is a compare-and-set, what is current is skipped). Exit 0 "
            "when every secret is under the newest key (the old keys can go); 1 when the "
            "database is unavailable or a secret opens with no configured key; 2 on invalid "
            "settings; 4 when users changed their 2FA during the run (run it again)."
        ),
    )
    rotate.add_argument("--batch", type=int, default=500, help="users per batch (default 500)")
    rotate.add_argument("--database-url", help="SQLAlchemy async URL (default: from settings)")
    rotate.set_defaults(run=_rotate_keys)
    args = parser.parse_args(argv)
    result: int = args.run(args)
    return result


if __name__ == "__main__":
    sys.exit(main())
