"""`freezeframe zeroshot`: class prompts through the CLIP text tower that made a video set, then a zero-shot head
scored on labelled videos."""

from __future__ import annotations

from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
import torch

from freezeframe.errors import InputError
from freezeframe.heads.zeroshot import ZeroShotClassifier
from freezeframe.store.provenance import file_sha256
from freezeframe.store.store import open_feature_set
from freezeframe.text.encoders import ClipTextEncoder, TextConfig
from freezeframe.text.zeroshot import DEFAULT_TEMPLATES, check_classes, class_embeddings
from freezeframe.train.evaluation import topk_accuracy
from freezeframe.train.predictions import write_predictions
from freezeframe.userfiles import read_labels

REMOTE_PREFIXES = ("hf-hub:", "local-dir:")


def check_local_model(name: object, what: str, feature_set: str) -> None:
    """A model name taken from a store's provenance may only name something local: a store never makes this
    run fetch a model (an `hf-hub:` name would contact the hub) or read a folder it names (`local-dir:`)."""
    if isinstance(name, str) and name.startswith(REMOTE_PREFIXES):
        raise InputError(f"feature set {feature_set!r} names the {what} {name!r} in its provenance; models named "
                         f"by a store are not fetched or opened from where it says, so pass --{what} yourself "
                         "(the same name, if you trust it).")


def prompt_tower_differences(backbone: dict, model: str | None, pretrained: str | None) -> list[str]:
    """Which of a given --model/--pretrained differ from the image tower the set's provenance records (a weights file
    is compared by its sha256 when the provenance has one, else by its resolved path)."""
    differing = []
    if model and backbone.get("model") and model != backbone["model"]:
        differing.append("model")
    if pretrained and backbone.get("pretrained"):
        path = Path(pretrained)
        if path.is_file() and backbone.get("checkpoint_sha256"):
            same = file_sha256(path) == backbone["checkpoint_sha256"]
        elif path.is_file():
            same = str(path.resolve()) == str(backbone["pretrained"])
        else:
            same = pretrained == backbone["pretrained"]
        if not same:
            differing.append("pretrained")
    return differing


def prompt_tower(fs, model: str | None, pretrained: str | None, allow_provenance_mismatch: bool) -> tuple[str, str]:
    """The open_clip model and weights whose text tower encodes the prompts: the set's own unless given; given ones
    must name that same model unless `allow_provenance_mismatch`."""
    feature_set = fs.name
    backbone = fs.provenance.get("backbone", {})
    if not isinstance(backbone, dict):
        raise InputError(f"feature set {feature_set!r} has a malformed provenance (backbone is not an object).")
    if not model:
        check_local_model(backbone.get("model"), "model", feature_set)
    if not pretrained:
        check_local_model(backbone.get("pretrained"), "pretrained", feature_set)
    differing = prompt_tower_differences(backbone, model, pretrained)
    if differing and not allow_provenance_mismatch:
        raise InputError(f"feature set {feature_set!r} was made by model {backbone.get('model')!r} with weights "
                         f"{backbone.get('pretrained')!r}; the prompts would come from another one (differs in: "
                         f"{', '.join(differing)}); pass --allow-provenance-mismatch to use it anyway.")
    model = model or backbone.get("model")
    pretrained = pretrained or backbone.get("pretrained")
    if not isinstance(model, str) or not isinstance(pretrained, str) or not model or not pretrained:
        raise InputError(f"feature set {feature_set!r} was not made by an open_clip model; pass --model and "
                         "--pretrained for the text tower.")
    return model, pretrained


def labelled_videos(fs, labels_path: str | Path, labels: list[str]) -> list[tuple[str, str]]:
    """(video_id, label) of a label file whose labels are all classes and whose videos are all in the set."""
    labelled = read_labels(labels_path)
    unknown = sorted({label for _, label in labelled} - set(labels))
    if unknown:
        raise InputError(f"labels {', '.join(map(repr, unknown[:3]))} of {labels_path} are not in the classes file.")
    missing = [video_id for video_id, _ in labelled if video_id not in fs]
    if missing:
        raise InputError(f"{len(missing)} labelled videos are not in feature set {fs.name!r} "
                         f"(e.g. {missing[0]!r}).")
    return labelled


def run_zeroshot(store: str | Path, feature_set: str, classes: Sequence[str] | Mapping[str, Sequence[str]],
                 labels_path: str | Path, *, templates: str | Path | Sequence = DEFAULT_TEMPLATES,
                 model: str | None = None, pretrained: str | None = None, trust_checkpoint: bool = False,
                 allow_provenance_mismatch: bool = False, predictions: str | Path | None = None) -> dict:
    """Top-1/top-5 and per-class accuracy of zero-shot classification of the labelled videos of `feature_set`.

    `classes` are names (each its own prompt) or a mapping label -> prompts; `templates` are template strings, a
    templates file or open_clip's `imagenet`/`imagenet-simple` sets (see `text.zeroshot`). The text tower is the
    set's own CLIP model unless `model`/`pretrained` are given (`prompt_tower`). `predictions` writes per-video
    label, prediction, score and class probabilities (CSV, or JSON lines for a .jsonl name).
    """
    fs = open_feature_set(store, feature_set)
    if "embed" not in fs.arrays():
        raise InputError(f"feature set {feature_set!r} has no `embed` array; extract with --features embed.")
    model, pretrained = prompt_tower(fs, model, pretrained, allow_provenance_mismatch)
    classes = check_classes(classes)
    names = list(classes)
    labelled = labelled_videos(fs, labels_path, names)
    encoder = ClipTextEncoder(TextConfig(backbone="clip-text", model=model, pretrained=pretrained,
                                         seed=fs.provenance["backbone"].get("seed", 0),
                                         trust_checkpoint=trust_checkpoint), torch.device("cpu"))
    head = ZeroShotClassifier(class_embeddings(encoder, classes, templates))
    target = torch.tensor([names.index(label) for _, label in labelled])
    with torch.no_grad():
        logits = torch.cat([head(torch.from_numpy(fs.read(video_id, "embed").astype(np.float32))[None])
                            for video_id, _ in labelled])
    top1 = logits.argmax(dim=1) == target
    result = {"top1": topk_accuracy(logits, target, 1), "num_videos": len(labelled), "num_classes": len(names),
              "per_class": {name: float(top1[target == i].float().mean()) for i, name in enumerate(names)
                            if (target == i).any()}}
    if len(names) > 5:
        result["top5"] = topk_accuracy(logits, target, 5)
    if predictions is not None:
        write_predictions(predictions, [v for v, _ in labelled], logits.float().softmax(dim=1), target.tolist(), names)
    return result
