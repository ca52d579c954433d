"""The ``probgen`` command.

    probgen families                                    # the families and their data
    probgen train vae --data digits --out runs/vae      # train a family, write a run folder
    probgen train vae --set beta=4 latent_dim=8         # change any setting (--show-config)
    probgen train flow --data points.npy                # a local (N, D) array
    probgen train vae --out runs/vae --resume           # continue a run exactly
    probgen sample RUN --n 500 --out s.npy              # samples as an array (or .png, .pt)
    probgen sample RUN --set sampler=ddim steps=50      # sample-time settings of the family
    probgen eval RUN                                    # recompute the test figures
    probgen report RUN [RUN ...] --out report           # one Markdown page comparing runs
    probgen generate RUN --prompt "..."                 # continue a prompt with a GPT run
    probgen finetune RUN --data ex.jsonl --out runs/ft  # instruction-tune a GPT run (Alpaca)
    probgen respond RUN --instruction "..." [--input ...]  # a fine-tuned GPT's answer
    probgen graph list | show NAME|PATH|RUN             # shipped networks; draw one
    probgen query NAME VAR [VAR ...] --evidence VAR=STATE ...

Every family goes through the same contract ([`probgen.models.family`][probgen.models.family]).
Input errors print one line naming the culprit and exit with status 2.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any, NoReturn

__all__ = ["main", "build_parser"]


class _Parser(argparse.ArgumentParser):
    """argparse with one-line errors (status 2) instead of a usage block."""

    def error(self, message: str) -> NoReturn:
        print(f"{self.prog}: error: {message} (see {self.prog} --help)", file=sys.stderr)
        raise SystemExit(2)


def _print_metrics(metrics: dict[str, Any]) -> None:
    for k, v in metrics.items():
        if isinstance(v, float):
            print(f"{k}: {v:.4f}")
        elif isinstance(v, (int, str, bool)) or v is None:
            print(f"{k}: {v}")


def _default_out(family: str) -> Path:
    base = Path("runs") / family
    if not base.exists():
        return base
    i = 2
    while (Path("runs") / f"{family}-{i}").exists():
        i += 1
    return Path("runs") / f"{family}-{i}"


def cmd_families(args: argparse.Namespace) -> None:
    from probgen.models.family import family_names, get_family

    for name in family_names():
        fam = get_family(name)
        print(f"{name:8s} {fam.description}")
        print(f"{'':8s} data: {', '.join(fam.data_names)} (default {fam.default_data}); "
              f"local files of kind {', '.join(fam.kinds)}")


def _launch(nproc: int, argv: list[str]) -> int:
    """``probgen train ... --nproc N``: the same command under torchrun, N processes."""
    from probgen.errors import ProbgenError

    if nproc < 1:
        raise ProbgenError(f"--nproc: must be >= 1, got {nproc}")
    if "WORLD_SIZE" in os.environ:
        raise ProbgenError("--nproc: already running under torchrun (WORLD_SIZE is set); "
                           "drop --nproc")
    rest, skip = [], False
    for a in argv:
        if skip:
            skip = False
        elif a == "--nproc":
            skip = True
        elif not a.startswith("--nproc="):
            rest.append(a)
    import subprocess

    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone",
           f"--nproc_per_node={nproc}", "-m", "probgen", *rest]
    return subprocess.call(cmd)


def cmd_train(args: argparse.Namespace) -> int | None:
    from probgen.infer import distributed
    from probgen.models.config import describe_config
    from probgen.models.family import get_family, train

    family = get_family(args.family)
    if args.nproc is not None and not args.show_config:
        return _launch(args.nproc, args.argv)
    fast = args.fast or os.environ.get("PROBGEN_FAST") == "1"
    if args.show_config:
        from probgen.data.splits import EMBEDDED

        kind = EMBEDDED.get(args.data or family.default_data, "vectors")
        if kind not in family.kinds:
            kind = family.kinds[0]
        print(f"{family.name} settings (for {kind} data{', fast mode' if fast else ''}):")
        print(describe_config(family.config, family.layers(kind, fast)))
        return
    sets = list(args.set or [])
    for flag in ("steps", "seed", "threads", "device"):
        value = getattr(args, flag)
        if value is not None:
            sets.append(f"{flag}={value}")
    out = Path(args.out) if args.out else _default_out(family.name)
    run = train(family, data=args.data, out=out, config=args.config, sets=sets, fast=fast,
                progress=not args.quiet, resume=args.resume, overwrite=args.overwrite,
                tensorboard=args.tensorboard)
    if distributed.is_main():
        _print_metrics(run.metrics)
        print(f"run folder: {out}")
    distributed.finish()  # every rank leaves the group together, before interpreter exit
    return None


def cmd_sample(args: argparse.Namespace) -> None:
    from probgen.models.family import load_run

    run = load_run(args.run).set_sampling(sets=args.set or [])
    out = args.out or str(Path(args.run) / f"samples_cli{Path(run.sample_file).suffix}")
    path = run.save_samples(out, n=args.n, seed=args.seed)
    print(f"wrote {args.n} samples to {path}")


def cmd_eval(args: argparse.Namespace) -> None:
    from probgen.models.family import load_run

    run = load_run(args.run).set_sampling(sets=args.set or [])
    _print_metrics(run.evaluate(progress=not args.quiet))


def cmd_report(args: argparse.Namespace) -> None:
    from probgen.models.report import write_report

    print(f"wrote {write_report(args.runs, args.out)}")


def cmd_generate(args: argparse.Namespace) -> None:
    from probgen.models.arm.gpt_train import generate_text

    print(generate_text(args.run, args.prompt, max_new_tokens=args.max_new_tokens,
                        temperature=args.temperature, top_k=args.top_k, top_p=args.top_p,
                        repetition_penalty=args.repetition_penalty, stop=args.stop,
                        seed=args.seed, use_cache=not args.no_cache))


def cmd_finetune(args: argparse.Namespace) -> None:
    from probgen.models.arm.finetune import FinetuneConfig, finetune_run
    from probgen.models.config import describe_config

    if args.show_config:
        print("finetune settings:")
        print(describe_config(FinetuneConfig))
        return
    if not args.data:
        from probgen.errors import ProbgenError

        raise ProbgenError("data: give the instructions file (--data FILE.jsonl)")
    sets = list(args.set or [])
    for flag in ("steps", "seed", "threads", "device"):
        value = getattr(args, flag)
        if value is not None:
            sets.append(f"{flag}={value}")
    out = Path(args.out) if args.out else _default_out("finetune")
    run = finetune_run(args.run, args.data, out, config=args.config, sets=sets,
                       progress=not args.quiet, resume=args.resume, overwrite=args.overwrite,
                       tensorboard=args.tensorboard)
    _print_metrics(run.metrics)
    print(f"run folder: {out}")


def cmd_respond(args: argparse.Namespace) -> None:
    from probgen.errors import ProbgenError
    from probgen.models.arm.gpt_train import GPTRun
    from probgen.models.arm.instruct import respond
    from probgen.models.family import load_run

    run = load_run(args.run)
    if not isinstance(run, GPTRun):
        raise ProbgenError(f"run: {args.run!r} is a {run.family} run, not a GPT run")
    gen = None
    if args.seed is not None:
        import torch

        gen = torch.Generator(device=run.model.transformer.wte.weight.device)
        gen.manual_seed(args.seed)
    print(respond(run.model, run.tokenizer, args.instruction, args.input,
                  max_new_tokens=args.max_new_tokens, temperature=args.temperature,
                  top_k=args.top_k, top_p=args.top_p, generator=gen,
                  repetition_penalty=args.repetition_penalty, use_cache=not args.no_cache))


def cmd_graph(args: argparse.Namespace) -> None:
    from probgen.errors import ProbgenError
    from probgen.graph import BayesNet, available

    if args.action == "list":
        print("\n".join(available()))
        return
    if not args.name:
        raise ProbgenError("graph show: give a graph name, a graph file or a run folder")
    target = Path(args.name)
    if target.is_dir():
        from probgen.models.family import load_run

        family = load_run(target).family
        bn = BayesNet.load({"gpt": "arm"}.get(family, family))
    else:
        bn = BayesNet.load(args.name)
    png = args.png or f"{bn.name}.png"
    bn.draw(png)
    print(bn.factorization())
    print(f"wrote {png}")


def cmd_query(args: argparse.Namespace) -> None:
    from probgen.errors import EvidenceError
    from probgen.graph import BayesNet

    evidence: dict[str, str] = {}
    for item in args.evidence or []:
        if "=" not in item:
            raise EvidenceError(f"evidence: {item!r} must look like VAR=STATE")
        k, v = item.split("=", 1)
        if k in evidence:
            raise EvidenceError(f"evidence: {k!r} is given twice ({evidence[k]!r} and {v!r})")
        evidence[k] = v
    print(BayesNet.load(args.network).query(args.variables, evidence=evidence))


_TRAIN_EPILOG = """examples:
  probgen train vae --data digits --out runs/vae
  probgen train vae --set beta=4 latent_dim=8 --out runs/beta4
  probgen train vae --show-config
  probgen train flow --data moons --steps 2000
  probgen train flow --data my_points.npy           # (N, D) array; 10%% val, 10%% test
  probgen train gpt --data notes.txt --set block_size=256
  probgen train vae --out runs/vae --resume --steps 8000
  probgen train vae --data digits --out runs/vae2 --nproc 2   # 2 processes (torchrun)
  torchrun --standalone --nproc_per_node 2 -m probgen train vae --data digits --out runs/vae2
"""


def _sampling_flags(p: argparse.ArgumentParser, temperature: float,
                    max_new_tokens: int) -> None:
    p.add_argument("--max-new-tokens", type=int, default=max_new_tokens)
    p.add_argument("--temperature", type=float, default=temperature,
                   help=f"0: greedy (default {temperature})")
    p.add_argument("--top-k", type=int, default=None, help="keep the k most likely tokens")
    p.add_argument("--top-p", type=float, default=None, help="nucleus sampling mass")
    p.add_argument("--repetition-penalty", type=float, default=1.0,
                   help="> 1 makes tokens already in the text less likely (CTRL)")
    p.add_argument("--no-cache", action="store_true",
                   help="recompute every position each step (same tokens, slower)")
    p.add_argument("--seed", type=int, default=None, help="seed of the sampling")


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="probgen", description=__doc__.splitlines()[0],
                formatter_class=argparse.RawDescriptionHelpFormatter,
                epilog="run 'probgen COMMAND --help' for the options of a command")
    sub = p.add_subparsers(dest="command", required=True, parser_class=_Parser)

    f = sub.add_parser("families", help="list the model families and the data they take")
    f.set_defaults(func=cmd_families)

    t = sub.add_parser(
        "train", help="train a model family and write a run folder",
        description="Train a family on embedded data or a local file and write a run folder "
                    "(config.json, weights, checkpoints, metrics.json, samples). Any setting "
                    "of the family's config can be changed with --set or --config.",
        epilog=_TRAIN_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    t.add_argument("family", help="a family name (see 'probgen families')")
    t.add_argument("--data", default=None,
                   help="embedded data name (digits, moons, swiss_roll, text, ...) or a local "
                        "path (.npy/.npz/.pt/.safetensors array, image folder, .txt)")
    t.add_argument("--out", default=None, help="run folder (default: runs/FAMILY[-N])")
    # "extend": a repeated --set adds its settings (argparse's default keeps the last one only)
    t.add_argument("--set", nargs="+", action="extend", metavar="KEY=VALUE",
                   help="override config settings (may be repeated)")
    t.add_argument("--config", default=None, help="a YAML/JSON file of settings")
    t.add_argument("--show-config", action="store_true",
                   help="print every setting with its default and help, then exit")
    t.add_argument("--steps", type=int, default=None, help="training steps (--set steps=N)")
    t.add_argument("--seed", type=int, default=None, help="seed (--set seed=N)")
    t.add_argument("--threads", type=int, default=None,
                   help="torch CPU threads (default: automatic; --set threads=N)")
    t.add_argument("--device", default=None, help="cpu, cuda, cuda:1 (--set device=D)")
    t.add_argument("--fast", action="store_true", help="a quick run (also PROBGEN_FAST=1)")
    guard = t.add_mutually_exclusive_group()
    guard.add_argument("--resume", action="store_true",
                       help="continue the run in --out from its last checkpoint")
    guard.add_argument("--overwrite", action="store_true", help="replace the run in --out")
    t.add_argument("--tensorboard", action="store_true",
                   help="log to TensorBoard event files in RUN/tensorboard")
    t.add_argument("--quiet", action="store_true", help="no progress output")
    t.add_argument("--nproc", type=int, default=None, metavar="N",
                   help="train on N processes: relaunch this command under torchrun "
                        "(data parallel, gloo on CPU, NCCL on CUDA; see docs/cli.md)")
    t.set_defaults(func=cmd_train)

    s = sub.add_parser("sample", help="draw samples from a run folder",
                       description="Write N samples of a run: a PNG picture (.png), the raw "
                                   "array at data scale (.npy, .pt) or text (.txt, GPT).")
    s.add_argument("run", help="a run folder")
    s.add_argument("--n", type=int, default=64, help="number of samples")
    s.add_argument("--out", default=None, help="FILE.png | .npy | .pt | .txt")
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--set", nargs="+", action="extend", metavar="KEY=VALUE",
                   help="sample-time settings of the family (e.g. diffusion: sampler=ddim "
                        "steps=50 eta=0 guidance=3 label=7)")
    s.set_defaults(func=cmd_sample)

    e = sub.add_parser("eval", help="evaluate a run folder on its test split",
                       description="Recompute a run's test figures (NLL, FD / energy "
                                   "distance) from its folder.")
    e.add_argument("run", help="a run folder")
    e.add_argument("--set", nargs="+", action="extend", metavar="KEY=VALUE",
                   help="sample-time settings used for the sample figures (fd, ...), as for "
                        "'probgen sample'")
    e.add_argument("--quiet", action="store_true", help="no progress output")
    e.set_defaults(func=cmd_eval)

    r = sub.add_parser("report", help="compare runs on one Markdown page",
                       description="One Markdown page (and PNG thumbnails) comparing runs: "
                                   "family, NLL and its kind, bits/dim, FD, training time, "
                                   "parameters, a sample grid each.")
    r.add_argument("runs", nargs="+", help="run folders")
    r.add_argument("--out", default="report", help="folder for report.md and thumbnails")
    r.set_defaults(func=cmd_report)

    g = sub.add_parser("generate", help="continue a prompt with a GPT run",
                       description="Continue a prompt with a GPT run (trained or fine-tuned).")
    g.add_argument("run", help="a GPT run folder")
    g.add_argument("--prompt", required=True)
    _sampling_flags(g, temperature=0.8, max_new_tokens=200)
    g.add_argument("--stop", default=None, help="a token that ends generation, e.g. "
                                                "'<|endoftext|>'")
    g.set_defaults(func=cmd_generate)

    ft = sub.add_parser(
        "finetune", help="instruction-tune a GPT run on a JSONL file (Alpaca template)",
        description="Fine-tune a GPT run folder on instruction examples (JSON Lines or a JSON "
                    "list with instruction, optional input, output) formatted with the Alpaca "
                    "template, and write a new GPT run folder. --set loss=sequence trains on "
                    "the whole sequence instead of the response only (--show-config).",
        epilog="examples:\n  probgen train gpt --set block_size=320 --out runs/base\n"
               "  probgen finetune runs/base --data instructions.jsonl --out runs/ft\n"
               "  probgen respond runs/ft --instruction 'Reverse the word.' --input frog",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    ft.add_argument("run", help="the GPT run folder to start from")
    ft.add_argument("--data", default=None, help="instructions: FILE.jsonl or FILE.json")
    ft.add_argument("--out", default=None, help="run folder (default: runs/finetune[-N])")
    ft.add_argument("--set", nargs="+", action="extend", metavar="KEY=VALUE",
                    help="override settings")
    ft.add_argument("--config", default=None, help="a YAML/JSON file of settings")
    ft.add_argument("--show-config", action="store_true",
                    help="print every setting with its default and help, then exit")
    ft.add_argument("--steps", type=int, default=None, help="fine-tuning steps")
    ft.add_argument("--seed", type=int, default=None, help="seed (--set seed=N)")
    ft.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    ft.add_argument("--device", default=None, help="cpu, cuda, cuda:1 (--set device=D)")
    guard = ft.add_mutually_exclusive_group()
    guard.add_argument("--resume", action="store_true",
                       help="continue the run in --out from its last checkpoint")
    guard.add_argument("--overwrite", action="store_true", help="replace the run in --out")
    ft.add_argument("--tensorboard", action="store_true",
                    help="log to TensorBoard event files in RUN/tensorboard")
    ft.add_argument("--quiet", action="store_true", help="no progress output")
    ft.set_defaults(func=cmd_finetune)

    rs = sub.add_parser("respond", help="a fine-tuned GPT's response to an instruction",
                        description="Format an instruction (and optional input) with the "
                                    "Alpaca template and print the model's response (up to "
                                    "its end-of-text token).")
    rs.add_argument("run", help="a GPT run folder (probgen finetune)")
    rs.add_argument("--instruction", required=True)
    rs.add_argument("--input", default="", help="the optional input of the instruction")
    _sampling_flags(rs, temperature=0.0, max_new_tokens=100)
    rs.set_defaults(func=cmd_respond)

    gr = sub.add_parser("graph", help="list or draw graphs",
                        description="List the shipped graphs and pgmpy's networks, or draw "
                                    "one (a name, a YAML/BIF file, or a run folder's family).")
    gr.add_argument("action", choices=["list", "show"])
    gr.add_argument("name", nargs="?")
    gr.add_argument("--png", default=None)
    gr.set_defaults(func=cmd_graph)

    q = sub.add_parser("query", help="exact posterior on a discrete network",
                       description="Exact posterior marginals of VARs given evidence, e.g. "
                                   "'probgen query asia lung --evidence smoke=yes'.")
    q.add_argument("network")
    q.add_argument("variables", nargs="+")
    q.add_argument("--evidence", nargs="*", metavar="VAR=STATE")
    q.set_defaults(func=cmd_query)
    return p


def main(argv: list[str] | None = None) -> int:
    """Run the command line; returns the exit status (2 for every input error)."""
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as exc:  # --help (0) or a usage error (2, one line already printed)
        return exc.code if isinstance(exc.code, int) else 2
    args.argv = list(sys.argv[1:] if argv is None else argv)
    # under torchrun every rank fails alike: rank 0 says it, the others name their rank
    who = "" if os.environ.get("RANK", "0") == "0" else f" (rank {os.environ['RANK']})"
    try:
        code = args.func(args)
        if isinstance(code, int):
            return code
    except ValueError as err:  # probgen's input errors: one clear line, no traceback
        text = str(err).splitlines()[0] if str(err) else repr(err)
        print(f"probgen: error{who}: {text}", file=sys.stderr)
        return 2
    except OSError as err:  # a path that cannot be read or written
        print(f"probgen: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("probgen: interrupted (a run folder keeps its last checkpoint; --resume "
              "continues it)", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
