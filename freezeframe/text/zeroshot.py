"""Zero-shot class embeddings: class prompts through a CLIP text tower (the job is `train.zeroshot`).

A class is a label and one or more prompts (names or descriptions); each prompt is put in every template, and
the class embedding is the normalised mean of all its L2-normalised prompt embeddings, as open_clip's
`build_zero_shot_classifier` computes it for one name per class.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Callable, Mapping, Sequence

import torch

from freezeframe.errors import InputError
from freezeframe.text.encoders import ClipTextEncoder
from freezeframe.userfiles import csv_header, csv_rows, read_user_text

DEFAULT_TEMPLATES = ("a video of {}.", "a photo of {}.")
TEMPLATE_SETS = ("imagenet", "imagenet-simple")  # open_clip's 80 OpenAI ImageNet templates, or its 7 simple ones


def read_lines(path: str | Path, what: str) -> list[str]:
    """Non-empty stripped lines of a small text file (classes, templates), read with the list-file size limit."""
    lines = [line.strip() for line in read_user_text(path, f"a {what} file").splitlines() if line.strip()]
    if not lines:
        raise InputError(f"{what} file {path} is empty.")
    return lines


def read_classes(path: str | Path) -> dict[str, list[str]]:
    """label -> prompts from a classes file: one class a line (its own prompt), a CSV `label,prompt` (a row per
    prompt), or a JSON object {label: prompt or [prompts]}. Labels are what label files name."""
    path = Path(path)
    if path.suffix.lower() == ".json":
        try:
            found = json.loads(read_user_text(path, "a classes file"))
        except json.JSONDecodeError as exc:
            raise InputError(f"{path}:{exc.lineno}: not JSON ({exc.msg}).") from None
        if not isinstance(found, dict) or not found:
            raise InputError(f"{path} must hold a JSON object mapping each label to a prompt or a list of prompts.")
        classes = {label: [prompts] if isinstance(prompts, str) else prompts for label, prompts in found.items()}
    elif path.suffix.lower() == ".csv":
        text = read_user_text(path, "a classes file")
        if not {"label", "prompt"} <= set(csv_header(text, path)):
            raise InputError(f"{path}: a classes CSV needs the columns label,prompt.")
        classes = {}
        for line, row in csv_rows(text, path):
            if not row.get("label", "").strip() or not row.get("prompt", "").strip():
                raise InputError(f"{path}:{line}: a row needs both a label and a prompt.")
            classes.setdefault(row["label"].strip(), []).append(row["prompt"].strip())
    else:
        lines = read_lines(path, "classes")
        if len(set(lines)) != len(lines):
            raise InputError("the classes file lists a class twice.")
        classes = {line: [line] for line in lines}
    return check_classes(classes, str(path))


def check_classes(classes: Mapping[str, Sequence[str]] | Sequence[str], where: str = "classes") -> dict[str, list[str]]:
    """label -> non-empty list of prompt strings; a plain list of names is each its own prompt."""
    if isinstance(classes, str):
        raise InputError(f"{where}: classes must be a list of names or a mapping label -> prompts, not one string.")
    if not isinstance(classes, Mapping):
        names = list(classes)
        if len(set(names)) != len(names):
            raise InputError("the classes file lists a class twice.")
        classes = {name: [name] for name in names}
    for label, prompts in classes.items():
        if not isinstance(label, str) or not label or isinstance(prompts, str) or not isinstance(prompts, Sequence) \
                or not prompts or not all(isinstance(p, str) and p.strip() for p in prompts):
            raise InputError(f"{where}: class {label!r} needs one or more non-empty prompt strings.")
    if not classes:
        raise InputError(f"{where} lists no classes.")
    return {label: list(prompts) for label, prompts in classes.items()}


def resolve_templates(value: str | Path | Sequence[str] | None) -> tuple:
    """Prompt templates: the defaults (None), open_clip's `imagenet` or `imagenet-simple` sets, a file of
    templates one a line with {} for the prompt, or the templates themselves."""
    if value is None:
        return DEFAULT_TEMPLATES
    if isinstance(value, (str, Path)):
        if str(value) in TEMPLATE_SETS:
            from open_clip.zero_shot_metadata import OPENAI_IMAGENET_TEMPLATES, SIMPLE_IMAGENET_TEMPLATES

            return tuple(OPENAI_IMAGENET_TEMPLATES if str(value) == "imagenet" else SIMPLE_IMAGENET_TEMPLATES)
        value = read_lines(value, "templates")
    for template in value:
        if not callable(template) and "{}" not in template:
            raise InputError(f"template {template!r} has no {{}} for the class prompt.")
    return tuple(value)


def _fill(template: str | Callable[[str], str], prompt: str) -> str:
    return template(prompt) if callable(template) else template.format(prompt)


def class_embeddings(encoder: ClipTextEncoder, classes: Mapping[str, Sequence[str]] | Sequence[str],
                     templates: Sequence = DEFAULT_TEMPLATES) -> torch.Tensor:
    """(classes, dim): per class, the normalised mean of the L2-normalised embeddings of each of its prompts in
    each template, computed by open_clip's `build_zero_shot_classifier`."""
    from open_clip import build_zero_shot_classifier

    classes = check_classes(classes)
    templates = resolve_templates(templates)
    columns = []
    for label, prompts in classes.items():
        texts = [_fill(template, prompt) for prompt in prompts for template in templates]
        fixed = [lambda _, text=text: text for text in texts]  # one "template" per text: one class, all its texts
        columns.append(build_zero_shot_classifier(encoder.model, encoder.tokenizer, [label], fixed,
                                                  num_classes_per_batch=None, device=encoder.device))
    return torch.cat(columns, dim=1).T.float().cpu()
