"""Steps per second of ``probgen train flow --data moons --steps 200`` with the default thread
setting against 1 and 2 torch threads, alone and beside a busy process, in one run.

Each setting runs as its own ``python -m probgen train`` process (so torch's thread pool
starts fresh), interleaved with the others and repeated; the table shows the median
``steps_per_s`` the engine reports in ``metrics.json``. The busy neighbour is another
process spinning on one core, as another user's job on a shared machine. The default is
acceptable when it is never slower than the best setting by more than 20%.

    python benchmarks/threads.py [--repeats 3] [--steps 200]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

SETTINGS = {"default": [], "1 thread": ["--threads", "1"], "2 threads": ["--threads", "2"]}
BUSY = "import time\nt = time.time()\nwhile time.time() - t < 3600:\n    pass\n"


def one_run(extra: list[str], steps: int, folder: Path) -> float:
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "MKL_NUM_THREADS")}
    out = folder / f"run-{len(list(folder.iterdir()))}"
    subprocess.run([sys.executable, "-m", "probgen", "train", "flow", "--data", "moons",
                    "--steps", str(steps), "--quiet", "--out", str(out), "--set",
                    f"val_every={steps}", "patience=none", *extra],
                   check=True, env=env, stdout=subprocess.DEVNULL)
    return float(json.loads((out / "metrics.json").read_text())["steps_per_s"])


def measure(repeats: int, steps: int, busy: bool) -> dict[str, float]:
    neighbour = subprocess.Popen([sys.executable, "-c", BUSY]) if busy else None
    try:
        with tempfile.TemporaryDirectory() as tmp:
            rates: dict[str, list[float]] = {k: [] for k in SETTINGS}
            for _ in range(repeats):
                for name, extra in SETTINGS.items():  # interleaved: the load is shared alike
                    rates[name].append(one_run(extra, steps, Path(tmp)))
        return {k: statistics.median(v) for k, v in rates.items()}
    finally:
        if neighbour is not None:
            neighbour.kill()
            neighbour.wait()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--steps", type=int, default=200)
    args = p.parse_args()
    from probgen.models.family import auto_threads

    print(f"cores available: {len(os.sched_getaffinity(0))}; default threads: {auto_threads()}")
    print(f"{'condition':<14}" + "".join(f"{k:>12}" for k in SETTINGS) + f"{'default/best':>14}")
    worst = 1.0
    for busy in (False, True):
        rates = measure(args.repeats, args.steps, busy)
        ratio = rates["default"] / max(rates.values())
        worst = min(worst, ratio)
        label = "beside busy" if busy else "alone"
        print(f"{label:<14}" + "".join(f"{v:>12.1f}" for v in rates.values()) + f"{ratio:>14.2f}")
    print(f"steps/s (median of {args.repeats}); the default is within "
          f"{(1 - worst) * 100:.0f}% of the best setting: {'OK' if worst >= 0.8 else 'TOO SLOW'}")


if __name__ == "__main__":
    main()
