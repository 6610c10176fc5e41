"""Which parameters weight decay applies to, as nanoGPT and open_clip_train decide it: the weight matrices of linear,
convolution and attention projections decay; biases, norms, embeddings, tokens, queries and positional parameters
(and any scalar, e.g. a temperature) do not, since shrinking them towards zero only hurts."""

from __future__ import annotations

from typing import Iterable

import torch.nn as nn

# modules none of whose parameters decay
NO_DECAY_MODULES = (nn.Embedding, nn.EmbeddingBag, nn.LayerNorm, nn.GroupNorm, nn.RMSNorm,
                    nn.modules.batchnorm._NormBase)


def decays(module: nn.Module, name: str, parameter: nn.Parameter) -> bool:
    """True for a weight matrix (or kernel) of a layer. Tokens, queries and positional embeddings are parameters of
    their own (`cls_token`, `pos_embed`, `query`), not a layer's `weight`, so they do not decay."""
    return parameter.ndim >= 2 and not isinstance(module, NO_DECAY_MODULES) and name.endswith("weight")


def parameter_groups(modules: Iterable[nn.Module], weight_decay: float) -> list[dict]:
    """Optimizer parameter groups of the trainable parameters of `modules`: those that decay with `weight_decay`,
    the rest with none (a parameter shared by two modules is listed once)."""
    groups: dict[bool, list[nn.Parameter]] = {True: [], False: []}
    seen: set[int] = set()
    for top in modules:
        for module in top.modules():
            for name, parameter in module.named_parameters(recurse=False):
                if parameter.requires_grad and id(parameter) not in seen:
                    seen.add(id(parameter))
                    groups[decays(module, name, parameter)].append(parameter)
    return [{"params": groups[True], "weight_decay": weight_decay}, {"params": groups[False], "weight_decay": 0.0}]
