"""``python -m bench.server VARIANT PORT``: the bench app (bare or guarded) in one uvicorn
worker on 127.0.0.1, without access log."""

from __future__ import annotations

import sys

import uvicorn

from bench.apps import Variant, build


def main() -> None:
    variant, port = Variant(sys.argv[1]), int(sys.argv[2])
    bench = build(variant)
    uvicorn.run(
        bench.app,
        host="127.0.0.1",
        port=port,
        workers=1,
        log_level="warning",
        access_log=False,
        lifespan="off",
    )


if __name__ == "__main__":
    main()
