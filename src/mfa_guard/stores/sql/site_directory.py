"""The site directory on SQL (:class:`SQLSiteDirectory`): sites, their members and their 2FA
policies, next to the enrolments.

``add_member`` is an ``INSERT … SELECT`` from the site's row, so a member is never added to a
site that does not exist, whatever the foreign keys; ``deadline`` and ``requirements``, asked on
every re-check, are statements built once (:data:`~mfa_guard.stores.sql.schema.EARLIEST_DEADLINE`,
:data:`~mfa_guard.stores.sql.schema.REQUIREMENTS`). A site's ``methods`` policy is kept as its
value, ``any`` as NULL (what a table made before the column holds).
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import String, delete, func, literal, select, update

from mfa_guard.stores.sites import (
    Member,
    Membership,
    MethodPolicy,
    Requirements,
    Role,
    Site,
    SitePolicy,
)
from mfa_guard.stores.sql.adapter import SQLAdapter
from mfa_guard.stores.sql.engine import (
    read_all,
    read_first,
    read_one,
    read_rowcount,
    read_scalar_or_none,
)
from mfa_guard.stores.sql.schema import EARLIEST_DEADLINE, REQUIREMENTS, site_members, sites


class SQLSiteDirectory(SQLAdapter):
    """Sites, their members and their 2FA policies in a SQL database, next to the enrolments.

    Built like :class:`~mfa_guard.stores.sql.SQLStore` (a ``url`` with engine options, or a
    shared ``engine``), or with :meth:`sharing` to use a store's engine. Backend failures
    raise :class:`~mfa_guard.errors.StoreUnavailable`.
    """

    async def deadline(self, user_id: str) -> float | None:
        rows = await self._db.rows(EARLIEST_DEADLINE, {"uid": user_id}, retry=True)
        return _instant(rows[0]["deadline"])

    async def requirements(self, user_id: str) -> Requirements:
        rows = await self._db.rows(REQUIREMENTS, {"uid": user_id}, retry=True)
        row = rows[0]
        return Requirements(
            _instant(row["enrol_by"]), _instant(row["no_sms_by"]), _instant(row["passkey_by"])
        )

    async def memberships(self, user_id: str) -> list[Membership]:
        query = (
            select(*_SITE_COLUMNS, site_members.c.role)
            .select_from(sites.join(site_members))
            .where(site_members.c.user_id == user_id)
            .order_by(
                self._db.in_code_point_order(sites.c.name),
                self._db.in_code_point_order(sites.c.id),
            )
        )
        rows = await self._db.run(query, {}, read_all, retry=True)
        return [Membership(_site(row), Role(row.role)) for row in rows]

    async def site(self, site_id: str) -> Site | None:
        query = select(*_SITE_COLUMNS).where(sites.c.id == site_id)
        row = await self._db.run(query, {}, read_first, retry=True)
        return None if row is None else _site(row)

    async def role(self, site_id: str, user_id: str) -> Role | None:
        query = select(site_members.c.role).where(
            site_members.c.site_id == site_id, site_members.c.user_id == user_id
        )
        role = await self._db.run(query, {}, read_scalar_or_none, retry=True)
        return None if role is None else Role(role)

    async def members(self, site_id: str) -> list[Member]:
        query = (
            select(site_members.c.user_id, site_members.c.role)
            .where(site_members.c.site_id == site_id)
            .order_by(self._db.in_code_point_order(site_members.c.user_id))
        )
        rows = await self._db.run(query, {}, read_all, retry=True)
        return [Member(row.user_id, Role(row.role)) for row in rows]

    async def set_policy(self, site_id: str, policy: SitePolicy) -> bool:
        statement = (
            update(sites)
            .where(sites.c.id == site_id)
            .values(
                enforce=policy.enforce,
                grace_deadline=policy.grace_deadline,
                methods=None if policy.methods is MethodPolicy.ANY else policy.methods.value,
                methods_deadline=policy.methods_deadline,
                policy_changed_by=policy.changed_by,
                policy_changed_at=policy.changed_at,
            )
        )
        # Setting the same policy twice is setting it once: retried. (A second run matches
        # the row again: PostgreSQL and SQLite count matched rows, not changed ones.)
        return await self._db.run(statement, {}, read_rowcount, retry=True) == 1

    async def save_site(self, site_id: str, name: str) -> Site:
        insert_site = self._db.upsert(sites).values(id=site_id, name=name)
        statement = insert_site.on_conflict_do_update(
            index_elements=[sites.c.id],
            set_={"name": insert_site.excluded.name, "updated_at": func.now()},
        ).returning(*_SITE_COLUMNS)
        return _site(await self._db.run(statement, {}, read_one, retry=True))

    async def add_member(self, site_id: str, user_id: str, role: Role) -> bool:
        # The row comes from the site's own row, so an unknown site inserts nothing: no reliance
        # on the foreign key, which SQLite enforces only with PRAGMA foreign_keys=ON.
        from_site = select(
            sites.c.id, literal(user_id, String(255)), literal(role.value, String(16))
        ).where(sites.c.id == site_id)
        insert_member = self._db.upsert(site_members).from_select(
            ["site_id", "user_id", "role"], from_site
        )
        statement = insert_member.on_conflict_do_update(
            index_elements=[site_members.c.site_id, site_members.c.user_id],
            set_={"role": insert_member.excluded.role},
        ).returning(site_members.c.site_id)
        return await self._db.run(statement, {}, read_first, retry=True) is not None

    async def remove_member(self, site_id: str, user_id: str) -> bool:
        statement = delete(site_members).where(
            site_members.c.site_id == site_id, site_members.c.user_id == user_id
        )
        # Not retried: a second run after a first that reached the server would say "no such
        # member" of one it just removed.
        return await self._db.run(statement, {}, read_rowcount, retry=False) == 1


_SITE_COLUMNS = (
    sites.c.id,
    sites.c.name,
    sites.c.enforce,
    sites.c.grace_deadline,
    sites.c.methods,
    sites.c.methods_deadline,
    sites.c.policy_changed_by,
    sites.c.policy_changed_at,
)


def _site(row: Any) -> Site:
    policy = SitePolicy(
        enforce=bool(row.enforce),
        grace_deadline=row.grace_deadline,
        changed_by=row.policy_changed_by,
        changed_at=row.policy_changed_at,
        methods=MethodPolicy(row.methods or MethodPolicy.ANY),
        methods_deadline=row.methods_deadline,
    )
    return Site(id=row.id, name=row.name, policy=policy)


def _instant(value: Any) -> float | None:
    return None if value is None else float(value)
