"""The demo's own catalogue (domain ``inbox``, examples/inbox/locale) held to the kit's rules:
its template holds every msgid the demo's pages say, each shipped language has a catalogue
made from it, every msgid translated (all its plural forms, none fuzzy) with the placeholders
of its English, and the compiled ``.mo`` made from the ``.po`` as it is."""

from __future__ import annotations

from pathlib import Path

import pytest
from babel.messages.catalog import Catalog
from babel.messages.pofile import read_po
from examples.inbox import i18n as demo_i18n

from mfa_guard.web import i18n
from tests.catalogues import (
    SHIPPED,
    compiled,
    read_catalogue,
    untranslated,
    wrong_placeholders,
)

DEMO = Path(demo_i18n.__file__).resolve().parent
LOCALE = demo_i18n.LOCALE_DIR
TEMPLATE = LOCALE / f"{demo_i18n.DOMAIN}.pot"


def po_of(language: str) -> Path:
    return LOCALE / language / "LC_MESSAGES" / f"{demo_i18n.DOMAIN}.po"


def catalogue_of(language: str) -> Catalog:
    return read_catalogue(po_of(language), language)


def msgids(catalog: Catalog) -> set[str]:
    """The singular msgids: a plural's is its first."""
    return {
        message.id if isinstance(message.id, str) else message.id[0]
        for message in catalog
        if message.id
    }


def template() -> Catalog:
    with TEMPLATE.open("rb") as file:
        return read_po(file)


def test_the_template_holds_every_message_the_demo_says() -> None:
    """``pybabel extract -F examples/inbox/babel.cfg -k N_`` finds what the .pot holds: no
    sentence added to a page or a template without ``make messages``."""
    said = i18n.extract(DEMO / "babel.cfg", DEMO, domain=demo_i18n.DOMAIN)
    assert msgids(said) == msgids(template()), "run `make messages`"
    # The extraction sees the demo's pages, templates and Python alike.
    assert {"Sign in to %(issuer)s", "Team of %(site)s", "passkey", "Request refused"} <= (
        msgids(said)
    )


def test_every_shipped_language_has_a_catalogue_of_the_demo() -> None:
    made = sorted(path.parent.parent.name for path in LOCALE.glob("*/LC_MESSAGES/*.po"))
    assert made == sorted(SHIPPED), "pybabel init -D inbox -l <lang> (CONTRIBUTING.md)"


@pytest.mark.parametrize("language", SHIPPED)
def test_each_catalogue_has_the_templates_messages(language: str) -> None:
    assert msgids(catalogue_of(language)) == msgids(template()), "run `make messages`"


@pytest.mark.parametrize("language", SHIPPED)
def test_every_message_of_the_demo_has_a_translation(language: str) -> None:
    missing = untranslated(catalogue_of(language), msgids(template()))
    assert not missing, (
        f"translate examples/inbox/locale/{language}/LC_MESSAGES/inbox.po:\n" + "\n".join(missing)
    )


@pytest.mark.parametrize("language", SHIPPED)
def test_a_demo_translation_keeps_the_placeholders_of_its_message(language: str) -> None:
    wrong = wrong_placeholders(catalogue_of(language))
    assert not wrong, f"{language}: placeholders differ from the English in:\n" + "\n".join(wrong)


@pytest.mark.parametrize("language", SHIPPED)
def test_the_demos_compiled_catalogue_is_up_to_date(language: str) -> None:
    mo = po_of(language).with_suffix(".mo")
    assert mo.is_file(), "run `make messages` (pybabel compile -D inbox)"
    assert mo.read_bytes() == compiled(catalogue_of(language)), "run `make messages`"
