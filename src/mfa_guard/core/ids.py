"""Ids that come from outside (a path, a form, the app): whether one can be an id at all."""

from __future__ import annotations

# User ids are the app's; the SQL stores hold up to 255 characters.
MAX_USER_ID = 255


def valid_id(value: str, longest: int) -> bool:
    """Whether ``value`` can be an id at all: one no store can hold (too long, a control
    character such as NUL, which PostgreSQL refuses) is no site, device or user, answered
    without a lookup."""
    return 0 < len(value) <= longest and value.isprintable()
