"""The demo's own forms: each post must come from this site (``Origin``, ``Sec-Fetch-Site``) and
carry the session's CSRF token, as the kit's pages do. Refusals are pages, never a 500, in the
page's language (their heading and message are msgids of the demo's catalogue)."""

from __future__ import annotations

import hmac
import secrets
from typing import Any

from starlette.datastructures import FormData
from starlette.requests import Request

from examples.inbox.i18n import N_

CSRF_SESSION_KEY = "inbox_csrf"
MAX_FIELDS = 8
REFUSED = N_("Request refused")


class FormRefused(Exception):
    """A post refused before anything happens: answered with the demo's error page, which
    translates ``heading`` and ``message`` (msgids)."""

    def __init__(self, status_code: int, heading: str, message: str) -> None:
        super().__init__(message)
        self.status_code = status_code
        self.heading = heading
        self.message = message


def csrf_token(session: Any) -> str:
    """This session's token for the demo's forms, created on first use."""
    token = session.get(CSRF_SESSION_KEY)
    if not isinstance(token, str) or len(token) < 32:
        token = secrets.token_urlsafe(32)
        session[CSRF_SESSION_KEY] = token
    return token


def same_origin(request: Request) -> bool:
    """Whether a post comes from this site. A browser's ``Sec-Fetch-Site`` must not name another
    site, and its ``Origin`` must be this app's own (scheme, host and port). A client that sends
    neither (curl, a server) is no browser another site's page could have made post."""
    headers = request.headers
    if headers.get("sec-fetch-site") not in (None, "same-origin", "none"):
        return False
    origin = headers.get("origin")
    if origin is None:
        return True
    host = headers.get("host", "").lower()
    return bool(host) and origin.lower() == f"{request.url.scheme}://{host}"


def field(form: FormData, name: str) -> str:
    value = form.get(name)
    return value if isinstance(value, str) else ""


async def checked_form(request: Request) -> FormData:
    """The posted form, once it has passed the CSRF checks (the origin and the token)."""
    if not same_origin(request):
        raise FormRefused(403, REFUSED, N_("Cross-site form posts are not allowed."))
    try:
        form = await request.form(max_files=0, max_fields=MAX_FIELDS)
    except Exception as exc:  # python-multipart raises several types on malformed bodies
        raise FormRefused(400, REFUSED, N_("The form could not be read.")) from exc
    expected = request.session.get(CSRF_SESSION_KEY)
    sent = field(form, "csrf_token")
    if not (
        isinstance(expected, str)
        and sent
        and hmac.compare_digest(expected.encode("utf-8"), sent.encode("utf-8"))
    ):
        raise FormRefused(
            403,
            REFUSED,
            N_(
                "This form has expired or did not come from this site. Go back, reload the "
                "page and try again."
            ),
        )
    return form
