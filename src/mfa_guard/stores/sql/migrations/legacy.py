"""The kit's tables as the last release before migrations made them, frozen: what a database
without the kit's version table is brought to before it is stamped ``mfa_guard_0004``.

Those releases made their tables with ``create_all`` on first use and added to an older table
the nullable columns a later one brought, so a database of theirs holds any earlier layout, or
a part of one. :func:`complete` does what they did, once more: it creates the missing tables
and adds the missing nullable columns, empty, each named in a ``WARNING``; a missing column
that cannot be added empty is refused with the statement to run. The layout is then exactly
revision ``mfa_guard_0004``'s (``tests/stores/test_migrations.py`` compares the two), and the
revisions after it run as on any database.

Never change this module: it is a release's layout, not the current one (``schema.py``).
"""

from __future__ import annotations

import logging

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    DateTime,
    Double,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
    false,
    func,
    inspect,
    text,
)
from sqlalchemy.engine import Connection

from mfa_guard.errors import ConfigurationError

logger = logging.getLogger("mfa_guard")

# The revision whose layout this is.
REVISION = "mfa_guard_0004"

LAYOUT = MetaData()

enrolments = Table(
    "mfa_guard_enrolments",
    LAYOUT,
    Column("user_id", String(255), primary_key=True),
    Column("epoch", Integer, nullable=False, server_default="0"),
    Column("secret", Text, nullable=True),
    Column("confirmed_at", Double, nullable=True),
    Column("last_step", BigInteger, nullable=True),
    Column("pending_secret", Text, nullable=True),
    Column("pending_binding", String(64), nullable=True),
    Column("recovery_salt", String(64), nullable=True),
    Column("recovery_params", String(64), nullable=True),
    Column("phone", String(32), nullable=True),
    Column("phone_verified_at", Double, nullable=True),
    Column("sms_purpose", String(16), nullable=True),
    Column("sms_code_hash", String(64), nullable=True),
    Column("sms_phone", String(32), nullable=True),
    Column("sms_expires_at", Double, nullable=True),
    Column("created_at", DateTime(timezone=True), nullable=True, server_default=func.now()),
    Column("updated_at", DateTime(timezone=True), nullable=True, server_default=func.now()),
)

Table(
    "mfa_guard_recovery_codes",
    LAYOUT,
    Column(
        "user_id",
        String(255),
        ForeignKey("mfa_guard_enrolments.user_id", ondelete="CASCADE"),
        primary_key=True,
    ),
    Column("code_hash", String(128), primary_key=True),
)

authenticators = Table(
    "mfa_guard_authenticators",
    LAYOUT,
    Column("id", String(32), primary_key=True),
    Column(
        "user_id",
        String(255),
        ForeignKey("mfa_guard_enrolments.user_id", ondelete="CASCADE"),
        nullable=False,
    ),
    Column("kind", String(16), nullable=False),
    Column("name", String(64), nullable=False),
    Column("created_at", Double, nullable=False),
    Column("last_used_at", Double, nullable=True),
    Column("secret", Text, nullable=True),
    Column("last_step", BigInteger, nullable=True),
    Column("credential_id", LargeBinary, nullable=True, unique=True),
    Column("public_key", LargeBinary, nullable=True),
    Column("sign_count", BigInteger, nullable=False, server_default="0"),
    Column("transports", String, nullable=True),
    Column("aaguid", String(36), nullable=True),
    Column("backed_up", Boolean, nullable=False, server_default=false()),
    Index("ix_mfa_guard_authenticators_user_id", "user_id"),
)

Table(
    "mfa_guard_webauthn_challenges",
    LAYOUT,
    Column("challenge_hash", String(64), primary_key=True),
    Column("user_id", String(255), nullable=False),
    Column("purpose", String(16), nullable=False),
    Column("binding", String(64), nullable=False),
    Column("expires_at", Double, nullable=False),
    Index("ix_mfa_guard_webauthn_challenges_user_id", "user_id"),
)

sites = Table(
    "mfa_guard_sites",
    LAYOUT,
    Column("id", String(255), primary_key=True),
    Column("name", String(255), nullable=False),
    Column("enforce", Boolean, nullable=False, server_default=false()),
    Column("grace_deadline", Double, nullable=True),
    Column("methods", String(24), nullable=True),
    Column("methods_deadline", Double, nullable=True),
    Column("policy_changed_by", String(255), nullable=True),
    Column("policy_changed_at", Double, nullable=True),
    Column("created_at", DateTime(timezone=True), nullable=True, server_default=func.now()),
    Column("updated_at", DateTime(timezone=True), nullable=True, server_default=func.now()),
)

Table(
    "mfa_guard_site_members",
    LAYOUT,
    Column(
        "site_id",
        String(255),
        ForeignKey("mfa_guard_sites.id", ondelete="CASCADE"),
        primary_key=True,
    ),
    Column("user_id", String(255), primary_key=True),
    Column("role", String(16), nullable=False),
    Index("ix_mfa_guard_site_members_user_id", "user_id"),
)

Table(
    "mfa_guard_trusted_devices",
    LAYOUT,
    Column("id", String(32), primary_key=True),
    Column("user_id", String(255), nullable=False),
    Column("token_hash", String(64), nullable=False, unique=True),
    Column("name", String(128), nullable=False),
    Column("created_at", Double, nullable=False),
    Column("last_seen_at", Double, nullable=False),
    Column("expires_at", Double, nullable=False),
    Column("epoch", Integer, nullable=False),
    Index("ix_mfa_guard_trusted_devices_user_id", "user_id"),
)

Table(
    "mfa_guard_events",
    LAYOUT,
    Column("id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True),
    Column("kind", String(64), nullable=False),
    Column("user_id", String(255), nullable=False),
    Column("at", Double, nullable=False),
    Column("method", String(32), nullable=True),
    Column("client_ip", String(64), nullable=True),
    Column("site", String(255), nullable=True),
    Column("detail", Text, nullable=True),
    Column("user_agent", Text, nullable=True),
    Index(
        "ix_mfa_guard_events_site_id",
        "site",
        "id",
        sqlite_where=text("site IS NOT NULL"),
        postgresql_where=text("site IS NOT NULL"),
    ),
    Index("ix_mfa_guard_events_user_id_id", "user_id", "id"),
    Index("ix_mfa_guard_events_at", "at"),
    sqlite_autoincrement=True,
)


def complete(conn: Connection) -> None:
    """Brings the kit's tables of a database made before migrations to :data:`LAYOUT`: the
    missing tables created, the missing nullable columns added empty (``create_all`` never
    alters a table, so the releases before did this on every start). Run inside the kit's
    migration transaction, under its lock."""
    LAYOUT.create_all(conn)
    inspector = inspect(conn)
    preparer = conn.dialect.identifier_preparer
    for table in LAYOUT.sorted_tables:
        present = {column["name"] for column in inspector.get_columns(table.name)}
        for column in table.columns:
            if column.name in present:
                continue
            statement = (
                f"ALTER TABLE {preparer.format_table(table)} ADD COLUMN "
                f"{preparer.format_column(column)} {column.type.compile(dialect=conn.dialect)}"
            )
            if not column.nullable:
                raise ConfigurationError(
                    f"the table {table.name} was made by an earlier mfa_guard and lacks the "
                    f"column {column.name}, which cannot be added empty: migrate it ({statement} "
                    "with a value for every row)"
                )
            conn.execute(text(statement))
            logger.warning(
                "mfa_guard added the column %s.%s (%s)", table.name, column.name, statement
            )
