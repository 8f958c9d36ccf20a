"""The audit log (docs/security.md "logs"): a failed second factor is a warning event that names no
code, and a value in a line, whatever it holds, stays one field of it (found by a security
review)."""

from __future__ import annotations

import logging
import re

import pytest

from mfa_guard.events import AuditEvent, EventKind, LoggingEventSink
from tests.apps import build_app
from tests.scenarios import USER, State, arrive, wrong_code

# -- a failure is a warning event that names no code ------------------------------------------


async def test_a_failed_second_factor_is_a_warning_event_naming_no_code(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    ga = build_app()
    async with ga.client() as client:
        secret = await arrive(ga, client, State.CHALLENGED)
        wrong = wrong_code(ga, secret)
        refused = await client.post("/mfa/api/verify", json={"code": wrong})
        assert refused.status_code == 422
    (failed,) = [e for e in ga.events.events if e.kind is EventKind.VERIFICATION_FAILED]
    assert (failed.user_id, failed.method, failed.client_ip) == (USER, "totp", "203.0.113.7")
    lines = [
        r
        for r in caplog.records
        if r.name == "mfa_guard.audit" and "event=verification_failed" in r.getMessage()
    ]
    assert len(lines) == 1
    assert lines[0].levelno == logging.WARNING
    assert wrong not in caplog.text
    assert secret not in caplog.text


# -- the audit log: a value is one field, whatever it holds ---------------------------

# logfmt as log shippers read it: key=value, or key="value" with \" and \\ inside.
ESCAPES = {"t": "\t", "r": "\r", "n": "\n"}
LOGFMT_PAIR = re.compile(r'(\w+)=("(?:[^"\\]|\\.)*"|[^\s"]*)(?:\s|$)')


def logfmt(line: str) -> list[tuple[str, str]]:
    """The pairs of a line, values unquoted, refusing anything between them."""
    assert line.startswith("mfa_guard "), line
    rest, pairs = line.removeprefix("mfa_guard "), []
    while rest:
        match = LOGFMT_PAIR.match(rest)
        assert match is not None, f"not a key=value pair at: {rest!r}"
        key, value = match.groups()
        if value.startswith('"'):
            value = re.sub(r"\\(.)", lambda m: ESCAPES.get(m[1], m[1]), value[1:-1])
        pairs.append((key, value))
        rest = rest[match.end() :]
    return pairs


HOSTILE = [
    pytest.param("acme ip=10.0.0.1 event=site_policy_changed user=root", id="spaces-and-equals"),
    pytest.param('acme" ip="10.0.0.1', id="quotes"),
    pytest.param('acme\\" event=verified', id="backslash-quote"),
    pytest.param("", id="empty"),
    pytest.param("=", id="equals-alone"),
    pytest.param("-", id="what-none-reads-as"),
    pytest.param("acme\tevent=verified", id="tab"),
]


@pytest.mark.parametrize("hostile", HOSTILE)
async def test_a_hostile_site_or_user_id_stays_one_field_of_its_audit_line(
    hostile: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="mfa_guard.audit")
    sink = LoggingEventSink()
    await sink.emit(
        AuditEvent(
            EventKind.SITE_POLICY_CHANGED,
            user_id=f"owner {hostile}",
            at=0.0,
            client_ip="203.0.113.7",
            site=hostile,
            detail="enforce=off",
        )
    )
    await sink.emit(AuditEvent(EventKind.VERIFIED, user_id=hostile, at=0.0, method="totp"))
    site_line, user_line = (r for r in caplog.records if r.name == "mfa_guard.audit")

    assert logfmt(site_line.getMessage()) == [
        ("event", "site_policy_changed"),
        ("user", f"owner {hostile}"),
        ("site", hostile),
        ("enforce", "off"),
        ("ip", "203.0.113.7"),
    ]
    assert logfmt(user_line.getMessage()) == [
        ("event", "verified"),
        ("user", hostile),
        ("method", "totp"),
        ("ip", "-"),
    ]
    # The same values, unescaped, as structured fields of the record (JSON log formatters).
    assert site_line.audit == {  # type: ignore[attr-defined]
        "event": "site_policy_changed",
        "user": f"owner {hostile}",
        "method": None,
        "site": hostile,
        "detail": "enforce=off",
        "ip": "203.0.113.7",
    }
    assert user_line.audit["user"] == hostile  # type: ignore[attr-defined]


async def test_a_line_break_in_an_id_is_escaped_inside_its_quoted_field(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="mfa_guard.audit")
    forged = "eve\r\nmfa_guard event=verified user=admin"
    await LoggingEventSink().emit(AuditEvent(EventKind.VERIFIED, forged, 0.0))
    line = caplog.records[-1].getMessage()
    assert "\r" not in line
    assert "\n" not in line
    assert logfmt(line)[1] == ("user", forged)
