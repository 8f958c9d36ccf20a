"""The user's own recent activity on the kit's settings page (with ``MFAGuard(event_store=...)``):
their last sign-ins, failures, lock-outs, remembered browsers, factors added and removed, and
resets, newest first, each with its time, its second factor in words and its browser; read from
the log once a page, and not at all without one.
"""

from __future__ import annotations

import html
import re
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest

from mfa_guard.events import AuditEvent, EventKind
from mfa_guard.stores.events import EventQuery, MemoryEventStore, StoredEvent
from mfa_guard.stores.sites import MemorySiteDirectory, Role
from tests.apps import GuardedApp, build_app, enrol, sign_in
from tests.scenarios import USER, State, arrive, page_token

FIREFOX = "Mozilla/5.0 (X11; Ubuntu; Linux x86_64; rv:120.0) Gecko/20100101 Firefox/120.0"
IPHONE = (
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_1 like Mac OS X) AppleWebKit/605.1.15 "
    "(KHTML, like Gecko) Version/17.1 Mobile/15E148 Safari/604.1"
)
SECTION = re.compile(r'<section aria-labelledby="activity-heading".*?</section>', re.DOTALL)
ROW = re.compile(r'<li data-kind="([a-z_]+)">(.*?)</li>', re.DOTALL)
# The events' times: from 09:00 UTC, an hour after the tests' clock starts (and past whatever
# their sessions' set-up took), a minute apart.
NINE = datetime(2027, 1, 15, 9, tzinfo=UTC).timestamp()


class CountingLog(MemoryEventStore):
    """A memory log that counts its reads."""

    def __init__(self) -> None:
        super().__init__()
        self.reads: list[EventQuery] = []

    async def events(self, query: EventQuery) -> list[StoredEvent]:
        self.reads.append(query)
        return await super().events(query)


@pytest.fixture
async def directory() -> MemorySiteDirectory:
    directory = MemorySiteDirectory()
    await directory.save_site("acme", "Acme <Support>")
    await directory.add_member("acme", USER, Role.OPERATOR)
    return directory


@pytest.fixture
def log() -> CountingLog:
    return CountingLog()


@pytest.fixture
def ga(directory: MemorySiteDirectory, log: CountingLog) -> GuardedApp:
    return build_app(sites=directory, event_store=log, trusted_devices={"enabled": True})


async def add(log: CountingLog, kind: EventKind, minute: int, **fields: Any) -> None:
    """An event of the user's, at 09:``minute`` UTC."""
    await log.append(AuditEvent(kind=kind, user_id=USER, at=NINE + 60 * minute, **fields))


def section(page: httpx.Response) -> str:
    assert page.status_code == 200, page.text
    found = SECTION.search(page.text)
    assert found is not None, page.text
    return found.group(0)


def rows(page: httpx.Response) -> list[tuple[str, str]]:
    """(kind, the row's text with its white space made single spaces), newest first."""
    return [
        (kind, html.unescape(re.sub(r"\s+", " ", re.sub(r"<[^>]+>", "", row)).strip()))
        for kind, row in ROW.findall(section(page))
    ]


async def test_the_users_own_activity_is_listed_newest_first_in_words(
    ga: GuardedApp, log: CountingLog
) -> None:
    async with ga.client() as client:
        await arrive(ga, client, State.VERIFIED)
        start = len(list(log.all()))
        await add(log, EventKind.VERIFIED, 1, method="totp", user_agent=FIREFOX)
        await add(log, EventKind.VERIFICATION_FAILED, 2, method="sms", user_agent=IPHONE)
        await add(log, EventKind.CODE_REUSED, 3, method="totp", user_agent=IPHONE)
        await add(log, EventKind.LOCKED_OUT, 4, method="totp")
        await add(log, EventKind.RECOVERY_CODE_USED, 5, method="recovery", user_agent=FIREFOX)
        await add(log, EventKind.DEVICE_TRUSTED, 6, method="device", user_agent=IPHONE)
        await add(log, EventKind.AUTHENTICATOR_ADDED, 7, method="webauthn", user_agent=FIREFOX)
        await add(log, EventKind.AUTHENTICATOR_REMOVED, 8, method="totp", user_agent=FIREFOX)
        assert len(list(log.all())) == start + 8
        page = await client.get("/mfa/settings")
    assert rows(page)[:8] == [
        (
            "authenticator_removed",
            "Authenticator removed Jan 15, 2027, 09:08 UTC · Authenticator app · Firefox on Ubuntu",
        ),
        (
            "authenticator_added",
            "Authenticator added Jan 15, 2027, 09:07 UTC · Passkey or security key · "
            "Firefox on Ubuntu",
        ),
        (
            "device_trusted",
            "Browser remembered Jan 15, 2027, 09:06 UTC · Mobile Safari on iOS (iPhone)",
        ),
        ("recovery_code_used", "Recovery code used Jan 15, 2027, 09:05 UTC · Firefox on Ubuntu"),
        (
            "locked_out",
            "Sign-in locked after too many wrong codes Jan 15, 2027, 09:04 UTC · Authenticator app",
        ),
        (
            "code_reused",
            "A code already used was entered again Jan 15, 2027, 09:03 UTC · Authenticator app · "
            "Mobile Safari on iOS (iPhone)",
        ),
        (
            "verification_failed",
            "Failed sign-in attempt Jan 15, 2027, 09:02 UTC · Text message · "
            "Mobile Safari on iOS (iPhone)",
        ),
        ("verified", "Signed in Jan 15, 2027, 09:01 UTC · Authenticator app · Firefox on Ubuntu"),
    ]
    # Each time as a machine reads it too, and never the User-Agent itself.
    assert '<time datetime="2027-01-15T09:08:00Z">' in section(page)
    assert "Gecko" not in section(page)


async def test_only_the_last_ten_of_the_users_own_events_of_those_kinds(
    ga: GuardedApp, log: CountingLog
) -> None:
    async with ga.client() as client:
        await arrive(ga, client, State.VERIFIED)
        for minute in range(12):
            await add(log, EventKind.VERIFIED, minute, method="totp")
        # Not the user's own activity: what no person did, other people's events, site events.
        await add(log, EventKind.SMS_SENT, 20, method="sms")
        await add(log, EventKind.CHALLENGED, 21)
        await add(log, EventKind.SITE_POLICY_CHANGED, 22, site="acme", detail="enforce=off")
        await log.append(AuditEvent(EventKind.LOCKED_OUT, "other@example.test", NINE + 60 * 23))
        page = await client.get("/mfa/settings")
    listed = rows(page)
    assert [kind for kind, _ in listed] == ["verified"] * 10
    assert listed[0][1].startswith("Signed in Jan 15, 2027, 09:11 UTC")
    assert listed[-1][1].startswith("Signed in Jan 15, 2027, 09:02 UTC")


@pytest.mark.parametrize(
    ("site", "said"),
    [
        pytest.param(
            "acme",
            "Two-factor authentication reset by an owner of Acme <Support>",
            id="by-an-owner",
        ),
        pytest.param(
            "gone", "Two-factor authentication reset by an owner of gone", id="of-a-site-left"
        ),
        pytest.param(None, "Two-factor authentication reset by an administrator", id="by-an-admin"),
    ],
)
async def test_a_reset_says_by_whom(
    ga: GuardedApp, log: CountingLog, site: str | None, said: str
) -> None:
    async with ga.client() as client:
        await arrive(ga, client, State.SIGNED_IN)  # 2FA off since the reset
        await add(
            log, EventKind.ADMIN_RESET, 1, site=site, detail="by=owner@acme.test", user_agent=IPHONE
        )
        page = await client.get("/mfa/settings")
    assert rows(page) == [("admin_reset", said + " Jan 15, 2027, 09:01 UTC")]
    # The site's name is escaped, as every value the page shows.
    assert html.escape(said, quote=False) in section(page)
    assert "<Support>" not in page.text


async def test_a_reset_by_an_owner_through_the_api_shows_up_in_the_members_activity(
    ga: GuardedApp, directory: MemorySiteDirectory
) -> None:
    owner = "owner@acme.test"
    await directory.add_member("acme", owner, Role.OWNER)
    async with ga.client(headers={"user-agent": FIREFOX}) as member:
        await arrive(ga, member, State.VERIFIED)
        async with ga.client() as by_owner:
            await sign_in(by_owner, owner)
            await enrol(ga, by_owner)
            reset = await by_owner.post(f"/mfa/api/sites/acme/members/{USER}/reset", json={})
            assert reset.status_code == 200, reset.text
        page = await member.get("/mfa/settings")
    # The owner's browser is the owner's own: the member is not told which it was.
    assert rows(page)[0] == (
        "admin_reset",
        "Two-factor authentication reset by an owner of Acme <Support> Jan 15, 2027, 08:01 UTC",
    )


async def test_the_activity_in_french(ga: GuardedApp, log: CountingLog) -> None:
    async with ga.client(headers={"accept-language": "fr"}) as client:
        await arrive(ga, client, State.VERIFIED)
        await add(log, EventKind.VERIFICATION_FAILED, 1, method="totp", user_agent=FIREFOX)
        await add(log, EventKind.ADMIN_RESET, 2, site="acme")
        page = await client.get("/mfa/settings", headers={"accept-language": "fr"})
    assert '<h2 id="activity-heading">Activité récente</h2>' in section(page)
    assert rows(page)[:2] == [
        (
            "admin_reset",
            "Authentification à deux facteurs réinitialisée par un propriétaire du site "
            "Acme <Support> 15 janv. 2027, 09:02 UTC",
        ),
        (
            "verification_failed",
            "Tentative de connexion échouée 15 janv. 2027, 09:01 UTC · "
            "Application d’authentification · Firefox sous Ubuntu",  # noqa: RUF001
        ),
    ]


async def test_the_activity_in_japanese_and_arabic_names_the_browser_in_their_words(
    ga: GuardedApp, log: CountingLog
) -> None:
    async with ga.client() as client:
        await arrive(ga, client, State.VERIFIED)
        await add(log, EventKind.VERIFICATION_FAILED, 1, method="totp", user_agent=IPHONE)
        japanese = await client.get("/mfa/settings", headers={"accept-language": "ja"})
        arabic = await client.get("/mfa/settings", headers={"accept-language": "ar"})
    assert rows(japanese)[0][1].endswith("iOS の Mobile Safari（iPhone）")  # noqa: RUF001
    # Right to left, each name from the User-Agent isolated: "Mobile Safari على iOS" keeps its
    # order whatever the names' direction.
    assert (
        '<span class="browser"><bdi>Mobile Safari</bdi> على <bdi>iOS</bdi> '
        "(<bdi>iPhone</bdi>)</span>"
    ) in section(arabic)


@pytest.mark.parametrize(("lang", "dir"), [("en", "ltr"), ("fr", "ltr"), ("ar", "rtl")])
def test_a_browser_name_from_the_user_agent_is_escaped_in_every_direction(
    lang: str, dir: str
) -> None:
    """ua-parser's names come out of the User-Agent, which the client writes."""
    from mfa_guard.devices import Browser
    from mfa_guard.web.pages.base import _templates

    env = _templates(None).env
    hostile = Browser(family="<script>x</script>", system="Ubuntu", hardware="<b>")
    rendered = env.from_string("{{ b | browser }}").render(b=hostile, lang=lang, dir=dir)
    assert "<script>" not in rendered
    assert "<b>" not in rendered
    assert "&lt;script&gt;x&lt;/script&gt;" in rendered


async def test_a_real_sign_in_shows_up_with_its_browser(ga: GuardedApp, log: CountingLog) -> None:
    async with ga.client(headers={"user-agent": IPHONE}) as client:
        secret = await arrive(ga, client, State.CHALLENGED)
        await client.post("/mfa/api/verify", json={"code": "000000"})
        verified = await client.post("/mfa/api/verify", json={"code": ga.code(secret)})
        assert verified.status_code == 200
        page = await client.get("/mfa/settings")
    assert rows(page) == [
        (
            "verified",
            "Signed in Jan 15, 2027, 08:00 UTC · Authenticator app · Mobile Safari on iOS (iPhone)",
        ),
        (
            "verification_failed",
            "Failed sign-in attempt Jan 15, 2027, 08:00 UTC · Authenticator app · "
            "Mobile Safari on iOS (iPhone)",
        ),
    ]


async def test_nothing_yet_says_so(ga: GuardedApp) -> None:
    async with ga.client() as client:
        await arrive(ga, client, State.SIGNED_IN)
        page = await client.get("/mfa/settings")
    assert 'id="no-activity"' in section(page)
    assert rows(page) == []


async def test_the_log_is_read_once_a_page_even_after_a_form(
    ga: GuardedApp, log: CountingLog
) -> None:
    async with ga.client() as client:
        await arrive(ga, client, State.VERIFIED)
        log.reads.clear()
        await client.get("/mfa/settings")
        assert [(query.users, query.site, query.limit) for query in log.reads] == [
            ((USER,), None, 10)
        ]
        token = await page_token(client, State.VERIFIED)
        log.reads.clear()
        revoked = await client.post("/mfa/settings/sessions", data={"csrf_token": token})
        assert revoked.status_code == 200
        assert len(log.reads) == 1


async def test_without_a_log_there_is_no_section_and_no_read() -> None:
    ga = build_app()
    async with ga.client() as client:
        await arrive(ga, client, State.VERIFIED)
        page = await client.get("/mfa/settings")
    assert page.status_code == 200
    assert "Recent activity" not in page.text
    assert SECTION.search(page.text) is None
