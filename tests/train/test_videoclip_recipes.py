"""VideoCLIP recipes: defaults that learn on a 64-caption pilot, rows kept (or averaged into seconds), k-means.

Reuses the synthetic corpus of test_videoclip_training (per-second features built from colour/shape/motion
codes, real MiniLM text states through extract-text).
"""

from __future__ import annotations

import json

import numpy as np
import torch

from freezeframe.train.neighbourhoods import kmeans, kmeans_plus_plus
from freezeframe.train.loop import WARMUP_CAP, plan_length
from freezeframe.train.videoclip import CONTRASTIVE_TRAINING
from freezeframe.train.videotext import VideoTextPairs, pooled_rows
from freezeframe.store import FeatureSetWriter
from tests.e2e.test_videoclip_training import corpus  # noqa: F401  (the shared module fixture)


def test_four_rows_per_second_average_into_one(tmp_path):
    rows = np.arange(40, dtype=np.float32).reshape(10, 4)  # 10 rows at --fps 4: seconds 0, 0, 0, 0, 1, ..., 2, 2
    times = np.arange(10) / 4.0
    features, seconds = pooled_rows(rows, times, 1.0)
    assert seconds.tolist() == [0.0, 1.0, 2.0]
    np.testing.assert_allclose(features[0], rows[:4].mean(0))
    np.testing.assert_allclose(features[1], rows[4:8].mean(0))
    np.testing.assert_allclose(features[2], rows[8:].mean(0))  # the last partial second: its rows only
    same, same_times = pooled_rows(rows, np.arange(10.0), 1.0)  # already one row per second: unchanged
    assert same is rows and same_times.tolist() == list(range(10))
    writer = FeatureSetWriter(tmp_path / "store", "clip4", {"kind": "video", "backbone": {"name": "synthetic"}})
    shard = writer.new_shard()
    shard.append("v", {"embed": np.repeat(np.eye(6, 8, dtype=np.float16), 4, axis=0),  # 24 rows = 6 s at 4 fps
                       "timestamps": np.arange(24) / 4.0})
    shard.end_video("v")
    shard.commit()
    writer.write_index()
    text = FeatureSetWriter(tmp_path / "store", "text", {"kind": "text", "layers": [1], "max_length": 8})
    shard = text.new_shard()
    shard.append("c", {"tokens/1": np.ones((3, 4), np.float16), "attention_mask": np.ones(3, np.uint8)})
    shard.end_video("c")
    shard.commit()
    text.write_index()
    from freezeframe.text.captions import Caption

    kept = VideoTextPairs(tmp_path / "store", "clip4", "text", [Caption("v", "c", "x", 2.0, 4.0)])
    assert kept.features["v"].shape == (24, 8)  # by default every stored row, in time order
    assert kept.rows(0).tolist() == list(range(24))
    pairs = VideoTextPairs(tmp_path / "store", "clip4", "text", [Caption("v", "c", "x", 2.0, 4.0)], pool_seconds=1)
    assert pairs.features["v"].shape == (6, 8) and pairs.timestamps["v"].tolist() == [0, 1, 2, 3, 4, 5]
    np.testing.assert_allclose(pairs.features["v"], np.eye(6, 8))  # second k is the k-th one-hot, not row k
    assert pairs.rows(0).tolist() == [0, 1, 2, 3, 4, 5]  # evaluation: the whole video, 6 seconds


def test_step_floor_gives_a_small_pilot_several_passes():
    config = CONTRASTIVE_TRAINING
    assert plan_length(config, 2, more_passes=True) == (10, 100)  # 64 captions in batches of 32, 10 epochs: 2,000
    assert plan_length(config, 1000, more_passes=True) == (10, 1)
    assert config.warmup_steps == 1000 and int(WARMUP_CAP * 2000) == 200  # a 2,000-step run warms up for 200


def test_defaults_learn_on_a_64_caption_pilot(corpus, run_cli, tmp_path):  # noqa: F811
    pilot = tmp_path / "pilot.jsonl"
    train = [json.loads(line) for line in (corpus / "train.jsonl").read_text().splitlines()]
    pilot.write_text("".join(json.dumps(r) + "\n" for r in train[::6][:64]))  # 64 captions, 64 videos
    run = tmp_path / "run"
    result = run_cli("train", "videoclip", "--store", corpus / "store", "--set", "s3dg", "--text-set", "minilm",
                     "--captions", pilot, "--out", run, "--no-progress")
    assert result.exit_code == 0, result.output
    assert "passes per epoch" in result.output
    history = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    # the two cross-entropies summed (MMPT's MMContraLoss): chance is 2 log 32
    assert history[-1]["steps"] >= 500 and history[-1]["train_loss"] < 2 * (np.log(32) - 1)
    result = run_cli("eval", run, "--captions", corpus / "val.jsonl", "--json")
    metrics = json.loads(result.output)
    chance = 1 / metrics["num_pairs"]
    print(f"pilot: held-out t2v R@1 {metrics['t2v_r1']:.3f}, R@5 {metrics['t2v_r5']:.3f} (chance R@1 {chance:.3f})")
    assert metrics["t2v_r1"] >= 5 * chance and metrics["v2t_r1"] >= 5 * chance


def test_kmeans_plus_plus_spreads_seeds_and_kmeans_scales_linearly():
    generator = torch.Generator().manual_seed(0)
    centres = torch.eye(4) * 20
    points = torch.cat([c + torch.randn(50, 4, generator=generator) for c in centres])
    seeds = kmeans_plus_plus(points, 4, torch.Generator().manual_seed(3))
    assert sorted(int(torch.cdist(s[None], centres).argmin()) for s in seeds) == [0, 1, 2, 3]  # one seed a cluster
    for seeding in ("plusplus", "random"):
        assign, _ = kmeans(points, 4, torch.Generator().manual_seed(1), seeding=seeding)
        groups = assign.view(4, 50)
        assert all(len(set(g.tolist())) == 1 for g in groups) or seeding == "random"
    big = torch.randn(60_000, 16, generator=generator)
    assign, centroids = kmeans(big, 2000, torch.Generator().manual_seed(0), iterations=2)  # n*k > 5e7: no k^2 seeding
    assert centroids.shape == (2000, 16) and assign.shape == (60_000,) and int(assign.max()) < 2000
