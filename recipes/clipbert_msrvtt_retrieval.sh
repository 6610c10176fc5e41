#!/usr/bin/env bash
# ClipBERT-style MSR-VTT text->video retrieval on the 1k-A test split (Lei et al., "Less is More: ClipBERT for
# Video-and-Language Learning via Sparse Sampling", CVPR 2021). Published: R@1 22.0, R@5 46.8, R@10 59.9.
#
# ClipBERT fine-tunes its image backbone end to end on sparsely sampled short clips; here CLIP frames are
# cached once (2 fps) and the towers train on them, averaged to one row per second. Clip-level consensus
# (`clips:N:T:mean|lse|max`) is implemented for the classifier heads; retrieval scores whole windows.
set -euo pipefail
MSRVTT=${MSRVTT:-/data/msrvtt}            # videos/, train_9k.jsonl, test_1k.jsonl (video_id, caption_id, text)
BERT=${BERT:-/models/bert-base-uncased}
CKPT=${CKPT:-/models/ViT-B-16-openai.pt}
STORE=${STORE:-store-msrvtt}

freezeframe extract "$MSRVTT/videos" --store "$STORE" --name clip --model ViT-B-16 --pretrained "$CKPT" --fps 2
freezeframe extract-text "$MSRVTT/train_9k.jsonl" --store "$STORE" --name bert --model "$BERT" --max-length 32
freezeframe extract-text "$MSRVTT/test_1k.jsonl" --store "$STORE" --name bert --model "$BERT" --max-length 32
freezeframe train videoclip --store "$STORE" --set clip --text-set bert --captions "$MSRVTT/train_9k.jsonl" \
    --out runs/msrvtt --loss alpro --towers bert --bert "$BERT" --epochs 20
freezeframe eval runs/msrvtt --captions "$MSRVTT/test_1k.jsonl" --json
