"""Heads on the cache: cache equivalence of EVL, learning the synthetic order task, the probe against
scikit-learn, exact resume of interrupted training, and the train / eval / demo commands.

The synthetic order task (freezeframe.synthetic: a square crossing left-to-right or right-to-left,
8 frames) is written and extracted once per session (`order_task`): 200 videos, 160 train, 40 test,
`--model ff-tiny-vit --pretrained none --features embed,tokens --layers 0,1,2,3 --num-frames 8`.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from click.testing import CliRunner
from sklearn.linear_model import LogisticRegression
from threadpoolctl import threadpool_limits

from freezeframe.cli import main
from freezeframe.extract import ClipBackbone, ClipConfig, ExactPreprocessor, open_video
from freezeframe.heads import EVLConfig, EVLDecoder, LinearProbe, ProbeConfig, sweep_l2
from freezeframe.train import TrainConfig, load_head
from freezeframe.train.jobs import confusion_matrix, eval_run, train_run
from freezeframe.heads.registry import REGISTRY as HEAD_REGISTRY
from freezeframe.heads.registry import head_config, register_head, vector_width
from freezeframe.heads.registry import markdown_tables as head_tables
from freezeframe.options import option
from freezeframe.train.checkpoints import BEST, saved_info
from freezeframe.train.loop import plan_length, read_metrics
from freezeframe.store import open_store
from freezeframe.train.datasets import FeatureDataset, FrameSelection, collate
from freezeframe.userfiles import read_labels
from freezeframe.synthetic import CLASSES, make_order_dataset, write_labels

VIDEOS = Path(__file__).parents[1] / "data" / "videos"
REPO = Path(__file__).resolve().parents[2]
ORDER = "order"
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def quiet(_message: str) -> None:
    pass


def cli(*args) -> object:
    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=True)


def weights(path: Path) -> dict[str, torch.Tensor]:
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(path)
    return torch.load(path, map_location="cpu", weights_only=False)["head"]


def without_seconds(history: list[dict]) -> list[dict]:
    return [{k: v for k, v in h.items() if k != "seconds"} for h in history]


@pytest.fixture(autouse=True, scope="module")
def one_torch_thread():
    """Tiny heads train fastest on one thread; on a busy machine two spinning OpenMP threads make them
    ten times slower. (The CLI subprocess below gets OMP_NUM_THREADS=1 to compute exactly alike.)"""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


# ---- the synthetic order task, once per session ---------------------------------------------------
@pytest.fixture(scope="session")
def order_task(tmp_path_factory) -> SimpleNamespace:
    root = tmp_path_factory.mktemp("order-task")
    rows = make_order_dataset(root, 200, seed=0)
    train, test = rows[:160], rows[160:]
    assert sorted(label for _, label in test).count(CLASSES[0]) == 20  # balanced held-out split
    result = cli("extract", root / "videos", "--store", root / "store", "--name", ORDER, "--model", "ff-tiny-vit",
                 "--pretrained", "none", "--features", "embed,tokens", "--layers", "0,1,2,3", "--num-frames", "8",
                 "--workers", "1", "--no-progress")
    assert result.exit_code == 0, result.output + repr(result.exception)
    task = SimpleNamespace(root=root, store=root / "store", rows=rows,
                           train_csv=write_labels(root / "train.csv", train),
                           test_csv=write_labels(root / "test.csv", test),
                           # small splits for the resume and CLI tests
                           small_train_csv=write_labels(root / "small-train.csv", train[:80]),
                           small_val_csv=write_labels(root / "small-val.csv", train[80:120]))
    fs = open_store(task.store)[ORDER]
    assert len(fs) == 200 and {fs.locate(v).n_rows for v in fs.video_ids()} == {8}
    return task


def test_synthetic_order_videos_are_reproducible_and_move_as_labelled(tmp_path):
    rows = make_order_dataset(tmp_path / "a", 40, seed=3)
    assert rows == make_order_dataset(tmp_path / "b", 40, seed=3)
    assert [label for _, label in rows].count(CLASSES[0]) == 20
    for video_id, label in rows:
        data = (tmp_path / "a" / "videos" / f"{video_id}.mp4").read_bytes()
        assert data == (tmp_path / "b" / "videos" / f"{video_id}.mp4").read_bytes(), video_id  # same bytes
        reader = open_video(str(tmp_path / "a" / "videos" / f"{video_id}.mp4"))
        frames = reader.get(np.arange(8))
        reader.close()
        assert frames.shape == (8, 64, 64, 3)
        square = frames.min(axis=-1) > 150  # bright square on a dark, noisy background
        columns = np.array([np.nonzero(mask.any(axis=0))[0].mean() for mask in square])
        steps = np.diff(columns)
        assert (steps > 0).all() if label == "left-to-right" else (steps < 0).all(), (video_id, label, columns)
    other = make_order_dataset(tmp_path / "c", 2, seed=4)
    assert (tmp_path / "c" / "videos" / f"{other[0][0]}.mp4").read_bytes() != (
        tmp_path / "a" / "videos" / f"{rows[0][0]}.mp4").read_bytes()


# ---- 2. cache equivalence: EVL fed from the store == EVL fed from a live frozen backbone ------------
REAL = {"archery": "archery_demo.mp4", "mpeg4": "test_mpeg4.avi"}
LAYER_SETS = {"all-blocks": (0, 1, 2, 3), "blocks-1-3": (1, 3)}  # block inputs from tokens / stored copies
LOGIT_TOL = 2e-4  # measured ~2e-5: what float16 storage of the token maps costs the logits


@pytest.fixture(scope="module")
def real_store(tmp_path_factory) -> Path:
    store = tmp_path_factory.mktemp("evl-equivalence") / "store"
    listing = store.parent / "videos.csv"
    listing.write_text("video_id,path\n" + "".join(f"{v},{VIDEOS / f}\n" for v, f in REAL.items()))
    for name, layers in LAYER_SETS.items():
        result = cli("extract", listing, "--store", store, "--name", name, "--model", "ff-tiny-vit",
                     "--pretrained", "none", "--features", "embed,tokens", "--layers", ",".join(map(str, layers)),
                     "--num-frames", "8", "--workers", "0", "--no-progress")
        assert result.exit_code == 0, result.output + repr(result.exception)
    return store


def random_evl(fs, num_frames: int) -> EVLDecoder:
    """A random EVL head whose zero-initialised parts (temporal modules, query, biases) are random too."""
    torch.manual_seed(0)
    head = EVLDecoder(head_config("evl", fs, 5, num_frames))
    head.load_frozen_qk(fs.frozen_weights())
    with torch.no_grad():
        reinit = [n for n, p in head.named_parameters() if not p.any()]
        for name, param in head.named_parameters():
            if name in reinit:
                param.normal_(0, 2.0 if name.startswith("cross_frame") else 0.5)
    assert {"query", "temporal_pos"} <= set(reinit)
    assert any(n.startswith("cross_frame") for n in reinit)
    assert all(p.any() for n, p in head.named_parameters() if n.startswith("temporal_conv"))  # reference init: random
    return head.eval()


@pytest.mark.parametrize("name", list(LAYER_SETS))
def test_evl_logits_from_the_store_equal_a_live_backbone_forward(real_store, name):
    fs = open_store(real_store)[name]
    head = random_evl(fs, 8)
    blocks = head.config.blocks
    assert blocks == LAYER_SETS[name]
    ids = list(REAL)
    stored = collate([FeatureDataset(real_store, name, ids, head.required_arrays, FrameSelection("uniform", 8))[i]
                      for i in range(len(ids))])["inputs"]

    # live: decode the stored frame indices again, open_clip's transform, the frozen backbone forward
    backbone = ClipBackbone(ClipConfig(model="ff-tiny-vit", pretrained="none", features=("embed", "tokens"),
                                       layers=LAYER_SETS[name]))
    preprocess = ExactPreprocessor(backbone.preprocess)
    per_video = []
    for video_id in ids:
        reader = open_video(str(VIDEOS / REAL[video_id]))
        frames = reader.get(fs.read(video_id, "frame_indices"))
        reader.close()
        per_video.append(backbone(preprocess(frames)))
    out = {k: torch.stack([v[k] for v in per_video]) for k in per_video[0]}
    live = {}
    for array in head.required_arrays:
        b = int(array.split("/")[1])
        live[array] = out[array] if array in out else out[f"tokens/{b - 1}"]  # a block's input = previous output
    assert live[f"tokens/{blocks[-1]}"].dtype == torch.float32

    # the frozen q/k the head computes from cached inputs are the backbone attention's own
    for b in blocks:
        block = backbone.visual.transformer.resblocks[b]
        y = block.ln_1(live[f"block_input/{b}"])
        q_ref, k_ref = F.linear(y, block.attn.in_proj_weight, block.attn.in_proj_bias).chunk(3, dim=-1)[:2]
        q, k = head.block_qk(b, stored[f"block_input/{b}"])
        heads = backbone.visual.transformer.resblocks[b].attn.num_heads
        assert q.shape[-3] == heads
        for got, ref in ((q, q_ref), (k, k_ref)):
            got = got.transpose(-3, -2).flatten(-2)
            assert (got - ref).abs().max() <= 2e-3 * ref.abs().max(), (b, float((got - ref).abs().max()))

    with torch.no_grad():
        from_store = head(stored)
        from_live = head(live)
        from_live_fp16 = head({k: v.half() for k, v in live.items()})
        diff = float((from_store - from_live).abs().max())
        print(f"{name}: max |logit(store) - logit(live)| = {diff:.3g}; logit scale {float(from_store.abs().max()):.3g}")
        assert diff <= LOGIT_TOL
        assert float((from_store - from_live_fp16).abs().max()) <= 2e-5  # the store is the live forward in fp16
        assert float(from_store.std()) > 0.1  # not a degenerate head

        # a deliberately wrong input changes the logits far beyond that tolerance
        wrong = dict(stored, **{f"tokens/{blocks[-1]}": stored[f"tokens/{blocks[0]}"]})
        assert float((head(wrong) - from_store).abs().max()) > 50 * LOGIT_TOL
        for b in blocks:  # block b's input taken from block b's own output (an off-by-one resolution)
            wrong = dict(stored, **{f"block_input/{b}": stored[f"tokens/{b}"]})
            effect = float((head(wrong) - from_store).abs().max())
            assert effect > 3 * LOGIT_TOL, (b, effect)
        # the temporal modules are active: reversing time changes the logits
        reversed_time = {k: v.flip(1) for k, v in stored.items()}
        assert float((head(reversed_time) - from_store).abs().max()) > 50 * LOGIT_TOL


# ---- 3. the order task: a mean-pooled probe cannot see order; EVL and the temporal head can --------
def test_mean_pooled_probe_stays_near_chance(order_task, tmp_path):
    train_run("probe", order_task.store, ORDER, order_task.train_csv, tmp_path / "probe", log=quiet)
    result = eval_run(tmp_path / "probe", order_task.test_csv)
    print(f"mean-pooled probe: top-1 {result['top1']:.3f} on {result['num_videos']} held-out videos")
    assert result["num_videos"] == 40
    assert result["top1"] <= 0.70
    # the features do carry the answer: the middle frame alone shows where the square is at mid-time
    train_run("probe", order_task.store, ORDER, order_task.train_csv, tmp_path / "middle",
              head_options={"pooling": "middle"}, log=quiet)
    middle = eval_run(tmp_path / "middle", order_task.test_csv)
    print(f"middle-frame probe: top-1 {middle['top1']:.3f}")
    assert middle["top1"] >= 0.80


def test_evl_learns_the_order_of_frames_with_its_defaults(order_task, tmp_path):
    """With the identity init (temporal conv zeroed) and 10 epochs of 5 steps this stayed at chance on its
    own training set (train top-1 0.54); EVL's reference init and the 200-step floor learn it."""
    logged = []
    metrics = train_run("evl", order_task.store, ORDER, order_task.train_csv, tmp_path / "evl",
                        config=TrainConfig(progress=False), log=logged.append)
    assert logged[0] == "training 40 epochs of 5 steps (200 steps, 160 videos, batch 32)"
    result = eval_run(tmp_path / "evl", order_task.test_csv)
    print(f"EVL: top-1 {result['top1']:.3f} on {result['num_videos']} held-out videos (train {metrics['train_top1']:.3f})")
    assert result["num_videos"] == 40
    assert result["top1"] >= 0.90


def test_temporal_transformer_learns_the_order_of_frames_with_its_defaults(order_task, tmp_path):
    metrics = train_run("temporal", order_task.store, ORDER, order_task.train_csv, tmp_path / "temporal",
                        config=TrainConfig(progress=False), log=quiet)  # 200 steps
    result = eval_run(tmp_path / "temporal", order_task.test_csv)
    print(f"temporal: top-1 {result['top1']:.3f} on {result['num_videos']} held-out videos "
          f"(train {metrics['train_top1']:.3f})")
    assert result["num_videos"] == 40
    assert result["top1"] >= 0.90


# ---- 4. the linear probe is scikit-learn's logistic regression ------------------------------------
def embeds(fs, csv: Path) -> tuple[np.ndarray, np.ndarray]:
    rows = read_labels(csv)
    x = np.stack([fs.read(v, "embed").astype(np.float64) for v, _ in rows])
    y = np.array([CLASSES.index(label) for _, label in rows])
    return x, y


def square_position(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-frame samples labelled with where the square is: quarter 0 (left) .. 3 (right) of its path."""
    t = np.arange(x.shape[1])
    where = np.where(y[:, None] == 0, t[None], t[::-1][None]) * 4 // x.shape[1]
    return x.reshape(-1, x.shape[-1]), where.reshape(-1)


def sklearn_fit(x, y, c) -> LogisticRegression:
    with threadpool_limits(limits=1):  # BLAS threads crawl on a busy machine, as torch's do
        return LogisticRegression(C=c, tol=1e-10, max_iter=100_000).fit(x, y)


def objective(x, y, w, b, l2) -> float:
    x, w, b = (torch.as_tensor(np.asarray(a), dtype=torch.float64) for a in (x, w, b))
    return float(F.cross_entropy(x @ w.T + b, torch.as_tensor(y)) + 0.5 * l2 * w.pow(2).sum())


@pytest.fixture(scope="module")
def position_task(order_task):
    fs = open_store(order_task.store)[ORDER]
    train = square_position(*embeds(fs, order_task.train_csv))
    test = square_position(*embeds(fs, order_task.test_csv))
    return train, test


@pytest.mark.parametrize("l2", [1e-3, 1e-2])
def test_probe_matches_sklearn_multinomial_logistic_regression(position_task, l2):
    (x, y), (tx, ty) = position_task
    n = len(y)
    probe = LinearProbe(ProbeConfig(num_classes=4, input_dim=x.shape[1]))
    final = probe.fit(torch.as_tensor(x, dtype=torch.float32), torch.as_tensor(y), l2=l2)
    ref = sklearn_fit(x, y, c=1 / (l2 * n))
    w, b = probe.linear.weight.detach().double().numpy(), probe.linear.bias.detach().double().numpy()
    with torch.no_grad():
        probs = torch.softmax(probe({"embed": torch.as_tensor(tx, dtype=torch.float32)[:, None]}), 1).numpy()
    ref_probs = ref.predict_proba(tx)
    ours_acc, ref_acc = (probs.argmax(1) == ty).mean(), (ref_probs.argmax(1) == ty).mean()
    weight_err = np.abs(w - ref.coef_).max() / np.abs(ref.coef_).max()
    print(f"l2={l2}: top-1 probe {ours_acc:.4f} sklearn {ref_acc:.4f}; max |p - p_sk| "
          f"{np.abs(probs - ref_probs).max():.2g}; weights rel. err {weight_err:.2g}")
    assert 0.4 < ref_acc < 0.95  # a real, not trivial, classification
    assert abs(ours_acc - ref_acc) <= 0.01
    assert np.abs(probs - ref_probs).max() <= 1e-3
    assert weight_err <= 5e-3
    np.testing.assert_allclose(b - b.mean(), ref.intercept_ - ref.intercept_.mean(), atol=5e-3 * np.abs(b).max())
    ref_objective = objective(x, y, ref.coef_, ref.intercept_, l2)
    assert objective(x, y, w, b, l2) <= ref_objective + 1e-6
    assert final == pytest.approx(objective(x, y, w, b, l2), abs=1e-6)  # fit returns the final objective
    assert final < np.log(4) - 1e-3  # below the objective at the start (zero weights)


def test_binary_probe_matches_sklearn_with_one_weight_vector(order_task):
    """Two classes: scikit-learn fits w = W[1] - W[0]; the same optimum is C = 2 / (l2 * n)."""
    fs = open_store(order_task.store)[ORDER]
    x, y = embeds(fs, order_task.train_csv)
    tx, ty = embeds(fs, order_task.test_csv)
    x, tx = x.mean(1), tx.mean(1)  # the probe's mean pooling
    l2 = 1e-3
    probe = LinearProbe(ProbeConfig(num_classes=2, input_dim=x.shape[1]))
    probe.fit(torch.as_tensor(x, dtype=torch.float32), torch.as_tensor(y), l2=l2)
    ref = sklearn_fit(x, y, c=2 / (l2 * len(y)))
    w = probe.linear.weight.detach().double().numpy()
    b = probe.linear.bias.detach().double().numpy()
    err = np.abs((w[1] - w[0]) - ref.coef_[0]).max() / np.abs(ref.coef_).max()
    assert err <= 5e-3
    assert (b[1] - b[0]) == pytest.approx(ref.intercept_[0], abs=5e-3 * abs(ref.intercept_[0]) + 1e-4)
    with torch.no_grad():
        probs = torch.softmax(probe({"embed": torch.as_tensor(tx, dtype=torch.float32)[:, None]}), 1).numpy()
    assert np.abs(probs - ref.predict_proba(tx)).max() <= 1e-3


def test_sweep_l2_picks_the_best_strength_on_validation(position_task):
    (x, y), _ = position_task
    cut = len(y) * 3 // 4  # whole videos: 120 for fitting, 40 for validation
    as_torch = lambda a, b: (torch.as_tensor(a, dtype=torch.float32), torch.as_tensor(b))  # noqa: E731
    grid = np.array([1e-4, 1e-2, 1.0, 100.0])
    probe = LinearProbe(ProbeConfig(num_classes=4, input_dim=x.shape[1]))
    best, sweep = sweep_l2(probe, as_torch(x[:cut], y[:cut]), as_torch(x[cut:], y[cut:]), grid)
    assert [r["l2"] for r in sweep] == pytest.approx(list(grid))
    for row in sweep:  # each score is that strength's real validation accuracy (checked with scikit-learn)
        ref = sklearn_fit(x[:cut], y[:cut], c=1 / (row["l2"] * cut))
        assert abs(row["val_top1"] - (ref.predict(x[cut:]) == y[cut:]).mean()) <= 0.01, row
    accuracies = [r["val_top1"] for r in sweep]
    print("sweep:", {r["l2"]: round(r["val_top1"], 3) for r in sweep}, "->", best)
    assert max(accuracies) - min(accuracies) >= 0.2  # the choice matters
    assert best == grid[int(np.argmax(accuracies))]

    # the same features, a validation split that rewards strong regularisation: the choice follows it
    keep = (y[:cut] == 0) | (np.arange(cut) % 2 == 0)  # class 0 is the most frequent class in training
    val = y[cut:] == 0
    best, sweep = sweep_l2(probe, as_torch(x[:cut][keep], y[:cut][keep]), as_torch(x[cut:][val], y[cut:][val]), grid)
    accuracies = [r["val_top1"] for r in sweep]
    print("sweep (class-0 validation):", {r["l2"]: round(r["val_top1"], 3) for r in sweep}, "->", best)
    assert accuracies[-1] == 1.0 and accuracies[0] < 1.0  # the nearly constant probe predicts the prior
    assert best == max(r["l2"] for r in sweep if r["val_top1"] == max(accuracies))  # ties: the stronger one
    assert best == grid[-1]


# ---- 5. exact resume -----------------------------------------------------------------------------
class Interrupt(Exception):
    pass


def stop_after(epochs: int):
    def log(message: str) -> None:
        if message.startswith(f"epoch {epochs}/"):
            raise Interrupt(message)
    return log


def resume_job(order_task, kind: str, out: Path, **kw) -> dict:
    options = {"width": 64, "heads": 2} if kind == "temporal" else {"num_layers": 2}
    return train_run(kind, order_task.store, ORDER, order_task.small_train_csv, out,
                     val_labels=order_task.small_val_csv, train_frames="sparse-random:4", eval_frames="uniform:4",
                     head_options=options, config=TrainConfig(epochs=5, min_steps=0, batch_size=16, lr=1e-3,
                                                              progress=False), **kw)


def assert_same_run(a: Path, b: Path, epochs: int) -> None:
    history_a, history_b = read_metrics(a), read_metrics(b)
    assert [h["epoch"] for h in history_a] == list(range(1, epochs + 1))  # numbered as on the console
    assert without_seconds(history_a) == without_seconds(history_b)
    for checkpoint in ("last.pt", BEST):
        wa, wb = weights(a / checkpoint), weights(b / checkpoint)
        assert wa.keys() == wb.keys()
        for key in wa:
            assert torch.equal(wa[key], wb[key]), (checkpoint, key)


@pytest.mark.parametrize("kind", ["temporal", "evl"])
def test_interrupted_training_resumes_exactly(order_task, tmp_path, kind):
    resume_job(order_task, kind, tmp_path / "straight", log=quiet)
    with pytest.raises(Interrupt):
        resume_job(order_task, kind, tmp_path / "interrupted", log=stop_after(2))
    assert len(read_metrics(tmp_path / "interrupted")) == 2
    assert torch.load(tmp_path / "interrupted" / "last.pt", weights_only=False)["epoch"] == 1
    torch.manual_seed(12345)  # the resumed run must not depend on the process's RNG state
    logged = []
    resume_job(order_task, kind, tmp_path / "interrupted", resume=True, log=logged.append)
    assert logged[0].startswith("resumed after epoch 2")
    assert len([m for m in logged if m.startswith("epoch ")]) == 3
    assert_same_run(tmp_path / "straight", tmp_path / "interrupted", 5)
    # the runs did train (the comparison is not between two untouched heads): zero-initialised tokens moved
    trained = weights(tmp_path / "straight" / "last.pt")
    assert trained["cls_token" if kind == "temporal" else "query"].abs().max() > 1e-3


def test_resume_after_a_crash_between_checkpoint_and_metrics_line(order_task, tmp_path):
    """A kill after last.pt was saved but while its metrics line was being appended."""
    resume_job(order_task, "temporal", tmp_path / "straight", log=quiet)
    with pytest.raises(Interrupt):
        resume_job(order_task, "temporal", tmp_path / "crashed", log=stop_after(3))
    metrics = tmp_path / "crashed" / "metrics.jsonl"
    lines = metrics.read_text().splitlines(keepends=True)
    assert len(lines) == 3
    metrics.write_text("".join(lines[:2]) + lines[2][: len(lines[2]) // 2])  # half of epoch 2's line
    resume_job(order_task, "temporal", tmp_path / "crashed", resume=True, log=quiet)
    assert_same_run(tmp_path / "straight", tmp_path / "crashed", 5)


def test_resume_after_a_crash_between_best_and_last_checkpoint(order_task, tmp_path):
    """A kill in an improving epoch after the best weights were written but before last.pt was: the resumed run
    redoes that epoch and ends exactly like an uninterrupted one (best weights included)."""
    resume_job(order_task, "temporal", tmp_path / "straight", log=quiet)
    run = tmp_path / "crashed"
    saved = {}

    def log(message: str) -> None:  # keep each epoch's last.pt; stop after the first improvement past epoch 1
        if not message.startswith("epoch "):
            return
        epoch = int(message.split()[1].split("/")[0])
        saved[epoch] = (run / "last.pt").read_bytes()
        if epoch >= 2 and message.endswith("(best)"):
            raise Interrupt(message)

    with pytest.raises(Interrupt) as stopped:
        resume_job(order_task, "temporal", run, log=log)
    improved = int(str(stopped.value).split()[1].split("/")[0])  # 1-based: this epoch wrote the best weights
    assert saved_info(run / BEST)["epoch"] == improved
    (run / "last.pt").write_bytes(saved[improved - 1])  # last.pt still from the epoch before
    lines = (run / "metrics.jsonl").read_text().splitlines(keepends=True)
    (run / "metrics.jsonl").write_text("".join(lines[: improved - 1]))  # and no metrics line yet
    resume_job(order_task, "temporal", run, resume=True, log=quiet)
    assert_same_run(tmp_path / "straight", run, 5)


def test_same_seed_gives_the_same_weights_in_one_process(order_task, tmp_path):
    resume_job(order_task, "temporal", tmp_path / "a", log=quiet)
    torch.rand(10)  # whatever the process did in between
    resume_job(order_task, "temporal", tmp_path / "b", log=quiet)
    assert_same_run(tmp_path / "a", tmp_path / "b", 5)


def test_cli_training_killed_for_real_resumes_exactly(order_task, tmp_path):
    """SIGKILL the `freezeframe train` process after its 2nd checkpoint; `--resume` ends where an
    uninterrupted run ends."""
    common = ["train", "temporal", "--store", order_task.store, "--set", ORDER, "--labels", order_task.small_train_csv,
              "--val", order_task.small_val_csv, "--frames", "sparse-random:4", "--eval-frames", "uniform:4",
              "--epochs", "10", "--batch-size", "16", "--lr", "1e-3", "--width", "64", "--heads", "2",
              "--no-progress"]
    killed = tmp_path / "killed"
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    process = subprocess.Popen([sys.executable, "-m", "freezeframe.cli", *map(str, common), "--out", str(killed)],
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
    deadline = time.monotonic() + 300
    try:
        while time.monotonic() < deadline and process.poll() is None:
            if (killed / "last.pt").exists():
                try:
                    epoch = torch.load(killed / "last.pt", weights_only=False)["epoch"]
                except Exception:  # noqa: BLE001 - replaced while being read
                    epoch = -1
                if epoch >= 1:
                    break
            time.sleep(0.01)
        process.send_signal(signal.SIGKILL)
    finally:
        process.kill()
        _, stderr = process.communicate(timeout=60)
    assert process.returncode == -signal.SIGKILL, stderr.decode(errors="replace")[-2000:]
    stopped_at = torch.load(killed / "last.pt", weights_only=False)["epoch"]
    assert 1 <= stopped_at < 9

    result = cli(*common, "--out", killed, "--resume")
    assert result.exit_code == 0, result.output + repr(result.exception)
    assert f"resumed after epoch {stopped_at + 1}" in result.output
    straight = tmp_path / "straight"
    result = cli(*common, "--out", straight)
    assert result.exit_code == 0, result.output + repr(result.exception)
    assert_same_run(straight, killed, 10)


# ---- 6. the train / eval / demo commands ----------------------------------------------------------
TRAIN_OPTIONS = {
    "probe": [],
    "temporal": ["--epochs", "3", "--batch-size", "16", "--width", "32", "--heads", "2"],
    "evl": ["--epochs", "3", "--batch-size", "16", "--frames", "uniform:8"],
}


@pytest.fixture(scope="module")
def cli_runs(order_task, tmp_path_factory) -> dict[str, tuple[Path, object]]:
    out = tmp_path_factory.mktemp("cli-runs")
    runs = {}
    for kind, options in TRAIN_OPTIONS.items():
        run = out / kind
        result = cli("train", kind, "--store", order_task.store, "--set", ORDER, "--labels",
                     order_task.small_train_csv, "--val", order_task.small_val_csv, "--out", run, "--no-progress",
                     *options)
        runs[kind] = (run, result)
    return runs


@pytest.mark.parametrize("kind", list(TRAIN_OPTIONS))
def test_cli_train_writes_a_complete_run(cli_runs, order_task, kind):
    run, result = cli_runs[kind]
    assert result.exit_code == 0, result.output + repr(result.exception)
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    assert summary["run"] == str(run)
    info = json.loads((run / "run.json").read_text())
    assert info["head"] == kind and info["feature_set"] == ORDER and info["classes"] == sorted(CLASSES)
    assert weights(run / BEST)  # the best weights as safetensors; last.pt, the resume state, for gradient heads
    assert (run / "last.pt").exists() == (kind != "probe")
    lines = (run / "metrics.jsonl").read_text().splitlines()
    records = [json.loads(line) for line in lines]  # every line one JSON object
    if kind == "probe":
        sweep = [r for r in records if r.get("sweep")]
        assert len(sweep) >= 5 and records[-1]["l2"] in [r["l2"] for r in sweep]
        assert records[-1]["num_train"] == 120  # refitted on train + val
    else:
        assert [r["epoch"] for r in records] == [1, 2, 3]
        assert all({"train_loss", "train_top1", "val_loss", "val_top1", "lr"} <= set(r) for r in records)
        assert not any("val_top5" in r for r in records) and "val_top5" not in result.output  # 2 classes
        assert summary["epoch"] == 3 and summary["val_top1"] == records[-1]["val_top1"]
    png = (run / "curves.png").read_bytes()
    assert png[:8] == PNG_SIGNATURE and len(png) > 1000
    assert png[12:16] == b"IHDR"
    width, height = int.from_bytes(png[16:20], "big"), int.from_bytes(png[20:24], "big")
    assert width >= 200 and height >= 150


@pytest.mark.parametrize("kind", list(TRAIN_OPTIONS))
def test_cli_eval_json_is_the_accuracy_of_the_best_checkpoint(cli_runs, order_task, kind):
    run, _ = cli_runs[kind]
    result = cli("eval", run, "--labels", order_task.test_csv, "--json")
    assert result.exit_code == 0, result.output + repr(result.exception)
    report = json.loads(result.stdout)  # the whole output is one JSON object
    assert {"top1", "top5", "num_videos"} <= set(report)
    assert report["num_videos"] == 40 and report["top5"] == 1.0  # two classes: top-5 is certain
    # recompute top-1 independently from the best checkpoint
    head, info = load_head(run)
    rows = read_labels(order_task.test_csv)
    ds = FeatureDataset(order_task.store, ORDER, [v for v, _ in rows], head.required_arrays,
                        FrameSelection.parse(info.eval_frames), [info.classes.index(label) for _, label in rows])
    batch = collate([ds[i] for i in range(len(ds))])
    with torch.no_grad():
        predicted = head(batch["inputs"]).argmax(1)
    assert report["top1"] == pytest.approx(float((predicted == batch["label"]).float().mean()))


def test_cli_eval_refuses_labels_unseen_in_training(cli_runs, order_task, tmp_path):
    run, _ = cli_runs["evl"]
    video = order_task.rows[-1][0]
    labels = write_labels(tmp_path / "odd.csv", [(order_task.rows[-2][0], CLASSES[0]), (video, "diagonal")])
    result = cli("eval", run, "--labels", labels, "--json")
    assert result.exit_code == 2
    assert result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:") and "diagonal" in lines[0]
    assert "Traceback" not in result.output


def test_demo_runs_end_to_end(tmp_path):
    """The slowest test here: `freezeframe demo --videos 80 --epochs 10` (synthetic -> extract -> probe, EVL)."""
    result = cli("demo", "--out", tmp_path / "demo", "--videos", "80", "--epochs", "10")
    assert result.exit_code == 0, result.output + repr(result.exception)
    match = re.search(r"probe \(mean-pooled\) top-1 ([\d.]+)%\s+EVL top-1 ([\d.]+)%.*\b20 held-out videos", result.output)
    assert match, result.output
    probe, evl = float(match.group(1)), float(match.group(2))
    print(f"demo: probe {probe}%  EVL {evl}%")
    for accuracy in (probe, evl):
        assert 0 <= accuracy <= 100 and (accuracy / 5).is_integer()  # k of 20 videos
    for run in ("run-probe", "run-evl"):
        assert (tmp_path / "demo" / run / BEST).is_file()


# ---- 7. defaults that learn, runs never overwritten, eval against the wrong features --------------
def test_evl_reference_init_statistics_match_the_reference():
    """EVL's reference init at ViT-B width: Xavier-uniform q/k/v/out and MLP matrices (std sqrt(2 / (fan_in +
    fan_out))), zero attention biases, N(0, 1e-6) MLP biases, PyTorch's default depthwise conv (std 1/3)."""
    torch.manual_seed(0)
    width = 768
    head = EVLDecoder(EVLConfig(num_classes=10, width=width, blocks=(8, 9, 10, 11), num_frames=8, grid=(14, 14)))
    xavier = lambda fan_in, fan_out: (2 / (fan_in + fan_out)) ** 0.5  # noqa: E731
    for layer in head.layers:
        for part in layer.attn.in_proj_weight.detach().split(width):
            assert float(part.std()) == pytest.approx(xavier(width, width), rel=0.05)
        assert float(layer.attn.out_proj.weight.std()) == pytest.approx(xavier(width, width), rel=0.05)
        assert float(layer.attn.in_proj_bias.abs().max()) == 0 and float(layer.attn.out_proj.bias.abs().max()) == 0
        for linear in (layer.mlp[0], layer.mlp[-1]):
            assert float(linear.weight.std()) == pytest.approx(xavier(width, 4 * width), rel=0.05)
            assert float(linear.bias.std()) == pytest.approx(1e-6, rel=0.05)
    for conv in head.temporal_conv:
        assert float(conv.conv.weight.std()) == pytest.approx(1 / 3, rel=0.05)
        assert float(conv.conv.bias.std()) == pytest.approx(1 / 3, rel=0.05)
    assert float(head.query.abs().max()) == 0 and float(head.temporal_pos.abs().max()) == 0
    identity = EVLDecoder(EVLConfig(num_classes=10, width=64, blocks=(0,), num_frames=8, grid=(4, 4), init="identity"))
    assert float(identity.temporal_conv[0].conv.weight.abs().max()) == 0


def test_training_length_has_a_step_floor():
    assert plan_length(TrainConfig(), 5) == (40, 1)  # 10 epochs of 5 steps -> raised to 200 steps
    assert plan_length(TrainConfig(), 50) == (10, 1)
    assert plan_length(TrainConfig(epochs=3), 5) == (3, 1)  # --epochs is exact
    assert plan_length(TrainConfig(steps=12), 5) == (3, 1)
    # contrastive heads reach the floor with more passes per epoch: 64 captions in batches of 32, 10 epochs
    assert plan_length(TrainConfig(min_steps=500), 2, more_passes=True) == (10, 25)
    assert plan_length(TrainConfig(min_steps=500), 1000, more_passes=True) == (10, 1)


def test_a_second_train_into_a_run_needs_resume_or_overwrite(order_task, tmp_path):
    run = tmp_path / "run"
    args = ["train", "probe", "--store", order_task.store, "--set", ORDER, "--labels", order_task.small_train_csv,
            "--out", run]
    assert cli(*args).exit_code == 0
    before = {name: (run / name).read_bytes() for name in (BEST, "metrics.jsonl", "run.json")}
    again = cli(*args, "--seed", "1")
    assert again.exit_code == 2 and again.stdout == ""
    lines = again.stderr.strip().splitlines()
    assert len(lines) == 1 and "--resume" in lines[0] and "--overwrite" in lines[0]
    assert {name: (run / name).read_bytes() for name in before} == before  # nothing replaced
    assert cli(*args, "--seed", "1", "--overwrite").exit_code == 0
    assert json.loads((run / "run.json").read_text())["train"]["seed"] == 1


def test_a_failed_start_leaves_nothing(order_task, tmp_path):
    labels = write_labels(tmp_path / "bad.csv", [(order_task.rows[0][0], CLASSES[0]), ("no-such-video", CLASSES[1])])
    result = cli("train", "temporal", "--store", order_task.store, "--set", ORDER, "--labels", labels,
                 "--out", tmp_path / "run", "--no-progress")
    assert result.exit_code == 2 and "no-such-video" in result.stderr
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("kind", ["probe", "temporal", "evl"])
def test_a_feature_set_typo_is_one_line(order_task, tmp_path, kind):
    result = cli("train", kind, "--store", order_task.store, "--set", "ordr", "--labels", order_task.small_train_csv,
                 "--out", tmp_path / "run")
    assert result.exit_code == 2 and "Traceback" not in result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "'ordr'" in lines[0] and ORDER in lines[0]
    assert not (tmp_path / "run").exists()


def test_each_head_command_documents_only_its_own_options():
    helps = {kind: cli("train", kind, "--help").output for kind in ("probe", "temporal", "evl")}
    assert "--epochs" not in helps["probe"] and "--lr" not in helps["probe"] and "--resume" not in helps["probe"]
    assert "L2" in helps["probe"] and "--pooling" in helps["probe"]
    for kind in ("temporal", "evl"):
        assert "L2" not in helps[kind] and "probe" not in helps[kind] and "--min-steps" in helps[kind]
    assert "--num-layers" not in helps["temporal"] and "--width" not in helps["evl"]


def test_ctrl_c_in_training_checkpoints_and_says_how_to_resume(order_task, tmp_path):
    common = ["train", "temporal", "--store", order_task.store, "--set", ORDER, "--labels", order_task.small_train_csv,
              "--epochs", "200", "--batch-size", "16", "--width", "32", "--heads", "2", "--no-progress"]
    run = tmp_path / "run"
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    process = subprocess.Popen([sys.executable, "-m", "freezeframe.cli", *map(str, common), "--out", str(run)],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and process.poll() is None and len(read_metrics(run) if run.exists() else []) < 2:
        time.sleep(0.05)
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=120)
    lines = stderr.decode().strip().splitlines()
    assert process.returncode == 130, lines
    assert len(lines) == 1 and "--resume" in lines[0] and "Traceback" not in lines[0]
    done = torch.load(run / "last.pt", weights_only=False)["epoch"] + 1
    assert f"last.pt holds epoch {done}/200" in lines[0]
    assert len(read_metrics(run)) == done


def test_ctrl_c_during_an_epochs_checkpoint_is_delivered_once_it_is_written():
    from freezeframe.train.loop import ctrl_c_deferred

    order = []
    with pytest.raises(KeyboardInterrupt):
        with ctrl_c_deferred():
            signal.raise_signal(signal.SIGINT)
            order.append("checkpoint written")
    assert order == ["checkpoint written"]
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


@pytest.fixture(scope="module")
def other_features(order_task, tmp_path_factory) -> Path:
    """The test videos extracted again under the same set name, with fast preprocessing."""
    store = tmp_path_factory.mktemp("other") / "store"
    listing = store.parent / "videos.csv"
    listing.write_text("video_id,path\n" + "".join(f"{v},{order_task.root / 'videos' / (v + '.mp4')}\n"
                                                   for v, _ in order_task.rows[160:]))
    result = cli("extract", listing, "--store", store, "--name", ORDER, "--model", "ff-tiny-vit", "--pretrained", "none",
                 "--features", "embed", "--num-frames", "8", "--preprocess", "fast", "--workers", "0", "--no-progress")
    assert result.exit_code == 0, result.output + repr(result.exception)
    return store


def test_eval_refuses_features_made_differently(cli_runs, order_task, other_features):
    run, _ = cli_runs["probe"]
    result = cli("eval", run, "--labels", order_task.test_csv, "--store", other_features)
    assert result.exit_code == 2 and result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "preprocess.mode" in lines[0] and "--allow-provenance-mismatch" in lines[0]
    allowed = cli("eval", run, "--labels", order_task.test_csv, "--store", other_features, "--json",
                  "--allow-provenance-mismatch")
    assert allowed.exit_code == 0 and json.loads(allowed.stdout)["num_videos"] == 40
    assert "preprocess.mode" in allowed.stderr


@pytest.mark.parametrize("suffix", ["csv", "jsonl"])
def test_eval_writes_per_video_predictions_and_a_confusion_matrix(cli_runs, order_task, tmp_path, suffix):
    run, _ = cli_runs["evl"]
    out, png = tmp_path / f"predictions.{suffix}", tmp_path / "confusion.png"
    result = cli("eval", run, "--labels", order_task.test_csv, "--json", "--predictions", out, "--confusion", png)
    assert result.exit_code == 0, result.output
    top1 = json.loads(result.stdout)["top1"]
    if suffix == "csv":
        import csv
        rows = list(csv.DictReader(out.open()))
    else:
        rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["video_id"] for r in rows] == [v for v, _ in order_task.rows[160:]]
    assert [r["label"] for r in rows] == [label for _, label in order_task.rows[160:]]
    assert np.mean([r["prediction"] == r["label"] for r in rows]) == pytest.approx(top1)
    for r in rows:
        probs = {c: float(r[f"p:{c}"]) for c in CLASSES}
        assert sum(probs.values()) == pytest.approx(1, abs=1e-5)
        assert max(probs, key=probs.get) == r["prediction"] and float(r["score"]) == pytest.approx(max(probs.values()))
    assert png.read_bytes()[:8] == PNG_SIGNATURE


def test_confusion_matrix_counts():
    counts = confusion_matrix(torch.tensor([0, 1, 1, 2]), torch.tensor([0, 0, 1, 2]), 3)
    assert counts.tolist() == [[1, 1, 0], [0, 1, 0], [0, 0, 1]]


# ---- a new head is one module plus one registry entry ----------------------------------------------------
@dataclass(frozen=True)
class FirstLastConfig:
    num_classes: int
    input_dim: int
    gap: float = option(1.0, "weight of the last frame minus the first")


class FirstLast(nn.Module):
    """A toy head: logits of (last frame - first frame) * gap, from `embed`; it can learn the order task."""

    def __init__(self, config: FirstLastConfig) -> None:
        super().__init__()
        self.config = config
        self.linear = nn.Linear(config.input_dim, config.num_classes)

    @property
    def required_arrays(self) -> list[str]:
        return ["embed"]

    def forward(self, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        frames = inputs["embed"].float()
        return self.linear((frames[:, -1] - frames[:, 0]) * self.config.gap)


def size_first_last(feature_set, num_classes: int, num_frames: int, **options) -> FirstLastConfig:
    return FirstLastConfig(num_classes, vector_width(feature_set, "embed"), **options)


@pytest.fixture
def first_last():
    register_head("first-last", config=FirstLastConfig, size=size_first_last, task="classification",
                  summary="toy: last frame minus first", reads="`embed`", frames=("uniform:8", "uniform:8"))(FirstLast)
    yield
    del HEAD_REGISTRY["first-last"]


def test_a_new_head_is_one_module_and_one_entry_trained_and_evaluated_through_the_cli(first_last, order_task,
                                                                                        tmp_path):
    assert "--gap" in cli("train", "first-last", "--help").output
    run = tmp_path / "run"
    trained = cli("train", "first-last", "--store", order_task.store, "--set", ORDER, "--labels", order_task.train_csv,
                  "--out", run, "--gap", "4", "--epochs", "30", "--lr", "3e-2", "--no-progress")
    assert trained.exit_code == 0, trained.output + repr(trained.exception)
    info = json.loads((run / "run.json").read_text())
    assert info["head"] == "first-last" and info["head_config"]["gap"] == 4.0 and info["train_frames"] == "uniform:8"
    assert len(read_metrics(run)) == 30
    evaluated = cli("eval", run, "--labels", order_task.test_csv, "--json")
    assert evaluated.exit_code == 0, evaluated.output + repr(evaluated.exception)
    report = json.loads(evaluated.stdout)
    assert report["head"] == "first-last" and report["num_videos"] == 40 and report["top1"] >= 0.75  # chance: 0.5
    assert "| `first-last` |" in head_tables()
