"""What the middleware stops is an audit event too (and so a row of the security log and a
count of the metrics): a session sent to the challenge, one confined to enrolment, and one
refused while a store cannot be reached; once per user, kind and worker a minute, so a page
polling from an unverified session writes no row per request.
"""

from __future__ import annotations

import httpx

from mfa_guard import MemoryStore
from mfa_guard.core.marker import EnrolmentSummary
from mfa_guard.errors import StoreUnavailable
from mfa_guard.events import AuditEvent, EventKind
from mfa_guard.stores import MemoryEventStore
from mfa_guard.stores.sites import MemorySiteDirectory, Role, SitePolicy
from mfa_guard.web.middleware import REPORT_QUIET_SECONDS
from tests.apps import GuardedApp, build_app, enrol, sign_in

BROWSER = "Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0"


class DownStore(MemoryStore):
    def __init__(self) -> None:
        super().__init__()
        self.down = False

    async def summary(self, user_id: str) -> EnrolmentSummary:
        if self.down:
            raise StoreUnavailable()
        return await super().summary(user_id)


async def stopped(ga: GuardedApp) -> list[AuditEvent]:
    await ga.guard.service.drain()
    kinds = {EventKind.CHALLENGED, EventKind.ENROLMENT_REQUIRED, EventKind.FAILED_CLOSED}
    return [event for event in ga.events.events if event.kind in kinds]


async def signed_out_and_in_again(ga: GuardedApp, client: httpx.AsyncClient) -> None:
    await client.post("/logout")
    await sign_in(client)


async def test_a_challenged_session_is_an_event_with_its_browser_and_address() -> None:
    ga = build_app()
    async with ga.client(headers={"user-agent": BROWSER}) as client:
        await sign_in(client)
        await enrol(ga, client)
        await signed_out_and_in_again(ga, client)
        assert (await client.get("/protected")).status_code == 303
    [event] = await stopped(ga)
    assert (event.kind, event.user_id, event.client_ip, event.user_agent) == (
        EventKind.CHALLENGED,
        "solo@example.test",
        "203.0.113.7",
        BROWSER,
    )
    assert event.detail is None


async def test_a_session_polling_is_told_once_a_minute_per_worker() -> None:
    ga = build_app()
    async with ga.client() as client:
        await sign_in(client)
        await enrol(ga, client)
        await signed_out_and_in_again(ga, client)
        for _ in range(5):
            assert (await client.get("/api/data")).status_code == 401
        assert len(await stopped(ga)) == 1
        ga.clock.advance(REPORT_QUIET_SECONDS)
        assert (await client.get("/api/data")).status_code == 401
        assert len(await stopped(ga)) == 2


async def test_a_session_confined_to_enrolment_is_an_event() -> None:
    directory = MemorySiteDirectory()
    await directory.save_site("acme", "Acme")
    await directory.add_member("acme", "agent@acme.test", Role.OPERATOR)
    ga = build_app(sites=directory)
    now = ga.clock()
    policy = SitePolicy(enforce=True, grace_deadline=now, changed_by="owner", changed_at=now)
    assert await directory.set_policy("acme", policy)
    async with ga.client() as agent:
        await sign_in(agent, "agent@acme.test")
        assert (await agent.get("/protected")).status_code == 303
    assert [(e.kind, e.user_id) for e in await stopped(ga)] == [
        (EventKind.ENROLMENT_REQUIRED, "agent@acme.test")
    ]


class DownLog(MemoryEventStore):
    """A security log whose database is down as well."""

    async def append(self, event: AuditEvent) -> int:
        raise StoreUnavailable()


async def test_a_request_refused_in_an_outage_is_an_event_even_with_the_log_down() -> None:
    store = DownStore()
    ga = build_app(store=store, event_store=DownLog())
    async with ga.client() as client:
        await sign_in(client, "other@acme.test")
        store.down = True
        refused = await client.get("/protected")
        assert refused.status_code == 503
        assert "Traceback" not in refused.text
    # The app's own sink heard of it first; the log's failure stayed in the kit's log.
    assert [(e.kind, e.user_id) for e in await stopped(ga)] == [
        (EventKind.FAILED_CLOSED, "other@acme.test")
    ]
