"""Neural spline flows, probgen vs zuko, trained side by side with the same loop.

For each 2-D density (default: moons and checkerboard) it builds

- zuko 1.6 ``zuko.flows.NSF(2, transforms=6, hidden_features=(64, 64), bins=8)``
  (masked autoregressive, rational-quadratic splines);
- probgen ``nsf(2, num_layers=6, hidden=(64, 64), bins=8, coupling=False)`` (now the
  probgen-native ``MaskedSplineAutoregressive`` layer of
  [`probgen.nn.spline_autoregressive`][probgen.nn.spline_autoregressive] inside a Pyro
  ``TransformedDistribution``);
- with ``--before``: the same flow built from Pyro's ``SplineAutoregressive`` (inverted, with
  permutation layers between), which is what ``nsf(coupling=False)`` was before.

and trains each with a plain Adam loop (lr 1e-3, batch 256, the same batches for every side)
for ``--steps`` steps. The sides take turns step by step, so a busy machine slows them alike;
the median step time of each, the ratio to zuko and the test NLL (nats, 20000 held-out points)
at equal steps are printed. Goal: probgen <= 1.0x zuko's time, NLL within 0.03 nats.

Run: ``python benchmarks/flows_vs_zuko.py [--steps 2000] [--data moons checkerboard]
[--before]`` (needs ``pip install -e .[bench]`` for zuko).
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import torch
from torch import nn

from probgen.data import densities
from probgen.models.flows.flows import Flow, nsf


def pyro_nsf(dim: int, num_layers: int, hidden: tuple[int, ...], bins: int) -> Flow:
    """``nsf(coupling=False)`` as it was: Pyro's spline layers, inverted, permuted between."""
    import pyro.distributions.transforms as T

    from probgen.nn.flow_layers import Invert, Permutation

    scoring: list[nn.Module] = []
    for i in range(num_layers):
        if i:
            scoring.append(Permutation(torch.arange(dim - 1, -1, -1)))
        scoring.append(Invert(T.spline_autoregressive(dim, hidden_dims=list(hidden),
                                                      count_bins=bins, bound=3.0)))
    return Flow(scoring[::-1], event_shape=(dim,))


def sides(before: bool) -> dict:
    import zuko

    def make_zuko():
        flow = zuko.flows.NSF(2, transforms=6, hidden_features=(64, 64), bins=8)
        return flow, lambda x: -flow().log_prob(x).mean()

    def make_probgen():
        flow = nsf(2, num_layers=6, hidden=(64, 64), bins=8, coupling=False)
        return flow, lambda x: -flow().log_prob(x).mean()

    def make_pyro():
        flow = pyro_nsf(2, 6, (64, 64), 8)
        return flow, lambda x: -flow().log_prob(x).mean()

    out = {"zuko": make_zuko, "probgen": make_probgen}
    if before:
        out["probgen before (Pyro splines)"] = make_pyro
    return out


def run(name: str, steps: int, batch: int, before: bool, seed: int) -> dict:
    data = getattr(densities, name)
    train = data(50000, seed=seed)
    test = data(20000, seed=seed + 1)
    models = {}
    for side, make in sides(before).items():
        torch.manual_seed(seed)
        flow, loss_fn = make()
        models[side] = (flow, loss_fn, torch.optim.Adam(flow.parameters(), lr=1e-3), [])
    g = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        x = train[torch.randint(len(train), (batch,), generator=g)]
        for _flow, loss_fn, opt, times in models.values():  # the sides take turns
            t0 = time.perf_counter()
            loss = loss_fn(x)
            opt.zero_grad()
            loss.backward()
            opt.step()
            times.append(time.perf_counter() - t0)
    result = {}
    with torch.no_grad():
        for side, (_flow, loss_fn, _, times) in models.items():
            result[side] = (statistics.median(times), float(loss_fn(test)))
    return result


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", nargs="+", default=["moons", "checkerboard"])
    p.add_argument("--steps", type=int, default=2000)
    p.add_argument("--batch", type=int, default=256)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--before", action="store_true", help="also time Pyro's spline layers")
    args = p.parse_args()
    torch.set_num_threads(1)
    for name in args.data:
        res = run(name, args.steps, args.batch, args.before, args.seed)
        t_z, nll_z = res["zuko"]
        print(f"== {name}: 6 layers, 64x2 hidden, 8 bins, {args.steps} steps, batch "
              f"{args.batch}, 1 torch thread, load average {os.getloadavg()[0]:.1f}")
        for side, (t, nll) in res.items():
            print(f"  {side:30s} {1e3 * t:6.2f} ms/step  ({t / t_z:4.2f}x zuko)  "
                  f"test NLL {nll:.3f}  ({nll - nll_z:+.3f} vs zuko)")


if __name__ == "__main__":
    main()
