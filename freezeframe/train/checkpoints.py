"""A run's checkpoints: the best weights as safetensors (tensors only, nothing to unpickle), and `last.pt`, the
state a resumed run continues from (weights, optimiser, schedule, loss scaler, RNGs, metrics history).

Runs written before best weights were safetensors keep loading: their `best.pt` is read as weights only.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn

from freezeframe.checkpoints import load_checkpoint
from freezeframe.errors import InputError, library_errors
from freezeframe.store.files import write_atomic

BEST = "best.safetensors"
BEST_BEFORE_SAFETENSORS = "best.pt"
LAST = "last.pt"


def save_atomic(obj: object, path: Path) -> None:
    """A torch checkpoint written whole or not at all (temporary name, fsync, rename)."""
    write_atomic(Path(path), lambda handle: torch.save(obj, handle))


def save_weights(head: nn.Module, path: Path, info: dict) -> None:
    """The head's weights as safetensors, written atomically; `info` (epoch, metrics) goes in its metadata."""
    from safetensors.torch import save

    tensors = {name: value.detach().cpu().contiguous() for name, value in head.state_dict().items()}
    data = save(tensors, metadata={"freezeframe": json.dumps(info)})
    write_atomic(Path(path), lambda handle: handle.write(data))


def saved_info(path: Path) -> dict:
    """The metadata `save_weights` wrote (epoch, metrics)."""
    from safetensors import safe_open

    with library_errors(path, InputError), safe_open(str(path), "pt") as handle:
        return json.loads((handle.metadata() or {}).get("freezeframe", "{}"))


def head_weights(run_dir: Path, which: str = "best", trust: bool = False) -> tuple[dict[str, torch.Tensor], Path]:
    """A run's head weights: the best ones (`best.safetensors`, or an older run's `best.pt`), or `last.pt`'s; the
    latest available when the asked-for file is missing. Pickled files are read as weights only unless `trust`."""
    candidates = [BEST, BEST_BEFORE_SAFETENSORS, LAST] if which == "best" else [LAST, BEST, BEST_BEFORE_SAFETENSORS]
    path = next((run_dir / name for name in candidates if (run_dir / name).exists()), None)
    if path is None:
        raise InputError(f"{run_dir} has no checkpoint yet.")
    saved = load_checkpoint(path, trust=trust)
    if path.name == BEST:
        return saved, path
    if not isinstance(saved, dict) or not isinstance(saved.get("head"), dict):
        raise InputError(f"{path} holds no head weights (expected a dict with a 'head' state dict).")
    return saved["head"], path


def rng_state() -> dict:
    """Every generator's state, as tensors and plain values (so a weights-only load reads it back)."""
    name, keys, position, has_gauss, cached_gaussian = np.random.get_state()
    numpy_state = [name, torch.from_numpy(keys.astype(np.int64)), int(position), int(has_gauss), float(cached_gaussian)]
    state = {"python": random.getstate(), "numpy": numpy_state, "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    random.setstate(state["python"])
    name, keys, *rest = state["numpy"]
    np.random.set_state((name, np.asarray(keys, dtype=np.uint32), *rest))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
