"""The linear probe's solver against scikit-learn's LogisticRegression on the same problem, as a ratio in one run.

Same data, same C (C = 1 / (l2 * n) for 3+ classes), same gradient tolerance, one BLAS thread for both.

    python benchmarks/probe_solver.py [--videos 120] [--dim 32] [--classes 4] [--l2 1e-3]
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch
from sklearn.linear_model import LogisticRegression
from threadpoolctl import threadpool_limits

from freezeframe.heads.probe import LinearProbe, ProbeConfig


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--videos", type=int, default=120)
    parser.add_argument("--dim", type=int, default=32)
    parser.add_argument("--classes", type=int, default=4)
    parser.add_argument("--l2", type=float, default=1e-3)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(args.classes, args.dim))
    y = np.arange(args.videos) % args.classes
    x = 5.0 + centres[y] + 1.5 * rng.normal(size=(args.videos, args.dim))  # a shared offset, as frozen features have
    tol = 1e-7
    ours, theirs = [], []
    with threadpool_limits(limits=1):
        for _ in range(args.repeats):
            probe = LinearProbe(ProbeConfig(args.classes, args.dim))
            start = time.perf_counter()
            probe.fit(torch.as_tensor(x), torch.as_tensor(y), l2=args.l2, tol=tol)
            ours.append(time.perf_counter() - start)
            start = time.perf_counter()
            ref = LogisticRegression(C=1 / (args.l2 * args.videos), tol=tol, max_iter=1000).fit(x, y)
            theirs.append(time.perf_counter() - start)
    weight_err = float(np.abs(probe.linear.weight.detach().numpy() - ref.coef_).max() / np.abs(ref.coef_).max())
    print(json.dumps({"videos": args.videos, "dim": args.dim, "classes": args.classes, "ours_s": min(ours),
                      "sklearn_s": min(theirs), "ours_over_sklearn": min(ours) / min(theirs),
                      "weights_rel_err": weight_err}))


if __name__ == "__main__":
    main()
