"""Steps/s of the digits VAE through ``fit`` in fp32, bf16 and fp16 autocast and with
``torch.compile``, on CPU (and CUDA with ``--device cuda``), in one run.

Each setting trains the family's default digits VAE (MLP encoder, pixel decoder, 16-d
latent, batch 100) from the same seed in this process. ``steps/s`` is measured after
``--warmup`` steps (for ``compile`` the warm-up includes the compilation, reported as
``first steps s``), over the next ``--steps``; ``ratio`` is against fp32, and ``loss`` is
the training loss (nats per example) at the end, which shows what 16 bits cost in accuracy.
Settings the machine lacks are reported as such (a one-line error). Settings are
interleaved over ``--repeats`` rounds; the table shows medians.

    python benchmarks/precision.py [--steps 60] [--warmup 20] [--repeats 2] [--device cpu]

Measured here (``--steps 40 --repeats 1``; AMD EPYC without bf16/fp16 matrix units, 2
cores shared, load average 23): fp32 3.64 steps/s; bf16 0.53 (0.15x, loss 111.38 vs
111.41); fp16 0.46 (0.13x; the scaler skips the first steps while its scale settles, loss
115.67); fp32 + compile 2.18 (0.60x after 150 s of compilation). On such a CPU, stay in
fp32; 16 bits and compilation pay on GPUs (not measured: no GPU in this session).
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from scaling import machine  # noqa: E402

SETTINGS = {"fp32": ("fp32", False), "bf16": ("bf16", False), "fp16": ("fp16", False),
            "fp32 + compile": ("fp32", True)}


def one(precision: str, compile_: bool, steps: int, warmup: int, device: str) -> dict:
    import pyro
    import torch

    from probgen.data.splits import load_splits
    from probgen.infer.fit import fit
    from probgen.models.vae.vae import VAE

    x = load_splits("digits").train
    pyro.clear_param_store()
    torch.manual_seed(0)
    vae = VAE((64,), 16, likelihood="pixelcnn", num_levels=17, hidden=(256, 256))
    total = warmup + steps
    res = fit(vae, None, x, steps=total, batch_size=100, lr=1e-3, progress=False,
              log_every=warmup if steps % warmup == 0 else 1, device=device,
              precision=precision, compile=compile_)
    times = {row["step"]: row["time"] for row in res.history}
    return {"steps_per_s": steps / (times[total] - times[warmup]), "first": times[warmup],
            "loss": res.history[-1]["loss"]}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=60)
    p.add_argument("--warmup", type=int, default=20)
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--device", default="cpu")
    args = p.parse_args()
    import torch

    from probgen.errors import ProbgenError

    torch.set_num_threads(1)
    print(machine() + f"; device {args.device}, 1 torch thread")
    rows: dict[str, list[dict]] = {k: [] for k in SETTINGS}
    errors: dict[str, str] = {}
    for _ in range(args.repeats):
        for name, (prec, comp) in SETTINGS.items():
            if name in errors:
                continue
            try:
                rows[name].append(one(prec, comp, args.steps, args.warmup, args.device))
            except ProbgenError as exc:
                errors[name] = str(exc)
    base = statistics.median(r["steps_per_s"] for r in rows["fp32"])
    print("\n| setting | steps/s | ratio to fp32 | first steps s | loss at the end |")
    print("|---|---|---|---|---|")
    for name, rs in rows.items():
        if name in errors:
            print(f"| {name} | not available: {errors[name]} | | | |")
            continue
        sps = statistics.median(r["steps_per_s"] for r in rs)
        first = statistics.median(r["first"] for r in rs)
        loss = statistics.median(r["loss"] for r in rs)
        print(f"| {name} | {sps:.2f} | {sps / base:.2f}x | {first:.1f} | {loss:.2f} |")


if __name__ == "__main__":
    main()
