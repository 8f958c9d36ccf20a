"""The baseline: the tables as the release before several authenticators per user made them.

One TOTP secret per user on the enrolment (``secret``, ``last_step``), its recovery codes, the
sites with their 2FA policy and their members, the remembered browsers. A database made by
that release (or any later one before migrations) is recognised by its layout and stamped, not
made again (``mfa_guard.stores.sql.migrations``).

Revision ID: mfa_guard_0001
Revises:
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "mfa_guard_0001"
down_revision: str | None = None
# The kit's own lineage: an application's Alembic that lists this folder in its
# ``version_locations`` upgrades it with ``alembic upgrade heads`` (or ``mfa_guard@head``).
branch_labels: tuple[str, ...] | None = ("mfa_guard",)
depends_on: str | None = None


def _timestamps() -> list[sa.Column[object]]:
    return [
        sa.Column(
            "created_at", sa.DateTime(timezone=True), nullable=True, server_default=sa.func.now()
        ),
        sa.Column(
            "updated_at", sa.DateTime(timezone=True), nullable=True, server_default=sa.func.now()
        ),
    ]


def upgrade() -> None:
    op.create_table(
        "mfa_guard_enrolments",
        sa.Column("user_id", sa.String(255), primary_key=True),
        sa.Column("epoch", sa.Integer, nullable=False, server_default="0"),
        sa.Column("secret", sa.Text, nullable=True),
        sa.Column("confirmed_at", sa.Double, nullable=True),
        sa.Column("last_step", sa.BigInteger, nullable=True),
        sa.Column("pending_secret", sa.Text, nullable=True),
        sa.Column("pending_binding", sa.String(64), nullable=True),
        sa.Column("recovery_salt", sa.String(64), nullable=True),
        sa.Column("recovery_params", sa.String(64), nullable=True),
        sa.Column("phone", sa.String(32), nullable=True),
        sa.Column("phone_verified_at", sa.Double, nullable=True),
        sa.Column("sms_purpose", sa.String(16), nullable=True),
        sa.Column("sms_code_hash", sa.String(64), nullable=True),
        sa.Column("sms_phone", sa.String(32), nullable=True),
        sa.Column("sms_expires_at", sa.Double, nullable=True),
        *_timestamps(),
    )
    op.create_table(
        "mfa_guard_recovery_codes",
        sa.Column(
            "user_id",
            sa.String(255),
            sa.ForeignKey("mfa_guard_enrolments.user_id", ondelete="CASCADE"),
            primary_key=True,
        ),
        sa.Column("code_hash", sa.String(128), primary_key=True),
    )
    op.create_table(
        "mfa_guard_sites",
        sa.Column("id", sa.String(255), primary_key=True),
        sa.Column("name", sa.String(255), nullable=False),
        sa.Column("enforce", sa.Boolean, nullable=False, server_default=sa.false()),
        sa.Column("grace_deadline", sa.Double, nullable=True),
        sa.Column("policy_changed_by", sa.String(255), nullable=True),
        sa.Column("policy_changed_at", sa.Double, nullable=True),
        *_timestamps(),
    )
    op.create_table(
        "mfa_guard_site_members",
        sa.Column(
            "site_id",
            sa.String(255),
            sa.ForeignKey("mfa_guard_sites.id", ondelete="CASCADE"),
            primary_key=True,
        ),
        sa.Column("user_id", sa.String(255), primary_key=True),
        sa.Column("role", sa.String(16), nullable=False),
    )
    op.create_index("ix_mfa_guard_site_members_user_id", "mfa_guard_site_members", ["user_id"])
    op.create_table(
        "mfa_guard_trusted_devices",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("user_id", sa.String(255), nullable=False),
        sa.Column("token_hash", sa.String(64), nullable=False, unique=True),
        sa.Column("name", sa.String(128), nullable=False),
        sa.Column("created_at", sa.Double, nullable=False),
        sa.Column("last_seen_at", sa.Double, nullable=False),
        sa.Column("expires_at", sa.Double, nullable=False),
        sa.Column("epoch", sa.Integer, nullable=False),
    )
    op.create_index(
        "ix_mfa_guard_trusted_devices_user_id", "mfa_guard_trusted_devices", ["user_id"]
    )


def downgrade() -> None:
    op.drop_index("ix_mfa_guard_trusted_devices_user_id", "mfa_guard_trusted_devices")
    op.drop_table("mfa_guard_trusted_devices")
    op.drop_index("ix_mfa_guard_site_members_user_id", "mfa_guard_site_members")
    op.drop_table("mfa_guard_site_members")
    op.drop_table("mfa_guard_sites")
    op.drop_table("mfa_guard_recovery_codes")
    op.drop_table("mfa_guard_enrolments")
