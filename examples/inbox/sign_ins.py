"""The demo's sign-ins, kept on the server, so that signing out signs out every copy of the cookie.

Starlette's cookie session lives in the cookie: the server keeps nothing of it, so clearing it
in the browser that signs out does nothing to a copy taken before. So each sign-in puts a random
id (256 bits) in the session, and the server keeps only its SHA-256, with the user and an expiry,
in the demo's own table of the store's database (SQLite, or the PostgreSQL every worker shares).
A session's user counts only while its sign-in is there; sign-out deletes it, and a copy of the
cookie is then anonymous, first factor and all. The user's other browsers have sign-ins of their
own and stay signed in; remembered browsers are the kit's, and stay remembered.
"""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import MutableMapping
from typing import Any

from sqlalchemy import Column, Double, Index, MetaData, String, Table, delete, exc, select
from sqlalchemy.ext.asyncio import AsyncEngine

from mfa_guard import Clock, StoreUnavailable

# The demo's own tables: not the kit's metadata, which an app hands to its migrations.
metadata = MetaData()
sign_ins = Table(
    "inbox_sign_ins",
    metadata,
    # SHA-256 (hex) of the id in the session; the id itself is never stored.
    Column("id_hash", String(64), primary_key=True),
    Column("user_id", String(255), nullable=False),
    Column("expires_at", Double, nullable=False),
    Index("ix_inbox_sign_ins_user_id", "user_id"),
)

SESSION_KEY = "sign_in"


def _hash(sign_in: str) -> str:
    return hashlib.sha256(sign_in.encode("utf-8")).hexdigest()


class SignIns:
    """Sign-ins in ``engine``'s database, each valid ``lifetime`` seconds from its start.

    A database that does not answer raises :class:`~mfa_guard.StoreUnavailable`: the caller
    fails closed (the demo answers 503), and never lets a cookie in unchecked.
    """

    def __init__(self, engine: AsyncEngine, *, clock: Clock, lifetime: float) -> None:
        self.engine = engine
        # The read of every request in autocommit: one SELECT, no BEGIN and ROLLBACK around it.
        self._reads = engine.execution_options(isolation_level="AUTOCOMMIT")
        self.clock = clock
        self.lifetime = lifetime

    async def create_table(self) -> None:
        # Workers starting together may both try to create it: the loser's second try finds it.
        for attempt in range(2):
            try:
                async with self.engine.begin() as conn:
                    await conn.run_sync(metadata.create_all)
                return
            except exc.DBAPIError:
                if attempt:
                    raise

    async def start(self, session: MutableMapping[str, Any], user: str) -> None:
        """A new session for ``user``: the old one's content is dropped, a new sign-in kept."""
        sign_in = secrets.token_urlsafe(32)
        now = self.clock()
        try:
            async with self.engine.begin() as conn:
                # The user's expired sign-ins go as a new one comes: the table stays small.
                await conn.execute(
                    delete(sign_ins).where(sign_ins.c.user_id == user, sign_ins.c.expires_at <= now)
                )
                await conn.execute(
                    sign_ins.insert().values(
                        id_hash=_hash(sign_in), user_id=user, expires_at=now + self.lifetime
                    )
                )
        except (exc.SQLAlchemyError, OSError) as error:
            raise StoreUnavailable() from error
        session.clear()
        session["user"] = user
        session[SESSION_KEY] = sign_in

    async def user(self, session: MutableMapping[str, Any]) -> str | None:
        """The session's user while its sign-in is live, else ``None``."""
        user, sign_in = session.get("user"), session.get(SESSION_KEY)
        if not isinstance(user, str) or not isinstance(sign_in, str):
            return None
        query = select(sign_ins.c.user_id).where(
            sign_ins.c.id_hash == _hash(sign_in),
            sign_ins.c.user_id == user,
            sign_ins.c.expires_at > self.clock(),
        )
        try:
            async with self._reads.connect() as conn:
                found = (await conn.execute(query)).first()
        except (exc.SQLAlchemyError, OSError) as error:
            raise StoreUnavailable() from error
        return user if found is not None else None

    async def end(self, session: MutableMapping[str, Any]) -> None:
        """Deletes the session's sign-in, then clears the session: every copy is signed out."""
        sign_in = session.get(SESSION_KEY)
        if isinstance(sign_in, str):
            try:
                async with self.engine.begin() as conn:
                    await conn.execute(delete(sign_ins).where(sign_ins.c.id_hash == _hash(sign_in)))
            except (exc.SQLAlchemyError, OSError) as error:
                raise StoreUnavailable() from error
        session.clear()
