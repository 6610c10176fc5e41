"""Linear probe: multinomial logistic regression on pooled per-frame features, fitted with L-BFGS.

As in the CLIP paper's linear-probe protocol, the L2 strength is chosen on a validation split
by a log-spaced sweep, then the probe is refitted on train + validation.
Objective: mean cross-entropy + (l2 / 2) * ||W||^2 (bias not penalised), i.e. scikit-learn's
`LogisticRegression(C=1 / (l2 * n_samples))` for three or more classes. With two classes
scikit-learn fits one weight vector w = W[1] - W[0], which matches `C=2 / (l2 * n_samples)`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

POOLINGS = ("mean", "middle")


def pool_frames(x: torch.Tensor, pooling: str = "mean") -> torch.Tensor:
    """(batch, frames, dim) -> (batch, dim)."""
    if pooling == "mean":
        return x.float().mean(dim=1)
    if pooling == "middle":
        return x[:, x.shape[1] // 2].float()
    raise ValueError(f"unknown pooling {pooling!r}; choose one of {POOLINGS}")


@dataclass(frozen=True)
class ProbeConfig:
    num_classes: int
    input_dim: int
    array: str = "embed"
    pooling: str = "mean"
    l2: float = 1e-4


class LinearProbe(nn.Module):
    """Logits of pooled features; `inputs` is a dict with the probed array, (batch, frames, dim)."""

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
        return self.linear(pool_frames(inputs[self.config.array], self.config.pooling))

    def fit(self, features: torch.Tensor, labels: torch.Tensor, l2: float | None = None, max_iter: int = 1000) -> float:
        """Full-batch L-BFGS on pooled features (n, dim); returns the final objective.

        The fit runs in float64: frozen features often share a large common component, which makes
        the problem ill-conditioned enough that float32 L-BFGS stops well short of the optimum.
        """
        l2 = self.config.l2 if l2 is None else l2
        features = features.double()
        weight = self.linear.weight.detach().double().clone().requires_grad_(True)
        bias = self.linear.bias.detach().double().clone().requires_grad_(True)
        optimizer = torch.optim.LBFGS([weight, bias], lr=1.0, max_iter=max_iter, history_size=20,
                                      tolerance_grad=1e-9, tolerance_change=1e-12, line_search_fn="strong_wolfe")

        def objective() -> torch.Tensor:
            return F.cross_entropy(F.linear(features, weight, bias), labels) + 0.5 * l2 * weight.pow(2).sum()

        def closure() -> torch.Tensor:
            optimizer.zero_grad()
            loss = objective()
            loss.backward()
            return loss

        with torch.enable_grad():
            optimizer.step(closure)  # returns the objective at the start, not at the end
        with torch.no_grad():
            self.linear.weight.copy_(weight)
            self.linear.bias.copy_(bias)
            return float(objective())


def l2_grid(low: float = 1e-6, high: float = 1e2, steps: int = 17) -> np.ndarray:
    return np.logspace(np.log10(low), np.log10(high), steps)


def sweep_l2(probe: LinearProbe, train: tuple[torch.Tensor, torch.Tensor], val: tuple[torch.Tensor, torch.Tensor],
             grid: np.ndarray | None = None) -> tuple[float, list[dict]]:
    """Fit on `train` for each L2 strength, score on `val`; returns the best strength and the sweep."""
    results = []
    for l2 in (l2_grid() if grid is None else grid):
        nn.init.zeros_(probe.linear.weight)
        nn.init.zeros_(probe.linear.bias)
        probe.fit(*train, l2=float(l2))
        with torch.no_grad():
            accuracy = float((probe.linear(val[0].float()).argmax(1) == val[1]).float().mean())
        results.append({"l2": float(l2), "val_top1": accuracy})
    best = max(results, key=lambda r: (r["val_top1"], r["l2"]))  # ties: the stronger regulariser
    return best["l2"], results
