"""Config fields that are also command-line options: each default and help text is written once, on the field.

Backbone, head and training configs make their user-facing fields with `option(default, help)`; the CLI
generates its options from them (freezeframe.cli.options) and the README's option tables are generated too.
Library code names its own fields in errors (`FieldError`); the command line translates a field to its flag.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable

from freezeframe.errors import InputError


class FieldError(InputError):
    """A config field's value is refused. The message names the field; `field` lets a command line name its flag."""

    def __init__(self, field_name: str, problem: str) -> None:
        super().__init__(f"{field_name} {problem}")
        self.field, self.problem = field_name, problem


def option(default: Any, help: str, flag: str | None = None, default_factory: Callable | None = None,
           shown: str | None = None) -> Any:
    """A config field that is also a CLI option: its default and help are written once, here.

    `flag` names the option when it is not `--` + the field name (e.g. S3D's `weights` is `--pretrained`);
    `shown` words a default that is no plain value (e.g. None: "the model's own").
    """
    metadata = {"help": help, **({"flag": flag} if flag else {}), **({"shown": shown} if shown else {})}
    if default_factory is not None:
        return field(default_factory=default_factory, metadata=metadata)
    return field(default=default, metadata=metadata)


# how an option's text parses, by the field's type
KINDS = {str: "str", int: "int", float: "float", bool: "bool", tuple[int, ...]: "ints", tuple[str, ...]: "strs",
         tuple[int, int]: "pair"}


@dataclass(frozen=True)
class Option:
    """One config field as a CLI option: its flag, how its text parses, its default and help."""

    flag: str
    field: str
    kind: str  # a value of KINDS
    default: Any
    help: str
    shown: str  # the default as help and tables word it

    @property
    def switch(self) -> bool:
        """A flag that is on by default, given as `--flag/--no-flag`."""
        return self.kind == "bool" and self.default is True

    @property
    def param(self) -> str:
        """The keyword a click command receives the option's value under."""
        return self.flag[2:].replace("-", "_")

    def parse(self, text: Any) -> Any:
        """The field value of a CLI value; a value that does not parse is one sentence naming the flag."""
        if self.kind in ("bool", "str") or not isinstance(text, str):
            return text
        try:
            if self.kind == "int":
                return int(text)
            if self.kind == "float":
                return float(text)
            parts = [part.strip() for part in text.split(",") if part.strip()]
            if self.kind == "strs":
                return tuple(parts)
            values = tuple(int(part) for part in parts)
        except ValueError:
            wanted = {"int": "an integer", "float": "a number", "ints": "a comma list of integers"}.get(
                self.kind, "two integers MIN,MAX")
            raise InputError(f"{self.flag} {text!r} is not {wanted}.") from None
        if self.kind == "pair" and len(values) != 2:
            raise InputError(f"{self.flag} takes two integers MIN,MAX, got {text!r}.")
        return values


def field_kind(config: type, f: dataclasses.Field) -> str:
    hint = typing.get_type_hints(config)[f.name]
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    if hint not in KINDS and len(args) == 1 and typing.get_origin(hint) in (typing.Union, types.UnionType):
        hint = args[0]  # `int | None`: an int, or the config's own choice when not given
    if hint not in KINDS:
        raise TypeError(f"{config.__name__}.{f.name}: option fields are str, int, float, bool or tuples of int/str")
    return KINDS[hint]


def field_default(f: dataclasses.Field) -> Any:
    return f.default_factory() if f.default is dataclasses.MISSING else f.default


def options_of(config: type, exclude: Iterable[str] = (), defaults: Any = None) -> list[Option]:
    """The user-facing fields of a config dataclass (those made with `option`), in declaration order; `defaults`
    (an instance of `config`) replaces the field defaults, for a recipe that changes some."""
    excluded = set(exclude)
    options = []
    for f in dataclasses.fields(config):
        if "help" not in f.metadata or f.name in excluded:
            continue
        default = field_default(f) if defaults is None else getattr(defaults, f.name)
        shown = f.metadata.get("shown") if default == field_default(f) else None
        options.append(Option("--" + f.metadata.get("flag", f.name).replace("_", "-"), f.name, field_kind(config, f),
                              default, f.metadata["help"], shown or format_default(default)))
    return options


def format_default(value: Any) -> str:
    if isinstance(value, tuple):
        return ",".join(map(str, value))
    if value is None:
        return "the model's own"
    if isinstance(value, bool):
        return "on" if value else "off"
    return str(value)


def given_values(options: Iterable[Option], given: dict[str, Any]) -> dict[str, Any]:
    """Field values of the options a user gave: `given` maps each option's flag to its text (None: not given)."""
    by_flag = {o.flag: o for o in options}
    return {by_flag[flag].field: by_flag[flag].parse(text) for flag, text in given.items() if text is not None}


def options_table(options: Iterable[Option]) -> list[str]:
    """Markdown rows `| --flag | default | meaning |`."""
    return [f"| `{o.flag}{f'/--no-{o.flag[2:]}' if o.switch else ''}` | `{o.shown}` | {o.help} |" for o in options]
