"""Homework 6 as a benchmark: continuous-time generative models on the swiss roll, in one run.

Trains flow matching (Lipman et al.'s Gaussian path), OT flow matching (minibatch OT-CFM),
rectified flow and one reflow round of it (``probgen train flowmatch`` with ``method`` fm / ot /
rectified, ``reflow=1``), and a VP-SDE score model (continuous-time DSM through ``fit``) sampled
by its reverse SDE (Euler-Maruyama) and by its probability-flow ODE (Euler). Prints, for each:
the energy distance of 2000 samples to the 2000 held-out test points at 1, 2, 5, 20 and 100
sampler steps; the exact test NLL of each ODE model (dopri5, exact trace); the straightness of
the ODE models; training time. Then the reflow bar: 1-step energy distance after one reflow
over the 100-step one (target <= 2) and over 1-step before reflow.

    python benchmarks/continuous_time.py [--fast] [--out DIR]

``--out`` also writes the pictures: trajectories per method, the learned vector fields, the
marginal densities over time.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import os
import tempfile
import time
from pathlib import Path

import torch

from probgen.data.splits import load_splits
from probgen.infer.fit import fit
from probgen.metrics.distances import energy_distance
from probgen.models.diffusion.flow_matching import euler_sample
from probgen.models.diffusion.flowmatch_train import FAMILY
from probgen.models.diffusion.pf_ode import pf_ode_log_prob, pf_ode_sample
from probgen.models.diffusion.score_sde import ScoreMatchingSDE, ScoreModel
from probgen.models.diffusion.sde import VPSDE
from probgen.models.diffusion.sde_sampling import reverse_sde_sample
from probgen.models.family import train
from probgen.nn.time_embedding import TimeMLP

STEPS = (1, 2, 5, 20, 100)


def _energy(samples: torch.Tensor, test: torch.Tensor) -> float:
    return energy_distance(samples.float(), test.float())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--fast", action="store_true", help="tiny settings (a smoke test)")
    ap.add_argument("--out", type=Path, default=None, help="folder for runs and pictures")
    ap.add_argument("--steps", type=int, default=3000, help="training steps of each model")
    ap.add_argument("--reflow-steps", type=int, default=2000, help="steps of the reflow round")
    ap.add_argument("--hidden", type=int, default=256, help="width of the 3-layer MLPs")
    args = ap.parse_args()
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    out = args.out or Path(tempfile.mkdtemp(prefix="continuous_time_"))
    out.mkdir(parents=True, exist_ok=True)
    splits = load_splits("swiss_roll")
    test = splits.test
    n = len(test)
    torch.manual_seed(0)
    noise = torch.randn(n, 2)
    width = (args.hidden,) * 3
    fast = {"steps": args.steps, "reflow_steps": args.reflow_steps, "hidden": width}
    if args.fast:
        fast.update(steps=200, reflow_pairs=2000, reflow_steps=200)

    rows: list[dict] = []
    velocities: dict[str, torch.nn.Module] = {}
    for label, method, reflow in (("FM", "fm", 0), ("OT-FM", "ot", 0),
                                  ("rectified + reflow", "rectified", 1)):
        run = train("flowmatch", data="swiss_roll", out=out / method, overwrite=True,
                    progress=False, method=method, reflow=reflow, **fast)
        stages = [(label, run, run.metrics["train_seconds"])]
        if reflow:  # the flow before reflow: the first stage's weights in the same folder
            cfg = dataclasses.replace(run.config, reflow=0)
            before = FAMILY.load(out / method, cfg, run.data_info)
            before.metrics = before.evaluate()
            first = run.metrics["train_seconds"] * run.config.steps / (
                run.config.steps + run.config.reflow_steps)  # approximate split of the time
            stages = [("rectified flow", before, first)] + stages
        for name, r, seconds in stages:
            ed = {s: _energy(euler_sample(r.velocity, noise, s), test) for s in STEPS}
            rows.append({"model": name, "ed": ed, "nll": r.metrics["test_nll"],
                         "straight": r.metrics["straightness"], "seconds": seconds})
            velocities[name] = r.velocity

    # VP-SDE: a score model by continuous-time DSM, sampled by the reverse SDE and the PF-ODE
    sde = VPSDE()
    torch.manual_seed(0)
    score = ScoreModel(TimeMLP(2, hidden=width), sde)
    t0 = time.perf_counter()
    fit(score, None, splits.train, objective=ScoreMatchingSDE(), steps=fast["steps"],
        batch_size=256, lr=2e-3, progress=False)
    seconds = time.perf_counter() - t0
    score.eval()
    prior = sde.prior_sample((n, 2), generator=torch.Generator().manual_seed(1))
    torch.manual_seed(2)
    ed_sde = {s: _energy(reverse_sde_sample(sde, score, prior, steps=s), test) for s in STEPS}
    ed_ode = {s: _energy(pf_ode_sample(sde, score, prior, steps=s), test) for s in STEPS}
    nll = float(-pf_ode_log_prob(sde, score, test).mean())
    rows.append({"model": "VP-SDE (reverse SDE, EM)", "ed": ed_sde, "nll": math.nan,
                 "straight": math.nan, "seconds": seconds})
    rows.append({"model": "VP-SDE (PF-ODE, Euler)", "ed": ed_ode, "nll": nll,
                 "straight": math.nan, "seconds": seconds})

    head = "".join(f"{'ED@' + str(s):>9}" for s in STEPS)
    print(f"swiss roll, {n} held-out points; energy distance of {n} samples (lower is better)")
    print(f"{'model':<26}{head}{'test NLL':>10}{'straight':>10}{'train s':>9}")
    for r in rows:
        eds = "".join(f"{r['ed'][s]:9.4f}" for s in STEPS)
        print(f"{r['model']:<26}{eds}{r['nll']:10.3f}{r['straight']:10.4f}{r['seconds']:9.1f}")
    rf = next(r for r in rows if r["model"] == "rectified flow")
    rf2 = next(r for r in rows if r["model"] == "rectified + reflow")
    ratio = rf2["ed"][1] / rf2["ed"][100]
    gain = rf["ed"][1] / rf2["ed"][1]
    print(f"reflow bar: 1-step ED after one reflow / its 100-step ED = {ratio:.2f} "
          f"(target <= 2: {'met' if ratio <= 2 else 'NOT met'}); 1-step ED before / after "
          f"reflow = {gain:.1f}x")

    if args.out is not None:
        from probgen.models.diffusion.plots import (
            flow_path,
            plot_marginals,
            plot_trajectories,
            plot_vector_field,
        )

        x0 = noise[:1000]
        paths = {k: flow_path(v, x0, steps=100) for k, v in velocities.items()}
        states: list[torch.Tensor] = [prior[:1000]]
        torch.manual_seed(3)
        reverse_sde_sample(sde, score, prior[:1000], steps=100,
                           callback=lambda i, t, x: states.append(x))
        paths["VP-SDE (reverse SDE)"] = torch.stack(states)
        ts = torch.linspace(sde.T, sde.eps, 101)
        paths["VP-SDE (PF-ODE)"] = pf_ode_sample(sde, score, prior[:1000], times=ts)
        plot_trajectories(paths, test, out / "trajectories.png")
        plot_marginals(paths, test, out / "marginals.png")
        for k, v in velocities.items():
            slug = k.replace(" ", "_").replace("+", "").replace("__", "_")
            plot_vector_field(v, test, out / f"field_{slug}.png")
        print(f"pictures in {out}")


if __name__ == "__main__":
    main()
