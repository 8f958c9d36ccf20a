"""The settings reference of ``docs/configuration.md``, generated from :class:`MFAGuardSettings`.

``python -m mfa_guard.settings_doc`` rewrites the table between the page's markers;
``python -m mfa_guard.settings_doc --check`` exits 1 when the page differs from the model.
"""

from __future__ import annotations

import argparse
import sys
import types
import typing
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Literal, TypeGuard

import annotated_types
from pydantic import AliasChoices, BaseModel, SecretStr
from pydantic.fields import FieldInfo

from mfa_guard.settings import MFAGuardSettings

START = "<!-- settings:start -->"
END = "<!-- settings:end -->"
PAGE = Path("docs/configuration.md")
REGENERATE = "python -m mfa_guard.settings_doc"


class UndocumentedSetting(ValueError):
    pass


@dataclass(frozen=True)
class Row:
    field: str
    variables: tuple[str, ...]
    accepts: str
    default: str
    meaning: str


def rows(
    model: type[BaseModel] = MFAGuardSettings,
    *,
    env_prefix: str = "MFA_GUARD_",
    path: str = "",
    defaults: object = None,
) -> Iterator[Row]:
    """One row per setting, nested groups expanded in place, in the model's order."""
    for name, info in model.model_fields.items():
        dotted = f"{path}{name}"
        default = (
            getattr(defaults, name)
            if defaults is not None
            else info.get_default(call_default_factory=True)
        )
        if _is_model(info.annotation):
            # pydantic-settings' env_nested_delimiter: MFA_GUARD_SMS__ENABLED.
            yield from rows(
                info.annotation,
                env_prefix=f"{env_prefix}{name.upper()}__",
                path=f"{dotted}.",
                defaults=default,
            )
            continue
        if not (info.description and info.description.strip()):
            raise UndocumentedSetting(
                f"the setting {dotted} has no description: give its Field a description= in "
                "src/mfa_guard/settings.py, then run " + REGENERATE
            )
        yield Row(
            field=dotted,
            variables=_variables(info, env_prefix, name),
            accepts=_accepts(info),
            default=_default(dotted, default),
            meaning=info.description.strip(),
        )


def table(model: type[BaseModel] = MFAGuardSettings) -> str:
    lines = [
        "| setting and environment variable | accepts | default | meaning |",
        "|---|---|---|---|",
    ]
    for row in rows(model):
        names = "<br>".join(f"`{name}`" for name in (row.field, *row.variables))
        cells = [names, row.accepts, row.default, _cell(row.meaning)]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def render(page: str, model: type[BaseModel] = MFAGuardSettings) -> str:
    """The page with the generated table between its markers; the rest is left as it is."""
    start, end = page.find(START), page.find(END)
    if start < 0 or end < start:
        raise ValueError(f"the page has no {START} … {END} markers")
    return page[: start + len(START)] + "\n\n" + table(model) + "\n" + page[end:]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m mfa_guard.settings_doc",
        description=(
            "Write the settings table of the configuration page from MFAGuardSettings "
            f"(between {START} and {END})."
        ),
    )
    parser.add_argument("page", nargs="?", type=Path, default=PAGE, help=f"default: {PAGE}")
    parser.add_argument(
        "--check", action="store_true", help="change nothing; exit 1 if the page is out of date"
    )
    args = parser.parse_args(argv)
    page: Path = args.page
    before = page.read_text(encoding="utf-8")
    after = render(before)
    if args.check:
        if after != before:
            print(f"{page} is out of date: run {REGENERATE}", file=sys.stderr)
            return 1
        return 0
    if after != before:
        page.write_text(after, encoding="utf-8")
        print(f"{page}: settings table rewritten")
    return 0


def _is_model(annotation: Any) -> TypeGuard[type[BaseModel]]:
    return isinstance(annotation, type) and issubclass(annotation, BaseModel)


def _variables(info: FieldInfo, env_prefix: str, name: str) -> tuple[str, ...]:
    # An alias replaces the prefixed name (pydantic-settings reads the alias as it is).
    alias = info.validation_alias
    if isinstance(alias, AliasChoices):
        return tuple(choice for choice in alias.choices if isinstance(choice, str))
    if isinstance(alias, str):
        return (alias,)
    return (f"{env_prefix}{name.upper()}",)


def _accepts(info: FieldInfo) -> str:
    annotation = info.annotation
    optional = False
    if _is_union(annotation):
        members = [arg for arg in typing.get_args(annotation) if arg is not type(None)]
        optional = len(members) < len(typing.get_args(annotation))
        if len(members) == 1:
            annotation = members[0]
    text = _kind(annotation) + _bounds(info)
    return f"{text} (optional)" if optional else text


def _is_union(annotation: Any) -> bool:
    return typing.get_origin(annotation) in (typing.Union, types.UnionType)


def _kind(annotation: Any) -> str:
    origin = typing.get_origin(annotation)
    if origin is Literal:
        choices = [f"`{choice}`" for choice in typing.get_args(annotation)]
        return ", ".join(choices[:-1]) + " or " + choices[-1] if len(choices) > 1 else choices[0]
    if origin is list:
        (item,) = typing.get_args(annotation)
        return f"{_plural(item)}, comma-separated"
    return _singular(annotation)


_NAMES: dict[Any, tuple[str, str]] = {
    bool: ("`true` or `false`", "booleans"),
    int: ("integer", "integers"),
    float: ("number", "numbers"),
    str: ("text", "texts"),
    SecretStr: ("secret", "secrets"),
    datetime: ("ISO 8601 date and time with its timezone", "dates and times"),
}


def _singular(annotation: Any) -> str:
    if annotation not in _NAMES:
        raise ValueError(f"no words for the setting type {annotation!r}: add it to _NAMES")
    return _NAMES[annotation][0]


def _plural(annotation: Any) -> str:
    if annotation not in _NAMES:
        raise ValueError(f"no words for the setting type {annotation!r}: add it to _NAMES")
    return _NAMES[annotation][1]


def _bounds(info: FieldInfo) -> str:
    found: dict[str, object] = {}
    for item in info.metadata:
        if isinstance(item, annotated_types.Ge):
            found["≥"] = item.ge
        elif isinstance(item, annotated_types.Gt):
            found[">"] = item.gt
        elif isinstance(item, annotated_types.Le):
            found["≤"] = item.le
        elif isinstance(item, annotated_types.Lt):
            found["<"] = item.lt
    if found.keys() == {"≥", "≤"}:
        return f" from {found['≥']} to {found['≤']}"
    return "".join(f" {sign} {value}" for sign, value in found.items())


def _default(name: str, value: object) -> str:
    if value is None:
        return "none"
    if isinstance(value, SecretStr):
        return "(secret)"
    if isinstance(value, bool):
        return f"`{str(value).lower()}`"
    if isinstance(value, list):
        if not value:
            return "empty"
        if any(isinstance(item, SecretStr) for item in value):
            return "(secret)"
        return "`" + ",".join(str(item) for item in value) + "`"
    if isinstance(value, int) and value:
        return f"`{value}`" + _duration(name, value)
    return f"`{value}`"


def _duration(name: str, value: int) -> str:
    if name.endswith("_seconds"):
        for unit, seconds in (("h", 3600), ("min", 60)):
            if value >= seconds and value % seconds == 0:
                return f" ({value // seconds} {unit})"
    if name.endswith("_hours") and value >= 24 and value % 24 == 0:
        return f" ({value // 24} days)"
    return ""


def _cell(text: str) -> str:
    return " ".join(text.split()).replace("|", "\\|")


if __name__ == "__main__":
    sys.exit(main())
