"""What pip installs is what the code needs: the package installed bare (no extra) in a venv of
its own, its metadata as a package index shows it, and the dependency declarations the
lowest-versions run (`make pytest-lowest`) relies on."""

from __future__ import annotations

import ast
import importlib.machinery
import os
import re
import shlex
import shutil
import subprocess
import sys
import tomllib
import zipfile
from dataclasses import dataclass
from email.parser import HeaderParser
from pathlib import Path

import httpx
import pytest
from starlette.requests import Request

from tests.apps import GuardedApp
from tests.scenarios import State, arrive, page_token

ROOT = Path(__file__).resolve().parents[2]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
VERSION = PYPROJECT["project"]["version"]
EXTRAS = PYPROJECT["project"]["optional-dependencies"]


def uv() -> str:
    """uv from the project's venv (the `dev` group), as the Makefile's lowest run passes it."""
    found = (
        os.environ.get("UV")
        or shutil.which("uv", path=str(Path(sys.executable).parent))
        or shutil.which("uv")
    )
    assert found, "uv is in the dev dependency group: `make install` puts it in .venv/bin"
    return found


@dataclass
class Ran:
    code: int
    out: str
    err: str


@dataclass
class BareInstall:
    """``pip install mfa-guard`` without any extra, in a venv of its own."""

    venv: Path
    wheel: Path
    workdir: Path

    def run(self, *args: str, env: dict[str, str] | None = None) -> Ran:
        environment = {
            key: value for key, value in os.environ.items() if not key.startswith("MFA_GUARD_")
        }
        environment.update(env or {})
        done = subprocess.run(  # noqa: S603 (our own venv's executables)
            [str(self.venv / "bin" / args[0]), *args[1:]],
            cwd=self.workdir,
            env=environment,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        return Ran(done.returncode, done.stdout, done.stderr)


@pytest.fixture(scope="module")
def bare(tmp_path_factory: pytest.TempPathFactory) -> BareInstall:
    base = tmp_path_factory.mktemp("bare")
    tool = uv()
    subprocess.run(  # noqa: S603
        [tool, "build", "--quiet", "--wheel", "--out-dir", str(base / "dist"), str(ROOT)],
        check=True,
        timeout=120,
    )
    (wheel,) = (base / "dist").glob("*.whl")
    venv = base / "venv"
    subprocess.run([tool, "venv", "--quiet", "--python", sys.executable, str(venv)], check=True)  # noqa: S603
    # The lowest-versions run installs the floors here too.
    resolution = os.environ.get("MFA_GUARD_RESOLUTION", "highest")
    subprocess.run(  # noqa: S603
        [
            tool,
            "pip",
            "install",
            "--quiet",
            "--python",
            str(venv / "bin" / "python"),
            "--resolution",
            resolution,
            str(wheel),
        ],
        check=True,
        timeout=300,
    )
    workdir = base / "app"
    workdir.mkdir()
    return BareInstall(venv, wheel, workdir)


KEY = {"MFA_GUARD_ENCRYPTION_KEYS": "x6ObVPeA8Nwe9DRHkrE0ZqSuxeCWLb1hBDlvJXnvb-Y="}


def test_a_bare_install_has_the_core_and_none_of_the_extras(bare: BareInstall) -> None:
    installed = subprocess.run(  # noqa: S603
        [uv(), "pip", "freeze", "--python", str(bare.venv / "bin" / "python")],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.lower()
    names = {re.split(r"[=@ ]", line)[0] for line in installed.splitlines()}
    assert {"mfa-guard", "starlette", "pydantic-settings", "phonenumberslite"} <= names
    # phonenumbers' geodata (geocoder, carrier, timezone) is not what the kit uses.
    assert "phonenumbers" not in names
    assert not names & {
        "sqlalchemy",
        "aiosqlite",
        "asyncpg",
        "alembic",
        "redis",
        "httpx",
        "fastapi",
        "opentelemetry-api",
    }
    ran = bare.run("python", "-c", "import mfa_guard; print(mfa_guard.MFAGuard.__name__)")
    assert (ran.code, ran.out.strip()) == (0, "MFAGuard"), ran.err


def test_the_metrics_name_their_extra_in_a_bare_install(bare: BareInstall) -> None:
    ran = bare.run(
        "python", "-c", "from mfa_guard import OpenTelemetryMetrics; OpenTelemetryMetrics()"
    )
    assert ran.code == 1, ran.out
    assert (
        "mfa_guard.errors.ConfigurationError: OpenTelemetryMetrics needs the OpenTelemetry API: "
        "pip install 'mfa-guard[otel]'"
    ) in ran.err.splitlines()


def test_the_version_is_the_packages_from_the_command_and_python_m(bare: BareInstall) -> None:
    for command in (["mfa-guard", "--version"], ["python", "-m", "mfa_guard", "--version"]):
        ran = bare.run(*command)
        assert (ran.code, ran.out.strip()) == (0, f"mfa-guard {VERSION}"), ran.err


@pytest.mark.parametrize(
    ("command", "env", "extra"),
    [
        pytest.param(["migrate"], {}, "sql", id="migrate"),
        pytest.param(["init-db"], {}, "sql", id="init-db"),
        pytest.param(["status"], {}, "sql", id="status"),
        pytest.param(["reset-user", "someone"], KEY, "sql", id="reset-user"),
        pytest.param(["rotate-keys"], KEY, "sql", id="rotate-keys"),
        pytest.param(["purge-events"], {}, "sql", id="purge-events"),
        pytest.param(
            ["init-db", "--database-url", "postgresql+asyncpg://db.internal/app"],
            {},
            "postgres",
            id="init-db-on-postgresql",
        ),
        pytest.param(
            ["check-config"],
            {**KEY, "MFA_GUARD_STORAGE_URI": "redis://127.0.0.1:6379"},
            "redis",
            id="check-config-with-redis-limits",
        ),
    ],
)
def test_a_command_names_the_extra_it_needs_instead_of_a_traceback(
    bare: BareInstall, command: list[str], env: dict[str, str], extra: str
) -> None:
    ran = bare.run("mfa-guard", *command, env=env)
    assert ran.code == 5, (ran.out, ran.err)
    assert f"pip install 'mfa-guard[{extra}]'" in ran.err
    assert "Traceback" not in ran.err


def test_the_wheel_ships_the_migrations(bare: BareInstall) -> None:
    """The kit's Alembic environment and every revision, which are no module any import finds:
    without them an installed store could neither create nor migrate its tables."""
    folder = ROOT / "src" / "mfa_guard" / "stores" / "sql" / "migrations"
    shipped = [
        path.relative_to(ROOT / "src").as_posix()
        for path in folder.rglob("*")
        if path.is_file() and "__pycache__" not in path.parts
    ]
    assert "mfa_guard/stores/sql/migrations/script.py.mako" in shipped
    assert len([name for name in shipped if "/versions/" in name]) >= 5
    with zipfile.ZipFile(bare.wheel) as wheel:
        assert set(shipped) <= set(wheel.namelist())


def test_check_config_works_bare_and_says_the_sql_store_needs_its_extra(
    bare: BareInstall,
) -> None:
    ran = bare.run("mfa-guard", "check-config", env=KEY)
    assert ran.code == 0, ran.err
    assert "issuer = mfa_guard" in ran.out.splitlines()
    assert (
        "warning: database_url: the SQL store needs the sql extra (sqlalchemy is not installed): "
        "pip install 'mfa-guard[sql]'"
    ) in ran.err.splitlines()
    assert "Traceback" not in ran.err


def test_the_commands_read_the_apps_dot_env_as_the_app_does(bare: BareInstall) -> None:
    """init-db and status read the database URL from .env in the working directory, like the
    app's settings: here a PostgreSQL one, so they ask for the postgres extra."""
    dot_env = bare.workdir / ".env"
    dot_env.write_text("MFA_GUARD_DATABASE_URL=postgresql+asyncpg://db.internal/app\n")
    try:
        for command in (["init-db"], ["status"]):
            ran = bare.run("mfa-guard", *command)
            assert ran.code == 5, ran.err
            assert "pip install 'mfa-guard[postgres]'" in ran.err
    finally:
        dot_env.unlink()


def test_the_index_description_links_only_to_absolute_urls(bare: BareInstall) -> None:
    with zipfile.ZipFile(bare.wheel) as wheel:
        (name,) = [n for n in wheel.namelist() if n.endswith(".dist-info/METADATA")]
        metadata = HeaderParser().parsestr(wheel.read(name).decode())
        licences = [n for n in wheel.namelist() if n.endswith(".dist-info/licenses/LICENSE")]
    description = metadata.get_payload()
    assert isinstance(description, str)
    targets = re.findall(r"\]\(([^)]+)\)", description)
    assert targets, "the README's links"
    relative = [t for t in targets if not t.startswith(("https://", "http://", "#"))]
    assert relative == []
    assert "](https://raw.githubusercontent.com/" in description  # images shown, not linked
    assert metadata["License-Expression"] == "MIT"
    assert licences
    assert metadata.get_all("Project-URL")


def test_the_wheel_is_pure_python_for_every_platform(bare: BareInstall) -> None:
    assert bare.wheel.name.endswith("-py3-none-any.whl")
    with zipfile.ZipFile(bare.wheel) as wheel:
        names = wheel.namelist()
        (tags,) = [n for n in names if n.endswith(".dist-info/WHEEL")]
        assert "Root-Is-Purelib: true" in wheel.read(tags).decode()
    suffixes = tuple(importlib.machinery.EXTENSION_SUFFIXES)
    assert [name for name in names if name.endswith(suffixes)] == []


# -- the declarations ------------------------------------------------------------------------


def requirement_names(requirements: list[str]) -> set[str]:
    return {re.split(r"[\[<>=!~; ]", r, maxsplit=1)[0].lower() for r in requirements}


def test_the_dev_tools_are_a_dependency_group_not_a_published_extra() -> None:
    assert "dev" not in EXTRAS
    groups = PYPROJECT["dependency-groups"]
    assert {"include-group": "test"} in groups["dev"]
    # The dev group installs the package with every extra, so `make install` tests them all.
    (self_reference,) = [r for r in groups["dev"] if isinstance(r, str) and "mfa-guard[" in r]
    assert set(self_reference.split("[")[1].rstrip("]").split(",")) == set(EXTRAS)


def test_the_lowest_versions_run_covers_every_extra() -> None:
    makefile = (ROOT / "Makefile").read_text()
    match = re.search(r"^LOWEST_EXTRAS := (.+)$", makefile, re.MULTILINE)
    assert match
    assert set(match.group(1).split(",")) == set(EXTRAS)
    assert re.search(r"^test: .*\bpytest-lowest\b", makefile, re.MULTILINE)


def test_every_path_the_lowest_versions_run_names_exists() -> None:
    # A path left behind by a move would make that run collect nothing (pytest exits 5).
    makefile = (ROOT / "Makefile").read_text()
    match = re.search(r"^LOWEST_TESTS := ((?:.*\\\n)*.*)$", makefile, re.MULTILINE)
    assert match
    paths = match.group(1).replace("\\\n", " ").split()
    assert len(paths) > 10
    assert [path for path in paths if not (ROOT / path).exists()] == []


def test_redis_py_stays_below_the_major_version_limits_supports() -> None:
    # limits' redis storage declares redis<8; the extra and the tests' client say the same.
    for requirements in (EXTRAS["redis"], PYPROJECT["dependency-groups"]["test"]):
        (redis,) = [r for r in requirements if r.startswith("redis")]
        assert "<8" in redis


def test_the_kit_uses_no_phone_number_geodata() -> None:
    """phonenumberslite is phonenumbers without geocoder, carrier and timezone data."""
    assert "phonenumberslite" in requirement_names(PYPROJECT["project"]["dependencies"])
    assert "phonenumbers" not in requirement_names(PYPROJECT["project"]["dependencies"])
    geodata = {"phonenumbers.geocoder", "phonenumbers.carrier", "phonenumbers.timezone"}
    for path in (ROOT / "src").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module:
                names = {node.module} | {f"{node.module}.{a.name}" for a in node.names}
            elif isinstance(node, ast.Import):
                names = {a.name for a in node.names}
            else:
                continue
            assert not names & geodata, path


# -- the form parser's failures --------------------------------------------------------------


async def test_a_form_parser_failure_that_is_no_bad_form_is_not_hidden_as_a_400(
    guarded: GuardedApp, client: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Starlette 0.40-0.43 refused the form's max_part_size argument with a TypeError, which a
    catch-all turned into "The form could not be read" (400) for every form: a floor that did
    not work looked like bad input. Only the parser's own refusals are a 400."""
    await arrive(guarded, client, State.CHALLENGED)
    token = await page_token(client, State.CHALLENGED)

    async def incompatible(self: Request, **options: object) -> None:
        raise TypeError(f"form() got an unexpected keyword argument {next(iter(options))!r}")

    monkeypatch.setattr(Request, "form", incompatible)
    with pytest.raises(TypeError, match="unexpected keyword argument"):
        await client.post("/mfa/challenge", data={"csrf_token": token, "code": "123456"})


@pytest.mark.parametrize("page", ["quickstart.md", "fastapi.md"])
def test_the_install_commands_the_guides_print_resolve(bare: BareInstall, page: str) -> None:
    """The guides lead with an install that works before the package is on an index: from a
    checkout, or from the wheel `make dist` builds (here, the one the fixture built)."""
    text = (ROOT / "docs" / page).read_text()
    printed = re.search(r"```sh\n(?:.*\n)*?pip install (.+)\n(?:.*\n)*?```", text)
    assert printed, "the install step's code block"
    from_wheel = re.search(
        r"`pip install '/path/to/mfa_guard/dist/([^'\[]+)(\[[^']+\])'([^`]*)`", text
    )
    assert from_wheel
    assert from_wheel.group(1) == f"mfa_guard-{VERSION}-py3-none-any.whl"
    commands = [
        shlex.split(printed.group(1).replace("/path/to/mfa_guard", str(ROOT))),
        [f"{bare.wheel}{from_wheel.group(2)}", *shlex.split(from_wheel.group(3))],
    ]
    python = str(bare.venv / "bin" / "python")
    for arguments in commands:
        done = subprocess.run(  # noqa: S603
            [uv(), "pip", "install", "--dry-run", "--python", python, *arguments],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert done.returncode == 0, done.stderr
