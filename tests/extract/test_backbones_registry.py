"""The backbone registry: the docs' tables (docs/backbones.md) match it, options come from config fields, and a new backbone is one
config plus one entry that the runner drives end to end."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch

from freezeframe.errors import InputError
from freezeframe.extract import ExtractConfig, SamplingConfig, collect_sources, run_extraction
from freezeframe.extract.backbones import REGISTRY, FrozenBackbone, build_backbone, config_from_options, get_entry
from freezeframe.extract.backbones.registry import backbone_options, markdown_tables, register_backbone
from freezeframe.options import option
from freezeframe.extract.preprocess import PreprocessConfig
from freezeframe.store import open_store

BACKBONES_PAGE = Path(__file__).parents[2] / "docs" / "backbones.md"


def test_readme_backbone_tables_are_the_registrys():
    text = BACKBONES_PAGE.read_text(encoding="utf-8")
    block = re.search(r"<!-- backbones:start -->\n(.*?)\n<!-- backbones:end -->", text, re.S)
    assert block is not None and block.group(1) == markdown_tables()
    for name in ("clip", "s3d", "s3dg", "timm", "torchvision-video", "i3d"):
        assert f"| `{name}` |" in block.group(1)


def test_options_come_from_config_fields_and_other_backbones_options_are_refused():
    flags = {spec.flag: spec for spec in backbone_options()}
    assert flags["--pretrained"].fields["s3dg"] == "weights" and flags["--model"].defaults["clip"] == "ViT-B-32"
    config = config_from_options("timm", {"--pretrained": "none", "--layers": "0,-1", "--features": "embed,tokens"})
    assert config.layers == (0, -1) and config.features == ("embed", "tokens") and config.model == "resnet50"
    with pytest.raises(InputError, match="--resize-size is not an option of --backbone clip"):
        config_from_options("clip", {"--resize-size": "256"})
    with pytest.raises(InputError, match="needs --pretrained"):
        config_from_options("i3d", {})
    with pytest.raises(InputError, match="unknown backbone 'nope'"):
        get_entry("nope")
    assert get_entry("s3dg").make_config(weights="none").kind == "s3dg"


@dataclass(frozen=True)
class MeanColourConfig:
    scale: float = option(1.0, "multiplies the mean colour")

    def default_name(self) -> str:
        return "mean-colour"


class MeanColour(FrozenBackbone):
    """A toy frame backbone: each frame's mean normalised colour, times `scale`."""

    kind = "mean-colour"

    def __init__(self, config: MeanColourConfig, device="cpu") -> None:
        super().__init__()
        self.config, self.device = config, torch.device(device)
        self.weights_info, self.compute_dtype = {"library": "test"}, torch.float32
        self.preprocess = PreprocessConfig(size=(16, 16), mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0))

    def stored_arrays(self) -> list[str]:
        return ["colour"]

    def forward(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"colour": images.float().mean(dim=(2, 3)) * self.config.scale}


@pytest.fixture
def toy_entry():
    register_backbone("mean-colour", config=MeanColourConfig, summary="toy", arrays="`colour` (3)",
                      preprocess="16 px")(MeanColour)
    yield get_entry("mean-colour")
    del REGISTRY["mean-colour"]


def test_a_new_backbone_is_one_config_and_one_entry(toy_entry, tmp_path, sample_videos):
    backbone = build_backbone(config_from_options("mean-colour", {"--scale": "2.0"}))
    assert isinstance(backbone, MeanColour) and backbone.config.scale == 2.0
    config = ExtractConfig(store=str(tmp_path / "s"), sampling=SamplingConfig("num_frames", num_frames=3), workers=0,
                           progress=False)
    report = run_extraction(collect_sources([sample_videos["short_32frames.mp4"]]), backbone, config)
    assert report.stored == 1
    colour = open_store(tmp_path / "s")["mean-colour"].read("short_32frames", "colour")
    assert colour.shape == (3, 3) and np.all(colour > 0) and np.all(colour <= 2.0)  # [0, 1] pixels, doubled
    assert "| `mean-colour` |" in markdown_tables()
