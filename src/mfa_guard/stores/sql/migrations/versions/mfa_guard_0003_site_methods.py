"""A site's methods policy: which second factors it accepts (NULL: any), from when.

Revision ID: mfa_guard_0003
Revises: mfa_guard_0002
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "mfa_guard_0003"
down_revision: str | None = "mfa_guard_0002"
branch_labels: tuple[str, ...] | None = None
depends_on: str | None = None


def upgrade() -> None:
    # Nullable, so an ADD COLUMN on SQLite too: every existing site accepts any method.
    op.add_column("mfa_guard_sites", sa.Column("methods", sa.String(24), nullable=True))
    op.add_column("mfa_guard_sites", sa.Column("methods_deadline", sa.Double, nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("mfa_guard_sites") as batch:
        batch.drop_column("methods_deadline")
        batch.drop_column("methods")
