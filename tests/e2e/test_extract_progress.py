"""What extract's progress bar says: videos counted once committed (not when computed), activity while a video
decodes, and a line while the model loads. A real extraction of real sample videos with the bundled tiny model;
the bar is tqdm itself, subclassed only to record what it showed and what was committed on disk at that moment."""

from __future__ import annotations

from tqdm import tqdm

import freezeframe.extract.runner as runner
from freezeframe.store.layout import SHARDS_DIR
from freezeframe.store.markers import committed_shard_ids, read_marker

FEATURE_SET = "clip-ff-tiny-vit-random"


def committed_videos(shards) -> int:
    if not shards.exists():
        return 0
    return sum(len(read_marker(shards, shard)["videos"]) for shard in committed_shard_ids(shards))


def test_the_bar_counts_committed_videos_and_shows_activity(tmp_path, monkeypatch, run_cli, sample_videos):
    store = tmp_path / "store"
    shards = store / FEATURE_SET / SHARDS_DIR
    shown: list[tuple[int, int]] = []
    postfixes: list[str] = []

    class Recording(tqdm):
        def update(self, n=1):
            result = super().update(n)
            shown.append((self.n, committed_videos(shards)))
            return result

        def set_postfix_str(self, s="", refresh=True):
            postfixes.append(s)
            return super().set_postfix_str(s, refresh)

    monkeypatch.setattr(runner, "tqdm", Recording)
    videos = [sample_videos[name] for name in ("short_32frames.mp4", "lowfps_6fps.mp4", "archery_demo.mp4")]
    result = run_cli("extract", *videos, "--store", store, "--model", "ff-tiny-vit", "--pretrained", "none",
                     "--fps", "2", "--workers", "0", "--shard-size", "2", "--batch-size", "4")
    assert result.exit_code == 0, result.output
    # before: the bar advanced when a video's last frames were computed, ahead of its shard's commit
    assert shown and all(count <= on_disk for count, on_disk in shown), shown
    assert shown[-1] == (3, 3)
    assert any("at archery_demo" in text and "awaiting commit" in text for text in postfixes), postfixes
    assert "loading ff-tiny-vit ..." in result.output
