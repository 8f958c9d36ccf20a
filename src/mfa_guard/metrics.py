"""Metrics: what the kit did, counted, and how long each verify took, for an app's dashboards
and alerts (``MFAGuard(metrics=OpenTelemetryMetrics())``, docs/metrics.md).

The counts come from the audit events: :class:`MetricsSink` counts each event the guard
publishes, then passes it on. The latency is measured around ``MFAService.verify`` and
``verify_passkey``. A request the middleware lets in publishes no event and is not timed: the
hot path reports nothing, metrics on or off.

Every attribute takes its values from a small fixed set (a method, a result, a limit's name):
never a user id, an address, a site or a phone number. Each value of an attribute is a time
series of its own in the backend, so one that came from a request would grow without bound.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import TYPE_CHECKING, Protocol

from mfa_guard.errors import ConfigurationError, Denied, Reason
from mfa_guard.events import AuditEvent, EventKind, EventSink
from mfa_guard.send_limits import REFUSALS
from mfa_guard.version import __version__

if TYPE_CHECKING:
    from opentelemetry.metrics import Counter, MeterProvider

__all__ = ["Metrics", "MetricsSink", "OpenTelemetryMetrics"]

logger = logging.getLogger("mfa_guard")

# The second factors a code or an assertion is checked as (services.Method's values); an
# event without one (a set-up's lock-out) says "none", anything else "other".
METHODS = frozenset({"totp", "recovery", "sms", "webauthn"})
# A verification's result, by its event.
VERIFICATION_RESULTS = {
    EventKind.VERIFIED: "ok",
    EventKind.VERIFICATION_FAILED: "failed",
    EventKind.CODE_REUSED: "reused",
}
# A verify's refusals that are a wrong answer (the rest, but for reuse and lock-out, are
# "refused": not enrolled, SMS off, no passkey...).
_FAILED = frozenset(
    {
        Reason.INVALID_CODE,
        Reason.WEBAUTHN_REJECTED,
        Reason.WEBAUTHN_CHALLENGE_EXPIRED,
        Reason.WEBAUTHN_COUNTER_REGRESSED,
    }
)
_LOCKED = frozenset({Reason.LOCKED_AFTER_FAILURES, Reason.TOO_MANY_ATTEMPTS})
# The histogram's buckets, in seconds: a TOTP verify on memory takes a fraction of a
# millisecond, one on PostgreSQL + Redis a few, a recovery code (scrypt) tens.
LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
INSTALL_HINT = "pip install 'mfa-guard[otel]'"


class Metrics(Protocol):
    """What receives the kit's metrics (``MFAGuard(metrics=...)``). Both methods are called
    on a request's way, synchronously: they must be quick (no I/O) and must not raise."""

    def event(self, event: AuditEvent) -> None:
        """Counts ``event``; called once for each audit event the guard publishes."""
        ...

    def verify_latency(self, method: str, result: str, seconds: float) -> None:
        """Records one verify: its ``method`` (``totp``, ``recovery``, ``sms``,
        ``webauthn``), its ``result`` (``ok``, ``failed``, ``reused``, ``locked``, ``refused``,
        ``error``) and how long it took."""
        ...


def verify_result(denied: Denied | None) -> str:
    """A verify's result as the latency histogram names it: ``ok`` (``None``: verified),
    ``failed``, ``reused``, ``locked`` or ``refused`` (not a check of a code: not enrolled, SMS
    off...)."""
    if denied is None:
        return "ok"
    reason = denied.reason
    if reason is Reason.CODE_ALREADY_USED:
        return "reused"
    if reason in _FAILED:
        return "failed"
    return "locked" if reason in _LOCKED else "refused"


def method_of(event: AuditEvent) -> str:
    method = event.method
    if method is None:
        return "none"
    return method if method in METHODS else "other"


def sms_reason(event: AuditEvent) -> str:
    """Why a text was not sent: the limit an ``sms_limited`` event names (``limit=...`` in its
    detail), or ``provider`` for an ``sms_failed`` one."""
    if event.kind is EventKind.SMS_FAILED:
        return "provider"
    for pair in (event.detail or "").split():
        key, _, value = pair.partition("=")
        if key == "limit":
            return value if value in REFUSALS else "other"
    return "other"


class OpenTelemetryMetrics:
    """The kit's metrics on the OpenTelemetry metrics API (the ``otel`` extra): counters of
    verifications, lock-outs, texts, and of the requests the middleware stopped, and a
    histogram of verify latency (docs/metrics.md names them all).

    The instruments come from ``meter_provider``, else from the global one: until the app
    installs an SDK (``opentelemetry-sdk``, with an exporter such as Prometheus'), the API's
    own provider does nothing, at next to no cost. Without the API installed, construction
    raises :class:`~mfa_guard.ConfigurationError` naming the extra."""

    def __init__(self, meter_provider: MeterProvider | None = None) -> None:
        try:
            from opentelemetry import metrics
        except ImportError as exc:
            raise ConfigurationError(
                f"OpenTelemetryMetrics needs the OpenTelemetry API: {INSTALL_HINT}"
            ) from exc
        meter = metrics.get_meter("mfa_guard", __version__, meter_provider=meter_provider)
        self._verifications = meter.create_counter(
            "mfa_guard.verifications",
            unit="{verification}",
            description="Second factors checked, by method and result (ok, failed, reused).",
        )
        self._lockouts = meter.create_counter(
            "mfa_guard.lockouts",
            unit="{lockout}",
            description="Attempts refused because the user's failure budget is spent.",
        )
        self._texts = meter.create_counter(
            "mfa_guard.sms.texts",
            unit="{text}",
            description="Texts asked for, by outcome (sent, limited, failed) and reason.",
        )
        # The middleware's answers to a signed-in user's request it stopped.
        self._stopped: Mapping[EventKind, Counter] = {
            EventKind.CHALLENGED: meter.create_counter(
                "mfa_guard.challenges",
                unit="{request}",
                description="Requests sent to the second step.",
            ),
            EventKind.ENROLMENT_REQUIRED: meter.create_counter(
                "mfa_guard.enrolment_confinements",
                unit="{request}",
                description="Requests confined to enrolment (2FA required, not set up).",
            ),
            EventKind.FAILED_CLOSED: meter.create_counter(
                "mfa_guard.failed_closed",
                unit="{request}",
                description="Requests refused because a store could not be reached.",
            ),
        }
        self._latency = meter.create_histogram(
            "mfa_guard.verification.duration",
            unit="s",
            description="How long a verify took, by method and result.",
            explicit_bucket_boundaries_advisory=LATENCY_BUCKETS,
        )

    def event(self, event: AuditEvent) -> None:
        kind = event.kind
        result = VERIFICATION_RESULTS.get(kind)
        if result is not None:
            self._verifications.add(1, {"method": method_of(event), "result": result})
        elif kind is EventKind.LOCKED_OUT:
            self._lockouts.add(1, {"method": method_of(event)})
        elif kind is EventKind.SMS_SENT:
            self._texts.add(1, {"outcome": "sent"})
        elif kind is EventKind.SMS_LIMITED:
            self._texts.add(1, {"outcome": "limited", "reason": sms_reason(event)})
        elif kind is EventKind.SMS_FAILED:
            self._texts.add(1, {"outcome": "failed", "reason": sms_reason(event)})
        elif (stopped := self._stopped.get(kind)) is not None:
            stopped.add(1)

    def verify_latency(self, method: str, result: str, seconds: float) -> None:
        self._latency.record(seconds, {"method": method, "result": result})


class MetricsSink:
    """An event sink that counts each event in ``metrics``, then passes it on to ``inner``
    (the guard wraps its sink so when given ``metrics``: each event is counted once). Metrics
    that raise are logged and ignored, as a broken sink is: ``inner`` still hears of it."""

    def __init__(self, inner: EventSink, metrics: Metrics) -> None:
        self.inner = inner
        self.metrics = metrics

    async def emit(self, event: AuditEvent) -> None:
        try:
            self.metrics.event(event)
        except Exception:
            logger.exception("mfa_guard metrics failed on %s", event.kind.value)
        await self.inner.emit(event)
