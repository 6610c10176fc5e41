"""sample_indices: N segment middles, a rate in real seconds, K clips of T frames; invalid configs."""

from __future__ import annotations

import numpy as np
import pytest

from freezeframe.errors import InputError
from freezeframe.extract.decode import DecordReader, PyAVReader
from freezeframe.extract.sampling import ZERO_FRAME, SamplingConfig, sample_indices


def _num(n_frames: int, n: int) -> np.ndarray:
    return sample_indices(np.arange(n_frames) / 30.0, SamplingConfig("num_frames", num_frames=n))


def _on_screen(ts: np.ndarray, t: float) -> int:
    """Index of the frame shown at time t: the last one starting at or before t."""
    return int(np.nonzero(ts <= t)[0][-1])


# --- num_frames ---------------------------------------------------------------------------

def test_num_frames_segment_middles():
    np.testing.assert_array_equal(_num(100, 8), [6, 18, 31, 43, 56, 68, 81, 93])
    np.testing.assert_array_equal(_num(10, 5), [1, 3, 5, 7, 9])
    np.testing.assert_array_equal(_num(280, 1), [140])
    for n_frames, n in ((355, 8), (57, 16), (420, 32), (103, 7)):
        idx = _num(n_frames, n)
        assert idx.dtype == np.int64 and len(idx) == n
        segment = n_frames / n
        # each index lies in its own segment, at its middle (rounded down)
        np.testing.assert_array_equal(idx, np.floor((np.arange(n) + 0.5) * segment).astype(np.int64))
        assert np.all(idx >= np.floor(np.arange(n) * segment))
        assert np.all(idx < np.arange(1, n + 1) * segment)


def test_num_frames_exact_count_gives_every_frame():
    np.testing.assert_array_equal(_num(32, 32), np.arange(32))


def test_num_frames_more_than_the_video_has_repeats_frames():
    idx = _num(3, 8)
    np.testing.assert_array_equal(idx, [0, 0, 0, 1, 1, 2, 2, 2])
    np.testing.assert_array_equal(_num(1, 4), [0, 0, 0, 0])
    idx = _num(5, 12)
    assert len(idx) == 12 and set(idx.tolist()) == set(range(5)) and np.all(np.diff(idx) >= 0)


def test_no_frames_is_an_error():
    with pytest.raises(ValueError):
        sample_indices(np.array([]), SamplingConfig())


# --- fps ------------------------------------------------------------------------------------

def test_fps_on_the_19_62_fps_sample_picks_the_frame_on_screen(sample_videos):
    path = str(sample_videos["v_GGSY1Qvo990.mp4"])
    for reader_class in (DecordReader, PyAVReader):
        reader = reader_class(path)
        ts = reader.timestamps
        reader.close()
        duration = ts[-1] + np.median(np.diff(ts))  # 355 frames / 19.62 fps = 18.09 s
        for fps in (1.0, 2.5, 7.0):
            idx = sample_indices(ts, SamplingConfig("fps", fps=fps))
            times = np.arange(len(idx)) / fps
            assert len(idx) == int(np.floor(duration * fps)) + 1, (reader_class.name, fps)
            expected = [_on_screen(ts, t) for t in times]
            np.testing.assert_array_equal(idx, expected, err_msg=f"{reader_class.name} at {fps} fps")
        # time base 1/981 s, 50 ticks a frame: the frame at t = k s is frame floor(19.62 k), even where
        # the next frame starts just after t (frame 157 starts at 8.00204 s)
        idx = sample_indices(ts, SamplingConfig("fps", fps=1.0))
        np.testing.assert_array_equal(idx, np.floor(np.arange(19) * 19.62 + 1e-9).astype(int))
        assert idx[8] == 156


@pytest.mark.parametrize("name,native_fps", [("archery_demo.mp4", 28), ("v_ZNVhz7ctTq0.mp4", 30),
                                              ("lowfps_6fps.mp4", 6), ("ntsc_29.97fps.mp4", 29.97)])
def test_fps_at_the_native_rate_keeps_every_frame_with_both_decoders(name, native_fps, sample_videos):
    """decord's timestamps are float32-rounded; sampling must not duplicate or skip frames because of it."""
    for reader_class in (DecordReader, PyAVReader):
        reader = reader_class(str(sample_videos[name]))
        ts = reader.timestamps
        reader.close()
        n = len(ts)
        np.testing.assert_array_equal(sample_indices(ts, SamplingConfig("fps", fps=native_fps)), np.arange(n),
                                      err_msg=reader_class.name)
        np.testing.assert_array_equal(sample_indices(ts, SamplingConfig("fps", fps=native_fps / 2)),
                                      np.arange(0, n, 2), err_msg=reader_class.name)


def test_fps_on_a_video_with_a_dropped_frame_repeats_the_frame_on_screen(sample_videos):
    """short_32frames.mp4 has a gap: frame 31 starts at 1.0667 s, two frame slots after frame 30."""
    ts = PyAVReader(str(sample_videos["short_32frames.mp4"])).timestamps
    assert ts[31] - ts[30] == pytest.approx(2 / 30, abs=1e-4)
    idx = sample_indices(ts, SamplingConfig("fps", fps=30))
    np.testing.assert_array_equal(idx, [*range(31), 30, 31])


def test_fps_with_irregular_timestamps():
    ts = np.array([0.0, 0.1, 0.15, 0.9, 1.0, 2.5, 2.6])
    idx = sample_indices(ts, SamplingConfig("fps", fps=2))
    # t = 0, 0.5, 1.0, 1.5, 2.0, 2.5; the video ends at 2.6 + median step 0.1 = 2.7
    np.testing.assert_array_equal(idx, [0, 2, 4, 4, 4, 5])
    for fps in (0.5, 1.0, 3.0, 10.0, 40.0):
        idx = sample_indices(ts, SamplingConfig("fps", fps=fps))
        times = np.arange(len(idx)) / fps
        assert times[-1] < 2.7 <= times[-1] + 1 / fps + 1e-9
        np.testing.assert_array_equal(idx, [_on_screen(ts, t) for t in times], err_msg=f"{fps} fps")


def test_fps_with_random_variable_frame_rate():
    rng = np.random.default_rng(0)
    durations = rng.choice([1 / 60, 1 / 30, 1 / 24, 0.1, 0.25], size=400)
    ts = np.concatenate([[0.0], np.cumsum(durations[:-1])])
    tolerance = 1e-5  # an instant that close before a frame's start may pick it (timestamp rounding)
    for fps in (1.0, 3.3, 12.5, 23.0):
        idx = sample_indices(ts, SamplingConfig("fps", fps=fps))
        times = np.arange(len(idx)) / fps
        assert times[-1] < ts[-1] + np.median(durations) <= times[-1] + 1 / fps
        ahead = ts[None, :] - times[:, None]
        assert not np.any((ahead > 1e-9) & (ahead <= tolerance)), "test data too close to a frame boundary"
        np.testing.assert_array_equal(idx, [_on_screen(ts, t + 1e-9) for t in times], err_msg=f"{fps} fps")
        assert len(set(idx.tolist())) < len(idx) or fps < 12  # repeats where frames last longer than 1/fps


def test_fps_timestamps_that_do_not_start_at_zero():
    ts = 5.0 + np.arange(50) / 10
    idx = sample_indices(ts, SamplingConfig("fps", fps=1))
    np.testing.assert_array_equal(idx, [0, 10, 20, 30, 40])


def test_fps_single_frame_video():
    np.testing.assert_array_equal(sample_indices(np.array([0.0]), SamplingConfig("fps", fps=4)), [0])


def test_fps_faster_than_the_video_repeats_frames():
    ts = np.arange(10) / 5.0  # 5 fps, 2 s
    idx = sample_indices(ts, SamplingConfig("fps", fps=10))
    np.testing.assert_array_equal(idx, np.repeat(np.arange(10), 2))


# --- clips ----------------------------------------------------------------------------------

def _clips(n_frames, clips, t, stride=1):
    return sample_indices(np.arange(n_frames) / 30.0,
                          SamplingConfig("clips", clips=clips, frames_per_clip=t, stride=stride))


def test_clips_evenly_spaced_clip_major():
    idx = _clips(100, 3, 4, stride=2)
    # span = (4 - 1) * 2 + 1 = 7; starts = linspace(0, 93, 3) rounded = 0, 46, 93 (46.5 rounds to even)
    np.testing.assert_array_equal(idx.reshape(3, 4), [[0, 2, 4, 6], [46, 48, 50, 52], [93, 95, 97, 99]])
    assert idx.dtype == np.int64


def test_single_clip_is_centered():
    np.testing.assert_array_equal(_clips(100, 1, 8), np.arange(46, 54))
    np.testing.assert_array_equal(_clips(100, 1, 4, stride=4), [43, 47, 51, 55])


def test_clips_layout_and_strides():
    for n_frames, clips, t, stride in ((420, 4, 8, 2), (355, 2, 16, 4), (57, 5, 3, 1)):
        views = _clips(n_frames, clips, t, stride).reshape(clips, t)
        assert np.all(np.diff(views, axis=1) == stride)
        assert views[0, 0] == 0 and views[-1, -1] == n_frames - 1  # first and last clip touch the ends
        assert np.all(np.diff(views[:, 0]) > 0)  # clip-major, increasing starts


def test_clips_of_a_short_video_are_clamped():
    idx = _clips(5, 2, 4, stride=2)  # span 7 > 5 frames
    np.testing.assert_array_equal(idx.reshape(2, 4), [[0, 2, 4, 4], [0, 2, 4, 4]])
    np.testing.assert_array_equal(_clips(3, 1, 8), [0, 1, 2, 2, 2, 2, 2, 2])
    idx = _clips(1, 3, 2)
    np.testing.assert_array_equal(idx, [0] * 6)


def test_describe():
    config = SamplingConfig("clips", clips=2, frames_per_clip=16, stride=4)
    assert config.describe() == {"strategy": "clips", "clips": 2, "frames_per_clip": 16, "stride": 4}
    assert SamplingConfig("fps", fps=2.0).describe() == {"strategy": "fps", "fps": 2.0}


# --- windows (S3D backbones) ---------------------------------------------------------------

def _windows_of(n_frames: int, native_fps: float, **kwargs) -> np.ndarray:
    config = SamplingConfig("windows", **kwargs)
    return sample_indices(np.arange(n_frames) / native_fps, config).reshape(-1, config.window_frames)


def test_windows_at_the_native_rate_are_consecutive_seconds():
    rows = _windows_of(420, 30.0, fps=30.0, window_frames=30, window_stride=30)  # 14 s -> 14 windows, 1 per second
    np.testing.assert_array_equal(rows, np.arange(420).reshape(14, 30))


def test_windows_drop_the_partial_tail_and_overlap_with_a_short_stride():
    rows = _windows_of(100, 10.0, fps=10.0, window_frames=16, window_stride=8)
    assert len(rows) == 11  # starts 0, 8, ..., 80: the last whole window ends at frame 95
    np.testing.assert_array_equal(rows[:, 0], np.arange(0, 81, 8))
    np.testing.assert_array_equal(rows[1, :8], rows[0, 8:])


def test_windows_resample_a_low_frame_rate():
    rows = _windows_of(57, 6.0, fps=30.0, window_frames=30, window_stride=30)  # 9.5 s at 6 fps
    assert len(rows) == 9
    np.testing.assert_array_equal(rows[:, 0], np.arange(9) * 6)  # each window starts on the frame shown at k s
    np.testing.assert_array_equal(rows[0], np.repeat(np.arange(6), 5))  # each 6 fps frame shown 5 times


def test_a_video_shorter_than_a_window_gives_one_padded_window():
    rows = _windows_of(20, 30.0, fps=30.0, window_frames=30, window_stride=30)
    np.testing.assert_array_equal(rows, [list(range(20)) + [19] * 10])


def test_zeros_keeps_the_last_partial_window_padded_with_zero_frames():
    # 9.5 s at 6 fps resampled at 30: 285 frames, 9 whole seconds and a half one of 15 frames + 15 zero frames
    rows = _windows_of(57, 6.0, fps=30.0, window_frames=30, window_stride=30, last_window="zeros")
    np.testing.assert_array_equal(rows[:9], _windows_of(57, 6.0, fps=30.0, window_frames=30, window_stride=30))
    np.testing.assert_array_equal(rows[9], [*np.repeat([54, 55, 56], 5), *[ZERO_FRAME] * 15])
    # a whole number of windows gains nothing; a short video is one window of its frames and zeros
    whole = _windows_of(60, 30.0, fps=30.0, window_frames=30, window_stride=30, last_window="zeros")
    np.testing.assert_array_equal(whole, np.arange(60).reshape(2, 30))
    short = _windows_of(20, 30.0, fps=30.0, window_frames=30, window_stride=30, last_window="zeros")
    np.testing.assert_array_equal(short, [list(range(20)) + [ZERO_FRAME] * 10])
    # overlapping windows go on until one reaches the last frame: starts 0, 8, ..., 88 for 100 frames of 16
    overlap = _windows_of(100, 10.0, fps=10.0, window_frames=16, window_stride=8, last_window="zeros")
    np.testing.assert_array_equal(overlap[:, 0], np.arange(0, 89, 8))
    assert overlap[-1, 11] == 99 and (overlap[-1, 12:] == ZERO_FRAME).all() and (overlap[:-1] >= 0).all()
    # a stride longer than a window skips frames: no window of zero frames alone starts past the end
    sparse = _windows_of(10, 10.0, fps=10.0, window_frames=3, window_stride=5, last_window="zeros")
    np.testing.assert_array_equal(sparse, [[0, 1, 2], [5, 6, 7]])
    config = SamplingConfig("windows", last_window="zeros")
    assert config.describe()["last_window"] == "zeros" and "last_window" not in SamplingConfig("windows").describe()
    with pytest.raises(InputError, match="--last-window"):
        SamplingConfig("windows", last_window="edge")


def test_windows_describe_and_frames_per_row():
    config = SamplingConfig("windows", fps=30.0, window_frames=16, window_stride=8)
    assert config.describe() == {"strategy": "windows", "fps": 30.0, "window_frames": 16, "window_stride": 8}
    assert config.frames_per_row == 16
    assert SamplingConfig("num_frames").frames_per_row == 1


# --- invalid configs ------------------------------------------------------------------------

@pytest.mark.parametrize("kwargs", [
    {"strategy": "uniform"},
    {"num_frames": 0},
    {"strategy": "clips", "clips": 0},
    {"strategy": "clips", "frames_per_clip": 0},
    {"strategy": "clips", "stride": 0},
    {"strategy": "clips", "stride": -2},
    {"strategy": "fps", "fps": 0.0},
    {"strategy": "fps", "fps": -1.0},
    {"strategy": "fps", "fps": float("nan")},
    {"strategy": "windows", "window_frames": 0},
    {"strategy": "windows", "window_stride": 0},
])
def test_invalid_configs_raise_input_error(kwargs):
    with pytest.raises(InputError):
        SamplingConfig(**kwargs)


def test_invalid_cli_sampling_is_a_one_line_error(run_cli, tmp_path, sample_videos, tiny_model_name):
    common = ["extract", sample_videos["short_32frames.mp4"], "--store", tmp_path / "s", "--model", tiny_model_name,
              "--pretrained", "none", "--workers", "0", "--no-progress"]
    result = run_cli(*common, "--num-frames", "-3")
    assert result.exit_code == 2 and result.stderr.strip() == "error: --num-frames must be at least 1."
    result = run_cli(*common, "--fps", "-1")
    assert result.exit_code == 2 and result.stderr.strip() == "error: --fps must be positive."
    result = run_cli(*common, "--fps", "2", "--num-frames", "4")
    assert result.exit_code == 2 and "choose one sampling strategy" in result.stderr
    assert not (tmp_path / "s").exists()
