"""Importance-sampled NLL: one guide/model run per sample (the loop) vs chunks of samples.

The setting of ``probgen train vae``'s test figure: the default VAE (PixelCNN decoder,
16 latents, 256 x 256 MLPs) on the 447 digits of the test split, the per-example guide
(``LocalGuide``, started from the encoder), K = 1000 samples, all 447 examples in one batch.
The weights are the same untrained ones for both sides: the cost does not depend on them.

- loop: ``per_example_log_weights`` (one guide run and one model run per sample), as
  ``importance_nll`` did before;
- chunked: [`chunked_log_weights`][probgen.infer.likelihood.chunked_log_weights] (chunks of
  ``CHUNK_ROWS // 447`` samples, one run each), as ``importance_nll`` does now.

The two sides alternate ``--repeats`` times; medians are printed with the ratio and both NLL
estimates (different draws, so they agree within their Monte-Carlo error; that the chunked
weights equal the loop's for the same draws is tests/test_likelihood_chunks.py).

Run: ``python benchmarks/importance_nll.py [--samples 1000] [--repeats 3]``.
"""

from __future__ import annotations

import argparse
import math
import os
import statistics
import time

import torch

from probgen.data.digits import load_digits
from probgen.infer.likelihood import chunked_log_weights
from probgen.infer.sites import per_example_log_weights
from probgen.models.vae.train import LocalGuide, VAEConfig
from probgen.models.vae.vae import VAE


def nll(logw: torch.Tensor) -> float:
    k = logw.shape[0]
    return float(-(torch.logsumexp(logw.double(), 0) - math.log(k)).mean())


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--samples", type=int, default=1000, help="K, importance samples")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--chunk-size", type=int, default=None, help="default: CHUNK_ROWS // 447")
    p.add_argument("--likelihood", default="pixelcnn",
                   help="decoder: pixelcnn (the default VAE) or categorical (an MLP decoder)")
    p.add_argument("--examples", type=int, default=447, help="test digits scored (<= 447)")
    args = p.parse_args()
    torch.set_num_threads(1)
    cfg = VAEConfig()
    torch.manual_seed(0)
    vae = VAE((64,), cfg.latent_dim, likelihood=args.likelihood, hidden=cfg.hidden).eval()
    x = load_digits("test")[:args.examples]
    guide = LocalGuide(vae, x)
    batch = (x,)
    t_loop, t_chunk = [], []
    with torch.no_grad():
        for r in range(args.repeats):
            torch.manual_seed(r)
            t0 = time.perf_counter()
            a = per_example_log_weights(vae.model, guide, batch, args.samples, "data")
            t_loop.append(time.perf_counter() - t0)
            torch.manual_seed(r)
            t0 = time.perf_counter()
            b = chunked_log_weights(vae.model, guide, batch, args.samples, "data",
                                    args.chunk_size)
            t_chunk.append(time.perf_counter() - t0)
            print(f"  repeat {r}: loop {t_loop[-1]:.2f} s, chunked {t_chunk[-1]:.2f} s",
                  flush=True)
    tl, tc = statistics.median(t_loop), statistics.median(t_chunk)
    print(f"VAE ({args.likelihood} decoder), {len(x)} test digits, K={args.samples}, "
          f"1 torch thread, load average {os.getloadavg()[0]:.1f}")
    print(f"loop:    {tl:7.2f} s   NLL {nll(a):.3f} nats")
    print(f"chunked: {tc:7.2f} s   NLL {nll(b):.3f} nats")
    same = a.shape == b.shape and bool(torch.equal(a, b))
    diff = float((a - b).abs().max())
    print(f"max |log-weight difference| {diff:.1e} ({'the same draws: ' if same else ''}"
          "torch's CPU normal stream gives the same numbers when B x latent is a multiple of 16)")
    print(f"speedup (median of {args.repeats}): {tl / tc:.1f}x  (goal >= 5x)")


if __name__ == "__main__":
    main()
