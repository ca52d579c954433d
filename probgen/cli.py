"""The ``probgen`` command.

    probgen train vae --data digits --out runs/vae      # train a family, write a run folder
    probgen train arm|flow|gpt ...
    probgen sample RUN [--n 64] [--png FILE]            # sample grid from a run folder
    probgen eval RUN                                    # recompute the test figures
    probgen generate RUN --prompt "..." [--temperature 0.8 --top-k 20]   # GPT runs
    probgen graph list                                  # shipped and pgmpy networks
    probgen graph show NAME|PATH|RUN [--png FILE]       # draw a graph (PNG, matplotlib)
    probgen query NAME VAR [VAR ...] [--evidence VAR=STATE ...]

Each family module provides ``train_<family>(data=..., out=..., steps=..., seed=...,
fast=..., progress=...)`` returning the metrics dict, and ``load_<family>_run(folder)``.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import sys
from pathlib import Path
from typing import Any

__all__ = ["main", "FAMILIES"]

#: family -> (module, train function, run loader)
FAMILIES: dict[str, tuple[str, str, str]] = {
    "vae": ("probgen.models.vae.vae", "train_vae", "load_vae_run"),
    "arm": ("probgen.models.arm.arm", "train_arm", "load_arm_run"),
    "flow": ("probgen.models.flows.train", "train_flow", "load_flow_run"),
    "gpt": ("probgen.models.arm.gpt_train", "train_gpt", "load_gpt_run"),
}


def _family(name: str, which: int) -> Any:
    if name not in FAMILIES:
        raise SystemExit(f"probgen: unknown family {name!r}; choose from {sorted(FAMILIES)}")
    module, *funcs = FAMILIES[name]
    return getattr(importlib.import_module(module), funcs[which])


def _run_family(run: str) -> str:
    """The family that wrote a run folder (from its config.json)."""
    path = Path(run)
    cfg = path / "config.json"
    if not cfg.is_file():
        raise SystemExit(f"probgen: {run!r} is not a run folder (no config.json)")
    config = json.loads(cfg.read_text())
    family = config.get("family")
    if family is None and "model" in config and "vocab_size" in config.get("model", {}):
        family = "gpt"
    if family not in FAMILIES:
        raise SystemExit(f"probgen: cannot tell which family wrote {run!r} (family={family!r})")
    return family


def _print_metrics(metrics: Any) -> None:
    if isinstance(metrics, dict):
        for k, v in metrics.items():
            if isinstance(v, float):
                print(f"{k}: {v:.4f}")
            elif isinstance(v, (int, str, bool)):
                print(f"{k}: {v}")
    else:
        print(metrics)


def cmd_train(args: argparse.Namespace) -> None:
    fast = args.fast or os.environ.get("PROBGEN_FAST") == "1"
    if args.family == "gpt":
        from probgen.models.arm.gpt_train import train_gpt

        kwargs: dict[str, Any] = {"path": args.text, "out_dir": args.out, "seed": args.seed}
        if args.steps is not None:
            kwargs["steps"] = args.steps
        elif fast:
            kwargs["steps"] = 50
        run = train_gpt(**kwargs)
        print(f"trained GPT; run folder: {run.run_dir}")
        _print_metrics(run.history[-1] if run.history else {})
        return
    train = _family(args.family, 0)
    kwargs = {"data": args.data, "out": args.out, "seed": args.seed, "fast": fast}
    if args.steps is not None:
        kwargs["steps"] = args.steps
    metrics = train(**kwargs)
    _print_metrics(metrics)
    if args.out:
        print(f"run folder: {args.out}")


def cmd_sample(args: argparse.Namespace) -> None:
    family = _run_family(args.run)
    run = _family(family, 1)(args.run)
    png = args.png or str(Path(args.run) / "samples_cli.png")
    run.save_samples(png, n=args.n, seed=args.seed)
    print(f"wrote {png}")


def cmd_eval(args: argparse.Namespace) -> None:
    family = _run_family(args.run)
    run = _family(family, 1)(args.run)
    _print_metrics(run.evaluate())


def cmd_generate(args: argparse.Namespace) -> None:
    from probgen.models.arm.gpt_train import generate_text

    print(
        generate_text(
            args.run, args.prompt, max_new_tokens=args.max_new_tokens,
            temperature=args.temperature, top_k=args.top_k, top_p=args.top_p,
            repetition_penalty=args.repetition_penalty, seed=args.seed,
        )
    )


def cmd_graph(args: argparse.Namespace) -> None:
    from probgen.graph import BayesNet, available

    if args.action == "list":
        print("\n".join(available()))
        return
    if not args.name:
        raise SystemExit("probgen graph show: give a graph name, a graph file or a run folder")
    target = Path(args.name)
    if target.is_dir():
        family = _run_family(args.name)
        bn = BayesNet.load({"gpt": "arm"}.get(family, family))
    else:
        bn = BayesNet.load(args.name)
    png = args.png or f"{bn.name}.png"
    bn.draw(png)
    print(bn.factorization())
    print(f"wrote {png}")


def cmd_query(args: argparse.Namespace) -> None:
    from probgen.graph import BayesNet

    evidence = {}
    for item in args.evidence or []:
        if "=" not in item:
            raise SystemExit(f"probgen query: evidence {item!r} must look like VAR=STATE")
        k, v = item.split("=", 1)
        evidence[k] = v
    print(BayesNet.load(args.network).query(args.variables, evidence=evidence))


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="probgen", description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="command", required=True)

    t = sub.add_parser("train", help="train a model family and write a run folder")
    t.add_argument("family", choices=sorted(FAMILIES))
    t.add_argument("--data", default="digits", help="embedded data set name or local path")
    t.add_argument("--text", default=None, help="(gpt) a text file; default: embedded corpus")
    t.add_argument("--out", default=None, help="run folder to write")
    t.add_argument("--steps", type=int, default=None, help="training steps (family default)")
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--fast", action="store_true", help="a quick run (also PROBGEN_FAST=1)")
    t.set_defaults(func=cmd_train)

    s = sub.add_parser("sample", help="draw samples from a run folder into a PNG grid")
    s.add_argument("run")
    s.add_argument("--n", type=int, default=64)
    s.add_argument("--png", default=None)
    s.add_argument("--seed", type=int, default=0)
    s.set_defaults(func=cmd_sample)

    e = sub.add_parser("eval", help="evaluate a run folder on the test split")
    e.add_argument("run")
    e.set_defaults(func=cmd_eval)

    g = sub.add_parser("generate", help="continue a prompt with a GPT run")
    g.add_argument("run")
    g.add_argument("--prompt", required=True)
    g.add_argument("--max-new-tokens", type=int, default=200)
    g.add_argument("--temperature", type=float, default=0.8)
    g.add_argument("--top-k", type=int, default=None)
    g.add_argument("--top-p", type=float, default=None)
    g.add_argument("--repetition-penalty", type=float, default=1.0)
    g.add_argument("--seed", type=int, default=None)
    g.set_defaults(func=cmd_generate)

    gr = sub.add_parser("graph", help="list or draw graphs")
    gr.add_argument("action", choices=["list", "show"])
    gr.add_argument("name", nargs="?")
    gr.add_argument("--png", default=None)
    gr.set_defaults(func=cmd_graph)

    q = sub.add_parser("query", help="exact posterior on a discrete network")
    q.add_argument("network")
    q.add_argument("variables", nargs="+")
    q.add_argument("--evidence", nargs="*", metavar="VAR=STATE")
    q.set_defaults(func=cmd_query)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        args.func(args)
    except ValueError as err:  # probgen's input errors: one clear line, no traceback
        print(f"probgen: error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
