"""The pages' own scripts, served by the mount at ``{mount}/static/<name>``: no CDN, and no
inline script or event handler on any page, so that a Content-Security-Policy of
``script-src 'self'`` lets them run. A page links each with its digest in the URL
(``?v=``): browsers keep that URL for a year, and an upgrade changes it."""

from __future__ import annotations

import functools
import hashlib
from dataclasses import dataclass
from importlib import resources

from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response

# The files of ``mfa_guard/web/static`` a page may link; nothing else is served.
SCRIPTS = ("webauthn.js", "countdown.js")
# A year, in seconds: a versioned URL never changes its content.
MAX_AGE = 365 * 24 * 3600
MEDIA_TYPE = "text/javascript; charset=utf-8"


@dataclass(frozen=True, slots=True)
class Asset:
    body: bytes
    # The first 16 hex digits of the body's SHA-256: the URL's version and the ETag.
    digest: str

    @property
    def etag(self) -> str:
        return f'"{self.digest}"'


@functools.cache
def assets() -> dict[str, Asset]:
    """Each script, read once from the package."""
    folder = resources.files("mfa_guard.web").joinpath("static")
    found = {}
    for name in SCRIPTS:
        body = folder.joinpath(name).read_bytes()
        found[name] = Asset(body, hashlib.sha256(body).hexdigest()[:16])
    return found


def asset_urls(base: str) -> dict[str, str]:
    """Each script's URL under the mount ``base``, by its name without ``.js``."""
    return {
        name.removesuffix(".js"): f"{base}/static/{name}?v={asset.digest}"
        for name, asset in assets().items()
    }


async def serve_asset(request: Request) -> Response:
    """A script of :data:`SCRIPTS`: cached for a year at its versioned URL, revalidated at any
    other (a page cached before an upgrade still gets the script that works with it, once)."""
    asset = assets().get(str(request.path_params["name"]))
    if asset is None:
        return PlainTextResponse("Not Found", 404, headers={"Cache-Control": "no-store"})
    versioned = request.query_params.get("v") == asset.digest
    headers = {
        "Cache-Control": f"public, max-age={MAX_AGE}, immutable" if versioned else "no-cache",
        "ETag": asset.etag,
        "X-Content-Type-Options": "nosniff",
    }
    if asset.etag in request.headers.get("if-none-match", ""):
        return Response(status_code=304, headers=headers)
    return Response(asset.body, media_type=MEDIA_TYPE, headers=headers)
