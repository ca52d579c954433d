"""Mode collapse, measured: modes covered and fraction of high-quality samples per GAN loss.

Trains ``probgen train gan`` (the MLP pair, the vectors presets) with every loss of
[`Adversarial`][probgen.models.gan.objective.Adversarial] on the 8-Gaussian ring (the embedded
``eight_gaussians``) and on a 5x5 grid of Gaussians, then scores 2500 samples with
[`mode_report`][probgen.models.gan.properties.mode_report] (VEEGAN / PacGAN: high quality = within
3 std of a centre; a mode is covered by >= 20 of them). One run per cell, seed 0.

Run: ``python benchmarks/gan_modes.py [--steps N] [--losses ns,hinge] [--mixtures ring,grid]``.
The bar: WGAN-GP and hinge cover >= 7/8 ring modes with >= 80% high-quality samples.
"""

from __future__ import annotations

import argparse
import os
import time

import torch

from probgen.data.splits import DataSplits
from probgen.models.family import train
from probgen.models.gan import GRID, LOSSES, RING, mixture_samples, mode_report

MIXTURES = {"ring": RING, "grid": GRID}


def mixture_splits(name: str) -> DataSplits:
    """The ring is the embedded ``eight_gaussians``; the grid is drawn like it (seeds 0/1/2)."""
    if name == "ring":
        from probgen.data.splits import load_splits

        return load_splits("eight_gaussians")
    mix = MIXTURES[name]
    parts = [mixture_samples(mix, n, seed=s) for n, s in ((5000, 0), (1000, 1), (2000, 2))]
    return DataSplits("vectors", *parts, {"name": f"gaussian_{name}", "source": "memory"})


def study(losses: list[str], mixtures: list[str], steps: int | None = None,
          seed: int = 0) -> list[dict]:
    """One row per (mixture, loss): modes covered, high-quality fraction, seconds."""
    rows = []
    for m in mixtures:
        splits = mixture_splits(m)
        for loss in losses:
            t0 = time.perf_counter()
            values = {"loss": loss, "seed": seed, **({"steps": steps} if steps else {})}
            run = train("gan", data=splits, progress=False, **values)
            report = mode_report(run.sample(2500, seed=seed + 1), MIXTURES[m])
            rows.append({"mixture": m, "loss": loss, **report,
                         "seconds": time.perf_counter() - t0})
    return rows


def table(rows: list[dict]) -> str:
    lines = ["| mixture | loss | modes covered | high quality | seconds |",
             "|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['mixture']} | {r['loss']} | {r['modes']}/{r['of']} | "
                     f"{100 * r['high_quality']:.1f}% | {r['seconds']:.0f} |")
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=None, help="override the vectors preset")
    p.add_argument("--losses", default=",".join(LOSSES))
    p.add_argument("--mixtures", default="ring,grid")
    args = p.parse_args()
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    torch.set_num_threads(1)
    rows = study(args.losses.split(","), args.mixtures.split(","), args.steps)
    print(table(rows))
    ring = {r["loss"]: r for r in rows if r["mixture"] == "ring"}
    for loss in ("wgan_gp", "hinge"):
        if loss in ring:
            ok = ring[loss]["modes"] >= 7 and ring[loss]["high_quality"] >= 0.8
            print(f"{loss} on the ring: {'meets' if ok else 'misses'} the bar "
                  "(>= 7/8 modes, >= 80% high quality)")


if __name__ == "__main__":
    main()
