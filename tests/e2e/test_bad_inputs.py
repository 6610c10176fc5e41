"""One extraction over a folder of good and bad inputs: bad ones are recorded, good ones committed, the run goes on."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import av
import numpy as np
import pytest
from click.testing import CliRunner

import freezeframe
from freezeframe.cli import main

UNICODE_NAME = "vidéo à tester ✓.mp4"
# good video id -> (sample it is a copy of, its frame count, the 4 segment-middle frames)
GOOD = {
    "short_32frames": ("short_32frames.mp4", 32, [4, 12, 20, 28]),
    "lowfps_6fps": ("lowfps_6fps.mp4", 57, [7, 21, 35, 49]),
    "vidéo à tester ✓": ("archery_demo.mp4", 280, [35, 105, 175, 245]),
}
BAD = {"zero", "text", "truncated", "truncated_faststart", "audio_only", "x"}


def _write_audio_only_mp4(path: Path) -> None:
    """About 1 s of a 440 Hz tone as AAC in an mp4 container, without any video stream."""
    container = av.open(str(path), "w")
    stream = container.add_stream("aac", rate=44100)
    stream.layout = "mono"
    t = np.arange(44100) / 44100
    frame = av.AudioFrame.from_ndarray((0.2 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)[None, :],
                                       format="fltp", layout="mono")
    frame.sample_rate = 44100
    frame.pts = 0
    for packet in [*stream.encode(frame), *stream.encode(None)]:
        container.mux(packet)
    container.close()


@pytest.fixture(scope="module")
def inputs(tmp_path_factory, sample_videos) -> Path:
    folder = tmp_path_factory.mktemp("inputs")
    for video_id, (sample, _, _) in GOOD.items():
        shutil.copy(sample_videos[sample], folder / (UNICODE_NAME if video_id == UNICODE_NAME[:-4] else sample))
    (folder / "zero.mp4").write_bytes(b"")
    (folder / "text.mp4").write_text("not a video, just text\n" * 50, encoding="utf-8")
    # archery_demo.mp4 keeps its moov atom (the frame table) at the end: 40 % of it has none
    data = sample_videos["archery_demo.mp4"].read_bytes()
    assert data.find(b"moov") > 0.9 * len(data)
    (folder / "truncated.mp4").write_bytes(data[: int(0.4 * len(data))])
    # v_GGSY1Qvo990.mp4 has the moov atom first: 40 % of it opens, but 211 of its 355 frames are missing
    data = sample_videos["v_GGSY1Qvo990.mp4"].read_bytes()
    assert data.find(b"moov") < data.find(b"mdat")
    (folder / "truncated_faststart.mp4").write_bytes(data[: int(0.4 * len(data))])
    _write_audio_only_mp4(folder / "audio_only.mp4")
    with av.open(str(folder / "audio_only.mp4")) as check:
        assert not check.streams.video and check.streams.audio and check.duration / 1e6 == pytest.approx(1.0, abs=0.1)
    (folder / "x.mp4").mkdir()
    return folder


@pytest.fixture(scope="module")
def extract(inputs, tmp_path_factory, tiny_model_name):
    """extract(decoder) -> (click result, store path); each decoder runs once per module."""
    runs: dict[str, tuple] = {}

    def run(decoder: str):
        if decoder not in runs:
            store = tmp_path_factory.mktemp(f"store-{decoder}") / "store"
            result = CliRunner().invoke(main, [
                "extract", str(inputs), "--store", str(store), "--model", tiny_model_name, "--pretrained", "none",
                "--num-frames", "4", "--workers", "1", "--decoder", decoder, "--no-progress"])
            runs[decoder] = (result, store)
        return runs[decoder]

    return run


def _failures(store: Path) -> tuple[str, list[dict]]:
    (name,) = freezeframe.open_store(store).names()
    path = store / name / "failures.jsonl"
    return name, [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


@pytest.mark.parametrize("decoder", ["auto", "pyav"])
def test_bad_inputs_are_recorded_and_good_ones_committed(decoder, extract, inputs, run_cli):
    result, store = extract(decoder)
    assert result.exception is None or isinstance(result.exception, SystemExit), result.output
    assert result.exit_code == 1, result.output

    name, failures = _failures(store)
    failures_path = store / name / "failures.jsonl"
    assert result.stdout.splitlines()[-1] == f"{len(BAD)} of {len(BAD) + len(GOOD)} videos failed; see {failures_path}"

    # one record with a reason for each bad input, none for a good one
    assert sorted(f["video_id"] for f in failures) == sorted(BAD)
    for failure in failures:
        assert isinstance(failure["reason"], str) and failure["reason"].strip(), failure
        assert failure["path"] == str(inputs / f"{failure['video_id']}.mp4")
        assert f"failed: {failure['video_id']} ({failure['path']}): {failure['reason']}" in result.stderr
    reasons = {f["video_id"]: f["reason"] for f in failures}
    assert reasons["zero"] == "file is empty (0 bytes)"
    assert reasons["x"] == "is a directory, not a video file"
    assert "no video stream" in reasons["audio_only"]
    assert "truncated video: the container declares 355 frames" in reasons["truncated_faststart"]
    for video_id in ("text", "truncated", "truncated_faststart", "audio_only"):
        assert not reasons[video_id].startswith("decord: ")  # auto is PyAV alone: one decoder, one reason

    # every good video is committed, with its 4 segment-middle frames
    feature_set = freezeframe.open_store(store)[name]
    assert sorted(feature_set.video_ids()) == sorted(GOOD)
    for video_id, (_, n_frames, frames) in GOOD.items():
        assert feature_set.read(video_id, "embed").shape == (4, 32)
        assert np.isfinite(feature_set.read(video_id, "embed").astype(np.float32)).all()
        np.testing.assert_array_equal(feature_set.read(video_id, "frame_indices"), frames)
        info = feature_set.video_info(video_id)
        assert info["n_rows"] == 4 and info["source_frames"] == n_frames
        assert info["decoder"] == ("pyav" if decoder == "auto" else decoder)
    assert feature_set.num_rows == 4 * len(GOOD)

    verified = run_cli("verify", store)
    assert verified.exit_code == 0, verified.output
    assert verified.stdout.splitlines()[-1] == f"ok: 1 shard, {len(GOOD)} videos checked"


def test_pyav_alone_gives_the_same_failures_and_successes(extract):
    (auto_result, auto_store), (pyav_result, pyav_store) = extract("auto"), extract("pyav")
    assert auto_result.exit_code == pyav_result.exit_code == 1
    auto_failed = {f["video_id"] for f in _failures(auto_store)[1]}
    pyav_failed = {f["video_id"] for f in _failures(pyav_store)[1]}
    assert auto_failed == pyav_failed == BAD
    auto_ids = freezeframe.open_store(auto_store)[_failures(auto_store)[0]].video_ids()
    pyav_ids = freezeframe.open_store(pyav_store)[_failures(pyav_store)[0]].video_ids()
    assert sorted(auto_ids) == sorted(pyav_ids) == sorted(GOOD)
    # same frames, so the same timestamps
    auto_fs = freezeframe.open_store(auto_store)[_failures(auto_store)[0]]
    pyav_fs = freezeframe.open_store(pyav_store)[_failures(pyav_store)[0]]
    for video_id in GOOD:
        np.testing.assert_allclose(auto_fs.read(video_id, "timestamps"), pyav_fs.read(video_id, "timestamps"),
                                   atol=1e-4)


def test_rerun_skips_committed_and_retries_only_the_failures(extract, inputs, tmp_path, tiny_model_name, run_cli):
    """A second run over the same store stores nothing new; the bad inputs fail again with the same count."""
    _, store = extract("auto")
    copy = tmp_path / "store"
    shutil.copytree(store, copy)
    result = run_cli("extract", inputs, "--store", copy, "--model", tiny_model_name, "--pretrained", "none",
                     "--num-frames", "4", "--workers", "0", "--no-progress")
    assert result.exit_code == 1, result.output
    name = freezeframe.open_store(copy).names()[0]
    lines = result.stdout.splitlines()
    assert f"{name}: stored 0 videos (0 frames)" in lines[-2] and f"{len(GOOD)} already committed" in lines[-2]
    assert lines[-1] == f"{len(BAD)} of {len(BAD) + len(GOOD)} videos failed; see {copy / name / 'failures.jsonl'}"
    assert sorted(freezeframe.open_store(copy)[name].video_ids()) == sorted(GOOD)
