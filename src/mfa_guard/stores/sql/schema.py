"""The kit's tables, and the statements built once on them.

Every table lives on :data:`metadata`: add it to an Alembic ``target_metadata`` to manage them
with the application's own migrations (and pass ``create_tables=False`` to the adapters).
:func:`create_and_add_columns` is what an adapter runs on first use: it creates the missing
tables and adds to an older table the nullable columns a later release brought. The statements
every verify and re-check makes are built here once, with bound parameters.
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
    MetaData,
    String,
    Table,
    Text,
    and_,
    bindparam,
    delete,
    false,
    func,
    inspect,
    or_,
    select,
    text,
    update,
)
from sqlalchemy.engine import Connection
from sqlalchemy.sql.elements import ColumnElement

from mfa_guard.errors import ConfigurationError

logger = logging.getLogger("mfa_guard")
metadata = MetaData()

enrolments = Table(
    "mfa_guard_enrolments",
    metadata,
    Column("user_id", String(255), primary_key=True),
    Column("epoch", Integer, nullable=False, default=0, server_default="0"),
    # A Fernet token, never the plain secret.
    Column("secret", Text, nullable=True),
    Column("confirmed_at", Double, nullable=True),
    Column("last_step", BigInteger, nullable=True),
    Column("pending_secret", Text, nullable=True),
    # The session that began the pending set-up: a keyed hash of its nonce, never the nonce.
    # Added after the first release: the store adds it to an older table (empty) when it makes
    # its tables (``create_and_add_columns``).
    Column("pending_binding", String(64), nullable=True),
    Column("recovery_salt", String(64), nullable=True),
    Column("recovery_params", String(64), nullable=True),
    # The verified phone (E.164) and the one pending SMS code: a keyed hash, never the code.
    Column("phone", String(32), nullable=True),
    Column("phone_verified_at", Double, nullable=True),
    Column("sms_purpose", String(16), nullable=True),
    Column("sms_code_hash", String(64), nullable=True),
    Column("sms_phone", String(32), nullable=True),
    Column("sms_expires_at", Double, nullable=True),
    Column("created_at", DateTime(timezone=True), nullable=True, server_default=func.now()),
    Column(
        "updated_at",
        DateTime(timezone=True),
        nullable=True,
        server_default=func.now(),
        onupdate=func.now(),
    ),
)

recovery_codes = Table(
    "mfa_guard_recovery_codes",
    metadata,
    Column(
        "user_id",
        String(255),
        ForeignKey("mfa_guard_enrolments.user_id", ondelete="CASCADE"),
        primary_key=True,
    ),
    Column("code_hash", String(128), primary_key=True),
)

sites = Table(
    "mfa_guard_sites",
    metadata,
    Column("id", String(255), primary_key=True),
    Column("name", String(255), nullable=False),
    # The 2FA policy: while ``enforce`` is on, members need 2FA from ``grace_deadline`` on.
    Column("enforce", Boolean, nullable=False, default=False, server_default=false()),
    Column("grace_deadline", Double, nullable=True),
    Column("policy_changed_by", String(255), nullable=True),
    Column("policy_changed_at", Double, nullable=True),
    Column("created_at", DateTime(timezone=True), nullable=True, server_default=func.now()),
    Column(
        "updated_at",
        DateTime(timezone=True),
        nullable=True,
        server_default=func.now(),
        onupdate=func.now(),
    ),
)

site_members = Table(
    "mfa_guard_site_members",
    metadata,
    Column(
        "site_id",
        String(255),
        ForeignKey("mfa_guard_sites.id", ondelete="CASCADE"),
        primary_key=True,
    ),
    Column("user_id", String(255), primary_key=True),
    Column("role", String(16), nullable=False),
    # A user's sites (``deadline``, ``memberships``): the primary key leads with the site.
    Index("ix_mfa_guard_site_members_user_id", "user_id"),
)

trusted_devices = Table(
    "mfa_guard_trusted_devices",
    metadata,
    # The public id the user revokes a device by; never the token.
    Column("id", String(32), primary_key=True),
    Column("user_id", String(255), nullable=False),
    # SHA-256 of the cookie's token (hex).
    Column("token_hash", String(64), nullable=False, unique=True),
    Column("name", String(128), nullable=False),
    Column("created_at", Double, nullable=False),
    Column("last_seen_at", Double, nullable=False),
    Column("expires_at", Double, nullable=False),
    Column("epoch", Integer, nullable=False),
    Index("ix_mfa_guard_trusted_devices_user_id", "user_id"),
)


def enrolled() -> ColumnElement[bool]:
    """The row holds a confirmed second factor."""
    return and_(enrolments.c.secret.is_not(None), enrolments.c.confirmed_at.is_not(None))


def create_and_add_columns(conn: Connection) -> None:
    """Creates the missing tables, then adds to a table made by an earlier release the nullable
    columns it lacks (``create_all`` never alters an existing table), so an upgrade keeps every
    row. A missing column that cannot be added empty is refused with the statement to run."""
    metadata.create_all(conn)
    inspector = inspect(conn)
    for table in metadata.sorted_tables:
        present = {column["name"] for column in inspector.get_columns(table.name, table.schema)}
        for column in table.columns:
            if column.name in present:
                continue
            preparer = conn.dialect.identifier_preparer
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


# The statements every verify and re-check makes, built once with bound parameters: building
# and caching a statement per call costs more than running it.
GET_ENROLMENT = (
    select(
        enrolments.c.epoch,
        enrolments.c.secret,
        enrolments.c.confirmed_at,
        enrolments.c.last_step,
        enrolments.c.pending_secret,
        enrolments.c.pending_binding,
        enrolments.c.recovery_salt,
        enrolments.c.recovery_params,
        enrolments.c.phone,
        enrolments.c.phone_verified_at,
        enrolments.c.sms_purpose,
        enrolments.c.sms_code_hash,
        enrolments.c.sms_phone,
        enrolments.c.sms_expires_at,
        recovery_codes.c.code_hash,
    )
    .select_from(enrolments.outerjoin(recovery_codes))
    .where(enrolments.c.user_id == bindparam("uid"))
    .order_by(recovery_codes.c.code_hash)
)
GET_SUMMARY = select(enrolled().label("enrolled"), enrolments.c.epoch).where(
    enrolments.c.user_id == bindparam("uid")
)
ACCEPT_STEP = (
    update(enrolments)
    .where(
        enrolments.c.user_id == bindparam("uid"),
        enrolled(),
        or_(enrolments.c.last_step.is_(None), enrolments.c.last_step < bindparam("step")),
    )
    .values(last_step=bindparam("step"))
)
USE_RECOVERY_CODE = delete(recovery_codes).where(
    recovery_codes.c.user_id == bindparam("uid"),
    recovery_codes.c.code_hash == bindparam("code_hash"),
)
# An enforcing policy without a deadline enforces at once, as SitePolicy.requires_by.
EARLIEST_DEADLINE = (
    select(func.min(func.coalesce(sites.c.grace_deadline, 0.0)).label("deadline"))
    .select_from(sites.join(site_members))
    .where(site_members.c.user_id == bindparam("uid"), sites.c.enforce)
)
