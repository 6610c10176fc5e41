"""What the extraction runner needs of a frozen backbone, and the factory that builds one from its config."""

from __future__ import annotations

from typing import Protocol

import numpy as np
import torch

from freezeframe.extract.preprocess import PreprocessConfig


class BackboneConfig(Protocol):
    def default_name(self) -> str:
        """A feature-set name derived from model and weights."""


class Backbone(Protocol):
    """A frozen network: preprocessed inputs (one per stored row) in, named float arrays out.

    CLIP takes (n, 3, h, w) frames; window backbones such as S3D take (n, T, 3, h, w) windows of T frames.
    """

    kind: str
    takes_windows: bool  # inputs are windows of frames (sampling strategy `windows`), not single frames
    config: BackboneConfig
    device: torch.device
    preprocess: PreprocessConfig

    def __call__(self, inputs: torch.Tensor) -> dict[str, torch.Tensor]: ...

    def stored_arrays(self) -> list[str]: ...

    def provenance(self) -> dict: ...

    def frozen_weights(self) -> dict[str, np.ndarray]: ...

    def check_window(self, frames: int, height: int, width: int) -> None:
        """Window backbones only: raise InputError for a window size the network cannot take."""


def build_backbone(config: BackboneConfig, device: str | torch.device = "cpu") -> Backbone:
    """The backbone a config describes: a `ClipConfig` gives a CLIP image tower, an `S3DConfig` an S3D network."""
    from freezeframe.extract.backbones.clip import ClipBackbone, ClipConfig

    if isinstance(config, ClipConfig):
        return ClipBackbone(config, device=device)
    from freezeframe.extract.backbones.s3d import S3DBackbone, S3DConfig

    if isinstance(config, S3DConfig):
        return S3DBackbone(config, device=device)
    raise TypeError(f"no backbone is built from a {type(config).__name__}")
