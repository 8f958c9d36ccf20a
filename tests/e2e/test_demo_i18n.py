"""The demo speaks the language the kit's pages speak for the same request: a French browser
gets the sign-in, sign-up, inbox, Team and Inbox settings pages in French (the demo's own
catalogue), the kit's refusals on them in the kit's French, and its dates as French writes
them; an Arabic browser gets them right to left, translated or not yet."""

from __future__ import annotations

import os
import re
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from mfa_guard.testing import FrozenClock
from tests.catalogues import SHIPPED
from tests.demo import Demo, csrf_token, owner_with_2fa, post_policy, running_demo, sign_in
from tests.everyone import banner, text_of

FRENCH = {"Accept-Language": "fr-FR,fr;q=0.9,en;q=0.5"}
ARABIC = {"Accept-Language": "ar-EG,ar;q=0.9"}
AGENT = "agent@acme.test"
HTML = re.compile(r"<html[^>]*>")


@pytest.fixture(autouse=True)
def _demo_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    # The demo reads MFA_GUARD_* from the environment; these tests use its own defaults.
    for name in os.environ:
        if name.upper().startswith("MFA_GUARD_"):
            monkeypatch.delenv(name)


@pytest.fixture
async def demo(tmp_path: Path) -> AsyncIterator[Demo]:
    async with running_demo(tmp_path, FrozenClock()) as demo:
        yield demo


def html_tag(page: httpx.Response) -> str:
    match = HTML.search(page.text)
    assert match is not None, page.text
    return match.group(0)


def body_of(page: httpx.Response) -> str:
    """What the page says (after its style sheet), as text."""
    return text_of(page.text.partition("</head>")[2])


async def test_a_french_browser_signs_up_and_in_in_french(demo: Demo) -> None:
    async with demo.browser() as browser:
        browser.headers.update(FRENCH)
        login = await browser.get("/login")
        assert html_tag(login) == '<html lang="fr" dir="ltr">'
        assert "<title>Se connecter · Acme Inbox</title>" in login.text
        assert body_of(login) == (
            "Connexion à Acme Inbox Adresse e-mail Mot de passe Se connecter "
            "Nouvel opérateur chez Acme ? Créez votre compte."
        )
        wrong = await browser.post("/login", data={"email": AGENT, "password": "nope"})
        assert wrong.status_code == 400
        assert "Adresse e-mail ou mot de passe incorrect." in wrong.text

        signup = await browser.get("/signup")
        assert html_tag(signup) == '<html lang="fr" dir="ltr">'
        assert "Rejoindre Acme sur Acme Inbox" in signup.text
        assert "Au moins 8 caractères." in signup.text
        short = await browser.post(
            "/signup",
            data={"csrf_token": csrf_token(signup.text), "email": "new@acme.test", "password": "x"},
        )
        assert short.status_code == 400
        assert "Choisissez un mot de passe de 8 à 1024 caractères." in short.text
        # A refusal of the demo's forms, on its error page.
        stale = await browser.post("/signup", data={"csrf_token": "stale"})
        assert stale.status_code == 403
        assert "<h1>Requête refusée</h1>" in stale.text
        assert "Ce formulaire a expiré ou ne vient pas de ce site." in stale.text


async def test_the_owners_pages_in_french(demo: Demo) -> None:
    async with demo.browser() as owner, demo.browser() as agent:
        owner.headers.update(FRENCH)
        agent.headers.update(FRENCH)
        await owner_with_2fa(demo, owner)
        inbox = await owner.get("/inbox")
        assert html_tag(inbox) == '<html lang="fr" dir="ltr">'
        assert "<h1>Messagerie</h1>" in inbox.text
        assert "L\u2019authentification à deux facteurs est activée sur votre compte." in (
            inbox.text
        )
        assert "Acme propriétaire" in body_of(inbox)
        assert "en attente depuis 2\u00a0min" in inbox.text  # Babel's French for "2 min"
        assert "Se déconnecter" in inbox.text

        team = await owner.get("/sites/acme/team")
        assert html_tag(team) == '<html lang="fr" dir="ltr">'
        assert "<h1>Équipe du site Acme</h1>" in team.text
        assert 'aria-label="Authentification à deux facteurs activée"' in team.text  # padlock
        assert "pas encore de 2FA" in team.text
        assert "Two-factor" not in body_of(team)

        saved = await post_policy(owner, enforce=True, grace="24")
        assert saved.status_code == 303
        settings = await owner.get("/sites/acme/settings")
        assert html_tag(settings) == '<html lang="fr" dir="ltr">'
        text = body_of(settings)
        assert "Réglages de la messagerie du site Acme" in text
        # The notice the post left, and the policy's dates as French writes them.
        assert "L\u2019authentification à deux facteurs est désormais imposée sur ce site." in text
        assert (
            "Imposée. Les membres doivent avoir l\u2019authentification à deux facteurs à partir "
            "du 16 janv. 2027, 08:00 UTC."
        ) in text
        assert "Activée par owner@acme.test le 15 janv. 2027, 08:00 UTC." in text
        assert "Inchangé : à partir du 16 janv. 2027, 08:00 UTC" in text
        assert "Dans 7 jours" in text

        # An operator: the demo's banner in French, and the kit's refusal in the kit's French.
        assert (await sign_in(agent, AGENT)).status_code == 303
        agent_inbox = await agent.get("/inbox")
        assert banner(agent_inbox) == (
            "Acme exige l\u2019authentification à deux facteurs à partir du 16 janv. 2027, "
            "08:00 UTC. Activez-la dès maintenant pour conserver votre accès."
        )
        refused = await agent.get("/sites/acme/team")
        assert refused.status_code == 403
        assert "<h1>Non autorisé</h1>" in refused.text
        assert "Seuls les propriétaires du site peuvent faire cela." in refused.text
        # The kit's own page, for the same browser, says the same banner.
        kit_page = await agent.get("/mfa/enrol")
        assert html_tag(kit_page) == '<html lang="fr" dir="ltr">'
        assert banner(kit_page) == banner(agent_inbox)


async def test_an_english_browser_gets_the_english(demo: Demo) -> None:
    async with demo.browser() as owner:
        owner.headers.update({"Accept-Language": "en-GB,en;q=0.9,fr;q=0.5"})
        await owner_with_2fa(demo, owner)
        team = await owner.get("/sites/acme/team")
        assert html_tag(team) == '<html lang="en" dir="ltr">'
        assert "<h1>Team of Acme</h1>" in team.text


@pytest.mark.parametrize(
    "header",
    ["", "fr", "de-DE,de;q=0.9", "ar", "pt-BR,pt;q=0.8", "zh-CN", "ja;q=0.5,nl", "xx"],
)
async def test_the_demo_speaks_what_the_kits_pages_speak(demo: Demo, header: str) -> None:
    async with demo.browser() as owner:
        await owner_with_2fa(demo, owner)
        owner.headers["Accept-Language"] = header
        kit = html_tag(await owner.get("/mfa/settings"))
        for path in ("/inbox", "/sites/acme/team", "/sites/acme/settings"):
            assert html_tag(await owner.get(path)) == kit, path


@pytest.mark.parametrize("language", SHIPPED)
async def test_every_shipped_language_has_its_lang_and_dir(demo: Demo, language: str) -> None:
    """``<html lang>`` in BCP 47 (``pt-BR``), ``dir`` from the language (``rtl`` for Arabic),
    on the demo's pages as on the kit's: whether the demo's catalogue is translated yet or
    not."""
    tag = language.replace("_", "-")
    direction = "rtl" if language == "ar" else "ltr"
    async with demo.browser() as browser:
        browser.headers["Accept-Language"] = tag
        login = await browser.get("/login")
        assert html_tag(login) == f'<html lang="{tag}" dir="{direction}">'


async def test_an_arabic_browser_gets_the_pages_right_to_left(demo: Demo) -> None:
    async with demo.browser() as owner:
        owner.headers.update(ARABIC)
        await owner_with_2fa(demo, owner)
        for path in ("/inbox", "/sites/acme/team", "/sites/acme/settings", "/mfa/settings"):
            page = await owner.get(path)
            assert page.status_code == 200, path
            assert html_tag(page) == '<html lang="ar" dir="rtl">', path
