"""The head registry: one entry per head (`freezeframe train <head>`), like timm's `register_model`.

Each head module registers its builder with its config dataclass, how it sizes that config from a feature set,
the task it trains on (classification from labels, or contrastive from captions), the arrays it reads, and what
its training needs beyond the shared fit loop (frozen weights or input statistics before training, or a
closed-form fit instead of gradients). Its CLI options and the README's head tables are generated from the config
fields made with `freezeframe.options.option`. A new head is one module plus one `@register_head(...)`.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any, Callable, Protocol, Sequence

import numpy as np
import torch.nn as nn

from freezeframe.errors import InputError
from freezeframe.options import Option, options_of, options_table
from freezeframe.registry import Registry

TASKS = ("classification", "contrastive")


class FeatureSource(Protocol):
    """What a head reads of a feature set (a store's `FeatureSet` is one)."""

    name: str
    provenance: dict

    def arrays(self) -> dict[str, dict]: ...

    def frozen_weights(self) -> dict[str, np.ndarray]: ...


@dataclass
class Solution:
    """What a closed-form fit reports: its final metrics and the sweep that chose its setting (one row each)."""

    metrics: dict
    sweep: list[dict]
    swept: str  # the key the sweep varies (the x axis of its curve)


@dataclass(frozen=True)
class HeadEntry:
    """What the rest of freezeframe knows of a head."""

    name: str  # the `freezeframe train` subcommand and run.json's `head`
    config: type  # its config dataclass; fields made with `option` are CLI options
    build: Callable[[Any], nn.Module]  # build(config) -> the head
    size: Callable[..., Any]  # size(feature_set, ..., **options) -> config: the fields the features decide
    task: str  # classification (labels, logits) or contrastive (captions, a video and a text embedding)
    summary: str  # one line: what it is
    reads: str  # the arrays it reads
    prepare: Callable[[nn.Module, FeatureSource, Sequence], None] | None = None  # before training, with the train set
    solve: Callable[..., Solution] | None = None  # solve(head, train_set, val_set, seed): no gradient training
    frames: tuple[str, str] = ("sparse-random:8", "uniform:8")  # default training and evaluation frames

    def options(self) -> list[Option]:
        return options_of(self.config)


REGISTRY = Registry("head", "freezeframe.heads")


def register_head(name: str, *, config: type, size: Callable[..., Any], task: str, summary: str, reads: str,
                  prepare: Callable | None = None, solve: Callable | None = None,
                  frames: tuple[str, str] = HeadEntry.frames) -> Callable:
    """Decorator: register the decorated builder (a class or function taking the config) as head `name`."""
    if task not in TASKS:
        raise ValueError(f"head {name!r}: task must be one of {TASKS}")

    def decorate(build: Callable) -> Callable:
        REGISTRY.add(name, HeadEntry(name, config, build, size, task, summary, reads, prepare, solve, frames))
        return build

    return decorate


def head_names() -> list[str]:
    return REGISTRY.names()


def get_head(name: str) -> HeadEntry:
    """The entry registered as `name`; an unknown name is one sentence listing the known ones."""
    return REGISTRY.entry(name)


def head_config(kind: str, feature_set: FeatureSource, *args: Any, **options: Any) -> Any:
    """A head config sized from what the feature set stores; `options` set the head's own fields.

    Classification heads take (feature_set, num_classes, num_frames); contrastive ones (video_set, text_set)."""
    return get_head(kind).size(feature_set, *args, **options)


def build_head(kind: str, config: Any) -> nn.Module:
    return get_head(kind).build(config)


def config_from_dict(kind: str, data: dict) -> Any:
    """A head config from its saved fields (run.json); lists become tuples, unknown keys are dropped."""
    cls = get_head(kind).config
    names = {f.name for f in fields(cls)}
    return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in data.items() if k in names})


def array_shape(feature_set: FeatureSource, array: str) -> list[int]:
    """The per-row shape of a stored array; a missing one is one sentence naming what the set has."""
    arrays = feature_set.arrays()
    if array not in arrays:
        raise InputError(f"feature set {feature_set.name!r} has no array {array!r}; it has: {', '.join(arrays)}.")
    return arrays[array]["shape"]


def vector_width(feature_set: FeatureSource, array: str) -> int:
    """The width of an array that holds one vector per row (embed, cls, ...)."""
    shape = array_shape(feature_set, array)
    if len(shape) != 1:
        raise InputError(f"array {array!r} of feature set {feature_set.name!r} holds {tuple(shape)} per row, not "
                         "one vector; choose a per-row vector such as embed.")
    return shape[0]


# ---- the README's head tables, generated (a test checks the README holds them verbatim) ----------------------

def markdown_tables() -> str:
    """The README's head table and, per head, its options table, from the registry."""
    lines = ["| head | task | what it is | reads |", "|---|---|---|---|"]
    for name in head_names():
        entry = REGISTRY[name]
        lines.append(f"| `{name}` | {entry.task} | {entry.summary} | {entry.reads} |")
    for name in head_names():
        lines += ["", f"`freezeframe train {name}` head options:", "",
                  "| option | default | meaning |", "|---|---|---|", *options_table(REGISTRY[name].options())]
    return "\n".join(lines)
