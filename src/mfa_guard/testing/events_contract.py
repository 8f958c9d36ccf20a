"""The contract every :class:`~mfa_guard.stores.events.EventStore` keeps, as a pytest class.

Subclass it in a test module (the name must start with ``Test``) and provide an async fixture
``store`` that yields a fresh, empty event store::

    from mfa_guard.testing.events_contract import EventStoreContract

    class TestMyEventStore(EventStoreContract):
        @pytest.fixture
        async def store(self) -> AsyncIterator[MyEventStore]:
            store = MyEventStore(...)
            yield store
            await store.close()

The store may have held events before (a shared database emptied between tests): the tests
count on ids that grow, never on their values. They need pytest-asyncio (``asyncio_mode =
"auto"``) or an equivalent runner.
"""

from __future__ import annotations

import asyncio
from dataclasses import replace

from mfa_guard.events import MAX_USER_AGENT, AuditEvent, EventKind
from mfa_guard.stores.events import MAX_EVENTS_PER_PAGE, EventQuery, EventStore, StoredEvent

__all__ = ["EventStoreContract"]

NOW = 1_800_000_000.25
DAY = 86_400.0
ACME = "acme"
OTHER = "globex"
# Acme's members, a user of Acme's who is not one of them any more, and a stranger.
OWNER, AGENT, FORMER, STRANGER = "owner@acme.test", "agent@acme.test", "former@acme.test", "x@y"
MEMBERS = (OWNER, AGENT)


def event(
    user_id: str,
    kind: EventKind = EventKind.VERIFIED,
    *,
    at: float = NOW,
    site: str | None = None,
    detail: str | None = None,
) -> AuditEvent:
    return AuditEvent(kind=kind, user_id=user_id, at=at, site=site, detail=detail)


async def append_all(store: EventStore, events: list[AuditEvent]) -> list[int]:
    """Appends ``events`` one after the other (their order is their ids' order)."""
    return [await store.append(each) for each in events]


def ids(stored: list[StoredEvent]) -> list[int]:
    return [each.id for each in stored]


class EventStoreContract:
    """Scenarios an event store must pass; subclasses provide the ``store`` fixture."""

    async def test_an_empty_log_reads_empty(self, store: EventStore) -> None:
        assert await store.events(EventQuery(users=(OWNER,))) == []
        assert await store.events(EventQuery(users=MEMBERS, site=ACME)) == []
        assert await store.purge(NOW + DAY) == 0

    async def test_each_append_gets_a_greater_id(self, store: EventStore) -> None:
        appended = await append_all(store, [event(OWNER, at=NOW + n) for n in range(5)])

        assert appended == sorted(set(appended))
        # Time does not decide: an event dated earlier than the last still gets a greater id.
        assert await store.append(event(OWNER, at=NOW - DAY)) > appended[-1]

    async def test_the_log_reads_newest_first(self, store: EventStore) -> None:
        appended = await append_all(
            store,
            [
                event(OWNER, EventKind.ENROLLED),
                event(OWNER, EventKind.VERIFIED, at=NOW + 60),
                event(OWNER, EventKind.LOCKED_OUT, at=NOW + 120),
            ],
        )

        read = await store.events(EventQuery(users=(OWNER,)))

        assert ids(read) == appended[::-1]
        assert [each.event.kind for each in read] == [
            EventKind.LOCKED_OUT,
            EventKind.VERIFIED,
            EventKind.ENROLLED,
        ]

    async def test_a_read_returns_at_most_its_limit_the_newest(self, store: EventStore) -> None:
        appended = await append_all(store, [event(OWNER, at=NOW + n) for n in range(7)])

        assert ids(await store.events(EventQuery(users=(OWNER,), limit=3))) == appended[:3:-1]
        assert ids(await store.events(EventQuery(users=(OWNER,), limit=1))) == [appended[-1]]
        assert len(await store.events(EventQuery(users=(OWNER,), limit=MAX_EVENTS_PER_PAGE))) == 7

    async def test_pages_walk_every_event_once_while_new_ones_arrive(
        self, store: EventStore
    ) -> None:
        first = await append_all(store, [event(OWNER, at=NOW + n) for n in range(23)])
        walked: list[int] = []
        arrived: list[int] = []
        before = None
        while True:
            page = await store.events(EventQuery(users=(OWNER,), before=before, limit=5))
            if not page:
                break
            walked.extend(ids(page))
            before = page[-1].id
            # Between two pages, the user goes on signing in.
            arrived.append(await store.append(event(OWNER, at=NOW + 100 + len(arrived))))

        # Every event there at the first page, once, newest first; none that came after.
        assert walked == first[::-1]
        newest = await store.events(EventQuery(users=(OWNER,), limit=len(arrived)))
        assert ids(newest) == arrived[::-1]

    async def test_a_sites_log_holds_its_events_and_its_members_own(
        self, store: EventStore
    ) -> None:
        kept = await append_all(
            store,
            [
                # Acme's own events, whoever caused them (a former member, a support agent).
                event(OWNER, EventKind.SITE_POLICY_CHANGED, site=ACME, detail="enforce=on"),
                event(FORMER, EventKind.SITE_MEMBER_REMOVED, site=ACME),
                event(STRANGER, EventKind.SITE_ACCESS_DENIED, site=ACME),
                # The members' own events (no site).
                event(OWNER, EventKind.VERIFIED),
                event(AGENT, EventKind.LOCKED_OUT),
            ],
        )
        await append_all(
            store,
            [
                # Another site's events, by Acme's members too.
                event(OWNER, EventKind.SITE_POLICY_CHANGED, site=OTHER),
                event(AGENT, EventKind.SITE_ACCESS_DENIED, site=OTHER),
                # The own events of users who are not members.
                event(FORMER, EventKind.VERIFIED),
                event(STRANGER, EventKind.ENROLLED),
            ],
        )

        read = await store.events(EventQuery(users=MEMBERS, site=ACME))

        assert ids(read) == kept[::-1]

    async def test_a_site_without_members_shows_its_own_events(self, store: EventStore) -> None:
        [kept] = await append_all(store, [event(FORMER, EventKind.SITE_MEMBER_REMOVED, site=ACME)])
        await append_all(store, [event(FORMER, EventKind.VERIFIED)])

        assert ids(await store.events(EventQuery(users=(), site=ACME))) == [kept]
        assert await store.events(EventQuery(users=(), site=OTHER)) == []

    async def test_a_users_own_activity_is_every_event_they_caused(self, store: EventStore) -> None:
        kept = await append_all(
            store,
            [
                event(OWNER, EventKind.ENROLLED),
                event(OWNER, EventKind.SITE_POLICY_CHANGED, site=ACME),
                event(OWNER, EventKind.SITE_POLICY_CHANGED, site=OTHER),
            ],
        )
        await append_all(
            store,
            [
                event(AGENT, EventKind.VERIFIED),
                event(AGENT, EventKind.SITE_ACCESS_DENIED, site=ACME),
            ],
        )

        assert ids(await store.events(EventQuery(users=(OWNER,)))) == kept[::-1]
        assert await store.events(EventQuery(users=())) == []
        both = await store.events(EventQuery(users=(OWNER, AGENT)))
        assert len(both) == 5

    async def test_a_member_narrows_a_sites_log_to_what_they_caused(
        self, store: EventStore
    ) -> None:
        kept = await append_all(
            store,
            [
                event(AGENT, EventKind.VERIFIED),
                event(AGENT, EventKind.SITE_ACCESS_DENIED, site=ACME),
            ],
        )
        await append_all(
            store,
            [
                event(OWNER, EventKind.VERIFIED),
                event(OWNER, EventKind.SITE_MEMBER_ADDED, site=ACME),
                # The agent's own doings elsewhere are not Acme's.
                event(AGENT, EventKind.SITE_ACCESS_DENIED, site=OTHER),
            ],
        )

        read = await store.events(EventQuery(users=MEMBERS, site=ACME, member=AGENT))

        assert ids(read) == kept[::-1]
        # A member who is not one names nobody's own events; the site's own by them still show.
        removed = await store.append(event(FORMER, EventKind.SITE_MEMBER_REMOVED, site=ACME))
        await store.append(event(FORMER, EventKind.VERIFIED))
        by_former = await store.events(EventQuery(users=MEMBERS, site=ACME, member=FORMER))
        assert ids(by_former) == [removed]

    async def test_kinds_narrow_the_log(self, store: EventStore) -> None:
        appended = await append_all(
            store,
            [
                event(OWNER, EventKind.VERIFICATION_FAILED),
                event(OWNER, EventKind.VERIFIED),
                event(OWNER, EventKind.LOCKED_OUT),
                event(OWNER, EventKind.VERIFICATION_FAILED),
            ],
        )
        failures = frozenset({EventKind.VERIFICATION_FAILED, EventKind.LOCKED_OUT})

        read = await store.events(EventQuery(users=(OWNER,), kinds=failures))

        assert ids(read) == [appended[3], appended[2], appended[0]]
        assert await store.events(EventQuery(users=(OWNER,), kinds=frozenset())) == []
        only = frozenset({EventKind.VERIFIED})
        assert ids(await store.events(EventQuery(users=(OWNER,), kinds=only))) == [appended[1]]

    async def test_since_and_until_bound_the_time_since_included_until_not(
        self, store: EventStore
    ) -> None:
        appended = await append_all(store, [event(OWNER, at=NOW + n * DAY) for n in range(5)])

        window = EventQuery(users=(OWNER,), since=NOW + DAY, until=NOW + 3 * DAY)
        assert ids(await store.events(window)) == [appended[2], appended[1]]
        later = EventQuery(users=(OWNER,), since=NOW + 3 * DAY + 0.5)
        assert ids(await store.events(later)) == [appended[4]]
        earlier = EventQuery(users=(OWNER,), until=NOW + 0.5)
        assert ids(await store.events(earlier)) == [appended[0]]
        assert await store.events(EventQuery(users=(OWNER,), since=NOW + 9 * DAY)) == []

    async def test_every_filter_at_once(self, store: EventStore) -> None:
        appended = await append_all(
            store,
            [
                event(AGENT, EventKind.VERIFICATION_FAILED, at=NOW),
                event(AGENT, EventKind.VERIFICATION_FAILED, at=NOW + 10),
                event(OWNER, EventKind.VERIFICATION_FAILED, at=NOW + 20),
                event(AGENT, EventKind.VERIFIED, at=NOW + 30),
                event(AGENT, EventKind.VERIFICATION_FAILED, at=NOW + 40),
                event(AGENT, EventKind.VERIFICATION_FAILED, at=NOW + 50),
            ],
        )
        query = EventQuery(
            users=MEMBERS,
            site=ACME,
            member=AGENT,
            kinds=frozenset({EventKind.VERIFICATION_FAILED}),
            since=NOW + 5,
            until=NOW + 50,
            before=appended[5],
            limit=1,
        )

        first = await store.events(query)
        assert ids(first) == [appended[4]]
        assert ids(await store.events(replace(query, before=first[0].id))) == [appended[1]]
        assert await store.events(replace(query, before=appended[1])) == []

    async def test_every_field_is_kept_as_given(self, store: EventStore) -> None:
        agent = ("Mozilla/5.0 (X11; Linux) Gecko/20100101 Firefox/128.0 — ünïcödé 🔐 " * 8)[
            :MAX_USER_AGENT
        ]
        full = AuditEvent(
            kind=EventKind.SITE_POLICY_CHANGED,
            user_id="zoë@exämple.test",
            at=NOW + 0.123456,
            method="totp",
            client_ip="2001:db8:85a3::8a2e:370:7334",
            site="société-ünïe",
            detail="enforce=on deadline=2027-01-15T08:00:00Z " + "by=support " * 90,
            user_agent=agent,
        )
        bare = AuditEvent(kind=EventKind.ENROLMENT_STARTED, user_id="zoë@exämple.test", at=NOW)

        first = await store.append(full)
        second = await store.append(bare)

        read = await store.events(EventQuery(users=("zoë@exämple.test",)))
        assert read == [StoredEvent(second, bare), StoredEvent(first, full)]
        assert len(agent) == MAX_USER_AGENT

    async def test_every_kind_is_kept_and_read_back(self, store: EventStore) -> None:
        appended = await append_all(store, [event(OWNER, kind) for kind in EventKind])

        read = await store.events(EventQuery(users=(OWNER,), limit=MAX_EVENTS_PER_PAGE))

        assert [(each.id, each.event.kind) for each in read] == list(
            zip(appended[::-1], list(EventKind)[::-1], strict=True)
        )

    async def test_a_purge_removes_only_older_events_and_counts_them(
        self, store: EventStore
    ) -> None:
        appended = await append_all(
            store,
            [
                event(OWNER, at=NOW - 400 * DAY),
                event(AGENT, at=NOW - 366 * DAY, site=ACME),
                event(OWNER, at=NOW - 365 * DAY),  # exactly at the bound: kept
                event(OWNER, at=NOW - DAY),
            ],
        )

        assert await store.purge(NOW - 365 * DAY) == 2
        assert await store.purge(NOW - 365 * DAY) == 0

        read = await store.events(EventQuery(users=MEMBERS, site=ACME))
        assert ids(read) == [appended[3], appended[2]]

    async def test_ids_keep_growing_after_a_purge_of_everything(self, store: EventStore) -> None:
        appended = await append_all(store, [event(OWNER, at=NOW + n) for n in range(3)])

        assert await store.purge(NOW + DAY) == 3
        after = await store.append(event(OWNER, at=NOW + 2 * DAY))

        # A new event never takes a purged one's id: a cursor kept from before stays right.
        assert after > appended[-1]
        assert ids(await store.events(EventQuery(users=(OWNER,)))) == [after]
        assert await store.events(EventQuery(users=(OWNER,), before=appended[-1])) == []

    async def test_events_appended_at_once_are_all_kept_with_distinct_ids(
        self, store: EventStore
    ) -> None:
        sent = [event(f"user{n}@acme.test", at=NOW + n) for n in range(50)]

        appended = await asyncio.gather(*(store.append(each) for each in sent))

        assert len(set(appended)) == 50
        users = tuple(each.user_id for each in sent)
        read = await store.events(EventQuery(users=users, limit=MAX_EVENTS_PER_PAGE))
        assert sorted(ids(read)) == sorted(appended)
        assert {each.id: each.event for each in read} == dict(zip(appended, sent, strict=True))
