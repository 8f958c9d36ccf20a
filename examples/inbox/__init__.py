"""Acme Inbox: a small operator inbox on Starlette, guarded by mfa_guard (``make demo``)."""

from __future__ import annotations

from examples.inbox.app import DEMO_ACCOUNTS, DEMO_PASSWORD, create_app

__all__ = ["DEMO_ACCOUNTS", "DEMO_PASSWORD", "create_app"]
