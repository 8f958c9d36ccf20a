"""2FA for everyone: the app requires it of every account (``MFA_GUARD_EVERYONE__*``), at once or
from a deadline, with no site to invent; site enforcement keeps working beside it.

Time is the injected clock (2027-01-15T08:00:00Z); deadlines ride in the session's marker.
"""

from __future__ import annotations

import io
from datetime import datetime
from pathlib import Path

import pytest
import schemathesis
from pydantic import ValidationError
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from mfa_guard import MemoryStore, MFAGuardSettings
from mfa_guard.cli import main
from mfa_guard.errors import StoreUnavailable
from mfa_guard.events import EventKind
from mfa_guard.stores.sites import Membership, MemorySiteDirectory, Role, SitePolicy
from mfa_guard.stores.sql import SQLStore
from mfa_guard.testing import CountingSiteDirectory, CountingStore
from tests.apps import ENCRYPTION_KEY, GuardedApp, build_app, enrol, sign_in
from tests.databases import seeded
from tests.everyone import (
    AGENT,
    ANYONE,
    NOW,
    OWNER,
    acme,
    banner,
    enforce,
    everyone,
    text_of,
    without_mfa_guard_variables,
)
from tests.scenarios import assert_json_error, websocket_messages

RECHECK = 60


def with_notice_routes(ga: GuardedApp) -> GuardedApp:
    """The app's own pages asking for the banner: ``/notice`` with no I/O, ``/named-notice``
    naming the sites (and then ``/notice``'s call again, in the same request)."""
    guard = ga.guard

    def described(request: Request, named: object = None) -> Response:
        notice = guard.enrolment_notice(request.scope)
        if notice is None:
            return JSONResponse(None)
        return JSONResponse(
            {
                "deadline": notice.iso,
                "overdue": notice.overdue,
                "everyone": notice.everyone,
                "sites": list(notice.sites),
                "named": named,
            }
        )

    async def plain(request: Request) -> Response:
        return described(request)

    async def named(request: Request) -> Response:
        notice = await guard.named_enrolment_notice(request.scope)
        return described(request, None if notice is None else list(notice.sites))

    ga.app.add_route("/notice", plain)
    ga.app.add_route("/named-notice", named)
    return ga


# -- confinement to enrolment ------------------------------------------------------------------


async def test_at_once_every_account_without_2fa_reaches_only_enrolment() -> None:
    # No site directory at all: nothing to invent.
    ga = build_app(everyone=everyone(), recheck_seconds=RECHECK)
    async with ga.client() as client:
        await sign_in(client, ANYONE)
        page = await client.get("/protected?tab=2")
        assert (page.status_code, page.headers["location"]) == (
            303,
            "/mfa/enrol?next=/protected%3Ftab%3D2",
        )
        api = await client.get("/api/data")
        assert (api.status_code, assert_json_error(api)) == (403, "mfa_enrolment_required")
        posted = await client.post("/protected", headers={"accept": "application/json"})
        assert (posted.status_code, posted.json()["error"]["code"]) == (
            403,
            "mfa_enrolment_required",
        )
        assert await websocket_messages(ga, client) == [
            {"type": "websocket.close", "code": 1008, "reason": ""}
        ]
        # Enrolment, the kit's API and sign-out stay open; the page says why, with no "site".
        enrol_page = await client.get("/mfa/enrol?next=/protected")
        assert enrol_page.status_code == 200
        assert banner(enrol_page) == (
            "Two-factor authentication is required for every account. Turn it on to continue."
        )
        assert (await client.get("/mfa/api/status")).status_code == 200
        assert (await client.post("/logout")).status_code == 303


async def test_enrolling_opens_the_app_and_the_websocket() -> None:
    ga = build_app(everyone=everyone(), recheck_seconds=RECHECK)
    async with ga.client() as client:
        await sign_in(client, ANYONE)
        assert (await client.get("/protected")).status_code == 303
        await enrol(ga, client)
        page = await client.get("/protected")
        assert (page.status_code, page.text) == (200, "protected content")
        assert (await websocket_messages(ga, client))[0]["type"] == "websocket.accept"
        assert 'id="enrolment-notice"' not in (await client.get("/mfa/settings")).text


async def test_the_deadline_is_honoured_to_the_second_with_no_store_call() -> None:
    store = CountingStore(MemoryStore())
    ga = build_app(store, everyone=everyone(deadline_in=30), recheck_seconds=RECHECK)
    async with ga.client() as client:
        await sign_in(client, ANYONE)
        assert (await client.get("/protected")).status_code == 200  # the marker is stamped now
        calls = store.total
        ga.clock.now = NOW + 29.999
        assert (await client.get("/protected")).status_code == 200
        ga.clock.now = NOW + 30
        page = await client.get("/protected")
        assert (page.status_code, page.headers["location"]) == (303, "/mfa/enrol?next=/protected")
        api = await client.get("/api/data")
        assert (api.status_code, assert_json_error(api)) == (403, "mfa_enrolment_required")
        assert await websocket_messages(ga, client) == [
            {"type": "websocket.close", "code": 1008, "reason": ""}
        ]
        # Within recheck_seconds of the stamp: the marker alone decided.
        assert store.total == calls


async def test_before_the_deadline_every_page_tells_of_it() -> None:
    ga = with_notice_routes(build_app(everyone=everyone(deadline_in=86400)))
    async with ga.client() as client:
        await sign_in(client, ANYONE)
        assert (await client.get("/protected")).status_code == 200
        settings = await client.get("/mfa/settings")
        assert banner(settings) == (
            "Two-factor authentication is required for every account from "
            "Jan 16, 2027, 08:00 UTC. Turn it on now to keep your access."
        )
        assert '<time datetime="2027-01-16T08:00:00Z">' in settings.text
        assert "site" not in banner(settings)
        # The app's own pages: the same notice, with no I/O.
        assert (await client.get("/notice")).json() == {
            "deadline": "2027-01-16T08:00:00Z",
            "overdue": False,
            "everyone": True,
            "sites": [],
            "named": None,
        }


async def test_a_french_browser_is_told_in_french() -> None:
    ga = build_app(everyone=everyone(deadline_in=86400))
    async with ga.client(headers={"accept-language": "fr"}) as client:
        await sign_in(client, ANYONE)
        page = await client.get("/mfa/settings")
        # The date as French writes it, as the settings page's own dates are.
        assert banner(page) == (
            "L\u2019authentification à deux facteurs est exigée de chaque compte à partir du "
            "16 janv. 2027, 08:00 UTC. Activez-la dès maintenant pour conserver votre accès."
        )


# -- turning it off ----------------------------------------------------------------------------


async def test_disabling_is_refused_before_the_code_is_checked() -> None:
    directory = await acme()
    ga = build_app(sites=directory, everyone=everyone(deadline_in=3600))
    async with ga.client() as client:
        await sign_in(client, AGENT)
        secret, _ = await enrol(ga, client)
        # A site enforces it too: the app-wide policy is the stronger reason, and told first.
        await enforce(directory, NOW + 7200)
        ga.clock.advance(30)
        code = ga.code(secret)
        refused = await client.post("/mfa/api/disable", json={"code": code})
        assert (refused.status_code, assert_json_error(refused)) == (
            409,
            "mfa_required_for_everyone",
        )
        assert refused.json()["error"]["message"] == (
            "Two-factor authentication is required for every account: it cannot be turned off."
        )
        enrolment = await ga.store.get(AGENT)
        assert enrolment is not None
        assert enrolment.enrolled
        # The code was not spent on the refusal.
        assert (await client.post("/mfa/api/verify", json={"code": code})).status_code == 200
        assert ga.events.kinds().count(EventKind.DISABLE_REFUSED) == 1
        assert EventKind.DISABLED not in ga.events.kinds()


async def test_the_settings_page_explains_instead_of_offering_the_button() -> None:
    ga = build_app(everyone=everyone())
    async with ga.client() as client:
        await sign_in(client, ANYONE)
        secret, _ = await enrol(ga, client)
        page = await client.get("/mfa/settings")
        assert 'id="required-for-everyone"' in page.text
        assert "disable-code" not in page.text
        assert "/settings/disable" not in page.text
        assert (
            "Two-factor authentication is required for every account: it cannot be turned off."
        ) in text_of(page.text)
        # A form posted all the same (an old tab) gets the refusal, not a 2FA turned off.
        token = page.text.split('name="csrf_token" value="')[1].split('"')[0]
        ga.clock.advance(30)
        refused = await client.post(
            "/mfa/settings/disable",
            data={"csrf_token": token, "method": "totp", "code": ga.code(secret)},
        )
        assert refused.status_code == 409
        assert 'role="alert"' in refused.text
        assert "required for every account" in refused.text
    enrolment = await ga.store.get(ANYONE)
    assert enrolment is not None
    assert enrolment.enrolled


# -- the JSON status ---------------------------------------------------------------------------


async def test_the_status_says_2fa_is_required_of_everyone() -> None:
    at_once = build_app(everyone=everyone())
    later = build_app(sites=await acme(), everyone=everyone(deadline_in=3600))
    off = build_app(sites=await acme())
    answers = []
    for ga in (at_once, later, off):
        async with ga.client() as client:
            await sign_in(client, ANYONE)
            answers.append((await client.get("/mfa/api/status")).json()["enforcement"])
    assert answers == [
        # At once: required, with no deadline at all.
        {"required": True, "everyone": True, "deadline": None, "sites": []},
        {"required": True, "everyone": True, "deadline": "2027-01-15T09:00:00Z", "sites": []},
        {"required": False, "everyone": False, "deadline": None, "sites": []},
    ]


async def test_the_status_and_the_refusal_match_the_openapi_document() -> None:
    ga = build_app(sites=await acme(), everyone=everyone())
    async with ga.client() as client:
        await sign_in(client, AGENT)
        answers = [await client.get("/mfa/api/status")]
        secret, _ = await enrol(ga, client)
        answers.append(await client.get("/mfa/api/status"))
        answers.append(await client.post("/mfa/api/disable", json={"code": ga.code(secret)}))
        document = (await client.get("/mfa/api/openapi.json")).json()
    schema = schemathesis.openapi.from_dict(document)
    assert [answer.status_code for answer in answers] == [200, 200, 409]
    for answer in answers:
        operation = schema.find_operation_by_path(answer.request.method, answer.request.url.path)
        assert operation is not None
        operation.validate_response(answer)  # raises when the body does not match
    described = document["components"]["schemas"]["Enforcement"]
    assert "everyone" in described["required"]


# -- beside site enforcement -------------------------------------------------------------------


async def test_under_both_the_earliest_deadline_wins_and_the_notice_names_its_reason() -> None:
    directory = await acme()
    ga = build_app(sites=directory, everyone=everyone(deadline_in=7200), recheck_seconds=RECHECK)
    await enforce(directory, NOW + 3600)  # the site's deadline comes first
    async with ga.client() as client:
        await sign_in(client, AGENT)
        status = (await client.get("/mfa/api/status")).json()["enforcement"]
        assert status == {
            "required": True,
            "everyone": True,
            "deadline": "2027-01-15T09:00:00Z",
            "sites": [{"id": "acme", "name": "Acme", "deadline": "2027-01-15T09:00:00Z"}],
        }
        page = await client.get("/mfa/settings")
        assert banner(page) == (
            "Acme requires two-factor authentication from Jan 15, 2027, 09:00 UTC. "
            "Turn it on now to keep your access."
        )
        # To the second: the site's deadline rides in the marker.
        ga.clock.now = NOW + 3599
        assert (await client.get("/protected")).status_code == 200
        ga.clock.now = NOW + 3600
        assert (await client.get("/protected")).status_code == 303
        assert banner(await client.get("/mfa/enrol")) == (
            "Acme requires two-factor authentication. Turn it on to continue."
        )
        # Once the app-wide deadline has passed too, it is the reason told: it holds whatever
        # sites the user belongs to.
        ga.clock.now = NOW + 7200
        assert banner(await client.get("/mfa/enrol")) == (
            "Two-factor authentication is required for every account. Turn it on to continue."
        )


async def test_an_earlier_app_wide_deadline_is_the_one_told() -> None:
    directory = await acme()
    ga = build_app(sites=directory, everyone=everyone(deadline_in=600), recheck_seconds=RECHECK)
    await enforce(directory, NOW + 3600)
    async with ga.client() as client:
        await sign_in(client, AGENT)
        assert banner(await client.get("/mfa/settings")) == (
            "Two-factor authentication is required for every account from "
            "Jan 15, 2027, 08:10 UTC. Turn it on now to keep your access."
        )
        # Leaving the site changes nothing: the app still requires it.
        assert await directory.remove_member("acme", AGENT)
        ga.clock.now = NOW + 600
        assert (await client.get("/protected")).headers["location"] == (
            "/mfa/enrol?next=/protected"
        )


async def test_once_the_app_wide_deadline_passed_a_recheck_reads_no_directory() -> None:
    # Nothing a site sets can be stricter than passkeys for every account, past its deadline.
    directory = CountingSiteDirectory(await acme())
    strictest = {**everyone(), "methods": "phishing_resistant"}
    passkeys = {"rp_id": "example.test", "origins": ["https://example.test"]}
    ga = build_app(sites=directory, everyone=strictest, webauthn=passkeys, recheck_seconds=0)
    async with ga.client() as client:
        await sign_in(client, AGENT)
        for _ in range(3):
            assert (await client.get("/protected")).status_code == 303
        assert directory.total == 0


async def test_past_the_app_wide_deadline_a_recheck_still_reads_what_sites_add() -> None:
    # A site may refuse texted codes, or require passkeys, beyond 2FA for every account.
    directory = CountingSiteDirectory(await acme())
    ga = build_app(sites=directory, everyone=everyone(), recheck_seconds=0)
    async with ga.client() as client:
        await sign_in(client, AGENT)
        for _ in range(3):
            assert (await client.get("/protected")).status_code == 303
        assert directory.calls["requirements"] == 3


# -- the site banner names the site ------------------------------------------------------------


async def test_the_site_banner_names_the_sites_on_the_kits_pages() -> None:
    directory = await acme()
    await directory.save_site("beta", "Beta")
    await directory.add_member("beta", AGENT, Role.OPERATOR)
    ga = build_app(sites=directory, recheck_seconds=RECHECK)
    await enforce(directory, NOW + 86400)
    policy = SitePolicy(enforce=True, grace_deadline=NOW + 86400, changed_by=OWNER, changed_at=NOW)
    assert await directory.set_policy("beta", policy)
    async with ga.client() as client:
        await sign_in(client, AGENT)
        assert banner(await client.get("/mfa/settings")) == (
            "Acme and Beta require two-factor authentication from Jan 16, 2027, 08:00 UTC. "
            "Turn it on now to keep your access."
        )
        ga.clock.now = NOW + 86400
        assert banner(await client.get("/mfa/enrol")) == (
            "Acme and Beta require two-factor authentication. Turn it on to continue."
        )


async def test_only_the_sites_whose_deadline_comes_first_are_named() -> None:
    directory = await acme()
    await directory.save_site("beta", "Beta")
    await directory.add_member("beta", AGENT, Role.OPERATOR)
    ga = build_app(sites=directory)
    await enforce(directory, NOW + 3600)
    later = SitePolicy(enforce=True, grace_deadline=NOW + 7200, changed_by=OWNER, changed_at=NOW)
    assert await directory.set_policy("beta", later)
    async with ga.client() as client:
        await sign_in(client, AGENT)
        assert banner(await client.get("/mfa/settings")).startswith(
            "Acme requires two-factor authentication from Jan 15, 2027, 09:00 UTC."
        )


async def test_a_site_name_is_text_never_markup() -> None:
    directory = await acme(name='<img src=x onerror="alert(1)">')
    ga = build_app(sites=directory)
    await enforce(directory, NOW + 600)
    async with ga.client() as client:
        await sign_in(client, AGENT)
        page = await client.get("/mfa/settings")
        assert "<img" not in page.text
        assert "&lt;img src=x onerror=" in page.text


async def test_the_apps_pages_get_the_names_with_one_directory_read_when_due() -> None:
    inner = await acme()
    directory = CountingSiteDirectory(inner)
    ga = with_notice_routes(build_app(sites=directory, recheck_seconds=RECHECK))
    await enforce(inner, NOW + 600)
    async with ga.client() as client:
        await sign_in(client, AGENT)
        # guard.enrolment_notice: no I/O, so no names.
        assert (await client.get("/notice")).json()["sites"] == []
        before = directory.total
        named = (await client.get("/named-notice")).json()
        # The named notice, and the plain one called after it in the same request, name Acme.
        assert (named["named"], named["sites"]) == (["Acme"], ["Acme"])
        assert directory.total == before + 1
        await enrol(ga, client)
        before = directory.total
        assert (await client.get("/named-notice")).json() is None
        assert directory.total == before  # nothing due: nothing read


async def test_an_unreachable_directory_leaves_the_banner_unnamed_not_the_page_broken() -> None:
    class NamesDown(MemorySiteDirectory):
        down = False

        async def memberships(self, user_id: str) -> list[Membership]:
            if self.down:
                raise StoreUnavailable()
            return await super().memberships(user_id)

    directory = NamesDown()
    await directory.save_site("acme", "Acme")
    await directory.add_member("acme", AGENT, Role.OPERATOR)
    ga = build_app(sites=directory, recheck_seconds=RECHECK)
    await enforce(directory, NOW + 600)
    async with ga.client() as client:
        await sign_in(client, AGENT)
        assert (await client.get("/protected")).status_code == 200
        directory.down = True
        page = await client.get("/mfa/enrol")
        assert page.status_code == 200
        assert banner(page).startswith("A site you belong to requires two-factor authentication")


# -- the settings --------------------------------------------------------------------------------


@pytest.fixture
def environment(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    for name in ("MFA_GUARD_EVERYONE__REQUIRED", "MFA_GUARD_EVERYONE__DEADLINE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("MFA_GUARD_ENCRYPTION_KEYS", ENCRYPTION_KEY)
    return monkeypatch


@pytest.mark.parametrize(
    ("deadline", "timestamp"),
    [
        ("2027-01-16T08:00:00Z", NOW + 86400),
        ("2027-01-16T09:00:00+01:00", NOW + 86400),
        ("2027-01-16T08:00:00.5+00:00", NOW + 86400.5),
        ("", 0.0),  # at once
    ],
)
def test_the_policy_comes_from_the_environment(
    environment: pytest.MonkeyPatch, deadline: str, timestamp: float
) -> None:
    environment.setenv("MFA_GUARD_EVERYONE__REQUIRED", "true")
    environment.setenv("MFA_GUARD_EVERYONE__DEADLINE", deadline)
    settings = MFAGuardSettings(_env_file=None)
    assert settings.everyone.required
    assert settings.everyone.required_from() == timestamp


def test_by_default_nobody_is_required_to_have_2fa(environment: pytest.MonkeyPatch) -> None:
    settings = MFAGuardSettings(_env_file=None)
    assert (settings.everyone.required, settings.everyone.deadline) == (False, None)
    assert settings.everyone.required_from() is None


@pytest.mark.parametrize(
    ("variables", "message"),
    [
        (
            {"REQUIRED": "true", "DEADLINE": "2027-01-16T08:00:00"},
            "everyone.deadline 2027-01-16T08:00:00 has no timezone",
        ),
        (
            {"REQUIRED": "true", "DEADLINE": "2027-01-16"},
            "everyone.deadline 2027-01-16 has no timezone",
        ),
        (
            {"REQUIRED": "true", "DEADLINE": "next monday"},
            "everyone.deadline next monday is not an ISO 8601 date and time",
        ),
        (
            {"REQUIRED": "true", "DEADLINE": "1800000000"},
            "is not an ISO 8601 date and time",
        ),
        (
            {"DEADLINE": "2027-01-16T08:00:00Z"},
            "set MFA_GUARD_EVERYONE__REQUIRED=true",
        ),
        ({"REQUIRED": "sometimes"}, "everyone.required"),
    ],
)
def test_a_bad_policy_is_refused_with_a_message_that_says_what_to_change(
    environment: pytest.MonkeyPatch, variables: dict[str, str], message: str
) -> None:
    for name, value in variables.items():
        environment.setenv(f"MFA_GUARD_EVERYONE__{name}", value)
    with pytest.raises(ValidationError) as refused:
        MFAGuardSettings(_env_file=None)
    assert message in str(refused.value)


def test_a_naive_datetime_object_is_refused_too() -> None:
    with pytest.raises(ValidationError, match="has no timezone"):
        MFAGuardSettings(
            _env_file=None,
            encryption_keys=[ENCRYPTION_KEY],
            everyone={"required": True, "deadline": datetime(2027, 1, 16, 8)},
        )


# -- mfa-guard status ----------------------------------------------------------------------------


@pytest.fixture
async def database(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """Acme (owner with 2FA, agent without) and a user who began a set-up, in SQLite; the
    working directory has no .env."""
    monkeypatch.chdir(tmp_path)
    without_mfa_guard_variables(monkeypatch)
    url = f"sqlite+aiosqlite:///{tmp_path}/mfa.db"
    await seeded(url)
    store = SQLStore(url)
    try:
        await store.begin_enrolment("started@example.test", "token")
    finally:
        await store.close()
    return url


def status(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, list[str], str]:
    code = main(["status", *argv])
    captured = capsys.readouterr()
    return code, captured.out.splitlines(), captured.err


def test_status_lists_every_known_account_under_the_app_wide_policy(
    database: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MFA_GUARD_EVERYONE__REQUIRED", "true")
    monkeypatch.setenv("MFA_GUARD_EVERYONE__DEADLINE", "2027-01-16T09:00:00+01:00")
    code, out, err = status(capsys, "--database-url", database)
    assert code == 0
    assert out[out.index("") :] == [
        "",
        "USER                  2FA  SMS",
        "agent@acme.test       OFF  -",
        "owner@acme.test       on   -",
        "solo@example.test     on   -",
        "started@example.test  OFF  -",
        "everyone: 2FA is required of every account from 2027-01-16T08:00:00Z; "
        "2 of 4 known users without 2FA",
    ]
    # What it cannot know, said where a script does not parse it.
    assert "never started setting up 2FA and belongs to no site" in err
    assert "--users-from" in err


def test_status_adds_the_apps_own_user_ids_and_filters_those_without_2fa(
    database: str,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    monkeypatch.setenv("MFA_GUARD_EVERYONE__REQUIRED", "true")
    users = tmp_path / "users.txt"
    users.write_text("# exported from the app\nnever-seen@example.test\n\nowner@acme.test\n")
    code, out, err = status(
        capsys, "--without-2fa", "--users-from", str(users), "--database-url", database
    )
    assert code == 0
    assert out[out.index("") :] == [
        "",
        "USER                     2FA  SMS",
        "agent@acme.test          OFF  -",
        "never-seen@example.test  OFF  -",
        "started@example.test     OFF  -",
        "everyone: 2FA is required of every account, at once; 3 of 5 known users without 2FA",
    ]
    assert err == ""
    # The same ids from stdin.
    monkeypatch.setattr("sys.stdin", io.StringIO("never-seen@example.test\n"))
    code, out, _ = status(capsys, "--users-from", "-", "--database-url", database)
    assert "never-seen@example.test  OFF  -" in out


def test_status_shows_who_a_policy_would_send_to_enrolment_before_it_is_on(
    database: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = status(capsys, "--database-url", database)
    assert code == 0
    assert not any(line.startswith("everyone:") for line in out)  # off: the sites alone
    code, out, _ = status(capsys, "--everyone", "--database-url", database)
    assert code == 0
    assert out[-1] == (
        "everyone: 2FA is not required of every account (MFA_GUARD_EVERYONE__REQUIRED is off); "
        "2 of 4 known users without 2FA"
    )


def test_status_refuses_bad_settings_and_unreadable_lists(
    database: str,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    code, _, err = status(
        capsys, "--users-from", str(tmp_path / "nope.txt"), "--database-url", database
    )
    assert code == 2
    assert "cannot read the user ids of" in err
    code, _, err = status(capsys, "--site", "acme", "--everyone", "--database-url", database)
    assert (code, "use one or the other" in err) == (2, True)
    (tmp_path / ".env").write_text(
        "MFA_GUARD_EVERYONE__REQUIRED=true\nMFA_GUARD_EVERYONE__DEADLINE=2027-01-16T08:00\n"
    )
    code, _, err = status(capsys, "--database-url", database)
    assert code == 2
    assert "has no timezone" in err
    assert "Traceback" not in err
