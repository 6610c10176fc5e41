"""Resolving `--pretrained`: an open_clip tag, a local checkpoint path, or `none` (random weights)."""

from __future__ import annotations

import inspect
import socket
from pathlib import Path
from urllib.parse import urlparse

import torch
import torch.nn as nn

from freezeframe.checkpoints import UntrustedCheckpointError, is_untrusted_pickle_error, load_checkpoint, untrusted_message
from freezeframe.errors import BackboneError

RANDOM = ("none", "random")
OPTIONAL_BUFFERS = ("num_batches_tracked",)  # BatchNorm step counters: unused in eval, absent from some exports


def is_random(pretrained: str | None) -> bool:
    return pretrained is None or pretrained.lower() in RANDOM


def host_reachable(host: str, port: int = 443, timeout: float = 3.0) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def download_hosts(pretrained_cfg: dict) -> list[str]:
    hosts = []
    if pretrained_cfg.get("hf_hub"):
        hosts.append("huggingface.co")
    if pretrained_cfg.get("url"):
        hosts.append(urlparse(pretrained_cfg["url"]).hostname or "")
    return [h for h in hosts if h]


def state_dict_sha256(module: torch.nn.Module) -> str:
    """A fingerprint of the weights actually used, whatever their source (tag, file or random)."""
    import hashlib

    digest = hashlib.sha256()
    for key, tensor in sorted(module.state_dict().items()):
        digest.update(key.encode())
        digest.update(tensor.detach().to("cpu").contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def checkpoint_path(pretrained: str) -> Path | None:
    path = Path(pretrained).expanduser()
    return path if path.is_file() else None


def load_checkpoint_into(clip_model: torch.nn.Module, path: Path, trust: bool) -> None:
    """Load a checkpoint file into an open_clip model with open_clip's key conversions, as weights only.

    An open_clip whose `load_checkpoint` takes `weights_only` (and reads `.safetensors` itself) is asked for a
    weights-only load; an older one is handed the file only after freezeframe's own weights-only load accepted
    it (or the user trusts it).
    """
    import open_clip

    if "weights_only" not in inspect.signature(open_clip.load_checkpoint).parameters:
        load_checkpoint(path, trust=trust)
        open_clip.load_checkpoint(clip_model, str(path))
        return
    try:
        open_clip.load_checkpoint(clip_model, str(path), weights_only=not trust)
    except Exception as exc:  # noqa: BLE001
        if not trust and is_untrusted_pickle_error(exc):
            raise UntrustedCheckpointError(untrusted_message(path)) from None
        raise


def missing_weights_message(what: str, tag: str) -> str:
    return (
        f"cannot download the pretrained weights {tag!r} for {what} (no network, and they are not in the local "
        f"cache): download the checkpoint on a machine with network access and pass its path with --pretrained PATH, "
        f"or pass --pretrained none for random weights."
    )


def load_error(what: str, source: str, exc: BaseException) -> BackboneError:
    return BackboneError(f"cannot load weights {source!r} into {what}: {str(exc).splitlines()[0][:300]}.")


# ---- local weights files loaded by parameter name (S3D, I3D, timm, torchvision video) -----------------------

def checkpoint_state_dict(obj: object) -> dict[str, torch.Tensor]:
    """The tensors of a loaded checkpoint: a state dict, or one under `state_dict`/`model`; `module.` stripped."""
    if isinstance(obj, dict):
        for key in ("state_dict", "model"):
            if isinstance(obj.get(key), dict):
                obj = obj[key]
                break
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise ValueError("the file holds no state dict of tensors")
    if obj and all(k.startswith("module.") for k in obj):  # saved from a DataParallel wrapper
        obj = {k[len("module."):]: v for k, v in obj.items()}
    return obj


def fit_state_dict(model: nn.Module, state: dict[str, torch.Tensor]) -> str | None:
    """Why `state` does not fit `model` (missing, unexpected or misshapen keys, first few named), or None."""
    expected = model.state_dict()
    missing = [k for k in expected if k not in state and not k.endswith(OPTIONAL_BUFFERS)]
    unexpected = [k for k in state if k not in expected]
    misshapen = [f"{k} {tuple(state[k].shape)} (expected {tuple(v.shape)})" for k, v in expected.items()
                 if k in state and state[k].shape != v.shape]
    problems = [f"{len(keys)} {what} ({', '.join(keys[:3])}{', ...' if len(keys) > 3 else ''})"
                for what, keys in (("missing keys", missing), ("unexpected keys", unexpected),
                                   ("keys of the wrong shape", misshapen)) if keys]
    return "; ".join(problems) or None



def existing_weights_file(weights: str, what: str, example: str) -> Path:
    """The local file `weights` names; a missing one is one sentence (nothing is ever downloaded)."""
    path = Path(weights).expanduser()
    if not path.is_file():
        raise BackboneError(f"{what} {weights} does not exist; pass a local checkpoint path (e.g. {example}) "
                            "or none for random weights.")
    return path


def load_weights_file(model: nn.Module, path: Path, what: str, trust: bool, ignore_prefix: str | None = None) -> dict:
    """Load a state-dict file into `model` by name, weights only unless `trust`; keys under `ignore_prefix` are
    dropped. Returns the provenance of the weights; a file that does not fit is one sentence naming the keys."""
    from freezeframe.store.provenance import file_sha256

    try:
        state = checkpoint_state_dict(load_checkpoint(path, trust=trust))
    except UntrustedCheckpointError:
        raise
    except Exception as exc:  # noqa: BLE001 - any loading failure becomes one sentence
        raise load_error(what, str(path), exc) from None
    dropped = [k for k in state if ignore_prefix and k.startswith(ignore_prefix)]
    state = {k: v for k, v in state.items() if k not in dropped}
    problem = fit_state_dict(model, state)
    if problem:
        raise BackboneError(f"the weights in {path} do not fit {what}: {problem}; pass a checkpoint of that network.")
    model.load_state_dict(state, strict=False)
    info = {"weights": str(path.resolve()), "checkpoint_sha256": file_sha256(path)}
    if dropped:
        info["ignored_keys"] = f"{len(dropped)} {ignore_prefix}* tensors"
    return info


def seeded(build, seed: int) -> nn.Module:
    """`build()` after seeding torch, so random weights (`none`) are reproducible."""
    torch.manual_seed(seed)
    return build()
