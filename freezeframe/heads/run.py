"""A training run directory: what was trained on what (run.json) plus checkpoints and metrics."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import torch.nn as nn

from freezeframe.checkpoints import load_checkpoint
from freezeframe.errors import InputError
from freezeframe.limits import DOCUMENT_BYTES, read_limited
from freezeframe.heads.registry import build_head, config_from_dict
from freezeframe.heads.training import BEST, LAST

RUN_FILE = "run.json"


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
        return cls(**json.loads(read_limited(path, DOCUMENT_BYTES, "a run description")))


def load_head(run_dir: str | Path, checkpoint: str = BEST, trust_checkpoint: bool = False) -> tuple[nn.Module, RunInfo]:
    """Rebuild the head of a run and load its best (or last) weights (weights only, unless `trust_checkpoint`)."""
    info = RunInfo.load(run_dir)
    head = build_head(info.head, config_from_dict(info.head, info.head_config))
    path = Path(run_dir) / checkpoint
    if not path.exists():
        path = Path(run_dir) / LAST
    if not path.exists():
        raise InputError(f"{run_dir} has no checkpoint yet.")
    head.load_state_dict(load_checkpoint(path, trust=trust_checkpoint)["head"])
    return head.eval(), info
