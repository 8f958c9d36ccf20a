"""The kit's Alembic environment (``script_location`` ``mfa_guard.stores.sql:migrations``).

The kit runs it itself: online on the connection it passes in ``config.attributes
["connection"]``, inside its transaction and under its lock (:func:`prepare`; ``mfa-guard
migrate``), the async engine's connection handed over with ``run_sync``; offline (``mfa-guard
migrate --sql``) it writes the SQL for ``sqlalchemy.url``'s dialect. Either way the versions are
kept in their own table, ``mfa_guard_alembic_version``, so they never meet an application's
``alembic_version``. An application's own Alembic does not run this file: it lists the versions
folder in its ``version_locations`` instead (docs/deployment.md).
"""

from __future__ import annotations

from alembic import context
from alembic.util import CommandError

from mfa_guard.stores.sql.migrations import VERSION_TABLE

config = context.config

if context.is_offline_mode():
    context.configure(
        url=config.get_main_option("sqlalchemy.url"),
        literal_binds=True,
        dialect_opts={"paramstyle": "named"},
        version_table=VERSION_TABLE,
    )
    with context.begin_transaction():
        context.run_migrations()
else:
    connection = config.attributes.get("connection")
    if connection is None:
        # Never without the kit's lock: two workers or a worker and this could migrate at once.
        raise CommandError("run the kit's migrations with `mfa-guard migrate`")
    context.configure(connection=connection, version_table=VERSION_TABLE)
    with context.begin_transaction():
        context.run_migrations()
