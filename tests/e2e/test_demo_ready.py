"""The demo's readiness check for a load balancer: ``/health/ready`` answers 200 with every
backend the guard uses, unauthenticated and past the guard, and never a cached answer."""

from __future__ import annotations

from pathlib import Path

import httpx

from tests.apps import demo_inbox
from tests.live import served


def test_the_demo_says_it_is_ready_with_each_backend(tmp_path: Path) -> None:
    with served(demo_inbox(tmp_path / "data")) as url:
        response = httpx.get(f"{url}/health/ready")
    assert response.status_code == 200, response.text
    assert response.headers["cache-control"] == "no-store"
    body = response.json()
    assert body["ready"] is True
    assert sorted(body["checks"]) == ["devices", "rate_limits", "sites", "store"]
    assert all(check["ok"] and check["error"] is None for check in body["checks"].values())
