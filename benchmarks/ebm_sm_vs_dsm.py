"""Homework 4 as a benchmark: exact score matching vs denoising vs sliced score matching.

One run trains the same MLP energy with each objective on the 2-D swiss roll and on the 64-D
digits (pixels in [0, 1]) and prints, side by side, the time per training step and the sample
quality of Langevin (MALA) samples: energy distance to the test split in 2-D, the Fréchet
distance of the fixed digits classifier in 64-D; in 2-D also the exact test NLL (normaliser by
quadrature), which does not depend on the sampler. Exact score matching needs one backward pass
per dimension for the Jacobian trace, so its cost per step grows with ``D``; DSM and sliced SM
need one.

    python benchmarks/ebm_sm_vs_dsm.py            # full (about 6 minutes on one core)
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
    log_normaliser,
)
from probgen.models.ebm.quadrature import data_box


def run(name: str, objective, train: torch.Tensor, test: torch.Tensor, steps: int,
        sample_steps: int, step: float, digits: bool, refine: tuple[float, int]) -> dict:
    torch.manual_seed(0)
    net = EnergyMLP(train.shape[1], hidden=128, depth=3)
    res = fit(EnergyProgram(net).model, None, train, objective=objective, steps=steps,
              batch_size=128, lr=1e-3, progress=False)
    per_step = res.final["time_s"] / steps
    torch.manual_seed(1)
    n = min(len(test), 1000)
    lo, hi = train.min(0).values, train.max(0).values
    x0 = lo + (hi - lo) * torch.rand(n, train.shape[1])
    out = mala(net, x0, step, sample_steps)  # explore (large step), then refine (small step)
    x = mala(net, out.samples, refine[0], refine[1]).samples.detach()
    nll = float("nan")
    if digits:
        quality = digits_frechet_distance(x.clamp(0, 1), test)
    else:
        quality = energy_distance(x, test[:n])
        q = log_normaliser(net, data_box(train, 1.0), grid=400)
        with torch.no_grad():
            nll = float((net(test) + q.log_z).mean())
    return {"objective": name, "ms_per_step": 1000 * per_step, "quality": quality, "nll": nll,
            "acceptance": out.acceptance_rate}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--fast", action="store_true")
    ap.add_argument("--steps", type=int, default=None,
                    help="training steps per objective in 2-D (default 2000)")
    ap.add_argument("--steps-64", type=int, default=None,
                    help="training steps per objective in 64-D (default 400: exact SM's step "
                         "costs ~70 DSM steps there)")
    args = ap.parse_args()
    torch.set_num_threads(1)
    steps = args.steps or (100 if args.fast else 2000)
    steps_64 = args.steps_64 or (50 if args.fast else 400)
    sample_steps = 100 if args.fast else 1000
    sets = []
    roll = load_splits("swiss_roll")
    sets.append(("swiss roll (D=2)", roll.train, roll.test, 0.05, False, "energy dist.",
                 (0.005, sample_steps // 5), steps))
    dig = load_splits("digits")
    sets.append(("digits (D=64)", dig.train.float() / 16, dig.test.float() / 16, 1e-4, True,
                 "FD", (1e-4, sample_steps // 5), steps_64))
    objectives = [("exact SM", ScoreMatching), ("DSM (sigma=0.1)",
                                                lambda: DenoisingScoreMatching(0.1)),
                  ("sliced SM (VR)", lambda: SlicedScoreMatching(1))]
    print(f"{'data':18} {'objective':16} {'ms/step':>9} {'vs DSM':>7} {'quality':>9} "
          f"{'metric':>13} {'MALA acc.':>9} {'test NLL':>9}")
    for label, train, test, step, digits, metric, refine, n_steps in sets:
        rows = [run(n, make(), train, test, n_steps, sample_steps, step, digits, refine)
                for n, make in objectives]
        dsm = rows[1]["ms_per_step"]
        for r in rows:
            print(f"{label:18} {r['objective']:16} {r['ms_per_step']:9.2f} "
                  f"{r['ms_per_step'] / dsm:7.2f} {r['quality']:9.4f} {metric:>13} "
                  f"{r['acceptance']:9.2f} {r['nll']:9.3f}", flush=True)


def cost_by_dimension(dims: tuple[int, ...], steps: int) -> None:
    """ms per training step of each objective on Gaussian data of growing dimension."""
    print(f"\n{'D':>4} " + " ".join(f"{n:>16}" for n in ("exact SM", "DSM", "sliced SM"))
          + f" {'exact / DSM':>12}")
    for d in dims:
        x = torch.randn(2048, d)
        ms = []
        for obj in (ScoreMatching(), DenoisingScoreMatching(0.1), SlicedScoreMatching(1)):
            torch.manual_seed(0)
            net = EnergyMLP(d, hidden=128, depth=3)
            res = fit(EnergyProgram(net).model, None, x, objective=obj, steps=steps,
                      batch_size=128, lr=1e-3, progress=False)
            ms.append(1000 * res.final["time_s"] / steps)
        print(f"{d:>4} " + " ".join(f"{m:16.2f}" for m in ms) + f" {ms[0] / ms[1]:12.1f}",
              flush=True)


if __name__ == "__main__":
    start = time.perf_counter()
    main()
    cost_by_dimension((2, 8, 16, 32, 64), 30 if "--fast" in __import__("sys").argv else 100)
    print(f"total {time.perf_counter() - start:.0f} s")
