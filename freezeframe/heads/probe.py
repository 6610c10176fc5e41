"""Linear probe: multinomial logistic regression on pooled per-frame features, fitted with L-BFGS.

As in the CLIP paper's linear-probe protocol, the L2 strength is chosen on a validation split
by a log-spaced sweep, then the probe is refitted on train + validation.
Objective: mean cross-entropy + (l2 / 2) * ||W||^2 (bias not penalised), i.e. scikit-learn's
`LogisticRegression(C=1 / (l2 * n_samples))` for three or more classes. With two classes
scikit-learn fits one weight vector w = W[1] - W[0], which matches `C=2 / (l2 * n_samples)`.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch
import torch.nn as nn
from freezeframe.heads.registry import FeatureSource, Solution, register_head, vector_width
from freezeframe.extras import require
from freezeframe.options import FieldError, option

POOLINGS = ("mean", "middle")
SMALL_PROBLEM = 4_000_000  # samples x dims x classes below which the fit uses one BLAS thread


def pool_frames(x: torch.Tensor, pooling: str = "mean", mask: torch.Tensor | None = None) -> torch.Tensor:
    """(batch, frames, dim) -> (batch, dim); `mask` (batch, frames), True on real rows, leaves padding out."""
    if pooling == "mean" and mask is None:
        return x.float().mean(dim=1)
    if mask is None:
        mask = torch.ones(x.shape[:2], dtype=torch.bool, device=x.device)
    lengths = mask.sum(dim=1)
    if pooling == "mean":
        return (x.float() * mask[..., None]).sum(dim=1) / lengths.clamp_min(1)[:, None]
    if pooling == "middle":
        return x[torch.arange(len(x), device=x.device), lengths // 2].float()
    raise ValueError(f"unknown pooling {pooling!r}; choose one of {POOLINGS}")


@dataclass(frozen=True)
class ProbeConfig:
    num_classes: int
    input_dim: int
    array: str = option("embed", "per-frame array to probe (embed or cls)")
    pooling: str = option("mean", "how a video's frames are pooled: mean, or middle (the middle frame)")
    l2: float = 1e-4  # chosen by `sweep_l2` when trained from the CLI

    def __post_init__(self) -> None:
        if self.pooling not in POOLINGS:
            raise FieldError("pooling", f"{self.pooling!r} is unknown; choose one of {', '.join(POOLINGS)}.")


def size_probe(feature_set: FeatureSource, num_classes: int, num_frames: int, **options) -> ProbeConfig:
    array = options.pop("array", ProbeConfig.array)
    return ProbeConfig(num_classes=num_classes, input_dim=vector_width(feature_set, array), array=array, **options)


def solve_probe(probe: "LinearProbe", train_set: Sequence[dict], val_set: Sequence[dict] | None,
                seed: int) -> Solution:
    """Sweep L2 on the validation items (or 20% of the training items when none are given), then refit on
    train + validation, as in CLIP's linear-probe protocol."""
    x, y = pooled_items(probe.config, train_set)
    if val_set is not None:
        vx, vy = pooled_items(probe.config, val_set)
        fit_x, fit_y, sweep_train = torch.cat([x, vx]), torch.cat([y, vy]), (x, y)
    else:
        order = list(range(len(y)))
        random.Random(seed).shuffle(order)
        cut = max(1, len(order) // 5)
        val_idx, tr_idx = torch.tensor(order[:cut]), torch.tensor(order[cut:])
        sweep_train, (vx, vy) = (x[tr_idx], y[tr_idx]), (x[val_idx], y[val_idx])
        fit_x, fit_y = x, y
    best_l2, sweep = sweep_l2(probe, sweep_train, (vx, vy))
    probe.fit(fit_x, fit_y, l2=best_l2)
    with torch.no_grad():
        train_top1 = float((probe.linear(x).argmax(1) == y).float().mean())
    metrics = {"epoch": 0, "l2": best_l2, "train_top1": train_top1,
               "val_top1": max(r["val_top1"] for r in sweep), "num_train": int(len(fit_y))}
    return Solution(metrics, sweep, "l2")


def pooled_items(config: ProbeConfig, items: Sequence[dict]) -> tuple[torch.Tensor, torch.Tensor]:
    """Pooled features (items, dim) and labels (items,) of labelled items {"inputs": {array: (frames, dim)}}."""
    chosen = [items[i] for i in range(len(items))]
    features = [pool_frames(item["inputs"][config.array][None], config.pooling) for item in chosen]
    return torch.cat(features), torch.tensor([item["label"] for item in chosen])


@register_head("probe", config=ProbeConfig, size=size_probe, task="classification", solve=solve_probe,
               frames=("all", "all"),
               summary="multinomial logistic regression on the pooled per-frame vectors; full-batch L-BFGS (SciPy's "
                       "L-BFGS-B in float64, the solver scikit-learn uses; the solution equals "
                       "`LogisticRegression(C=1/(l2·n))`); L2 strength swept log-spaced (1e-6 … 1e2, warm-started) "
                       "on `--val` (or 20% of train), then refit on train + val, as in CLIP's linear-probe protocol",
               reads="`--array`")
class LinearProbe(nn.Module):
    """Logits of pooled features; `inputs` is a dict with the probed array, (batch, frames, dim), and optionally
    `frame_mask` (batch, frames) of a padded batch."""

    takes_frame_mask = True

    def __init__(self, config: ProbeConfig) -> None:
        super().__init__()
        self.config = config
        self.linear = nn.Linear(config.input_dim, config.num_classes)
        nn.init.zeros_(self.linear.weight)
        nn.init.zeros_(self.linear.bias)

    @property
    def required_arrays(self) -> list[str]:
        return [self.config.array]

    def forward(self, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        return self.linear(pool_frames(inputs[self.config.array], self.config.pooling, inputs.get("frame_mask")))

    def fit(self, features: torch.Tensor, labels: torch.Tensor, l2: float | None = None, max_iter: int = 1000,
            tol: float = 1e-7) -> float:
        """Full-batch L-BFGS (SciPy's L-BFGS-B, as scikit-learn's lbfgs solver) on pooled features (n, dim),
        started from the current weights; returns the final objective.

        The fit runs in float64 with an analytic gradient: frozen features often share a large common
        component, which makes the problem ill-conditioned enough that float32 stops short of the optimum.
        `tol` bounds the largest gradient component at the solution.
        """
        l2 = self.config.l2 if l2 is None else l2
        x = features.detach().double().numpy()
        y = labels.detach().numpy()
        classes, dim = self.linear.weight.shape
        start = np.concatenate([self.linear.weight.detach().double().numpy().ravel(),
                                self.linear.bias.detach().double().numpy()])
        # Small problems on one BLAS thread: more threads only spin (on a busy machine, 100x slower).
        threadpool_limits = require("threadpoolctl", "the linear probe").threadpool_limits
        minimize = require("scipy.optimize", "the linear probe's L-BFGS-B solver").minimize
        with threadpool_limits(limits=1 if x.size * classes < SMALL_PROBLEM else None):
            solution = minimize(_objective_and_gradient, start, args=(x, np.eye(classes)[y], l2), jac=True,
                                method="L-BFGS-B", options={"maxiter": max_iter, "gtol": tol,
                                                            "ftol": 64 * np.finfo(float).eps, "maxls": 50})
        with torch.no_grad():
            self.linear.weight.copy_(torch.from_numpy(solution.x[: classes * dim].reshape(classes, dim)))
            self.linear.bias.copy_(torch.from_numpy(solution.x[classes * dim:]))
        return float(solution.fun)


def _objective_and_gradient(theta: np.ndarray, x: np.ndarray, onehot: np.ndarray, l2: float) -> tuple[float, np.ndarray]:
    """Mean cross-entropy + (l2 / 2) ||W||^2 and its gradient; theta = [W (classes x dim) flattened, b (classes)]."""
    n, dim = x.shape
    classes = onehot.shape[1]
    weight, bias = theta[: classes * dim].reshape(classes, dim), theta[classes * dim:]
    logits = x @ weight.T + bias  # (n, classes)
    logits -= logits.max(axis=1, keepdims=True)
    log_norm = np.log(np.exp(logits).sum(axis=1))
    loss = float((log_norm - (logits * onehot).sum(axis=1)).mean()) + 0.5 * l2 * float((weight * weight).sum())
    residual = (np.exp(logits - log_norm[:, None]) - onehot) / n  # d loss / d logits
    gradient = np.concatenate([(residual.T @ x + l2 * weight).ravel(), residual.sum(axis=0)])
    return loss, gradient


def l2_grid(low: float = 1e-6, high: float = 1e2, steps: int = 17) -> np.ndarray:
    return np.logspace(np.log10(low), np.log10(high), steps)


def sweep_l2(probe: LinearProbe, train: tuple[torch.Tensor, torch.Tensor], val: tuple[torch.Tensor, torch.Tensor],
             grid: np.ndarray | None = None) -> tuple[float, list[dict]]:
    """Fit on `train` for each L2 strength, score on `val`; returns the best strength and the sweep (grid order).

    The fits run from the strongest strength to the weakest, each warm-started from the previous solution
    (the optimum is unique, so only the time changes)."""
    grid = [float(l2) for l2 in (l2_grid() if grid is None else grid)]
    nn.init.zeros_(probe.linear.weight)
    nn.init.zeros_(probe.linear.bias)
    found = {}
    for l2 in sorted(grid, reverse=True):
        probe.fit(*train, l2=l2)
        with torch.no_grad():
            found[l2] = float((probe.linear(val[0].float()).argmax(1) == val[1]).float().mean())
    results = [{"l2": l2, "val_top1": found[l2]} for l2 in grid]
    best = max(results, key=lambda r: (r["val_top1"], r["l2"]))  # ties: the stronger regulariser
    return best["l2"], results
