from __future__ import annotations

import time
from typing import Protocol


class Clock(Protocol):
    """Seconds since the epoch. Injected everywhere so tests never sleep."""

    def __call__(self) -> float: ...


def system_clock() -> float:
    """The time now, in seconds since the epoch: the default :class:`Clock`."""
    return time.time()
