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
    from mfa_guard.stores.sql import SQLStore

    url = args.database_url or os.environ.get("MFA_GUARD_DATABASE_URL") or DEFAULT_DATABASE_URL

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
    args = parser.parse_args(argv)
    result: int = args.run(args)
    return result


if __name__ == "__main__":
    sys.exit(main())
