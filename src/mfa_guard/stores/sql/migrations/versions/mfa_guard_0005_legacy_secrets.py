"""The secrets of one secret per user move to authenticator apps, and their columns go.

Each confirmed secret of ``mfa_guard_enrolments`` (``secret`` and ``confirmed_at`` set) becomes
an authenticator app of the user's own, by the rule the store followed when it upgraded in
place before migrations: a new random id, the name ``Authenticator app`` (the user renames it at
will), ``created_at`` the enrolment's ``confirmed_at``, the same Fernet token (nothing is
decrypted: no key is needed) and the same ``last_step`` (a code used before stays used). A
secret an authenticator of the user's already holds is not copied again. Then ``secret`` and
``last_step`` are dropped (on SQLite in batch mode: the table is copied without them).

The copy and the drop are one revision, so they land in one transaction whatever the
environment's ``transaction_per_migration``: no secret can be written between them and dropped
unmoved. On PostgreSQL the enrolments table is locked first (``ACCESS EXCLUSIVE``, which the
drop takes anyway): a worker of the earlier release still running waits, rather than confirm a
secret the copy would miss.

The downgrade puts the columns back with each enrolled user's oldest app's secret and step in
them (what the earlier release reads); the authenticators stay (mfa_guard_0002's downgrade
drops them).

Revision ID: mfa_guard_0005
Revises: mfa_guard_0004
"""

from __future__ import annotations

import logging

import sqlalchemy as sa
from alembic import context, op
from sqlalchemy.sql.elements import ColumnElement

from mfa_guard.stores.sql.migrations.legacy import authenticators, enrolments

revision = "mfa_guard_0005"
down_revision: str | None = "mfa_guard_0004"
branch_labels: tuple[str, ...] | None = None
depends_on: str | None = None

logger = logging.getLogger("mfa_guard")

# The name a moved secret's app is given.
LEGACY_APP_NAME = "Authenticator app"


def _new_id(dialect: str) -> ColumnElement[str]:
    """32 random hexadecimal characters, made by the database (``gen_random_uuid()``:
    PostgreSQL 13 or later)."""
    if dialect == "postgresql":
        return sa.func.replace(sa.cast(sa.func.gen_random_uuid(), sa.String), "-", "")
    return sa.func.lower(sa.func.hex(sa.func.randomblob(16)))


def _refuse_cascading_copy() -> None:
    """SQLite copies the table to drop a column, then drops the old one, which with
    ``PRAGMA foreign_keys`` on deletes every row referring to it (``ON DELETE CASCADE``): the
    recovery codes and the authenticators. The kit turns the pragma off for its own runs; an
    application's own Alembic must do the same for this one."""
    if context.is_offline_mode():
        return
    if op.get_bind().exec_driver_sql("PRAGMA foreign_keys").scalar():
        raise RuntimeError(
            "mfa_guard_0005 copies mfa_guard_enrolments to drop two columns, and with PRAGMA "
            "foreign_keys on SQLite would delete every recovery code and authenticator with "
            "the old table: run it on a connection with PRAGMA foreign_keys=OFF"
        )


def upgrade() -> None:
    dialect = op.get_context().dialect.name
    if dialect == "postgresql":
        op.execute("LOCK TABLE mfa_guard_enrolments IN ACCESS EXCLUSIVE MODE")
    if dialect == "sqlite":
        _refuse_cascading_copy()
    copied = sa.exists().where(
        authenticators.c.user_id == enrolments.c.user_id,
        authenticators.c.secret == enrolments.c.secret,
    )
    legacy = sa.select(
        _new_id(dialect),
        enrolments.c.user_id,
        sa.literal("totp"),
        sa.literal(LEGACY_APP_NAME),
        enrolments.c.confirmed_at,
        enrolments.c.secret,
        enrolments.c.last_step,
        sa.literal(0),
        sa.false(),
    ).where(enrolments.c.secret.is_not(None), enrolments.c.confirmed_at.is_not(None), ~copied)
    columns = [
        "id",
        "user_id",
        "kind",
        "name",
        "created_at",
        "secret",
        "last_step",
        "sign_count",
        "backed_up",
    ]
    move = sa.insert(authenticators).from_select(columns, legacy)
    if context.is_offline_mode():
        op.execute(move)
    elif moved := op.get_bind().execute(move).rowcount:
        logger.warning(
            "mfa_guard moved %d authenticator app secrets from %s to %s",
            moved,
            enrolments.name,
            authenticators.name,
        )
    # Offline, the table to copy cannot be read from the database: it is the one above.
    copy_from = enrolments if context.is_offline_mode() else None
    with op.batch_alter_table("mfa_guard_enrolments", copy_from=copy_from) as batch:
        batch.drop_column("last_step")
        batch.drop_column("secret")


def downgrade() -> None:
    dialect = op.get_context().dialect.name
    if dialect == "postgresql":
        op.execute("LOCK TABLE mfa_guard_enrolments IN ACCESS EXCLUSIVE MODE")
    with op.batch_alter_table("mfa_guard_enrolments") as batch:
        batch.add_column(sa.Column("secret", sa.Text, nullable=True))
        batch.add_column(sa.Column("last_step", sa.BigInteger, nullable=True))

    def oldest_app(column: sa.Column[object]) -> sa.ScalarSelect[object]:
        return (
            sa.select(column)
            .where(
                authenticators.c.user_id == enrolments.c.user_id,
                authenticators.c.kind == "totp",
                authenticators.c.secret.is_not(None),
            )
            .order_by(authenticators.c.created_at, authenticators.c.id)
            .limit(1)
            .scalar_subquery()
        )

    op.execute(
        sa.update(enrolments)
        .where(enrolments.c.confirmed_at.is_not(None))
        .values(
            secret=oldest_app(authenticators.c.secret),
            last_step=oldest_app(authenticators.c.last_step),
        )
    )
