"""Several authenticators per user: the authenticators (apps, passkeys and security keys) and
the pending WebAuthn challenges.

The secrets the baseline keeps on the enrolment move to these in mfa_guard_0005.

Revision ID: mfa_guard_0002
Revises: mfa_guard_0001
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "mfa_guard_0002"
down_revision: str | None = "mfa_guard_0001"
branch_labels: tuple[str, ...] | None = None
depends_on: str | None = None


def upgrade() -> None:
    op.create_table(
        "mfa_guard_authenticators",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column(
            "user_id",
            sa.String(255),
            sa.ForeignKey("mfa_guard_enrolments.user_id", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("name", sa.String(64), nullable=False),
        sa.Column("created_at", sa.Double, nullable=False),
        sa.Column("last_used_at", sa.Double, nullable=True),
        sa.Column("secret", sa.Text, nullable=True),
        sa.Column("last_step", sa.BigInteger, nullable=True),
        sa.Column("credential_id", sa.LargeBinary, nullable=True, unique=True),
        sa.Column("public_key", sa.LargeBinary, nullable=True),
        sa.Column("sign_count", sa.BigInteger, nullable=False, server_default="0"),
        sa.Column("transports", sa.String, nullable=True),
        sa.Column("aaguid", sa.String(36), nullable=True),
        sa.Column("backed_up", sa.Boolean, nullable=False, server_default=sa.false()),
    )
    op.create_index("ix_mfa_guard_authenticators_user_id", "mfa_guard_authenticators", ["user_id"])
    op.create_table(
        "mfa_guard_webauthn_challenges",
        sa.Column("challenge_hash", sa.String(64), primary_key=True),
        sa.Column("user_id", sa.String(255), nullable=False),
        sa.Column("purpose", sa.String(16), nullable=False),
        sa.Column("binding", sa.String(64), nullable=False),
        sa.Column("expires_at", sa.Double, nullable=False),
    )
    op.create_index(
        "ix_mfa_guard_webauthn_challenges_user_id", "mfa_guard_webauthn_challenges", ["user_id"]
    )


def downgrade() -> None:
    # Every passkey and every app but the one mfa_guard_0005's downgrade put back goes.
    op.drop_index("ix_mfa_guard_webauthn_challenges_user_id", "mfa_guard_webauthn_challenges")
    op.drop_table("mfa_guard_webauthn_challenges")
    op.drop_index("ix_mfa_guard_authenticators_user_id", "mfa_guard_authenticators")
    op.drop_table("mfa_guard_authenticators")
