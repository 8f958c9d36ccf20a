"""``python -m examples.inbox``: serve the demo on http://127.0.0.1:$PORT (default 8000); passkeys
work at http://localhost:$PORT, where browsers offer them without TLS.

``INBOX_DATA_DIR`` moves the data folder (default ``examples/inbox/.data``): several processes
started with the same folder share the session secret and encryption key, so they serve one
site together (with MFA_GUARD_DATABASE_URL and MFA_GUARD_STORAGE_URI pointing at shared servers).
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import uvicorn

from examples.inbox.app import DEFAULT_PORT, DEMO_ACCOUNTS, DEMO_PASSWORD, PASSKEY_HOST, create_app
from examples.inbox.sites import DEMO_SITES, DemoSite

HOST = "127.0.0.1"


def _members(site: DemoSite) -> str:
    return ", ".join(f"{email} {role.value}" for email, role in site.members)


def main() -> None:
    port = int(os.environ.get("PORT") or DEFAULT_PORT)
    # Show mfa_guard's audit events (enrolled, verified, verification_failed, ...) in the console.
    logging.basicConfig(format="%(levelname)s:     %(name)s %(message)s")
    logging.getLogger("mfa_guard").setLevel(logging.INFO)
    data_dir = os.environ.get("INBOX_DATA_DIR")
    app = create_app(Path(data_dir) if data_dir else None)
    print(f"Acme Inbox demo on http://{HOST}:{port}/")
    print(f"Passkeys and security keys: at http://{PASSKEY_HOST}:{port}/ (not at {HOST})")
    print("Sign in with one of these accounts:")
    for email in DEMO_ACCOUNTS:
        print(f"  {email:<20} password: {DEMO_PASSWORD}")
    print("Sites: " + "; ".join(f"{site.name} ({_members(site)})" for site in DEMO_SITES))
    print(f"New operators of Acme sign up at http://{HOST}:{port}/signup")
    uvicorn.run(app, host=HOST, port=port)


if __name__ == "__main__":
    main()
