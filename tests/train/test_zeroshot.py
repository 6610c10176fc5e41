"""Zero-shot classification on a task whose classes are encoded by the prompt embeddings themselves."""

from __future__ import annotations

import json

import numpy as np
import open_clip
import pytest
import torch
import torch.nn.functional as F

from freezeframe.extract.backbones.clip import resolve_model_name
from freezeframe.store import FeatureSetWriter

CLASSES = ["archery", "juggling", "surfing", "knitting", "skiing", "rowing"]
VIDEOS_PER_CLASS = 4


@pytest.fixture(scope="module")
def task(tmp_path_factory, tiny_model_name):
    """A real store whose frame `embed`s are noisy copies of each class's prompt embedding (tiny CLIP, saved)."""
    root = tmp_path_factory.mktemp("zeroshot")
    name = resolve_model_name(tiny_model_name)
    torch.manual_seed(11)
    model = open_clip.create_model(name, pretrained=None).eval()
    checkpoint = root / "tiny.pt"
    torch.save(model.state_dict(), checkpoint)
    tokenizer = open_clip.get_tokenizer(name)
    templates = ["a video of {}.", "a photo of {}."]
    with torch.no_grad():
        per_class = torch.stack([F.normalize(model.encode_text(tokenizer([t.format(c) for t in templates])), dim=-1)
                                 .mean(0) for c in CLASSES])
    rng = np.random.default_rng(0)
    writer = FeatureSetWriter(root / "store", "clip", {"backbone": {"library": "open_clip", "model": name,
                                                                    "pretrained": str(checkpoint)}})
    shard = writer.new_shard()
    labels = ["video_id,label"]
    for c, class_name in enumerate(CLASSES):
        for k in range(VIDEOS_PER_CLASS):
            video_id = f"{class_name}-{k}"
            # noise of 2% of the norm per dimension (at 50% the classes blur: top-1 0.83)
            frames = per_class[c].numpy()[None] + 0.02 * per_class[c].norm().item() * rng.standard_normal((8, 32))
            shard.append(video_id, {"embed": frames.astype(np.float16)})
            shard.end_video(video_id)
            labels.append(f"{video_id},{class_name}")
    shard.commit()
    writer.write_index()
    (root / "classes.txt").write_text("\n".join(CLASSES) + "\n")
    (root / "labels.csv").write_text("\n".join(labels) + "\n")
    shuffled = [labels[0]] + [f"{row.split(',')[0]},{CLASSES[(i * 5 + 1) % len(CLASSES)]}"
                              for i, row in enumerate(labels[1:])]
    (root / "shuffled.csv").write_text("\n".join(shuffled) + "\n")
    return root


def test_zeroshot_ranks_the_right_class_first(task, run_cli):
    result = run_cli("zeroshot", "--store", task / "store", "--set", "clip", "--classes", task / "classes.txt",
                     "--labels", task / "labels.csv", "--json")
    assert result.exit_code == 0, result.output
    metrics = json.loads(result.output)
    assert metrics["top1"] == 1.0 and metrics["top5"] == 1.0
    assert metrics["num_videos"] == len(CLASSES) * VIDEOS_PER_CLASS and metrics["num_classes"] == len(CLASSES)
    assert metrics["per_class"] == {c: 1.0 for c in CLASSES}


def test_shuffled_labels_score_near_chance(task, run_cli):
    result = run_cli("zeroshot", "--store", task / "store", "--set", "clip", "--classes", task / "classes.txt",
                     "--labels", task / "shuffled.csv", "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["top1"] <= 0.25


def test_other_templates_change_the_prompts(task, run_cli, tmp_path):
    templates = tmp_path / "templates.txt"
    templates.write_text("{}\n")
    result = run_cli("zeroshot", "--store", task / "store", "--set", "clip", "--classes", task / "classes.txt",
                     "--labels", task / "labels.csv", "--templates", templates, "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["top1"] < 1.0  # embeds were built from the default templates' prompts


@pytest.mark.parametrize("change, message", [
    ({"--set": "nope"}, "has no feature set 'nope'"),
    ({"--classes": "empty"}, "classes file"),
    ({"--labels": "unknown"}, "are not in the classes file"),
])
def test_clear_errors(task, run_cli, tmp_path, change, message):
    (tmp_path / "empty").write_text("\n")
    (tmp_path / "unknown").write_text("video_id,label\narchery-0,fencing\n")
    args = {"--store": task / "store", "--set": "clip", "--classes": task / "classes.txt", "--labels": task / "labels.csv"}
    args.update({k: (tmp_path / v if k != "--set" else v) for k, v in change.items()})
    result = run_cli("zeroshot", *[x for kv in args.items() for x in kv])
    assert result.exit_code == 2, result.output
    assert result.output.startswith("error: ") and message in result.output


def test_prompts_from_another_model_are_refused(task, run_cli, tmp_path, tiny_model_name):
    """Before: any --pretrained was used silently, scoring image embeddings against another model's prompts."""
    other = tmp_path / "other.pt"
    torch.manual_seed(12)
    torch.save(open_clip.create_model(resolve_model_name(tiny_model_name), pretrained=None).state_dict(), other)
    args = ["zeroshot", "--store", task / "store", "--set", "clip", "--classes", task / "classes.txt",
            "--labels", task / "labels.csv", "--json"]
    refused = run_cli(*args, "--pretrained", other)
    assert refused.exit_code == 2 and refused.output.count("\n") == 1
    assert "differs in: pretrained" in refused.output and "--allow-provenance-mismatch" in refused.output
    same = run_cli(*args, "--pretrained", task / "tiny.pt")
    assert same.exit_code == 0 and json.loads(same.output)["top1"] == 1.0
    allowed = run_cli(*args, "--pretrained", other, "--allow-provenance-mismatch")
    assert allowed.exit_code == 0, allowed.output
    assert json.loads(allowed.output)["top1"] < 1.0  # the other model's prompts do not match these embeddings


def test_the_class_embeddings_are_open_clips_zero_shot_classifier(task, tiny_model_name):
    """The classifier is the mean of each class's normalised prompt embeddings, normalised: what open_clip's
    `build_zero_shot_classifier` computes, here against the model's own `encode_text` on the same prompts."""
    from freezeframe.heads.zeroshot import ZeroShotClassifier
    from freezeframe.text.encoders import ClipTextEncoder, TextConfig
    from freezeframe.text.zeroshot import DEFAULT_TEMPLATES, class_embeddings

    encoder = ClipTextEncoder(TextConfig(backbone="clip-text", model=tiny_model_name, pretrained=str(task / "tiny.pt")),
                              torch.device("cpu"))
    head = ZeroShotClassifier(class_embeddings(encoder, CLASSES, DEFAULT_TEMPLATES))
    tokenizer = open_clip.get_tokenizer(resolve_model_name(tiny_model_name))
    with torch.no_grad():
        prompts = [tokenizer([template.format(c) for template in DEFAULT_TEMPLATES]) for c in CLASSES]
        expected = torch.stack([F.normalize(encoder.model.encode_text(p), dim=-1).mean(0) for p in prompts])
    torch.testing.assert_close(head.classes, F.normalize(expected, dim=-1), rtol=0, atol=1e-6)


def test_a_classes_file_maps_labels_to_prompts(task, run_cli, tmp_path):
    """Labels need not be prompt text: `arch_ery` is scored by the prompt `archery` (a JSON or CSV classes file)."""
    labels = tmp_path / "labels.csv"
    labels.write_text((task / "labels.csv").read_text().replace(",archery", ",arch_ery").replace(",juggling", ",jug"))
    mapping = {"arch_ery": ["archery"], "jug": "juggling", **{c: [c] for c in CLASSES[2:]}}
    (tmp_path / "classes.json").write_text(json.dumps(mapping))
    (tmp_path / "classes.csv").write_text("label,prompt\n" + "".join(f"{k},{v if isinstance(v, str) else v[0]}\n"
                                                                    for k, v in mapping.items()))
    for classes in ("classes.json", "classes.csv"):
        result = run_cli("zeroshot", "--store", task / "store", "--set", "clip", "--classes", tmp_path / classes,
                         "--labels", labels, "--json")
        assert result.exit_code == 0, result.output
        metrics = json.loads(result.output)
        assert metrics["top1"] == 1.0 and set(metrics["per_class"]) == set(mapping)
    (tmp_path / "bad.json").write_text(json.dumps({"jug": []}))
    result = run_cli("zeroshot", "--store", task / "store", "--set", "clip", "--classes", tmp_path / "bad.json",
                     "--labels", labels)
    assert result.exit_code == 2 and "class 'jug' needs one or more non-empty prompt strings" in result.output


def test_several_prompts_and_imagenet_templates_average_every_text(task, tiny_model_name):
    """A class with prompts [a, b] under templates T: the normalised mean of the normalised embeddings of every
    t(p), computed here with the model's own `encode_text`; open_clip's ImageNet templates are callables."""
    from open_clip.zero_shot_metadata import SIMPLE_IMAGENET_TEMPLATES

    from freezeframe.text.encoders import ClipTextEncoder, TextConfig
    from freezeframe.text.zeroshot import class_embeddings, resolve_templates

    encoder = ClipTextEncoder(TextConfig(backbone="clip-text", model=tiny_model_name, pretrained=str(task / "tiny.pt")),
                              torch.device("cpu"))
    classes = {"water": ["surfing", "rowing", "a boat"], "snow": ["skiing"]}
    templates = resolve_templates("imagenet-simple")
    assert len(templates) == 7 and len(resolve_templates("imagenet")) == 80
    got = class_embeddings(encoder, classes, templates)
    tokenizer = open_clip.get_tokenizer(resolve_model_name(tiny_model_name))
    with torch.no_grad():
        expected = torch.stack([F.normalize(F.normalize(encoder.model.encode_text(
            tokenizer([t(p) for p in prompts for t in SIMPLE_IMAGENET_TEMPLATES])), dim=-1).mean(0), dim=0)
            for prompts in classes.values()])
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-6)
    assert not torch.allclose(got[0], class_embeddings(encoder, {"water": ["surfing"]}, templates)[0], atol=1e-3)


def test_zeroshot_writes_predictions(task, run_cli, tmp_path):
    out = tmp_path / "predictions.csv"
    result = run_cli("zeroshot", "--store", task / "store", "--set", "clip", "--classes", task / "classes.txt",
                     "--labels", task / "shuffled.csv", "--predictions", out, "--json")
    assert result.exit_code == 0, result.output
    import csv

    rows = list(csv.DictReader(out.open()))
    truth = dict(line.split(",") for line in (task / "labels.csv").read_text().splitlines()[1:])
    shuffled = dict(line.split(",") for line in (task / "shuffled.csv").read_text().splitlines()[1:])
    assert [r["video_id"] for r in rows] == list(shuffled)
    for row in rows:  # the embeddings are their true class's prompts: each prediction is the true class
        assert row["label"] == shuffled[row["video_id"]] and row["prediction"] == truth[row["video_id"]]
        probs = [float(row[f"p:{c}"]) for c in CLASSES]
        assert abs(sum(probs) - 1) < 1e-5 and float(row["score"]) == max(probs)
    assert json.loads(result.output)["top1"] == pytest.approx(sum(r["label"] == r["prediction"] for r in rows) / len(rows))
