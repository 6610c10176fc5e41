"""`freezeframe extract --backbone s3dg|s3d`: windows of real videos line up with the videos' real seconds, and
each stored row is the network's output on exactly the frames its `frame_indices` name, preprocessed
independently here (torchvision's PIL transforms), through a checkpoint saved and loaded by path.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torchvision import transforms

from freezeframe.extract.backbones.s3d import S3DG, build_s3d_network
from freezeframe.extract.decode import PyAVReader
from freezeframe.store import open_store

SIZE = 32  # S3D-G takes any even size; small frames keep the test fast
VIDEOS = ["v_ZNVhz7ctTq0.mp4", "lowfps_6fps.mp4", "ntsc_29.97fps.mp4", "short_32frames.mp4"]


def _pixels(path, frame_indices: np.ndarray, size: int) -> torch.Tensor:
    """(n, T, 3, size, size) in [0, 1]: short side resized (bilinear), centre crop, no mean/std."""
    from PIL import Image

    reader = PyAVReader(str(path))
    unique = np.unique(frame_indices)
    frames = reader.get(unique)[np.searchsorted(unique, frame_indices.reshape(-1))]
    reader.close()
    transform = transforms.Compose([transforms.Resize(size, transforms.InterpolationMode.BILINEAR),
                                    transforms.CenterCrop(size), transforms.ToTensor()])
    out = torch.stack([transform(Image.fromarray(frame)) for frame in frames])
    return out.reshape(*frame_indices.shape, *out.shape[1:])


def _lively(net: torch.nn.Module) -> torch.nn.Module:
    """Variance-keeping (He) init: PyTorch's default shrinks activations layer by layer, and a random S3D-G's
    outputs would fall below float16's range, so the stored rows could not show which frames they saw."""
    for module in net.modules():
        if isinstance(module, (torch.nn.Conv3d, torch.nn.Linear)):
            torch.nn.init.kaiming_normal_(module.weight, nonlinearity="relu")
    return net


@pytest.fixture(scope="module")
def s3dg_store(tmp_path_factory, sample_videos):
    root = tmp_path_factory.mktemp("s3dg")
    torch.manual_seed(3)
    weights = root / "s3d_howto100m.pth"
    torch.save(_lively(S3DG()).state_dict(), weights)
    from freezeframe.cli import main
    from click.testing import CliRunner

    result = CliRunner().invoke(main, ["extract", *[str(sample_videos[v]) for v in VIDEOS], "--store", str(root / "s"),
                                       "--backbone", "s3dg", "--pretrained", str(weights), "--image-size", str(SIZE),
                                       "--workers", "2", "--no-progress"])
    assert result.exit_code == 0, result.output
    assert "4 videos, 34 windows in" in result.output and "video_embedding    float16  per window (512,)" in result.output
    return open_store(root / "s")["s3dg-s3d_howto100m"], weights


def test_one_window_per_second_at_the_videos_real_times(s3dg_store):
    fs, _ = s3dg_store
    # 420 frames at 30 fps = 14 s; 57 at 6 fps = 9.5 s; 300 at 29.97 = 10.01 s; 32 at 30 fps = 1.07 s
    assert {v: fs.locate(v).n_rows for v in fs.video_ids()} == {
        "v_ZNVhz7ctTq0": 14, "lowfps_6fps": 9, "ntsc_29.97fps": 10, "short_32frames": 1}
    np.testing.assert_array_equal(fs.read("v_ZNVhz7ctTq0", "frame_indices"), np.arange(420).reshape(14, 30))
    np.testing.assert_allclose(fs.read("v_ZNVhz7ctTq0", "timestamps"), np.arange(14), atol=1e-6)
    # 6 fps resampled at 30: every source frame five times, window k starting on the frame shown at k s
    low = fs.read("lowfps_6fps", "frame_indices")
    np.testing.assert_array_equal(low, np.repeat(np.arange(54), 5).reshape(9, 30))
    np.testing.assert_allclose(fs.read("lowfps_6fps", "timestamps"), np.arange(9), atol=1e-6)
    # 29.97 fps: as ffmpeg's fps filter, window k starts on the frame starting nearest to second k (here just after)
    late = np.arange(10) - fs.read("ntsc_29.97fps", "timestamps")
    np.testing.assert_allclose(late, -np.arange(10) * 0.001, atol=1e-6)
    assert fs.read("short_32frames", "frame_indices").tolist() == [list(range(30))]
    for array, width in (("video_embedding", 512), ("mixed_5c", 1024)):
        assert fs.read("ntsc_29.97fps", array).shape == (10, width)
        assert fs.read("ntsc_29.97fps", array).dtype == np.float16
    sampling = fs.provenance["sampling"]
    assert (sampling["strategy"], sampling["fps"], sampling["window_frames"], sampling["window_stride"]) == (
        "windows", 30.0, 30, 30)
    assert fs.provenance["backbone"]["kind"] == "s3dg"


def test_each_row_is_s3dg_on_the_frames_it_names(s3dg_store, sample_videos):
    fs, weights = s3dg_store
    net = S3DG().eval()
    net.load_state_dict(torch.load(weights, weights_only=True))
    for video in ("v_ZNVhz7ctTq0", "lowfps_6fps", "short_32frames"):
        indices = fs.read(video, "frame_indices")
        with torch.no_grad():
            expected = net(_pixels(sample_videos[f"{video}.mp4"], indices, SIZE).transpose(1, 2))
        for array in ("video_embedding", "mixed_5c"):
            stored = fs.read(video, array).astype(np.float32)
            want = expected[array].numpy()
            np.testing.assert_allclose(stored, want, rtol=2e-3, atol=2e-3 * np.abs(want).max())
            # and no other window's output is as close: each row saw its own second, not a neighbour's
            distances = np.linalg.norm(stored[:, None] - want[None], axis=-1)
            np.testing.assert_array_equal(distances.argmin(axis=1), np.arange(len(stored)))


def test_last_partial_second_zero_padded_as_mmpt(s3dg_store, sample_videos, tmp_path, run_cli):
    """`--last-window zeros`: 57 frames at 6 fps are 9.5 s, so a 10th row holds the last half second (15 resampled
    frames) and 15 black frames; it equals S3D-G on exactly that input, and the whole seconds equal the default's."""
    fs, weights = s3dg_store
    video = sample_videos["lowfps_6fps.mp4"]
    result = run_cli("extract", video, "--store", tmp_path / "s", "--backbone", "s3dg", "--pretrained", weights,
                     "--image-size", SIZE, "--last-window", "zeros", "--workers", "0", "--no-progress")
    assert result.exit_code == 0, result.output
    padded = open_store(tmp_path / "s")["s3dg-s3d_howto100m"]
    assert padded.provenance["sampling"]["last_window"] == "zeros"
    indices = padded.read("lowfps_6fps", "frame_indices")
    assert indices.shape == (10, 30)
    np.testing.assert_array_equal(indices[:9], fs.read("lowfps_6fps", "frame_indices"))
    np.testing.assert_array_equal(indices[9], [*np.repeat([54, 55, 56], 5), *[-1] * 15])
    np.testing.assert_allclose(padded.read("lowfps_6fps", "timestamps"), np.arange(10), atol=1e-6)
    for array in ("video_embedding", "mixed_5c"):  # (the last whole second shares its batch with the padded one
        # here and sits alone there: a batch of another size may round one float16 value the other way)
        np.testing.assert_array_max_ulp(padded.read("lowfps_6fps", array)[:9], fs.read("lowfps_6fps", array), 1)
    net = S3DG().eval()
    net.load_state_dict(torch.load(weights, weights_only=True))
    last = torch.cat([_pixels(video, indices[9:, :15], SIZE), torch.zeros(1, 15, 3, SIZE, SIZE)], dim=1)
    # the default's padding (the last frame repeated, as for a video shorter than a window) is another input
    repeated = _pixels(video, np.r_[indices[9, :15], [56] * 15][None], SIZE)
    with torch.no_grad():
        want, other = net(last.transpose(1, 2)), net(repeated.transpose(1, 2))
    for array in ("video_embedding", "mixed_5c"):
        stored = padded.read("lowfps_6fps", array)[9].astype(np.float32)
        expected = want[array][0].numpy()
        np.testing.assert_allclose(stored, expected, rtol=2e-3, atol=2e-3 * np.abs(expected).max())
        assert np.linalg.norm(stored - expected) < np.linalg.norm(stored - other[array][0].numpy()) / 4
    refused = run_cli("extract", video, "--store", tmp_path / "s2", "--model", "ff-tiny-vit", "--pretrained", "none",
                      "--last-window", "zeros", "--no-progress")
    assert refused.exit_code == 2 and "are for window backbones" in refused.output


def test_torchvision_s3d_overlapping_windows(tmp_path, run_cli, sample_videos):
    torch.manual_seed(4)
    net = _lively(build_s3d_network("s3d")).eval()
    weights = tmp_path / "s3d_kinetics.pth"
    torch.save(net.state_dict(), weights)
    result = run_cli("extract", sample_videos["short_32frames.mp4"], "--store", tmp_path / "s", "--backbone", "s3d",
                     "--pretrained", weights, "--window-frames", "16", "--window-stride", "8", "--fps", "30",
                     "--workers", "0", "--no-progress")
    assert result.exit_code == 0, result.output
    fs = open_store(tmp_path / "s")["s3d-s3d_kinetics"]
    indices = fs.read("short_32frames", "frame_indices")
    np.testing.assert_array_equal(indices[:, 0], [0, 8, 16])  # 32 frames: windows at 0, 8, 16 (16 + 16 = 32)
    np.testing.assert_allclose(fs.read("short_32frames", "timestamps"), np.array([0, 8, 16]) / 30, atol=1e-6)
    mean = torch.tensor((0.43216, 0.394666, 0.37645)).view(1, 3, 1, 1)
    std = torch.tensor((0.22803, 0.22145, 0.216989)).view(1, 3, 1, 1)
    clip = (_pixels(sample_videos["short_32frames.mp4"], indices[2:], 224)[0] - mean) / std
    with torch.no_grad():
        logits = net(clip.transpose(0, 1)[None])[0].numpy()
    stored = fs.read("short_32frames", "logits")
    assert stored.shape == (3, 400) and fs.read("short_32frames", "mixed_5c").shape == (3, 1024)
    np.testing.assert_allclose(stored[2].astype(np.float32), logits, rtol=2e-3, atol=2e-3 * np.abs(logits).max())


@pytest.mark.parametrize("args, message", [
    (["--backbone", "s3dg"], "needs --pretrained"),
    (["--backbone", "s3dg", "--pretrained", "none", "--num-frames", "4"], "takes windows of frames"),
    (["--window-frames", "16", "--pretrained", "none"], "are for window backbones"),
    (["--backbone", "s3dg", "--pretrained", "none", "--window-frames", "15"], "even number of frames"),
    (["--backbone", "s3d", "--pretrained", "none", "--window-frames", "8"], "at least 14 frames"),
    (["--backbone", "s3dg", "--pretrained", "missing.pth"], "does not exist"),
    (["--backbone", "s3dg", "--pretrained", "none", "--model", "ff-tiny-vit"], "--model is not an option of --backbone s3dg"),
])
def test_bad_window_options_are_one_line_errors(tmp_path, run_cli, sample_videos, tiny_model_name, args, message):
    model = [] if "--backbone" in args else ["--model", tiny_model_name]  # --model is an option of clip only
    result = run_cli("extract", sample_videos["short_32frames.mp4"], "--store", tmp_path / "s", *model, *args,
                     "--no-progress")
    assert result.exit_code == 2, result.output
    assert message in result.output and "Traceback" not in result.output
    assert not (tmp_path / "s").exists() or not any((tmp_path / "s").rglob("*.zarr"))
