"""Resolving `--pretrained`: an open_clip tag, a local checkpoint path, or `none` (random weights)."""

from __future__ import annotations

import contextlib
import inspect
import logging
import socket
from pathlib import Path
from typing import Iterator
from urllib.parse import urlparse

import torch

from freezeframe.checkpoints import UntrustedCheckpointError, is_untrusted_pickle_error, load_checkpoint, untrusted_message
from freezeframe.errors import BackboneError

RANDOM = ("none", "random")


def is_random(pretrained: str | None) -> bool:
    return pretrained is None or pretrained.lower() in RANDOM


def host_reachable(host: str, port: int = 443, timeout: float = 3.0) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


@contextlib.contextmanager
def quiet_logging() -> Iterator[None]:
    """Silence library log lines (e.g. open_clip's download errors) while we raise our own sentence."""
    logging.disable(logging.ERROR)
    try:
        yield
    finally:
        logging.disable(logging.NOTSET)


@contextlib.contextmanager
def hub_offline(offline: bool) -> Iterator[None]:
    """Make huggingface_hub use only its local cache, so a missing network fails at once instead of retrying."""
    if not offline:
        yield
        return
    import huggingface_hub.constants as hub_constants

    before = hub_constants.HF_HUB_OFFLINE
    hub_constants.HF_HUB_OFFLINE = True
    try:
        yield
    finally:
        hub_constants.HF_HUB_OFFLINE = before


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
