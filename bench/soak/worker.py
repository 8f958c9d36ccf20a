"""``python -m bench.soak.worker PORT``: one worker of the soak's app (:mod:`bench.soak.app`,
built from the environment) in uvicorn on 127.0.0.1, without access log."""

from __future__ import annotations

import sys

import uvicorn

# Longer than the load generator keeps an idle connection (bench.soak.load): the client always
# drops it first, so no request meets a connection the server is closing.
KEEP_ALIVE_SECONDS = 30


def main() -> None:
    uvicorn.run(
        "bench.soak.app:create_app",
        factory=True,
        host="127.0.0.1",
        port=int(sys.argv[1]),
        log_level="warning",
        access_log=False,
        timeout_keep_alive=KEEP_ALIVE_SECONDS,
    )


if __name__ == "__main__":
    main()
