"""Acme Inbox API, JSON only, on FastAPI, guarded by mfa_guard: `python -m examples.fastapi_api`."""

from __future__ import annotations

from examples.fastapi_api.app import DEMO_ACCOUNTS, DEMO_PASSWORD, build, create_app

__all__ = ["DEMO_ACCOUNTS", "DEMO_PASSWORD", "build", "create_app"]
