"""The pages' language: English or a translation from ``locale/``, chosen from the request's
``Accept-Language`` among the ``languages`` setting. The messages the pages show (refusals,
notices) are translated at render time, their English text being the msgid.

``python -m mfa_guard.web.i18n`` (``make messages``) extracts every msgid into
``locale/messages.pot``, merges it into each ``messages.po`` and compiles the ``.mo`` files the
package ships.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jinja2
from babel.core import negotiate_locale
from babel.messages.catalog import Catalog
from babel.messages.extract import extract_from_dir, extract_from_file
from babel.messages.mofile import write_mo
from babel.messages.pofile import read_po, write_po
from babel.support import NullTranslations, Translations
from starlette.requests import Request

LOCALE_DIR = Path(__file__).parent / "locale"
TEMPLATE_DIR = Path(__file__).parent / "templates"
DOMAIN = "messages"
DEFAULT_LANGUAGE = "en"
# Accept-Language entries beyond this are ignored: a header is no reason to loop long.
MAX_LANGUAGE_RANGES = 16


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


def request_language(request: Request, languages: list[str]) -> str:
    return choose_language(request.headers.get("accept-language", ""), languages)


@functools.cache
def translations(language: str) -> NullTranslations:
    if language == DEFAULT_LANGUAGE:
        return NullTranslations()
    return Translations.load(str(LOCALE_DIR), [language], DOMAIN)


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


def _refusal_messages() -> Iterator[tuple[str, str | tuple[str, str]]]:
    """The refusal table's messages (written in Python, shown by the pages): (source, msgid),
    a (singular, plural) pair for a message said by a count."""
    from mfa_guard.errors import Reason

    for reason in Reason:
        row = reason.value
        message = row.message if row.plural is None else (row.message, row.plural)
        yield f"mfa_guard/errors.py ({reason.name})", message


def extract() -> Catalog:
    """Every msgid: the templates' ``{% trans %}``, the pages' ``N_()``, the refusals."""
    catalog = Catalog(project="mfa_guard", domain=DOMAIN)
    options: dict[str, Any] = {"trimmed": "true", "extensions": "jinja2.ext.i18n"}
    method_map = [("**.html", "jinja2.ext:babel_extract")]
    for filename, lineno, message, _comments, context in extract_from_dir(
        str(TEMPLATE_DIR), method_map, {"**.html": options}
    ):
        catalog.add(message, locations=[(f"templates/{filename}", lineno)], context=context)
    for filename, lineno, message, _comments, context in extract_from_dir(
        str(Path(__file__).parent),
        [("pages/*.py", "python")],
        keywords={"N_": None, "ngettext": (1, 2)},
    ):
        catalog.add(message, locations=[(filename, lineno)], context=context)
    # What is said about SMS codes (mfa_guard.core.sms_wording): the pages and the text itself.
    wording = Path(__file__).parent.parent / "core" / "sms_wording.py"
    for lineno, message, _comments, context in extract_from_file(
        "python", str(wording), keywords={"gettext": None, "ngettext": (1, 2)}
    ):
        catalog.add(message, locations=[("mfa_guard/core/sms_wording.py", lineno)], context=context)
    for source, text in _refusal_messages():
        catalog.add(text, locations=[(source, 0)])
    return catalog


def update_catalogs() -> None:
    template = extract()
    with (LOCALE_DIR / f"{DOMAIN}.pot").open("wb") as file:
        write_po(file, template, omit_header=False, sort_output=True)
    for po_path in LOCALE_DIR.glob(f"*/LC_MESSAGES/{DOMAIN}.po"):
        with po_path.open("rb") as file:
            catalog = read_po(file, locale=po_path.parent.parent.name)
        catalog.update(template, no_fuzzy_matching=True)
        with po_path.open("wb") as file:
            write_po(file, catalog, sort_output=True, ignore_obsolete=True)
        with po_path.with_suffix(".mo").open("wb") as file:
            write_mo(file, catalog)


if __name__ == "__main__":
    update_catalogs()
