"""A remembered browser keeps the User-Agent it was remembered with (``user_agent``, nullable),
from which the kit's pages name it in the reader's language.

The browsers remembered before have none (NULL: nothing to rebuild it from) and keep showing
the English ``name`` they were given.

A database made before migrations is completed to ``mfa_guard_0004``'s layout, stamped so and
upgraded from there (``mfa_guard.stores.sql.migrations``); its devices table may have been made
by this release's models already (``create_all`` of the missing tables beside older ones), the
column with it: then it is kept as it is, rather than added twice.

Revision ID: mfa_guard_0006
Revises: mfa_guard_0005
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import context, op

revision = "mfa_guard_0006"
down_revision: str | None = "mfa_guard_0005"
branch_labels: tuple[str, ...] | None = None
depends_on: str | None = None


def upgrade() -> None:
    if not context.is_offline_mode():
        present = sa.inspect(op.get_bind()).get_columns("mfa_guard_trusted_devices")
        if any(column["name"] == "user_agent" for column in present):
            return
    # Nullable, so an ADD COLUMN on SQLite too: every remembered browser stays as it was.
    op.add_column(
        "mfa_guard_trusted_devices", sa.Column("user_agent", sa.String(1024), nullable=True)
    )


def downgrade() -> None:
    # The browsers stay remembered, named in English as before.
    with op.batch_alter_table("mfa_guard_trusted_devices") as batch:
        batch.drop_column("user_agent")
