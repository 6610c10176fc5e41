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


# command -> the module that defines it. A command's module (and torch, the models, zarr behind it) is imported only
# when that command runs or its help is asked for, so `--version`, `-h` and the store commands start at once.
COMMAND_MODULES = {
    "demo": "demo", "extract": "extract", "extract-text": "text", "zeroshot": "text", "train": "train",
    "eval": "train", "inspect": "stores", "verify": "stores", "convert": "stores", "publish": "stores",
    "export-memmap": "stores", "export-npy": "stores", "rm": "stores",
}


class _Group(click.Group):
    """Loads each command's module when the command is used; turns freezeframe's own errors into one line on stderr
    and exit status 2, and Ctrl-C into exit 130."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(set(self.commands) | set(COMMAND_MODULES))

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        if name not in self.commands and name in COMMAND_MODULES:
            import importlib

            importlib.import_module(f"freezeframe.cli.{COMMAND_MODULES[name]}")  # registers its commands on `main`
        return self.commands.get(name)

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        """The command list of `-h`, each command's docstring read from its module's source without importing it."""
        docs = {**command_docstrings(), **{name: command.help or "" for name, command in self.commands.items()}}
        limit = formatter.width - 6 - max(map(len, docs))
        with formatter.section("Commands"):
            formatter.write_dl([(name, click.Command(name, help=docs[name]).get_short_help_str(limit))
                                for name in sorted(docs)])

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except FreezeframeError as exc:
            click.echo(f"error: {printable(exc)}", err=True)  # names in it come from files: never a line of their own
            sys.exit(2)
        except KeyboardInterrupt:  # commands that commit work say what was kept; this is the plain fallback
            click.echo("\ninterrupted", err=True)
            sys.exit(130)


def command_docstrings() -> dict[str, str]:
    """{command: its docstring} of the commands in COMMAND_MODULES, read from their source (`@main.command(...)`)."""
    import ast
    from pathlib import Path

    docs = {}
    for module in set(COMMAND_MODULES.values()):
        tree = ast.parse((Path(__file__).parent / f"{module}.py").read_text(encoding="utf-8"))
        for node in tree.body:
            for decorator in getattr(node, "decorator_list", []):
                call = decorator if isinstance(decorator, ast.Call) else None
                target = call.func if call else decorator
                if isinstance(target, ast.Attribute) and getattr(target.value, "id", "") == "main":
                    named = [arg.value for arg in call.args if isinstance(arg, ast.Constant)] if call else []
                    docs[named[0] if named else node.name.replace("_", "-")] = ast.get_docstring(node) or ""
    return docs


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="freezeframe")
def main() -> None:
    """Run frozen video and text backbones once; cache multi-layer features; train light heads on the cache."""

