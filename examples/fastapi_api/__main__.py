"""``python -m examples.fastapi_api``: serve the API on http://127.0.0.1:$PORT (default 8000).

Its interactive documentation, the kit's endpoints included, is at ``/docs``.
"""

from __future__ import annotations

import logging
import os

import uvicorn

from examples.fastapi_api.app import DEMO_ACCOUNTS, DEMO_PASSWORD, create_app

HOST = "127.0.0.1"


def main() -> None:
    port = int(os.environ.get("PORT", "8000"))
    # Show mfa_guard's audit events (enrolled, verified, site_policy_changed, ...).
    logging.basicConfig(format="%(levelname)s:     %(name)s %(message)s")
    logging.getLogger("mfa_guard").setLevel(logging.INFO)
    base = f"http://{HOST}:{port}"
    print(f"Acme Inbox API on {base}/ (interactive docs: {base}/docs)")
    print("Accounts: " + ", ".join(DEMO_ACCOUNTS) + f"; password: {DEMO_PASSWORD}")
    print("Get a token:")
    print(
        f"  curl -s -X POST {base}/token -H 'Content-Type: application/json' "
        f"""-d '{{"email": "agent@acme.test", "password": "{DEMO_PASSWORD}"}}'"""
    )
    uvicorn.run(create_app(), host=HOST, port=port)


if __name__ == "__main__":
    main()
