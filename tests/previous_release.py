"""The previous release's database: its tables exactly as that release made them (one TOTP secret
per user on the enrolment, no authenticators, no methods policy, no security log), and rows in
every one of them, with the plain values behind their tokens and hashes, for the tests that
upgrade it (tests/stores/test_upgrade.py, tests/stores/test_migrations.py)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from cryptography.fernet import Fernet
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
    false,
    func,
    insert,
)
from sqlalchemy.ext.asyncio import create_async_engine

from mfa_guard.core.recovery import TESTING_COST, generate, hash_set
from mfa_guard.crypto import SecretBox
from mfa_guard.stores.devices import TrustedDevice
from mfa_guard.stores.sites import Role

PREVIOUS = MetaData()
Table(
    "mfa_guard_enrolments",
    PREVIOUS,
    Column("user_id", String(255), primary_key=True),
    Column("epoch", Integer, nullable=False, default=0, server_default="0"),
    # A Fernet token, never the plain secret.
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
    Column(
        "updated_at",
        DateTime(timezone=True),
        nullable=True,
        server_default=func.now(),
        onupdate=func.now(),
    ),
)
Table(
    "mfa_guard_recovery_codes",
    PREVIOUS,
    Column(
        "user_id",
        String(255),
        ForeignKey("mfa_guard_enrolments.user_id", ondelete="CASCADE"),
        primary_key=True,
    ),
    Column("code_hash", String(128), primary_key=True),
)
Table(
    "mfa_guard_sites",
    PREVIOUS,
    Column("id", String(255), primary_key=True),
    Column("name", String(255), nullable=False),
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
Table(
    "mfa_guard_site_members",
    PREVIOUS,
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
    PREVIOUS,
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

BOX = SecretBox([Fernet.generate_key().decode()])
CONFIRMED_AT = 1_700_000_000.25
NOW = 1_800_000_000.0
# The name the upgrade gives an app made from a moved secret.
LEGACY_APP_NAME = "Authenticator app"


@dataclass(frozen=True, slots=True)
class LegacyUser:
    """One enrolment of the previous release, with the plain values behind its tokens."""

    user_id: str
    epoch: int
    secret: str | None = None
    confirmed_at: float | None = None
    last_step: int | None = None
    pending: str | None = None
    binding: str | None = None
    codes: tuple[str, ...] = ()
    phone: str | None = None
    phone_verified_at: float | None = None
    sms: dict[str, Any] = field(default_factory=dict)

    @property
    def enrolled(self) -> bool:
        return self.secret is not None and self.confirmed_at is not None


USERS = (
    # Enrolled, with recovery codes and a verified phone.
    LegacyUser(
        "alice@acme.test",
        epoch=4,
        secret="JBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXP",
        confirmed_at=CONFIRMED_AT,
        last_step=59_999_990,
        codes=tuple(generate(4)),
        phone="+33612345678",
        phone_verified_at=CONFIRMED_AT + 60,
    ),
    # Enrolled, setting up a new app (the previous release let an enrolled user begin one),
    # with a text on its way.
    LegacyUser(
        "bob@acme.test",
        epoch=1,
        secret="KRSXG5CTMVRXEZLUKRSXG5CTMVRXEZLU",
        confirmed_at=CONFIRMED_AT + 1,
        last_step=56_666_700,
        pending="GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ",
        binding="c" * 32,
        codes=tuple(generate(2)),
        sms={
            "sms_purpose": "sign_in",
            "sms_code_hash": "a" * 64,
            "sms_phone": "+447400123456",
            "sms_expires_at": NOW + 600,
        },
    ),
    # A set-up begun, never confirmed.
    LegacyUser(
        "carol@acme.test", epoch=0, pending="MFRGGZDFMZTWQ2LKMFRGGZDFMZTWQ2LK", binding="d" * 32
    ),
    # Not enrolled: a verified phone only, then a user who turned 2FA off.
    LegacyUser("dave@acme.test", epoch=1, phone="+33699887766", phone_verified_at=CONFIRMED_AT + 5),
    LegacyUser("erin@acme.test", epoch=2),
)
ENROLLED = [user for user in USERS if user.enrolled]

# Acme enforces 2FA from a deadline (its owner set it), Solo does not.
SITES: tuple[dict[str, Any], ...] = (
    {
        "id": "acme",
        "name": "Acme",
        "enforce": True,
        "grace_deadline": NOW + 86_400,
        "policy_changed_by": "alice@acme.test",
        "policy_changed_at": CONFIRMED_AT + 100,
    },
    {
        "id": "solo",
        "name": "Solo",
        "enforce": False,
        "grace_deadline": None,
        "policy_changed_by": None,
        "policy_changed_at": None,
    },
)
MEMBERS = (
    ("acme", "alice@acme.test", Role.OWNER),
    ("acme", "bob@acme.test", Role.OPERATOR),
    ("acme", "carol@acme.test", Role.OPERATOR),
    ("solo", "dave@acme.test", Role.OWNER),
)
DEVICES = (
    TrustedDevice(
        id="d" * 32,
        user_id="alice@acme.test",
        token_hash="e" * 64,
        name="Firefox on Linux",
        created_at=CONFIRMED_AT + 10,
        last_seen_at=CONFIRMED_AT + 20,
        expires_at=NOW + 30 * 86_400,
        epoch=4,
    ),
    TrustedDevice(
        id="f" * 32,
        user_id="bob@acme.test",
        token_hash="0" * 64,
        name="Safari on iPhone",
        created_at=CONFIRMED_AT + 30,
        last_seen_at=CONFIRMED_AT + 40,
        expires_at=NOW + 30 * 86_400,
        epoch=1,
    ),
)


async def make_previous_release_database(url: str, connect_args: dict[str, Any]) -> None:
    """The previous release's tables at ``url``, holding :data:`USERS` (their recovery codes
    hashed as the kit hashes them), :data:`SITES`, :data:`MEMBERS` and :data:`DEVICES`."""
    engine = create_async_engine(url, connect_args=connect_args)
    tables = PREVIOUS.tables
    try:
        async with engine.begin() as conn:
            await conn.run_sync(PREVIOUS.create_all)
            for user in USERS:
                recovery = hash_set(user.codes, TESTING_COST) if user.codes else None
                await conn.execute(
                    insert(tables["mfa_guard_enrolments"]).values(
                        user_id=user.user_id,
                        epoch=user.epoch,
                        secret=None if user.secret is None else BOX.encrypt(user.secret),
                        confirmed_at=user.confirmed_at,
                        last_step=user.last_step,
                        pending_secret=None if user.pending is None else BOX.encrypt(user.pending),
                        pending_binding=user.binding,
                        recovery_salt=None if recovery is None else recovery.salt,
                        recovery_params=None if recovery is None else recovery.params,
                        phone=user.phone,
                        phone_verified_at=user.phone_verified_at,
                        **user.sms,
                    )
                )
                if recovery is not None:
                    await conn.execute(
                        insert(tables["mfa_guard_recovery_codes"]),
                        [{"user_id": user.user_id, "code_hash": h} for h in recovery.hashes],
                    )
            await conn.execute(insert(tables["mfa_guard_sites"]), list(SITES))
            await conn.execute(
                insert(tables["mfa_guard_site_members"]),
                [{"site_id": s, "user_id": u, "role": r.value} for s, u, r in MEMBERS],
            )
            await conn.execute(
                insert(tables["mfa_guard_trusted_devices"]),
                [
                    {
                        "id": d.id,
                        "user_id": d.user_id,
                        "token_hash": d.token_hash,
                        "name": d.name,
                        "created_at": d.created_at,
                        "last_seen_at": d.last_seen_at,
                        "expires_at": d.expires_at,
                        "epoch": d.epoch,
                    }
                    for d in DEVICES
                ],
            )
    finally:
        await engine.dispose()
