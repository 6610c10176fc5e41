"""`freezeframe extract-text`: caption features (BERT token states or CLIP text embeddings) into a store."""

from __future__ import annotations

import click

from freezeframe.cli.group import int_list, main, refuse_ignored


@main.command("extract-text")
@click.argument("captions", type=click.Path(exists=True, dir_okay=False))
@click.option("--store", required=True, help="Store directory or fsspec URL (created if missing).")
@click.option("--backbone", type=click.Choice(["bert", "clip-text"]), default="bert", show_default=True)
@click.option("--model", required=True,
              help="bert: a transformers model directory (or a name in the local cache); clip-text: an open_clip "
                   "model name or model-config JSON.")
@click.option("--pretrained", default="openai", show_default=True,
              help="clip-text: open_clip pretrained tag, a local checkpoint path, or none for random weights (the "
                   "default is extract's, so captions and frames come from the same model unless told otherwise).")
@click.option("--layers", default="-1", show_default=True,
              help="bert: hidden-state indices to store as tokens/<index> (0 = embeddings, -1 = last layer).")
@click.option("--max-length", type=int, default=64, show_default=True, help="bert: tokens per caption at most.")
@click.option("--name", default=None, help="Feature-set name [default: derived from backbone and model].")
@click.option("--batch-size", type=int, default=64, show_default=True)
@click.option("--device", default="auto", show_default=True)
@click.option("--trust-checkpoint", is_flag=True, help="Allow a --pretrained file that is a full pickle (runs code).")
@click.option("--no-progress", is_flag=True)
def extract_text_command(captions, store, backbone, model, pretrained, layers, max_length, name, batch_size, device,
                         trust_checkpoint, no_progress) -> None:
    """Encode the captions of CAPTIONS (.jsonl or .csv) with a frozen text encoder; one row set per caption id."""
    bert = backbone == "bert"
    refuse_ignored({"layers": ("--layers is for --backbone bert (clip-text stores one embedding)", bert),
                    "max_length": ("--max-length is for --backbone bert", bert),
                    "pretrained": ("--pretrained is for --backbone clip-text (bert loads --model)", not bert)})
    from freezeframe.devices import resolve_device
    from freezeframe.errors import InputError
    from freezeframe.options import FieldError
    from freezeframe.text import read_captions
    from freezeframe.text.encoders import TextConfig
    from freezeframe.text.extract import extract_text

    try:
        config = TextConfig(backbone=backbone, model=model, pretrained=pretrained if not bert else "none",
                            layers=int_list(layers),
                            max_length=max_length, trust_checkpoint=trust_checkpoint)
    except FieldError as exc:  # the config names its field, which is the option's name here
        raise InputError(f"--{exc.field.replace('_', '-')} {exc.problem}") from None
    try:
        report = extract_text(read_captions(captions), store, config, name=name, batch_size=batch_size,
                              device=resolve_device(device), progress=not no_progress)
    except KeyboardInterrupt:
        import sys

        click.echo("\ninterrupted: the shards of captions committed so far are kept, the one in flight was "
                   "discarded. Run the same command again to resume: committed captions are skipped.", err=True)
        sys.exit(130)
    changed = f" ({report.changed} of them re-encoded: their text changed)" if report.changed else ""
    from freezeframe.summary import plural

    click.echo(f"{report.feature_set}: stored {plural(report.stored, 'caption')}{changed} in {report.seconds:.1f}s; "
               f"{report.skipped} already committed; store {report.store}")


@main.command()
@click.option("--store", required=True)
@click.option("--set", "feature_set", required=True, help="Video feature set with per-frame CLIP `embed`.")
@click.option("--classes", required=True, type=click.Path(exists=True, dir_okay=False),
              help="One class a line (its name is its prompt), a CSV label,prompt (a row per prompt), or a JSON "
                   "object {label: prompt or [prompts]}.")
@click.option("--labels", required=True, type=click.Path(exists=True, dir_okay=False), help="CSV video_id,label.")
@click.option("--templates", default=None,
              help="imagenet (open_clip's 80 ImageNet templates), imagenet-simple (its 7), or a file of templates one "
                   "a line with {} for the prompt [default: 'a video of {}.', 'a photo of {}.'].")
@click.option("--model", default=None, help="open_clip model for the prompts [default: the set's own].")
@click.option("--pretrained", default=None, help="Its weights [default: the set's own].")
@click.option("--trust-checkpoint", is_flag=True, help="Allow a --pretrained file that is a full pickle (runs code).")
@click.option("--allow-provenance-mismatch", is_flag=True,
              help="Use a --model/--pretrained other than the one that made the set's image embeddings.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object (top1, top5, num_videos, per_class).")
@click.option("--predictions", type=click.Path(dir_okay=False), default=None,
              help="Write per-video label, prediction, score and class probabilities (CSV; JSON lines for .jsonl).")
def zeroshot(store, feature_set, classes, labels, templates, model, pretrained, trust_checkpoint,
             allow_provenance_mismatch, as_json, predictions) -> None:
    """Zero-shot classification: mean frame CLIP embeddings against class prompt embeddings."""
    import json

    from freezeframe.text.zeroshot import read_classes, resolve_templates
    from freezeframe.train.zeroshot import run_zeroshot

    result = run_zeroshot(store, feature_set, read_classes(classes), labels, templates=resolve_templates(templates),
                          model=model, pretrained=pretrained, trust_checkpoint=trust_checkpoint,
                          allow_provenance_mismatch=allow_provenance_mismatch, predictions=predictions)
    if as_json:
        click.echo(json.dumps(result))
    else:
        top5 = f"  top-5 {100 * result['top5']:.1f}%" if "top5" in result else ""
        click.echo(f"zero-shot on {result['num_videos']} videos, {result['num_classes']} classes: "
                   f"top-1 {100 * result['top1']:.1f}%{top5}")
