"""The `freezeframe` command line; each module registers its commands on the one group, `main`."""

from freezeframe.cli import demo, extract, stores, text, train, videoclip  # noqa: F401  (registers the commands)
from freezeframe.cli.group import main

__all__ = ["main"]
