"""The pages' language: English or a translation from ``locale/``: the app's choice for the
user when it has one (``MFAGuard(language=...)``), else the request's ``Accept-Language``,
among the ``languages`` setting. The messages the pages show (refusals, notices) are
translated at render time, their English text being the msgid.

The catalogues follow Babel's standard workflow, mapped by ``babel.cfg`` at the root of the
checkout (``make messages`` runs the three commands)::

    pybabel extract -F babel.cfg -o src/mfa_guard/web/locale/messages.pot src/mfa_guard
    pybabel update -i src/mfa_guard/web/locale/messages.pot -d src/mfa_guard/web/locale
    pybabel compile -d src/mfa_guard/web/locale

The refusal table's messages (``mfa_guard/errors.py``) are no gettext calls: babel.cfg maps
that file to :func:`extract_refusals`. ``python -m mfa_guard.web.i18n`` runs the same.
"""

from __future__ import annotations

import contextlib
import functools
import re
import sys
from collections.abc import Callable, Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

import jinja2
from babel.core import Locale, UnknownLocaleError, negotiate_locale
from babel.dates import format_skeleton
from babel.lists import format_list
from babel.messages.catalog import Catalog
from babel.messages.extract import extract_from_dir
from babel.support import NullTranslations, Translations
from starlette.requests import Request
from starlette.types import Scope

if TYPE_CHECKING:
    from mfa_guard.devices import Browser

LOCALE_DIR = Path(__file__).parent / "locale"
DOMAIN = "messages"
DEFAULT_LANGUAGE = "en"
# Accept-Language entries beyond this are ignored: a header is no reason to loop long.
MAX_LANGUAGE_RANGES = 16
# The app's choice of language for the signed-in user (a setting of their profile), read from
# the request's scope: a language tag (``de``, ``pt_BR``, ``pt-BR``), or None to follow the
# browser's ``Accept-Language``.
LanguageGetter = Callable[[Scope], str | None]
# The checkout's root, where babel.cfg maps the sources (src/mfa_guard/web/i18n.py: three up).
ROOT = Path(__file__).resolve().parents[3]


def N_(message: str) -> str:
    """Marks a message for extraction; the page translates it when it renders."""
    return message


def available_languages() -> list[str]:
    """English and every language with a compiled catalog."""
    found = sorted(
        path.parent.parent.name for path in LOCALE_DIR.glob(f"*/LC_MESSAGES/{DOMAIN}.mo")
    )
    return [DEFAULT_LANGUAGE, *found]


def preferred_languages(header: str) -> list[str]:
    """The Accept-Language ranges, best first (``fr-FR,fr;q=0.9,en;q=0.8``)."""
    ranked: list[tuple[float, int, str]] = []
    for index, part in enumerate(header.split(",")[:MAX_LANGUAGE_RANGES]):
        tag, _, params = part.strip().partition(";")
        quality = 1.0
        if params.strip().startswith("q="):
            try:
                quality = float(params.strip()[2:])
            except ValueError:
                quality = 0.0
        if tag and tag != "*" and quality > 0:
            ranked.append((-quality, index, tag.replace("-", "_")))
    return [tag for _, _, tag in sorted(ranked)]


def choose_language(header: str, languages: list[str]) -> str:
    available = [lang for lang in languages if lang in available_languages()]
    if not available:
        return DEFAULT_LANGUAGE
    chosen = negotiate_locale(preferred_languages(header), available)
    if chosen is None:
        return DEFAULT_LANGUAGE if DEFAULT_LANGUAGE in available else available[0]
    # Babel matches case-insensitively and returns the header's spelling: ours is the key.
    return next(lang for lang in available if lang.lower() == chosen.lower())


def request_language(
    request: Request, languages: list[str], chosen: LanguageGetter | None = None
) -> str:
    """The page's language: the app's choice for the user (``chosen``) when it is one of
    ``languages`` the kit has, else the best of the browser's ``Accept-Language``."""
    if chosen is not None:
        wanted = chosen(request.scope)
        if wanted:
            available = [lang for lang in languages if lang in available_languages()]
            match = negotiate_locale([wanted.replace("-", "_")], available)
            if match is not None:
                return next(lang for lang in available if lang.lower() == match.lower())
    return choose_language(request.headers.get("accept-language", ""), languages)


@functools.cache
def direction(language: str) -> str:
    """``rtl`` for a language written right to left (Arabic), else ``ltr``: the page's
    ``dir``."""
    order = Locale.parse(language).character_order
    return "rtl" if order == "right-to-left" else "ltr"


@functools.cache
def translations(language: str) -> NullTranslations:
    """The kit's catalogue in ``language`` (English: none, the msgids are English): what
    translates the kit's own messages, such as a refusal's (``denied.text(translations(lang))``)."""
    if language == DEFAULT_LANGUAGE:
        return NullTranslations()
    return Translations.load(str(LOCALE_DIR), [language], DOMAIN)


def _locale(language: str) -> Locale:
    try:
        return Locale.parse(language)
    except (ValueError, UnknownLocaleError):
        return Locale.parse(DEFAULT_LANGUAGE)


def human_date(moment: datetime | float, language: str, *, with_time: bool = False) -> str:
    """A date (or a timestamp) as ``language`` writes it ("Mar 5, 2025", "5 mars 2025");
    ``with_time`` adds the time of day, in UTC ("Mar 5, 2025, 14:07 UTC"): the dates of the
    kit's pages."""
    if not isinstance(moment, datetime):
        moment = datetime.fromtimestamp(moment, UTC)
    locale = _locale(language)
    day = format_skeleton("yMMMd", moment, tzinfo=UTC, locale=locale)
    if not with_time:
        return day
    time_of_day = format_skeleton("Hm", moment, tzinfo=UTC, locale=locale)
    return f"{locale.datetime_formats['medium'].format(time_of_day, day)} UTC"


# A browser's name, its parts being ua-parser's names (not translated): "Firefox on Ubuntu",
# "Mobile Safari on iOS (iPhone)".
_UNKNOWN_BROWSER = N_("Unknown browser")
_BROWSER_ON_SYSTEM = N_("%(browser)s on %(system)s")
_WITH_HARDWARE = N_("%(name)s (%(hardware)s)")


def browser_name(
    browser: Browser, language: str, *, part: Callable[[str], str] = lambda name: name
) -> str:
    """A browser (a security log entry's ``browser``) as ``language`` names it: "Firefox sous
    Ubuntu", "Chrome unter Windows", "Unknown browser" in English. ``part`` wraps each name
    taken from the User-Agent (the kit's right-to-left pages isolate them in ``<bdi>``)."""
    gettext = translations(language).gettext
    name = part(browser.family) if browser.family else gettext(_UNKNOWN_BROWSER)
    if browser.system:
        name = gettext(_BROWSER_ON_SYSTEM) % {"browser": name, "system": part(browser.system)}
    if browser.hardware:
        name = gettext(_WITH_HARDWARE) % {"name": name, "hardware": part(browser.hardware)}
    return name


def human_list(names: Sequence[str], language: str) -> str:
    """Names as one phrase of ``language`` ("Acme and Globex", "Acme et Globex",
    "Acme、Globex")."""
    return format_list(list(names), locale=_locale(language))


@jinja2.pass_context
def _gettext(context: jinja2.runtime.Context, message: str) -> str:
    return translations(context["lang"]).gettext(message)


@jinja2.pass_context
def _ngettext(context: jinja2.runtime.Context, singular: str, plural: str, n: int) -> str:
    return translations(context["lang"]).ngettext(singular, plural, n)


def install(env: jinja2.Environment) -> None:
    """Adds ``{% trans %}`` and ``_()`` to ``env``; each render translates into its ``lang``."""
    env.add_extension("jinja2.ext.i18n")
    env.policies["ext.i18n.trimmed"] = True
    env.install_gettext_callables(  # type: ignore[attr-defined]
        _gettext, _ngettext, newstyle=True
    )


# -- the catalog ---------------------------------------------------------------------------


def extract_refusals(
    fileobj: IO[bytes],
    keywords: object,
    comment_tags: object,
    options: dict[str, Any],
) -> Iterator[tuple[int, str | None, str | tuple[str, str], list[str]]]:
    """A Babel extraction method (babel.cfg's ``[extractors]``: ``refusals =
    mfa_guard.web.i18n:extract_refusals``): each row of the refusal table, at the line of its
    name in ``fileobj``."""
    text = fileobj.read().decode("utf-8")
    lines = {
        match.group(1): text.count("\n", 0, match.start()) + 1
        for match in re.finditer(r"^    ([A-Z_]+) = Refusal\(", text, re.MULTILINE)
    }
    for name, message in _refusal_rows():
        yield lines.get(name, 0), "ngettext" if isinstance(message, tuple) else None, message, []


def _refusal_rows() -> Iterator[tuple[str, str | tuple[str, str]]]:
    from mfa_guard.errors import Reason

    for reason in Reason:
        row = reason.value
        yield reason.name, row.message if row.plural is None else (row.message, row.plural)


def extract(
    mapping: Path = ROOT / "babel.cfg",
    sources: Path = ROOT / "src" / "mfa_guard",
    domain: str = DOMAIN,
) -> Catalog:
    """Every msgid, as ``pybabel extract -F babel.cfg -k N_`` finds them (the templates'
    ``{% trans %}``, the pages' ``N_()``, the SMS wording, the refusals): for the tests, which
    hold each catalogue to it. ``mapping`` and ``sources``: another map over other sources
    (the demo's, examples/inbox/babel.cfg over examples/inbox)."""
    from babel.messages import frontend
    from babel.messages.extract import DEFAULT_KEYWORDS

    parse = getattr(frontend, "parse_mapping_cfg", None) or frontend.parse_mapping
    with mapping.open(encoding="utf-8") as file:
        method_map, options_map = parse(file)
    catalog = Catalog(project="mfa_guard", domain=domain)
    keywords = {**DEFAULT_KEYWORDS, "N_": None}
    for filename, lineno, message, _comments, context in extract_from_dir(
        str(sources), method_map, options_map, keywords=keywords
    ):
        catalog.add(message, locations=[(filename, lineno)], context=context)
    return catalog


def pybabel(*args: str) -> None:
    """One ``pybabel`` command, run in this process, from the checkout's root."""
    from babel.messages.frontend import CommandLineInterface

    CommandLineInterface().run(["pybabel", "--quiet", *args])  # type: ignore[no-untyped-call]


def babel_workflow() -> None:
    """``make messages``: extract (babel.cfg), update every catalogue, compile the ``.mo``
    files; the same commands a contributor types (see the module's docstring)."""
    locale = "src/mfa_guard/web/locale"
    pot = f"{locale}/{DOMAIN}.pot"
    with contextlib.chdir(ROOT):  # the catalogues' locations relative to the checkout
        pybabel(
            "extract",
            "-F",
            "babel.cfg",
            "-k",
            "N_",
            "--sort-output",
            "--project=mfa_guard",
            "-o",
            pot,
            "src/mfa_guard",
        )
        pybabel("update", "-i", pot, "-d", locale, "--no-fuzzy-matching", "--ignore-obsolete")
        pybabel("compile", "-d", locale)


if __name__ == "__main__":
    if not (ROOT / "babel.cfg").is_file():
        sys.exit("python -m mfa_guard.web.i18n works in a checkout (babel.cfg), not a wheel")
    babel_workflow()
