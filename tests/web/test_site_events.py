"""A site's security log over HTTP (``GET {mount}/api/sites/{site}/events``): its owners read
the site's own events and their members' sign-ins, failures and factors, newest first, filtered
and paged by a cursor; nobody else reads anything, not even whether the site exists.

The events are kept by a MemoryEventStore; most are appended straight into it, at times the test
chooses, and one story makes them through the API itself.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from mfa_guard.events import AuditEvent, EventKind
from mfa_guard.stores.events import MAX_EVENTS_PER_PAGE, EventQuery, MemoryEventStore, StoredEvent
from mfa_guard.stores.sites import MemorySiteDirectory, Role
from tests.apps import GuardedApp, build_app, enrol, sign_in
from tests.scenarios import assert_json_error

OWNER = "owner@acme.test"
AGENT = "agent@acme.test"
SOLO = "solo@example.test"
STRANGER = "stranger@example.test"
EVENTS = "/mfa/api/sites/acme/events"
FIREFOX = "Mozilla/5.0 (X11; Ubuntu; Linux x86_64; rv:120.0) Gecko/20100101 Firefox/120.0"
IPHONE = (
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_1 like Mac OS X) AppleWebKit/605.1.15 "
    "(KHTML, like Gecko) Version/17.1 Mobile/15E148 Safari/604.1"
)


@dataclass
class Acme:
    ga: GuardedApp
    log: MemoryEventStore
    directory: MemorySiteDirectory

    async def add(
        self, kind: EventKind, user: str, *, at: float | None = None, **fields: Any
    ) -> int:
        """An event kept straight in the log, at ``at`` (now by default)."""
        event = AuditEvent(
            kind=kind, user_id=user, at=self.ga.clock() if at is None else at, **fields
        )
        return await self.log.append(event)


async def acme_directory() -> MemorySiteDirectory:
    directory = MemorySiteDirectory()
    await directory.save_site("acme", "Acme")
    await directory.add_member("acme", OWNER, Role.OWNER)
    await directory.add_member("acme", AGENT, Role.OPERATOR)
    await directory.save_site("solo", "Solo")
    await directory.add_member("solo", SOLO, Role.OWNER)
    return directory


@pytest.fixture
async def acme() -> Acme:
    directory = await acme_directory()
    log = MemoryEventStore()
    return Acme(build_app(sites=directory, event_store=log), log, directory)


async def verified(acme: Acme, client: httpx.AsyncClient, user: str = OWNER) -> str:
    """``user`` signed in with 2FA turned on (so verified) in this session: the secret."""
    await sign_in(client, user)
    secret, _ = await enrol(acme.ga, client)
    acme.ga.clock.advance(30)
    return secret


async def read(client: httpx.AsyncClient, path: str = EVENTS, **params: Any) -> dict[str, Any]:
    response = await client.get(path, params=params)
    assert response.status_code == 200, response.text
    assert response.headers["cache-control"] == "no-store"
    page: dict[str, Any] = response.json()
    return page


def kinds_of(page: dict[str, Any]) -> list[str]:
    return [event["kind"] for event in page["events"]]


async def every_page(client: httpx.AsyncClient, **params: Any) -> list[dict[str, Any]]:
    """Every page of the log, following the cursors to the end."""
    pages = [await read(client, **params)]
    while pages[-1]["next_cursor"] is not None:
        pages.append(await read(client, **params, cursor=pages[-1]["next_cursor"]))
    return pages


# -- who reads it -----------------------------------------------------------------------------


async def test_an_owner_reads_the_sites_events_newest_first(acme: Acme) -> None:
    async with acme.ga.client(headers={"user-agent": FIREFOX}) as owner:
        secret = await verified(acme, owner)
        await owner.post("/mfa/api/verify", json={"code": "000000"})
        acme.ga.clock.advance(30)
        assert (await owner.post("/mfa/api/verify", json={"code": acme.ga.code(secret)})).is_success
        page = await read(owner)
    assert kinds_of(page) == [
        "verified",
        "verification_failed",
        "enrolled",
        "enrolment_started",
    ]
    ids = [event["id"] for event in page["events"]]
    assert ids == sorted(ids, reverse=True)
    newest = page["events"][0]
    assert newest == {
        "id": ids[0],
        "kind": "verified",
        "at": "2027-01-15T08:01:00Z",
        "user": OWNER,
        "method": "totp",
        "site": None,
        "detail": None,
        "ip": "203.0.113.7",
        "browser": "Firefox on Ubuntu",
    }
    assert page["next_cursor"] is None
    # The browser by its name only: the User-Agent itself is never told.
    assert "Gecko" not in str(page)


async def test_an_operator_is_refused_as_for_the_members_and_the_refusal_is_logged(
    acme: Acme,
) -> None:
    async with acme.ga.client() as agent:
        await verified(acme, agent, AGENT)
        members = await agent.get("/mfa/api/sites/acme/members")
        events = await agent.get(EVENTS)
    assert (events.status_code, assert_json_error(events)) == (403, "not_site_owner")
    assert events.status_code == members.status_code
    denied = [e for e in acme.log.all() if e.kind is EventKind.SITE_ACCESS_DENIED]
    assert [(e.user_id, e.site, e.detail) for e in denied][-1] == (AGENT, "acme", "wanted=events")


@pytest.mark.parametrize("site", ["acme", "nowhere"])
async def test_a_non_member_learns_nothing_not_even_whether_the_site_exists(
    acme: Acme, site: str
) -> None:
    async with acme.ga.client() as solo:
        await verified(acme, solo, SOLO)
        response = await solo.get(f"/mfa/api/sites/{site}/events")
    assert (response.status_code, assert_json_error(response)) == (404, "site_not_found")
    assert response.json()["error"]["message"] == "There is no such site."


async def test_a_session_that_holds_the_password_only_reads_nothing(acme: Acme) -> None:
    async with acme.ga.client() as owner:
        await verified(acme, owner)
    async with acme.ga.client() as again:
        await sign_in(again, OWNER)  # enrolled, second factor not given in this session
        response = await again.get(EVENTS)
        assert (response.status_code, assert_json_error(response)) == (401, "mfa_required")
    async with acme.ga.client() as anonymous:
        response = await anonymous.get(EVENTS)
        assert (response.status_code, assert_json_error(response)) == (401, "not_authenticated")


async def test_an_owner_without_2fa_reads_the_log(acme: Acme) -> None:
    """As the members' list: only a session that skipped its second factor is refused."""
    await acme.add(EventKind.LOCKED_OUT, AGENT, method="totp")
    async with acme.ga.client() as owner:
        await sign_in(owner, OWNER)
        assert kinds_of(await read(owner)) == ["locked_out"]


# -- what it holds ------------------------------------------------------------------------------


async def test_other_sites_and_non_members_never_appear(acme: Acme) -> None:
    own = [
        await acme.add(EventKind.VERIFIED, AGENT, method="totp"),
        await acme.add(EventKind.SITE_POLICY_CHANGED, OWNER, site="acme", detail="enforce=off"),
        # A site event of acme by someone no longer (or never) a member: the site's still.
        await acme.add(
            EventKind.SITE_ACCESS_DENIED, STRANGER, site="acme", detail="wanted=members"
        ),
    ]
    await acme.add(EventKind.VERIFIED, SOLO, method="totp")
    await acme.add(EventKind.LOCKED_OUT, STRANGER, method="totp")
    await acme.add(EventKind.SITE_POLICY_CHANGED, SOLO, site="solo", detail="enforce=off")
    # A member's event of another site is that site's, not acme's.
    await acme.add(EventKind.SITE_ACCESS_DENIED, AGENT, site="solo", detail="wanted=members")
    async with acme.ga.client() as owner:
        await sign_in(owner, OWNER)
        page = await read(owner)
    assert [event["id"] for event in page["events"]] == own[::-1]
    assert {event["site"] for event in page["events"]} == {None, "acme"}


async def test_a_member_who_left_takes_their_own_events_away(acme: Acme) -> None:
    await acme.add(EventKind.VERIFIED, AGENT, method="totp")
    policy = await acme.add(
        EventKind.SITE_MEMBER_REMOVED, OWNER, site="acme", detail=f"member={AGENT}"
    )
    assert await acme.directory.remove_member("acme", AGENT)
    async with acme.ga.client() as owner:
        await sign_in(owner, OWNER)
        page = await read(owner)
    assert [event["id"] for event in page["events"]] == [policy]


async def test_events_with_no_browser_name_none(acme: Acme) -> None:
    await acme.add(EventKind.ADMIN_RESET, AGENT, detail="by=ops")
    await acme.add(EventKind.VERIFIED, AGENT, method="sms", user_agent=IPHONE)
    await acme.add(EventKind.VERIFIED, AGENT, method="sms", user_agent="curl/8.4.0")
    async with acme.ga.client() as owner:
        await sign_in(owner, OWNER)
        page = await read(owner)
    assert [event["browser"] for event in page["events"]] == [
        "curl",
        "Mobile Safari on iOS (iPhone)",
        None,
    ]


# -- filters ------------------------------------------------------------------------------------


@pytest.fixture
async def filled(acme: Acme) -> dict[str, int]:
    """Six events an hour apart, from 2027-01-15T08:00:00Z."""
    start = acme.ga.clock()
    events = [
        ("a", EventKind.VERIFIED, AGENT, {"method": "totp"}),
        ("b", EventKind.VERIFICATION_FAILED, AGENT, {"method": "totp"}),
        ("c", EventKind.LOCKED_OUT, AGENT, {"method": "totp"}),
        ("d", EventKind.VERIFIED, OWNER, {"method": "webauthn"}),
        ("e", EventKind.SITE_POLICY_CHANGED, OWNER, {"site": "acme", "detail": "enforce=off"}),
        ("f", EventKind.VERIFICATION_FAILED, OWNER, {"method": "sms"}),
    ]
    ids = {}
    for hour, (name, kind, user, fields) in enumerate(events):
        ids[name] = await acme.add(kind, user, at=start + hour * 3600, **fields)
    return ids


async def read_ids(acme: Acme, filled: dict[str, int], query: str) -> str:
    """The names of the events the query reads, newest first."""
    names = {number: name for name, number in filled.items()}
    async with acme.ga.client() as owner:
        await sign_in(owner, OWNER)
        response = await owner.get(f"{EVENTS}?{query}")
    assert response.status_code == 200, response.text
    return "".join(names[event["id"]] for event in response.json()["events"])


@pytest.mark.parametrize(
    ("query", "names"),
    [
        pytest.param("", "fedcba", id="everything"),
        pytest.param("kind=verified", "da", id="one-kind"),
        pytest.param("kind=verified&kind=locked_out", "dca", id="two-kinds"),
        pytest.param("kind=disabled", "", id="a-kind-that-never-happened"),
        pytest.param(f"member={AGENT}", "cba", id="a-member"),
        pytest.param(f"member={OWNER}", "fed", id="a-site-event-by-its-author"),
        pytest.param("member=nobody@example.test", "", id="nobody"),
        pytest.param("since=2027-01-15T10:00:00Z", "fedc", id="since-is-included"),
        pytest.param("until=2027-01-15T10:00:00Z", "ba", id="until-is-excluded"),
        pytest.param("since=2027-01-15T09:00:00Z&until=2027-01-15T11:00:00Z", "cb", id="between"),
        pytest.param("since=2027-01-15T11:00:00%2B01:00", "fedc", id="since-with-an-offset"),
        pytest.param("since=2027-01-15T09:59:59.5Z", "fedc", id="since-with-a-fraction"),
        pytest.param("until=2027-01-15T08:00:00Z", "", id="until-the-first"),
        pytest.param(f"kind=verification_failed&member={AGENT}", "b", id="kind-and-member"),
        pytest.param("limit=2", "fe", id="limit"),
    ],
)
async def test_the_filters_narrow_the_log(
    acme: Acme, filled: dict[str, int], query: str, names: str
) -> None:
    assert await read_ids(acme, filled, query) == names


async def test_an_instant_the_api_wrote_reads_back_as_a_filter(
    acme: Acme, filled: dict[str, int]
) -> None:
    async with acme.ga.client() as owner:
        await sign_in(owner, OWNER)
        third = (await read(owner))["events"][3]  # c
        since = await read(owner, since=third["at"])
    assert third["at"] == "2027-01-15T10:00:00Z"
    assert [event["id"] for event in since["events"]][-1] == filled["c"]


# -- pages --------------------------------------------------------------------------------------


@pytest.mark.parametrize("limit", [1, 2, 3, 7, 50])
async def test_the_cursor_walks_every_page_once(acme: Acme, limit: int) -> None:
    appended = [await acme.add(EventKind.VERIFIED, AGENT, method="totp") for _ in range(7)]
    async with acme.ga.client() as owner:
        await sign_in(owner, OWNER)
        pages = await every_page(owner, limit=limit)
    assert [len(page["events"]) for page in pages[:-1]] == [limit] * (len(pages) - 1)
    walked = [event["id"] for page in pages for event in page["events"]]
    assert walked == appended[::-1]
    # The last page says so, even when it is full: no empty page to fetch after it.
    assert len(pages) == -(-7 // limit)


async def test_a_full_page_of_the_most_events_says_whether_more_are_left(acme: Acme) -> None:
    for _ in range(MAX_EVENTS_PER_PAGE):
        await acme.add(EventKind.VERIFIED, AGENT, method="totp")
    async with acme.ga.client() as owner:
        await sign_in(owner, OWNER)
        assert (await read(owner, limit=MAX_EVENTS_PER_PAGE))["next_cursor"] is None
        first = await acme.add(EventKind.VERIFIED, AGENT, method="totp")  # one more, newest
        page = await read(owner, limit=MAX_EVENTS_PER_PAGE)
        assert page["events"][0]["id"] == first
        rest = await read(owner, limit=MAX_EVENTS_PER_PAGE, cursor=page["next_cursor"])
    assert [event["id"] for event in rest["events"]] == [1]
    assert rest["next_cursor"] is None


async def test_the_filters_hold_across_pages(acme: Acme) -> None:
    wanted = []
    for number in range(9):
        kind = EventKind.LOCKED_OUT if number % 3 == 0 else EventKind.VERIFIED
        added = await acme.add(kind, AGENT, method="totp")
        if kind is EventKind.LOCKED_OUT:
            wanted.append(added)
    async with acme.ga.client() as owner:
        await sign_in(owner, OWNER)
        pages = await every_page(owner, kind="locked_out", limit=1)
    assert [event["id"] for page in pages for event in page["events"]] == wanted[::-1]


async def test_a_cursor_the_log_did_not_give_is_refused(acme: Acme) -> None:
    for _ in range(3):
        await acme.add(EventKind.VERIFIED, AGENT, method="totp")
        await acme.add(EventKind.VERIFIED, SOLO, method="totp")
    async with acme.ga.client() as owner, acme.ga.client() as solo:
        await sign_in(owner, OWNER)
        await sign_in(solo, SOLO)
        cursor = (await read(owner, limit=1))["next_cursor"]
        solo_cursor = (await read(solo, "/mfa/api/sites/solo/events", limit=1))["next_cursor"]
        assert cursor is not None
        assert solo_cursor is not None
        # The same id signed for another site's log: not this one's.
        tampered = [
            cursor[:-1] + ("A" if cursor[-1] != "A" else "B"),  # the MAC changed
            ("B" if cursor[0] != "B" else "C") + cursor[1:],  # the id changed
            solo_cursor,
            cursor[:-1],
            cursor + "A",
            "",
            " " + cursor,
            "A" * 32,
            "%00" * 32,
        ]
        for forged in tampered:
            response = await owner.get(f"{EVENTS}?cursor={forged}")
            assert response.status_code == 400, (forged, response.text)
            assert assert_json_error(response) == "invalid_cursor"
        # Solo's own cursor reads on in Solo's log.
        assert (await read(solo, "/mfa/api/sites/solo/events", cursor=solo_cursor))["events"]


async def test_a_cursor_of_a_guard_with_other_keys_is_refused(acme: Acme) -> None:
    other = build_app(
        sites=acme.directory,
        event_store=acme.log,
        encryption_keys=["Mf0kQ2Yb0y6m2m3C9Ojg0mrk8Yj2g8x0p1tB1H2d3Zc="],
    )
    for _ in range(3):
        await acme.add(EventKind.VERIFIED, AGENT, method="totp")
    async with other.client() as elsewhere, acme.ga.client() as owner:
        await sign_in(elsewhere, OWNER)
        await sign_in(owner, OWNER)
        cursor = (await read(elsewhere, limit=1))["next_cursor"]
        response = await owner.get(EVENTS, params={"cursor": cursor})
    assert (response.status_code, assert_json_error(response)) == (400, "invalid_cursor")


async def test_a_cursor_is_checked_before_the_owner_check(acme: Acme) -> None:
    """Bad input first, as for a policy's body: an operator's bad cursor is a 400."""
    async with acme.ga.client() as agent:
        await sign_in(agent, AGENT)
        response = await agent.get(EVENTS, params={"cursor": "A" * 32})
    assert (response.status_code, assert_json_error(response)) == (400, "invalid_cursor")
    assert EventKind.SITE_ACCESS_DENIED not in [e.kind for e in acme.log.all()]


# -- the query's parameters -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("query", "message"),
    [
        pytest.param(
            "kind=nope", r"Each 'kind' must be one of: admin_reset, .*verified\.", id="kind"
        ),
        pytest.param("kind=verified&kind=", r"Each 'kind' must be one of", id="empty-kind"),
        pytest.param("member=", r"'member' must be a user id of 1 to 255", id="empty-member"),
        pytest.param("member=" + "x" * 256, r"1 to 255 characters", id="long-member"),
        pytest.param("member=a%00b", r"without control characters", id="nul-member"),
        pytest.param("since=2027-01-15", r"'since' must be an instant such as", id="date-only"),
        pytest.param("until=2027-13-01T00:00:00Z", r"'until' must be an instant", id="month-13"),
        pytest.param("since=2027-01-15T08:00:00", r"'since' must be", id="no-zone"),
        pytest.param("since=1767225600", r"'since' must be", id="a-timestamp"),
        pytest.param("limit=0", r"'limit' must be a whole number from 1 to 200\.", id="limit-0"),
        pytest.param("limit=201", r"from 1 to 200", id="limit-201"),
        pytest.param("limit=-1", r"from 1 to 200", id="limit-negative"),
        pytest.param("limit=1.5", r"from 1 to 200", id="limit-fraction"),
        pytest.param("limit=", r"from 1 to 200", id="limit-empty"),
        pytest.param("limit=9" * 5000, r"from 1 to 200", id="limit-huge"),
        pytest.param("limit=1&limit=2", r"Give the parameter 'limit' once\.", id="two-limits"),
        pytest.param("since=a&since=b", r"'since' once", id="two-since"),
        pytest.param("kinds=verified", r"Unknown parameter 'kinds': the log is", id="misspelt"),
        pytest.param("x" * 100 + "=1", r"Unknown parameter 'x{40}':", id="long-unknown"),
    ],
)
async def test_a_parameter_that_is_no_filter_is_refused_with_what_is_allowed(
    acme: Acme, query: str, message: str
) -> None:
    async with acme.ga.client() as owner:
        await sign_in(owner, OWNER)
        response = await owner.get(f"{EVENTS}?{query}")
    assert response.status_code == 400, response.text
    assert assert_json_error(response) == "invalid_input"
    assert re.search(message, response.json()["error"]["message"]), response.text


async def test_an_unknown_site_with_a_bad_parameter_is_the_parameters_400(acme: Acme) -> None:
    """The query is read before the directory: its refusal tells nothing of the site."""
    async with acme.ga.client() as solo:
        await sign_in(solo, SOLO)
        for site in ("acme", "nowhere"):
            response = await solo.get(f"/mfa/api/sites/{site}/events?limit=0")
            assert response.status_code == 400


# -- where it is offered ------------------------------------------------------------------------


async def test_the_document_lists_the_operation_and_its_parameters(acme: Acme) -> None:
    async with acme.ga.client() as anonymous:
        document = (await anonymous.get("/mfa/api/openapi.json")).json()
    operation = document["paths"]["/mfa/api/sites/{site}/events"]["get"]
    parameters = {parameter["name"]: parameter for parameter in operation["parameters"]}
    assert list(parameters) == ["site", "kind", "member", "since", "until", "cursor", "limit"]
    assert parameters["site"]["in"] == "path"
    assert {parameters[name]["in"] for name in list(parameters)[1:]} == {"query"}
    assert set(parameters["kind"]["schema"]["items"]["enum"]) == {kind.value for kind in EventKind}
    assert parameters["limit"]["schema"] == {
        "type": "integer",
        "minimum": 1,
        "maximum": MAX_EVENTS_PER_PAGE,
        "default": 50,
    }
    assert parameters["member"]["schema"]["maxLength"] == 255
    assert parameters["since"]["schema"]["format"] == "date-time"
    assert operation["responses"]["200"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/SiteEvents"
    }
    assert set(operation["responses"]) == {"200", "400", "401", "403", "404", "503"}
    event = document["components"]["schemas"]["LoggedEvent"]
    assert list(event["properties"]) == [
        "id",
        "kind",
        "at",
        "user",
        "method",
        "site",
        "detail",
        "ip",
        "browser",
    ]


@pytest.mark.parametrize(
    "options",
    [
        pytest.param({"event_store": MemoryEventStore()}, id="a-log-but-no-sites"),
        pytest.param({"sites": MemorySiteDirectory()}, id="sites-but-no-log"),
    ],
)
async def test_without_sites_and_a_log_the_operation_is_not_offered(
    options: dict[str, Any],
) -> None:
    ga = build_app(**options)
    async with ga.client() as client:
        paths = (await client.get("/mfa/api/openapi.json")).json()["paths"]
        await sign_in(client, OWNER)
        response = await client.get(EVENTS)
    assert "/mfa/api/sites/{site}/events" not in paths
    assert (response.status_code, assert_json_error(response)) == (404, "not_found")


async def test_the_log_is_read_once_a_page(acme: Acme) -> None:
    reads: list[EventQuery] = []
    events = acme.log.events

    async def counted(query: EventQuery) -> list[StoredEvent]:
        reads.append(query)
        return await events(query)

    acme.log.events = counted  # type: ignore[method-assign]
    for _ in range(5):
        await acme.add(EventKind.VERIFIED, AGENT, method="totp")
    async with acme.ga.client() as owner:
        await sign_in(owner, OWNER)
        await read(owner, limit=2)
    assert [query.limit for query in reads] == [3]  # one more than asked: is there a next page
    assert reads[0].users == (AGENT, OWNER)
