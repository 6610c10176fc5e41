"""S3D-G windows against the reference itself: the frames ffmpeg's fps filter picks in MMPT's decoding command.

tests/data/reference/ffmpeg_fps30.json holds, for stamped 24/25/29.97/30/60 fps MP4 and MKV clips and for the
sample videos, which source frame each frame of `ffmpeg -vf fps=30` is (see the README beside it). Exact match."""

from __future__ import annotations

import json
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest

from freezeframe.extract.decode import DecordReader, PyAVReader, TorchCodecReader
from freezeframe.extract.sampling import ZERO_FRAME, SamplingConfig, sample_indices
from stamped_clips import RATES, make_clip

FIXTURE = json.loads((Path(__file__).parents[1] / "data" / "reference" / "ffmpeg_fps30.json").read_text())
MMPT_WINDOWS = SamplingConfig("windows", fps=30.0, window_frames=30, window_stride=30, last_window="zeros")


def _readers(path: Path):
    """Every decoder that reads the file (decord and torchcodec refuse AVI, whose frames have no timestamps)."""
    for reader_class in (PyAVReader, DecordReader, TorchCodecReader):
        try:
            reader = reader_class(str(path))
        except Exception:  # noqa: BLE001 - a refusal; PyAV reads every file here
            assert reader_class is not PyAVReader
            continue
        yield reader
        reader.close()


def _mmpt_windows(selected: list) -> list:
    """MMPT's `_zero_pad`: the fps=30 frames cut into seconds, the last one completed with black frames."""
    padded = list(selected) + [ZERO_FRAME] * (-len(selected) % 30)
    return [padded[i:i + 30] for i in range(0, len(padded), 30)]


def _assert_same(indices: np.ndarray, expected: list, what: str) -> None:
    rows = indices.reshape(-1, 30).tolist()
    assert len(rows) == len(expected), f"{what}: {len(rows)} windows, ffmpeg gives {len(expected)}"
    wrong = [(r, c) for r, (row, want) in enumerate(zip(rows, expected)) for c, (got, ok) in enumerate(zip(row, want))
             if not (got == ok or (isinstance(ok, list) and got in ok))]
    assert not wrong, f"{what}: {len(wrong)} positions differ from ffmpeg's fps filter, first (window, frame) {wrong[:3]}"


@pytest.mark.parametrize("clip", FIXTURE["stamped"], ids=lambda c: f"{c['rate']}fps-{c['container']}")
def test_windows_pick_the_frames_of_ffmpegs_fps_filter_on_stamped_clips(clip, tmp_path):
    path = tmp_path / f"clip.{clip['container']}"
    make_clip(path, RATES[clip["rate"]], clip["frames"])
    time_base = Fraction(clip["time_base"])
    for reader in _readers(path):
        # the inputs are the fixture's: the same frame times the reference read
        np.testing.assert_allclose(reader.timestamps, np.asarray(clip["pts"]) * float(time_base), atol=1e-6)
        indices = sample_indices(reader.timestamps, MMPT_WINDOWS, reader.end, reader.start)
        _assert_same(indices, _mmpt_windows(clip["ffmpeg_fps30"]), f"{reader.name} {clip['rate']} fps "
                     f"{clip['container']}")


DELAYED = "ntu_1080p.avi"  # H.264 with B-frames in AVI: packets without presentation times


@pytest.mark.parametrize("name", sorted(set(FIXTURE["real"]) - {DELAYED}))
def test_windows_pick_the_frames_of_ffmpegs_fps_filter_on_sample_videos(name, sample_videos):
    for reader in _readers(sample_videos[name]):
        indices = sample_indices(reader.timestamps, MMPT_WINDOWS, reader.end, reader.start)
        _assert_same(indices, _mmpt_windows(FIXTURE["real"][name]), f"{reader.name} {name}")


def test_h264_in_avi_differs_from_ffmpeg_only_by_its_decoders_reorder_delay(sample_videos):
    """Both start at frame 0 repeated into the gap before the first frame's tick (its packet is dated 1/30 s), but
    ffmpeg dates each later frame of an AVI's H.264 by the packet that completes it, one tick later still; freezeframe
    dates frames by their own packets. Every frame one position late, the same number of windows."""
    reader = PyAVReader(str(sample_videos[DELAYED]))
    ours = sample_indices(reader.timestamps, MMPT_WINDOWS, reader.end, reader.start)
    reference = FIXTURE["real"][DELAYED]
    real = ours[ours != ZERO_FRAME].tolist()
    assert real == [0, *range(103)] and reference == [0, *real]
    assert len(ours) // 30 == len(_mmpt_windows(reference)) == 4  # the same windows, so the same rows
