"""The JSON API as a client uses it: enrolment, challenge, replay, drift, recovery, throttling."""

from __future__ import annotations

import asyncio
import io

import httpx
import PIL.Image
import pytest
import segno
import zxingcpp

from mfa_guard import EventKind, StoreUnavailable
from tests.apps import GuardedApp, build_app, enrol, sign_in


async def challenged(ga: GuardedApp, client: httpx.AsyncClient) -> tuple[str, list[str]]:
    await sign_in(client)
    secret, codes = await enrol(ga, client)
    await client.post("/logout")
    await sign_in(client)
    ga.clock.advance(30)  # the confirmation used this step
    return secret, codes


def error_code(response: httpx.Response) -> str:
    code: str = response.json()["error"]["code"]
    return code


async def test_enrolment_then_every_sign_in_needs_a_code(
    guarded: GuardedApp, client: httpx.AsyncClient
) -> None:
    await sign_in(client)
    status = (await client.get("/mfa/api/status")).json()
    assert status["enrolled"] is False
    assert status["methods"] == []

    setup = (await client.post("/mfa/api/totp/setup", json={})).json()
    assert setup["otpauth_uri"].startswith("otpauth://totp/Acme%20Inbox:solo%40example.test?")
    assert "issuer=Acme%20Inbox" in setup["otpauth_uri"]
    assert setup["qr_svg"].startswith("<svg")
    assert setup["secret_grouped"].replace(" ", "") == setup["secret"]
    assert len(setup["secret_grouped"].split(" ")[0]) == 4
    # Not active until the first code is confirmed.
    assert (await client.get("/mfa/api/status")).json()["enrolled"] is False

    confirm = await client.post(
        "/mfa/api/totp/confirm", json={"code": guarded.code(setup["secret"])}
    )
    assert confirm.status_code == 200
    codes = confirm.json()["recovery_codes"]
    assert len(codes) == 10
    assert len(set(codes)) == 10
    assert (await client.get("/mfa/api/status")).json()["verified"] is True

    await client.post("/logout")
    await sign_in(client)
    assert (await client.get("/protected")).status_code == 303
    status = (await client.get("/mfa/api/status")).json()
    assert (status["enrolled"], status["verified"]) == (True, False)
    assert status["methods"] == ["totp", "recovery"]

    guarded.clock.advance(30)
    verify = await client.post(
        "/mfa/api/verify", json={"method": "totp", "code": guarded.code(setup["secret"])}
    )
    assert verify.status_code == 200
    assert (await client.get("/protected")).status_code == 200
    assert EventKind.ENROLLED in guarded.events.kinds()
    assert EventKind.VERIFIED in guarded.events.kinds()


async def test_recovery_codes_are_shown_once(
    guarded: GuardedApp, client: httpx.AsyncClient
) -> None:
    await sign_in(client)
    await enrol(guarded, client)
    status = (await client.get("/mfa/api/status")).json()
    assert "recovery_codes" not in status
    assert status["recovery_codes_left"] == 10
    enrolment = await guarded.store.get("solo@example.test")
    assert enrolment is not None
    [app] = enrolment.apps
    assert app.secret is not None
    assert "solo" not in app.secret  # a Fernet token, not the base32 key


async def test_confirming_with_a_wrong_code_keeps_2fa_off(
    guarded: GuardedApp, client: httpx.AsyncClient
) -> None:
    await sign_in(client)
    setup = (await client.post("/mfa/api/totp/setup", json={})).json()
    wrong = str((int(guarded.code(setup["secret"])) + 500_000) % 1_000_000).zfill(6)
    response = await client.post("/mfa/api/totp/confirm", json={"code": wrong})
    assert response.status_code == 422
    assert error_code(response) == "invalid_code"
    assert (await client.get("/mfa/api/status")).json()["enrolled"] is False


async def test_confirming_without_a_setup_is_a_conflict(client: httpx.AsyncClient) -> None:
    await sign_in(client)
    response = await client.post("/mfa/api/totp/confirm", json={"code": "123456"})
    assert response.status_code == 409
    assert error_code(response) == "no_pending_enrolment"


async def test_a_password_only_session_cannot_start_another_setup(
    guarded: GuardedApp, client: httpx.AsyncClient
) -> None:
    await challenged(guarded, client)
    # A session holding only the password must not be able to add an authenticator.
    response = await client.post("/mfa/api/totp/setup", json={})
    assert response.status_code == 401
    assert error_code(response) == "mfa_reauthentication_required"
    enrolment = await guarded.store.get("solo@example.test")
    assert enrolment is not None
    assert enrolment.pending_secret is None


async def test_signed_out_callers_get_401(client: httpx.AsyncClient) -> None:
    for method, path in [
        ("GET", "/mfa/api/status"),
        ("POST", "/mfa/api/totp/setup"),
        ("POST", "/mfa/api/verify"),
        ("POST", "/mfa/api/disable"),
    ]:
        response = await client.request(method, path, json={"code": "123456"})
        assert response.status_code == 401
        assert error_code(response) == "not_authenticated"


async def test_a_code_is_accepted_once(guarded: GuardedApp, client: httpx.AsyncClient) -> None:
    secret, _ = await challenged(guarded, client)
    code = guarded.code(secret)
    assert (await client.post("/mfa/api/verify", json={"code": code})).status_code == 200
    replay = await client.post("/mfa/api/verify", json={"code": code})
    assert replay.status_code == 422
    assert error_code(replay) == "code_already_used"
    assert EventKind.CODE_REUSED in guarded.events.kinds()


async def test_fifty_concurrent_copies_of_one_code_give_exactly_one_success() -> None:
    ga = build_app(rate_limits={"failures": "100/day"})
    async with ga.client() as client:
        secret, _ = await challenged(ga, client)
        code = ga.code(secret)
        clients = [ga.client(cookies=client.cookies) for _ in range(50)]
        responses = await asyncio.gather(
            *(c.post("/mfa/api/verify", json={"code": code}) for c in clients)
        )
        for c in clients:
            await c.aclose()
    assert sorted(r.status_code for r in responses) == [200] + [422] * 49


async def test_an_older_step_after_a_newer_one_is_refused(
    guarded: GuardedApp, client: httpx.AsyncClient
) -> None:
    secret, _ = await challenged(guarded, client)
    newer = guarded.code(secret, steps=1)
    older = guarded.code(secret, steps=-1)
    assert (await client.post("/mfa/api/verify", json={"code": newer})).status_code == 200
    response = await client.post("/mfa/api/verify", json={"code": older})
    assert response.status_code == 422


@pytest.mark.parametrize(("steps", "status"), [(-2, 422), (-1, 200), (1, 200), (2, 422)])
async def test_clock_skew_of_one_step_is_accepted_and_two_refused(
    guarded: GuardedApp, client: httpx.AsyncClient, steps: int, status: int
) -> None:
    secret, _ = await challenged(guarded, client)
    guarded.clock.advance(60)
    response = await client.post("/mfa/api/verify", json={"code": guarded.code(secret, steps)})
    assert response.status_code == status


async def test_a_recovery_code_works_once(guarded: GuardedApp, client: httpx.AsyncClient) -> None:
    _, codes = await challenged(guarded, client)
    typed = codes[3].upper().replace("-", " ")
    ok = await client.post("/mfa/api/verify", json={"method": "recovery", "code": typed})
    assert ok.status_code == 200
    assert (await client.get("/protected")).status_code == 200
    again = await client.post("/mfa/api/verify", json={"method": "recovery", "code": codes[3]})
    assert again.status_code == 422
    status = (await client.get("/mfa/api/status")).json()
    assert status["recovery_codes_left"] == 9
    assert EventKind.RECOVERY_CODE_USED in guarded.events.kinds()


async def test_regenerating_recovery_codes_needs_a_recent_code_and_voids_the_old_set(
    guarded: GuardedApp, client: httpx.AsyncClient
) -> None:
    secret, old = await challenged(guarded, client)
    await client.post("/mfa/api/verify", json={"code": guarded.code(secret)})
    guarded.clock.advance(301)
    stale = await client.post("/mfa/api/recovery-codes", json={})
    assert stale.status_code == 401
    assert error_code(stale) == "mfa_reauthentication_required"
    await client.post("/mfa/api/verify", json={"code": guarded.code(secret)})
    fresh = await client.post("/mfa/api/recovery-codes", json={})
    assert fresh.status_code == 200
    new = fresh.json()["recovery_codes"]
    assert set(new).isdisjoint(old)
    await client.post("/logout")
    await sign_in(client)
    refused = await client.post("/mfa/api/verify", json={"method": "recovery", "code": old[0]})
    assert refused.status_code == 422
    accepted = await client.post("/mfa/api/verify", json={"method": "recovery", "code": new[0]})
    assert accepted.status_code == 200


async def test_a_challenged_session_cannot_regenerate_recovery_codes(
    guarded: GuardedApp, client: httpx.AsyncClient
) -> None:
    await challenged(guarded, client)
    response = await client.post("/mfa/api/recovery-codes", json={})
    assert response.status_code == 401


async def test_failures_are_limited_per_user_across_sessions_and_ips() -> None:
    ga = build_app(rate_limits={"failures": "5/minute;20/hour;100/day"})
    async with ga.client() as first:
        secret, _ = await challenged(ga, first)
        right = ga.code(secret)
        wrong = str((int(right) + 500_000) % 1_000_000).zfill(6)
        for _ in range(3):
            assert (await first.post("/mfa/api/verify", json={"code": wrong})).status_code == 422
        other_ip = httpx.AsyncClient(
            transport=httpx.ASGITransport(app=ga.app, client=("198.51.100.9", 5000)),
            base_url="http://testserver",
        )
        async with other_ip:
            await sign_in(other_ip)
            for _ in range(2):
                assert (
                    await other_ip.post("/mfa/api/verify", json={"code": wrong})
                ).status_code == 422
            locked = await other_ip.post("/mfa/api/verify", json={"code": right})
        assert locked.status_code == 429
        assert error_code(locked) == "too_many_attempts"
        assert 1 <= int(locked.headers["retry-after"]) <= 60
        # Even the right code waits: the limit is on the account, not on wrong guesses only.
        assert (await first.post("/mfa/api/verify", json={"code": right})).status_code == 429
        assert EventKind.LOCKED_OUT in ga.events.kinds()


async def test_a_success_resets_the_failure_count() -> None:
    ga = build_app(rate_limits={"failures": "3/minute;100/day"})
    async with ga.client() as client:
        secret, _ = await challenged(ga, client)
        wrong = str((int(ga.code(secret)) + 500_000) % 1_000_000).zfill(6)
        for _ in range(2):
            await client.post("/mfa/api/verify", json={"code": wrong})
        assert (
            await client.post("/mfa/api/verify", json={"code": ga.code(secret)})
        ).status_code == 200
        ga.clock.advance(30)
        for _ in range(2):
            assert (await client.post("/mfa/api/verify", json={"code": wrong})).status_code == 422
        assert (
            await client.post("/mfa/api/verify", json={"code": ga.code(secret)})
        ).status_code == 200


async def test_recovery_codes_are_throttled_like_codes() -> None:
    # In a budget of their own (tests/security/test_lockout.py), limited the same way.
    ga = build_app(rate_limits={"recovery_failures": "3/minute;100/day"})
    async with ga.client() as client:
        _, codes = await challenged(ga, client)
        for _ in range(3):
            bad = await client.post(
                "/mfa/api/verify", json={"method": "recovery", "code": "aaaa-bbbb-cccc-dddd"}
            )
            assert bad.status_code == 422
        locked = await client.post("/mfa/api/verify", json={"method": "recovery", "code": codes[0]})
        assert locked.status_code == 429
        # The refused attempt did not spend the code.
        status = (await client.get("/mfa/api/status")).json()
        assert status["recovery_codes_left"] == 10


async def test_disabling_needs_a_verified_session_and_a_valid_code(
    guarded: GuardedApp, client: httpx.AsyncClient
) -> None:
    secret, _ = await challenged(guarded, client)
    unverified = await client.post("/mfa/api/disable", json={"code": guarded.code(secret)})
    assert unverified.status_code == 401
    assert error_code(unverified) == "mfa_required"
    await client.post("/mfa/api/verify", json={"code": guarded.code(secret)})
    guarded.clock.advance(30)
    wrong = str((int(guarded.code(secret)) + 500_000) % 1_000_000).zfill(6)
    refused = await client.post("/mfa/api/disable", json={"code": wrong})
    assert refused.status_code == 422
    assert (await client.get("/mfa/api/status")).json()["enrolled"] is True
    done = await client.post("/mfa/api/disable", json={"code": guarded.code(secret)})
    assert done.status_code == 200
    status = (await client.get("/mfa/api/status")).json()
    assert (status["enrolled"], status["verified"]) == (False, False)
    assert EventKind.DISABLED in guarded.events.kinds()
    await client.post("/logout")
    await sign_in(client)
    assert (await client.get("/protected")).status_code == 200


async def test_a_success_stands_when_the_failure_count_cannot_be_cleared(
    guarded: GuardedApp, client: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def storage_down(user_id: str) -> None:
        raise StoreUnavailable()

    monkeypatch.setattr(guarded.guard.limiter, "reset", storage_down)
    await sign_in(client)
    # The enrolment is stored before the count is cleared: its recovery codes must be shown.
    secret, codes = await enrol(guarded, client)
    assert len(codes) == 10
    await client.post("/logout")
    await sign_in(client)
    guarded.clock.advance(30)
    assert (await client.post("/mfa/api/verify", json={"code": guarded.code(secret)})).is_success


async def test_the_qr_code_reads_back_as_the_otpauth_uri(client: httpx.AsyncClient) -> None:
    await sign_in(client)
    setup = (await client.post("/mfa/api/totp/setup", json={})).json()
    # The served SVG is segno's drawing of exactly this URI...
    qr = segno.make(setup["otpauth_uri"], error="m")
    assert setup["qr_svg"] == qr.svg_inline(
        scale=1,
        border=4,
        omitsize=True,
        dark="#000",
        light="#fff",
        title="QR code for Acme Inbox",
        svgclass="mfa-qr",
        lineclass=None,
    )
    # ...that scales to any box (a viewBox, no fixed size), quiet zone and white ground
    # included: the page's drawing is the same (tests/e2e/test_rendered_pages.py reads it on
    # screen).
    modules = qr.symbol_size(scale=1, border=4)[0]
    assert setup["qr_svg"].startswith(f'<svg viewBox="0 0 {modules} {modules}" class="mfa-qr">')
    assert f'<path fill="#fff" d="M0 0h{modules}v{modules}h-{modules}z"/>' in setup["qr_svg"]
    # ...and that symbol, scanned, gives the URI an authenticator app enrols from.
    png = io.BytesIO()
    qr.save(png, kind="png", scale=5, border=4)
    png.seek(0)
    decoded = zxingcpp.read_barcodes(PIL.Image.open(png))
    assert [code.text for code in decoded] == [setup["otpauth_uri"]]
    assert setup["secret"] in setup["otpauth_uri"]
