"""Homework 4 as a benchmark: exact score matching vs denoising vs sliced score matching.

One run trains the same MLP energy with each objective on the 2-D swiss roll and on the 64-D
digits (pixels in [0, 1]) and prints, side by side, the time per training step and the sample
quality of Langevin (MALA) samples: energy distance to the test split in 2-D, the Fréchet
distance of the fixed digits classifier in 64-D. Exact score matching needs one backward pass
per dimension for the Jacobian trace, so its cost per step grows with ``D``; DSM and sliced SM
need one.

    python benchmarks/ebm_sm_vs_dsm.py            # full (a few minutes on one core)
    python benchmarks/ebm_sm_vs_dsm.py --fast     # a quick check
"""

from __future__ import annotations

import argparse
import time

import torch

from probgen.data.splits import load_splits
from probgen.infer.fit import fit
from probgen.infer.langevin import mala
from probgen.metrics.distances import energy_distance
from probgen.metrics.frechet import digits_frechet_distance
from probgen.models.ebm import (
    DenoisingScoreMatching,
    EnergyMLP,
    EnergyProgram,
    ScoreMatching,
    SlicedScoreMatching,
)


def run(name: str, objective, train: torch.Tensor, test: torch.Tensor, steps: int,
        sample_steps: int, step: float, digits: bool) -> dict:
    torch.manual_seed(0)
    net = EnergyMLP(train.shape[1], hidden=128, depth=3)
    res = fit(EnergyProgram(net).model, None, train, objective=objective, steps=steps,
              batch_size=128, lr=1e-3, progress=False)
    per_step = res.final["time_s"] / steps
    torch.manual_seed(1)
    n = min(len(test), 1000)
    lo, hi = train.min(0).values, train.max(0).values
    x0 = lo + (hi - lo) * torch.rand(n, train.shape[1])
    out = mala(net, x0, step, sample_steps)
    x = out.samples.detach()
    if digits:
        quality = digits_frechet_distance(x.clamp(0, 1), test)
    else:
        quality = energy_distance(x, test[:n])
    return {"objective": name, "ms_per_step": 1000 * per_step, "quality": quality,
            "acceptance": out.acceptance_rate}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--fast", action="store_true")
    ap.add_argument("--steps", type=int, default=None, help="training steps per objective")
    args = ap.parse_args()
    torch.set_num_threads(1)
    steps = args.steps or (100 if args.fast else 2000)
    sample_steps = 100 if args.fast else 1000
    sets = []
    roll = load_splits("swiss_roll")
    sets.append(("swiss roll (D=2)", roll.train, roll.test, 0.002, False, "energy dist."))
    dig = load_splits("digits")
    sets.append(("digits (D=64)", dig.train.float() / 16, dig.test.float() / 16, 1e-4, True,
                 "FD"))
    objectives = [("exact SM", ScoreMatching), ("DSM (sigma=0.1)",
                                                lambda: DenoisingScoreMatching(0.1)),
                  ("sliced SM (VR)", lambda: SlicedScoreMatching(1))]
    print(f"{'data':18} {'objective':16} {'ms/step':>9} {'vs DSM':>7} {'quality':>9} "
          f"{'metric':>13} {'MALA acc.':>9}")
    for label, train, test, step, digits, metric in sets:
        rows = [run(n, make(), train, test, steps, sample_steps, step, digits)
                for n, make in objectives]
        dsm = rows[1]["ms_per_step"]
        for r in rows:
            print(f"{label:18} {r['objective']:16} {r['ms_per_step']:9.2f} "
                  f"{r['ms_per_step'] / dsm:7.2f} {r['quality']:9.4f} {metric:>13} "
                  f"{r['acceptance']:9.2f}", flush=True)


if __name__ == "__main__":
    start = time.perf_counter()
    main()
    print(f"total {time.perf_counter() - start:.0f} s")
