"""Frame-index arithmetic shared by extraction (which frames to decode) and datasets (which rows to read)."""

from __future__ import annotations

import numpy as np


def segment_middles(n: int, count: int) -> np.ndarray:
    """Indices of the middles of `count` equal segments of `n` items (repeats when `count` > `n`)."""
    return np.minimum(((np.arange(count) + 0.5) * n / count).astype(np.int64), n - 1)
