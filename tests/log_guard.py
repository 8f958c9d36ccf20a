"""No secret reaches a log, in any test of the suite (docs/security.md "logs").

:func:`install` does two things for the whole test session, through a ``MonkeyPatch``:

* it wraps the kit's producers and normalisers of secrets, so each secret the kit draws or
  receives is remembered (:class:`Secrets`): TOTP keys (``core.totp.new_secret``), TOTP codes
  computed (``code_at``) or submitted (``normalise_code``), recovery codes (``core.recovery``
  ``generate`` and ``normalise``), SMS codes (``core.sms.new_code``), phone numbers
  (``core.sms.normalise_phone``, in E.164 and national form), remembered browsers' tokens
  (``devices.token_hash``, made or given back), encryption keys and the keys derived from them
  (``SecretBox``), and every ``SecretStr`` value (settings: encryption keys, Twilio token). The
  kit looks most of these up as module attributes (``totp.new_secret()``); where a module
  imported the function itself (``from mfa_guard.devices import token_hash``), it is patched
  there too.
* it makes every logger create its records at every level, DEBUG included, whatever the levels
  set (by a test, by ``caplog``, by uvicorn's start-up): ``Logger.isEnabledFor`` says yes, and
  ``Logger.callHandlers`` keeps each record that the logger's own gate (``disabled``, its
  filters) let through, then hands on only what the logger's real level lets through. Handlers,
  ``caplog`` included, see exactly what they would see without this.
* it keeps each event appended to an event store (``MemoryEventStore.append``,
  ``SQLEventStore.append``) as a record of its own (:func:`stored_event_record`, on the logger
  name ``security log (…)``, every field of the event in its message), so the security log is
  looked through as the logs are: what a site owner reads there must hold no secret either.

The conftest fixture opens a window per test (:meth:`LogGuard.start`) and at teardown
(:meth:`LogGuard.finish`) looks for each secret in the fully formatted text of every record
(:func:`record_text`): the message with its arguments (and the ``repr`` of a mapping of them,
whose unused keys a structured handler may write), the exception with its chain and traceback,
the stack, and every extra field.

Matching (:meth:`Secrets.find`): codes of fewer than 10 digits are looked for as whole words of
the text (a run of digits with no letter or digit either side, or such digit groups joined, so
``123 456`` counts), never inside a longer number, a word or a hash; every longer secret anywhere
in the text, case and separators (spaces, dashes) ignored, so ``ABCD EFGH`` or ``abcd-efgh``
forms count too.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import re
import sys
import threading
from collections.abc import Callable, Collection, Iterable
from dataclasses import dataclass, field
from types import FrameType
from typing import Any

import phonenumbers
import pytest
from pydantic import SecretStr

from mfa_guard import devices
from mfa_guard import session as session_module
from mfa_guard.core import recovery, totp
from mfa_guard.core import sms as sms_codes
from mfa_guard.crypto import SecretBox
from mfa_guard.errors import Denied
from mfa_guard.events import AuditEvent
from mfa_guard.stores.events import MemoryEventStore
from mfa_guard.stores.sql import SQLEventStore
from mfa_guard.web import flows

# A secret this short that is not a code is test data, not a secret (``SecretStr("")``,
# ``"not-a-key"``): looking for it would find English words.
MIN_LENGTH = 10
_SEPARATORS = re.compile(r"[\s\-]+")
# Numbers, and digit groups (123 456); a code found among them must also be a word of its own
# (no letter or digit either side) to count.
_NUMBER = re.compile(r"[0-9]+")
_GROUPED_NUMBER = re.compile(r"[0-9]+(?:[ \-][0-9]+)+")
# The attributes every record has; any other is an ``extra=`` field.
_STANDARD_ATTRIBUTES = frozenset(vars(logging.makeLogRecord({}))) | {"message", "asctime"}
_FORMATTER = logging.Formatter()
# The logger name of the records standing for events appended to an event store.
STORED_EVENTS = "security log"


def compact(text: str) -> str:
    return _SEPARATORS.sub("", text.lower())


@dataclass
class Secrets:
    """The secrets seen, by kind: ``words`` are short codes, ``needles`` longer secrets
    (lowercased, without separators)."""

    words: dict[str, str] = field(default_factory=dict)
    needles: dict[str, str] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def add(self, kind: str, value: str, *, anywhere: bool = False) -> None:
        """Remembers ``value``: a code of fewer than 10 digits as a word, unless ``anywhere``;
        anything else as a needle, if it is long enough to be a secret."""
        needle = compact(value)
        with self._lock:
            # A secret seen again (a recovery code typed back) keeps the kind it was first seen as.
            if needle.isdigit() and len(needle) < MIN_LENGTH and not anywhere:
                self.words.setdefault(needle, kind)
            elif len(needle) >= MIN_LENGTH or (anywhere and needle):
                self.needles.setdefault(needle, kind)

    def __bool__(self) -> bool:
        return bool(self.words or self.needles)

    def __len__(self) -> int:
        return len(self.words) + len(self.needles)

    def merged(self, other: Secrets) -> Secrets:
        with self._lock, other._lock:
            return Secrets({**other.words, **self.words}, {**other.needles, **self.needles})

    def find(self, text: str) -> list[str]:
        """The kinds of the secrets in ``text``, one entry per secret found."""
        found: list[str] = []
        if self.words:
            numbers = set(_NUMBER.findall(text))
            numbers.update(
                group.replace(" ", "").replace("-", "") for group in _GROUPED_NUMBER.findall(text)
            )
            found.extend(
                self.words[number]
                for number in numbers & self.words.keys()
                if _as_a_word(number).search(text)
            )
        if self.needles:
            squeezed = "".join(text.lower().split()).replace("-", "")
            found.extend(kind for needle, kind in self.needles.items() if needle in squeezed)
        return found


def _as_a_word(code: str) -> re.Pattern[str]:
    """``code``, its digits possibly grouped, with no letter or digit either side."""
    digits = "[ \\-]?".join(code)
    return re.compile(rf"(?<![0-9A-Za-z]){digits}(?![0-9A-Za-z])")


def record_text(record: logging.LogRecord) -> str:
    """Everything a handler could write of ``record``."""
    try:
        message = record.getMessage()
    except Exception:  # a broken format string: what it was given is what a handler has
        message = f"{record.msg!r} % {record.args!r}"
    attributes = vars(record)
    extra = attributes.keys() - _STANDARD_ATTRIBUTES
    mapping = record.args and not isinstance(record.args, tuple)
    if not (extra or mapping or record.exc_info or record.exc_text or record.stack_info):
        return message
    parts = [message]
    if mapping:  # the keys the message leaves out are there for a handler too
        parts.append(repr(record.args))
    if record.exc_info and record.exc_info[0] is not None:
        parts.append(_FORMATTER.formatException(record.exc_info))
    elif record.exc_text:
        parts.append(record.exc_text)
    if record.stack_info:
        parts.append(record.stack_info)
    parts.extend(f"{name}={attributes[name]!r}" for name in extra)
    return "\n".join(parts)


@dataclass(frozen=True, slots=True)
class Leak:
    record: logging.LogRecord
    kinds: tuple[str, ...]
    # The format string, unless it holds the secret itself (an f-string).
    template: str

    def __str__(self) -> str:
        # Where and what kind: never the secret itself.
        record = self.record
        verb = "stored" if record.name.startswith(STORED_EVENTS) else "logged"
        return (
            f"{record.name} {record.levelname} ({record.pathname}:{record.lineno}) "
            f"{verb} {', '.join(sorted(set(self.kinds)))}: {self.template}"
        )


def leaks(records: Iterable[logging.LogRecord], secrets: Secrets) -> list[Leak]:
    """The records whose text holds one of ``secrets``."""
    if not secrets:
        return []
    texts = [(record, record_text(record)) for record in records]
    # One look through all the text (each record on its own line); only if it finds something,
    # one look per record to tell which.
    if not texts or not secrets.find("\n".join(text for _, text in texts)):
        return []
    found = []
    for record, text in texts:
        kinds = secrets.find(text)
        if kinds:
            template = str(record.msg)[:200]
            shown = "(a message that holds it)" if secrets.find(template) else repr(template)
            found.append(Leak(record, tuple(kinds), shown))
    return found


class LogGuard:
    """The records logged and the secrets seen since the last check. Secrets seen outside a test
    (in a module or session fixture) stay looked for in every later test."""

    def __init__(self) -> None:
        self.records: list[logging.LogRecord] = []
        self.outside = Secrets()
        self.secrets = Secrets()
        self.in_test = False

    def saw(self, kind: str, value: str, *, anywhere: bool = False) -> None:
        (self.secrets if self.in_test else self.outside).add(kind, value, anywhere=anywhere)

    def keep(self, record: logging.LogRecord) -> None:
        self.records.append(record)

    def start(self) -> None:
        self.secrets = Secrets()
        self.in_test = True

    def finish(self) -> tuple[list[Leak], Secrets]:
        """The leaks among the records logged since the last check, and the secrets looked for.
        Records logged between two tests (fixture teardowns) are checked with the next test."""
        self.in_test = False
        records, self.records = self.records, []
        secrets = self.secrets.merged(self.outside)
        return leaks(records, secrets), secrets


def _wrap(
    module: object,
    name: str,
    remember: Callable[[Any], None],
    patch: pytest.MonkeyPatch,
    *,
    argument: bool = False,
) -> None:
    """``module.name`` remembering what it returns (or, with ``argument``, what it is given)."""
    original: Callable[..., Any] = getattr(module, name)

    @functools.wraps(original)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        if argument:
            remember(args[0])
        result = original(*args, **kwargs)
        if not argument:
            remember(result)
        return result

    patch.setattr(module, name, wrapper)


def stored_event_record(
    store: object, event: AuditEvent, caller: FrameType | None
) -> logging.LogRecord:
    """``event``, appended to ``store``, as a record the guard looks through like a logged one:
    each field of the event in its message, from where ``caller`` appended it."""
    values = dataclasses.asdict(event)
    return logging.LogRecord(
        name=f"{STORED_EVENTS} ({type(store).__name__})",
        level=logging.INFO,
        pathname=caller.f_code.co_filename if caller is not None else "?",
        lineno=caller.f_lineno if caller is not None else 0,
        msg="event " + " ".join(f"{name}=%s" for name in values),
        args=tuple(str(value) for value in values.values()),
        exc_info=None,
    )


def _keep_appended(store_class: type[Any], guard: LogGuard, patch: pytest.MonkeyPatch) -> None:
    """``store_class.append`` keeping each event it is given (:func:`stored_event_record`)."""
    original: Callable[[Any, AuditEvent], Any] = store_class.append

    @functools.wraps(original)
    async def append(store: Any, event: AuditEvent) -> int:
        # The frame that awaits this append: where the event comes from.
        guard.keep(stored_event_record(store, event, sys._getframe(1)))
        appended: int = await original(store, event)
        return appended

    patch.setattr(store_class, "append", append)


def install(guard: LogGuard, patch: pytest.MonkeyPatch) -> None:
    """Wraps the secrets' producers and the loggers for as long as ``patch`` is not undone."""

    def each(kind: str) -> Callable[[Collection[str]], None]:
        def remember(values: Collection[str]) -> None:
            for value in values:
                guard.saw(kind, value)

        return remember

    def one(kind: str) -> Callable[[str | None], None]:
        def remember(value: str | None) -> None:
            if value is not None:
                guard.saw(kind, value)

        return remember

    def phone(value: str | Denied) -> None:
        if isinstance(value, str):
            guard.saw("a phone number", value.lstrip("+"), anywhere=True)
            national = str(phonenumbers.parse(value, None).national_number)
            guard.saw("a phone number", national, anywhere=True)

    _wrap(totp, "new_secret", one("a TOTP key"), patch)
    _wrap(totp, "code_at", one("a TOTP code"), patch)
    _wrap(totp, "normalise_code", one("a submitted code"), patch)
    _wrap(recovery, "generate", each("a recovery code"), patch)
    _wrap(recovery, "normalise", one("a submitted recovery code"), patch)
    _wrap(sms_codes, "new_code", one("an SMS code"), patch)
    _wrap(sms_codes, "normalise_phone", phone, patch)
    # A remembered browser's token is hashed as it is made and each time it comes back; the
    # modules that imported the function look it up as their own.
    for module in (devices, session_module, flows):
        _wrap(module, "token_hash", one("a device token"), patch, argument=True)

    box_init = SecretBox.__init__

    def secret_box(box: SecretBox, keys: Any) -> None:
        box_init(box, keys)
        for key in keys:
            guard.saw(
                "an encryption key", key.get_secret_value() if isinstance(key, SecretStr) else key
            )
        guard.saw("a key derived from an encryption key", box.marker_key.hex())
        guard.saw("a key derived from an encryption key", box.sms_key.hex())

    patch.setattr(SecretBox, "__init__", secret_box)

    secret_init = SecretStr.__init__

    def secret_str(secret: SecretStr, value: str) -> None:
        secret_init(secret, value)
        if isinstance(value, str):
            guard.saw("a secret setting", value)

    patch.setattr(SecretStr, "__init__", secret_str)

    for store_class in (MemoryEventStore, SQLEventStore):
        _keep_appended(store_class, guard, patch)

    enabled = logging.Logger.isEnabledFor
    call_handlers = logging.Logger.callHandlers

    def every_level(logger: logging.Logger, level: int) -> bool:
        return True

    def keep_then_call_handlers(logger: logging.Logger, record: logging.LogRecord) -> None:
        # Called once per record, by the logger that made it, once the logger's own gate (not
        # disabled, its filters) let it through; its level is left to decide here.
        guard.keep(record)
        if enabled(logger, record.levelno):
            call_handlers(logger, record)

    patch.setattr(logging.Logger, "isEnabledFor", every_level)
    patch.setattr(logging.Logger, "callHandlers", keep_then_call_handlers)


def marked_reason(item: pytest.Item) -> str | None:
    """The reason a test gives with ``@pytest.mark.logs_secrets(reason=...)``, or ``None``."""
    marker = item.get_closest_marker("logs_secrets")
    if marker is None:
        return None
    reason = marker.kwargs.get("reason") or (marker.args[0] if marker.args else "")
    if not isinstance(reason, str) or not reason.strip():
        pytest.fail("@pytest.mark.logs_secrets needs a reason: say why this test logs a secret")
    return reason


def report(leaked: list[Leak], secrets: Secrets) -> str:
    lines = [f"{len(leaked)} log record(s) hold a secret (of {len(secrets)} looked for):"]
    lines.extend(f"  {leak}" for leak in leaked[:20])
    if len(leaked) > 20:
        lines.append(f"  ... and {len(leaked) - 20} more")
    lines.append("Log no secret; if this test must, mark it @pytest.mark.logs_secrets(reason=...).")
    return "\n".join(lines)
