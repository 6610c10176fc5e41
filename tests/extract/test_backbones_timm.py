"""`--backbone timm`: stored rows are timm's own forward on the same frames, preprocessed by timm's own transform.

References are computed independently: frames decoded again with PyAV at the stored `frame_indices`, transformed by
`timm.data.create_transform(**resolve_model_data_config(model))` on PIL images, and run through a timm model built
in memory with the weights of the safetensors file the extraction loaded by path.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import timm
import timm.data
import torch
from PIL import Image
from safetensors.torch import save_file

from freezeframe.errors import BackboneError, InputError
from freezeframe.extract.backbones import TimmBackbone, TimmConfig, build_backbone
from freezeframe.extract.backbones.timm_image import model_spec
from freezeframe.extract.decode import PyAVReader
from freezeframe.store import open_store

TINY = "ff-tiny-timm-vit"  # bundled: a 3-block ViT, 32 px crop from a 40 px resize (crop_pct 0.8)
VIDEOS = {"archery_demo": "archery_demo.mp4", "test_mpeg4": "test_mpeg4.avi"}  # two aspect ratios
FP16_EPS = 2.0**-11


def cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a, b = a.astype(np.float64), b.astype(np.float64)
    return (a * b).sum(-1) / np.linalg.norm(a, axis=-1) / np.linalg.norm(b, axis=-1)


def tiny_timm(seed: int) -> torch.nn.Module:
    name, kwargs = model_spec(TINY)
    torch.manual_seed(seed)
    return timm.create_model(name, pretrained=False, **kwargs).eval()


@pytest.fixture(scope="module")
def timm_set(tmp_path_factory, run_cli_module, sample_videos):
    root = tmp_path_factory.mktemp("timm")
    model = tiny_timm(seed=5)
    weights = root / "tiny_vit.safetensors"
    save_file(model.state_dict(), str(weights))
    result = run_cli_module("extract", *[sample_videos[f] for f in VIDEOS.values()], "--store", root / "s",
                            "--backbone", "timm", "--model", TINY, "--pretrained", weights,
                            "--features", "embed,logits,tokens", "--layers", "0,-1", "--num-frames", "3",
                            "--batch-size", "4", "--workers", "0", "--no-progress")
    assert result.exit_code == 0, result.output
    return open_store(root / "s")["timm-ff-tiny-timm-vit-tiny_vit"], model, weights


@pytest.fixture(scope="module")
def run_cli_module():
    from click.testing import CliRunner

    from freezeframe.cli import main

    return lambda *args: CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=True)


def timm_reference(model: torch.nn.Module, path, frame_indices: np.ndarray) -> dict[str, np.ndarray]:
    reader = PyAVReader(str(path))
    unique = np.unique(frame_indices)
    frames = reader.get(unique)[np.searchsorted(unique, frame_indices)]
    reader.close()
    transform = timm.data.create_transform(**timm.data.resolve_model_data_config(model))
    x = torch.stack([transform(Image.fromarray(frame)) for frame in frames])
    with torch.no_grad():
        features = model.forward_features(x)
        blocks = model.forward_intermediates(x, indices=[0, 2], return_prefix_tokens=True, intermediates_only=True)
        tokens = {f"tokens/{b}": torch.cat([prefix, grid.flatten(2).transpose(1, 2)], 1)
                  for b, (grid, prefix) in zip((0, 2), blocks)}
        return {"embed": model.forward_head(features, pre_logits=True).numpy(),
                "logits": model.forward_head(features).numpy(), **{k: v.numpy() for k, v in tokens.items()}}


def test_stored_rows_are_timms_forward_on_the_same_frames(timm_set, sample_videos):
    fs, model, _ = timm_set
    assert fs.video_ids() == sorted(VIDEOS)
    for vid, file in VIDEOS.items():
        ref = timm_reference(model, sample_videos[file], fs.read(vid, "frame_indices"))
        embed = fs.read(vid, "embed")
        assert embed.shape == (3, 32) and embed.dtype == np.float16
        assert cosine(embed, ref["embed"]).min() >= 0.9999
        assert cosine(fs.read(vid, "logits"), ref["logits"]).min() >= 0.9999
        for name in ("tokens/0", "tokens/2"):
            stored = fs.read(vid, name).astype(np.float32)
            assert stored.shape == (3, 1 + 16, 32)  # CLS + a 4x4 grid of 8 px patches
            np.testing.assert_allclose(stored, ref[name], rtol=2 * FP16_EPS, atol=2 * FP16_EPS * np.abs(ref[name]).max())


def test_provenance_records_weights_and_timms_data_config(timm_set):
    fs, model, weights = timm_set
    prov = fs.provenance
    backbone = prov["backbone"]
    assert backbone["kind"] == "timm" and backbone["library"] == "timm" and backbone["model"] == "vit_tiny_patch16_224"
    assert backbone["weights"] == str(weights.resolve()) and len(backbone["checkpoint_sha256"]) == 64
    assert prov["timm_data_config"]["crop_pct"] == 0.8 and prov["input_crop"] == [32, 32]
    assert prov["preprocess"]["size"] == [40, 40] and prov["preprocess"]["mean"] == [0.5, 0.5, 0.5]
    assert prov["layers"] == [0, 2] and prov["features"] == ["embed", "logits", "tokens/0", "tokens/2"]


def test_cnn_tokens_are_forward_intermediates_feature_maps(tmp_path):
    spec = tmp_path / "tiny_resnet.json"
    spec.write_text(json.dumps({"model": "resnet18", "kwargs": {
        "num_classes": 7, "pretrained_cfg_overlay": {"input_size": [3, 64, 64], "crop_pct": 1.0}}}))
    backbone = TimmBackbone(TimmConfig(model=str(spec), pretrained="none", seed=2, features=("embed", "tokens"),
                                       layers=(-2, -1)))
    torch.manual_seed(2)
    model = timm.create_model("resnet18", pretrained=False, num_classes=7).eval()
    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    out = backbone(x)
    with torch.no_grad():
        maps = model.forward_intermediates(x, indices=[3, 4], intermediates_only=True)
        embed = model.forward_head(model.forward_features(x), pre_logits=True)
    assert backbone.blocks == [3, 4] and list(out) == ["embed", "tokens/3", "tokens/4"]
    assert cosine(out["embed"].numpy(), embed.numpy()).min() >= 0.9999
    for b, grid in zip((3, 4), maps):
        torch.testing.assert_close(out[f"tokens/{b}"], grid.flatten(2).transpose(1, 2))  # (2, H*W, C), row-major
    assert out["tokens/4"].shape == (2, 4, 512)


def test_weights_follow_the_file_and_the_seed(timm_set):
    _, model, weights = timm_set
    from_file = TimmBackbone(TimmConfig(model=TINY, pretrained=str(weights)))
    assert from_file.weights_info["weights_sha256"] == TimmBackbone(
        TimmConfig(model=TINY, pretrained=str(weights))).weights_info["weights_sha256"]
    a, b, c = (build_backbone(TimmConfig(model=TINY, pretrained="none", seed=s)) for s in (5, 5, 6))
    assert a.weights_info["weights_sha256"] == b.weights_info["weights_sha256"] != c.weights_info["weights_sha256"]
    assert a.weights_info["weights_sha256"] == from_file.weights_info["weights_sha256"]  # the file is seed 5's init


def test_bad_models_and_weights_are_one_sentence(tmp_path, run_cli):
    with pytest.raises(BackboneError, match="unknown timm model 'no_such_net'"):
        TimmBackbone(TimmConfig(model="no_such_net"))
    with pytest.raises(BackboneError, match="does not exist; pass a local checkpoint path"):
        TimmBackbone(TimmConfig(model=TINY, pretrained=str(tmp_path / "missing.safetensors")))
    wrong = tmp_path / "wrong.safetensors"
    save_file({"head.weight": torch.zeros(3, 3)}, str(wrong))
    with pytest.raises(BackboneError, match="do not fit timm model vit_tiny_patch16_224: .*missing keys"):
        TimmBackbone(TimmConfig(model=TINY, pretrained=str(wrong)))
    with pytest.raises(InputError, match=r"^features \['cls'\] unknown; choose from embed, logits, tokens"):
        TimmConfig(features=("cls",))
    with pytest.raises(InputError, match="out of range"):
        TimmBackbone(TimmConfig(model=TINY, features=("tokens",), layers=(3,)))
    result = run_cli("extract", tmp_path / "none.mp4", "--store", tmp_path / "s", "--backbone", "timm", "--model", TINY)
    assert result.exit_code == 2 and "error: --backbone timm needs --pretrained" in result.output
