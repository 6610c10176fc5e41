"""Cached augmented views (`extract --views N --augment SPEC`): N seeded augmentations of every sampled frame, made
in the decode workers beside the plain view, each stored as its own arrays (see freezeframe.views).

The defaults are EVL's reference training augmentation (OpenGVLab/efficient-video-recognition, video_dataset/):
RandAugment `rand-m7-n4-mstd0.5-inc1` on the decoded frames (4 ops of magnitude 7 +- 0.5 out of 10, each applied
with probability 0.5, the increasing-severity op set; geometric ops bicubic with a grey fill), then a
RandomResizedCrop of 8-100% of the area at an aspect of 3/4-4/3 of the normalised frame, resized to the backbone's
input with `F.interpolate` (bilinear, not antialiased: `resize=interpolate`; `resize=pil` resizes the uint8 crop with
the preprocessing's PIL kernel instead). The reference's `--mirror` flag is on by default but its dataset never
applies it, so no flip by default (`flip=0.5` flips half the views). The reference draws one augmentation per training clip, so here one draw serves every frame
of a view of a video: a view is consistent in time, and it depends on (seed, video id, view) alone, so it is the
same whatever the decode worker, window or batch.
"""

from __future__ import annotations

import hashlib
import math
import re
from dataclasses import dataclass, fields
from functools import lru_cache
from typing import Callable

import numpy as np
import torch

from freezeframe.errors import InputError
from freezeframe.extract.preprocess import PreprocessConfig
from freezeframe.views import view_array

EVL_RANDAUGMENT = "rand-m7-n4-mstd0.5-inc1"
MAX_MAGNITUDE = 10.0
GREY = (128, 128, 128)  # what rotations, shears and translations uncover
RESIZES = ("interpolate", "pil")


@dataclass(frozen=True)
class RandAugmentSpec:
    """`rand-m<magnitude>-n<ops>[-mstd<std>][-inc<0|1>]`, the spelling EVL's `--auto_augment` takes."""

    magnitude: float = MAX_MAGNITUDE
    num_ops: int = 2
    magnitude_std: float = 0.0
    increasing: bool = False

    @classmethod
    def parse(cls, text: str) -> "RandAugmentSpec":
        head, *parts = text.split("-")
        values: dict[str, float] = {}
        for part in parts:
            match = re.fullmatch(r"(m|n|mstd|inc)(\d+(?:\.\d+)?)", part)
            if match is None:
                break
            values[match.group(1)] = float(match.group(2))
        if head != "rand" or len(values) != len(parts):
            raise InputError(f"cannot read RandAugment {text!r}; e.g. {EVL_RANDAUGMENT} (magnitude m, n ops, "
                             "magnitude std mstd, inc1: severity increasing with magnitude), or none.")
        spec = cls(values.get("m", MAX_MAGNITUDE), int(values.get("n", 2)), values.get("mstd", 0.0),
                   bool(values.get("inc", 0)))
        if not 0 <= spec.magnitude <= MAX_MAGNITUDE:
            raise InputError(f"RandAugment {text!r}: the magnitude must lie in 0-10.")
        return spec


def _enhance(kind: str) -> Callable:
    from PIL import ImageEnhance

    return lambda img, factor: getattr(ImageEnhance, kind)(img).enhance(factor)


def _affine(coefficients: Callable[[object, float], tuple]) -> Callable:
    from PIL import Image

    return lambda img, value: img.transform(img.size, Image.AFFINE, coefficients(img, value),
                                            resample=Image.BICUBIC, fillcolor=GREY)


def _lut(img, table: list[int]):
    return img.point(table * len(img.getbands()))


def _posterize(img, bits: int):
    """Keep the top `bits` bits of each channel (0 bits: black, which PIL's own posterize refuses)."""
    return _lut(img, [v & (0xFF << (8 - bits)) & 0xFF for v in range(256)])


def _solarize_add(img, add: int):
    return _lut(img, [min(255, v + add) if v < 128 else v for v in range(256)])


@lru_cache(maxsize=1)
def _ops() -> dict[str, tuple[Callable, Callable]]:
    """name -> (argument from (magnitude / 10, sign, increasing), op on a PIL image). Signed ops go either way."""
    from PIL import Image, ImageOps

    enhance = lambda f, s, inc: 1 + s * f * 0.9 if inc else f * 1.8 + 0.1  # noqa: E731
    return {
        "AutoContrast": (lambda f, s, inc: None, lambda img, _: ImageOps.autocontrast(img)),
        "Equalize": (lambda f, s, inc: None, lambda img, _: ImageOps.equalize(img)),
        "Invert": (lambda f, s, inc: None, lambda img, _: ImageOps.invert(img)),
        "Rotate": (lambda f, s, inc: s * f * 30.0,
                   lambda img, deg: img.rotate(deg, resample=Image.BICUBIC, fillcolor=GREY)),
        "Posterize": (lambda f, s, inc: 4 - int(f * 4) if inc else int(f * 4), _posterize),
        "Solarize": (lambda f, s, inc: 256 - int(f * 256) if inc else int(f * 256), ImageOps.solarize),
        "SolarizeAdd": (lambda f, s, inc: int(f * 110), _solarize_add),
        "Color": (enhance, _enhance("Color")),
        "Contrast": (enhance, _enhance("Contrast")),
        "Brightness": (enhance, _enhance("Brightness")),
        "Sharpness": (enhance, _enhance("Sharpness")),
        "ShearX": (lambda f, s, inc: s * f * 0.3, _affine(lambda img, v: (1, v, 0, 0, 1, 0))),
        "ShearY": (lambda f, s, inc: s * f * 0.3, _affine(lambda img, v: (1, 0, 0, v, 1, 0))),
        "TranslateX": (lambda f, s, inc: s * f * 0.45, _affine(lambda img, v: (1, 0, v * img.size[0], 0, 1, 0))),
        "TranslateY": (lambda f, s, inc: s * f * 0.45, _affine(lambda img, v: (1, 0, 0, 0, 1, v * img.size[1]))),
    }


@dataclass(frozen=True)
class AugmentConfig:
    """How augmented views are made; `views` = 0 makes none. `--augment` is `evl` (these defaults) or a comma list
    of `key=value` changes, e.g. `randaugment=rand-m9-n2,flip=0,scale=0.2:1,seed=3`."""

    views: int = 0
    seed: int = 0
    scale: tuple[float, float] = (0.08, 1.0)  # RandomResizedCrop: fraction of the frame's area
    ratio: tuple[float, float] = (3 / 4, 4 / 3)  # ... and aspect ratio (width / height), drawn log-uniform
    flip: float = 0.0  # probability of a horizontal flip (EVL's dataset never applies its --mirror)
    randaugment: str = EVL_RANDAUGMENT  # or "none"
    resize: str = "interpolate"  # the crop resized as EVL: F.interpolate on normalised floats; or "pil" (uint8, PIL)

    def __post_init__(self) -> None:
        if self.views < 0:
            raise InputError("--views must be 0 or more.")
        if not (0 < self.scale[0] <= self.scale[1] <= 1 and 0 < self.ratio[0] <= self.ratio[1]):
            raise InputError("--augment scale must lie in (0, 1] and ratio be positive, each as LOW:HIGH.")
        if not 0 <= self.flip <= 1:
            raise InputError("--augment flip is a probability in [0, 1].")
        if self.resize not in RESIZES:
            raise InputError(f"--augment resize is {' or '.join(RESIZES)}; got {self.resize!r}.")
        self.randaugment_spec()

    @classmethod
    def parse(cls, views: int, text: str = "evl") -> "AugmentConfig":
        """`--views N --augment TEXT`."""
        if text in ("", "evl"):
            return cls(views)
        known = {f.name for f in fields(cls)} - {"views"}
        changes: dict = {}
        for item in text.split(","):
            key, _, value = item.partition("=")
            key = key.strip()
            if key not in known or not value:
                raise InputError(f"cannot read --augment {item!r}: use evl, or key=value pairs among "
                                 f"{', '.join(sorted(known))}.")
            try:
                if key in ("scale", "ratio"):
                    low, _, high = value.partition(":")
                    changes[key] = (float(low), float(high or low))
                else:
                    changes[key] = value if key in ("randaugment", "resize") else \
                        (int(value) if key == "seed" else float(value))
            except ValueError:
                raise InputError(f"cannot read --augment {item!r}.") from None
        return cls(views, **changes)

    def randaugment_spec(self) -> RandAugmentSpec | None:
        return None if self.randaugment == "none" else RandAugmentSpec.parse(self.randaugment)

    def describe(self) -> dict:
        """The provenance record: every parameter, the seed, and how each view's draw is seeded."""
        return {"views": self.views, "seed": self.seed, "randaugment": self.randaugment,
                "crop": {"scale": list(self.scale), "ratio": list(self.ratio)}, "flip": self.flip,
                "order": "randaugment on the decoded frame, normalise, crop resized to the input size by "
                         "F.interpolate (bilinear, align_corners=False, no antialiasing), flip" if self.resize ==
                         "interpolate" else "randaugment on the decoded frame, crop resized to the input size with "
                         "the preprocessing's kernel, flip, normalise",
                "seeding": "numpy SeedSequence([seed, first 8 bytes of sha256(video id) as little-endian uint64, "
                           "view, 0 for ops and flip | 1 for the crop]); one draw per view of a video"}


def check_views(augment: AugmentConfig, strategy: str, preprocess_mode: str) -> None:
    """Views are made beside exact preprocessing in the decode workers, for backbones that take single frames."""
    if not augment.views:
        return
    if preprocess_mode != "exact":
        raise InputError("--views are made in the decode workers beside exact preprocessing: use --preprocess exact.")
    if strategy == "windows":
        raise InputError("--views need a backbone that takes single frames (clip, timm), not windows.")


def view_seed(seed: int, video_id: str, view: int, stream: int) -> np.random.SeedSequence:
    """The seed of one draw (stream 0: ops and flip; 1: crop) of view `view` of a video."""
    key = int.from_bytes(hashlib.sha256(video_id.encode("utf-8")).digest()[:8], "little")
    return np.random.SeedSequence([seed, key, view, stream])


@dataclass(frozen=True)
class ViewDraw:
    """One augmented view's parameters: RandAugment ops with their arguments, a crop (top, left, height, width)
    of frames of one size, and whether to flip."""

    ops: tuple[tuple[str, object], ...]
    crop: tuple[int, int, int, int]
    flip: bool
    resize: str = "interpolate"  # AugmentConfig.resize


def draw_view(augment: AugmentConfig, video_id: str, view: int, height: int, width: int) -> ViewDraw:
    """The parameters of view `view` (1..V) of a video whose frames are `height` x `width`."""
    rng = np.random.default_rng(view_seed(augment.seed, video_id, view, 0))
    ops = []
    spec = augment.randaugment_spec()
    table = _ops()
    names = list(table)
    for _ in range(spec.num_ops if spec else 0):
        name = names[int(rng.integers(len(names)))]
        applied = rng.random() < 0.5
        magnitude = rng.normal(spec.magnitude, spec.magnitude_std) if spec.magnitude_std else spec.magnitude
        sign = -1.0 if rng.random() < 0.5 else 1.0
        if applied:
            fraction = min(MAX_MAGNITUDE, max(0.0, float(magnitude))) / MAX_MAGNITUDE
            ops.append((name, table[name][0](fraction, sign, spec.increasing)))
    flip = bool(rng.random() < augment.flip)
    crop = _draw_crop(np.random.default_rng(view_seed(augment.seed, video_id, view, 1)), augment, height, width)
    return ViewDraw(tuple(ops), crop, flip, augment.resize)


def _draw_crop(rng: np.random.Generator, augment: AugmentConfig, height: int, width: int) -> tuple[int, int, int, int]:
    """Inception-style crop: up to 10 draws of area and log-uniform aspect that fit, else the centred crop of the
    frame clamped to the aspect range."""
    area = height * width
    log_ratio = (math.log(augment.ratio[0]), math.log(augment.ratio[1]))
    for _ in range(10):
        target = area * rng.uniform(*augment.scale)
        aspect = math.exp(rng.uniform(*log_ratio))
        w, h = round(math.sqrt(target * aspect)), round(math.sqrt(target / aspect))
        if 0 < w <= width and 0 < h <= height:
            return int(rng.integers(0, height - h + 1)), int(rng.integers(0, width - w + 1)), h, w
    aspect = min(max(width / height, augment.ratio[0]), augment.ratio[1])
    w, h = (width, round(width / aspect)) if width / height < aspect else (round(height * aspect), height)
    return (height - h) // 2, (width - w) // 2, h, w


def apply_view(frame: np.ndarray, draw: ViewDraw, preprocess: PreprocessConfig) -> torch.Tensor:
    """uint8 (H, W, 3) -> normalised float (3, h, w): the ops, the crop resized to the input size, the flip."""
    from PIL import Image, ImageOps

    image = Image.fromarray(frame)
    table = _ops()
    for name, argument in draw.ops:
        image = table[name][1](image, argument)
    top, left, h, w = draw.crop
    mean = torch.tensor(preprocess.mean).view(-1, 1, 1)
    std = torch.tensor(preprocess.std).view(-1, 1, 1)
    if draw.resize == "interpolate":  # EVL: normalise the frame, then resize the crop of the floats
        pixels = (torch.from_numpy(np.array(image)).permute(2, 0, 1).float() / 255.0 - mean) / std
        pixels = torch.nn.functional.interpolate(pixels[None, :, top:top + h, left:left + w], size=preprocess.size,
                                                 mode="bilinear", align_corners=False)[0]
        return pixels.flip(-1) if draw.flip else pixels
    kernel = Image.BICUBIC if preprocess.interpolation == "bicubic" else Image.BILINEAR
    image = image.resize((preprocess.size[1], preprocess.size[0]), kernel, box=(left, top, left + w, top + h))
    if draw.flip:
        image = ImageOps.mirror(image)
    pixels = torch.from_numpy(np.asarray(image, dtype=np.float32) / 255.0).permute(2, 0, 1)
    return (pixels - mean) / std


class ViewMaker:
    """The plain view (the exact preprocessing) and every augmented view of the frames of one video:
    uint8 (n, H, W, 3) -> float (n, 1 + V, 3, h, w), view 0 plain."""

    def __init__(self, plain: Callable[[np.ndarray], torch.Tensor], preprocess: PreprocessConfig,
                 augment: AugmentConfig, video_id: str) -> None:
        self.plain, self.preprocess, self.augment, self.video_id = plain, preprocess, augment, video_id
        self._draws: dict[tuple[int, int], list[ViewDraw]] = {}  # frame size -> one draw per view

    def __call__(self, frames: np.ndarray) -> torch.Tensor:
        size = frames.shape[1:3]
        draws = self._draws.get(size)
        if draws is None:
            draws = self._draws[size] = [draw_view(self.augment, self.video_id, v, *size)
                                         for v in range(1, self.augment.views + 1)]
        # (on one torch thread: the decode loop calls it inside one_torch_thread)
        views = [torch.stack([apply_view(frame, draw, self.preprocess) for frame in frames]) for draw in draws]
        return torch.stack([self.plain(frames), *views], dim=1)


def with_views(plain, preprocess: PreprocessConfig, augment: AugmentConfig, video_id: str):
    """The decode worker's transform for one video: `plain` alone, or a ViewMaker when views are asked for."""
    return ViewMaker(plain, preprocess, augment, video_id) if augment.views else plain


class ViewForward:
    """The backbone over frames that carry every view: (n, 1 + V, ...) -> the plain arrays and `views/<v>/...`."""

    def __init__(self, backbone: Callable[[torch.Tensor], dict[str, torch.Tensor]], views: int) -> None:
        self.backbone, self.views = backbone, views

    def __call__(self, pixels: torch.Tensor) -> dict[str, torch.Tensor]:
        outputs = self.backbone(pixels.flatten(0, 1))
        arrays = {}
        for name, value in outputs.items():
            value = value.unflatten(0, pixels.shape[:2])  # (n, 1 + V, ...)
            arrays.update({view_array(v, name): value[:, v] for v in range(self.views + 1)})
        return arrays


def view_batching(batch_size: int, backbone, augment: AugmentConfig) -> tuple[int, Callable]:
    """(frames per forward, forward): with views each frame is 1 + V images, so a forward still holds about
    `batch_size` images."""
    if not augment.views:
        return batch_size, backbone
    return max(1, batch_size // (1 + augment.views)), ViewForward(backbone, augment.views)
