"""The ``next=`` check: only ever a same-origin path (ASVS 5.1.5)."""

from __future__ import annotations

from urllib.parse import unquote, urlsplit

MAX_NEXT_LENGTH = 2048


def safe_next(candidate: str | None, default: str) -> str:
    """``candidate`` if it is a local absolute path, else ``default``.

    >>> safe_next("/inbox?tab=2", "/")
    '/inbox?tab=2'
    >>> [safe_next(v, "/") for v in ("//evil.test", "/\\\\evil.test", "https:evil.test")]
    ['/', '/', '/']
    """
    if not candidate or len(candidate) > MAX_NEXT_LENGTH:
        return default
    # Checked as given and once decoded, so an encoded "//", backslash or CRLF cannot slip
    # through a proxy or framework that decodes the path again.
    for form in (candidate, unquote(candidate)):
        if not _is_local_path(form):
            return default
    return candidate


def _is_local_path(value: str) -> bool:
    if not value.startswith("/") or value.startswith(("//", "/\\")):
        return False
    # Browsers treat a backslash like "/" and drop tabs and newlines inside URLs.
    if "\\" in value or any(ord(ch) < 0x20 or ord(ch) == 0x7F for ch in value):
        return False
    parts = urlsplit(value)
    return not (parts.scheme or parts.netloc)
