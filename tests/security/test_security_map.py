"""docs/security.md maps every line of SECURITY.md to the tests that prove it; this keeps the map
true: every line has a row, every test it names exists (read with ``ast``, not imported), and no
test named as a proof is an expected failure.

SECURITY.md lives outside the repository (``../shared/SECURITY.md``): its requirement areas and
checklist numbers are copied here, so the check runs on a fresh clone too, and compared with the
file itself wherever it is checked out next to the repository."""

from __future__ import annotations

import ast
import re
from dataclasses import dataclass
from functools import cache
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DOC = ROOT / "docs" / "security.md"
SECURITY_MD = ROOT.parent / "shared" / "SECURITY.md"
SECTION = "## Requirements and the tests that prove them"

# SECURITY.md's requirements table (its "area" column) and its adversarial checklist.
REQUIREMENT_AREAS = (
    "throttling",
    "lockout abuse",
    "TOTP",
    "TOTP replay",
    "SMS codes",
    "SMS is restricted",
    "recovery codes",
    "secrets at rest",
    "re-authentication",
    "sessions",
    "CSRF",
    "redirects",
    "logs",
    "SMS pumping",
    "outages",
)
CHECKLIST = tuple(range(1, 14))
EXPECTED_LINES = (*REQUIREMENT_AREAS, *(f"checklist {n}" for n in CHECKLIST))

STATUSES = ("proven", "partly", "not yet")
TEST_REFERENCE = re.compile(r"`(tests/[\w/]+\.py)::(\w+(?:::\w+)?)`")
# Anything that looks like a test path, backquoted or not: each must be a well-formed reference.
TEST_MENTION = re.compile(r"tests/[\w/]+\.py::[\w:]+")
EXPECTED_FAILURE_MARKS = ("xfail", "skip")

FunctionNode = ast.FunctionDef | ast.AsyncFunctionDef


@dataclass(frozen=True)
class Row:
    line: str
    proves: str
    proven_by: str
    status: str

    def references(self, cell: str) -> list[str]:
        return [f"{path}::{name}" for path, name in TEST_REFERENCE.findall(cell)]


def section(text: str) -> str:
    start = text.index(SECTION)
    end = text.find("\n## ", start + len(SECTION))
    return text[start : end if end != -1 else len(text)]


def table_rows(text: str) -> list[Row]:
    """The rows of every table in the section (header and separator lines left out)."""
    rows = []
    for raw in section(text).splitlines():
        if not raw.startswith("|") or raw.startswith("|---"):
            continue
        cells = [cell.strip() for cell in raw.strip().strip("|").split(" | ")]
        assert len(cells) == 4, f"a row of four cells: {raw[:120]}"
        if cells[0] == "line":
            continue
        rows.append(Row(*cells))
    return rows


@cache
def rows() -> tuple[Row, ...]:
    return tuple(table_rows(DOC.read_text(encoding="utf-8")))


# -- finding a test with ast --------------------------------------------------------------------


@cache
def parsed(path: Path) -> ast.Module:
    return ast.parse(path.read_text(encoding="utf-8"), filename=str(path))


def module_file(module: str) -> Path | None:
    """The file of an imported module: under ``src/`` (the package) or the repository root."""
    for base in (ROOT / "src", ROOT):
        candidate = base.joinpath(*module.split("."))
        for path in (candidate.with_suffix(".py"), candidate / "__init__.py"):
            if path.is_file():
                return path
    return None


def top_level(module: ast.Module, name: str) -> ast.stmt | None:
    for node in module.body:
        if isinstance(node, FunctionNode | ast.ClassDef) and node.name == name:
            return node
    return None


def imported_from(module: ast.Module, name: str) -> tuple[Path, str] | None:
    """Where ``from x import y [as name]`` in ``module`` takes ``name`` from."""
    for node in module.body:
        if isinstance(node, ast.ImportFrom) and node.module is not None and node.level == 0:
            for alias in node.names:
                if (alias.asname or alias.name) == name:
                    path = module_file(node.module)
                    return None if path is None else (path, alias.name)
    return None


def method(path: Path, class_name: str, name: str) -> FunctionNode | None:
    """A method of a class, its own or inherited (a contract suite's, imported from the
    package), as pytest collects it on that class."""
    module = parsed(path)
    cls = top_level(module, class_name)
    if cls is None:
        found = imported_from(module, class_name)
        return None if found is None else method(*found, name)
    if not isinstance(cls, ast.ClassDef):
        return None
    for node in cls.body:
        if isinstance(node, FunctionNode) and node.name == name:
            return node
    for base in cls.bases:
        base_name = base.id if isinstance(base, ast.Name) else getattr(base, "attr", None)
        if isinstance(base_name, str):
            inherited = method(path, base_name, name)
            if inherited is not None:
                return inherited
    return None


def find_test(reference: str) -> tuple[FunctionNode | None, str]:
    """The test's node, or ``None`` and why it is not there."""
    file, _, name = reference.partition("::")
    path = ROOT / file
    if not path.is_file():
        return None, f"{file} does not exist"
    if "::" in name:
        class_name, _, function = name.partition("::")
        if not class_name.startswith("Test"):
            return None, f"pytest does not collect the class {class_name}"
        node = method(path, class_name, function)
    else:
        function = name
        found = top_level(parsed(path), name)
        node = found if isinstance(found, FunctionNode) else None
    if not function.startswith("test"):
        return None, f"pytest does not collect {function}"
    if node is None:
        return None, f"{file} has no test {name}"
    return node, ""


def expected_to_fail(node: FunctionNode) -> bool:
    return any(
        mark in ast.unparse(decorator)
        for decorator in node.decorator_list
        for mark in EXPECTED_FAILURE_MARKS
    )


# -- the map ------------------------------------------------------------------------------------


def test_every_line_of_security_md_has_one_row() -> None:
    lines = [row.line for row in rows()]
    assert sorted(set(lines)) == sorted(lines), "a line of SECURITY.md has two rows"
    missing = [line for line in EXPECTED_LINES if line not in lines]
    unknown = [line for line in lines if line not in EXPECTED_LINES]
    assert missing == [], f"lines of SECURITY.md without a row in {DOC.name}: {missing}"
    assert unknown == [], f"rows for no line of SECURITY.md: {unknown}"


def test_every_test_the_table_names_exists() -> None:
    text = section(DOC.read_text(encoding="utf-8"))
    well_formed = {f"{path}::{name}" for path, name in TEST_REFERENCE.findall(text)}
    loose = sorted(set(TEST_MENTION.findall(text)) - well_formed)
    assert loose == [], f"write these as `tests/file.py::test_name`: {loose}"
    assert well_formed, "the table names no test"
    problems = [why for reference in sorted(well_formed) if (why := find_test(reference)[1])]
    assert problems == [], "\n".join(problems)


def test_no_test_named_as_a_proof_is_an_expected_failure() -> None:
    expected_failures = []
    for row in rows():
        for reference in row.references(row.proven_by):
            node, _ = find_test(reference)
            if node is not None and expected_to_fail(node):
                expected_failures.append(f"{row.line}: {reference}")
    assert expected_failures == [], (
        "an xfail or skipped test proves nothing: name it in the status instead\n"
        + "\n".join(expected_failures)
    )


def test_every_row_says_how_far_it_is_proven_and_by_what() -> None:
    for row in rows():
        status = row.status.lower()
        assert status.startswith(STATUSES), f"{row.line}: status is one of {STATUSES}"
        if not status.startswith("not yet"):
            assert row.references(row.proven_by), f"{row.line}: no test proves it"
            assert row.proves, f"{row.line}: say what the tests prove"
        if not status.startswith("proven"):
            assert "not yet:" in status, f"{row.line}: say what is not built yet ('Not yet: …')"


def security_md_lines(text: str) -> tuple[list[str], list[int]]:
    """The areas of SECURITY.md's requirements table and the numbers of its checklist."""
    requirements = text.split("## Requirements", 1)[1].split("\n## ", 1)[0]
    areas = [
        cells[0].strip()
        for raw in requirements.splitlines()
        if raw.startswith("|") and not raw.startswith("|---")
        if (cells := raw.strip("|").split("|"))[0].strip() != "area"
    ]
    checklist = text.split("## Adversarial checklist", 1)[1]
    numbers = [int(match) for match in re.findall(r"^(\d+)\. ", checklist, re.MULTILINE)]
    return areas, numbers


def test_the_copied_lines_are_security_mds_own_where_it_is_checked_out() -> None:
    # A fresh clone has no ../shared: the copy above stands alone there.
    if not SECURITY_MD.is_file():
        return
    areas, numbers = security_md_lines(SECURITY_MD.read_text(encoding="utf-8"))
    assert tuple(areas) == REQUIREMENT_AREAS, "SECURITY.md's requirements changed: copy them"
    assert tuple(numbers) == CHECKLIST, "SECURITY.md's checklist changed: copy its numbers"


def test_the_parser_finds_an_inherited_contract_test_and_refuses_a_made_up_one() -> None:
    found, _ = find_test(
        "tests/stores/test_mfa_store.py::TestPostgresStore::test_concurrent_replays_of_one_step_succeed_once"
    )
    assert found is not None
    for made_up in (
        "tests/stores/test_mfa_store.py::TestPostgresStore::test_no_such_thing",
        "tests/stores/test_mfa_store.py::NoSuchClass::test_concurrent_replays_of_one_step_succeed_once",
        "tests/web/test_api.py::test_no_such_thing",
        "tests/test_no_such_file.py::test_a_code_is_accepted_once",
        "tests/web/test_api.py::challenged",
    ):
        assert find_test(made_up)[0] is None, made_up
