"""How long a VideoCLIP run trains, in optimisation steps, and how: warm-up, clipping, optimiser.

Kept free of torch so the CLI reads its defaults without importing it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from freezeframe.errors import InputError

OPTIMIZERS = ("adamw", "adam")


@dataclass(frozen=True)
class StepSchedule:
    """Training length, warm-up, clipping and optimiser of a VideoCLIP run, in optimisation steps."""

    min_steps: int = 500  # at least this many steps in all: small caption files get several passes per epoch
    warmup_steps: int = 1000  # VideoCLIP's; capped at warmup_cap of the run's steps so short runs still train
    warmup_cap: float = 0.1
    clip_grad: float = 2.0  # max gradient norm (VideoCLIP's); 0 turns clipping off
    optimizer: str = "adamw"  # adamw, or adam (VideoCLIP's: no weight decay)
    betas: tuple[float, float] = (0.9, 0.999)

    def __post_init__(self) -> None:
        if self.min_steps < 0 or self.warmup_steps < 0 or self.clip_grad < 0:
            raise InputError("--min-steps, --warmup-steps and --clip-grad must not be negative.")
        if self.optimizer not in OPTIMIZERS:
            raise InputError(f"unknown optimizer {self.optimizer!r}; choose {' or '.join(OPTIMIZERS)}.")

    def passes_per_epoch(self, epochs: int, steps_per_pass: int) -> int:
        """Passes over the captions in one epoch so that `epochs` epochs make at least `min_steps` steps."""
        return max(1, math.ceil(self.min_steps / max(1, epochs * steps_per_pass)))

    def warmup(self, total_steps: int) -> int:
        return min(self.warmup_steps, int(self.warmup_cap * total_steps))


# Optimiser settings each kind of towers trains with by default: the light towers' AdamW, and the published
# recipe's Adam at 5e-5 with betas (0.9, 0.98) (VideoCLIP, fairseq MMPT).
TOWER_OPTIMIZERS = {
    "light": {"lr": 4e-4, "optimizer": "adamw", "betas": (0.9, 0.999)},
    "bert": {"lr": 5e-5, "optimizer": "adam", "betas": (0.9, 0.98)},
}
