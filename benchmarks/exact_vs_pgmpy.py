"""bn.query against pgmpy's VariableElimination on every discrete network pgmpy ships.

For each network: load it offline, draw random questions (1-2 query variables, 0-4
evidence variables taken from a forward sample so the evidence is possible), answer each
with pgmpy and probgen, and report the largest absolute difference. A network where pgmpy's
VE does not finish within ``--timeout`` seconds (per network, in a worker process) is
reported as such; probgen's own answer time is printed for it too.

Run: ``python benchmarks/exact_vs_pgmpy.py [--questions 20] [--timeout 120]``.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import time
import warnings

import numpy as np


def _questions(bn, n, seed):
    rng = np.random.default_rng(seed)
    rows = bn.sample(n, seed=seed)
    out = []
    for i in range(n):
        k_q = int(rng.integers(1, 3))
        k_e = int(rng.integers(0, min(5, len(bn.nodes) - k_q + 1)))
        chosen = list(rng.choice(bn.nodes, size=k_q + k_e, replace=False))
        out.append((chosen[:k_q], {v: rows.iloc[i][v] for v in chosen[k_q:]}))
    return out


def _pgmpy_answers(name, questions, conn):
    warnings.simplefilter("ignore")
    from pgmpy.inference import VariableElimination
    from pgmpy.utils import get_example_model

    ve = VariableElimination(get_example_model(name))
    answers = []
    for q, ev in questions:
        f = ve.query(q, evidence=ev or None, show_progress=False)
        answers.append(np.moveaxis(f.values, [f.variables.index(v) for v in q], range(len(q))))
    conn.send(answers)


def check(name: str, n: int, timeout: float, seed: int) -> str:
    from probgen.graph import BayesNet

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        bn = BayesNet.load(name)
    questions = _questions(bn, n, seed)
    from probgen.errors import QueryTooLargeError

    try:
        bn.query(*questions[0])  # compile the network's tables once, outside the timing
    except QueryTooLargeError:
        pass
    t0 = time.perf_counter()
    ours = []
    for q, ev in questions:
        try:
            ours.append(bn.query(q, evidence=ev).values)
        except QueryTooLargeError:
            ours.append(None)  # refused: the contraction would need > 2 GiB
    t_ours = (time.perf_counter() - t0) / n
    refused = sum(a is None for a in ours)
    parent, child = mp.Pipe()
    proc = mp.Process(target=_pgmpy_answers, args=(name, questions, child))
    t0 = time.perf_counter()
    proc.start()
    if not parent.poll(timeout):
        proc.kill()
        return f"{name:12s} {len(bn.nodes):5d} nodes  pgmpy VE did not finish in " \
               f"{timeout:.0f} s; probgen {1e3 * t_ours:.1f} ms/query, " \
               f"refused {refused} as too large"
    theirs = parent.recv()
    proc.join()
    diffs = [float(np.abs(a - b).max()) for a, b in zip(ours, theirs) if a is not None]
    diff = max(diffs) if diffs else float("nan")
    ok = "OK " if diff <= 1e-9 and not refused else "BAD"
    if refused:
        ok += f" (probgen refused {refused} that pgmpy answered)"
    return f"{name:12s} {len(bn.nodes):5d} nodes  {ok} max|diff| {diff:.1e} over {n} " \
           f"queries; probgen {1e3 * t_ours:.1f} ms/query " \
           f"(pgmpy incl. load {time.perf_counter() - t0:.1f} s)"


def main() -> None:
    from probgen.graph import PGMPY_NETWORKS

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--networks", nargs="*", default=list(PGMPY_NETWORKS))
    p.add_argument("--questions", type=int, default=20)
    p.add_argument("--timeout", type=float, default=120.0)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    for name in args.networks:
        print(check(name, args.questions, args.timeout, args.seed), flush=True)


if __name__ == "__main__":
    main()
