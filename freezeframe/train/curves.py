"""Training curves as a PNG (matplotlib, headless)."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def _pyplot():
    from freezeframe.extras import require

    matplotlib = require("matplotlib", "training curves and confusion plots")

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_confusion(counts, classes: list[str], path: str | Path) -> None:
    """Confusion matrix (rows: true class, columns: predicted) as a PNG, counts written in the cells."""
    plt = _pyplot()
    n = len(classes)
    size = min(20.0, 2.5 + 0.45 * n)
    fig, ax = plt.subplots(figsize=(size, size))
    ax.imshow(counts, cmap="Blues")
    ticks = range(n)
    ax.set_xticks(ticks, classes, rotation=90 if n > 4 else 0)
    ax.set_yticks(ticks, classes)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    if n <= 30:
        top = counts.max() or 1
        for (i, j), value in np.ndenumerate(counts):
            ax.text(j, i, str(value), ha="center", va="center", color="white" if value > top / 2 else "black")
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)


STYLES = [("o", "-"), ("s", "--"), ("^", "-."), ("D", ":"), ("v", "-"), ("x", "--")]  # curves that coincide stay visible


def plot_curves(history: list[dict], path: str | Path, x: str = "epoch", best: float | None = None) -> None:
    """One panel per metric family: losses, and accuracies where present; `best` (an x value) is marked on each.

    Each curve has its own marker and line style, drawn hollow and half transparent, so that curves lying on one
    another (train and validation top-1 at 100%) both show; the legend sits outside the axes."""
    plt = _pyplot()

    keys_loss = [k for k in ("train_loss", "val_loss") if any(k in h for h in history)]
    keys_acc = [k for k in ("train_top1", "val_top1", "val_top5", "val_t2v_r1", "val_v2t_r1", "val_mean_recall")
                if any(k in h for h in history)]
    panels = [p for p in (keys_loss, keys_acc) if p]
    fig, axes = plt.subplots(1, len(panels), figsize=(5 * len(panels), 3.5), squeeze=False)
    for ax, keys in zip(axes[0], panels):
        for key, (marker, line) in zip(keys, STYLES):
            points = [(h[x], h[key]) for h in history if key in h and x in h]
            if points:
                ax.plot(*zip(*points), marker=marker, linestyle=line, fillstyle="none", alpha=0.8, label=key)
        if best is not None:
            ax.axvline(best, color="grey", linestyle=":", label=f"best ({x} {best:g})")
        ax.set_xlabel(x)
        if x == "l2":
            ax.set_xscale("log")
        ax.legend(fontsize="small", loc="upper left", bbox_to_anchor=(1.0, 1.0))
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)
