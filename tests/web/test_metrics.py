"""Metrics (docs/metrics.md): what the kit did, counted through OpenTelemetry and read back
with the SDK's in-memory reader, from what users do over HTTP: codes right, wrong and reused,
a lock-out, texts sent, refused and failed, a passkey; each verify timed once; no attribute that
names a user, an address or a number; nothing reported by a request the guard lets in; the kit
without the SDK, and without the API."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from typing import Any

import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import (
    HistogramDataPoint,
    InMemoryMetricReader,
    NumberDataPoint,
)

from mfa_guard import (
    AuditEvent,
    ConfigurationError,
    EventKind,
    MemoryEventSink,
    MemoryStore,
    MFAGuard,
    OpenTelemetryMetrics,
)
from mfa_guard.metrics import METHODS, MetricsSink
from mfa_guard.send_limits import REFUSALS
from mfa_guard.services import Method
from mfa_guard.stores.events import MemoryEventStore
from mfa_guard.stores.sites import MemorySiteDirectory, Role, SitePolicy
from mfa_guard.testing.webauthn import SoftAuthenticator
from tests.apps import build_app, enrol, settings_for, sign_in
from tests.passkeys import ORIGIN, PASSKEYS, add_passkey, with_passkey
from tests.scenarios import USER, wrong_code
from tests.sms_apps import MOBILE, PEER, build_sms_app, owner_with_phone, texted_code

VERIFICATIONS = "mfa_guard.verifications"
LOCKOUTS = "mfa_guard.lockouts"
TEXTS = "mfa_guard.sms.texts"
DURATION = "mfa_guard.verification.duration"
# Every value each attribute may take: a fixed set, whatever the users and requests.
ALLOWED = {
    "method": METHODS | {"none", "other"},
    "result": {"ok", "failed", "reused", "locked", "refused", "error"},
    "outcome": {"sent", "limited", "failed"},
    "reason": REFUSALS | {"provider", "other"},
}


class Readout:
    """The metrics of one guard, read back as an exporter would get them."""

    def __init__(self) -> None:
        self.reader = InMemoryMetricReader()
        self.provider = MeterProvider(metric_readers=[self.reader], shutdown_on_exit=False)
        self.metrics = OpenTelemetryMetrics(self.provider)

    def points(self) -> Iterator[tuple[str, Any]]:
        """Each data point, with its metric's name."""
        data = self.reader.get_metrics_data()
        if data is None:
            return
        for resource in data.resource_metrics:
            for scope in resource.scope_metrics:
                assert scope.scope.name == "mfa_guard"
                for metric in scope.metrics:
                    for point in metric.data.data_points:
                        yield metric.name, point

    def counts(self, name: str) -> dict[str, int | float]:
        """A counter's values by attributes (``"method=totp result=ok"``)."""
        return {
            labels(point): point.value
            for metric, point in self.points()
            if metric == name and isinstance(point, NumberDataPoint)
        }

    def samples(self, name: str) -> dict[str, tuple[int, float]]:
        """A histogram's number of samples and their sum, by attributes."""
        return {
            labels(point): (point.count, point.sum)
            for metric, point in self.points()
            if metric == name and isinstance(point, HistogramDataPoint)
        }

    def everything(self) -> dict[str, dict[str, Any]]:
        return {
            name: {**self.counts(name), **self.samples(name)}
            for name in {metric for metric, _ in self.points()}
        }


def labels(point: NumberDataPoint | HistogramDataPoint) -> str:
    attributes = sorted((point.attributes or {}).items())
    return " ".join(key + "=" + str(value) for key, value in attributes)


@pytest.fixture
def readout() -> Iterator[Readout]:
    one = Readout()
    yield one
    one.provider.shutdown()


def assert_fixed_attributes(readout: Readout, *leaks: str) -> None:
    """Every attribute of every point is one of its fixed values, and names none of ``leaks``."""
    for name, point in readout.points():
        for key, value in (point.attributes or {}).items():
            assert value in ALLOWED[key], f"{name}: {key}={value}"
            assert not any(leak in str(value) for leak in leaks), f"{name}: {key}={value}"


async def test_codes_wrong_right_and_reused_are_counted_and_each_verify_timed(
    readout: Readout,
) -> None:
    ga = build_app(metrics=readout.metrics)
    async with ga.client() as client:
        await sign_in(client)
        secret, recovery_codes = await enrol(ga, client)
        await sign_in(client)
        ga.clock.advance(30)
        wrong = await client.post("/mfa/api/verify", json={"code": wrong_code(ga, secret)})
        assert wrong.status_code == 422, wrong.text
        code = ga.code(secret)
        assert (await client.post("/mfa/api/verify", json={"code": code})).status_code == 200
        reused = await client.post("/mfa/api/verify", json={"code": code})
        assert reused.status_code == 422, reused.text
        await sign_in(client)
        by_recovery = await client.post(
            "/mfa/api/verify", json={"method": "recovery", "code": recovery_codes[0]}
        )
        assert by_recovery.status_code == 200, by_recovery.text

    assert readout.counts(VERIFICATIONS) == {
        "method=totp result=failed": 1,
        "method=totp result=ok": 1,
        "method=totp result=reused": 1,
        "method=recovery result=ok": 1,
    }
    # Counted once each: as many as the events the app's own sink heard.
    kinds = ga.events.kinds()
    assert sum(readout.counts(VERIFICATIONS).values()) == sum(
        kinds.count(kind)
        for kind in (EventKind.VERIFIED, EventKind.VERIFICATION_FAILED, EventKind.CODE_REUSED)
    )
    samples = readout.samples(DURATION)
    assert {key: count for key, (count, _) in samples.items()} == {
        "method=totp result=failed": 1,
        "method=totp result=ok": 1,
        "method=totp result=reused": 1,
        "method=recovery result=ok": 1,
    }
    assert all(total > 0 for _, total in samples.values())
    assert_fixed_attributes(readout, USER, PEER)


async def test_a_lockout_is_counted_with_its_method(readout: Readout) -> None:
    ga = build_app(metrics=readout.metrics, rate_limits={"failures": "3/minute;100/day"})
    async with ga.client() as client:
        await sign_in(client)
        secret, _ = await enrol(ga, client)
        await sign_in(client)
        statuses = [
            (
                await client.post("/mfa/api/verify", json={"code": wrong_code(ga, secret)})
            ).status_code
            for _ in range(5)
        ]
    assert statuses == [422, 422, 422, 429, 429]
    assert readout.counts(LOCKOUTS) == {"method=totp": 2}
    assert readout.counts(VERIFICATIONS) == {"method=totp result=failed": 3}
    samples = readout.samples(DURATION)
    assert {key: count for key, (count, _) in samples.items()} == {
        "method=totp result=failed": 3,
        "method=totp result=locked": 2,
    }
    assert_fixed_attributes(readout, USER, PEER)


async def test_texts_sent_refused_by_their_limit_and_failed_are_counted(
    readout: Readout,
) -> None:
    app = build_sms_app(metrics=readout.metrics)
    async with app.client() as owner, app.client() as phone:
        await owner_with_phone(app, owner)  # the phone's verification text
        await sign_in(phone, USER)
        app.outbox.fail_next = 1
        assert (await phone.post("/mfa/api/sms/send", json={})).status_code == 503
        for _ in range(2):
            assert (await phone.post("/mfa/api/sms/send", json={})).status_code == 202
        # Three texts to the number within ten minutes: the fourth is refused.
        refused = await phone.post("/mfa/api/sms/send", json={})
        assert refused.status_code == 429, refused.text
        texted = await phone.post(
            "/mfa/api/verify", json={"method": "sms", "code": texted_code(app.outbox, MOBILE)}
        )
        assert texted.status_code == 200, texted.text

    assert readout.counts(TEXTS) == {
        "outcome=sent": 3,
        "outcome=failed reason=provider": 1,
        "outcome=limited reason=number": 1,
    }
    assert readout.counts(VERIFICATIONS)["method=sms result=ok"] == 1
    assert readout.samples(DURATION)["method=sms result=ok"][0] == 1
    # The event carries the limit's name, never the number.
    [limited] = [event for event in app.ga.events.events if event.kind is EventKind.SMS_LIMITED]
    assert limited.detail == "limit=number"
    assert_fixed_attributes(readout, USER, PEER, MOBILE, MOBILE[1:], "612345678")


async def test_a_passkey_verify_is_counted_and_timed(readout: Readout) -> None:
    ga = build_app(metrics=readout.metrics, webauthn=PASSKEYS)
    key = SoftAuthenticator()
    async with ga.client(base_url=ORIGIN) as client:
        await sign_in(client)
        await add_passkey(client, key)
        await sign_in(client)
        assert (await with_passkey(client, key)).status_code == 200
    assert readout.counts(VERIFICATIONS) == {"method=webauthn result=ok": 1}
    assert readout.samples(DURATION).keys() == {"method=webauthn result=ok"}


async def test_a_request_the_guard_lets_in_reports_nothing(readout: Readout) -> None:
    ga = build_app(metrics=readout.metrics)
    async with ga.client() as client:
        await sign_in(client)
        await enrol(ga, client)
        before = readout.everything()
        for _ in range(5):
            assert (await client.get("/protected")).status_code == 200
        for _ in range(5):
            assert (await client.get("/")).status_code == 200
    assert readout.everything() == before


async def test_the_middlewares_stops_are_counted_from_their_events(readout: Readout) -> None:
    # Built from events: the middleware publishes them (challenged, enrolment_required,
    # failed_closed); what it answers is tested with the middleware.
    inner = MemoryEventSink()
    sink = MetricsSink(inner, readout.metrics)
    stops = [
        EventKind.CHALLENGED,
        EventKind.CHALLENGED,
        EventKind.ENROLMENT_REQUIRED,
        EventKind.FAILED_CLOSED,
    ]
    for kind in stops:
        await sink.emit(AuditEvent(kind, USER, 1.0, client_ip=PEER, site="acme"))
    assert inner.kinds() == stops
    assert readout.counts("mfa_guard.challenges") == {"": 2}
    assert readout.counts("mfa_guard.enrolment_confinements") == {"": 1}
    assert readout.counts("mfa_guard.failed_closed") == {"": 1}


async def test_a_challenge_and_an_enrolment_confinement_over_http_are_counted(
    readout: Readout,
) -> None:
    directory = MemorySiteDirectory()
    await directory.save_site("acme", "Acme")
    await directory.add_member("acme", "agent@acme.test", Role.OPERATOR)
    ga = build_app(metrics=readout.metrics, sites=directory)
    now = ga.clock()
    policy = SitePolicy(enforce=True, grace_deadline=now, changed_by="owner", changed_at=now)
    assert await directory.set_policy("acme", policy)
    async with ga.client() as solo, ga.client() as agent:
        await sign_in(solo)
        await enrol(ga, solo)
        await solo.post("/logout")
        await sign_in(solo)
        assert (await solo.get("/protected")).status_code == 303
        await sign_in(agent, "agent@acme.test")
        assert (await agent.get("/protected")).status_code == 303
    await ga.guard.service.drain()
    assert readout.counts("mfa_guard.challenges") == {"": 1}
    assert readout.counts("mfa_guard.enrolment_confinements") == {"": 1}


@pytest.mark.parametrize(
    ("detail", "reason"),
    [
        ("limit=country", "country"),
        ("limit=global", "global"),
        ("limit=+33612345678", "other"),  # never a value from outside the fixed set
        (None, "other"),
    ],
)
async def test_a_refused_text_is_counted_by_the_limit_its_event_names(
    readout: Readout, detail: str | None, reason: str
) -> None:
    event = AuditEvent(EventKind.SMS_LIMITED, USER, 1.0, method="sms", detail=detail)
    await MetricsSink(MemoryEventSink(), readout.metrics).emit(event)
    assert readout.counts(TEXTS) == {f"outcome=limited reason={reason}": 1}


async def test_an_unknown_method_is_counted_as_other(readout: Readout) -> None:
    sink = MetricsSink(MemoryEventSink(), readout.metrics)
    await sink.emit(AuditEvent(EventKind.VERIFIED, USER, 1.0, method=USER))
    await sink.emit(AuditEvent(EventKind.LOCKED_OUT, USER, 1.0))
    assert readout.counts(VERIFICATIONS) == {"method=other result=ok": 1}
    assert readout.counts(LOCKOUTS) == {"method=none": 1}


def test_the_methods_are_the_services() -> None:
    assert {method.value for method in Method} == METHODS


async def test_each_event_is_counted_once_and_still_stored_and_logged(readout: Readout) -> None:
    events = MemoryEventSink()
    log = MemoryEventStore()
    guard = MFAGuard(
        settings=settings_for(),
        store=MemoryStore(),
        events=events,
        event_store=log,
        metrics=readout.metrics,
    )
    await guard.events.emit(AuditEvent(EventKind.VERIFIED, USER, 1.0, method="totp"))
    assert readout.counts(VERIFICATIONS) == {"method=totp result=ok": 1}
    assert events.kinds() == [EventKind.VERIFIED]
    assert [event.kind for event in log.all()] == [EventKind.VERIFIED]


class BrokenMetrics:
    def event(self, event: AuditEvent) -> None:
        raise RuntimeError("broken metrics")

    def verify_latency(self, method: str, result: str, seconds: float) -> None:
        raise RuntimeError("broken metrics")


async def test_broken_metrics_are_logged_and_the_sign_in_goes_on(
    caplog: pytest.LogCaptureFixture,
) -> None:
    ga = build_app(metrics=BrokenMetrics())
    async with ga.client() as client:
        await sign_in(client)
        secret, _ = await enrol(ga, client)
        await sign_in(client)
        ga.clock.advance(30)
        verified = await client.post("/mfa/api/verify", json={"code": ga.code(secret)})
        assert verified.status_code == 200, verified.text
        assert (await client.get("/protected")).status_code == 200
    # The events still reached the app's sink, and the log says what failed.
    assert EventKind.VERIFIED in ga.events.kinds()
    failures = [r.getMessage() for r in caplog.records if "metrics failed" in r.getMessage()]
    assert "mfa_guard metrics failed on verified" in failures
    assert "mfa_guard metrics failed on a verify" in failures


async def test_the_kit_counts_without_the_sdk_on_the_apis_own_provider(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # As an app with the otel extra and no SDK: the API's global provider, which records
    # nothing, and a guard that works as without metrics.
    for name in [name for name in sys.modules if name.startswith("opentelemetry.sdk")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "opentelemetry.sdk", None)
    ga = build_app(metrics=OpenTelemetryMetrics())
    async with ga.client() as client:
        await sign_in(client)
        secret, _ = await enrol(ga, client)
        await sign_in(client)
        ga.clock.advance(30)
        verified = await client.post("/mfa/api/verify", json={"code": ga.code(secret)})
        assert verified.status_code == 200, verified.text
    assert EventKind.VERIFIED in ga.events.kinds()
    assert not any(name.startswith("opentelemetry.sdk.") for name in sys.modules)


def test_without_the_api_the_metrics_name_the_extra_to_install(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(sys.modules, "opentelemetry", None)
    with pytest.raises(ConfigurationError, match=r"pip install 'mfa-guard\[otel\]'"):
        OpenTelemetryMetrics()
