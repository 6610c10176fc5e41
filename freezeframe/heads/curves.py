"""Training curves as a PNG (matplotlib, headless)."""

from __future__ import annotations

from pathlib import Path


def plot_curves(history: list[dict], path: str | Path, x: str = "epoch") -> None:
    """One panel per metric family: losses, and accuracies where present."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    keys_loss = [k for k in ("train_loss", "val_loss") if any(k in h for h in history)]
    keys_acc = [k for k in ("train_top1", "val_top1", "val_top5", "val_t2v_r1", "val_v2t_r1", "val_mean_recall")
                if any(k in h for h in history)]
    panels = [p for p in (keys_loss, keys_acc) if p]
    fig, axes = plt.subplots(1, len(panels), figsize=(5 * len(panels), 3.5), squeeze=False)
    for ax, keys in zip(axes[0], panels):
        for key in keys:
            points = [(h[x], h[key]) for h in history if key in h and x in h]
            ax.plot(*zip(*points), marker="o", label=key)
        ax.set_xlabel(x)
        if x == "l2":
            ax.set_xscale("log")
        ax.legend()
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)
