"""The public API is pinned: the names each public module exports, each documented in its code and
on docs/public-api.md, and the examples and the docs' code import nothing else of the kit."""

from __future__ import annotations

import ast
import importlib
import inspect
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SOURCE = ROOT / "src"
DOCS = ROOT / "docs"
PAGE = DOCS / "public-api.md"

# Every public module and the names it exports, as its __all__ lists them. A change here is a
# change of the public API: docs/public-api.md and the changelog say so too.
PUBLIC: dict[str, list[str]] = {
    "mfa_guard": [
        "AuditEvent",
        "Browser",
        "Clock",
        "ConfigurationError",
        "Denied",
        "Enforcement",
        "Enrolment",
        "EnrolmentNotice",
        "EventKind",
        "EventSink",
        "LoggingEventSink",
        "MFAGuard",
        "MFAGuardError",
        "MFAGuardMiddleware",
        "MFAGuardSettings",
        "MFAService",
        "MFAStore",
        "Marker",
        "MemberStatus",
        "MembersWithoutMFA",
        "MemoryEventSink",
        "MemoryStore",
        "Metrics",
        "OpenTelemetryMetrics",
        "Readiness",
        "Reason",
        "ScryptCost",
        "SecretDecryptionError",
        "SecurityLogEntry",
        "SecurityLogPage",
        "SiteService",
        "StoreUnavailable",
        "__version__",
        "client_ip",
        "safe_next",
        "system_clock",
    ],
    "mfa_guard.stores": [
        "Authenticator",
        "CeremonyPurpose",
        "DeviceStore",
        "Enrolment",
        "EnrolmentSummary",
        "EventQuery",
        "EventStore",
        "FactorKind",
        "FactorStatus",
        "MFAStore",
        "Member",
        "Membership",
        "MemoryDeviceStore",
        "MemoryEventStore",
        "MemorySiteDirectory",
        "MemoryStore",
        "MethodPolicy",
        "RecoveryCodeSet",
        "Role",
        "SMSChallenge",
        "SMSPurpose",
        "Site",
        "SiteDirectory",
        "SitePolicy",
        "StoredEvent",
        "StoredSecrets",
        "StoringSink",
        "TrustedDevice",
        "WebAuthnChallenge",
    ],
    "mfa_guard.stores.sql": [
        "SQLDeviceStore",
        "SQLEventStore",
        "SQLSiteDirectory",
        "SQLStore",
        "enrolments",
        "metadata",
        "recovery_codes",
        "site_members",
        "sites",
        "trusted_devices",
    ],
    "mfa_guard.sms": [
        "ConsoleSMS",
        "OutboxSMS",
        "SMSError",
        "SMSProvider",
        "SentSMS",
        "TwilioSMS",
    ],
    "mfa_guard.notifications": [
        "LoggingNotifier",
        "MemoryNotifier",
        "Notice",
        "Notification",
        "Notifier",
        "NotifyingSink",
    ],
    "mfa_guard.stepup": ["recent_mfa_refusal", "require_recent_mfa"],
    "mfa_guard.i18n": ["browser_name", "direction", "human_date", "translations"],
    "mfa_guard.fastapi": [
        "MFARefusal",
        "MFASession",
        "RequireMFA",
        "RequireRecentMFA",
        "include_mfa_guard",
        "install_refusal_handler",
        "refusal_responses",
    ],
    "mfa_guard.tokens": [
        "TOKEN_SESSION_LIFETIME",
        "MemoryTokenSessionStore",
        "OpenSession",
        "RedisTokenSessionStore",
        "TokenSessionMiddleware",
        "TokenSessionStore",
        "TokenSessions",
        "bearer_token",
        "token_key",
    ],
    "mfa_guard.testing": [
        "CHEAP_KDF",
        "CountingSiteDirectory",
        "CountingStore",
        "FrozenClock",
        "current_code",
    ],
    "mfa_guard.testing.webauthn": ["CeremonyRefused", "SoftAuthenticator", "SoftCredential"],
    "mfa_guard.testing.contract": ["MFAStoreContract"],
    "mfa_guard.testing.devices_contract": ["DeviceStoreContract"],
    "mfa_guard.testing.events_contract": ["EventStoreContract"],
    "mfa_guard.testing.sites_contract": ["SiteDirectoryContract"],
}

PUBLIC_NAMES = [(module, name) for module, names in PUBLIC.items() for name in names]


@pytest.mark.parametrize("module", PUBLIC)
def test_each_public_module_exports_exactly_its_pinned_names(module: str) -> None:
    exported = importlib.import_module(module).__all__
    assert list(exported) == PUBLIC[module], (
        f"{module}.__all__ changed: a change of the public API (pin it here, list it on "
        "docs/public-api.md)"
    )


def definition(thing: object) -> ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef:
    """Where ``thing`` is written in the package's source: read from the file, not from
    ``__doc__``, which a dataclass or a NamedTuple fills in itself (and a compiled module may
    not keep)."""
    module, qualname = thing.__module__, thing.__qualname__  # type: ignore[attr-defined]
    base = SOURCE.joinpath(*module.split("."))
    path = base / "__init__.py" if base.is_dir() else base.with_suffix(".py")
    for node in ast.parse(path.read_text(encoding="utf-8")).body:
        kinds = (ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)
        if isinstance(node, kinds) and node.name == qualname:
            return node
    raise AssertionError(f"{module}.{qualname} is not defined at the top of {path}")


@pytest.mark.parametrize(("module", "name"), PUBLIC_NAMES, ids=[".".join(p) for p in PUBLIC_NAMES])
def test_every_public_class_and_function_has_a_docstring_of_its_own(module: str, name: str) -> None:
    thing = getattr(importlib.import_module(module), name)
    if not (inspect.isclass(thing) or inspect.isfunction(thing)):
        return  # a constant, a table, the version: documented where it is assigned
    assert thing.__module__.startswith("mfa_guard."), f"{module}.{name} is the kit's own"
    assert ast.get_docstring(definition(thing)), f"{module}.{name} has no docstring"


def test_the_public_api_page_lists_every_public_name() -> None:
    page = PAGE.read_text(encoding="utf-8")
    sections = dict(re.findall(r"^## `([a-z0-9_.]+)`\n(.*?)(?=^## |\Z)", page, re.M | re.S))
    assert list(sections) == list(PUBLIC), "one section per public module, in this order"
    for module, names in PUBLIC.items():
        listed = re.findall(r"^\| `([A-Za-z_]+)` \|", sections[module], re.M)
        assert listed == names, f"docs/public-api.md lists {module}'s names, in __all__'s order"


# -- what the examples and the docs import --------------------------------------------------------


def python_blocks(page: Path) -> Iterator[tuple[str, str]]:
    """Each fenced ``python`` block of a Markdown page, with where it starts."""
    text = page.read_text(encoding="utf-8")
    for match in re.finditer(r"^```python[^\n]*\n(.*?)^```$", text, re.M | re.S):
        line = text.count("\n", 0, match.start()) + 1
        yield f"{page.relative_to(ROOT)}:{line}", match.group(1)


def sources() -> Iterator[tuple[str, str]]:
    for path in sorted((ROOT / "examples").rglob("*.py")):
        yield str(path.relative_to(ROOT)), path.read_text(encoding="utf-8")
    for page in [ROOT / "README.md", *sorted(DOCS.glob("*.md"))]:
        yield from python_blocks(page)


def kit_imports(where: str, code: str) -> Iterator[tuple[str, str | None]]:
    """``(module, name)`` for each ``from mfa_guard… import name`` of ``code``, ``(module,
    None)`` for each ``import mfa_guard…``."""
    flags = ast.PyCF_ONLY_AST | ast.PyCF_ALLOW_TOP_LEVEL_AWAIT
    tree = compile(code, where, "exec", flags=flags, dont_inherit=True)
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] == "mfa_guard":
            yield from ((node.module or "", alias.name) for alias in node.names)
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] == "mfa_guard":
                    yield alias.name, None


SOURCES = list(sources())


def test_the_examples_and_the_docs_code_are_read() -> None:
    # The check below proves nothing if it reads nothing: a few imports it must see.
    seen = {found for where, code in SOURCES for found in kit_imports(where, code)}
    assert ("mfa_guard", "MFAGuard") in seen
    assert ("mfa_guard.stores.sql", "SQLStore") in seen
    assert ("mfa_guard.fastapi", "include_mfa_guard") in seen
    assert any(where.startswith("examples/inbox/") for where, _ in SOURCES)


@pytest.mark.parametrize(("where", "code"), SOURCES, ids=[where for where, _ in SOURCES])
def test_the_examples_and_the_docs_import_only_public_names(where: str, code: str) -> None:
    for module, name in kit_imports(where, code):
        if module not in PUBLIC:
            pytest.fail(f"{where} imports the internal module {module}")
        if name is not None and name not in PUBLIC[module]:
            pytest.fail(f"{where} imports {module}.{name}, which is not public")
