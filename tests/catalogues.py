"""The rules every catalogue is held to, the kit's (tests/web/test_i18n.py) and the demo's
(tests/web/test_demo_catalogue.py): every msgid translated in every shipped language, with all
its plural forms and none fuzzy; each translation with the placeholders of its English; the
compiled ``.mo`` made from the ``.po`` as it is."""

from __future__ import annotations

import io
import re
from collections.abc import Iterable, Sequence
from pathlib import Path

from babel.messages.catalog import Catalog
from babel.messages.mofile import write_mo
from babel.messages.pofile import read_po

# The languages that ship besides English (the msgids' own): a new one is added here, to the
# `languages` setting's default and to both catalogues (CONTRIBUTING.md).
SHIPPED = ["ar", "de", "es", "fr", "it", "ja", "nl", "pl", "pt_BR", "zh_CN"]
PLACEHOLDER = re.compile(r"%\((\w+)\)[sd]|%[sd]")


def read_catalogue(path: Path, language: str) -> Catalog:
    with path.open("rb") as file:
        return read_po(file, locale=language)


def placeholders(text: str) -> set[str]:
    return {match.group(0) for match in PLACEHOLDER.finditer(text)}


def forms_of(string: str | Sequence[str] | None) -> list[str]:
    """A translation's forms: one for a message, one for each plural form of a plural."""
    return [string] if isinstance(string, str) else list(string or [""])


def untranslated(
    catalog: Catalog, msgids: Iterable[str | tuple[str, ...] | list[str]]
) -> list[str]:
    """The msgids (singular) that ``catalog`` lacks, leaves empty, marks fuzzy, or gives fewer
    or more plural forms than its language has."""
    missing = []
    for msgid in msgids:
        message = catalog.get(msgid)
        string = None if message is None else message.string
        strings = forms_of(string)
        plural_forms_missing = not isinstance(string, str) and len(strings) != catalog.num_plurals
        if message is None or message.fuzzy or not all(strings) or plural_forms_missing:
            missing.append(msgid if isinstance(msgid, str) else msgid[0])
    return missing


def wrong_placeholders(catalog: Catalog) -> list[str]:
    """The msgids whose translation has other placeholders than the English: ``%(count)s`` in
    the English is ``%(count)s`` in the translation, no more and no less; a plural's forms each
    use only the message's, and its last (the general) form all of them (a language may say
    "one" for the count in its singular form, as English does not). Babel's own checks
    (python-format) are added. A message not translated yet has no placeholders to keep
    (:func:`untranslated` finds it)."""
    wrong = []
    for message in catalog:
        if not message.id or not any(forms_of(message.string)):
            continue
        if isinstance(message.id, str):
            if placeholders(str(message.string)) != placeholders(message.id):
                wrong.append(message.id)
            continue
        allowed = placeholders(message.id[0]) | placeholders(message.id[1])
        forms = forms_of(message.string)
        if any(not placeholders(form) <= allowed for form in forms) or placeholders(
            forms[-1]
        ) != placeholders(message.id[1]):
            wrong.append(message.id[0])
    wrong.extend(
        f"{message.id!r}: {error}" for message, errors in catalog.check() for error in errors
    )
    return wrong


def compiled(catalog: Catalog) -> bytes:
    """The ``.mo`` that ``pybabel compile`` makes of ``catalog`` (fuzzy messages left out)."""
    buffer = io.BytesIO()
    write_mo(buffer, catalog, use_fuzzy=False)
    return buffer.getvalue()
