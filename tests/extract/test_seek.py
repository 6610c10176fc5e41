"""Keyframe seeking equals sequential decoding; --seek keyframe stores real keyframes; refused inputs fail cleanly."""

from __future__ import annotations

import os
from pathlib import Path

import av
import numpy as np
import pytest

from freezeframe.extract.decode import DecodeOptions, PyAVReader, VideoReadError, open_video
from freezeframe.extract.loader import Chunk, ChunkStream, DecodeSpec, Failure, ShardEnd
from freezeframe.extract.preprocess import PreprocessConfig
from freezeframe.extract.sampling import SamplingConfig, snap_to_keyframes
from freezeframe.extract.sources import VideoSource
from longvideos import footage, write_video

GOP = 25
LONG_FRAMES = 300  # 12 GOPs


@pytest.fixture(scope="session")
def long_videos(tmp_path_factory, sample_videos) -> dict[str, Path]:
    """160x120 H.264 with B-frames and a keyframe every 25 frames: constant rate (MP4), variable rate (MP4, MKV)."""
    folder = tmp_path_factory.mktemp("long")
    frames = footage(sample_videos["archery_demo.mp4"], LONG_FRAMES, 160, 120)
    durations = list(np.random.default_rng(0).integers(20, 80, LONG_FRAMES))
    return {"cfr.mp4": write_video(folder / "cfr.mp4", frames, gop=GOP),
            "vfr.mp4": write_video(folder / "vfr.mp4", frames, gop=GOP, durations_ms=durations),
            "vfr.mkv": write_video(folder / "vfr.mkv", frames, gop=GOP, durations_ms=durations)}


def _target_sets(n: int, keyframes: np.ndarray) -> list[np.ndarray]:
    """Sparse, dense, around-keyframe, keyframe-only and end-of-video targets."""
    around = np.clip(np.concatenate([keyframes - 1, keyframes, keyframes + 1]), 0, n - 1)
    return [np.unique(x) for x in (np.linspace(0, n - 1, 8).astype(np.int64), np.arange(3, n, 7), around, keyframes,
                                   np.array([n - 1]), np.array([0, n // 2, n - 2, n - 1]))]


def _check_seeking_equals_sequential(path: Path) -> PyAVReader:
    sequential = PyAVReader(str(path), seek=False)
    every = sequential.get(np.arange(len(sequential.timestamps)))
    sequential.close()
    sets = _target_sets(len(every), sequential.keyframes)
    if not PyAVReader(str(path)).seeking:
        sets = sets[:1]  # AVI: the same sequential path either way
    for targets in sets:
        reader = PyAVReader(str(path))
        np.testing.assert_array_equal(reader.get(targets), every[targets], err_msg=f"{path.name} {targets}")
        reader.close()
    # a reader reused across calls, forwards and backwards, as iter_chunks and restarts use it
    reader = PyAVReader(str(path))
    for chunk in (np.array([len(every) - 1]), np.array([0, 1]), np.array([len(every) // 3, len(every) // 2])):
        np.testing.assert_array_equal(reader.get(chunk), every[chunk])
    reader.close()
    return reader


def test_seeking_equals_sequential_on_every_sample(sample_videos):
    for name, path in sample_videos.items():
        reader = _check_seeking_equals_sequential(path)
        assert reader.seeking == (not name.endswith(".avi")), name  # AVI keeps the sequential path


@pytest.mark.parametrize("name", ["cfr.mp4", "vfr.mp4", "vfr.mkv"])
def test_seeking_equals_sequential_on_long_videos(name, long_videos):
    reader = _check_seeking_equals_sequential(long_videos[name])
    assert reader.seeking
    np.testing.assert_array_equal(reader.keyframes, np.arange(0, LONG_FRAMES, GOP))
    if name.startswith("vfr"):
        steps = np.diff(reader.timestamps)
        assert steps.min() < 0.03 and steps.max() > 0.07  # really variable-rate


@pytest.mark.parametrize("name", ["cfr.mp4", "vfr.mp4", "vfr.mkv"])
def test_seeks_skip_the_gops_between_targets(name, long_videos):
    """8 targets over 12 GOPs: each costs the walk from its keyframe, not the walk from the start."""
    targets = np.array([10, 60, 110, 160, 210, 240, 270, 295])
    reader = PyAVReader(str(long_videos[name]))
    reader.get(targets)
    walks = targets - targets // GOP * GOP + 1
    assert reader.decoded <= walks.sum() + 4 * len(targets)  # + decoder delay (B-frames) per seek
    assert reader.decoded < 0.5 * (targets[-1] + 1)
    keyframes_only = PyAVReader(str(long_videos[name]))
    keyframes_only.get(keyframes_only.keyframes)
    assert keyframes_only.decoded == len(keyframes_only.keyframes)  # one decoded frame per keyframe


def test_mpeg_ts_and_avi_decode_sequentially(tmp_path, sample_videos):
    reader = PyAVReader(str(sample_videos["test_mpeg4.avi"]))
    assert not reader.seeking
    frames = footage(sample_videos["short_32frames.mp4"], 60, 160, 120)
    ts_path = tmp_path / "long.ts"
    write_video(ts_path.with_suffix(".mp4"), frames, gop=GOP)
    with av.open(str(ts_path.with_suffix(".mp4"))) as src, av.open(str(ts_path), "w", format="mpegts") as dst:
        out = dst.add_stream_from_template(src.streams.video[0])
        for packet in src.demux(src.streams.video[0]):
            if packet.dts is not None:
                packet.stream = out
                dst.mux(packet)
    reader = PyAVReader(str(ts_path))
    assert not reader.seeking
    assert len(reader.timestamps) == 60


def test_snap_to_keyframes_picks_the_nearest_in_time():
    ts = np.arange(100) / 10.0
    keyframes = np.array([0, 30, 60, 90])
    snapped = snap_to_keyframes(np.array([0, 14, 15, 16, 44, 46, 75, 99]), ts, keyframes)
    np.testing.assert_array_equal(snapped, [0, 0, 0, 30, 30, 60, 60, 90])  # 15 is a tie: the earlier


def _stream(path: Path, seek: str, sampling: SamplingConfig, **options) -> list:
    spec = DecodeSpec(sampling, PreprocessConfig(mode="fast"), seek=seek, options=DecodeOptions(**options))
    return list(ChunkStream([[VideoSource("v", str(path))]], spec))


@pytest.mark.parametrize("sampling", [SamplingConfig("num_frames", num_frames=8), SamplingConfig("fps", fps=2.0)])
def test_seek_keyframe_yields_keyframes_with_their_real_indices_and_times(sampling, long_videos):
    path = long_videos["vfr.mp4"]
    sequential = PyAVReader(str(path), seek=False)
    every = sequential.get(np.arange(LONG_FRAMES))
    windows = [item for item in _stream(path, "keyframe", sampling) if isinstance(item, Chunk)]
    exact = [item for item in _stream(path, "exact", sampling) if isinstance(item, Chunk)]
    indices = np.concatenate([w.frame_indices for w in windows])
    assert len(indices) == sum(len(w.frame_indices) for w in exact)  # as many rows as exact sampling
    assert set(indices) <= set(sequential.keyframes) and len(set(indices)) > 1
    np.testing.assert_array_equal(np.concatenate([w.timestamps for w in windows]), sequential.timestamps[indices])
    np.testing.assert_array_equal(np.concatenate([w.frames.numpy() for w in windows]), every[indices])
    exact_indices = np.concatenate([w.frame_indices for w in exact])
    assert not set(exact_indices) <= set(sequential.keyframes)  # the exact samples are (mostly) not keyframes
    assert windows[-1].info["decoder"] == "pyav"


def test_hls_playlist_named_mp4_is_refused(tmp_path):
    playlist = tmp_path / "clip.mp4"
    playlist.write_text("#EXTM3U\n#EXT-X-TARGETDURATION:1\n#EXTINF:1,\nclip.mp4\n")  # loops on itself
    assert playlist.stat().st_size < 100
    for decoder in ("auto", "pyav", "decord"):
        with pytest.raises(VideoReadError, match="^is an HLS playlist, not a video file"):
            open_video(str(playlist), decoder)
    concat = tmp_path / "list.mp4"
    concat.write_text("ffconcat version 1.0\nfile clip.mp4\n")
    with pytest.raises(VideoReadError, match="^is an FFmpeg concat list"):
        open_video(str(concat), "auto")


def test_a_pipe_is_refused_without_blocking(tmp_path):
    fifo = tmp_path / "pipe.mp4"
    os.mkfifo(fifo)
    with pytest.raises(VideoReadError, match="^not a regular file"):
        open_video(str(fifo), "auto")


@pytest.mark.parametrize("decoder", ["pyav", "torchcodec", "decord"])
def test_max_pixels_fails_before_decoding(decoder, sample_videos):
    pytest.importorskip(decoder if decoder != "pyav" else "av")
    path = str(sample_videos["ntu_1080p.avi" if decoder == "pyav" else "archery_demo.mp4"])
    with pytest.raises(VideoReadError, match=r"^frame size \d+x\d+ \(.+ MP\) is over --max-pixels 50000"):
        open_video(path, decoder, DecodeOptions(max_pixels=50_000))
    items = _stream(Path(path), "exact", SamplingConfig("num_frames", num_frames=2), max_pixels=50_000)
    assert [type(item) for item in items] == [Failure, ShardEnd] and "--max-pixels" in items[0].reason


def test_torchcodec_frames_equal_pyav(sample_videos, long_videos):
    pytest.importorskip("torchcodec")
    for path in (sample_videos["v_ZNVhz7ctTq0.mp4"], long_videos["cfr.mp4"]):
        pyav = open_video(str(path), "pyav")
        torchcodec = open_video(str(path), "torchcodec")
        targets = np.unique(np.linspace(0, len(pyav.timestamps) - 1, 6).astype(np.int64))
        np.testing.assert_array_equal(torchcodec.timestamps, pyav.timestamps)
        np.testing.assert_array_equal(torchcodec.get(targets), pyav.get(targets))
    with pytest.raises(VideoReadError, match="torchcodec seeks"):
        open_video(str(sample_videos["test_mpeg4.avi"]), "torchcodec")


def test_a_seek_keyframe_run_resumes_and_refuses_exact_appends(tmp_path, sample_videos):
    """The store's recorded `sampling.seek` is what a rerun compares with: the same command resumes, an exact run is
    refused in one line before the model loads."""
    from click.testing import CliRunner

    from freezeframe.cli import main

    args = ["extract", str(sample_videos["archery_demo.mp4"]), "--store", str(tmp_path / "store"), "--model",
            "ff-tiny-vit", "--pretrained", "none", "--workers", "0", "--no-progress", "--seek", "keyframe"]
    assert CliRunner().invoke(main, args).exit_code == 0
    rerun = CliRunner().invoke(main, args)
    assert rerun.exit_code == 0 and "0 videos (0 frames)" in rerun.output and "1 already committed" in rerun.output
    exact = CliRunner().invoke(main, args[:-2])
    assert exact.exit_code == 2
    assert "sampling.seek: store has 'keyframe', this run has None" in exact.output
