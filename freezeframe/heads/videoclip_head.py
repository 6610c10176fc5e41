"""The `videoclip` head: light towers (heads.videoclip) or BERT-initialised ones (heads.videoclip_bert), as
`--towers` says. Registered here, apart from both, so that neither tower module imports the other."""

from __future__ import annotations

import torch.nn as nn

from freezeframe.heads.registry import register_head
from freezeframe.heads.videoclip import VideoCLIP, VideoClipConfig, size_videoclip
from freezeframe.heads.videoclip_bert import BertVideoCLIP


@register_head("videoclip", config=VideoClipConfig, size=size_videoclip, task="contrastive",
               summary="VideoCLIP-style video and text towers over video vectors in time order and cached BERT token "
                       "states, masked-mean pooled into one space; or, with `--towers bert`, VideoCLIP as published",
               reads="one vector per row, in time order (`video_embedding` or `embed`), `tokens/<L>` or `token_ids` "
                     "of a text set")
def build_videoclip(config: VideoClipConfig) -> nn.Module:
    """The towers `config.towers` names."""
    return BertVideoCLIP(config) if config.towers == "bert" else VideoCLIP(config)
