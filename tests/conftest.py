"""Shared fixtures (the real sample videos, the bundled tiny model, a CLI runner) and the test markers.

`slow`: end-to-end runs, learning checks, subprocesses and servers; left out of a plain `pytest` (the fast path,
unit tests of every package) and run by `.ci/run` (`-m "slow or not slow"`). `cli`: tests that drive the command
line (`run_cli`, or `freezeframe` in a subprocess). Select with `-m`, e.g. `pytest -m "cli and not slow"`."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

VIDEOS = Path(__file__).parent / "data" / "videos"

# test files that are slow as a whole (end-to-end extraction or training, subprocesses, servers, full-size models)
SLOW_FILES = {
    "test_augmented_views.py", "test_backbones_timm.py", "test_backbones_video.py", "test_clip_features.py",
    "test_decode_workers.py", "test_evl_motion.py", "test_extras.py", "test_faults.py", "test_hdf5_convert.py",
    "test_heads.py", "test_hostile_stores.py", "test_many_writers.py", "test_memmap_readers.py", "test_publish.py",
    "test_ray_engine.py", "test_remote_store.py", "test_resume.py", "test_s3d_extraction.py", "test_seek.py",
    "test_store_ux.py", "test_videoclip_bert.py", "test_videoclip_frame_order.py", "test_videoclip_recipes.py",
    "test_videoclip_training.py",
    "test_zeroshot.py",
}
# single slow tests of otherwise fast files (measured: each takes 10 s or more on two busy cores)
SLOW_TESTS = {
    "test_videoclip_modules.py::test_towers_learn_to_retrieve_paired_items",
    "test_s3d_backbones.py::test_s3dg_weights_file_gives_the_in_memory_models_outputs",
    "test_s3d_backbones.py::test_torchvision_s3d_weights_file_gives_torchvisions_outputs",
    "test_datasets.py::test_dataloader_workers_read_the_store",
    "test_library_api.py::test_training_through_the_cli_and_through_python_is_the_same",
    "test_hostile_inputs.py::test_rm_while_another_process_extracts_into_the_same_set",
    "test_extract_progress.py::test_the_bar_counts_committed_videos_and_shows_activity",
}
# test files that run `freezeframe` in subprocesses (tests taking the `run_cli` fixture are marked anyway)
CLI_FILES = {"test_cli_startup.py", "test_faults.py", "test_resume.py", "test_many_writers.py", "test_extras.py"}


def pytest_collection_modifyitems(config, items) -> None:
    for item in items:
        file = Path(str(item.fspath)).name
        if file in SLOW_FILES or f"{file}::{item.originalname}" in SLOW_TESTS:
            item.add_marker(pytest.mark.slow)
        if file in CLI_FILES or "run_cli" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.cli)


def _readme_table() -> dict[str, tuple[int, float]]:
    """file -> (frames, fps) from the table in tests/data/videos/README.md."""
    table = {}
    for line in (VIDEOS / "README.md").read_text(encoding="utf-8").splitlines():
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if len(cells) >= 3 and cells[1].isdigit():
            table[cells[0]] = (int(cells[1]), float(cells[2].split()[0]))
    return table


@pytest.fixture(scope="session")
def sample_video_info() -> dict[str, tuple[int, float]]:
    """File name -> (frame count, fps) of each sample video, as its README lists them."""
    return _readme_table()


@pytest.fixture(scope="session")
def sample_videos(sample_video_info) -> dict[str, Path]:
    """File name -> path of each of the 8 real sample videos in tests/data/videos."""
    videos = {name: VIDEOS / name for name in sample_video_info}
    assert len(videos) == 8, f"expected 8 sample videos in {VIDEOS / 'README.md'}, found {sorted(videos)}"
    missing = [name for name, path in videos.items() if not path.is_file()]
    assert not missing, f"sample videos missing from {VIDEOS}: {missing}"
    return videos


@pytest.fixture(scope="session")
def tiny_model_name() -> str:
    """A bundled tiny open_clip config: use with `--model ff-tiny-vit --pretrained none`."""
    return "ff-tiny-vit"


@pytest.fixture
def run_cli():
    """run_cli(*args) -> click Result of `freezeframe ARGS` (exit_code, stdout, stderr, output, exception)."""
    from freezeframe.cli import main

    def run(*args, input: str | None = None):
        return CliRunner().invoke(main, [str(arg) for arg in args], input=input, catch_exceptions=True)

    return run
