"""Window backbones through the registry: torchvision's video classifiers and the pytorch-i3d RGB I3D.

torchvision: each stored array equals torchvision's own forward on the same windows (random weights saved to a
local file and loaded by path). I3D: the state dict has exactly the names and shapes of the public checkpoint
(tests/data/i3d_rgb_layout.json) and computes what pytorch-i3d computes (tests/data/i3d_reference_outputs.json).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import save_file
from torchvision.models import get_model

from freezeframe.errors import BackboneError, InputError
from freezeframe.extract.backbones import (I3DBackbone, I3DConfig, InceptionI3d, TorchvisionVideoBackbone,
                                           TorchvisionVideoConfig, build_backbone)
from freezeframe.store import open_store

DATA = Path(__file__).parents[1] / "data"
FP16_EPS = 2.0**-11


def cosine(a, b) -> np.ndarray:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return (a * b).sum(-1) / np.linalg.norm(a, axis=-1) / np.linalg.norm(b, axis=-1)


def windows(n: int, frames: int, size: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(n, frames, 3, size, size, generator=torch.Generator().manual_seed(seed))


# ---- torchvision video classifiers ------------------------------------------------------------------------------

@pytest.mark.parametrize("model, size, frames", [("r3d_18", 48, 8), ("r2plus1d_18", 48, 8), ("swin3d_t", 32, 2)])
def test_torchvision_arrays_are_torchvisions_forward(tmp_path, model, size, frames):
    torch.manual_seed(4)
    net = get_model(model, weights=None).eval()
    weights = tmp_path / f"{model}.safetensors"
    save_file(net.state_dict(), str(weights))
    backbone = TorchvisionVideoBackbone(TorchvisionVideoConfig(model=model, pretrained=str(weights), image_size=size,
                                                               features=("pooled", "logits", "tokens"), layers=(-1,)))
    assert backbone.preprocess.size[0] - size in (0, 2) or backbone.preprocess.size[0] > size  # resize, then crop
    clips = windows(2, frames, size)
    out = backbone(clips)
    video = clips.transpose(1, 2)  # (n, 3, T, H, W), torchvision's layout
    with torch.no_grad():
        logits = net(video)
        if model == "swin3d_t":
            grid = net.features(net.pos_drop(net.patch_embed(video)))  # (n, T, H, W, C)
            pooled = net.avgpool(net.norm(grid).permute(0, 4, 1, 2, 3)).flatten(1)
            tokens = grid.flatten(1, 3)
        else:
            grid = net.layer4(net.layer3(net.layer2(net.layer1(net.stem(video)))))  # (n, C, T, H, W)
            pooled, tokens = net.avgpool(grid).flatten(1), grid.flatten(2).transpose(1, 2)
    assert list(out) == ["pooled", "logits", f"tokens/{backbone.blocks[0]}"]
    assert cosine(out["logits"], logits).min() >= 0.9999 and cosine(out["pooled"], pooled).min() >= 0.9999
    torch.testing.assert_close(out[f"tokens/{backbone.blocks[0]}"], tokens, rtol=FP16_EPS, atol=1e-5)


def _classifier(net: torch.nn.Module, model: str):
    """torchvision's own last layer of `model`, as a function of the vector it reads."""
    if model == "s3d":  # Dropout, then a 1x1x1 convolution: a linear map of each avgpool(2, 7, 7) output vector
        conv = net.classifier[1]
        return lambda pooled: pooled @ conv.weight.flatten(1).T + conv.bias
    return net.head if model == "swin3d_t" else net.fc


@pytest.mark.parametrize("model, size, frames", [("s3d", 224, 16), ("s3d", 224, 32), ("s3d", 256, 16),
                                                 ("r3d_18", 64, 16), ("mc3_18", 48, 8), ("r2plus1d_18", 80, 16),
                                                 ("swin3d_t", 64, 8)])
def test_pooled_is_what_torchvisions_classifier_reads(model, size, frames):
    """`pooled` is the classifier's input at every window size: torchvision's own last layer applied to it gives
    torchvision's own logits (S3D's feature-map mean does so only at 16 x 224, where avgpool leaves one vector)."""
    torch.manual_seed(6)
    net = get_model(model, weights=None).eval()
    generator = torch.Generator().manual_seed(7)
    for norm in (m for m in net.modules() if isinstance(m, torch.nn.BatchNorm3d)):  # trained-like statistics:
        norm.running_mean.normal_(0, 0.1, generator=generator)  # fresh ones leave S3D's map nearly flat, where
        norm.running_var.uniform_(0.5, 2, generator=generator)  # any pooling gives the same vector
        norm.weight.data.uniform_(0.5, 1.5, generator=generator)
        norm.bias.data.normal_(0, 0.2, generator=generator)
    backbone = TorchvisionVideoBackbone(TorchvisionVideoConfig(model=model, image_size=size, precision="fp32",
                                                               features=("pooled", "logits")), model=net)
    clips = windows(1, frames, size, seed=3)
    clips[:, :frames // 2] -= 1.0  # a darker first half and a brighter top: features that vary over time and space
    clips[..., :size // 2, :] += 1.5
    out = backbone(clips)
    with torch.no_grad():
        logits = net(clips.transpose(1, 2))
        torch.testing.assert_close(out["logits"], logits, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(_classifier(net, model)(out["pooled"]), logits, rtol=1e-5, atol=1e-5)
        if model == "s3d":
            torch.testing.assert_close(out["pooled"], net.avgpool(net.features(clips.transpose(1, 2))).mean((2, 3, 4)),
                                       rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("model", ["r3d_18", "mvit_v2_s", "s3d"])
def test_pixels_are_torchvisions_own_transforms_by_default(model, sample_videos):
    """The decode workers' preprocessing and the backbone's crop give exactly the pixels of the weights entry's
    `transforms()` (r3d_18: squashed to 128x171; MViT: short side 256; S3D: squashed to 256x256; no antialiasing).
    `--resize short-side` keeps the aspect ratio instead (antialiased): other pixels."""
    from torchvision.models import get_model_weights

    from freezeframe.extract.backbones.base import center_crop
    from freezeframe.extract.decode import PyAVReader
    from freezeframe.extract.backbones.tv_video import weights_transform
    from freezeframe.extract.preprocess import ExactPreprocessor

    reader = PyAVReader(str(sample_videos["v_ZNVhz7ctTq0.mp4"]))
    frames = reader.get(np.arange(100, 104))  # (4, 360, 480, 3) uint8
    reference = get_model_weights(model).DEFAULT.transforms()(torch.from_numpy(frames).permute(0, 3, 1, 2))
    for resize in ("torchvision", "short-side"):
        _, crop, preprocess, _ = weights_transform(model, resize)  # what the backbone takes (its crop and workers')
        ours = center_crop(ExactPreprocessor(preprocess)(frames), (crop, crop))
        assert ours.shape == reference.transpose(0, 1).shape
        if resize == "torchvision":
            assert torch.equal(ours, reference.transpose(0, 1)), model
        else:
            assert (ours - reference.transpose(0, 1)).abs().mean() > 0.01


def tiny_mvit() -> torch.nn.Module:
    """MViT v2 as torchvision builds mvit_v2_s (pooling residuals, relative positions, projection after attention),
    three small blocks for 4 frames of 32 x 32: a CPU-sized stand-in with the same code path."""
    from torchvision.models.video.mvit import MViT, MSBlockConfig

    def block(heads: int, dim_in: int, dim_out: int, stride_q: list[int], stride_kv: list[int]) -> MSBlockConfig:
        return MSBlockConfig(num_heads=heads, input_channels=dim_in, output_channels=dim_out, kernel_q=[3, 3, 3],
                             kernel_kv=[3, 3, 3], stride_q=stride_q, stride_kv=stride_kv)

    torch.manual_seed(5)
    blocks = [block(1, 16, 16, [1, 1, 1], [1, 4, 4]), block(2, 16, 32, [1, 2, 2], [1, 2, 2]),
              block(2, 32, 32, [1, 1, 1], [1, 2, 2])]
    return MViT(spatial_size=(32, 32), temporal_size=4, block_setting=blocks, residual_pool=True,
                residual_with_cls_embed=False, rel_pos_embed=True, proj_after_attn=True).eval()


def test_mvit_arrays_are_torchvisions_forward_and_its_window_is_the_one_it_was_made_for():
    net = tiny_mvit()
    backbone = TorchvisionVideoBackbone(TorchvisionVideoConfig(model="mvit_v2_s", image_size=32, layers=(-1,),
                                                               features=("pooled", "logits", "tokens")), model=net)
    assert backbone.exact == (4, 32)
    with pytest.raises(InputError, match="positional encodings for 4 frames of 32x32; got T=8"):
        backbone(windows(1, 8, 32))
    clips = windows(2, 4, 32)
    out = backbone(clips)
    with torch.no_grad():  # MViT.forward, step by step, keeping the last block's tokens and the classifier input
        x = net.pos_encoding(net.conv_proj(clips.transpose(1, 2)).flatten(2).transpose(1, 2))
        thw = (net.pos_encoding.temporal_size, *net.pos_encoding.spatial_size)
        for block in net.blocks:
            x, thw = block(x, thw)
        pooled = net.norm(x)[:, 0]
        logits = net.head(pooled)
    assert out["tokens/2"].shape == (2, 1 + 2 * 4 * 4, 32)  # class token, then T/2 x H/8 x W/8
    assert cosine(out["logits"], logits).min() >= 0.9999 and cosine(out["pooled"], pooled).min() >= 0.9999
    torch.testing.assert_close(out["tokens/2"], x, rtol=FP16_EPS, atol=1e-5)
    torch.testing.assert_close(out["logits"], net(clips.transpose(1, 2)), rtol=1e-5, atol=1e-6)


def test_torchvision_video_extraction_stores_one_row_per_window(tmp_path, run_cli, sample_videos):
    torch.manual_seed(1)
    weights = tmp_path / "mc3_18.pth"
    torch.save(get_model("mc3_18", weights=None).state_dict(), weights)
    result = run_cli("extract", sample_videos["short_32frames.mp4"], "--store", tmp_path / "s",
                     "--backbone", "torchvision-video", "--model", "mc3_18", "--pretrained", weights,
                     "--image-size", "32", "--window-frames", "8", "--features", "pooled,tokens", "--layers", "1",
                     "--workers", "0", "--no-progress")
    assert result.exit_code == 0, result.output
    fs = open_store(tmp_path / "s")["tv-mc3_18-mc3_18"]
    # 32 frames at 30 fps resampled at the default 15 fps: 16 frames, two windows of 8
    assert fs.read("short_32frames", "pooled").shape == (2, 512)
    assert fs.read("short_32frames", "tokens/1").shape == (2, 8 * 8 * 8, 128)  # mc3 layer2: T x H/4 x W/4 tokens
    assert fs.read("short_32frames", "frame_indices").shape == (2, 8)
    prov = fs.provenance
    assert prov["backbone"]["kind"] == "torchvision-video" and prov["backbone"]["model"] == "mc3_18"
    assert prov["input_crop"] == [32, 32] and prov["preprocess"]["size"][0] > 32  # the weights' 128:112 ratio
    assert prov["preprocess"]["mean"] == [0.43216, 0.394666, 0.37645]


def test_torchvision_window_limits_and_bad_options():
    mvit = TorchvisionVideoBackbone(TorchvisionVideoConfig(model="mvit_v2_s"))
    with pytest.raises(InputError, match="positional encodings for 16 frames of 224x224"):
        mvit.check_window(8, 224, 224)
    mvit.check_window(16, 256, 256)  # resized to 256, centre-cropped to 224
    with pytest.raises(InputError, match="unknown torchvision video model"):
        TorchvisionVideoConfig(model="resnet50")
    with pytest.raises(InputError, match="out of range for r3d_18's 4 blocks"):
        TorchvisionVideoBackbone(TorchvisionVideoConfig(features=("tokens",), layers=(4,)))


# ---- I3D ---------------------------------------------------------------------------------------------------------

def test_i3d_has_the_public_rgb_checkpoint_layout():
    layout = json.loads((DATA / "i3d_rgb_layout.json").read_text())["state_dict"]
    state = {k: list(v.shape) for k, v in InceptionI3d().state_dict().items() if not k.endswith("num_batches_tracked")}
    assert state == layout  # exactly these names, these shapes
    assert len(layout) == 287 and layout["logits.conv3d.weight"] == [400, 1024, 1, 1, 1]


def test_i3d_computes_what_pytorch_i3d_computes():
    ref = json.loads((DATA / "i3d_reference_outputs.json").read_text())
    torch.manual_seed(0)
    net = InceptionI3d().eval()
    x = torch.rand(*ref["input"], generator=torch.Generator().manual_seed(7)) * 2 - 1
    with torch.no_grad():
        out = net(x, keep=("Mixed_5c",))
    assert list(out["Mixed_5c"].shape) == ref["mixed_5c_shape"]
    for name, got in (("mixed_5c_mean", out["Mixed_5c"].mean((2, 3, 4))), ("pooled", out["pooled"]),
                      ("logits", out["logits"])):
        np.testing.assert_allclose(got[0, :16].numpy(), ref[name], rtol=1e-4, atol=1e-9, err_msg=name)


def test_i3d_checkpoint_file_loads_by_name_and_gives_the_in_memory_outputs(tmp_path):
    torch.manual_seed(2)
    memory = InceptionI3d().eval()
    for module in memory.modules():  # lively statistics, so the outputs depend on every tensor
        if isinstance(module, torch.nn.BatchNorm3d):
            module.running_mean.normal_(0, 0.1), module.running_var.uniform_(0.5, 1.5)
    state = {k: v for k, v in memory.state_dict().items() if not k.endswith("num_batches_tracked")}  # as exported
    path = tmp_path / "rgb_imagenet.pt"
    torch.save(state, path)
    backbone = build_backbone(I3DConfig(pretrained=str(path), features=("pooled", "logits", "tokens"),
                                        image_size=64, resize_size=64))
    assert isinstance(backbone, I3DBackbone) and backbone.blocks == [8]
    clips = windows(1, 16, 64)
    out = backbone(clips)
    with torch.no_grad():
        ref = memory(clips.transpose(1, 2), keep=("Mixed_5c",))
    assert cosine(out["pooled"], ref["pooled"]).min() >= 0.9999 and cosine(out["logits"], ref["logits"]).min() >= 0.9999
    torch.testing.assert_close(out["tokens/8"], ref["Mixed_5c"].flatten(2).transpose(1, 2))
    info = backbone.provenance()["backbone"]
    assert info["weights"] == str(path.resolve()) and len(info["checkpoint_sha256"]) == 64
    torch.save({"logits.conv3d.weight": torch.zeros(400, 1024, 1, 1, 1)}, tmp_path / "partial.pt")
    with pytest.raises(BackboneError, match="do not fit the RGB I3D network: .*missing keys"):
        I3DBackbone(I3DConfig(pretrained=str(tmp_path / "partial.pt")))


VIDEO_FEATURES = json.loads((DATA / "reference" / "video_features_i3d.json").read_text())


@pytest.mark.parametrize("case", VIDEO_FEATURES["pixels"], ids=lambda c: "x".join(map(str, c["size"])))
def test_i3d_pixels_are_video_features_own(case):
    """The I3D input of seeded random frames equals, bit for bit, what video_features' own resize and RGB transforms
    make of them (16:9 frames included, where a rounded centre crop starts one pixel right of its floored one)."""
    import hashlib

    from freezeframe.extract.backbones.base import center_crop
    from freezeframe.extract.backbones.i3d import I3D_PREPROCESS
    from freezeframe.extract.preprocess import ExactPreprocessor

    frames = np.random.default_rng(case["seed"]).integers(0, 256, (2, *case["size"], 3), dtype=np.uint8)
    pixels = center_crop(ExactPreprocessor(I3D_PREPROCESS)(frames), (224, 224))  # the backbone's crop
    video = pixels.transpose(0, 1)[None].contiguous().numpy()  # (1, 3, T, 224, 224), as I3D takes it
    assert list(video.shape) == case["shape"]
    assert abs(float(video.astype(np.float64).sum()) - case["sum"]) < 1e-3
    assert hashlib.sha256(video.astype(np.float32).tobytes()).hexdigest() == case["sha256"]


@pytest.mark.parametrize("case", VIDEO_FEATURES["windows"], ids=lambda c: f"{c['frames']}frames")
def test_i3d_video_features_windows_are_its_stacks(case, tmp_path):
    """`--last-window video-features`: every decoded frame, stacks of 64 every 64 that one more frame follows, as
    video_features' own extraction loop cut them from the same clip (no window under 65 frames)."""
    from freezeframe.extract.decode import PyAVReader
    from freezeframe.extract.sampling import SamplingConfig, sample_indices
    from stamped_clips import make_halves_clip

    path = tmp_path / "clip.mp4"
    make_halves_clip(path, case["frames"], case["rate"], *case["size"])
    reader = PyAVReader(str(path))
    config = SamplingConfig("windows", window_frames=64, window_stride=64, last_window="video-features")
    if not case["stacks"]:
        with pytest.raises(ValueError, match=f"has {case['frames']} frames; video_features' stacks of 64 need 65"):
            sample_indices(reader.timestamps, config, reader.end, reader.start)
        return
    indices = sample_indices(reader.timestamps, config, reader.end, reader.start)
    assert indices.reshape(-1, 64).tolist() == case["stacks"]


def test_i3d_video_features_conventions_through_the_cli(tmp_path, run_cli, sample_videos):
    from freezeframe.extract.backbones import get_entry

    windows_default = get_entry("i3d").windows
    assert (windows_default.frames, windows_default.stride) == (64, 64)
    with pytest.raises(InputError, match="at least image_size"):
        I3DConfig(image_size=224, resize_size=200)
    video = sample_videos["short_32frames.mp4"]
    refused = run_cli("extract", video, "--store", tmp_path / "r", "--backbone", "i3d", "--pretrained", "none",
                      "--last-window", "video-features", "--fps", "25", "--no-progress")
    assert refused.exit_code == 2 and "leave out --fps" in refused.output
    result = run_cli("extract", video, "--store", tmp_path / "s", "--backbone", "i3d", "--pretrained", "none",
                     "--image-size", "32", "--resize-size", "40", "--window-frames", "15",
                     "--last-window", "video-features", "--workers", "0", "--no-progress")
    assert result.exit_code == 0, result.output
    fs = open_store(tmp_path / "s")["i3d-random"]
    # 32 frames, stacks of 15 that one more frame follows: starts 0 and 15 (30 + 1 < 32), none at 30
    assert fs.read("short_32frames", "frame_indices").tolist() == [list(range(15)), list(range(15, 30))]
    assert {k: fs.provenance["sampling"].get(k) for k in ("strategy", "fps", "window_frames", "last_window")} == {
        "strategy": "windows", "fps": None, "window_frames": 15, "last_window": "video-features"}
    assert fs.provenance["input_crop"] == [32, 32] and fs.provenance["preprocess"]["resize_to"] == 40
