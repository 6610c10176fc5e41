"""Weight decay applies to weight matrices only: biases, norms, embeddings, tokens and positional parameters keep
their values under AdamW when their gradient is zero, as in nanoGPT and open_clip_train."""

from __future__ import annotations

import torch
import torch.nn as nn

from freezeframe.heads.registry import build_head, get_head
from freezeframe.train.weight_decay import parameter_groups


def names_in(groups: list[dict], module: nn.Module) -> list[set[str]]:
    by_id = {id(p): name for name, p in module.named_parameters()}
    return [{by_id[id(p)] for p in group["params"]} for group in groups]


def temporal_head() -> nn.Module:
    config = get_head("temporal").config(input_dim=16, num_classes=3, width=16, depth=1, heads=2, max_frames=8)
    return build_head("temporal", config)


def test_only_weight_matrices_decay():
    head = temporal_head()
    decay, keep = names_in(parameter_groups([head], 0.1), head)
    assert {"cls_token", "pos_embed"} <= keep
    assert all(name.endswith("bias") or "norm" in name or name in ("cls_token", "pos_embed") for name in keep), keep
    assert decay and all(name.endswith("weight") and "norm" not in name for name in decay), decay
    assert any("self_attn.in_proj_weight" in name for name in decay)  # attention projections decay
    assert decay | keep == {name for name, _ in head.named_parameters()} and not decay & keep


def test_embeddings_and_shared_parameters():
    model = nn.Sequential(nn.Embedding(10, 4), nn.Linear(4, 4), nn.LayerNorm(4))
    model.append(model[1])  # the same Linear twice: its parameters are listed once
    decay, keep = names_in(parameter_groups([model], 0.1), model)
    assert decay == {"1.weight"} and keep == {"0.weight", "1.bias", "2.weight", "2.bias"}


def test_adamw_with_the_groups_leaves_tokens_and_biases_alone():
    head = temporal_head()
    before = {name: p.detach().clone() for name, p in head.named_parameters()}
    optimizer = torch.optim.AdamW(parameter_groups([head], 0.5), lr=0.1)
    for p in head.parameters():
        p.grad = torch.zeros_like(p)
    optimizer.step()
    changed = {name for name, p in head.named_parameters() if not torch.equal(p, before[name])}
    assert "cls_token" not in changed and "pos_embed" not in changed
    assert not any(name.endswith("bias") for name in changed)
    assert any(name.endswith("weight") for name in changed)  # decayed towards zero


def test_a_last_checkpoint_with_one_parameter_group_is_refused_in_one_line(tmp_path):
    import pytest

    from freezeframe.errors import InputError
    from freezeframe.train.checkpoints import LAST
    from freezeframe.train.loop import TrainConfig, make_optimizer, restore_last

    head = temporal_head()
    old = torch.optim.AdamW(head.parameters(), lr=0.1, weight_decay=0.05)  # how runs were saved before the groups
    torch.save({"head": head.state_dict(), "optimizer": old.state_dict(), "epoch": 0, "best_score": 0.0},
               tmp_path / LAST)
    parts = {"head": head, "optimizer": make_optimizer([head], TrainConfig())}
    with pytest.raises(InputError, match="cannot be resumed: start the run again with --overwrite"):
        restore_last(tmp_path, parts, TrainConfig(), torch.device("cpu"), resume=True)
