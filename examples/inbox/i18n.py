"""The demo's words in the language the kit's pages speak for the same request
(``guard.page_language``: the browser's ``Accept-Language``, among the guard's ``languages``).

The demo's own sentences have a catalogue of their own, domain ``inbox`` under ``locale/``,
mapped by ``babel.cfg`` next to this file; ``make messages`` runs Babel's three commands over it
(CONTRIBUTING.md)::

    pybabel extract -F examples/inbox/babel.cfg -k N_ \
        -o examples/inbox/locale/inbox.pot examples/inbox
    pybabel update -D inbox -i examples/inbox/locale/inbox.pot -d examples/inbox/locale
    pybabel compile -D inbox -d examples/inbox/locale

The kit's messages the demo shows (a refusal of the kit's) are the kit's msgids: they are
translated by the kit's catalogue (:func:`mfa_guard.i18n.translations`).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import jinja2
from babel.dates import format_timedelta
from babel.support import NullTranslations, Translations
from starlette.requests import HTTPConnection

from mfa_guard import Denied, MFAGuard
from mfa_guard.i18n import direction, human_date, translations

LOCALE_DIR = Path(__file__).resolve().parent / "locale"
DOMAIN = "inbox"
# The msgids' language: no catalogue.
ENGLISH = "en"


def N_(message: str) -> str:
    """Marks a message for extraction (``pybabel extract -k N_``); it is translated where a
    page shows it."""
    return message


@functools.cache
def catalogue(language: str) -> NullTranslations:
    """The demo's catalogue in ``language`` (none for English, or a language it lacks)."""
    if language == ENGLISH:
        return NullTranslations()
    return Translations.load(str(LOCALE_DIR), [language], DOMAIN)


@dataclass(frozen=True, slots=True)
class PageLanguage:
    """A page's language (``fr``, ``pt_BR``): the demo's sentences in it, the kit's refusals in
    it, and its dates."""

    tag: str

    @property
    def html_lang(self) -> str:
        """For ``<html lang>``: ``pt-BR``."""
        return self.tag.replace("_", "-")

    @property
    def dir(self) -> str:
        return direction(self.tag)

    def gettext(self, message: str, **values: str | int) -> str:
        """``message`` (a msgid of the demo's) in this language, its ``%(name)s`` filled in."""
        text = catalogue(self.tag).gettext(message)
        return text % values if values else text

    def ngettext(self, singular: str, plural: str, count: int, **values: str | int) -> str:
        """The form of ``count`` (``%(count)s`` and the other ``%(name)s`` filled in)."""
        return catalogue(self.tag).ngettext(singular, plural, count) % {"count": count, **values}

    def refusal(self, denied: Denied, now: float) -> str:
        """A refusal of the kit's, in the kit's words for this language."""
        return denied.message_at(now, translations(self.tag))

    def date_time(self, timestamp: float) -> str:
        """``Jan 16, 2027, 08:00 UTC``, ``16 janv. 2027, 08:00 UTC``: as the kit writes it."""
        return human_date(timestamp, self.tag, with_time=True)

    def waited(self, minutes: int) -> str:
        """How long a visitor has waited: ``2 min``, ``3 hr``."""
        return format_timedelta(timedelta(minutes=minutes), format="short", locale=self.tag)


def page_language(guard: MFAGuard, conn: HTTPConnection) -> PageLanguage:
    """The language the kit's pages speak for this request."""
    return PageLanguage(guard.page_language(conn.scope))


@jinja2.pass_context
def _gettext(context: jinja2.runtime.Context, message: str) -> str:
    return catalogue(context["lang"].tag).gettext(message)


@jinja2.pass_context
def _ngettext(context: jinja2.runtime.Context, singular: str, plural: str, n: int) -> str:
    return catalogue(context["lang"].tag).ngettext(singular, plural, n)


@jinja2.pass_context
def _date_time(context: jinja2.runtime.Context, timestamp: float) -> str:
    language: PageLanguage = context["lang"]
    return language.date_time(timestamp)


def install(env: jinja2.Environment) -> None:
    """``{% trans %}`` (trimmed) and ``_()`` in the demo's templates, each render in its
    ``lang`` (a :class:`PageLanguage`), and the ``date_time`` filter of a timestamp."""
    env.add_extension("jinja2.ext.i18n")
    env.policies["ext.i18n.trimmed"] = True
    env.install_gettext_callables(  # type: ignore[attr-defined]
        _gettext, _ngettext, newstyle=True
    )
    env.filters["date_time"] = _date_time
