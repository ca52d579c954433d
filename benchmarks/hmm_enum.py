"""Enumerated HMM likelihood: time per step of ``fit(objective="likelihood")`` vs Pyro's SVI.

An HMM in the style of Pyro's ``examples/hmm.py`` (hidden states summed out by parallel
enumeration under ``pyro.markov``, sequences of different lengths masked, binary tones in a
nested plate), trained by maximum likelihood on the same data with the same Adam step:

- ``fit(model, None, data, objective="likelihood")`` (probgen's engine; the first step looks
  at the model's sites once, later steps call ``TraceEnum_ELBO`` directly);
- ``SVI(model, empty_guide, Adam, TraceEnum_ELBO(max_plate_nesting=2))``.

Printed: per-step thread CPU time (median over alternating rounds, which other processes'
load does not inflate), the mean loss over a round's steps (equal up to Adam's rounding:
same data, same optimiser), and the ratio fit / SVI (goal <= 1.05).

Run:  python benchmarks/hmm_enum.py [--rounds 7] [--steps 60] [--threads 1]
"""

from __future__ import annotations

import argparse
import statistics
import time

import pyro
import pyro.distributions as dist
import pyro.poutine as poutine
import torch
from pyro.distributions import constraints

from probgen.infer.fit import fit

H, D, N, T = 4, 8, 40, 30


def model(sequences: torch.Tensor, lengths: torch.Tensor) -> None:
    probs_x = pyro.param("probs_x", 0.7 * torch.eye(H) + 0.3 / H, constraint=constraints.simplex)
    probs_y = pyro.param("probs_y", torch.linspace(0.1, 0.9, H * D).reshape(H, D),
                         constraint=constraints.unit_interval)
    tones = pyro.plate("tones", D, dim=-1)
    with pyro.plate("sequences", sequences.shape[0], dim=-2):
        x = 0
        for t in pyro.markov(range(sequences.shape[1])):
            with poutine.mask(mask=(t < lengths).unsqueeze(-1)):
                x = pyro.sample(f"x_{t}", dist.Categorical(probs_x[x]),
                                infer={"enumerate": "parallel"})
                with tones:
                    pyro.sample(f"y_{t}", dist.Bernoulli(probs_y[x.squeeze(-1)]),
                                obs=sequences[:, t])


def empty_guide(sequences: torch.Tensor, lengths: torch.Tensor) -> None:
    pass


def data() -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(0)
    lengths = torch.randint(T // 2, T + 1, (N,), generator=gen)
    return (torch.rand(N, T, D, generator=gen) < 0.3).float(), lengths


def with_fit(x: tuple, steps: int) -> tuple[float, float]:
    pyro.clear_param_store()
    c0 = time.thread_time()
    res = fit(model, None, x, objective="likelihood", steps=steps, batch_size=None, lr=0.01,
              progress=False, log_every=steps)
    return (time.thread_time() - c0) / steps, res.history[-1]["loss"] * N


def with_svi(x: tuple, steps: int) -> tuple[float, float]:
    pyro.clear_param_store()
    pyro.set_rng_seed(0)
    svi = pyro.infer.SVI(model, empty_guide, pyro.optim.Adam({"lr": 0.01}),
                         pyro.infer.TraceEnum_ELBO(max_plate_nesting=2))
    perm = torch.randperm(N, generator=torch.Generator().manual_seed(0))  # fit's batch order
    batch = (x[0][perm], x[1][perm])
    c0 = time.thread_time()
    total = 0.0
    for _ in range(steps):
        total += svi.step(*batch)
    return (time.thread_time() - c0) / steps, total / steps


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--steps", type=int, default=60)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    x = data()
    with_fit(x, 5), with_svi(x, 5)  # warm up both paths
    rows: dict[str, list[tuple[float, float]]] = {"fit": [], "svi": []}
    for _ in range(args.rounds):
        rows["fit"].append(with_fit(x, args.steps))
        rows["svi"].append(with_svi(x, args.steps))
    for k, label in (("svi", "Pyro SVI + TraceEnum_ELBO"), ("fit", "probgen fit, likelihood")):
        cpu = statistics.median(c for c, _ in rows[k]) * 1e3
        print(f"{label:>26}: {cpu:.3f} ms/step CPU (median), mean loss {rows[k][-1][1]:.4f}")
    ratio = statistics.median(a[0] / b[0] for a, b in zip(rows["fit"], rows["svi"]))
    print(f"fit / SVI per step: {ratio:.3f} (goal <= 1.05)")


if __name__ == "__main__":
    main()
