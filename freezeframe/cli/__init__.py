"""The `freezeframe` command line; each module registers its commands on the one group, `main`."""

from freezeframe.cli import demo, extract, stores, text, train  # noqa: F401  (registers the commands)
from freezeframe.cli.group import main

__all__ = ["main"]
