"""The backbone registry: one entry per `--backbone` value, each bringing its config dataclass, builder, the arrays
it stores, what it takes (frames or windows) and its preprocessing. CLI options come from the config's fields.

A new backbone is one module that defines a config dataclass (fields made with `option(...)`) and decorates its
builder with `@register_backbone(...)`; the CLI, the runner, the Ray engine and the README table follow.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

from freezeframe.errors import InputError


@dataclass(frozen=True)
class WindowDefaults:
    """Sampling a window backbone gets when the user names none: frames per window, frames between starts, rate."""

    frames: int
    stride: int
    fps: float


@dataclass(frozen=True)
class BackboneEntry:
    """What the rest of freezeframe knows of a backbone."""

    name: str  # the --backbone value
    config: type  # its config dataclass
    build: Callable  # build(config, device=...) -> Backbone
    summary: str  # one line: what it is
    arrays: str  # the arrays it stores, per row, with shapes
    preprocess: str  # how frames are prepared for it
    windows: WindowDefaults | None = None  # None: one frame per row; else it takes windows, with these defaults
    preset: Mapping[str, Any] = field(default_factory=dict)  # config fields this entry fixes (not CLI options)
    required: tuple[str, ...] = ()  # options the CLI must be given (e.g. a weights path: nothing is downloaded)

    @property
    def takes_windows(self) -> bool:
        return self.windows is not None

    def fields(self) -> list[dataclasses.Field]:
        """The config fields a user sets (all but the preset ones), in declaration order."""
        return [f for f in dataclasses.fields(self.config) if f.name not in self.preset]

    def make_config(self, **values: Any) -> Any:
        """The config of this entry from field values (unnamed fields keep their defaults)."""
        return self.config(**{**values, **self.preset})


REGISTRY: dict[str, BackboneEntry] = {}


def option(default: Any, help: str, flag: str | None = None, default_factory: Callable | None = None) -> Any:
    """A config field that is also a CLI option: its default and help are written once, here.

    `flag` names the option when it is not `--` + the field name (e.g. S3D's `weights` is `--pretrained`).
    """
    metadata = {"help": help, **({"flag": flag} if flag else {})}
    if default_factory is not None:
        return field(default_factory=default_factory, metadata=metadata)
    return field(default=default, metadata=metadata)


def register_backbone(name: str, *, config: type, summary: str, arrays: str, preprocess: str,
                      windows: WindowDefaults | None = None, preset: Mapping[str, Any] | None = None,
                      required: tuple[str, ...] = ()) -> Callable:
    """Decorator: register the decorated builder (a class or function taking `(config, device=...)`) as `name`."""

    def decorate(build: Callable) -> Callable:
        if name in REGISTRY:
            raise ValueError(f"backbone {name!r} is registered twice")
        REGISTRY[name] = BackboneEntry(name, config, build, summary, arrays, preprocess, windows, dict(preset or {}),
                                       required)
        return build

    return decorate


def _load_all() -> None:
    import freezeframe.extract.backbones  # noqa: F401 - importing the package registers every built-in backbone


def backbone_names() -> list[str]:
    _load_all()
    return list(REGISTRY)


def get_entry(name: str) -> BackboneEntry:
    """The entry registered as `name`; an unknown name is one sentence listing the known ones."""
    _load_all()
    if name not in REGISTRY:
        raise InputError(f"unknown backbone {name!r}; choose one of {', '.join(REGISTRY)}.")
    return REGISTRY[name]


def entry_for_config(config: Any) -> BackboneEntry:
    """The entry whose config type is `config`'s and whose preset fields it carries."""
    _load_all()
    for entry in REGISTRY.values():
        if type(config) is entry.config and all(getattr(config, k) == v for k, v in entry.preset.items()):
            return entry
    raise TypeError(f"no registered backbone is built from a {type(config).__name__}")


# ---- options: one per config field, shared by the backbones that have a field of that name -------------------

@dataclass(frozen=True)
class OptionSpec:
    """A CLI option generated from config fields: `--flag`, how its text parses, and each backbone's default."""

    flag: str
    kind: str  # str, int, float, bool, ints (comma list), strs (comma list)
    fields: dict[str, str]  # backbone name -> field name
    defaults: dict[str, Any]  # backbone name -> default
    helps: dict[str, str]  # backbone name -> help

    def parse(self, text: Any) -> Any:
        """The field value of a CLI value; a value that does not parse is one sentence."""
        if self.kind in ("bool",) or not isinstance(text, str):
            return text
        try:
            if self.kind == "int":
                return int(text)
            if self.kind == "float":
                return float(text)
            if self.kind == "ints":
                return tuple(int(part) for part in text.split(",") if part.strip())
            if self.kind == "strs":
                return tuple(part.strip() for part in text.split(",") if part.strip())
        except ValueError:
            wanted = "a comma list of integers" if self.kind == "ints" else "a number"
            raise InputError(f"{self.flag} {text!r} is not {wanted}.") from None
        return text


KINDS = {str: "str", int: "int", float: "float", bool: "bool", tuple[int, ...]: "ints", tuple[str, ...]: "strs"}


def _field_kind(config: type, f: dataclasses.Field) -> str:
    hint = typing.get_type_hints(config)[f.name]
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    if hint not in KINDS and len(args) == 1 and typing.get_origin(hint) in (typing.Union, types.UnionType):
        hint = args[0]  # `int | None`: an int, or the backbone's own choice when not given
    if hint not in KINDS:
        raise TypeError(f"{config.__name__}.{f.name}: option fields are str, int, float, bool or tuples of int/str")
    return KINDS[hint]


def flag_of(f: dataclasses.Field) -> str:
    return "--" + f.metadata.get("flag", f.name).replace("_", "-")


def field_default(f: dataclasses.Field) -> Any:
    return f.default_factory() if f.default is dataclasses.MISSING else f.default


def backbone_options() -> list[OptionSpec]:
    """Every backbone option, in first-seen order; a flag that two backbones parse differently is a defect."""
    specs: dict[str, OptionSpec] = {}
    for name in backbone_names():
        entry = REGISTRY[name]
        for f in entry.fields():
            if "help" not in f.metadata:
                continue  # not user-facing
            flag, kind = flag_of(f), _field_kind(entry.config, f)
            spec = specs.setdefault(flag, OptionSpec(flag, kind, {}, {}, {}))
            if spec.kind != kind:
                raise TypeError(f"{flag} parses as {spec.kind} for one backbone and {kind} for {name}")
            spec.fields[name], spec.defaults[name], spec.helps[name] = f.name, field_default(f), f.metadata["help"]
    return list(specs.values())


def config_from_options(name: str, given: Mapping[str, Any]) -> Any:
    """The config of backbone `name` from CLI values by flag (None: not given). Options of other backbones and
    missing required ones are refused with one sentence."""
    entry = get_entry(name)
    specs = {spec.flag: spec for spec in backbone_options()}
    values = {}
    for flag, text in given.items():
        if text is None or text is False:
            continue
        spec = specs[flag]
        if name not in spec.fields:
            raise InputError(f"{flag} is not an option of --backbone {name} (it is for "
                             f"{', '.join(spec.fields)}); see `freezeframe extract --help`.")
        values[spec.fields[name]] = spec.parse(text)
    for field_name in entry.required:
        if field_name not in values:
            f = next(f for f in entry.fields() if f.name == field_name)
            raise InputError(f"--backbone {name} needs {flag_of(f)}: {f.metadata['help']}")
    return entry.make_config(**values)


def format_default(value: Any) -> str:
    if isinstance(value, tuple):
        return ",".join(map(str, value))
    if value is None:
        return "the model's own"
    if isinstance(value, bool):
        return "on" if value else "off"
    return str(value)


def _grouped(spec: OptionSpec) -> list[tuple[list[str], Any, str]]:
    """The backbones of an option grouped by (default, help), in registry order."""
    groups: dict[tuple[str, str], list[str]] = {}
    for name in spec.fields:
        groups.setdefault((repr(spec.defaults[name]), spec.helps[name]), []).append(name)
    return [(names, spec.defaults[names[0]], spec.helps[names[0]]) for names in groups.values()]


def _required(spec: OptionSpec, names: list[str]) -> bool:
    return all(spec.fields[name] in REGISTRY[name].required for name in names)


def option_help(spec: OptionSpec) -> str:
    """Click help of a generated option: per backbone, what it means and its default."""
    parts = []
    for names, default, text in _grouped(spec):
        shown = "" if spec.kind == "bool" else " [required]" if _required(spec, names) else \
            f" [default: {format_default(default)}]"
        parts.append(f"{'/'.join(names)}: {text}{shown}")
    return "; ".join(parts) + "."


# ---- the README's backbone tables, generated (a test checks the README holds them verbatim) -------------------

def markdown_tables() -> str:
    """The README's backbone table and options table, from the registry."""
    lines = ["| `--backbone` | rows | arrays per row | preprocessing |", "|---|---|---|---|"]
    for name in backbone_names():
        entry = REGISTRY[name]
        rows = (f"windows ({entry.windows.frames} frames every {entry.windows.stride} at {entry.windows.fps:g} fps)"
                if entry.windows else "frames")
        lines.append(f"| `{name}` | {rows} | {entry.arrays} | {entry.preprocess} |")
    lines += ["", "| option | backbones: default | meaning |", "|---|---|---|"]
    for spec in backbone_options():
        for names, default, text in _grouped(spec):
            shown = "off" if spec.kind == "bool" else "required" if _required(spec, names) else \
                f"`{format_default(default)}`"
            lines.append(f"| `{spec.flag}` | {', '.join(names)}: {shown} | {text} |")
    return "\n".join(lines)
