"""The reported diffusion bound (``test_nll``: all ``T + 1`` closed-form terms) against two
Monte Carlo estimates of the same negative ELBO on one trained run, measured in one process.

    python benchmarks/diffusion_elbo.py RUN [--n 200] [--chains 2] [--draws 20]

- ``closed form``: [`elbo_terms`][probgen.models.diffusion.elbo.elbo_terms], the figure the
  run reports (Gaussian KLs given one ``x_t`` draw per step, the discrete decoder at t = 0);
- ``Pyro Trace_ELBO``: ``log q(x_{1:T} | x_0) - log p(x_{0:T})`` of the run's two Pyro
  programs with the whole forward chain sampled (no closed forms at all), ``--chains`` chains
  per example;
- ``sampled step``: ``L_T + T * L_{t-1}`` with ``t ~ Uniform{1..T}``, ``--draws`` per example
  (the training estimator of the bound).

RUN is a run folder of ``probgen train diffusion`` (digits). Each row gives the mean over the
first ``--n`` test digits and its standard error; the three should agree within a few
standard errors.
"""

from __future__ import annotations

import argparse
import math
import time

import pyro
import torch
from pyro import poutine

from probgen.models.diffusion.elbo import elbo_terms, sampled_elbo
from probgen.models.family import load_run


def _pyro_neg_elbo(ddpm, x0, y) -> torch.Tensor:
    """Per-example ``log q - log p`` of one sampled chain (Pyro scores every site)."""
    g = poutine.trace(ddpm.guide).get_trace(x0, y)
    m = poutine.trace(poutine.replay(ddpm.model, trace=g)).get_trace(x0, y)
    m.compute_log_prob()
    g.compute_log_prob()
    lp = sum(s["log_prob"] for s in m.nodes.values() if s["type"] == "sample")
    lq = sum(s["log_prob"] for s in g.nodes.values() if s["type"] == "sample")
    return (lq - lp).double()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("run")
    p.add_argument("--n", type=int, default=200)
    p.add_argument("--chains", type=int, default=2)
    p.add_argument("--draws", type=int, default=20)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    torch.set_num_threads(1)
    run = load_run(args.run)
    m = run.sampler.eval()
    x0 = run.splits.test[: args.n]
    y = run.splits.labels[2][: args.n] if m.num_classes else None
    pyro.clear_param_store()
    torch.manual_seed(args.seed)
    rows = []
    with torch.no_grad():
        t0 = time.perf_counter()
        closed = elbo_terms(m, x0, y).double().sum(0)
        rows.append(("closed form (reported)", closed, time.perf_counter() - t0))
        t0 = time.perf_counter()
        mc = torch.stack([_pyro_neg_elbo(m, x0, y) for _ in range(args.chains)]).mean(0)
        rows.append((f"Pyro Trace_ELBO, {args.chains} chains", mc, time.perf_counter() - t0))
        t0 = time.perf_counter()
        st = torch.stack([sampled_elbo(m, x0, y).double() for _ in range(args.draws)]).mean(0)
        rows.append((f"sampled step, {args.draws} draws", st, time.perf_counter() - t0))
    print(f"negative ELBO of {args.run} ({m.T} steps) on {len(x0)} test digits, nats")
    print("| estimate | -ELBO | stderr | seconds |")
    print("|---|---|---|---|")
    for name, v, dt in rows:
        print(f"| {name} | {v.mean():.2f} | {v.std() / math.sqrt(len(v)):.2f} | {dt:.1f} |")
    d = (rows[1][1] - rows[0][1])
    print(f"Pyro minus closed form: {d.mean():.2f} +- {d.std() / math.sqrt(len(d)):.2f} "
          f"(paired over the same digits)")


if __name__ == "__main__":
    main()
