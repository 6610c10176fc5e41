"""Loading checkpoints without running code from them.

`.safetensors` files hold tensors only. Anything else goes through `torch.load(weights_only=True)`, whose
unpickler builds tensors and plain containers and refuses every other object; a checkpoint that needs more
(a full pickle, which can run arbitrary code while it loads) is refused with one sentence unless the caller
trusts it (`--trust-checkpoint` on the command line, `trust_checkpoint=True` in Python).
"""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

import torch

from freezeframe.errors import InputError, library_errors

SAFETENSORS_SUFFIX = ".safetensors"


class UntrustedCheckpointError(InputError):
    """A checkpoint that only a full (code-running) unpickle can load, and the caller did not trust it."""


def untrusted_message(path: str | Path) -> str:
    return (f"{path} is not a plain weights file (loading it would unpickle arbitrary objects, which can run code), "
            "so it was not loaded; re-save its state dict with torch.save or as .safetensors, or pass "
            "--trust-checkpoint (trust_checkpoint=True in Python) if you trust where it came from.")


def is_untrusted_pickle_error(exc: BaseException) -> bool:
    """Whether `torch.load(weights_only=True)` refused the file because it holds more than weights."""
    return isinstance(exc, pickle.UnpicklingError)


def load_checkpoint(path: str | Path, *, trust: bool = False, map_location: str | torch.device = "cpu") -> Any:
    """The object saved in `path`: tensors and plain containers, or anything when `trust` is set."""
    path = Path(path)
    if path.suffix == SAFETENSORS_SUFFIX:
        from safetensors.torch import load_file

        with library_errors(path, InputError):  # a huge header length, a header not JSON, offsets past the end
            return load_file(str(path), device=str(map_location))
    with library_errors(path, InputError):  # a truncated or damaged file: one line naming it
        try:
            return torch.load(path, map_location=map_location, weights_only=True)
        except pickle.UnpicklingError:
            if not trust:
                raise UntrustedCheckpointError(untrusted_message(path)) from None
        return torch.load(path, map_location=map_location, weights_only=False)
