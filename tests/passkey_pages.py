"""What the tests of the passkey pages share: an app with passkeys on, and readers of the pages
(the CSRF token, the alert, the notice, the parts the script acts on)."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from html.parser import HTMLParser
from typing import Any

import httpx

from mfa_guard.testing.webauthn import SoftAuthenticator
from tests.apps import GuardedApp, build_app

API = "/mfa/api"
ORIGIN = "https://app.example.test"
PASSKEYS = {"rp_id": "app.example.test", "origins": [ORIGIN]}
USER = "solo@example.test"
TOKEN = re.compile(r'name="csrf_token" value="([^"]+)"')
ALERT = re.compile(r'<p class="error" role="alert" id="form-error">([^<]+)</p>')
NOTICE = re.compile(r'<p class="notice" role="status">([^<]+)</p>')


def passkey_app(**overrides: Any) -> GuardedApp:
    return build_app(webauthn=PASSKEYS, **overrides)


def csrf_of(page: httpx.Response) -> str:
    match = TOKEN.search(page.text)
    assert match, "the page carries a CSRF token"
    return match.group(1)


def alert_of(page: httpx.Response) -> str:
    match = ALERT.search(page.text)
    assert match, "the page says why"
    return match.group(1)


def notice_of(page: httpx.Response) -> str:
    match = NOTICE.search(page.text)
    assert match, "the page says what was done"
    return match.group(1)


async def add_key(
    client: httpx.AsyncClient, key: SoftAuthenticator, name: str | None = None
) -> dict[str, Any]:
    """Registers ``key`` through the JSON API, as the page's script does."""
    options = await client.post(f"{API}/webauthn/register/options", json={})
    assert options.status_code == 200, options.text
    body: dict[str, Any] = {"credential": key.create(options.json()["publicKey"], origin=ORIGIN)}
    if name is not None:
        body["name"] = name
    added = await client.post(f"{API}/webauthn/register", json=body)
    assert added.status_code == 200, added.text
    found: dict[str, Any] = added.json()
    return found


def security_key() -> SoftAuthenticator:
    """A key to plug in: not synced, over USB."""
    return SoftAuthenticator(transports=("usb",), attachment="cross-platform")


@dataclass
class Element:
    tag: str
    attrs: dict[str, str]
    text: str = ""


@dataclass
class PageParts(HTMLParser):
    """The elements of a page a test looks at: scripts (with their code), every attribute
    of every element, the authenticators' rows, and the forms."""

    scripts: list[Element] = field(default_factory=list)
    attributes: list[tuple[str, str, str]] = field(default_factory=list)
    rows: list[Element] = field(default_factory=list)
    forms: list[Element] = field(default_factory=list)

    def __post_init__(self) -> None:
        super().__init__(convert_charrefs=True)
        # Where text goes: the open script, or the heading and dates of the open row.
        self._into: Element | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        found = Element(tag, {name: value or "" for name, value in attrs})
        self.attributes += [(tag, name, value) for name, value in found.attrs.items()]
        if tag == "script":
            self.scripts.append(found)
            self._into = found
        elif tag == "li" and "data-authenticator" in found.attrs:
            self.rows.append(found)
        elif tag in ("h3", "dl") and self.rows and self.rows[-1].attrs.get("open") is None:
            self._into = self.rows[-1]
        elif tag == "form":
            self.forms.append(found)

    def handle_endtag(self, tag: str) -> None:
        if tag in ("script", "h3", "dl"):
            self._into = None
        elif tag == "li" and self.rows:
            self.rows[-1].attrs["open"] = "closed"

    def handle_data(self, data: str) -> None:
        if self._into is not None:
            self._into.text += data


def parts_of(page: httpx.Response) -> PageParts:
    parts = PageParts()
    parts.feed(page.text)
    parts.close()
    return parts


def rows_of(page: httpx.Response) -> list[tuple[str, str]]:
    """Each listed authenticator: its kind and its heading and dates, spaces folded."""
    return [(row.attrs["data-kind"], " ".join(row.text.split())) for row in parts_of(page).rows]


def ids_of(page: httpx.Response) -> list[str]:
    return [row.attrs["data-authenticator"] for row in parts_of(page).rows]


def passkey_form(page: httpx.Response) -> Element | None:
    return next((f for f in parts_of(page).forms if "data-webauthn" in f.attrs), None)


def inline_code(page: httpx.Response) -> list[str]:
    """Whatever a Content-Security-Policy without 'unsafe-inline' would block: a script with
    code of its own or without a source of the mount, an event handler attribute, a
    ``javascript:`` URL."""
    parts = parts_of(page)
    found = [
        f"<script {s.attrs}>{s.text[:40]}"
        for s in parts.scripts
        if s.text.strip() or not s.attrs.get("src", "").startswith("/mfa/static/")
    ]
    found += [f"<{tag} {name}>" for tag, name, _ in parts.attributes if name.startswith("on")]
    found += [
        f"<{tag} {name}={value}>"
        for tag, name, value in parts.attributes
        if value.strip().lower().startswith("javascript:")
    ]
    return found
