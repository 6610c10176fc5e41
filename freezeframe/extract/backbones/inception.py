"""What I3D and S3D-G share: a stem, then inception blocks of given widths with max pools between them."""

from __future__ import annotations

from typing import Callable, Mapping, Sequence

import torch.nn as nn

Pools = Mapping[str, tuple[str, tuple[int, int, int], tuple[int, int, int]]]


def add_inception_stages(net: nn.Module, stages: list[str], dim: int, blocks: Sequence[tuple[str, tuple[int, ...]]],
                         block: Callable[..., nn.Module], pools: Pools, pool: Callable[..., nn.Module]) -> int:
    """Register each inception block `block(dim_in, *widths)` by its checkpoint name, then each max pool before the
    stage it precedes (`pools`: stage -> (pool name, kernel, stride)); `stages`, the forward order, is extended in
    place. Returns the last block's output width."""
    for name, widths in blocks:
        net.add_module(name, block(dim, *widths))
        dim = getattr(net, name).dim_out
        stages.append(name)
    for before, (name, kernel, stride) in pools.items():
        net.add_module(name, pool(kernel, stride))
        stages.insert(stages.index(before), name)
    return dim
