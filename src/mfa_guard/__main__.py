"""``python -m mfa_guard``: the ``mfa-guard`` command."""

from __future__ import annotations

import sys

from mfa_guard.cli import main

if __name__ == "__main__":
    sys.exit(main())
