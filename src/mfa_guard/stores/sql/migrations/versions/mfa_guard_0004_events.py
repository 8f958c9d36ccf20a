"""The security log: one row per audit event, with ids never given twice.

Revision ID: mfa_guard_0004
Revises: mfa_guard_0003
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "mfa_guard_0004"
down_revision: str | None = "mfa_guard_0003"
branch_labels: tuple[str, ...] | None = None
depends_on: str | None = None


def upgrade() -> None:
    op.create_table(
        "mfa_guard_events",
        # SQLite: INTEGER PRIMARY KEY AUTOINCREMENT (a plain rowid would give a purged id
        # again); PostgreSQL: BIGSERIAL.
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer, "sqlite"), primary_key=True),
        sa.Column("kind", sa.String(64), nullable=False),
        sa.Column("user_id", sa.String(255), nullable=False),
        sa.Column("at", sa.Double, nullable=False),
        sa.Column("method", sa.String(32), nullable=True),
        sa.Column("client_ip", sa.String(64), nullable=True),
        sa.Column("site", sa.String(255), nullable=True),
        sa.Column("detail", sa.Text, nullable=True),
        sa.Column("user_agent", sa.Text, nullable=True),
        sqlite_autoincrement=True,
    )
    op.create_index(
        "ix_mfa_guard_events_site_id",
        "mfa_guard_events",
        ["site", "id"],
        sqlite_where=sa.text("site IS NOT NULL"),
        postgresql_where=sa.text("site IS NOT NULL"),
    )
    op.create_index("ix_mfa_guard_events_user_id_id", "mfa_guard_events", ["user_id", "id"])
    op.create_index("ix_mfa_guard_events_at", "mfa_guard_events", ["at"])


def downgrade() -> None:
    op.drop_index("ix_mfa_guard_events_at", "mfa_guard_events")
    op.drop_index("ix_mfa_guard_events_user_id_id", "mfa_guard_events")
    op.drop_index("ix_mfa_guard_events_site_id", "mfa_guard_events")
    op.drop_table("mfa_guard_events")
