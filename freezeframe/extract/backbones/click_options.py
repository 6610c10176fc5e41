"""`freezeframe extract`'s backbone options, generated from the registry (the config fields are the one source)."""

from __future__ import annotations

from typing import Callable

import click

from freezeframe.extract.backbones.registry import REGISTRY, backbone_names, backbone_options, option_help


METAVARS = {"str": "TEXT", "int": "INTEGER", "float": "FLOAT", "ints": "INT,...", "strs": "NAME,..."}


def backbone_choice_help() -> str:
    """`--backbone` help: each registered backbone in one phrase."""
    return "; ".join(f"{name}: {REGISTRY[name].summary}" for name in backbone_names()) + "."


def with_backbone_options(command: Callable) -> Callable:
    """Decorate a click command with `--backbone` and one option per backbone config field.

    Every generated option defaults to None (not given): the chosen backbone's dataclass default applies, and
    `config_from_options` refuses options of other backbones.
    """
    for spec in reversed(backbone_options()):
        name = spec.flag[2:].replace("-", "_")
        if spec.kind == "bool":
            command = click.option(spec.flag, name, is_flag=True, default=None, help=option_help(spec))(command)
        else:
            command = click.option(spec.flag, name, default=None, metavar=METAVARS[spec.kind],
                                   help=option_help(spec))(command)
    return click.option("--backbone", type=click.Choice(backbone_names()), default="clip", show_default=True,
                        help=backbone_choice_help())(command)


def given_backbone_options(values: dict) -> dict:
    """Pop the generated options out of a click command's keyword arguments: {flag: value or None}."""
    return {spec.flag: values.pop(spec.flag[2:].replace("-", "_")) for spec in backbone_options()}
