"""Shared fixtures: the real sample videos, the bundled tiny model, and a CLI runner."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

VIDEOS = Path(__file__).parent / "data" / "videos"


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
