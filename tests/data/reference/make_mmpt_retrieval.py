"""Writes mmpt_retrieval.json: fairseq examples/MMPT's own retrieval-augmented sampler on seeded embeddings.

Run from this repository's root with a fairseq git directory (commit 3d262bb25690e4eb2e7d3c1309b1e9c406ca4b99) and
faiss-cpu installed: `python tests/data/reference/make_mmpt_retrieval.py /path/to/fairseq.git`.

What runs is MMPT's own source, read from that commit and executed unchanged: the whole of mmpt/modules/retri.py
(`VectorRetriever`) and mmpt/modules/vectorpool.py (`VideoVectorPool`: 512 centroids, 48 training points each),
`VideoPredictor` and `VideoRetriPredictor` of mmpt/tasks/retritask.py (the pass that builds the index, draws the
seed videos and searches their 64 candidates), `set_seed`, `get_local_rank` and `print_on_rank0` of
mmpt/utils/__init__.py, `Predictor` of mmpt/evaluators/predictor.py, and `FixedLenAligner.__call__`,
`VariedLenAligner._get_text_maxlen` and `Aligner.batch_post_processing` of mmpt/processors (the draw of a video's
16 clips). Adapted: the classes are executed alone, with their imports as globals (MMPT's package imports
`transformers.modeling_bert`, gone since transformers 4); `bert_name` is a directory holding only a BERT config of
hidden size DIM (VectorPool reads nothing else from it); the model is a stand-in whose pooled video and text outputs
are the seeded clip embeddings below (`clip_embeddings`), and the aligner's `sampling` a stand-in that returns the
drawn centre caption. The exact variant sets `nprobe` to every list, which MMPT never does.
"""

from __future__ import annotations

import ast
import hashlib
import json
import os
import pickle
import random
import subprocess
import sys
import tempfile
import textwrap
import types
from pathlib import Path

import numpy as np
import torch

COMMIT = "3d262bb25690e4eb2e7d3c1309b1e9c406ca4b99"
VIDEOS, CLIPS, DIM, TOPICS, SEED, EPOCH = 25_600, 16, 16, 400, 0, 1  # 25,600 >= 512 x 48: MMPT trains in `add`
VIDEOS_PER_BATCH, CANDIDATES, SHOWN = 32, 64, 40
CAPTION_COUNTS, DRAWS = (1, 2, 3, 5, 8, 16, 40), 500


def clip_embeddings() -> tuple[np.ndarray, np.ndarray]:
    """(video, text) embeddings of each video's 16 sampled clips, (VIDEOS, CLIPS, DIM) float32 each: topics of
    videos with noise, every video scaled by its own factor (so normalising the points changes neighbours)."""
    rng = np.random.default_rng(SEED)
    centres = rng.standard_normal((TOPICS, DIM))
    topic = rng.integers(TOPICS, size=VIDEOS)
    scale = rng.uniform(0.5, 2.0, (VIDEOS, 1, 1))
    video = scale * (centres[topic][:, None] + 0.6 * rng.standard_normal((VIDEOS, CLIPS, DIM)))
    text = scale * (centres[topic][:, None] + 0.6 * rng.standard_normal((VIDEOS, CLIPS, DIM)))
    return video.astype(np.float32), text.astype(np.float32)


def git_show(git_dir: str, path: str) -> str:
    return subprocess.run(["git", "--git-dir", git_dir, "show", f"{COMMIT}:examples/MMPT/{path}"], check=True,
                          capture_output=True, text=True).stdout


def definition(git_dir: str, path: str, name: str, method: str | None = None) -> str:
    """The source text of top-level `name` (or of its `method`) in MMPT's `path` at COMMIT."""
    text = git_show(git_dir, path)
    node = next(n for n in ast.parse(text).body if isinstance(n, (ast.ClassDef, ast.FunctionDef)) and n.name == name)
    if method:
        node = next(n for n in node.body if isinstance(n, ast.FunctionDef) and n.name == method)
    return textwrap.dedent(ast.get_source_segment(text, node))


def load_modules(git_dir: str) -> dict:
    """MMPT's retri.py and vectorpool.py as modules of a bare `mmpt` package, its utils' three functions beside."""
    for name in ("mmpt", "mmpt.modules"):
        sys.modules[name] = types.ModuleType(name)
        sys.modules[name].__path__ = []
    utils = types.ModuleType("mmpt.utils")
    utils.__dict__.update(torch=torch, random=random, np=np)
    for name in ("set_seed", "get_local_rank", "print_on_rank0"):
        exec(definition(git_dir, "mmpt/utils/__init__.py", name), utils.__dict__)
    sys.modules["mmpt.utils"] = utils
    for name in ("retri", "vectorpool"):
        module = types.ModuleType(f"mmpt.modules.{name}")
        module.__package__ = "mmpt.modules"
        sys.modules[module.__name__] = module
        exec(compile(git_show(git_dir, f"mmpt/modules/{name}.py"), f"mmpt/modules/{name}.py", "exec"), module.__dict__)
        setattr(sys.modules["mmpt.modules"], name, module)
    return utils.__dict__


class Recorder:
    """Python's `random` for retritask.py, recording what `random.sample` returns (the seeds, then the groups)."""

    def __init__(self) -> None:
        self.samples: list[list] = []

    def sample(self, population, k):
        self.samples.append(random.sample(population, k))
        return self.samples[-1]


class Towers(torch.nn.Module):
    """The model stand-in: its pooled outputs are the clip embeddings it is given."""

    def __init__(self) -> None:
        super().__init__()
        self.unused = torch.nn.Parameter(torch.zeros(1))

    def forward(self, vfeats, caps, video_id):
        return {"pooled_video": vfeats, "pooled_text": caps}


def retrieval(git_dir: str, utils: dict, work: Path) -> dict:
    """MMPT's pass: VideoPredictor fills VideoVectorPool, VideoRetriPredictor draws seeds and searches them."""
    (work / "bert").mkdir()
    (work / "bert" / "config.json").write_text(json.dumps({"model_type": "bert", "hidden_size": DIM}))
    config = types.SimpleNamespace(
        vectorpool_cls="VideoVectorPool", retriever_cls="VectorRetriever", num_cands=CANDIDATES,
        dataset=types.SimpleNamespace(bert_name=str(work / "bert"), num_video_per_batch=VIDEOS_PER_BATCH),
        fairseq=types.SimpleNamespace(checkpoint=types.SimpleNamespace(save_dir=str(work))))
    os.makedirs(work / "retri")
    recorder = Recorder()
    scope = dict(torch=torch, os=os, pickle=pickle, random=recorder, tqdm=lambda x: x,
                 vectorpool=sys.modules["mmpt.modules.vectorpool"], get_local_rank=utils["get_local_rank"])
    exec(definition(git_dir, "mmpt/evaluators/predictor.py", "Predictor"), scope)
    for name in ("VideoPredictor", "VideoRetriPredictor"):
        exec(definition(git_dir, "mmpt/tasks/retritask.py", name), scope)
    video, text = clip_embeddings()
    per_batch = VIDEOS_PER_BATCH * 16  # retritask's infer_scale
    loader = [{"vfeats": torch.from_numpy(video[i:i + per_batch]), "caps": torch.from_numpy(text[i:i + per_batch]),
               "video_id": list(range(i, min(i + per_batch, VIDEOS)))} for i in range(0, VIDEOS, per_batch)]
    model = Towers()
    utils["set_seed"](EPOCH)
    predictor = scope["VideoPredictor"](config)
    retriever = predictor.predict_loop(model, loader)
    searched: list[list[int]] = []
    search = retriever.search_by_video_ids
    retriever.search_by_video_ids = lambda ids, k: searched.extend(search(ids, k)) or searched[-len(ids):]
    utils["set_seed"](EPOCH)  # as _retri_predict does before the search
    groups = scope["VideoRetriPredictor"](config).predict_loop(model, retriever, EPOCH)
    seeds = recorder.samples[0]
    retriever.db.nprobe = retriever.db.nlist  # every list probed: the IVF search becomes exact
    exact = search(seeds, CANDIDATES)
    return {"points": retriever.db.reconstruct_n(0, VIDEOS), "seeds": seeds, "candidates": searched,
            "exact": exact, "groups": groups, "lists": retriever.db.nlist, "train_points": retriever.train_thres}


def clip_draws(git_dir: str) -> dict:
    """MMPT's draw of a video's 16 clips (`FixedLenAligner.__call__` with `clip_per_video` 16): for videos of
    CAPTION_COUNTS captions, DRAWS draws each, the mean number of distinct captions among the 16."""
    scope = {"random": random, "torch": torch}
    for path, cls, method in (("mmpt/processors/how2processor.py", "FixedLenAligner", "__call__"),
                              ("mmpt/processors/how2processor.py", "VariedLenAligner", "_get_text_maxlen"),
                              ("mmpt/processors/processor.py", "Aligner", "batch_post_processing")):
        exec(definition(git_dir, path, cls, method), scope)
    aligner = types.SimpleNamespace(subsampling=16, sampled_min_len=8, sampled_max_len=64)
    aligner.sampling = lambda video_idx, feature, text, centre, max_len: {"vfeats": torch.tensor([centre])}
    aligner._get_text_maxlen = lambda: scope["_get_text_maxlen"](aligner)
    aligner.batch_post_processing = lambda batch, feature: scope["batch_post_processing"](aligner, batch, feature)
    random.seed(EPOCH)
    out = {}
    for count in CAPTION_COUNTS:
        text = {"start": [float(i) for i in range(count)]}
        picks = [scope["__call__"](aligner, ("v", 0), None, text)["vfeats"].flatten().tolist() for _ in range(DRAWS)]
        assert all(len(p) == 16 and 0 <= min(p) and max(p) < count for p in picks)
        out[str(count)] = {"clips": 16, "mean_distinct": float(np.mean([len(set(p)) for p in picks])),
                           "first": picks[0]}
    return out


def digest(rows) -> str:
    return hashlib.sha256(json.dumps([list(map(int, r)) for r in rows]).encode()).hexdigest()


def main(git_dir: str) -> dict:
    import faiss

    utils = load_modules(git_dir)
    with tempfile.TemporaryDirectory() as work:
        found = retrieval(git_dir, utils, Path(work))
    points = found["points"]
    return {
        "reference": f"facebookresearch/fairseq {COMMIT} examples/MMPT", "faiss": faiss.__version__,
        "inputs": {"videos": VIDEOS, "clips": CLIPS, "dim": DIM, "topics": TOPICS, "seed": SEED, "epoch": EPOCH,
                   "videos_per_batch": VIDEOS_PER_BATCH, "num_cands": CANDIDATES,
                   "made_by": "clip_embeddings() in make_mmpt_retrieval.py"},
        "index": {"lists": found["lists"], "train_points": found["train_points"], "nprobe": 1},
        "points": {"first": points[:4].tolist(), "sum": float(points.astype(np.float64).sum()),
                   "abs_sum": float(np.abs(points.astype(np.float64)).sum())},
        "seeds": found["seeds"],
        "candidates": {"shown": found["candidates"][:SHOWN], "sha256": digest(found["candidates"]),
                       "lengths": [len(c) for c in found["candidates"]]},
        "exact": {"shown": found["exact"][:SHOWN], "sha256": digest(found["exact"])},
        "groups": {"shown": found["groups"][:SHOWN], "lengths": [len(g) for g in found["groups"]]},
        "clip_draws": clip_draws(git_dir),
    }


if __name__ == "__main__":
    result = main(sys.argv[1])
    out = Path(__file__).with_name("mmpt_retrieval.json")
    out.write_text(json.dumps(result, separators=(",", ":")) + "\n")
    print(f"wrote {out} ({out.stat().st_size} bytes): {len(result['seeds'])} seeds, "
          f"{result['index']['lists']} lists")
