"""The head registry: the docs' tables (docs/training.md) match it, every head (videoclip too) sizes itself from feature sets, options
come from config fields, and library errors name fields that the command line turns into flags."""

from __future__ import annotations

import re
from pathlib import Path
from types import SimpleNamespace

import pytest

from freezeframe.cli.train import head_command
from freezeframe.cli.train import markdown_tables as training_tables
from freezeframe.errors import InputError
from freezeframe.heads import EVLConfig, VideoClipConfig, build_head, get_head, head_config, head_names
from freezeframe.heads.registry import markdown_tables
from freezeframe.options import FieldError
from freezeframe.train.loop import TrainConfig

TRAINING_PAGE = Path(__file__).parents[2] / "docs" / "training.md"


def readme_block(name: str) -> str:
    block = re.search(rf"<!-- {name}:start -->\n(.*?)\n<!-- {name}:end -->", TRAINING_PAGE.read_text(encoding="utf-8"), re.S)
    assert block is not None, name
    return block.group(1)


def test_readme_head_and_training_tables_are_generated():
    assert readme_block("heads") == markdown_tables()
    assert readme_block("training") == training_tables()
    for name in ("probe", "temporal", "evl", "videoclip"):
        assert f"| `{name}` |" in readme_block("heads")


def feature_set(name: str, arrays: dict, provenance: dict | None = None) -> SimpleNamespace:
    """A stand-in for what a head reads of a feature set: its name, provenance and arrays' per-row shapes."""
    return SimpleNamespace(name=name, provenance=provenance or {},
                           arrays=lambda: {k: {"shape": list(v), "dtype": "float16"} for k, v in arrays.items()})


def test_every_head_sizes_itself_from_feature_sets_videoclip_included():
    video = feature_set("s3dg", {"video_embedding": (512,), "timestamps": ()})
    text = feature_set("bert", {"tokens/6": (384,), "token_ids": ()}, {"kind": "text", "layers": [6],
                                                                         "max_length": 24})
    config = head_config("videoclip", video, text, width=64, heads=4)
    assert isinstance(config, VideoClipConfig) and (config.video_dim, config.text_dim) == (512, 384)
    assert config.max_tokens == 24 and config.width == 64 and build_head("videoclip", config).config is config
    bert = head_config("videoclip", video, text, towers="bert", checkpoint="/nowhere")
    assert (bert.text_dim, bert.max_seconds, bert.video_layers, bert.text_layers) == (0, 32, 6, 0)  # MMPT's
    with pytest.raises(InputError, match="not a text feature set"):
        head_config("videoclip", video, video)
    tokens = feature_set("clip", {"embed": (8,), "tokens/3": (17, 8)},
                         {"attention": {"blocks": [2, 3], "num_heads": 2, "norm_eps": 1e-5}})
    evl = head_config("evl", tokens, 5, 8, num_layers=1)
    assert isinstance(evl, EVLConfig) and evl.blocks == (3,) and evl.grid == (4, 4) and evl.width == 8
    assert head_config("temporal", tokens, 5, 8).input_dim == 8
    with pytest.raises(InputError, match=r"holds \(17, 8\) per row, not one vector"):
        head_config("probe", tokens, 5, 8, array="tokens/3")
    with pytest.raises(InputError, match="unknown head 'nope'; choose one of probe, temporal, evl, videoclip"):
        head_config("nope", tokens, 5, 8)


def test_entries_carry_their_task_and_behaviour():
    tasks = {name: get_head(name).task for name in head_names()}
    assert tasks == {"probe": "classification", "temporal": "classification", "evl": "classification",
                     "videoclip": "contrastive"}
    assert get_head("probe").solve is not None and get_head("evl").prepare is not None
    assert get_head("temporal").prepare is not None and get_head("videoclip").solve is None


def test_options_come_from_config_fields_and_library_errors_name_fields():
    params = {p.name for p in head_command("evl").params}
    assert {"mlp_dropout", "temporal_pos", "init", "min_steps", "lr", "labels"} <= params
    assert {"captions", "span_seconds", "towers"} <= {p.name for p in head_command("videoclip").params}
    assert not {"lr", "epochs", "resume"} & {p.name for p in head_command("probe").params}
    with pytest.raises(FieldError, match="^init 'x' is unknown") as refused:
        EVLConfig(num_classes=2, width=8, blocks=(0,), num_frames=4, grid=(2, 2), init="x")
    assert refused.value.field == "init"
    with pytest.raises(FieldError, match="^min_steps must not be negative"):
        TrainConfig(min_steps=-1)


def test_the_command_line_names_the_flag_of_a_refused_field(run_cli, tmp_path):
    labels = tmp_path / "labels.csv"
    labels.write_text("video_id,label\na,x\n")
    result = run_cli("train", "evl", "--store", tmp_path, "--set", "s", "--labels", labels, "--out", tmp_path / "r",
                     "--min-steps", "-3")
    assert result.exit_code == 2 and result.output == "error: --min-steps must not be negative.\n"
    result = run_cli("train", "videoclip", "--store", tmp_path, "--set", "s", "--text-set", "t", "--captions", labels,
                     "--out", tmp_path / "r", "--span-seconds", "9,3")
    assert result.exit_code == 2 and result.output.startswith("error: --span-seconds must satisfy 1 <= MIN <= MAX")
