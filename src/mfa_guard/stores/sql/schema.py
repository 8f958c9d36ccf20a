"""The kit's tables, and the statements built once on them.

Every table lives on :data:`metadata`: the models of this release's layout, which the kit's
Alembic migrations (``mfa_guard.stores.sql.migrations``) bring a database to, and which a test
compares with a database migrated to their head. The statements every verify and re-check
makes are built here once, with bound parameters.
"""

from __future__ import annotations

from typing import Any

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
    and_,
    bindparam,
    case,
    cast,
    delete,
    exists,
    false,
    func,
    insert,
    literal_column,
    null,
    or_,
    select,
    text,
    union_all,
    update,
)
from sqlalchemy.sql.elements import ColumnElement

from mfa_guard.stores.base import FactorKind
from mfa_guard.stores.sites import MethodPolicy

metadata = MetaData()

enrolments = Table(
    "mfa_guard_enrolments",
    metadata,
    Column("user_id", String(255), primary_key=True),
    Column("epoch", Integer, nullable=False, default=0, server_default="0"),
    # When the user's first authenticator was added (2FA turned on). The secrets of the
    # releases before several authenticators per user, kept here (``secret``, ``last_step``),
    # moved to authenticators and their columns went with migration mfa_guard_0005.
    Column("confirmed_at", Double, nullable=True),
    Column("pending_secret", Text, nullable=True),
    # The session that began the pending set-up: a keyed hash of its nonce, never the nonce.
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

authenticators = Table(
    "mfa_guard_authenticators",
    metadata,
    # The public id the user renames or removes the authenticator by.
    Column("id", String(32), primary_key=True),
    Column(
        "user_id",
        String(255),
        ForeignKey("mfa_guard_enrolments.user_id", ondelete="CASCADE"),
        nullable=False,
    ),
    # ``totp`` (an authenticator app) or ``webauthn`` (a passkey or security key).
    Column("kind", String(16), nullable=False),
    Column("name", String(64), nullable=False),
    Column("created_at", Double, nullable=False),
    Column("last_used_at", Double, nullable=True),
    # An app's: its secret as a Fernet token (never the plain secret), its last accepted step.
    Column("secret", Text, nullable=True),
    Column("last_step", BigInteger, nullable=True),
    # A passkey's or security key's, as WebAuthn registered it: the credential id (at most
    # 1023 bytes), registered once for any user; the COSE public key; the signature counter;
    # the transports (comma-joined); the model (AAGUID); whether it is synced (backed up).
    Column("credential_id", LargeBinary, nullable=True, unique=True),
    Column("public_key", LargeBinary, nullable=True),
    Column("sign_count", BigInteger, nullable=False, default=0, server_default="0"),
    Column("transports", String, nullable=True),
    Column("aaguid", String(36), nullable=True),
    Column("backed_up", Boolean, nullable=False, default=False, server_default=false()),
    Index("ix_mfa_guard_authenticators_user_id", "user_id"),
)

webauthn_challenges = Table(
    "mfa_guard_webauthn_challenges",
    metadata,
    # A hash of the challenge, never the challenge.
    Column("challenge_hash", String(64), primary_key=True),
    # No foreign key: a user who has never enrolled registers a first passkey with one.
    Column("user_id", String(255), nullable=False),
    Column("purpose", String(16), nullable=False),
    # The session that asked: a keyed hash of its nonce.
    Column("binding", String(64), nullable=False),
    Column("expires_at", Double, nullable=False),
    Index("ix_mfa_guard_webauthn_challenges_user_id", "user_id"),
)

sites = Table(
    "mfa_guard_sites",
    metadata,
    Column("id", String(255), primary_key=True),
    Column("name", String(255), nullable=False),
    # The 2FA policy: while ``enforce`` is on, members need 2FA from ``grace_deadline`` on.
    Column("enforce", Boolean, nullable=False, default=False, server_default=false()),
    Column("grace_deadline", Double, nullable=True),
    # Which second factors it accepts (a MethodPolicy value; NULL: any, as every site made
    # before the column has it), from ``methods_deadline`` on.
    Column("methods", String(24), nullable=True),
    Column("methods_deadline", Double, nullable=True),
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
    # The User-Agent the browser was remembered with (its first 1024 characters), which the
    # pages name it from in the reader's language; NULL for one remembered before
    # mfa_guard_0006, whose English ``name`` is shown.
    Column("user_agent", String(1024), nullable=True),
    Index("ix_mfa_guard_trusted_devices_user_id", "user_id"),
)

event_log = Table(
    "mfa_guard_events",
    metadata,
    # The cursor of the security log: grows with each append and is never given again, even
    # once purged (SQLite: INTEGER PRIMARY KEY AUTOINCREMENT, as sqlite_autoincrement below
    # makes it; a plain rowid would give the highest id again once its row was deleted;
    # PostgreSQL: a sequence).
    Column("id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True),
    # An EventKind value; a kind this release does not know (a later one wrote it) is left
    # out of its reads.
    Column("kind", String(64), nullable=False),
    Column("user_id", String(255), nullable=False),
    Column("at", Double, nullable=False),
    Column("method", String(32), nullable=True),
    Column("client_ip", String(64), nullable=True),
    Column("site", String(255), nullable=True),
    # The kit's ``key=value`` pairs, and the browser's User-Agent (its first 256 characters,
    # as the kit cuts it): never a code, a secret or a phone number (AuditEvent).
    Column("detail", Text, nullable=True),
    Column("user_agent", Text, nullable=True),
    # A site's log (its own events, newest first), a user's own activity (and the site log's
    # events of its members), and the purge of what is older than the retention. The site's
    # index leaves out the events of no site: smaller, and never chosen for ``site IS NULL``
    # (SQLite would, without ANALYZE, and go through most of the log).
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


def enrolled() -> ColumnElement[bool]:
    """The enrolments row's user has an authenticator (correlated to ``mfa_guard_enrolments``)."""
    return exists().where(authenticators.c.user_id == enrolments.c.user_id)


def _null(column: Column[Any]) -> ColumnElement[Any]:
    return cast(null(), column.type)


# The statements every verify and re-check makes, built once with bound parameters: building
# and caching a statement per call costs more than running it.

# The enrolment, its recovery codes and its authenticators, in one statement: the enrolment's
# row once per recovery code (once if none, ``part`` 0), then a row per authenticator (``part``
# 1, oldest first), each with the other part's columns empty.
_ENROLMENT_COLUMNS = (
    enrolments.c.epoch,
    enrolments.c.confirmed_at,
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
)
_AUTHENTICATOR_COLUMNS = tuple(c for c in authenticators.c if c.name != "user_id")
_ENROLMENT_PART = select(
    literal_column("0", Integer).label("part"),
    *_ENROLMENT_COLUMNS,
    recovery_codes.c.code_hash,
    *(_null(c).label(f"a_{c.name}") for c in _AUTHENTICATOR_COLUMNS),
).select_from(enrolments.outerjoin(recovery_codes))
_AUTHENTICATOR_PART = select(
    literal_column("1", Integer).label("part"),
    *(_null(c).label(c.name) for c in _ENROLMENT_COLUMNS),
    _null(recovery_codes.c.code_hash).label("code_hash"),
    *(c.label(f"a_{c.name}") for c in _AUTHENTICATOR_COLUMNS),
)
_UNION = union_all(
    _ENROLMENT_PART.where(enrolments.c.user_id == bindparam("uid")),
    _AUTHENTICATOR_PART.where(authenticators.c.user_id == bindparam("uid")),
)
GET_ENROLMENT = _UNION.order_by(
    _UNION.selected_columns.part,
    _UNION.selected_columns.a_created_at,
    _UNION.selected_columns.a_id,
    _UNION.selected_columns.code_hash,
)
GET_SUMMARY = select(enrolled().label("enrolled"), enrolments.c.epoch).where(
    enrolments.c.user_id == bindparam("uid")
)
# A compare-and-set on one app of the user: a newer step only.
ACCEPT_STEP = (
    update(authenticators)
    .where(
        authenticators.c.id == bindparam("aid"),
        authenticators.c.user_id == bindparam("uid"),
        authenticators.c.kind == FactorKind.TOTP.value,
        or_(authenticators.c.last_step.is_(None), authenticators.c.last_step < bindparam("step")),
    )
    .values(last_step=bindparam("step"), last_used_at=bindparam("now"))
)
# A compare-and-set on one passkey or security key of the user: a counter that went up, or
# one that stays at 0 (an authenticator that does not count).
ACCEPT_ASSERTION = (
    update(authenticators)
    .where(
        authenticators.c.id == bindparam("aid"),
        authenticators.c.user_id == bindparam("uid"),
        authenticators.c.kind == FactorKind.WEBAUTHN.value,
        or_(
            authenticators.c.sign_count < bindparam("count"),
            and_(
                authenticators.c.sign_count == 0, authenticators.c.sign_count == bindparam("count")
            ),
        ),
    )
    .values(sign_count=bindparam("count"), last_used_at=bindparam("now"))
)
# Removes the challenge whoever answers first; its deadline says whether it was still good.
CONSUME_WEBAUTHN_CHALLENGE = (
    delete(webauthn_challenges)
    .where(
        webauthn_challenges.c.challenge_hash == bindparam("challenge_hash"),
        webauthn_challenges.c.user_id == bindparam("uid"),
        webauthn_challenges.c.purpose == bindparam("purpose"),
        webauthn_challenges.c.binding == bindparam("binding"),
    )
    .returning(webauthn_challenges.c.expires_at)
)
USE_RECOVERY_CODE = delete(recovery_codes).where(
    recovery_codes.c.user_id == bindparam("uid"),
    recovery_codes.c.code_hash == bindparam("code_hash"),
)
# One event into the security log, its id back (not retried: a second run would keep it twice).
APPEND_EVENT = (
    insert(event_log)
    .values(
        kind=bindparam("kind"),
        user_id=bindparam("uid"),
        at=bindparam("at"),
        method=bindparam("method"),
        client_ip=bindparam("client_ip"),
        site=bindparam("site"),
        detail=bindparam("detail"),
        user_agent=bindparam("user_agent"),
    )
    .returning(event_log.c.id)
)
PURGE_EVENTS = delete(event_log).where(event_log.c.at < bindparam("before"))
# An enforcing policy without a deadline enforces at once, as SitePolicy.requires_by.
EARLIEST_DEADLINE = (
    select(func.min(func.coalesce(sites.c.grace_deadline, 0.0)).label("deadline"))
    .select_from(sites.join(site_members))
    .where(site_members.c.user_id == bindparam("uid"), sites.c.enforce)
)


def _earliest(condition: ColumnElement[bool], deadline: Column[Any]) -> ColumnElement[Any]:
    """The earliest ``deadline`` among the rows meeting ``condition`` (none: NULL), a policy
    without one counting from 0.0: at once."""
    return func.min(case((condition, func.coalesce(deadline, 0.0))))


_NO_SMS = or_(
    sites.c.methods == MethodPolicy.NO_SMS.value,
    sites.c.methods == MethodPolicy.PHISHING_RESISTANT.value,
)
# What the user's sites require, as requirements_of: each deadline the earliest among the
# enforcing sites that require it (phishing_resistant refuses texted codes too).
REQUIREMENTS = (
    select(
        func.min(func.coalesce(sites.c.grace_deadline, 0.0)).label("enrol_by"),
        _earliest(_NO_SMS, sites.c.methods_deadline).label("no_sms_by"),
        _earliest(
            sites.c.methods == MethodPolicy.PHISHING_RESISTANT.value, sites.c.methods_deadline
        ).label("passkey_by"),
    )
    .select_from(sites.join(site_members))
    .where(site_members.c.user_id == bindparam("uid"), sites.c.enforce)
)
