"""Bad input as tables (docs/security.md checklist item 1), one of each kind for every endpoint that
reads it: bodies that are no small JSON object, fields that cannot be a code, and forms that
cannot be read or carry no code. Each body is one request's content and content type; a form's
``TOKEN_PLACEHOLDER`` becomes the session's CSRF token."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

import pytest

MOBILE = "+33612345678"
FULL_WIDTH_DIGITS = "１２３４５６"  # noqa: RUF001 (they are the point)
# Stands for the session's CSRF token in a form body; urlencode leaves it as it is.
TOKEN_PLACEHOLDER = "CSRF_TOKEN_PLACEHOLDER"


async def in_chunks(data: bytes) -> AsyncIterator[bytes]:
    """A body sent without Content-Length (chunked), so only reading it can show its size."""
    for start in range(0, len(data), 1024):
        yield data[start : start + 1024]


@dataclass(frozen=True)
class Body:
    """A JSON request's content and content type (none, for ``None``), streamed or not."""

    content: bytes
    content_type: str | None = "application/json"
    streamed: bool = False

    def request(self) -> dict[str, Any]:
        headers = {} if self.content_type is None else {"content-type": self.content_type}
        content = in_chunks(self.content) if self.streamed else self.content
        return {"content": content, "headers": headers}


def as_json(value: object) -> bytes:
    return json.dumps(value).encode()


# Every field an endpoint could read, well formed, and padding past the size limit.
TEN_KB_JSON = as_json({"phone": MOBILE, "code": "123456", "padding": "x" * 10_240})

# Refused by every endpoint that reads a JSON body, before it looks at a field:
# (body, status, error code).
BAD_ENVELOPES = [
    pytest.param(Body(TEN_KB_JSON), 413, "payload_too_large", id="ten-kb-body"),
    pytest.param(
        Body(TEN_KB_JSON, streamed=True), 413, "payload_too_large", id="ten-kb-body-streamed"
    ),
    pytest.param(
        Body(b'{"code": "123456"}', "text/plain"), 415, "unsupported_media_type", id="text-plain"
    ),
    pytest.param(
        Body(b"code=123456", "application/x-www-form-urlencoded"),
        415,
        "unsupported_media_type",
        id="form-urlencoded",
    ),
    pytest.param(
        Body(b'{"code": "123456"}', None), 415, "unsupported_media_type", id="no-content-type"
    ),
    pytest.param(Body(b'{"code": "123456"'), 400, "invalid_json", id="malformed-json"),
    pytest.param(Body(b'["123456"]'), 400, "invalid_json", id="json-array"),
    pytest.param(Body(b"null"), 400, "invalid_json", id="json-null"),
    pytest.param(Body(b'"123456"'), 400, "invalid_json", id="json-string"),
    pytest.param(Body(b"42"), 400, "invalid_json", id="json-number"),
    pytest.param(Body(b'{"code": "123\x00456"}'), 400, "invalid_json", id="raw-nul-byte"),
    pytest.param(Body(b'{"code": "\xff\xfe"}'), 400, "invalid_json", id="invalid-utf8"),
    # Too deep for the parser, or else parsed into a list: invalid either way.
    pytest.param(Body(b"[" * 2000 + b"]" * 2000), 400, "invalid_json", id="deeply-nested"),
]
ENVELOPE_BODIES = [pytest.param(p.values[0], id=p.id) for p in BAD_ENVELOPES]

# JSON objects whose ``code`` cannot be a code: refused by every endpoint that reads one, and,
# none carrying a well-formed code, none counted as a failed attempt.
BAD_CODES = [
    pytest.param(Body(b""), id="empty-body"),
    pytest.param(Body(b"{}"), id="empty-object"),
    pytest.param(Body(as_json({"code": ""})), id="empty-code"),
    pytest.param(Body(as_json({"code": "12345"})), id="five-digits"),
    pytest.param(Body(as_json({"code": "1234567"})), id="seven-digits"),
    pytest.param(Body(as_json({"code": "abcdef"})), id="letters"),
    pytest.param(Body(as_json({"code": "      "})), id="spaces-only"),
    pytest.param(Body(as_json({"code": "123\u0000456"})), id="escaped-nul"),
    pytest.param(Body(as_json({"code": FULL_WIDTH_DIGITS})), id="full-width-digits"),
    pytest.param(Body(as_json({"code": "1" * 3000})), id="overlong-code"),
    pytest.param(Body(as_json({"code": 123456})), id="number-not-string"),
    pytest.param(Body(as_json({"code": None})), id="null-code"),
    pytest.param(Body(as_json({"code": ["123456"]})), id="list-code"),
    pytest.param(Body(as_json({"code": {"123456": True}})), id="object-code"),
    pytest.param(Body(b'{"code": ' + b"[" * 1900 + b"]" * 1900 + b"}"), id="deeply-nested-code"),
]


@dataclass(frozen=True)
class Form:
    """A form post; ``TOKEN_PLACEHOLDER`` in ``content`` becomes the session's CSRF token."""

    content: str
    content_type: str | None = "application/x-www-form-urlencoded"
    streamed: bool = False

    def request(self, token: str) -> dict[str, Any]:
        content = self.content.replace(TOKEN_PLACEHOLDER, token).encode()
        return Body(content, self.content_type, self.streamed).request()


def form(**fields: str) -> str:
    return urlencode({"csrf_token": TOKEN_PLACEHOLDER, **fields})


def multipart(*parts: str, boundary: str = "b0undary") -> str:
    return "".join(f"--{boundary}\r\n{part}\r\n" for part in parts) + f"--{boundary}--\r\n"


TOKEN_PART = f'Content-Disposition: form-data; name="csrf_token"\r\n\r\n{TOKEN_PLACEHOLDER}'
FILE_PART = 'Content-Disposition: form-data; name="f"; filename="a.txt"\r\n\r\nx'
# Every field a form could read, well formed.
FIELDS = {"phone": MOBILE, "code": "123456"}

# (form, status): refused by every form before any field is read.
BAD_FORM_ENVELOPES = [
    pytest.param(Form(form(**FIELDS, pad="x" * 10_240)), 413, id="ten-kb-form"),
    pytest.param(Form(form(**FIELDS, pad="x" * 10_240), streamed=True), 400, id="ten-kb-streamed"),
    pytest.param(
        Form(json.dumps({"csrf_token": TOKEN_PLACEHOLDER, **FIELDS}), "application/json"),
        415,
        id="json-content-type",
    ),
    pytest.param(Form(form(**FIELDS), "text/plain"), 415, id="text-plain"),
    pytest.param(Form(form(**FIELDS), None), 415, id="no-content-type"),
    pytest.param(
        Form(multipart(TOKEN_PART, FILE_PART), "multipart/form-data; boundary=b0undary"),
        400,
        id="multipart-with-a-file",
    ),
    pytest.param(
        Form(multipart(TOKEN_PART), "multipart/form-data"), 400, id="multipart-without-boundary"
    ),
    pytest.param(Form(form(**{f"field{i}": "1" for i in range(20)})), 400, id="twenty-one-fields"),
]

# Forms whose code cannot be a code: shown again with a message, no attempt counted.
BAD_FORM_CODES = [
    pytest.param(Form(form()), id="no-code-field"),
    pytest.param(Form(form(code="")), id="empty-code"),
    pytest.param(Form(form(code="12345")), id="five-digits"),
    pytest.param(Form(form(code="1234567")), id="seven-digits"),
    pytest.param(Form(form(code="abcdef")), id="letters"),
    pytest.param(Form(form(code="      ")), id="spaces-only"),
    pytest.param(Form(form(code="123\x00456")), id="nul-inside"),
    pytest.param(Form(form(code=FULL_WIDTH_DIGITS)), id="full-width-digits"),
    pytest.param(Form(form(code="1" * 2000)), id="overlong-code"),
    pytest.param(Form(f"csrf_token={TOKEN_PLACEHOLDER}&code=%zz%ff%00"), id="bad-percent-escapes"),
]

# Query strings of a site's security log (GET sites/{site}/events) that are no filter and no
# page: each refused with a 400 (code), before the log or the directory is read. Raw, as a
# client could send them: percent-escapes of no UTF-8, NULs, line breaks, floods.
BAD_EVENT_QUERIES = [
    pytest.param("kind=verifed", "invalid_input", id="misspelt-kind"),
    pytest.param("kind=VERIFIED", "invalid_input", id="upper-case-kind"),
    pytest.param("kind=verified%00", "invalid_input", id="kind-nul"),
    pytest.param("kind=" + "verified," * 3, "invalid_input", id="kinds-comma-separated"),
    pytest.param("kind[]=verified", "invalid_input", id="kind-brackets"),
    pytest.param("member=%00", "invalid_input", id="member-nul"),
    pytest.param("member=a%0d%0ab", "invalid_input", id="member-crlf"),
    pytest.param("member=" + "m" * 256, "invalid_input", id="member-overlong"),
    pytest.param("since=%EF%BC%92027-01-15T08:00:00Z", "invalid_input", id="since-full-width"),
    pytest.param("since=2027-01-15T08:00:00%2B24:00", "invalid_input", id="since-offset-24h"),
    pytest.param("since=2027-02-30T08:00:00Z", "invalid_input", id="since-february-30"),
    pytest.param("until=9999-99-99T99:99:99Z", "invalid_input", id="until-nines"),
    pytest.param("until=" + "1" * 5000, "invalid_input", id="until-flood"),
    pytest.param("since=2027-01-15T08:00:00.1234567Z", "invalid_input", id="since-nanoseconds"),
    pytest.param("limit=%EF%BC%95", "invalid_input", id="limit-full-width"),
    pytest.param("limit=1e2", "invalid_input", id="limit-exponent"),
    pytest.param("limit=%2B5", "invalid_input", id="limit-plus"),
    pytest.param("limit=%205", "invalid_input", id="limit-space"),
    pytest.param("limit=0x10", "invalid_input", id="limit-hex"),
    pytest.param("limit=" + "9" * 400, "invalid_input", id="limit-400-digits"),
    pytest.param("limit=1&limit=1", "invalid_input", id="limit-twice"),
    pytest.param("cursor=1&cursor=1", "invalid_input", id="cursor-twice"),
    pytest.param("%00=1", "invalid_input", id="parameter-named-nul"),
    pytest.param("&".join(f"p{i}=1" for i in range(1000)), "invalid_input", id="thousand-params"),
    pytest.param("cursor=", "invalid_cursor", id="cursor-empty"),
    pytest.param("cursor=" + "A" * 32, "invalid_cursor", id="cursor-made-up"),
    pytest.param("cursor=" + "%00" * 32, "invalid_cursor", id="cursor-nuls"),
    pytest.param("cursor=" + "A" * 10_000, "invalid_cursor", id="cursor-flood"),
    pytest.param("cursor=AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA%3D", "invalid_cursor", id="cursor-padded"),
]
