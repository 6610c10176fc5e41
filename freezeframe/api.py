"""The library's entry points, one per stage: they own every default and every refusal, and the command line maps
its flags onto them and does nothing else (`freezeframe extract` is `extract_features`, `freezeframe train HEAD` is
`train_head`). Exported lazily from `freezeframe` so that `import freezeframe` stays light."""

from __future__ import annotations

import sys
from dataclasses import asdict
from typing import Any, Callable, Sequence

from freezeframe.errors import InputError


# ---- backbones ------------------------------------------------------------------------------------------------

def list_backbones() -> list[str]:
    """The registered backbone names (the values of `freezeframe extract --backbone`)."""
    from freezeframe.extract.backbones import backbone_names

    return backbone_names()


def create_backbone(name: str, device: str = "auto", **options: Any):
    """The frozen backbone `name` built from its options (config field names, e.g. model=, pretrained=, layers=);
    a backbone whose weights are a file must be given `pretrained` ("none": seeded random weights)."""
    from freezeframe.devices import resolve_device
    from freezeframe.extract.backbones import backbone_config, build_backbone

    return build_backbone(backbone_config(name, **options), device=resolve_device(device))


# ---- extraction -----------------------------------------------------------------------------------------------

SAMPLING_FIELDS = ("num_frames", "fps", "clips", "frames_per_clip", "stride", "window_frames", "window_stride",
                   "last_window")


def choose_sampling(backbone: str, **given: Any):
    """The SamplingConfig of the sampling fields given (None: not given): windows for a window backbone (its own
    defaults fill what is not given), else exactly one of num_frames (default 8), fps or clips."""
    from freezeframe.extract.backbones import get_entry, backbone_names
    from freezeframe.extract.sampling import SamplingConfig

    unknown = sorted(set(given) - set(SAMPLING_FIELDS))
    if unknown:
        raise InputError(f"unknown sampling field {unknown[0]!r}; choose from {', '.join(SAMPLING_FIELDS)}.")
    g = {key: given.get(key) for key in SAMPLING_FIELDS}
    windows = get_entry(backbone).windows
    if windows is not None:
        if g["num_frames"] is not None or g["clips"] is not None:
            raise InputError(f"--backbone {backbone} takes windows of frames: use --window-frames, "
                             "--window-stride and --fps, not --num-frames or --clips.")
        if g["last_window"] == "video-features" and g["fps"] is not None:
            raise InputError("--last-window video-features takes every decoded frame (the native rate); leave out "
                             "--fps.")
        frames = windows.frames if g["window_frames"] is None else g["window_frames"]
        stride = g["window_stride"] or (windows.stride if g["window_frames"] is None else frames)
        return SamplingConfig("windows", fps=windows.fps if g["fps"] is None else g["fps"], window_frames=frames,
                              window_stride=stride, last_window=g["last_window"] or "whole")
    if any(g[key] is not None for key in ("window_frames", "window_stride", "last_window")):
        windowed = ", ".join(name for name in backbone_names() if get_entry(name).windows)
        raise InputError("--window-frames, --window-stride and --last-window are for window backbones "
                         f"(--backbone {windowed}).")
    chosen = [f"--{key.replace('_', '-')}" for key in ("num_frames", "fps", "clips") if g[key] is not None]
    if len(chosen) > 1:
        raise InputError(f"choose one sampling strategy, not {' and '.join(chosen)}.")
    if g["fps"] is not None:
        return SamplingConfig("fps", fps=g["fps"])
    if g["clips"] is not None:
        clip = {key: g[key] for key in ("frames_per_clip", "stride") if g[key] is not None}
        return SamplingConfig("clips", clips=g["clips"], **clip)
    return SamplingConfig("num_frames", **({} if g["num_frames"] is None else {"num_frames": g["num_frames"]}))


def extract_features(inputs: Sequence[str], store: str, backbone: str = "clip", *,
                     backbone_options: dict | None = None, sampling: Any = None, engine: str = "local",
                     ray: Any = None, dry_run: bool = False, **settings: Any):
    """Extract the features of `inputs` (video files, folders, CSV/text lists) into `store`; returns the
    ExtractionReport (an ExtractionPlan with `dry_run`, which builds the backbone but decodes and writes nothing).

    `backbone_options` are the backbone's config fields (see `create_backbone`); `sampling` is a SamplingConfig or a
    dict of SAMPLING_FIELDS (None: the backbone's default); `settings` are ExtractConfig fields (batch_size,
    workers, device, format, ...); `engine="ray"` runs on a Ray cluster (`ray`: a RayConfig)."""
    from freezeframe.extract import ExtractConfig, collect_sources
    from freezeframe.extract.backbones import backbone_config
    from freezeframe.extract.runner import check_store
    from freezeframe.extract.sampling import SamplingConfig

    config_of_backbone = backbone_config(backbone, **(backbone_options or {}))
    if not isinstance(sampling, SamplingConfig):
        sampling = choose_sampling(backbone, **(sampling or {}))
    config = ExtractConfig(store=store, sampling=sampling, **settings)
    _check_engine(engine, config, ray, dry_run)
    sources = collect_sources(inputs)
    check_store(store)
    if dry_run:  # a dry run reports a provenance mismatch instead of refusing
        from freezeframe.extract.runner import check_inputs, plan_extraction

        check_inputs(sources)
        return plan_extraction(sources, create_backbone_from(config_of_backbone, config.device), config)
    check_store(store, _name_or_none(config, config_of_backbone), config)
    if engine == "ray":  # actors pick their device from the RayConfig's gpus_per_worker
        from freezeframe.extract.ray_engine import RayConfig, run_ray_extraction

        return run_ray_extraction(sources, config_of_backbone, config, ray or RayConfig())
    from freezeframe.extract.runner import run_extraction

    if config.progress:  # building a model and loading its weights can take a while: say what is happening
        model = getattr(config_of_backbone, "model", None)
        print(f"loading {model or type(config_of_backbone).__name__.removesuffix('Config')} ...", file=sys.stderr)
    return run_extraction(sources, create_backbone_from(config_of_backbone, config.device), config)


def create_backbone_from(config: Any, device: str = "auto"):
    """The backbone a config describes, on `device` ("auto": the accelerator if there is one)."""
    from freezeframe.devices import resolve_device
    from freezeframe.extract.backbones import build_backbone

    return build_backbone(config, device=resolve_device(device))


def _check_engine(engine: str, config: Any, ray: Any, dry_run: bool) -> None:
    if engine not in ("local", "ray"):
        raise InputError(f"unknown --engine {engine!r}; choose local or ray.")
    if engine != "ray" and ray is not None:
        raise InputError("--address, --gpus-per-worker and --ray-workers need --engine ray.")
    if engine == "ray" and config.device != "auto":
        raise InputError("--device is for --engine local; Ray actors use a GPU each when --gpus-per-worker is "
                         "above 0.")
    if engine == "ray" and dry_run:
        raise InputError("--dry-run plans a local run; drop --engine ray (the plan is the same).")


def _name_or_none(config: Any, backbone_config: Any) -> str | None:
    """The feature-set name, or None when deriving it needs what only the model build checks (e.g. weights)."""
    from freezeframe.errors import FreezeframeError

    try:
        return config.name or backbone_config.default_name()
    except FreezeframeError:
        return None


# ---- training -------------------------------------------------------------------------------------------------

def list_heads() -> list[str]:
    """The registered head names (the subcommands of `freezeframe train`)."""
    from freezeframe.heads.registry import head_names

    return head_names()


def option_groups(head: str) -> dict[str, list]:
    """The options `train_head(head, ...)` takes, by config: "data" (contrastive heads: VideoTextConfig),
    "train" (TrainConfig; a closed-form head takes only seed) and "head" (the head's own config)."""
    from freezeframe.heads.registry import get_head
    from freezeframe.options import options_of
    from freezeframe.train.loop import TrainConfig

    entry = get_head(head)
    groups: dict[str, list] = {}
    if entry.task == "contrastive":
        from freezeframe.train.videoclip import CONTRASTIVE_TRAINING, VideoTextConfig

        groups["data"] = options_of(VideoTextConfig)
        groups["train"] = options_of(TrainConfig, defaults=CONTRASTIVE_TRAINING)
    else:
        groups["train"] = options_of(TrainConfig)
    if entry.solve is not None:
        groups["train"] = [o for o in groups["train"] if o.field in SOLVER_TRAIN_OPTIONS]
    groups["head"] = entry.options()
    return groups


# a closed-form head (the probe) is not trained by steps: of the training options it takes only these
SOLVER_TRAIN_OPTIONS = ("seed",)


def train_head(head: str, store: str, feature_set: str, *, out: str, labels: str | None = None,
               captions: str | None = None, val: str | None = None, frames: str | None = None,
               eval_frames: str | None = None, preload: bool | None = None, resume: bool = False,
               overwrite: bool = False, progress: bool = True, log: Callable[[str], None] = print,
               **options: Any) -> dict:
    """Train head `head` on feature set `feature_set` of `store` into run directory `out`; returns the final metrics.

    Classification heads take `labels` (CSV video_id,label), contrastive heads `captions`; `options` are the
    fields of `option_groups(head)` (training, e.g. epochs= or lr=; the head's own; contrastive data). Contrastive
    runs start from CONTRASTIVE_TRAINING, and `towers="bert"` from the published towers' optimiser recipe."""
    from freezeframe.extras import require
    from freezeframe.heads.registry import get_head
    from freezeframe.train.loop import TrainConfig

    entry = get_head(head)
    values = _split_options(head, options)
    require("matplotlib", "training (curves.png)")  # before the run directory is made
    if values["train"].get("epochs") is not None and values["train"].get("steps") is not None:
        raise InputError("pass either --epochs or --steps, not both.")
    common = dict(resume=resume, overwrite=overwrite, log=log)
    if entry.task == "contrastive":
        from freezeframe.train.videoclip import CONTRASTIVE_TRAINING, TOWER_TRAINING, VideoTextConfig, \
            train_videoclip_run

        _refuse_unused(head, labels=labels, frames=frames, eval_frames=eval_frames, preload=preload)
        if captions is None:
            raise InputError(f"head {head} trains on captions: pass captions (--captions).")
        recipe = TOWER_TRAINING.get(values["head"].get("towers"), {})  # the published towers' optimiser
        config = TrainConfig(**{**asdict(CONTRASTIVE_TRAINING), **recipe, **values["train"], "progress": progress})
        return train_videoclip_run(store, feature_set, captions, out, VideoTextConfig(**values.get("data", {})),
                                   head=head, val_captions=val, head_options=values["head"], config=config, **common)
    from freezeframe.train.jobs import train_run

    _refuse_unused(head, captions=captions)
    if labels is None:
        raise InputError(f"head {head} trains on labels: pass labels (--labels, a CSV video_id,label).")
    config = TrainConfig(**values["train"], progress=progress)
    return train_run(head, store, feature_set, labels, out, val_labels=val, train_frames=frames,
                     eval_frames=eval_frames, head_options=values["head"], config=config, preload=preload, **common)


def _split_options(head: str, options: dict) -> dict[str, dict]:
    """{group: {field: value}} of the options given; a field no group of this head has is refused."""
    groups = option_groups(head)
    values: dict[str, dict] = {group: {} for group in groups}
    owner = {o.field: group for group, group_options in groups.items() for o in group_options}
    for field_name, value in options.items():
        if field_name not in owner:
            raise InputError(f"head {head} takes no option {field_name!r}; its options are {', '.join(owner)}.")
        values[owner[field_name]][field_name] = value
    return values


def _refuse_unused(head: str, **given: Any) -> None:
    for name, value in given.items():
        if value is not None:
            raise InputError(f"head {head} takes no {name} (--{name.replace('_', '-')}).")
