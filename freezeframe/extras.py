"""Optional dependencies by use: reading a store needs none of them; a command that needs one and finds it missing
stops with one line naming the extra to install."""

from __future__ import annotations

import importlib
from types import ModuleType

from freezeframe.errors import InputError

# top-level module -> the extra of freezeframe that installs it (pyproject.toml [project.optional-dependencies])
EXTRA_OF = {"matplotlib": "train", "scipy": "train", "threadpoolctl": "train", "transformers": "text",
            "faiss": "videoclip"}


def require(module: str, needed_by: str) -> ModuleType:
    """Import `module` (dotted names allowed); when its package is not installed, an InputError naming the extra."""
    top = module.split(".")[0]
    try:
        return importlib.import_module(module)
    except ModuleNotFoundError as exc:
        if exc.name != top and not (exc.name or "").startswith(top + "."):
            raise  # the package is there but something it imports is not: its own error says more
        extra = EXTRA_OF.get(top, "all")
        raise InputError(f"{needed_by} needs {top}, which is not installed: pip install 'freezeframe[{extra}]'.") \
            from None
