"""The package's shape: its modules import one another without a cycle, and the web layer works
from the parts the guard composed, never from the guard itself."""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import mfa_guard

PACKAGE = Path(mfa_guard.__file__).parent


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(path): path for path in PACKAGE.rglob("*.py")}


def imported(name: str, path: Path) -> Iterator[str]:
    """Every module of the package that ``name`` imports, wherever the import stands (at the top,
    under ``TYPE_CHECKING`` or inside a function: each is an arrow between the two)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                base = f"{anchor}.{base}" if base else anchor
            # "from package import module" names modules; "from module import name" the module.
            modules = [f"{base}.{alias.name}" for alias in node.names]
            targets = [target for target in modules if target in MODULES] or [base]
        else:
            continue
        yield from (target for target in targets if target in MODULES and target != name)


GRAPH = {name: sorted(set(imported(name, path))) for name, path in MODULES.items()}


def cycle_through(start: str) -> list[str] | None:
    """A path of imports from ``start`` back to itself, if there is one."""
    stack: list[tuple[str, list[str]]] = [(start, [start])]
    seen: set[str] = set()
    while stack:
        name, path = stack.pop()
        for target in GRAPH[name]:
            if target == start:
                return [*path, start]
            if target not in seen:
                seen.add(target)
                stack.append((target, [*path, target]))
    return None


def test_the_import_graph_of_the_package_has_no_cycle() -> None:
    cycles = [cycle for name in sorted(GRAPH) if (cycle := cycle_through(name)) is not None]
    assert cycles == [], "\n".join(" -> ".join(cycle) for cycle in cycles)


def test_the_graph_sees_the_imports_it_must() -> None:
    # The check above proves nothing if the graph misses arrows: a few known ones.
    assert "mfa_guard.session" in GRAPH["mfa_guard.guard"]
    assert "mfa_guard.web.middleware" in GRAPH["mfa_guard.guard"]
    assert "mfa_guard.session" in GRAPH["mfa_guard.web.middleware"]


def test_the_web_layer_does_not_import_the_guard() -> None:
    web = {name: targets for name, targets in GRAPH.items() if name.startswith("mfa_guard.web")}
    assert {name for name, targets in web.items() if "mfa_guard.guard" in targets} == set()


def test_no_test_module_imports_another() -> None:
    # What tests share lives in the helpers of tests/ (apps.py, passkeys.py, ...): a test module
    # that imports another collects and runs that one's tests' module state as a side effect.
    suite = Path(__file__).parents[1]
    found = []
    for path in sorted(suite.rglob("test_*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if (
                isinstance(node, ast.ImportFrom)
                and node.module is not None
                and node.module.rsplit(".", 1)[-1].startswith("test_")
            ):
                found.append(f"{path.relative_to(suite)}: from {node.module}")
    assert found == []
