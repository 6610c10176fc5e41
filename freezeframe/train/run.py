"""A training run directory: what was trained on what (run.json) plus checkpoints and metrics."""

from __future__ import annotations

import contextlib
import json
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Iterator

import torch
import torch.nn as nn

from freezeframe.errors import InputError
from freezeframe.heads.registry import build_head, config_from_dict
from freezeframe.limits import DOCUMENT_BYTES, read_limited
from freezeframe.train.checkpoints import BEST, BEST_BEFORE_SAFETENSORS, LAST, head_weights

RUN_FILE = "run.json"
# Everything a training run writes into its directory (an --overwrite removes these and nothing else).
RUN_FILES = (RUN_FILE, LAST, BEST, BEST_BEFORE_SAFETENSORS, "metrics.jsonl", "curves.png")


@dataclass
class RunInfo:
    head: str
    head_config: dict
    store: str
    feature_set: str
    classes: list[str]
    train_frames: str
    eval_frames: str
    train: dict = field(default_factory=dict)
    extra: dict = field(default_factory=dict)

    def save(self, run_dir: str | Path) -> None:
        Path(run_dir).mkdir(parents=True, exist_ok=True)
        (Path(run_dir) / RUN_FILE).write_text(json.dumps(self.__dict__, indent=1))

    @classmethod
    def load(cls, run_dir: str | Path) -> "RunInfo":
        path = Path(run_dir) / RUN_FILE
        if not path.exists():
            raise InputError(f"{run_dir} is not a training run (no {RUN_FILE}).")
        try:
            data = json.loads(read_limited(path, DOCUMENT_BYTES, "a run description").decode("utf-8"))
        except UnicodeDecodeError:
            raise InputError(f"{path} is not UTF-8 text.") from None
        except json.JSONDecodeError as exc:
            raise InputError(f"{path}:{exc.lineno}: not valid JSON ({exc.msg}).") from None
        except RecursionError:
            raise InputError(f"{path}: JSON nested too deeply to be a run description.") from None
        return cls(**check_run_fields(data, path))


_FIELD_TYPES = {"head": str, "head_config": dict, "store": str, "feature_set": str, "classes": list,
                "train_frames": str, "eval_frames": str, "train": dict, "extra": dict}


def check_run_fields(data: object, path: Path) -> dict:
    """The fields of a run.json, each of its type; unknown or missing keys are one sentence naming the file."""
    if not isinstance(data, dict):
        raise InputError(f"{path}: expected a JSON object, found {type(data).__name__}.")
    known = {f.name for f in fields(RunInfo)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise InputError(f"{path}: unknown key(s) {', '.join(map(repr, unknown[:5]))}; a run description has "
                         f"{', '.join(sorted(known))}.")
    required = [f.name for f in fields(RunInfo) if f.name not in ("train", "extra")]
    missing = [key for key in required if key not in data]
    if missing:
        raise InputError(f"{path}: missing key(s) {', '.join(missing)}.")
    for key, value in data.items():
        if not isinstance(value, _FIELD_TYPES[key]):
            raise InputError(f"{path}: {key!r} must be a JSON {_FIELD_TYPES[key].__name__}, found "
                             f"{type(value).__name__}.")
    if not all(isinstance(name, str) for name in data["classes"]):
        raise InputError(f"{path}: 'classes' must be a list of strings.")
    return data


def _build_checked(info: RunInfo, state: dict, where: Path) -> nn.Module:
    """Build the head only once its shapes (from run.json) match the checkpoint's tensors: the head is first built
    on the meta device (no memory), so a run.json declaring a huge width never allocates it."""
    try:
        config = config_from_dict(info.head, info.head_config)
        with torch.device("meta"):
            shapes = {k: tuple(v.shape) for k, v in build_head(info.head, config).state_dict().items()}
    except InputError:
        raise
    except Exception as exc:  # noqa: BLE001 - any config the head refuses is one sentence
        raise InputError(f"{where}: the head config cannot be built ({type(exc).__name__}: {exc}).") from None
    stored = {k: tuple(v.shape) for k, v in state.items() if hasattr(v, "shape")}
    if shapes != stored:
        diff = sorted(set(shapes) ^ set(stored)) or [k for k in shapes if shapes[k] != stored.get(k)]
        raise InputError(f"{where}: the head described in {RUN_FILE} does not match its checkpoint "
                         f"(first difference: {diff[0]!r}); the run directory is damaged or was edited.")
    return build_head(info.head, config)


def load_head(run_dir: str | Path, checkpoint: str = "best",
              trust_checkpoint: bool = False) -> tuple[nn.Module, RunInfo]:
    """Rebuild the head of a run and load its `best` (or `last`) weights (weights only, unless `trust_checkpoint`)."""
    info = RunInfo.load(run_dir)
    weights, _ = head_weights(Path(run_dir), checkpoint, trust_checkpoint)
    head = _build_checked(info, weights, Path(run_dir) / RUN_FILE)
    head.load_state_dict(weights)
    return head.eval(), info


def prepare_run_dir(out: Path, resume: bool, overwrite: bool) -> None:
    """Refuse to train into a directory that holds a run unless told to continue it or replace it (which removes
    the run's own files)."""
    present = [name for name in RUN_FILES if (out / name).exists()]
    if resume and overwrite:
        raise InputError("pass either --resume or --overwrite, not both.")
    if not present or resume:
        return
    if not overwrite:
        raise InputError(f"{out} already holds a run ({', '.join(present)}); pass --resume to continue it "
                         f"or --overwrite to replace it.")
    for name in present:
        (out / name).unlink()


@contextlib.contextmanager
def new_run(out: Path, run: RunInfo) -> Iterator[None]:
    """Save `run` into `out` for the training inside; a run that fails before its first checkpoint leaves
    nothing behind."""
    existed = out.exists()
    run.save(out)
    try:
        yield
    except Exception:
        if not (out / LAST).exists() and not (out / BEST).exists():
            for name in RUN_FILES:
                (out / name).unlink(missing_ok=True)
            if not existed and out.is_dir() and not any(out.iterdir()):
                out.rmdir()
        raise
