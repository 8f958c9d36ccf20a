"""``mfa-guard``: operations from the command line."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from mfa_guard.crypto import generate_key


def _keygen(args: argparse.Namespace) -> int:
    print(generate_key())
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="mfa-guard", description="mfa_guard operations.")
    commands = parser.add_subparsers(dest="command", required=True)
    keygen = commands.add_parser(
        "keygen",
        help="print a new Fernet key for MFA_GUARD_ENCRYPTION_KEYS",
        description=(
            "Print a new Fernet key. To rotate, put it first in MFA_GUARD_ENCRYPTION_KEYS and "
            "keep the old keys after it."
        ),
    )
    keygen.set_defaults(run=_keygen)
    args = parser.parse_args(argv)
    result: int = args.run(args)
    return result


if __name__ == "__main__":
    sys.exit(main())
