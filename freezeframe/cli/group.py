"""The `freezeframe` command group, and what every command shares: one-line errors and option parsers."""

from __future__ import annotations

import sys

import click

from freezeframe.errors import FreezeframeError


def int_list(text: str) -> tuple[int, ...]:
    """Parse a comma-separated list of integers (for options such as --layers)."""
    try:
        return tuple(int(part) for part in text.replace(" ", "").split(",") if part)
    except ValueError:
        raise click.BadParameter(f"expected comma-separated integers, got {text!r}") from None


class _Group(click.Group):
    """Turns freezeframe's own errors into one line on stderr and exit status 2."""

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except FreezeframeError as exc:
            click.echo(f"error: {exc}", err=True)
            sys.exit(2)


@click.group(cls=_Group)
@click.version_option(package_name="freezeframe")
def main() -> None:
    """Run frozen video and text backbones once; cache multi-layer features; train light heads on the cache."""

