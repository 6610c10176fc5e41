"""CLIP features in the store are what open_clip itself computes on the same frames.

Every reference here is computed independently of freezeframe's backbone: frames are decoded
again with decord at the stored `frame_indices`, preprocessed with open_clip's own PIL transform,
and run through an open_clip model built in memory (same seed, or the same checkpoint file).
All on CPU with the bundled tiny architecture `ff-tiny-vit` (4 blocks, width 64, 2 heads, 64 px),
except one test on the real ViT-B-32 architecture with random weights.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import time
from pathlib import Path

import av
import decord
import numpy as np
import open_clip
import pytest
import torch
import torch.nn.functional as F
from click.testing import CliRunner
from PIL import Image

from freezeframe import open_store
from freezeframe.cli import main
from freezeframe.extract import (
    ClipBackbone,
    ClipConfig,
    ExtractConfig,
    SamplingConfig,
    VideoSource,
    fast_preprocess,
    open_video,
    run_extraction,
)
from freezeframe.extract.backbones.clip import resolve_model_name
from freezeframe.extract.decode import DecodeOptions
from freezeframe.extract.preprocess import FAST_RESIZE, resize_short_side, resized_shape
from freezeframe.heads.qk import attention_qk, stored_qk

VIDEOS = Path(__file__).parents[1] / "data" / "videos"
TINY = "ff-tiny-vit"
TINY_DEPTH = 4
# Two real videos, different containers/codecs and aspect ratios (center crop matters).
EXACT_VIDEOS = {"archery_demo": "archery_demo.mp4", "test_mpeg4": "test_mpeg4.avi"}  # video id -> file
NUM_FRAMES = 5
BATCH = 3  # not a divisor of NUM_FRAMES: backbone batches straddle the two videos
LAYERS = "-4,-3,-1"  # blocks 0, 1, 3: block 1's input is tokens/0, blocks 0 and 3 keep their own inputs
BLOCKS = [0, 1, 3]
FP16_EPS = 2.0**-11  # unit roundoff of float16


# ---- helpers -----------------------------------------------------------------------------------
def extract_cli(*args: str, store: Path, videos=EXACT_VIDEOS.values(), workers: int = 0) -> None:
    result = CliRunner().invoke(
        main,
        ["extract", *[str(VIDEOS / v) for v in videos], "--store", str(store), "--workers", str(workers),
         "--no-progress", *args],
    )
    assert result.exit_code == 0, result.output + repr(result.exception)


def only_feature_set(store: Path):
    opened = open_store(store)
    names = opened.names()
    assert len(names) == 1, names
    return opened[names[0]]


def decode(path: Path, indices: np.ndarray) -> np.ndarray:
    """uint8 RGB frames (n, H, W, 3) decoded directly with decord (mp4) or PyAV (AVI, which decord cannot seek)."""
    if path.suffix == ".avi":
        with av.open(str(path)) as container:
            frames = [frame.to_ndarray(format="rgb24") for frame in container.decode(video=0)]
        return np.stack([frames[int(i)] for i in indices])
    reader = decord.VideoReader(str(path), ctx=decord.cpu(0))
    frames = reader.get_batch([int(i) for i in indices]).asnumpy()
    del reader
    return frames


def pil_pixels(preprocess, frames: np.ndarray) -> torch.Tensor:
    return torch.stack([preprocess(Image.fromarray(frame)) for frame in frames])


def cosine(a, b) -> np.ndarray:
    a = torch.as_tensor(np.asarray(a, dtype=np.float32))
    b = torch.as_tensor(np.asarray(b, dtype=np.float32))
    return F.cosine_similarity(a.flatten(1), b.flatten(1), dim=1).numpy()


def fp16_error(stored: np.ndarray, ref: torch.Tensor | np.ndarray) -> float:
    """Largest |stored - ref| in units of what float16 storage alone may cost: eps*|ref| + a tiny floor."""
    ref = np.asarray(ref, dtype=np.float64)
    stored = np.asarray(stored, dtype=np.float64)
    assert stored.shape == ref.shape
    bound = FP16_EPS * np.abs(ref) + 1e-6 * np.abs(ref).max()
    return float((np.abs(stored - ref) / bound).max())


def tiny_model(seed: int = 0):
    """The tiny model exactly as `--pretrained none` builds it: seed, then open_clip's own random init."""
    name = resolve_model_name(TINY)
    torch.manual_seed(seed)
    model, _, preprocess = open_clip.create_model_and_transforms(name, pretrained=None)
    return model.eval(), preprocess


@torch.no_grad()
def reference(model, preprocess, frames: np.ndarray) -> dict[str, torch.Tensor]:
    """open_clip's own outputs: embed, pre-projection pooled token, every block's input/output,
    and inside each block's attention the input, q, k and the attention weights nn.MultiheadAttention returns."""
    visual = model.visual
    pixels = pil_pixels(preprocess, frames)
    out = {"pixels": pixels, "embed": model.encode_image(pixels)}

    # What each attention module actually receives (query = key = value = ln_1(block input)).
    attn_inputs: dict[int, torch.Tensor] = {}
    hooks = []
    for b, block in enumerate(visual.transformer.resblocks):
        def grab(_module, args, kwargs, b=b):
            query = args[0] if args else kwargs["query"]
            attn_inputs[b] = query.detach().clone()
        hooks.append(block.attn.register_forward_pre_hook(grab, with_kwargs=True))
    try:
        inter = visual.forward_intermediates(pixels, indices=None, output_fmt="NLC", output_extra_tokens=True)
    finally:
        for hook in hooks:
            hook.remove()
    blocks_out = [torch.cat([p, t], dim=1) for p, t in
                  zip(inter["image_intermediates_prefix"], inter["image_intermediates"])]
    out["embeds"] = visual._embeds(pixels)  # input of block 0 (patch + class + position, ln_pre)
    torch.testing.assert_close(inter["image_features"], out["embed"], rtol=0, atol=0)
    pooled, _ = visual._pool(blocks_out[-1])
    out["cls"] = pooled
    batch_first = getattr(visual.transformer, "batch_first", True)
    for b, block in enumerate(visual.transformer.resblocks):
        out[f"tokens/{b}"] = blocks_out[b]
        out[f"block_input/{b}"] = out["embeds"] if b == 0 else blocks_out[b - 1]
        attn = block.attn
        x = attn_inputs[b] if batch_first else attn_inputs[b].transpose(0, 1)  # (n, L, C)
        out[f"attn_in/{b}"] = x
        width, heads = x.shape[-1], attn.num_heads
        w_q, w_k, _ = attn.in_proj_weight.chunk(3)
        b_q, b_k, _ = attn.in_proj_bias.chunk(3)
        split = lambda t: t.unflatten(-1, (heads, width // heads)).transpose(1, 2)  # noqa: E731
        out[f"q/{b}"] = split(F.linear(x, w_q, b_q))
        out[f"k/{b}"] = split(F.linear(x, w_k, b_k))
        xin = attn_inputs[b]
        _, weights = attn(xin, xin, xin, need_weights=True, average_attn_weights=False)
        out[f"attn_weights/{b}"] = weights  # (n, heads, L, L)
    return out


# ---- fixtures: one extraction each, shared by the tests of this module ---------------------------
@pytest.fixture(scope="module")
def tiny():
    return tiny_model(seed=0)


def _extract(tmp_path_factory, mode: str, workers: int):
    store = tmp_path_factory.mktemp(f"clip-{mode}") / "store"
    extract_cli("--model", TINY, "--pretrained", "none", "--preprocess", mode, "--features", "embed,cls,tokens",
                "--layers", LAYERS, "--num-frames", str(NUM_FRAMES), "--batch-size", str(BATCH),
                store=store, workers=workers)
    return only_feature_set(store)


@pytest.fixture(scope="module")
def exact_set(tmp_path_factory):
    return _extract(tmp_path_factory, "exact", workers=1)  # exact preprocessing runs in a decode worker


@pytest.fixture(scope="module")
def fast_set(tmp_path_factory):
    return _extract(tmp_path_factory, "fast", workers=0)


@pytest.fixture(scope="module")
def refs(exact_set, tiny):
    model, preprocess = tiny
    out = {}
    for vid, file in EXACT_VIDEOS.items():
        indices = exact_set.read(vid, "frame_indices")
        assert len(indices) == NUM_FRAMES
        out[vid] = reference(model, preprocess, decode(VIDEOS / file, indices))
    return out


# ---- 1. exact mode -------------------------------------------------------------------------------
def test_exact_mode_layout_and_provenance(exact_set, tiny):
    assert exact_set.video_ids() == sorted(EXACT_VIDEOS)
    arrays = exact_set.arrays()
    assert arrays["embed"]["shape"] == [32] and arrays["cls"]["shape"] == [64]
    for b in BLOCKS:
        assert arrays[f"tokens/{b}"] == {"shape": [17, 64], "dtype": "float16"}  # 1 + (64/16)^2 tokens
    assert "tokens/2" not in arrays
    assert {name for name in arrays if name.startswith("block_input/")} == {"block_input/0", "block_input/3"}
    prov = exact_set.provenance
    assert prov["layers"] == BLOCKS
    assert prov["preprocess"]["mode"] == "exact" and prov["preprocess"]["size"] == [64, 64]
    assert prov["backbone"]["pretrained"] == "none" and prov["backbone"]["seed"] == 0
    # The stored weight fingerprint is the fingerprint of the model we rebuilt with seed 0.
    digest = hashlib.sha256()
    for key, tensor in sorted(tiny[0].visual.state_dict().items()):
        digest.update(key.encode())
        digest.update(tensor.contiguous().view(torch.uint8).numpy().tobytes())
    assert prov["backbone"]["weights_sha256"] == digest.hexdigest()
    for vid in EXACT_VIDEOS:
        assert exact_set.video_info(vid)["decoder"] == "pyav"  # auto: PyAV, seeking
        indices = exact_set.read(vid, "frame_indices")
        assert (np.diff(indices) > 0).all()


def test_exact_mode_embed_matches_open_clip(exact_set, refs):
    for vid, ref in refs.items():
        stored = exact_set.read(vid, "embed")
        cos = cosine(stored, ref["embed"])
        assert cos.min() >= 0.9999, (vid, cos)
        assert fp16_error(stored, ref["embed"]) <= 2.0, vid
        # The comparison discriminates: different frames of the same video are much further apart.
        other = cosine(stored, np.roll(ref["embed"].numpy(), 1, axis=0))
        assert other.max() < 0.9999, (vid, other)


def test_exact_mode_cls_projects_to_embed(exact_set, refs, tiny):
    proj = tiny[0].visual.proj.detach().numpy().astype(np.float64)
    for vid, ref in refs.items():
        cls = exact_set.read(vid, "cls")
        embed = exact_set.read(vid, "embed").astype(np.float64)
        assert fp16_error(cls, ref["cls"]) <= 2.0, vid
        projected = cls.astype(np.float64) @ proj
        assert cosine(projected, embed).min() >= 0.9999, vid
        # cls is rounded to fp16 before projecting: allow a few fp16 units of the embedding's scale.
        assert np.abs(projected - embed).max() <= 8 * FP16_EPS * np.abs(embed).max(), vid


def test_exact_mode_tokens_are_open_clips_block_outputs(exact_set, refs):
    for vid, ref in refs.items():
        for b in BLOCKS:
            stored = exact_set.read(vid, f"tokens/{b}")
            assert stored.shape == (NUM_FRAMES, 17, 64)
            assert fp16_error(stored, ref[f"tokens/{b}"]) <= 2.0, (vid, b)
            assert cosine(stored, ref[f"tokens/{b}"]).min() >= 0.99999, (vid, b)
        for b in (0, 3):
            assert fp16_error(exact_set.read(vid, f"block_input/{b}"), ref[f"block_input/{b}"]) <= 2.0, (vid, b)


def test_exact_mode_pixels_are_open_clips_transform(tiny):
    """The exact preprocessor is open_clip's own transform, bit for bit, on real frames."""
    from freezeframe.extract.preprocess import ExactPreprocessor

    model, preprocess = tiny
    backbone = ClipBackbone(ClipConfig(model=TINY, pretrained="none"), model=model)
    frames = decode(VIDEOS / "archery_demo.mp4", np.array([3, 140, 270]))
    ours = ExactPreprocessor(backbone.preprocess)(frames)
    assert torch.equal(ours, pil_pixels(preprocess, frames))


# ---- 2. fast mode --------------------------------------------------------------------------------
def test_fast_mode_stays_close_to_exact(exact_set, fast_set):
    assert fast_set.provenance["preprocess"]["mode"] == "fast"
    assert fast_set.provenance["preprocess"]["resized"] == FAST_RESIZE
    for vid in EXACT_VIDEOS:
        np.testing.assert_array_equal(fast_set.read(vid, "frame_indices"), exact_set.read(vid, "frame_indices"))
        assert cosine(fast_set.read(vid, "embed"), exact_set.read(vid, "embed")).min() >= FAST_MIN_COSINE
        for b in BLOCKS:
            assert cosine(fast_set.read(vid, f"tokens/{b}"), exact_set.read(vid, f"tokens/{b}")).min() >= 0.9999


# fast mode's distance to exact as the README documents it ("--preprocess"), in uint8 levels: the largest, the mean,
# and the share of pixels more than one level off; measured on these frames at 64 px and with ViT-B-32 at 224 px
FAST_BOUNDS = {"cpu": (2.0, 0.01, 0.0001), "cuda": (24.0, 0.2, 0.005)}
FAST_MIN_COSINE = 0.99999


def _levels(pixels: torch.Tensor, exact: torch.Tensor, std: torch.Tensor) -> tuple[float, float, float]:
    levels = ((pixels - exact).abs() * std * 255).flatten()  # difference in uint8 levels
    return levels.max().item(), levels.mean().item(), (levels > 1.01).float().mean().item()


@pytest.mark.parametrize("file, decoder", [(video.name, "auto") for video in sorted(VIDEOS.glob("*.*"))
                                           if video.suffix != ".md"] + [("archery_demo.mp4", "torchcodec"),
                                                                        ("v_GGSY1Qvo990.mp4", "torchcodec")])
def test_fast_mode_within_its_documented_bound(file, decoder, tiny):
    """Fast mode as extraction runs it (the reader resizes to the short side while decoding, the device crops and
    normalises) against open_clip's PIL transform of the full frames, on every sample video. On CUDA (NVDEC)
    torchvision resizes uint8 frames in float and rounds; that path is run here on the CPU the same way."""
    model, preprocess = tiny
    config = ClipBackbone(ClipConfig(model=TINY, pretrained="none"), model=model).preprocess
    reader = open_video(str(VIDEOS / file), decoder)
    indices = np.linspace(0, len(reader.timestamps) - 1, 4).round().astype(int)
    full = reader.get(indices)
    reader.close()
    reader = open_video(str(VIDEOS / file), decoder, DecodeOptions(short_side=64, interpolation=config.interpolation))
    resized = reader.get(indices)
    reader.close()
    assert resized.shape[1:3] == resized_shape(*full.shape[1:3], 64)
    exact = pil_pixels(preprocess, full)
    as_on_cuda = resize_short_side(torch.from_numpy(full).float(), 64, config.interpolation).clamp(0, 255).round()
    paths = {"cpu": fast_preprocess(torch.from_numpy(resized), config),
             "cuda": fast_preprocess(as_on_cuda.to(torch.uint8), config)}
    std = torch.tensor(config.std).view(1, 3, 1, 1)
    for path, pixels in paths.items():
        assert pixels.shape == exact.shape == (4, 3, 64, 64)
        worst, mean, over_one = _levels(pixels, exact, std)
        bound = FAST_BOUNDS[path]
        assert worst <= bound[0] and mean <= bound[1] and over_one <= bound[2], (path, worst, mean, over_one)
        with torch.no_grad():  # and the model sees the same image
            assert cosine(model.encode_image(pixels), model.encode_image(exact)).min() >= FAST_MIN_COSINE


# ---- 3. attention q/k ------------------------------------------------------------------------------
def test_frozen_qk_weights_are_the_models(exact_set, tiny):
    model = tiny[0]
    frozen = exact_set.frozen_weights()
    attention = exact_set.provenance["attention"]
    assert attention["blocks"] == BLOCKS and attention["num_heads"] == 2
    for b in BLOCKS:
        block = model.visual.transformer.resblocks[b]
        assert attention["norm_eps"] == block.ln_1.eps
        w_q, w_k, _ = block.attn.in_proj_weight.detach().chunk(3)
        b_q, b_k, _ = block.attn.in_proj_bias.detach().chunk(3)
        expected = {"norm_weight": block.ln_1.weight, "norm_bias": block.ln_1.bias,
                    "q_weight": w_q, "q_bias": b_q, "k_weight": w_k, "k_bias": b_k}
        for key, value in expected.items():
            np.testing.assert_array_equal(frozen[f"block{b}/{key}"], value.detach().numpy(), err_msg=f"{b} {key}")


def test_attention_qk_math_on_exact_inputs(exact_set, refs):
    """store.qk on the fp32 block input gives the live q/k to fp32 precision."""
    frozen = exact_set.frozen_weights()
    attention = exact_set.provenance["attention"]
    ref = refs["archery_demo"]
    for b in BLOCKS:
        weights = {key: frozen[f"block{b}/{key}"] for key in attention["weights"]}
        q, k = attention_qk(ref[f"block_input/{b}"], weights, attention["num_heads"], attention["norm_eps"])
        torch.testing.assert_close(q, ref[f"q/{b}"], rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(k, ref[f"k/{b}"], rtol=1e-5, atol=1e-5)


def test_stored_attention_qk_equals_backbone_attention(exact_set, refs):
    for vid, ref in refs.items():
        for b in BLOCKS:
            q, k = stored_qk(exact_set, vid, b)
            assert q.shape == k.shape == (NUM_FRAMES, 2, 17, 32)
            for got, want in ((q, ref[f"q/{b}"]), (k, ref[f"k/{b}"])):
                scale = want.abs().max().item()
                err = (got - want).abs().max().item() / scale
                assert err <= 4 * FP16_EPS, (vid, b, err)  # fp16 block inputs through layer norm + projection
                assert cosine(got, want).min() >= 0.99999, (vid, b)
            weights = torch.softmax(q @ k.transpose(-1, -2) / q.shape[-1] ** 0.5, dim=-1)
            want = ref[f"attn_weights/{b}"]
            assert weights.shape == want.shape
            assert (weights - want).abs().max().item() <= 5e-4, (vid, b)
            torch.testing.assert_close(weights.sum(-1), torch.ones(weights.shape[:-1]))


def test_block_input_is_previous_tokens_or_own_copy(exact_set, refs):
    for vid, ref in refs.items():
        # block 1 follows stored block 0: its input is tokens/0, bit for bit
        np.testing.assert_array_equal(exact_set.block_input(vid, 1), exact_set.read(vid, "tokens/0"))
        # blocks 0 and 3 have no stored predecessor: their own copy, equal to the live input
        for b in (0, 3):
            got = exact_set.block_input(vid, b)
            np.testing.assert_array_equal(got, exact_set.read(vid, f"block_input/{b}"))
            assert fp16_error(got, ref[f"block_input/{b}"]) <= 2.0
        # the attention module's own input is ln_1 of that block input
        live_in = ref["attn_in/1"]
        torch.testing.assert_close(live_in, F.layer_norm(ref["tokens/0"], (64,),
                                                         *_ln1(exact_set, 1)), rtol=1e-5, atol=1e-5)


def _ln1(feature_set, b):
    frozen = feature_set.frozen_weights()
    return torch.from_numpy(frozen[f"block{b}/norm_weight"]), torch.from_numpy(frozen[f"block{b}/norm_bias"])


# ---- 4. checkpoint file --------------------------------------------------------------------------
def test_checkpoint_path_matches_in_memory_model(tmp_path, exact_set):
    name = resolve_model_name(TINY)
    torch.manual_seed(1234)  # not the default seed: the file's weights differ from `--pretrained none`
    model = open_clip.create_model(name, pretrained=None).eval()
    checkpoint = tmp_path / "tiny-random.pt"
    torch.save(model.state_dict(), checkpoint)
    store = tmp_path / "store"
    video = "short_32frames.mp4"
    extract_cli("--model", TINY, "--pretrained", str(checkpoint), "--features", "embed,cls,tokens",
                "--layers", "-2,-1", "--num-frames", "4", "--name", "from-file", store=store, videos=[video])
    config = ClipConfig(model=TINY, pretrained="none", features=("embed", "cls", "tokens"), layers=(-2, -1))
    run_extraction([VideoSource("short_32frames", str(VIDEOS / video))], ClipBackbone(config, model=model),
                   ExtractConfig(store=str(store), name="in-memory", sampling=SamplingConfig(num_frames=4),
                                 workers=0, progress=False))
    opened = open_store(store)
    from_file, in_memory = opened["from-file"], opened["in-memory"]
    assert from_file.video_ids() == in_memory.video_ids() == ["short_32frames"]
    arrays = from_file.arrays()
    assert arrays == in_memory.arrays()
    assert {"embed", "cls", "tokens/2", "tokens/3", "block_input/2"} <= set(arrays)
    for array in arrays:
        a, b = from_file.read("short_32frames", array), in_memory.read("short_32frames", array)
        np.testing.assert_array_equal(a, b, err_msg=array)
    for key, value in from_file.frozen_weights().items():
        np.testing.assert_array_equal(value, in_memory.frozen_weights()[key], err_msg=key)
    backbone = from_file.provenance["backbone"]
    assert backbone["checkpoint_sha256"] == hashlib.sha256(checkpoint.read_bytes()).hexdigest()
    assert backbone["pretrained"] == str(checkpoint.resolve())
    assert backbone["weights_sha256"] == in_memory.provenance["backbone"]["weights_sha256"]
    assert backbone["weights_sha256"] != exact_set.provenance["backbone"]["weights_sha256"]  # not seed 0


def error_lines(output: str) -> list[str]:
    """A failed run's output without its status line (`loading MODEL ...`, printed while a model loads)."""
    return [line for line in output.strip().splitlines() if not (line.startswith("loading ") and line.endswith(" ..."))]


def test_unloadable_checkpoint_is_one_clear_line(tmp_path):
    bad = tmp_path / "not-a-checkpoint.pt"
    bad.write_bytes(b"this is not a torch file")
    result = CliRunner().invoke(main, ["extract", str(VIDEOS / "short_32frames.mp4"), "--store",
                                       str(tmp_path / "s"), "--model", TINY, "--pretrained", str(bad)])
    assert result.exit_code == 2, result.output
    lines = error_lines(result.output)
    assert len(lines) == 1 and lines[0].startswith("error: cannot load weights"), result.output
    assert str(bad) in lines[0]


# ---- 5. pretrained tags without network ------------------------------------------------------------
def test_pretrained_tag_without_network_says_pass_a_path(tmp_path):
    from freezeframe.extract.backbones import weights as W

    hosts = W.download_hosts(open_clip.get_pretrained_cfg("ViT-B-32", "openai"))
    if any(W.host_reachable(host, timeout=2.0) for host in hosts):
        pytest.skip("network reachable: this test is about the offline message")
    env = {**os.environ, "HF_HOME": str(tmp_path / "hf"), "XDG_CACHE_HOME": str(tmp_path / "cache"),
           "HOME": str(tmp_path / "home")}  # make sure no cached copy of the weights is found
    env.pop("HF_HUB_OFFLINE", None)
    start = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-m", "freezeframe.cli", "extract", str(VIDEOS / "short_32frames.mp4"),
         "--store", str(tmp_path / "s"), "--model", "ViT-B-32", "--pretrained", "openai", "--no-progress"],
        capture_output=True, text=True, env=env, timeout=60,
    )
    elapsed = time.perf_counter() - start
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert elapsed < 20, elapsed
    output = (proc.stdout + proc.stderr).strip()
    assert "Traceback" not in output
    lines = output.splitlines()
    assert len(lines) == 1, output
    assert lines[0].startswith("error:") and "--pretrained PATH" in lines[0] and "'openai'" in lines[0]
    assert not (tmp_path / "s").exists() or not any((tmp_path / "s").rglob("*.done.json"))


@pytest.mark.parametrize("model, expect", [("ViT-B-32", "openai"), (TINY, "tags: none")])
def test_unknown_pretrained_tag_is_one_clear_line(tmp_path, model, expect):
    start = time.perf_counter()
    result = CliRunner().invoke(main, ["extract", str(VIDEOS / "short_32frames.mp4"), "--store",
                                       str(tmp_path / "s"), "--model", model, "--pretrained", "no-such-tag"])
    assert time.perf_counter() - start < 5
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    lines = error_lines(result.output)
    assert len(lines) == 1, result.output
    assert lines[0].startswith("error: 'no-such-tag' is neither a checkpoint file nor a pretrained tag of")
    assert expect in lines[0]


# ---- 6. real ViT-B-32 architecture, random weights ---------------------------------------------
def test_vit_b_32_random_weights_match_open_clip(tmp_path):
    store = tmp_path / "store"
    video = "short_32frames.mp4"
    extract_cli("--model", "ViT-B-32", "--pretrained", "none", "--num-frames", "2", "--features", "embed,tokens",
                "--layers", "-1", store=store, videos=[video])
    fs = only_feature_set(store)
    assert fs.provenance["layers"] == [11]
    arrays = fs.arrays()
    assert arrays["embed"]["shape"] == [512]
    assert arrays["tokens/11"]["shape"] == [50, 768]
    assert arrays["block_input/11"]["shape"] == [50, 768]
    embed, tokens = fs.read("short_32frames", "embed"), fs.read("short_32frames", "tokens/11")
    assert embed.shape == (2, 512) and tokens.shape == (2, 50, 768)

    torch.manual_seed(0)
    model, _, preprocess = open_clip.create_model_and_transforms("ViT-B-32", pretrained=None)
    model.eval()
    frames = decode(VIDEOS / video, fs.read("short_32frames", "frame_indices"))
    pixels = pil_pixels(preprocess, frames)
    assert pixels.shape == (2, 3, 224, 224)
    with torch.no_grad():
        want = model.encode_image(pixels)
        inter = model.visual.forward_intermediates(pixels, indices=[11], output_fmt="NLC", output_extra_tokens=True,
                                                   intermediates_only=True)
    want_tokens = torch.cat([inter["image_intermediates_prefix"][0], inter["image_intermediates"][0]], dim=1)
    cos = cosine(embed, want)
    assert cos.min() >= 0.9999, cos
    assert cosine(tokens, want_tokens).min() >= 0.9999
    assert fp16_error(tokens, want_tokens) <= 2.0


# ---- 7. layers -------------------------------------------------------------------------------------
@pytest.mark.parametrize("layers", ["4", "-5", "0,7"])
def test_layers_out_of_range_is_a_clear_error(tmp_path, layers):
    result = CliRunner().invoke(main, ["extract", str(VIDEOS / "short_32frames.mp4"), "--store",
                                       str(tmp_path / "s"), "--model", TINY, "--pretrained", "none",
                                       "--features", "tokens", "--layers", layers])
    assert result.exit_code == 2, result.output
    lines = error_lines(result.output)
    assert len(lines) == 1 and "Traceback" not in result.output, result.output
    bad = [x for x in layers.split(",") if not -TINY_DEPTH <= int(x) < TINY_DEPTH][0]
    assert lines[0] == f"error: --layers {bad} is out of range for a {TINY_DEPTH}-block image tower."


@pytest.mark.parametrize("layers, blocks", [
    ((-1,), [3]), ((-4,), [0]), ((-1, -3), [1, 3]), ((-1, 3), [3]), ((0, -2, 1), [0, 1, 2]),
    ((-4, -3, -2, -1), [0, 1, 2, 3]),
])
def test_negative_layers_resolve_to_blocks(tiny, layers, blocks):
    config = ClipConfig(model=TINY, pretrained="none", features=("tokens",), layers=layers)
    backbone = ClipBackbone(config, model=tiny[0])
    assert backbone.blocks == blocks
    expected = [f"tokens/{b}" for b in blocks] + [f"block_input/{b}" for b in blocks if b - 1 not in blocks]
    assert backbone.stored_arrays() == expected
    # and the captured arrays really are those blocks' outputs
    pixels = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    out = backbone(pixels)
    with torch.no_grad():
        inter = tiny[0].visual.forward_intermediates(pixels, indices=None, output_fmt="NLC",
                                                     output_extra_tokens=True, intermediates_only=True)
    for b in blocks:
        want = torch.cat([inter["image_intermediates_prefix"][b], inter["image_intermediates"][b]], dim=1)
        torch.testing.assert_close(out[f"tokens/{b}"], want, rtol=1e-5, atol=1e-5)


def test_cli_negative_layers_store_the_right_blocks(exact_set):
    # LAYERS = "-4,-3,-1" on a 4-block tower
    assert exact_set.provenance["layers"] == [0, 1, 3]
    assert exact_set.provenance["attention"]["blocks"] == [0, 1, 3]
    assert sorted(a for a in exact_set.arrays() if a.startswith("tokens/")) == ["tokens/0", "tokens/1", "tokens/3"]


def test_tokens_without_layers_is_a_clear_error(tmp_path):
    result = CliRunner().invoke(main, ["extract", str(VIDEOS / "short_32frames.mp4"), "--store",
                                       str(tmp_path / "s"), "--model", TINY, "--pretrained", "none",
                                       "--features", "embed,tokens", "--layers", ""])
    assert result.exit_code == 2, result.output
    assert result.output.strip() == "error: --layers must name at least one block whose tokens are stored."


# ---- precision on CPU ------------------------------------------------------------------------------
@pytest.mark.parametrize("precision, min_cos", [("fp16", 0.9999), ("bf16", 0.999)])
def test_reduced_precision_runs_on_cpu(tmp_path, exact_set, refs, precision, min_cos):
    """--precision fp16/bf16 off CUDA computes under autocast (it used to crash: half input, float weights)."""
    store = tmp_path / "store"
    extract_cli("--model", TINY, "--pretrained", "none", "--precision", precision, "--features", "embed,cls,tokens",
                "--layers", LAYERS, "--num-frames", str(NUM_FRAMES), "--decoder", "decord", store=store,
                videos=["archery_demo.mp4"])
    fs = only_feature_set(store)
    assert fs.provenance["compute_dtype"] == {"fp16": "float16", "bf16": "bfloat16"}[precision]
    ref = refs["archery_demo"]
    np.testing.assert_array_equal(fs.read("archery_demo", "frame_indices"), exact_set.read("archery_demo", "frame_indices"))
    assert cosine(fs.read("archery_demo", "embed"), ref["embed"]).min() >= min_cos
    for b in BLOCKS:
        assert cosine(fs.read("archery_demo", f"tokens/{b}"), ref[f"tokens/{b}"]).min() >= min_cos


# ---- pretrained tags trained with QuickGELU --------------------------------------------------------
def test_quickgelu_tag_builds_the_activation_its_weights_were_trained_with(tmp_path, monkeypatch):
    """open_clip builds ViT-B-32 with nn.GELU and only warns for the QuickGELU-trained `openai` tag;
    the extractor must build QuickGELU. A local tag of the tiny model (open_clip's own `file` entry of a
    pretrained config, no network) with `quick_gelu=True` stands in for `openai`."""
    name = resolve_model_name(TINY)
    torch.manual_seed(7)
    trained = open_clip.create_model(name, pretrained=None, force_quick_gelu=True).eval()
    checkpoint = tmp_path / "tiny-quickgelu.pt"
    torch.save(trained.state_dict(), checkpoint)
    monkeypatch.setitem(open_clip.pretrained._PRETRAINED, name,
                        {"qg_test": {"file": str(checkpoint), "quick_gelu": True}})
    store = tmp_path / "store"
    video = "archery_demo.mp4"
    extract_cli("--model", TINY, "--pretrained", "qg_test", "--features", "embed", "--num-frames", "4",
                "--decoder", "decord", store=store, videos=[video])
    fs = only_feature_set(store)
    assert fs.provenance["backbone"]["pretrained"] == "qg_test"
    assert fs.provenance["backbone"].get("force_quick_gelu") is True
    stored = fs.read("archery_demo", "embed")

    gelu = open_clip.create_model(name, pretrained=None).eval()
    gelu.load_state_dict(trained.state_dict())
    _, _, preprocess = open_clip.create_model_and_transforms(name, pretrained=None)
    pixels = pil_pixels(preprocess, decode(VIDEOS / video, fs.read("archery_demo", "frame_indices")))
    with torch.no_grad():
        want, wrong = trained.encode_image(pixels), gelu.encode_image(pixels)
    assert fp16_error(stored, want) <= 2.0
    assert cosine(stored, want).min() >= 0.9999
    assert fp16_error(stored, wrong) > 10.0  # the GELU model is measurably different on the same weights
