"""Which middleware a run of the suite imports.

`make pytest` runs the editable install: the source in ``src/``. `make pytest-compiled` runs the
same suite against the wheel whose middleware mypyc compiled (pyproject.toml's mypyc hook) and
sets ``MFA_GUARD_EXPECT_COMPILED=1``. Each run checks it tests what it says it tests.
"""

from __future__ import annotations

import importlib.machinery
import os
from pathlib import Path

import mfa_guard.web.middleware as middleware_module
from mfa_guard.web.middleware import MFAGuardMiddleware

ROOT = Path(__file__).resolve().parents[2]
SOURCE = ROOT / "src" / "mfa_guard" / "web" / "middleware.py"


def expect_compiled() -> bool:
    return os.environ.get("MFA_GUARD_EXPECT_COMPILED") == "1"


def test_the_run_imports_the_middleware_it_says_it_tests() -> None:
    assert middleware_module.__file__ is not None
    path = Path(middleware_module.__file__)
    spec = middleware_module.__spec__
    assert spec is not None
    if expect_compiled():
        assert isinstance(spec.loader, importlib.machinery.ExtensionFileLoader)
        assert path.name.endswith(tuple(importlib.machinery.EXTENSION_SUFFIXES))
        assert ROOT / "src" not in path.parents, "the compiled run must import the built wheel"
        # A class mypyc compiled is native: its instances have no __dict__.
        assert "__dict__" not in dir(MFAGuardMiddleware)
    else:
        assert path == SOURCE
        assert isinstance(spec.loader, importlib.machinery.SourceFileLoader)


def test_no_compiled_module_lies_in_the_source_tree() -> None:
    # An extension module beside middleware.py is imported instead of it: the editable install
    # would run stale compiled code whatever the source says. Builds go through the sdist, so
    # nothing compiled is ever written under src/.
    suffixes = tuple(importlib.machinery.EXTENSION_SUFFIXES)
    assert [path for path in (ROOT / "src").rglob("*") if path.name.endswith(suffixes)] == []
