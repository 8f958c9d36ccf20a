"""What the stories of 2FA for everyone share, over HTTP and in the browser: the frozen
instant, the settings group, Acme and its policy, and the banner's text."""

from __future__ import annotations

import html
import os
import re
from datetime import UTC, datetime

import httpx
import pytest

from mfa_guard.stores.sites import MemorySiteDirectory, Role, SitePolicy
from mfa_guard.testing import FrozenClock

NOW = FrozenClock().now  # 2027-01-15T08:00:00Z
AGENT = "agent@acme.test"
OWNER = "owner@acme.test"
ANYONE = "anyone@example.test"


def instant(seconds_from_now: float) -> datetime:
    return datetime.fromtimestamp(NOW + seconds_from_now, UTC)


def everyone(*, deadline_in: float | None = None) -> dict[str, object]:
    """The settings group: required of every account, at once or ``deadline_in`` seconds on."""
    group: dict[str, object] = {"required": True}
    if deadline_in is not None:
        group["deadline"] = instant(deadline_in)
    return group


async def acme(*, name: str = "Acme") -> MemorySiteDirectory:
    directory = MemorySiteDirectory()
    await directory.save_site("acme", name)
    await directory.add_member("acme", OWNER, Role.OWNER)
    await directory.add_member("acme", AGENT, Role.OPERATOR)
    return directory


async def enforce(directory: MemorySiteDirectory, deadline: float) -> None:
    policy = SitePolicy(enforce=True, grace_deadline=deadline, changed_by=OWNER, changed_at=NOW)
    assert await directory.set_policy("acme", policy)


def text_of(page: str) -> str:
    """The page's text: tags dropped, entities decoded, white space made single spaces."""
    return re.sub(r"\s+", " ", html.unescape(re.sub(r"<[^>]+>", "", page))).strip()


def banner(page: httpx.Response) -> str:
    match = re.search(r'<p class="banner"[^>]*id="enrolment-notice">(.*?)</p>', page.text, re.S)
    assert match is not None, page.text
    return text_of(match.group(1))


def without_mfa_guard_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    """No MFA_GUARD_* variable left: the demo and the commands read them; these tests set their
    own."""
    for name in list(os.environ):
        if name.upper().startswith("MFA_GUARD_"):
            monkeypatch.delenv(name)
