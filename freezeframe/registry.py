"""Entries by name, filled by decorators as their package is imported (timm's `register_model` pattern): the
backbone registry (`extract.backbones.registry`) and the head registry (`heads.registry`) are each one."""

from __future__ import annotations

import importlib
from typing import Any

from freezeframe.errors import InputError


class Registry(dict):
    """name -> entry for one kind of thing (`backbone`, `head`); importing `package` registers the built-in ones."""

    def __init__(self, kind: str, package: str) -> None:
        super().__init__()
        self.kind, self.package = kind, package

    def add(self, name: str, entry: Any) -> None:
        if name in self:
            raise ValueError(f"{self.kind} {name!r} is registered twice")
        self[name] = entry

    def load(self) -> None:
        importlib.import_module(self.package)

    def names(self) -> list[str]:
        self.load()
        return list(self)

    def entry(self, name: str) -> Any:
        """The entry registered as `name`; an unknown name is one sentence listing the known ones."""
        self.load()
        if name not in self:
            raise InputError(f"unknown {self.kind} {name!r}; choose one of {', '.join(self)}.")
        return self[name]
