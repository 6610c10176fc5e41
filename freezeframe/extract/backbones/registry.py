"""The backbone registry: one entry per `--backbone` value, each bringing its config dataclass, builder, the arrays
it stores, what it takes (frames or windows) and its preprocessing. CLI options come from the config's fields.

A new backbone is one module that defines a config dataclass (fields made with `option(...)`) and decorates its
builder with `@register_backbone(...)`; the CLI, the runner, the Ray engine and the README table follow.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

from freezeframe.errors import InputError
from freezeframe.options import FieldError, Option, format_default, options_of
from freezeframe.registry import Registry


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

    def make_config(self, **values: Any) -> Any:
        """The config of this entry from field values (unnamed fields keep their defaults)."""
        return self.config(**{**values, **self.preset})


REGISTRY = Registry("backbone", "freezeframe.extract.backbones")


def register_backbone(name: str, *, config: type, summary: str, arrays: str, preprocess: str,
                      windows: WindowDefaults | None = None, preset: Mapping[str, Any] | None = None,
                      required: tuple[str, ...] = ()) -> Callable:
    """Decorator: register the decorated builder (a class or function taking `(config, device=...)`) as `name`."""

    def decorate(build: Callable) -> Callable:
        REGISTRY.add(name, BackboneEntry(name, config, build, summary, arrays, preprocess, windows, dict(preset or {}),
                                         required))
        return build

    return decorate


def backbone_names() -> list[str]:
    return REGISTRY.names()


def get_entry(name: str) -> BackboneEntry:
    """The entry registered as `name`; an unknown name is one sentence listing the known ones."""
    return REGISTRY.entry(name)


def entry_for_config(config: Any) -> BackboneEntry:
    """The entry whose config type is `config`'s and whose preset fields it carries."""
    REGISTRY.load()
    for entry in REGISTRY.values():
        if type(config) is entry.config and all(getattr(config, k) == v for k, v in entry.preset.items()):
            return entry
    raise TypeError(f"no registered backbone is built from a {type(config).__name__}")


# ---- options: one per config field, shared by the backbones that have a field of that name -------------------

@dataclass(frozen=True)
class OptionSpec:
    """A CLI option generated from config fields: `--flag` and, per backbone, the field it sets."""

    flag: str
    kind: str  # how its text parses (freezeframe.options.KINDS)
    per_backbone: dict[str, Option]  # backbone name -> its field's option

    @property
    def fields(self) -> dict[str, str]:
        return {name: o.field for name, o in self.per_backbone.items()}

    @property
    def defaults(self) -> dict[str, Any]:
        return {name: o.default for name, o in self.per_backbone.items()}


def backbone_options() -> list[OptionSpec]:
    """Every backbone option, in first-seen order; a flag that two backbones parse differently is a defect."""
    specs: dict[str, OptionSpec] = {}
    for name in backbone_names():
        entry = REGISTRY[name]
        for o in options_of(entry.config, exclude=entry.preset):
            spec = specs.setdefault(o.flag, OptionSpec(o.flag, o.kind, {}))
            if spec.kind != o.kind:
                raise TypeError(f"{o.flag} parses as {spec.kind} for one backbone and {o.kind} for {name}")
            spec.per_backbone[name] = o
    return list(specs.values())


def backbone_config(name: str, **fields: Any) -> Any:
    """The config of backbone `name` from its field values (the rest keep their defaults). Unknown fields, fields
    the entry fixes, and required fields left out (a weights file: nothing is downloaded, so random weights must be
    asked for with "none") are refused with one sentence."""
    entry = get_entry(name)
    options = {o.field: o for o in options_of(entry.config, exclude=entry.preset)}
    unknown = sorted(set(fields) - set(options))
    if unknown:
        raise InputError(f"backbone {name} has no option {unknown[0]!r}; its options are {', '.join(options)}.")
    for field_name in entry.required:
        if field_name not in fields:
            o = options[field_name]
            raise InputError(f"--backbone {name} needs {o.flag} ({field_name}=... in Python): {o.help}")
    return entry.make_config(**fields)


def config_from_options(name: str, given: Mapping[str, Any]) -> Any:
    """The config of backbone `name` from CLI values by flag (None: not given). Options of other backbones and
    missing required ones are refused with one sentence that names the flag."""
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
        values[spec.fields[name]] = spec.per_backbone[name].parse(text)
    try:
        return backbone_config(name, **values)
    except FieldError as exc:  # the config names its field; the command line names the flag
        options = options_of(entry.config, exclude=entry.preset)
        flag = next((o.flag for o in options if o.field == exc.field), exc.field)
        raise InputError(f"{flag} {exc.problem}") from None


def _grouped(spec: OptionSpec) -> list[tuple[list[str], Any, str]]:
    """The backbones of an option grouped by (default, help), in registry order."""
    groups: dict[tuple[str, str], list[str]] = {}
    for name, o in spec.per_backbone.items():
        groups.setdefault((repr(o.default), o.help), []).append(name)
    return [(names, spec.per_backbone[names[0]].default, spec.per_backbone[names[0]].help)
            for names in groups.values()]


def _required(spec: OptionSpec, names: list[str]) -> bool:
    return all(spec.fields[name] in REGISTRY[name].required for name in names)


def option_help(spec: OptionSpec, backbone: str | None = None) -> str:
    """Click help of a generated option: per backbone, what it means and its default; with `backbone`, that
    backbone's alone (without the name)."""
    parts = []
    for names, default, text in _grouped(spec):
        if backbone is not None and backbone not in names:
            continue
        shown = "" if spec.kind == "bool" else " [required]" if _required(spec, names) else \
            f" [default: {format_default(default)}]"
        parts.append(f"{text}{shown}" if backbone is not None else f"{'/'.join(names)}: {text}{shown}")
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
