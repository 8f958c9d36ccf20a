"""Which source a run of the suite imports: `make pytest` runs the editable install, so the
middleware every test goes through must be the one in ``src/``, run by the interpreter."""

from __future__ import annotations

import importlib.machinery
from pathlib import Path

import mfa_guard.web.middleware as middleware_module

ROOT = Path(__file__).resolve().parents[2]
SOURCE = ROOT / "src" / "mfa_guard" / "web" / "middleware.py"


def test_the_run_imports_the_middleware_of_the_source_tree() -> None:
    assert middleware_module.__file__ is not None
    spec = middleware_module.__spec__
    assert spec is not None
    assert Path(middleware_module.__file__) == SOURCE
    assert isinstance(spec.loader, importlib.machinery.SourceFileLoader)
