"""Exact inference speed: probgen vs pgmpy's VariableElimination, measured in one run.

For each network (default: alarm and hepar2) it times

- single queries: the same random questions (1-2 query variables, 3 evidence variables
  drawn from a forward sample so the evidence is possible) answered one at a time by
  ``pgmpy VariableElimination.query`` and by ``probgen BayesNet.query``;
- a batch: N records (default 1000) with 3 observed variables each (different variables
  per record, NaN elsewhere), answered by pgmpy one query per record and by one
  ``BayesNet.query_batch`` call (its first call on a fresh network, compile included).

Every answer is compared (max abs difference printed) and the ratios are printed:
``single ratio`` = pgmpy time / probgen time per query (>= 1 means probgen is no slower),
``batch ratio`` = probgen records per second / pgmpy queries per second (goal >= 100), from
``--repeats`` interleaved rounds (a cold batch, then pgmpy on the next slice of records),
medians of wall-clock and of CPU time (CPU time is robust to a machine shared with others).

Run: ``python benchmarks/bn_query.py [--networks alarm hepar2] [--records 1000]``.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
import warnings

import numpy as np
import pandas as pd

from probgen.graph import BayesNet


def _pgmpy_model(name: str):
    from pgmpy.utils import get_example_model

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return get_example_model(name)


def _aligned(factor, variables):
    return np.moveaxis(
        factor.values, [factor.variables.index(v) for v in variables], range(len(variables))
    )


def bench(name: str, n_single: int, n_records: int, seed: int, repeats: int) -> dict:
    from pgmpy.inference import VariableElimination

    model = _pgmpy_model(name)
    bn = BayesNet.from_pgmpy(model)
    ve = VariableElimination(model)
    rng = np.random.default_rng(seed)
    rows = bn.sample(max(n_single, n_records), seed=seed)
    nodes = bn.nodes

    # --- single queries -------------------------------------------------------------
    questions = []
    for i in range(n_single):
        chosen = list(rng.choice(nodes, size=5, replace=False))
        nq = int(rng.integers(1, 3))
        questions.append((chosen[:nq], {v: rows.iloc[i][v] for v in chosen[nq:]}))
    bn.query(questions[0][0], questions[0][1])  # compile once (as pgmpy builds its model)
    t_pg = t_pb = 0.0
    err = 0.0
    for q, ev in questions:
        t0 = time.perf_counter()
        a = ve.query(q, evidence=ev, show_progress=False)
        t1 = time.perf_counter()
        b = bn.query(q, evidence=ev)
        t2 = time.perf_counter()
        t_pg += t1 - t0
        t_pb += t2 - t1
        err = max(err, float(np.abs(_aligned(a, q) - b.values).max()))

    # --- batched ---------------------------------------------------------------------
    target = nodes[int(rng.integers(len(nodes)))]
    others = [n for n in nodes if n != target]
    records = []
    for i in range(n_records):
        chosen = rng.choice(others, size=3, replace=False)
        records.append({v: rows.iloc[i][v] for v in chosen})
    evidence = pd.DataFrame(records)
    # Interleaved repeats: a cold query_batch (fresh network, compile included), then pgmpy on
    # the next slice of the records; medians of per-record times, wall clock and CPU time.
    berr = 0.0
    wall_b, cpu_b, wall_l, cpu_l = [], [], [], []
    per = max(1, n_records // repeats)
    for r in range(repeats):
        fresh = BayesNet.from_pgmpy(model)
        t0, c0 = time.perf_counter(), time.process_time()
        post = fresh.query_batch([target], evidence)
        wall_b.append((time.perf_counter() - t0) / n_records)
        cpu_b.append((time.process_time() - c0) / n_records)
        t0, c0 = time.perf_counter(), time.process_time()
        for i in range(r * per, min((r + 1) * per, n_records)):
            a = ve.query([target], evidence=records[i], show_progress=False)
            berr = max(berr, float(np.abs(a.values - post[i].numpy()).max()))
        n = min((r + 1) * per, n_records) - r * per
        wall_l.append((time.perf_counter() - t0) / n)
        cpu_l.append((time.process_time() - c0) / n)
    t_loop, t_batch = statistics.median(wall_l), statistics.median(wall_b)
    c_loop, c_batch = statistics.median(cpu_l), statistics.median(cpu_b)
    return {
        "network": name,
        "pgmpy_ms_per_query": 1e3 * t_pg / n_single,
        "probgen_ms_per_query": 1e3 * t_pb / n_single,
        "single_ratio": t_pg / t_pb,
        "single_max_abs_diff": err,
        "pgmpy_queries_per_s": 1 / t_loop,
        "probgen_batch_records_per_s": 1 / t_batch,
        "batch_ratio": t_loop / t_batch,
        "batch_ratio_cpu": c_loop / c_batch,
        "batch_max_abs_diff": berr,
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--networks", nargs="+", default=["alarm", "hepar2"])
    p.add_argument("--single", type=int, default=200, help="number of single queries")
    p.add_argument("--records", type=int, default=1000, help="records in the batch")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--repeats", type=int, default=5,
                   help="interleaved (batch, pgmpy slice) rounds; medians are reported")
    args = p.parse_args()
    for name in args.networks:
        r = bench(name, args.single, args.records, args.seed, args.repeats)
        print(f"== {name}")
        print(f"  single query: pgmpy {r['pgmpy_ms_per_query']:.3f} ms, probgen "
              f"{r['probgen_ms_per_query']:.3f} ms  -> single ratio {r['single_ratio']:.2f}x "
              f"(max |diff| {r['single_max_abs_diff']:.1e})")
        print(f"  batch of {args.records}: pgmpy {r['pgmpy_queries_per_s']:.0f} queries/s, "
              f"probgen {r['probgen_batch_records_per_s']:.0f} records/s -> batch ratio "
              f"{r['batch_ratio']:.1f}x, CPU-time ratio {r['batch_ratio_cpu']:.1f}x "
              f"(max |diff| {r['batch_max_abs_diff']:.1e}; goal >= 100x, <= 1e-12)")
    print(f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")


if __name__ == "__main__":
    main()
