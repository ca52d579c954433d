"""Engine overhead: time per step of ``probgen.infer.fit.fit`` vs a plain PyTorch loop.

Both train the same hand-written digits VAE (binarised 8x8 digits, MLPs 64-256-256,
latent 8, Bernoulli decoder, batch 128) on the same minibatches with the same
single-sample ELBO, on CPU. The plain loop is what one writes by hand:
``torch.optim.Adam(params, lr=1e-3)`` and the ELBO from ``torch.distributions``.
``fit`` runs the Pyro model/guide under its light handler and uses a fused Adam kernel.

Printed figures (alternating rounds so machine load hits all alike; per-step thread CPU
time, median over rounds, which other processes' load does not inflate):

- ``engine overhead ratio``: fit / the plain loop (the headline figure);
- ``pure engine overhead``: fit / the plain loop given the same fused Adam, i.e. the cost
  of running Pyro primitives (plates, sample sites) under fit's handler.

Run:  python benchmarks/engine_overhead.py [--rounds 9] [--steps 150] [--threads 1]
"""

from __future__ import annotations

import argparse
import statistics
import time

import pyro
import pyro.distributions as dist
import torch
from torch import nn

from probgen.data.digits import load_digits
from probgen.infer.fit import fit


def mlp(sizes: list[int]) -> nn.Sequential:
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
        layers.append(nn.Linear(a, b))
        if i < len(sizes) - 2:
            layers.append(nn.ReLU())
    return nn.Sequential(*layers)


class DigitsVAE(nn.Module):
    """z ~ N(0, I_8); x ~ Bernoulli(decoder(z)); guide q(z|x) = N(encoder(x))."""

    def __init__(self, latent: int = 8):
        super().__init__()
        self.latent = latent
        self.encoder = mlp([64, 256, 256, 2 * latent])
        self.decoder = mlp([latent, 256, 256, 64])

    def model(self, x: torch.Tensor) -> None:
        with pyro.plate("data", x.shape[0]):
            prior = dist.Normal(0.0, 1.0).expand([x.shape[0], self.latent]).to_event(1)
            z = pyro.sample("z", prior)
            pyro.sample("x", dist.Bernoulli(logits=self.decoder(z)).to_event(1), obs=x)

    def guide(self, x: torch.Tensor) -> None:
        with pyro.plate("data", x.shape[0]):
            h = self.encoder(x)
            loc, log_scale = h[:, : self.latent], h[:, self.latent :]
            pyro.sample("z", dist.Normal(loc, log_scale.exp()).to_event(1))


def plain_loop(x_train: torch.Tensor, steps: int, seed: int, fused: bool | None):
    """The same ELBO written by hand; returns thread CPU seconds (and wall) per step."""
    torch.manual_seed(seed)
    vae = DigitsVAE()
    kw = {} if fused is None else {"fused": fused}
    opt = torch.optim.Adam(vae.parameters(), lr=1e-3, **kw)
    gen = torch.Generator().manual_seed(seed)
    order, pos, n = torch.randperm(len(x_train), generator=gen), 0, len(x_train)
    prior = torch.distributions.Normal(0.0, 1.0)
    c0, w0 = time.thread_time(), time.perf_counter()
    for _ in range(steps):
        if pos + 128 > n:
            order, pos = torch.randperm(n, generator=gen), 0
        x = x_train[order[pos : pos + 128]]
        pos += 128
        h = vae.encoder(x)
        q = torch.distributions.Normal(h[:, :8], h[:, 8:].exp())
        z = q.rsample()
        log_px = torch.distributions.Bernoulli(logits=vae.decoder(z)).log_prob(x).sum(-1)
        loss = -(log_px + prior.log_prob(z).sum(-1) - q.log_prob(z).sum(-1)).sum()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return (time.thread_time() - c0) / steps, (time.perf_counter() - w0) / steps


def engine(x_train: torch.Tensor, steps: int, seed: int, progress: bool) -> tuple[float, float]:
    torch.manual_seed(seed)
    vae = DigitsVAE()
    c0, w0 = time.thread_time(), time.perf_counter()
    fit(vae, None, x_train, objective="elbo", steps=steps, batch_size=128, lr=1e-3,
        seed=seed, progress=progress, log_every=50)
    return (time.thread_time() - c0) / steps, (time.perf_counter() - w0) / steps


def pyro_svi(x_train: torch.Tensor, steps: int, seed: int) -> tuple[float, float]:
    """For reference: Pyro's own SVI + Trace_ELBO on the same VAE and batches."""
    pyro.clear_param_store()
    torch.manual_seed(seed)
    vae = DigitsVAE()

    def model(x: torch.Tensor) -> None:
        pyro.module("vae", vae)
        vae.model(x)

    def guide(x: torch.Tensor) -> None:
        pyro.module("vae", vae)
        vae.guide(x)

    svi = pyro.infer.SVI(model, guide, pyro.optim.Adam({"lr": 1e-3}), pyro.infer.Trace_ELBO())
    gen = torch.Generator().manual_seed(seed)
    order, pos, n = torch.randperm(len(x_train), generator=gen), 0, len(x_train)
    c0, w0 = time.thread_time(), time.perf_counter()
    for _ in range(steps):
        if pos + 128 > n:
            order, pos = torch.randperm(n, generator=gen), 0
        svi.step(x_train[order[pos : pos + 128]])
        pos += 128
    return (time.thread_time() - c0) / steps, (time.perf_counter() - w0) / steps


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=9)
    ap.add_argument("--steps", type=int, default=150)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--progress", action="store_true", help="show fit's tqdm bar")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    x_train = load_digits("train", form="binary")
    plain_loop(x_train, 20, 0, True)  # warm up both paths
    engine(x_train, 20, 0, False)
    rows: dict[str, list[tuple[float, float]]] = {
        "plain": [], "plain_fused": [], "fit": [], "svi": []}
    for r in range(args.rounds):
        rows["plain"].append(plain_loop(x_train, args.steps, r, fused=None))
        rows["fit"].append(engine(x_train, args.steps, r, args.progress))
        rows["plain_fused"].append(plain_loop(x_train, args.steps, r, fused=True))
        if r < 3:
            rows["svi"].append(pyro_svi(x_train, args.steps, r))
    labels = {"plain": "plain loop, torch default Adam", "plain_fused": "plain loop, fused Adam",
              "fit": "probgen fit", "svi": "Pyro SVI (reference)"}
    for k, v in rows.items():
        cpu = statistics.median(c for c, _ in v) * 1e3
        wall = min(w for _, w in v) * 1e3
        print(f"{labels[k]:>31}: {cpu:.3f} ms/step CPU (median), {wall:.3f} ms/step wall (best)")

    def ratio(a: str, b: str, i: int = 0) -> float:
        return statistics.median(x[i] / y[i] for x, y in zip(rows[a], rows[b]))

    print(f"Pyro SVI / plain loop (3 rounds): {ratio('svi', 'plain'):.3f}")
    print(f"pure engine overhead (same fused Adam): {ratio('fit', 'plain_fused'):.3f}")
    print(f"wall-clock ratio (median over rounds): {ratio('fit', 'plain', 1):.3f}")
    print(f"engine overhead ratio: {ratio('fit', 'plain'):.3f}")


if __name__ == "__main__":
    main()
