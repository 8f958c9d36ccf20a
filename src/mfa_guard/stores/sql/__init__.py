"""The SQL adapters, on SQLAlchemy's async Core (SQLite or PostgreSQL): :class:`SQLStore`
(enrolments), :class:`SQLSiteDirectory` (sites and their members), :class:`SQLDeviceStore`
(remembered browsers) and :class:`SQLEventStore` (the security log).

Each is built from a database ``url`` (with engine options) or an ``engine`` of the app's; the
site directory, the device store and the event store usually share the store's engine, its
connection pool and schema check, with ``SQLSiteDirectory.sharing(store)``,
``SQLDeviceStore.sharing(store)`` and ``SQLEventStore.sharing(store)``.
Every method is one transaction whose deciding statement is a conditional write, so a check and
its update cannot be split by another request, worker process or host.

The tables live on :data:`metadata`, this release's layout, and follow the kit's own Alembic
migrations (``migrations``: ``mfa-guard migrate``, or an application's Alembic including the
branch ``mfa_guard``); an adapter checks them on first use (``create_tables``, ``auto_migrate``).

Modules: ``schema`` (the tables and the statements built once), ``migrations`` (the revisions
and how a database gets to their head), ``engine`` (the engine, its retries and error
classification), ``adapter`` (the adapters' base and ``sharing``), ``store``,
``site_directory``, ``devices`` and ``events`` (one adapter each).
"""

from __future__ import annotations

from mfa_guard.stores.sql.devices import SQLDeviceStore
from mfa_guard.stores.sql.events import SQLEventStore
from mfa_guard.stores.sql.schema import (
    enrolments,
    metadata,
    recovery_codes,
    site_members,
    sites,
    trusted_devices,
)
from mfa_guard.stores.sql.site_directory import SQLSiteDirectory
from mfa_guard.stores.sql.store import SQLStore

__all__ = [
    "SQLDeviceStore",
    "SQLEventStore",
    "SQLSiteDirectory",
    "SQLStore",
    "enrolments",
    "metadata",
    "recovery_codes",
    "site_members",
    "sites",
    "trusted_devices",
]
