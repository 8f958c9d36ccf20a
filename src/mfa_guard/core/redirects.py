"""The ``next=`` check: only ever a same-origin path (ASVS 5.1.5)."""

from __future__ import annotations

from urllib.parse import urlsplit

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
    if not candidate.startswith("/") or candidate.startswith(("//", "/\\")):
        return default
    # Browsers treat "\" like "/" and drop tabs and newlines inside URLs.
    if "\\" in candidate or any(ord(ch) < 0x20 or ord(ch) == 0x7F for ch in candidate):
        return default
    parts = urlsplit(candidate)
    if parts.scheme or parts.netloc:
        return default
    return candidate
