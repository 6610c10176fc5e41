"""Extraction throughput beside the backbone's rate and the decode ceiling, measured in one run, printed as one table.

Clips: H.264 (B-frames, a keyframe every `--gop` frames, 25 fps) made from the sample footage, `--seconds` long at
`--height`p; one clip is encoded and linked under as many names as a sampling needs to reach `--frames` sampled
frames. Backbone: open_clip `--model` with random weights at `--precision` (fp16 on CUDA), fast preprocessing, batches
of `--batch-size`. For each sampling (8 frames a video exact, 8 frames with --seek keyframe, dense: every decoded
frame) and each decode device (CPU decode workers; NVDEC when this machine has CUDA and a CUDA build of torchcodec):

- pipeline: frames/s of a whole `run_extraction` into a fresh store (decode workers, batched forward, writes);
- bare forward: frames/s of the backbone alone on preprocessed frames already on the device, same batch size,
  measured just before each pipeline run (so that both see the same machine);
- decode ceiling: decoded frames/s the decode stage sustains (every frame of the clips through the same decode
  workers, resized as fast mode does, no backbone; first frame to last) over decoded frames per sampled frame
  (counted by PyAV's reader on one clip). The pipeline cannot beat the lower of the ceiling and the bare forward.

    python benchmarks/extract_throughput.py           # a GPU machine: ViT-B-16 fp16 on 10-s 360p clips
    python benchmarks/extract_throughput.py --smoke   # anywhere, in about a minute: tiny model, small clips, CPU
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from dataclasses import dataclass, fields, replace
from pathlib import Path

import numpy as np
import torch

from freezeframe.devices import resolve_device
from freezeframe.errors import InputError
from freezeframe.extract import ClipBackbone, ClipConfig, ExtractConfig, SamplingConfig, VideoSource, run_extraction
from freezeframe.extract.decode import PyAVReader, check_decode_device
from freezeframe.extract.loader import Chunk
from freezeframe.extract.preprocess import fast_preprocess
from freezeframe.extract.runner import decode_spec, split_shards
from freezeframe.extract.sampling import sample_indices, snap_to_keyframes
from freezeframe.extract.workers import DecodePool

REPO = Path(__file__).resolve().parents[1]
FOOTAGE = REPO / "tests" / "data" / "videos" / "v_ZNVhz7ctTq0.mp4"
RATE = 25
SAMPLINGS = {  # name -> (sampling, seek)
    "8 frames": (SamplingConfig("num_frames", num_frames=8), "exact"),
    "8 frames, --seek keyframe": (SamplingConfig("num_frames", num_frames=8), "keyframe"),
    "dense (every frame)": (SamplingConfig("fps", fps=RATE), "exact"),
}


@dataclass(frozen=True)
class Setup:
    """What is measured; `--smoke` swaps in SMOKE, and any flag given overrides a field."""

    model: str = "ViT-B-16"
    precision: str = "auto"
    seconds: int = 10
    height: int = 360
    gop: int = 50
    frames: int = 16384  # sampled frames per measurement
    batch_size: int = 256
    workers: int = max(1, (os.cpu_count() or 2) - 1)  # CPU decode workers: every core but one
    nvdec_workers: int = 4  # NVDEC decode workers: each holds a CUDA context, and the GPU time-slices between them
    device: str = "auto"


SMOKE = Setup(model="ff-tiny-vit", seconds=2, height=96, frames=48, batch_size=16, workers=1, nvdec_workers=1,
              device="cpu")


def make_clips(folder: Path, setup: Setup, count: int) -> list[VideoSource]:
    """`count` names of one generated clip (hard links: decoding is the cost measured, not disk)."""
    sys.path.insert(0, str(REPO / "tests"))
    from longvideos import footage, write_video

    clip = folder / "clip.mp4"
    if not clip.exists():
        width = setup.height * 16 // 9 // 2 * 2
        length = setup.seconds * RATE
        write_video(clip, footage(FOOTAGE, length, width, setup.height), gop=setup.gop, b_frames=2, rate=RATE)
    names = [folder / f"clip{i:05d}.mp4" for i in range(count)]
    for name in names:
        if not name.exists():
            os.link(clip, name)
    return [VideoSource(name.stem, str(name)) for name in names]


def decoded_per_sampled(path: str, sampling: SamplingConfig, seek: str) -> float:
    """Frames decoded to deliver each sampled frame of one clip (seeking to the keyframe before each target)."""
    reader = PyAVReader(path)
    indices = sample_indices(reader.timestamps, sampling)
    if seek == "keyframe":
        indices = snap_to_keyframes(indices, reader.timestamps, reader.keyframes)
    reader.get(np.unique(indices))
    reader.close()
    return reader.decoded / len(indices)


def decode_rate(sources: list[VideoSource], config: ExtractConfig, backbone: ClipBackbone) -> float:
    """Decoded frames/s of the decode stage alone: every frame through `config`'s decode workers, first to last."""
    spec = decode_spec(config, backbone.preprocess)
    workers = max(1, config.workers)
    pool = DecodePool(split_shards(sources, config.shard_size, workers), spec, None, workers, 0)
    frames, first = 0, None
    for item in pool:
        if isinstance(item, Chunk):
            first = first or time.perf_counter()
            frames += len(item.frame_indices)
    return frames / (time.perf_counter() - first)


def bare_forward_rate(backbone: ClipBackbone, source: VideoSource, setup: Setup) -> float:
    """Frames/s of the backbone alone on `setup.frames` preprocessed frames already on the device."""
    reader = PyAVReader(source.path)
    frames = torch.from_numpy(reader.get(np.arange(min(len(reader.timestamps), setup.batch_size))))
    reader.close()
    batch = fast_preprocess(frames.to(backbone.device), backbone.preprocess)
    batch = batch.repeat(-(-setup.batch_size // len(batch)), 1, 1, 1)[:setup.batch_size]
    steps = max(1, setup.frames // setup.batch_size)
    with torch.no_grad():
        for _ in range(2):  # warm-up
            backbone(batch)
        _synchronize(backbone.device)
        start = time.perf_counter()
        for _ in range(steps):
            outputs = {k: v.to("cpu", torch.float16) for k, v in backbone(batch).items()}  # as the batcher does
        _synchronize(backbone.device)
    assert outputs
    return steps * setup.batch_size / (time.perf_counter() - start)


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def decode_devices(device: torch.device) -> tuple[list[str], str]:
    """The decode devices to measure, and a note on why NVDEC is not among them (if it is not)."""
    cuda = str(device) if device.type == "cuda" else "cuda"
    try:
        check_decode_device(cuda)
    except InputError as exc:
        return ["cpu"], f"NVDEC not measured: {exc}"
    return ["cpu", cuda], ""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    parser.add_argument("--smoke", action="store_true", help="tiny model, short small clips, CPU: checks the run")
    for field in fields(Setup):
        parser.add_argument(f"--{field.name.replace('_', '-')}", type=type(field.default), default=None)
    parser.add_argument("--out", type=Path, default=Path(tempfile.gettempdir()) / "freezeframe-throughput")
    args = parser.parse_args()
    setup = replace(SMOKE if args.smoke else Setup(), **{f.name: getattr(args, f.name) for f in fields(Setup)
                                                         if getattr(args, f.name) is not None})
    device = resolve_device(setup.device)
    backbone = ClipBackbone(ClipConfig(model=setup.model, pretrained="none", precision=setup.precision), device=device)
    folder = args.out / f"{setup.height}p_{setup.seconds}s_gop{setup.gop}"
    folder.mkdir(parents=True, exist_ok=True)
    frames_per_clip = setup.seconds * RATE
    devices, note = decode_devices(device)

    dense = make_clips(folder, setup, -(-setup.frames // frames_per_clip))
    base = ExtractConfig(store="", sampling=SAMPLINGS["dense (every frame)"][0], preprocess="fast",
                         batch_size=setup.batch_size, workers=setup.workers, device=str(device), progress=False)
    configs = {decoder: replace(base, decode_device=decoder, workers=setup.workers if decoder == "cpu" else
                                setup.nvdec_workers) for decoder in devices}
    ceilings = {decoder: decode_rate(dense, config, backbone) for decoder, config in configs.items()}

    gpu = f", {torch.cuda.get_device_name(device)}" if device.type == "cuda" else ""
    print(f"{setup.model} ({backbone.compute_dtype}) on {device}{gpu}; decode workers: {setup.workers} CPU, "
          f"{setup.nvdec_workers} NVDEC; fast preprocessing; {setup.seconds}-s {setup.height}p clips, GOP {setup.gop}; "
          f"batch {setup.batch_size}; about {setup.frames} sampled frames per row\n")
    print("| sampling | decode | decoded per sampled | decode ceiling f/s | bare forward f/s | pipeline f/s | "
          "pipeline / bare | pipeline / min(bare, ceiling) |")
    print("|---|---|---|---|---|---|---|---|")
    for name, (sampling, seek) in SAMPLINGS.items():
        per_video = frames_per_clip if sampling.strategy == "fps" else sampling.num_frames
        sources = make_clips(folder, setup, -(-setup.frames // per_video))
        cost = decoded_per_sampled(sources[0].path, sampling, seek)
        for decoder in devices:
            ceiling = ceilings[decoder] / cost
            bare = bare_forward_rate(backbone, sources[0], setup)
            with tempfile.TemporaryDirectory(dir=args.out) as store:
                config = replace(configs[decoder], store=store, sampling=sampling, seek=seek)
                report = run_extraction(sources, backbone, config)
            assert report.ok and report.stored == len(sources), report.failures[:3]
            pipeline = report.frames / report.seconds
            print(f"| {name} | {'NVDEC' if decoder != 'cpu' else 'CPU workers'} | {cost:.2f} | {ceiling:.0f} | "
                  f"{bare:.0f} | {pipeline:.0f} | {pipeline / bare:.2f} | {pipeline / min(bare, ceiling):.2f} |",
                  flush=True)
    if note:
        print(f"\n{note}")


if __name__ == "__main__":
    main()
