"""A decode stage that survives its inputs: a hanging input, a giant-resolution input and a killed decode worker
each end as one line in failures.jsonl, every good video is committed, and a rerun finishes; with --workers 0 a
hanging input meets the same time limit in the main process. --decode-device cuda is refused in one line where it
cannot run.

The hang and the kill are real `freezeframe extract` subprocesses armed at the `decode` fault site (a decode
worker, or the main process, hangs or SIGKILLs itself as it opens a video; one-shot across processes)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

from faults import REPO, VIDEOS
from freezeframe.cli import main
from freezeframe.extract.timelimit import DecodeTimeout, time_limit
from freezeframe.store import open_store

NAMES = ("archery_demo.mp4", "lowfps_6fps.mp4", "short_32frames.mp4", "v_GGSY1Qvo990.mp4")
IDS = sorted(Path(name).stem for name in NAMES)
FEATURE_SET = "clip-ff-tiny-vit-random"


def _args(store: Path, *extra: str, workers: int = 2) -> list[str]:
    # two workers, shards of two: a worker lost at the first video of its shard leaves one video to redo
    return [*(str(VIDEOS / name) for name in NAMES), "--store", str(store), "--model", "ff-tiny-vit",
            "--pretrained", "none", "--num-frames", "2", "--workers", str(workers), "--shard-size", "2",
            "--no-progress", *extra]


def _failures(store: Path) -> list[dict]:
    path = store / FEATURE_SET / "failures.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def _run_armed(args: list[str], fault: str, once: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "FREEZEFRAME_FAULT": fault, "FREEZEFRAME_FAULT_ONCE": str(once)}
    return subprocess.run([sys.executable, "-m", "freezeframe.cli", "extract", *args], env=env, cwd=REPO,
                          capture_output=True, text=True, timeout=240)


def _rerun_finishes(store: Path) -> None:
    result = CliRunner().invoke(main, ["extract", *_args(store)], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert open_store(store)[FEATURE_SET].video_ids() == IDS


@pytest.mark.parametrize("fault, workers, reason", [
    ("decode:1", 2, "the decode worker died while decoding this video (killed by SIGKILL, e.g. by the out-of-memory "
                    "killer)"),
    ("decode.hang:1", 2, "decoding stalled: nothing decoded for 3 s (--decode-timeout); the decode worker was killed"),
    ("decode.hang:1", 0, "decoding stalled: nothing decoded for 3 s (--decode-timeout); the video was abandoned"),
])
def test_a_lost_decode_worker_costs_one_video(fault, workers, reason, tmp_path):
    store = tmp_path / "store"
    result = _run_armed(_args(store, "--decode-timeout", "3", workers=workers), fault, tmp_path / "fired")
    assert result.returncode == 1, result.stderr[-2000:]  # some videos failed, the run went on
    assert "Traceback" not in result.stderr
    failures = _failures(store)
    assert [f["reason"] for f in failures] == [reason]
    assert sorted(open_store(store)[FEATURE_SET].video_ids()) == sorted(set(IDS) - {failures[0]["video_id"]})
    _rerun_finishes(store)


def test_a_giant_resolution_input_fails_before_decoding(tmp_path):
    import av
    import numpy as np

    giant = tmp_path / "giant.mov"  # 2400x2400 PNG frames: over a --max-pixels of 4 MP
    with av.open(str(giant), "w") as container:
        stream = container.add_stream("png", rate=1)
        stream.width = stream.height = 2400
        stream.pix_fmt = "rgb24"
        for packet in [*stream.encode(av.VideoFrame.from_ndarray(np.zeros((2400, 2400, 3), np.uint8))),
                       *stream.encode(None)]:
            container.mux(packet)
    store = tmp_path / "store"
    result = CliRunner().invoke(main, ["extract", *_args(store, "--max-pixels", "4000000"), str(giant)])
    assert result.exit_code == 1, result.output
    assert [(f["video_id"], f["reason"]) for f in _failures(store)] == [
        ("giant", "frame size 2400x2400 (5.8 MP) is over --max-pixels 4000000 (4.0 MP)")]
    assert open_store(store)[FEATURE_SET].video_ids() == IDS


def test_workers_forked_from_a_process_that_has_decoded_decode(tmp_path):
    """PyAV 18.1.1 keeps one swscale context per thread; a worker forked from a main thread that had converted a
    frame inherited its context, whose helper threads do not exist after a fork, and its first conversion hung
    for good (every video then failed, a --decode-timeout each). Workers decode on a thread of their own."""
    import av

    with av.open(str(VIDEOS / "v_ZNVhz7ctTq0.mp4")) as container:  # this process's main thread converts a frame
        next(container.decode(video=0)).to_ndarray(format="rgb24")
    store = tmp_path / "store"
    result = CliRunner().invoke(main, ["extract", *_args(store, "--decoder", "pyav", "--decode-timeout", "10")])
    assert result.exit_code == 0, result.output
    assert _failures(store) == []
    assert open_store(store)[FEATURE_SET].video_ids() == IDS


def test_time_limit_interrupts_python_level_decoding_and_restores_the_alarm():
    """--workers 0's guard: a block that runs past its limit raises DecodeTimeout; one that finishes in time does
    not, and whatever handled SIGALRM before gets it back."""
    import signal

    before = signal.getsignal(signal.SIGALRM)
    start = time.monotonic()
    with pytest.raises(DecodeTimeout, match="stalled"):
        with time_limit(0.3, "stalled"):
            while True:  # a decoder busy in Python (packets, frames) that never delivers
                pass
    assert 0.25 <= time.monotonic() - start < 5
    with time_limit(5, "never"):
        time.sleep(0.05)
    assert signal.getsignal(signal.SIGALRM) is before
    assert signal.getitimer(signal.ITIMER_REAL) == (0.0, 0.0)


@pytest.mark.skipif(torch.cuda.is_available(), reason="a CPU machine refuses --decode-device cuda")
@pytest.mark.parametrize("extra, message", [
    (("--preprocess", "fast"), "error: --decode-device cuda decodes with NVDEC on a CUDA GPU, and torch sees none "
                               "(torch.cuda.is_available() is False); decode on the CPU (--decode-device cpu, the "
                               "default)."),
    ((), "error: --decode-device cuda resizes frames on the GPU: use it with --preprocess fast (exact mode is "
         "open_clip's PIL transform, on the CPU)."),
    (("--preprocess", "fast", "--decoder", "pyav"), "error: --decode-device cuda decodes with torchcodec (NVDEC): use "
                                                    "--decoder auto or torchcodec."),
    (("--preprocess", "fast", "--decode-device", "gpu"), "error: unknown --decode-device 'gpu'; choose cpu, cuda or "
                                                         "cuda:N."),
])
def test_decode_device_cuda_is_refused_in_one_line_where_it_cannot_run(extra, message, tmp_path):
    store = tmp_path / "store"
    result = CliRunner().invoke(main, ["extract", *_args(store, "--decode-device", "cuda", *extra)])
    assert result.exit_code == 2, result.output
    assert result.output.strip().splitlines() == [message]
    assert not store.exists()  # refused before anything was created
