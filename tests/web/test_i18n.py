"""The pages in French for a browser that asks for it, English otherwise; and every English text
the pages can show has a French translation in the catalog."""

from __future__ import annotations

import re

import httpx
import pytest
from babel.messages.catalog import Catalog
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route
from starlette.types import Scope

from mfa_guard.core import sms_wording
from mfa_guard.web import i18n
from tests.apps import GuardedApp, build_app, enrol, sign_in
from tests.catalogues import SHIPPED, read_catalogue, untranslated, wrong_placeholders

FRENCH = {"Accept-Language": "fr-FR,fr;q=0.9"}
CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')


async def test_a_french_browser_gets_the_pages_in_french(
    guarded: GuardedApp, client: httpx.AsyncClient
) -> None:
    await sign_in(client)
    settings = await client.get("/mfa/settings", headers=FRENCH)
    assert '<html lang="fr" dir="ltr">' in settings.text
    assert "Authentification à deux facteurs" in settings.text
    assert "Activer l\u2019authentification à deux facteurs" in settings.text
    enrol_page = await client.get("/mfa/enrol", headers=FRENCH)
    assert "Configurer une application d\u2019authentification" in enrol_page.text
    assert "Set up" not in enrol_page.text

    await enrol(guarded, client)
    on = await client.get("/mfa/settings", headers=FRENCH)
    assert "10 codes de récupération restants." in on.text


async def test_a_refusal_is_in_french(guarded: GuardedApp, client: httpx.AsyncClient) -> None:
    await sign_in(client)
    await enrol(guarded, client)
    await client.post("/logout")
    await sign_in(client)
    page = await client.get("/mfa/challenge", headers=FRENCH)
    match = CSRF.search(page.text)
    assert match
    refused = await client.post(
        "/mfa/challenge",
        data={"csrf_token": match.group(1), "method": "totp", "code": "000000"},
        headers=FRENCH,
    )
    assert refused.status_code in (400, 401, 403, 422)
    assert "Ce code n\u2019est pas valide. Vérifiez-le et réessayez." in refused.text
    form_expired = await client.post(
        "/mfa/challenge", data={"csrf_token": "stale", "code": "1"}, headers=FRENCH
    )
    assert "Requête refusée" in form_expired.text


@pytest.mark.parametrize(
    ("header", "language"),
    [
        ("", "en"),
        ("de-DE,de;q=0.9", "en"),
        ("en-GB,en;q=0.9,fr;q=0.8", "en"),
        ("de;q=1, fr;q=0.5", "fr"),
        ("FR", "fr"),
        ("fr;q=0", "en"),
        ("fr;q=bad", "en"),
    ],
)
def test_the_language_follows_accept_language(header: str, language: str) -> None:
    assert i18n.choose_language(header, ["en", "fr"]) == language


async def test_the_languages_setting_restricts_the_choice() -> None:
    ga = build_app(languages=["en"])
    async with ga.client() as client:
        await sign_in(client)
        page = await client.get("/mfa/settings", headers=FRENCH)
    assert '<html lang="en" dir="ltr">' in page.text
    assert "Turn on two-factor authentication" in page.text


def saved_language(scope: Scope) -> str | None:
    """The app's choice for the user, as an app keeps it in its profile: here in the session."""
    language = scope["session"].get("language")
    return language if isinstance(language, str) else None


async def test_the_apps_choice_for_the_user_wins_over_the_browser() -> None:
    ga = build_app(language=saved_language, languages=["en", "fr"])

    async def own_page(request: Request) -> Response:
        return PlainTextResponse(ga.guard.page_language(request.scope))

    async def choose(request: Request) -> Response:
        request.session["language"] = request.query_params["language"]
        return PlainTextResponse("saved")

    ga.app.router.routes[:0] = [Route("/own", own_page), Route("/choose", choose)]
    async with ga.client() as client:
        await sign_in(client)
        english_browser = {"Accept-Language": "en-GB,en;q=0.9"}
        assert (await client.get("/own", headers=FRENCH)).text == "fr"
        assert (await client.get("/own", headers=english_browser)).text == "en"
        await client.get("/choose", params={"language": "fr-FR"})
        page = await client.get("/mfa/settings", headers=english_browser)
        assert '<html lang="fr" dir="ltr">' in page.text
        # The app's own page speaks what the kit's page speaks, for the same request.
        assert (await client.get("/own", headers=english_browser)).text == "fr"
        # A choice the languages setting leaves out: the browser decides.
        await client.get("/choose", params={"language": "de"})
        assert (await client.get("/own", headers=FRENCH)).text == "fr"
        assert (await client.get("/own", headers=english_browser)).text == "en"


def catalog_of(language: str) -> Catalog:
    return read_catalogue(i18n.LOCALE_DIR / language / "LC_MESSAGES" / "messages.po", language)


def test_the_kit_ships_its_languages() -> None:
    assert i18n.available_languages() == ["en", *SHIPPED]


@pytest.mark.parametrize("language", SHIPPED)
def test_every_message_has_a_translation(language: str) -> None:
    expected = {message.id for message in i18n.extract() if message.id}
    missing = untranslated(catalog_of(language), expected)
    assert not missing, f"run `make messages` and translate into {language}:\n" + "\n".join(missing)


@pytest.mark.parametrize("language", SHIPPED)
def test_a_translation_keeps_the_placeholders_of_its_message(language: str) -> None:
    wrong = wrong_placeholders(catalog_of(language))
    assert not wrong, f"{language}: placeholders differ from the English in:\n" + "\n".join(wrong)


@pytest.mark.parametrize("language", SHIPPED)
def test_the_compiled_catalog_is_up_to_date(language: str) -> None:
    translations = i18n.translations(language)
    catalog = catalog_of(language)
    for message in catalog:
        if message.id and isinstance(message.id, str):
            assert translations.gettext(message.id) == message.string, message.id


async def test_values_in_a_translated_sentence_are_escaped() -> None:
    ga = build_app(issuer="<b>Acme</b>")
    async with ga.client() as client:
        await sign_in(client)
        await enrol(ga, client)
        page = await client.get("/mfa/challenge", headers=FRENCH)
    assert "pour &lt;b&gt;Acme&lt;/b&gt;." in page.text
    assert "<b>Acme</b>" not in page.text


def html_tag(page: httpx.Response) -> str:
    found = re.search(r"<html [^>]*>", page.text)
    assert found is not None
    return found.group(0)


@pytest.mark.parametrize(
    ("saved", "header", "tag"),
    [
        ("de", "fr", '<html lang="de" dir="ltr">'),
        ("pt-BR", "fr", '<html lang="pt-BR" dir="ltr">'),
        ("ar", "en", '<html lang="ar" dir="rtl">'),
        (None, "fr-FR,fr;q=0.9", '<html lang="fr" dir="ltr">'),
        ("xx", "fr", '<html lang="fr" dir="ltr">'),  # not a language the kit has
        ("", "ja", '<html lang="ja" dir="ltr">'),
    ],
)
async def test_the_apps_choice_of_language_comes_before_the_browsers(
    saved: str | None, header: str, tag: str
) -> None:
    ga = build_app(language=lambda scope: saved)
    async with ga.client() as client:
        await sign_in(client)
        page = await client.get("/mfa/settings", headers={"Accept-Language": header})
    assert html_tag(page) == tag


async def test_the_languages_setting_holds_the_apps_choice_too() -> None:
    ga = build_app(languages=["en", "fr"], language=lambda scope: "de")
    async with ga.client() as client:
        await sign_in(client)
        page = await client.get("/mfa/settings", headers=FRENCH)
    assert html_tag(page) == '<html lang="fr" dir="ltr">'


async def test_arabic_pages_are_right_to_left() -> None:
    ga = build_app()
    async with ga.client() as client:
        await sign_in(client)
        page = await client.get("/mfa/settings", headers={"Accept-Language": "ar-EG,ar;q=0.9"})
    assert html_tag(page) == '<html lang="ar" dir="rtl">'


async def test_a_name_the_kit_gave_is_shown_in_the_pages_language() -> None:
    ga = build_app()
    async with ga.client() as client:
        await sign_in(client)
        await enrol(ga, client)
        ga.clock.advance(30)
        page = await client.get("/mfa/settings", headers={"Accept-Language": "de"})
    heading = re.search(r'data-kind="app">\s*<h3>([^<]+)', page.text)
    assert heading is not None, page.text
    assert heading.group(1).strip() == "Authentifizierungs-App"
    # The buttons name it so too; the rename field holds the stored name, to edit.
    assert '<span class="visually-hidden">Authentifizierungs-App</span>' in page.text
    assert 'value="Authenticator app"' in page.text


@pytest.mark.parametrize(
    ("first", "second", "text"),
    [
        ("We sent a code.", "It expires.", "We sent a code. It expires."),
        (
            "コードを送信しました。",
            "有効期限は10分です。",
            "コードを送信しました。有効期限は10分です。",
        ),
        ("我们已发送验证码。", "10 分钟内有效。", "我们已发送验证码。10 分钟内有效。"),
        ("أرسلنا رمزًا.", "تنتهي صلاحيته.", "أرسلنا رمزًا. تنتهي صلاحيته."),
    ],
)
def test_two_sentences_are_joined_as_the_language_writes_them(
    first: str, second: str, text: str
) -> None:
    assert sms_wording.sentences(first, second) == text


async def test_names_and_numbers_are_isolated_in_a_right_to_left_sentence() -> None:
    ga = build_app(issuer="Acme Inbox")
    async with ga.client() as client:
        await sign_in(client)
        await enrol(ga, client)
        await client.post("/logout")
        await sign_in(client)
        arabic = await client.get("/mfa/challenge", headers={"Accept-Language": "ar"})
        french = await client.get("/mfa/challenge", headers=FRENCH)
    assert "<bdi>Acme Inbox</bdi>" in arabic.text
    assert "<bdi>" not in french.text
    assert "Acme Inbox." in french.text


async def test_site_names_are_isolated_one_by_one_and_escaped_in_arabic() -> None:
    from mfa_guard.stores.sites import MemorySiteDirectory, Role, SitePolicy

    directory = MemorySiteDirectory()
    for site, name in (("acme", "Acme <Inc>"), ("beta", "Beta")):
        await directory.save_site(site, name)
        await directory.add_member(site, "solo@example.test", Role.OPERATOR)
    ga = build_app(sites=directory)
    later = ga.clock() + 86400
    for site in ("acme", "beta"):
        policy = SitePolicy(enforce=True, grace_deadline=later, changed_by="o", changed_at=0.0)
        assert await directory.set_policy(site, policy)
    async with ga.client() as client:
        await sign_in(client)
        await client.get("/mfa/settings", headers={"Accept-Language": "ar"})
        page = await client.get("/mfa/settings", headers={"Accept-Language": "ar"})
    assert "<bdi>Acme &lt;Inc&gt;</bdi>" in page.text
    assert "<bdi>Beta</bdi>" in page.text
