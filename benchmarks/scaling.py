"""Data-parallel scaling of ``fit``: steps/s and examples/s of the digits VAE at 1 and 2
processes on CPU (gloo), and on 1..N GPUs (NCCL) when the machine has them, in one run.

Each setting is its own ``torchrun --standalone --nproc_per_node P`` launch of this script's
worker, which trains the family's default digits VAE (MLP encoder, pixel decoder, 16-d
latent) through ``fit`` with a *global* batch of B examples (so P processes each compute
B / P). The rate is measured after ``--warmup`` steps (process start, first allocations,
and for CUDA the kernel caches) over the next ``--steps``; the table shows the median of
``--repeats`` launches, interleaved so that a shared machine's load falls on all alike.
``speedup`` is examples/s against 1 process with the same batch and device. Every process
runs one torch thread (torchrun's default).

    python benchmarks/scaling.py [--batch 100 400] [--steps 40] [--repeats 2] [--gpu]

Measured here (``--repeats 1``; AMD EPYC, 2 cores shared with other users' jobs, load
average 23.5, torch 2.13.0+cpu, no GPU): 1 / 2 processes at a global batch of 100: 371 /
335 examples/s (0.90x: with 50 examples a rank the all-reduce of 430k gradients and the
process overhead outweigh the halved compute); at 400: 471 / 644 examples/s (1.37x).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path


def machine() -> str:
    """A one-line description of this machine (CPU model, cores, load, torch, GPUs)."""
    import torch

    model = platform.processor() or "?"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    gpus = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
    return (f"{model}, {cores} cores available (load average {load:.1f}), torch "
            f"{torch.__version__}" + (f", GPUs: {', '.join(gpus)}" if gpus else ", no GPU"))


def worker(args: argparse.Namespace) -> None:
    """One process of a launch: train, then rank 0 writes the measured rate."""
    import pyro
    import torch

    from probgen.data.splits import load_splits
    from probgen.infer import distributed
    from probgen.infer.fit import fit
    from probgen.models.vae.vae import VAE

    torch.set_num_threads(1)
    x = load_splits("digits").train
    pyro.clear_param_store()
    torch.manual_seed(0)
    vae = VAE((64,), 16, likelihood="pixelcnn", num_levels=17, hidden=(256, 256))
    total = args.warmup + args.steps
    res = fit(vae, None, x, steps=total, batch_size=args.batch[0], lr=1e-3, progress=False,
              log_every=args.warmup if args.steps % args.warmup == 0 else 1,
              device=args.device, sample_fn=None)
    times = {row["step"]: row["time"] for row in res.history}
    seconds = times[total] - times[args.warmup]
    if distributed.is_main():
        Path(args.result).write_text(json.dumps({
            "steps_per_s": args.steps / seconds, "loss": res.history[-1]["loss"]}))


def launch(nproc: int, batch: int, device: str, steps: int, warmup: int, folder: Path) -> dict:
    result = folder / f"r-{len(list(folder.iterdir()))}.json"
    env = {k: v for k, v in os.environ.items()
           if k not in ("WORLD_SIZE", "RANK", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")}
    env["OMP_NUM_THREADS"] = "1"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone",
           f"--nproc_per_node={nproc}", __file__, "--worker", "--batch", str(batch),
           "--device", device, "--steps", str(steps), "--warmup", str(warmup),
           "--result", str(result)]
    proc = subprocess.run(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                          text=True)
    if not result.exists():
        raise SystemExit(f"{nproc} process(es), batch {batch}, {device} failed:\n"
                         f"{proc.stderr[-3000:]}")
    return json.loads(result.read_text())


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--batch", type=int, nargs="+", default=[100, 400],
                   help="global batch sizes")
    p.add_argument("--steps", type=int, default=40)
    p.add_argument("--warmup", type=int, default=10)
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--gpu", action="store_true", help="also 1..N GPUs (when there are any)")
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--device", default="cpu", help=argparse.SUPPRESS)
    p.add_argument("--result", default=None, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.worker:
        worker(args)
        return
    import torch

    print(machine())
    settings = [("cpu", n) for n in (1, 2)]
    if args.gpu and torch.cuda.is_available():
        settings += [("cuda", n) for n in range(1, torch.cuda.device_count() + 1)]
    rates: dict[tuple, list[float]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for _ in range(args.repeats):
            for batch in args.batch:
                for device, nproc in settings:  # interleaved
                    r = launch(nproc, batch, device, args.steps, args.warmup, Path(tmp))
                    rates.setdefault((device, nproc, batch), []).append(r["steps_per_s"])
    print("\n| device | processes | global batch | steps/s | examples/s | speedup |")
    print("|---|---|---|---|---|---|")
    for (device, nproc, batch), values in rates.items():
        sps = statistics.median(values)
        base = statistics.median(rates[(device, 1, batch)])
        print(f"| {device} | {nproc} | {batch} | {sps:.2f} | {sps * batch:.0f} | "
              f"{sps / base:.2f}x |")


if __name__ == "__main__":
    main()
