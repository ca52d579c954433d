"""DDPM (all steps, ancestral) vs DDIM with fewer steps on one trained diffusion run: fd of
1000 samples against the digits test split and wall time of each, measured in one process.

    python benchmarks/diffusion_samplers.py RUN [--steps 50 20] [--n 1000]

RUN is a run folder of ``probgen train diffusion`` (digits). The ratio column is each
sampler's fd over the full ancestral sampler's. ``--ancestral-from-metrics`` takes the
ancestral fd from the run's ``metrics.json`` (the same 1000 samples: same seed, same
sampler) instead of sampling them again.
"""

from __future__ import annotations

import argparse
import time

import torch

from probgen.metrics.frechet import digits_frechet_distance
from probgen.models.family import load_run


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("run")
    p.add_argument("--steps", type=int, nargs="+", default=[50])
    p.add_argument("--n", type=int, default=1000)
    p.add_argument("--seed", type=int, default=12345)
    p.add_argument("--ancestral-from-metrics", action="store_true")
    args = p.parse_args()
    torch.set_num_threads(1)
    run = load_run(args.run)
    test = run.splits.test.float() / 16
    rows = []
    todo = [("ddpm", None)] + [("ddim", s) for s in args.steps]
    if args.ancestral_from_metrics:
        rows.append(("ddpm", run.ddpm.T, float(run.metrics["fd"]), float("nan")))
        todo = todo[1:]
    for sampler, steps in todo:
        run.set_sampling(sampler=sampler, steps=steps)
        t0 = time.perf_counter()
        x = run.sample(args.n, seed=args.seed)
        dt = time.perf_counter() - t0
        rows.append((sampler, steps or run.ddpm.T, digits_frechet_distance(x.float() / 16, test),
                     dt))
    base = rows[0][2]
    print(f"| sampler | steps | fd (n={args.n}) | ratio to ddpm | seconds |")
    print("|---|---|---|---|---|")
    for s, k, fd, dt in rows:
        print(f"| {s} | {k} | {fd:.2f} | {fd / base:.2f} | {dt:.1f} |")


if __name__ == "__main__":
    main()
