"""The `freezeframe` command group, and what every command shares: one-line errors and option parsers."""

from __future__ import annotations

import sys

import click

from freezeframe.errors import FreezeframeError
from freezeframe.printable import printable


def int_list(text: str) -> tuple[int, ...]:
    """Parse a comma-separated list of integers (for options such as --layers)."""
    try:
        return tuple(int(part) for part in text.replace(" ", "").split(",") if part)
    except ValueError:
        raise click.BadParameter(f"expected comma-separated integers, got {text!r}") from None


def option_given(param: str) -> bool:
    """True when the user set option `param` of the running command (command line or environment), not its default."""
    from click.core import ParameterSource

    source = click.get_current_context().get_parameter_source(param)
    return source in (ParameterSource.COMMANDLINE, ParameterSource.ENVIRONMENT)


def refuse_ignored(rules: dict[str, tuple[str, bool]]) -> None:
    """Usage error for the first option given that this run would silently ignore: {param: (why, used)}."""
    for param, (why, used) in rules.items():
        if option_given(param) and not used:
            flag = "--" + param.replace("_", "-")
            raise click.UsageError(f"{why}; this run would ignore it: drop {flag} or add what it needs.")


class _Group(click.Group):
    """Turns freezeframe's own errors into one line on stderr and exit status 2, and Ctrl-C into exit 130."""

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except FreezeframeError as exc:
            click.echo(f"error: {printable(exc)}", err=True)  # names in it come from files: never a line of their own
            sys.exit(2)
        except KeyboardInterrupt:  # commands that commit work say what was kept; this is the plain fallback
            click.echo("\ninterrupted", err=True)
            sys.exit(130)


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="freezeframe")
def main() -> None:
    """Run frozen video and text backbones once; cache multi-layer features; train light heads on the cache."""

