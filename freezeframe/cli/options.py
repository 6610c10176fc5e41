"""Click options generated from config fields (freezeframe.options): backbones' for `extract`, heads' and
training's for `train`. Every generated option defaults to None (not given), so the config's own default applies."""

from __future__ import annotations

from typing import Callable, Iterable

import click

from freezeframe.extract.backbones.registry import REGISTRY, backbone_names, backbone_options, option_help
from freezeframe.options import Option

METAVARS = {"str": "TEXT", "int": "INTEGER", "float": "FLOAT", "ints": "INT,...", "strs": "NAME,...",
            "pair": "MIN,MAX"}


def _click_option(flag: str, param: str, kind: str, help: str, switch: bool = False) -> Callable:
    if kind == "bool":
        return click.option(f"{flag}/--no-{flag[2:]}" if switch else flag, param, is_flag=True, default=None,
                            help=help)
    return click.option(flag, param, default=None, metavar=METAVARS[kind], help=help)


def with_options(options: Iterable[Option]) -> Callable:
    """Decorate a click command with one option per config field."""
    options = list(options)

    def decorate(command: Callable) -> Callable:
        for o in reversed(options):
            shown = "" if o.kind == "bool" and not o.switch else f" [default: {o.shown}]"
            command = _click_option(o.flag, o.param, o.kind, f"{o.help}{shown}", switch=o.switch)(command)
        return command

    return decorate


def given(options: Iterable[Option], values: dict) -> dict:
    """Pop the generated options out of a click command's keyword arguments: {flag: value or None}."""
    return {o.flag: values.pop(o.param) for o in options}


def backbone_choice_help() -> str:
    """`--backbone` help: each registered backbone in one phrase."""
    return "; ".join(f"{name}: {REGISTRY[name].summary}" for name in backbone_names()) + "."


def with_backbone_options(command: Callable) -> Callable:
    """Decorate `extract` with `--backbone` and one option per backbone config field; `config_from_options`
    refuses options of other backbones."""
    for spec in reversed(backbone_options()):
        command = _click_option(spec.flag, spec.flag[2:].replace("-", "_"), spec.kind, option_help(spec))(command)
    return click.option("--backbone", type=click.Choice(backbone_names()), default="clip", show_default=True,
                        help=backbone_choice_help())(command)


def chosen_backbone(args: list[str]) -> str:
    """The `--backbone` named in raw command-line arguments (before parsing), else the default."""
    for i, arg in enumerate(args):
        if arg == "--backbone" and i + 1 < len(args):
            return args[i + 1]
        if arg.startswith("--backbone="):
            return arg.split("=", 1)[1]
    return "clip"


class BackboneHelpCommand(click.Command):
    """`extract -h` shows the backbone options as the chosen `--backbone` (default clip) reads them, and hides
    those it does not take, instead of every backbone's meaning at once."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        ctx.meta["help_backbone"] = chosen_backbone(args)
        return super().parse_args(ctx, args)

    def format_help(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        chosen = ctx.meta.get("help_backbone", "clip")
        if chosen not in backbone_names():
            return super().format_help(ctx, formatter)
        specs = {spec.flag[2:].replace("-", "_"): spec for spec in backbone_options()}
        saved = {p.name: (p.help, p.hidden) for p in self.params if p.name in specs}
        try:
            for param in self.params:
                if param.name in specs:
                    spec = specs[param.name]
                    param.hidden = chosen not in spec.per_backbone
                    param.help = option_help(spec, chosen)
            super().format_help(ctx, formatter)
            formatter.write_paragraph()
            formatter.write_text(f"Backbone options above are those of --backbone {chosen}; "
                                 "`freezeframe extract --backbone NAME -h` shows another backbone's.")
        finally:
            for param in self.params:
                if param.name in saved:
                    param.help, param.hidden = saved[param.name]


def given_backbone_options(values: dict) -> dict:
    """Pop the backbone options out of `extract`'s keyword arguments: {flag: value or None}."""
    return {spec.flag: values.pop(spec.flag[2:].replace("-", "_")) for spec in backbone_options()}
