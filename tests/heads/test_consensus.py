"""Frame selections the papers use (dense-random, ClipBERT clips) and clip consensus over per-clip logits."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from freezeframe.errors import InputError
from freezeframe.train.consensus import attach_consensus, consensus
from freezeframe.heads.temporal import TemporalConfig, TemporalTransformer
from freezeframe.train.datasets import FrameSelection


def test_dense_random_clip_is_strided_and_random_start():
    selection = FrameSelection.parse("dense-random:8:16")
    assert str(selection) == "dense-random:8:16" and selection.random
    starts = set()
    for seed in range(50):
        rows = selection.rows(300, np.random.default_rng(seed))
        assert np.all(np.diff(rows) == 16) and rows[-1] < 300
        starts.add(int(rows[0]))
    assert len(starts) > 20 and max(starts) <= 300 - 113
    assert selection.rows(300).tolist() == [93 + 16 * i for i in range(8)]  # no rng: centred, (300-113)//2
    centred = FrameSelection.parse("dense:8:16")
    assert not centred.random and centred.rows(300, np.random.default_rng(0)).tolist() == selection.rows(300).tolist()
    assert selection.rows(50).tolist() == [0, 16, 32, 48, 49, 49, 49, 49]  # short video: the last row repeats


def test_clips_come_one_per_segment():
    selection = FrameSelection.parse("clips-random:4:2:lse")
    assert str(selection) == "clips-random:4:2:lse" and selection.random
    assert (selection.num_clips, selection.num_frames, selection.consensus) == (4, 2, "lse")
    assert FrameSelection.parse("clips:4:2").rows(40, np.random.default_rng(0)).tolist() == \
        [4, 5, 14, 15, 24, 25, 34, 35]  # centred in segments of 10 rows
    rows = selection.rows(40, np.random.default_rng(0)).reshape(4, 2)
    assert all(10 * i <= r[0] and r[1] < 10 * (i + 1) and r[1] == r[0] + 1 for i, r in enumerate(rows))
    with pytest.raises(InputError, match="consensus"):
        FrameSelection.parse("clips:4:2:median")
    with pytest.raises(InputError, match="cannot read frame selection"):
        FrameSelection.parse("clips:4")


def test_consensus_equals_a_hand_computation():
    logits = torch.tensor([[[1.0, 2.0], [3.0, 0.0], [-1.0, 1.0]]])  # (1 video, 3 clips, 2 classes)
    torch.testing.assert_close(consensus(logits, "mean"), torch.tensor([[1.0, 1.0]]))
    torch.testing.assert_close(consensus(logits, "max"), torch.tensor([[3.0, 2.0]]))
    lse = [math.log(math.exp(1) + math.exp(3) + math.exp(-1)), math.log(math.exp(2) + 1 + math.exp(1))]
    torch.testing.assert_close(consensus(logits, "lse"), torch.tensor([lse]))
    torch.manual_seed(0)
    head = TemporalTransformer(TemporalConfig(num_classes=5, input_dim=8, max_frames=4, depth=1)).eval()
    clips = torch.randn(2, 3, 4, 8)  # (videos, clips, frames, dim)
    with torch.no_grad():
        per_clip = torch.stack([head({"embed": clips[:, i]}) for i in range(3)], dim=1)  # (2, 3, 5) by hand
        attach_consensus(head, FrameSelection.parse("clips-random:3:4:lse"))
        combined = head({"embed": clips})
    torch.testing.assert_close(combined, torch.logsumexp(per_clip, dim=1))
    assert set(head.state_dict()) == set(TemporalTransformer(head.config).state_dict())  # checkpoints unchanged
