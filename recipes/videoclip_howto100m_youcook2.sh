#!/usr/bin/env bash
# VideoCLIP pre-trained on HowTo100M, zero-shot text->video retrieval on YouCook2 (Xu et al., "VideoCLIP:
# Contrastive Pre-training for Zero-shot Video-Text Understanding", EMNLP 2021). Published zero-shot
# YouCook2: R@1 22.7, R@5 50.4, R@10 62.6.
#
# The published recipe (`--towers bert`): S3D-G (HowTo100M MIL-NCE weights) one feature per second,
# L2-normalised; BERT-initialised towers fine-tuned on token ids; captions merged to 8-64 tokens; 32 videos x
# 16 clips per batch, each batch 32 of the 64 nearest videos (the seed among them) of one of floor(videos / 32)
# random seed videos under the current model, a video's point the un-normalised mean of (video + text) / 2 over 16
# of its captions drawn with replacement (exact search up to 50,000 videos, beyond MMPT's FAISS IVF index of 512
# lists, one probed); the last partial second of every video kept, zero-padded (--last-window zeros); Adam 5e-5,
# betas (0.9, 0.98), 1,000 warm-up steps, gradient clipping 2.
# Differences: exact search below 50,000 videos; the IVF index trains on a random sample of 512 x 48 videos each
# pass (MMPT: the first its loader gives).
set -euo pipefail
HT100M=${HT100M:-/data/howto100m}         # videos/ and captions.jsonl (video_id, caption_id, start, end, text)
YC2=${YC2:-/data/youcook2}                # val videos/ and val_clips.jsonl (one caption per clip video)
S3DG=${S3DG:-/models/s3d_howto100m.pth}
BERT=${BERT:-/models/bert-base-uncased}   # a local transformers directory
STORE=${STORE:-store-videoclip}

freezeframe extract "$HT100M/videos" "$YC2/videos" --store "$STORE" --name s3dg --backbone s3dg --pretrained "$S3DG" \
    --last-window zeros
freezeframe extract-text "$HT100M/captions.jsonl" --store "$STORE" --name bert --model "$BERT" --max-length 64
freezeframe extract-text "$YC2/val_clips.jsonl" --store "$STORE" --name bert --model "$BERT" --max-length 64
freezeframe train videoclip --store "$STORE" --set s3dg --text-set bert --captions "$HT100M/captions.jsonl" \
    --out runs/videoclip-ht100m --towers bert --bert "$BERT" --merge-tokens 8,64 --normalize-video \
    --videos-per-batch 32 --clips-per-video 16 --retrieval-augmented --epochs 25
freezeframe eval runs/videoclip-ht100m --captions "$YC2/val_clips.jsonl" --json   # zero-shot: no YouCook2 training
