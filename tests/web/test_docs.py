"""The docs site's promises: the quickstart's app runs as printed, and the configuration
reference is the settings model's."""

from __future__ import annotations

import os
import re
import secrets
import time
import types
from pathlib import Path

import httpx
import pytest

from mfa_guard import MFAGuardSettings, cli, settings_doc
from mfa_guard.crypto import generate_key
from mfa_guard.testing import current_code

DOCS = Path(__file__).resolve().parents[2] / "docs"


def code_block(page: Path, title: str) -> str:
    """The fenced Python block of `page` titled `title` (```python title="app.py")."""
    fence = re.compile(r'^```python title="' + re.escape(title) + r'"\n(.*?)^```$', re.M | re.S)
    blocks = fence.findall(page.read_text(encoding="utf-8"))
    assert len(blocks) == 1, f'{page.name} has one ```python title="{title}" block'
    return str(blocks[0])


def load(page: Path, title: str, name: str) -> types.ModuleType:
    module = types.ModuleType(name)
    # The page's own code, exactly as a reader copies it.
    exec(compile(code_block(page, title), str(page), "exec"), module.__dict__)  # noqa: S102
    return module


@pytest.fixture
def quickstart_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # What the page's step 2 exports, in a folder of its own (its SQLite file, no stray .env).
    monkeypatch.chdir(tmp_path)
    for name in list(os.environ):
        if name.startswith("MFA_GUARD_") or name == "WEB_CONCURRENCY":
            monkeypatch.delenv(name)
    monkeypatch.setenv("MFA_GUARD_ENCRYPTION_KEYS", generate_key())
    monkeypatch.setenv("SESSION_SECRET", secrets.token_urlsafe(32))


@pytest.mark.usefixtures("quickstart_environment")
async def test_the_quickstart_app_runs() -> None:
    app = load(DOCS / "quickstart.md", "app.py", "quickstart_app")
    ((email, password),) = app.PASSWORDS.items()
    transport = httpx.ASGITransport(app=app.app)
    try:
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
            assert "Sign in" in (await client.get("/")).text
            assert (await client.get("/login")).status_code == 200
            wrong = await client.post("/login", data={"email": email, "password": "guess"})
            assert wrong.status_code == 401

            # Signed in, no second factor yet: the app opens, and so do the kit's pages.
            signed_in = await client.post("/login", data={"email": email, "password": password})
            assert signed_in.status_code == 303
            home = await client.get("/")
            assert f"Signed in as {email}" in home.text
            assert (await client.get("/mfa/settings")).status_code == 200
            assert (await client.get("/mfa/enrol")).status_code == 200

            # Enrol, as the authenticator app would: the key, then its current code.
            setup = await client.post("/mfa/api/totp/setup", json={})
            assert setup.status_code == 200, setup.text
            code = current_code(setup.json()["secret"], time.time())
            confirm = await client.post("/mfa/api/totp/confirm", json={"code": code})
            assert confirm.status_code == 200, confirm.text
            recovery_codes = confirm.json()["recovery_codes"]
            assert (await client.get("/")).status_code == 200

            # Next sign-in: challenged before any page, verified with a recovery code.
            assert (await client.post("/logout")).status_code == 303
            await client.post("/login", data={"email": email, "password": password})
            challenged = await client.get("/")
            assert challenged.status_code == 303
            assert challenged.headers["location"].startswith("/mfa/challenge?next=")
            verify = await client.post(
                "/mfa/api/verify", json={"method": "recovery", "code": recovery_codes[0]}
            )
            assert verify.status_code == 200, verify.text
            status = (await client.get("/mfa/api/status")).json()
            assert status["verified"] is True
            assert f"Signed in as {email}" in (await client.get("/")).text
    finally:
        await app.guard.aclose()
        await app.store.close()


def test_the_configuration_reference_is_generated_from_the_settings() -> None:
    page = (DOCS / "configuration.md").read_text(encoding="utf-8")
    assert page == settings_doc.render(page), (
        "docs/configuration.md's settings table differs from MFAGuardSettings: run "
        "`make settings-doc` (python -m mfa_guard.settings_doc) and commit the page"
    )


def test_a_setting_without_a_description_stops_the_generator() -> None:
    class WithAnUndocumentedSetting(MFAGuardSettings):
        shiny: bool = False

    with pytest.raises(settings_doc.UndocumentedSetting, match="shiny has no description"):
        settings_doc.table(WithAnUndocumentedSetting)


def cli_help(capsys: pytest.CaptureFixture[str], *argv: str) -> str:
    with pytest.raises(SystemExit):
        cli.main([*argv, "--help"])
    return capsys.readouterr().out


def test_every_command_and_option_is_on_the_cli_page(capsys: pytest.CaptureFixture[str]) -> None:
    page = (DOCS / "cli.md").read_text(encoding="utf-8")
    usage = re.search(r"\{([a-z0-9,-]+)\}", cli_help(capsys))
    assert usage, "mfa-guard --help lists its commands"
    for command in usage.group(1).split(","):
        assert f"## `mfa-guard {command}`" in page, f"docs/cli.md has a section on {command}"
        section = page.split(f"## `mfa-guard {command}`")[1].split("\n## ")[0]
        for option in set(re.findall(r"--[a-z0-9-]+", cli_help(capsys, command))) - {"--help"}:
            assert option in section, f"docs/cli.md describes {command} {option}"
