"""The `freezeframe` command line. Each module registers its commands on the one group, `main`, which imports a
command's module only when that command is used (freezeframe.cli.group.COMMAND_MODULES)."""

from freezeframe.cli.group import main

__all__ = ["main"]
