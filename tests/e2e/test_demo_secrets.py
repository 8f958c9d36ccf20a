"""The demo's secret files: processes starting together must all read the same, whole secret."""

from __future__ import annotations

import secrets
import stat
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from examples.inbox.app import _secret_file


def test_racing_starts_read_one_whole_secret(tmp_path: Path) -> None:
    for attempt in range(20):
        path = tmp_path / f"session-{attempt}.secret"
        with ThreadPoolExecutor(max_workers=8) as pool:
            read = list(pool.map(_secret_file, [path] * 8, [secrets.token_urlsafe] * 8))
        assert len(set(read)) == 1
        assert read[0]
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []
