"""S3D backbones: S3D-G has the published HowTo100M layout and computes what the reference port computes; both
networks load local weights files (state dicts, `module.` prefixes, .safetensors, the text tower dropped) to the
exact outputs of the in-memory model; bad files and bad windows fail with one sentence.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from freezeframe.checkpoints import UntrustedCheckpointError
from freezeframe.errors import BackboneError, InputError
from freezeframe.extract.backbones import build_backbone
from freezeframe.extract.backbones.s3d import S3DG, S3DBackbone, S3DConfig, build_s3d_network
from freezeframe.store.provenance import file_sha256

DATA = Path(__file__).parents[1] / "data"
LAYOUT = json.loads((DATA / "s3dg_howto100m_layout.json").read_text())["state_dict"]
REFERENCE = json.loads((DATA / "s3dg_reference_outputs.json").read_text())
TEXT_KEYS = sorted(k for k in LAYOUT if k.startswith("text_module."))


def deterministic_state(shapes: dict[str, list[int]]) -> dict[str, torch.Tensor]:
    """Weights that depend only on each key's name and shape (not on module creation order), so the reference
    port and S3DG get the same ones; BatchNorm statistics are randomised too, so they matter."""
    state = {}
    for i, (key, shape) in enumerate(sorted(shapes.items())):
        g = torch.Generator().manual_seed(i)
        if key.endswith("num_batches_tracked"):
            state[key] = torch.zeros(shape, dtype=torch.long)
        elif key.endswith("running_var") or (".bn" in key and key.endswith("weight")):
            state[key] = 0.5 + torch.rand(shape, generator=g)
        elif len(shape) == 1:
            state[key] = 0.1 * torch.randn(shape, generator=g)
        else:
            fan_in = torch.Size(shape[1:]).numel()
            state[key] = torch.randn(shape, generator=g) * (2.0 / fan_in) ** 0.5
    return state


def reference_input() -> torch.Tensor:
    """The (n, 3, T, H, W) clip the reference outputs in tests/data were computed on."""
    return torch.rand(tuple(REFERENCE["input_shape"]), generator=torch.Generator().manual_seed(REFERENCE["input_seed"]))


def windows(n: int, t: int, size: int, seed: int = 0) -> torch.Tensor:
    return torch.rand(n, t, 3, size, size, generator=torch.Generator().manual_seed(seed))


@pytest.fixture(scope="module")
def s3dg_state() -> dict[str, torch.Tensor]:
    return deterministic_state({k: v for k, v in LAYOUT.items() if not k.startswith("text_module.")})


@pytest.fixture(scope="module")
def s3dg_file(s3dg_state, tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("s3dg") / "s3d_howto100m.pth"
    torch.save(s3dg_state, path)
    return path


# ---- S3D-G network --------------------------------------------------------------------------------------------

def test_s3dg_has_the_published_howto100m_layout():
    mine = {k: list(v.shape) for k, v in S3DG().state_dict().items()}
    assert mine == {k: v for k, v in LAYOUT.items() if not k.startswith("text_module.")}
    assert len(mine) == 532 and mine["fc.weight"] == [512, 1024] and mine["conv1.conv1.weight"] == [64, 24, 2, 4, 4]
    assert TEXT_KEYS == ["text_module.fc1.bias", "text_module.fc1.weight", "text_module.fc2.bias",
                         "text_module.fc2.weight", "text_module.word_embd.weight"]


def test_s3dg_computes_what_the_reference_port_computes(s3dg_state):
    model = S3DG().eval()
    model.load_state_dict(s3dg_state)
    blocks = {}
    model.mixed_5c.register_forward_hook(lambda _m, _a, out: blocks.update(mixed_5c=out))
    with torch.no_grad():
        out = model(reference_input())
    for name in ("video_embedding", "mixed_5c"):
        expected = torch.tensor(REFERENCE[name]["head"])
        assert out[name].shape == (REFERENCE["input_shape"][0], REFERENCE[name]["dim"])
        torch.testing.assert_close(out[name][0, :len(expected)], expected, rtol=1e-4, atol=1e-5)
        assert out[name].norm().item() == pytest.approx(REFERENCE[name]["norm"], rel=1e-4)
    # mixed_5c is the space-time mean of the last block, and the embedding is fc of it
    torch.testing.assert_close(out["mixed_5c"], blocks["mixed_5c"].mean(dim=(2, 3, 4)))
    torch.testing.assert_close(out["video_embedding"], model.fc(out["mixed_5c"]))


def test_s3dg_weights_file_gives_the_in_memory_models_outputs(s3dg_state, s3dg_file, tmp_path):
    memory = S3DG()
    memory.load_state_dict(s3dg_state)
    clips = windows(2, 8, 32)
    expected = S3DBackbone(S3DConfig(kind="s3dg"), model=memory)(clips)

    backbone = S3DBackbone(S3DConfig(kind="s3dg", weights=str(s3dg_file)))
    out = backbone(clips)
    assert list(out) == backbone.stored_arrays() == ["video_embedding", "mixed_5c"]
    assert out["video_embedding"].shape == (2, 512) and out["mixed_5c"].shape == (2, 1024)
    for name in out:
        assert torch.equal(out[name], expected[name])

    info = backbone.provenance()
    assert info["backbone"]["kind"] == "s3dg" and info["backbone"]["library"] == "freezeframe"
    assert info["backbone"]["weights"] == str(s3dg_file.resolve())
    assert info["backbone"]["checkpoint_sha256"] == file_sha256(s3dg_file)
    assert info["features"] == ["video_embedding", "mixed_5c"] and info["compute_dtype"] == "float32"
    assert backbone.config.default_name() == "s3dg-s3d_howto100m"
    assert backbone.frozen_weights() == {} and backbone.takes_windows

    # the same weights saved from DataParallel, as .safetensors, or without BatchNorm step counters
    variants = {
        "dp.pth": {f"module.{k}": v for k, v in s3dg_state.items()},
        "w.safetensors": s3dg_state,
        "no_counters.pth": {k: v for k, v in s3dg_state.items() if not k.endswith("num_batches_tracked")},
    }
    for name, state in variants.items():
        path = tmp_path / name
        save_file(state, str(path)) if name.endswith(".safetensors") else torch.save(state, path)
        other = S3DBackbone(S3DConfig(kind="s3dg", weights=str(path)))
        assert other.weights_info["weights_sha256"] == backbone.weights_info["weights_sha256"], name
        assert torch.equal(other(clips)["video_embedding"], expected["video_embedding"]), name


def test_the_published_file_with_its_text_tower_loads_and_the_text_tower_is_dropped(s3dg_state, tmp_path):
    path = tmp_path / "s3d_howto100m.pth"
    torch.save({**deterministic_state({k: LAYOUT[k] for k in TEXT_KEYS}), **s3dg_state}, path)
    backbone = S3DBackbone(S3DConfig(kind="s3dg", weights=str(path)))
    assert backbone.provenance()["backbone"]["ignored_keys"] == "5 text_module.* tensors (the text tower)"
    assert not any(k.startswith("text_module.") for k in backbone.net.state_dict())
    memory = S3DG()
    memory.load_state_dict(s3dg_state)
    clips = windows(1, 8, 32, seed=1)
    assert torch.equal(backbone(clips)["video_embedding"],
                       S3DBackbone(S3DConfig(kind="s3dg"), model=memory)(clips)["video_embedding"])


def test_random_weights_follow_the_seed():
    a, b, c = (S3DBackbone(S3DConfig(kind="s3dg", seed=s)) for s in (0, 0, 1))
    assert a.weights_info["weights_sha256"] == b.weights_info["weights_sha256"] != c.weights_info["weights_sha256"]
    assert a.provenance()["backbone"]["weights"] == "none" and a.provenance()["backbone"]["seed"] == 0
    assert a.config.default_name() == "s3dg-random"


def test_bf16_compute_stays_close_to_fp32():
    clips = windows(1, 8, 32, seed=2)
    fp32 = S3DBackbone(S3DConfig(kind="s3dg"))(clips)["mixed_5c"]
    backbone = S3DBackbone(S3DConfig(kind="s3dg", precision="bf16"))
    bf16 = backbone(clips)["mixed_5c"]
    assert backbone.provenance()["compute_dtype"] == "bfloat16"
    assert (bf16.float() - fp32).abs().max().item() < 0.05 * fp32.abs().max().item()


# ---- torchvision S3D ------------------------------------------------------------------------------------------

def test_torchvision_s3d_weights_file_gives_torchvisions_outputs(tmp_path):
    torch.manual_seed(1)
    model = build_s3d_network("s3d").eval()
    path = tmp_path / "s3d-kinetics.pth"
    torch.save(model.state_dict(), path)
    clips = windows(1, 14, 224)
    captured = {}
    model.features.register_forward_hook(lambda _m, _a, out: captured.update(features=out))
    with torch.no_grad():
        logits = model(clips.transpose(1, 2))

    backbone = build_backbone(S3DConfig(kind="s3d", weights=str(path)))
    assert isinstance(backbone, S3DBackbone) and backbone.kind == "s3d"
    out = backbone(clips)
    assert list(out) == ["logits", "mixed_5c"]
    assert out["logits"].shape == (1, 400) and out["mixed_5c"].shape == (1, 1024)
    torch.testing.assert_close(out["logits"], logits, rtol=0, atol=1e-6)
    torch.testing.assert_close(out["mixed_5c"], captured["features"].mean(dim=(2, 3, 4)), rtol=0, atol=1e-6)

    info = backbone.provenance()["backbone"]
    assert info["library"] == "torchvision" and info["model"] == "s3d"
    assert info["checkpoint_sha256"] == file_sha256(path)
    assert backbone.config.default_name() == "s3d-s3d-kinetics"
    assert backbone.preprocess.mean == (0.43216, 0.394666, 0.37645) and backbone.preprocess.size == (224, 224)

    with pytest.raises(InputError, match="at least 14 frames of 224x224 pixels; got T=8, 32x32"):
        backbone(windows(1, 8, 32))
    backbone.check_window(15, 224, 300)  # odd lengths are fine for S3D
    with pytest.raises(InputError, match="got T=13, 224x224"):
        backbone.check_window(13, 224, 224)


# ---- bad weights and bad windows ------------------------------------------------------------------------------

class Payload:
    """Unpickling this runs `open(marker, "w")`: the file's existence shows the code ran."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


def test_bad_weights_files_fail_with_one_sentence(s3dg_state, s3dg_file, tmp_path):
    with pytest.raises(BackboneError, match="does not exist; pass a local checkpoint path .* or none"):
        S3DBackbone(S3DConfig(kind="s3dg", weights=str(tmp_path / "missing.pth")))

    broken = tmp_path / "broken.pth"
    broken.write_bytes(s3dg_file.read_bytes()[:100_000])  # a download cut short
    with pytest.raises(BackboneError, match="cannot load weights .*broken.pth.* into the MIL-NCE S3D-G network"):
        S3DBackbone(S3DConfig(kind="s3dg", weights=str(broken)))

    marker = tmp_path / "payload-ran"
    evil = tmp_path / "evil.pth"
    torch.save({"state_dict": s3dg_state, "extra": Payload(marker)}, evil)
    with pytest.raises(UntrustedCheckpointError, match="--trust-checkpoint"):
        S3DBackbone(S3DConfig(kind="s3dg", weights=str(evil)))
    assert not marker.exists()

    pickled = tmp_path / "full_pickle.pth"
    torch.save({"state_dict": s3dg_state, "args": argparse.Namespace(lr=0.1)}, pickled)
    with pytest.raises(UntrustedCheckpointError):
        S3DBackbone(S3DConfig(kind="s3dg", weights=str(pickled)))
    trusted = S3DBackbone(S3DConfig(kind="s3dg", weights=str(pickled), trust_checkpoint=True))
    assert trusted.weights_info["weights_sha256"] == S3DBackbone(
        S3DConfig(kind="s3dg", weights=str(s3dg_file))).weights_info["weights_sha256"]

    torch.manual_seed(0)
    torch.save(build_s3d_network("s3d").state_dict(), tmp_path / "kinetics.pth")
    with pytest.raises(BackboneError, match=r"do not fit the MIL-NCE S3D-G network: \d+ missing keys "
                                            r"\(conv1.conv1.weight, .*\); \d+ unexpected keys \(features.0"):
        S3DBackbone(S3DConfig(kind="s3dg", weights=str(tmp_path / "kinetics.pth")))

    wrong = tmp_path / "wrong_fc.pth"
    torch.save({**s3dg_state, "fc.weight": torch.zeros(256, 1024), "fc.bias": torch.zeros(256)}, wrong)
    with pytest.raises(BackboneError, match=r"2 keys of the wrong shape \(fc.weight \(256, 1024\) "
                                            r"\(expected \(512, 1024\)\), fc.bias"):
        S3DBackbone(S3DConfig(kind="s3dg", weights=str(wrong)))

    tensor_only = tmp_path / "tensor.pth"
    torch.save(torch.zeros(3), tensor_only)
    with pytest.raises(BackboneError, match="holds no state dict of tensors"):
        S3DBackbone(S3DConfig(kind="s3dg", weights=str(tensor_only)))


def test_bad_configs_and_windows_are_refused():
    with pytest.raises(InputError, match="choose s3d .* or s3dg"):
        S3DConfig(kind="i3d")
    with pytest.raises(InputError, match="^precision 'fp8' is unknown"):  # the config names its field
        S3DConfig(precision="fp8")
    backbone = S3DBackbone(S3DConfig(kind="s3dg"))
    with pytest.raises(InputError, match=r"windows shaped \(n, T, 3, H, W\); got \(1, 3, 8, 32, 32\)"):
        backbone(torch.rand(1, 3, 8, 32, 32))
    with pytest.raises(InputError, match="even number of frames .* got T=7, 32x32"):
        backbone(windows(1, 7, 32))
    backbone.check_window(30, 224, 224)  # VideoCLIP's one-second windows
    with pytest.raises(InputError, match=r"even frame sizes \(space-to-depth\); got T=30, 224x225"):
        backbone.check_window(30, 224, 225)
    assert backbone.preprocess.mean == (0.0, 0.0, 0.0) and backbone.preprocess.std == (1.0, 1.0, 1.0)
    assert backbone.preprocess.interpolation == "bilinear" and backbone.preprocess.resize_mode == "shortest"
