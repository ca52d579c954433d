"""Instruction fine-tuning of a GPT run from the command line (``probgen finetune``).

``probgen finetune RUN --data instructions.jsonl --out FT`` starts from the weights and tokenizer
of a GPT run folder (``probgen train gpt``), formats every example with the Alpaca template
([`probgen.models.arm.instruct`][probgen.models.arm.instruct]; Taori et al. 2023) and trains through
the shared engine ([`probgen.infer.fit.fit`][probgen.infer.fit.fit]): run folder, checkpoints,
exact resume, validation on held-out examples, the best weights kept. The loss is the negative
log-likelihood of the *response* tokens (``loss=response``, the default: the prompt is given, only
what follows ``### Response:`` and the closing end-of-text token are targets) or of the whole
sequence (``loss=sequence``: the prompt is modelled too).

The folder is a GPT run (``load_run`` reads it; ``probgen generate``, ``probgen respond``,
``probgen sample`` take it) whose ``config.json`` also records the base run, the data file and the
fine-tuning settings under ``"finetune"``. ``metrics.json`` holds the engine's figures, the
response NLL per token of the validation examples (``val_response_nll``) and the share of
training and validation prompts answered exactly by greedy decoding (``train_exact``,
``val_exact``).

The data file is JSON Lines (one object per line) or a JSON list (Alpaca's ``alpaca_data.json``),
each object with ``instruction``, ``output`` and an optional ``input``. Every example must fit
the base model's context: prompt plus response (the model's input; the end-of-text token is only
a target) at most ``block_size`` tokens.

Examples:
    >>> import json, tempfile
    >>> from probgen.data.splits import text_splits
    >>> from probgen.models.arm.instruct import format_prompt, toy_instructions
    >>> from probgen.models.family import train
    >>> ex = toy_instructions(20)
    >>> d = tempfile.mkdtemp()
    >>> text = " ".join(format_prompt(e) + e.output for e in ex) + "0123456789"
    >>> base = train("gpt", data=text_splits(text * 3), out=d + "/base", progress=False,
    ...              steps=5, block_size=256, n_layer=1, n_head=2, n_embd=16, batch_size=4)
    >>> with open(d + "/ex.jsonl", "w") as f:
    ...     for e in ex:
    ...         print(json.dumps({"instruction": e.instruction, "input": e.input,
    ...                           "output": e.output}), file=f)
    >>> ft = finetune_run(d + "/base", d + "/ex.jsonl", d + "/ft", progress=False, steps=3)
    >>> sorted(k for k in ft.metrics if k.endswith("exact"))
    ['train_exact', 'val_exact']
"""

from __future__ import annotations

import json
import os
import random
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import pyro
import pyro.distributions as dist
import torch
from torch import Tensor, nn

from probgen.errors import ProbgenError
from probgen.infer import runs
from probgen.models.arm.gpt import GPT, IGNORE_INDEX
from probgen.models.arm.gpt_train import GPTRun, _optimizer, _schedule
from probgen.models.arm.instruct import InstructExample, format_prompt, respond
from probgen.models.config import ConfigError, RunConfig, build_config, config_to_dict, option
from probgen.models.family import (
    TrainContext,
    _guard_folder,
    _json_safe,
    _set_threads,
    check_device,
    load_run,
)

__all__ = ["FinetuneConfig", "read_instructions", "encode_instructions", "finetune_run"]


@dataclass
class FinetuneConfig(RunConfig):
    """Settings of ``probgen finetune`` (``--show-config`` lists them with their help).

    The defaults are measured on the runs ``probgen train gpt`` makes (small character GPTs)
    and the 400 toy instructions of tutorial 04: a 2-layer, 64-wide base answers 100% of its
    training and held-out prompts after 800 steps at ``lr=3e-3`` without dropout, but 54%
    at ``lr=1e-3`` (dropout 0) and 96% / 85% with the base's dropout of 0.1 at ``lr=3e-3``;
    400 steps at ``lr=3e-3`` are too few (54%). A 4-layer, 128-wide base reaches 98% in 300
    steps at the same rate. Dropout is off by default because the point is to fit a small
    set of answers exactly; ``--set dropout=none`` keeps the base run's.
    """

    steps: int = option(800, "fine-tuning steps")
    batch_size: int = option(8, "examples per step")
    lr: float = option(3e-3, "peak learning rate")
    val_every: int = option(50, "steps between validations")
    patience: int | None = option(None, "validations without improvement before stopping")
    loss: Literal["response", "sequence"] = option(
        "response", "response: NLL of the response tokens only; sequence: of every token")
    val_fraction: float = option(0.1, "share of the examples held out for validation")
    dropout: float | None = option(0.0, "dropout while fine-tuning (none: the base run's)")
    weight_decay: float = option(0.0, "AdamW weight decay of the weight matrices")
    warmup: int = option(20, "steps of linear learning-rate warm-up")
    grad_clip: float = option(1.0, "gradient-norm clip of the per-token loss")
    eval_examples: int = option(50, "training / validation prompts answered to score exact "
                                    "match")

    def validate(self) -> None:
        super().validate()
        if not 0 <= self.val_fraction < 1:
            raise ConfigError(f"val_fraction: must be in [0, 1), got {self.val_fraction}")
        if self.dropout is not None and not 0 <= self.dropout < 1:
            raise ConfigError(f"dropout: must be in [0, 1) or none, got {self.dropout}")
        if self.warmup < 0 or self.weight_decay < 0 or self.grad_clip <= 0:
            raise ConfigError("warmup, weight_decay: must be >= 0; grad_clip: > 0")
        if self.eval_examples < 0:
            raise ConfigError(f"eval_examples: must be >= 0, got {self.eval_examples}")


def read_instructions(path: str | os.PathLike) -> list[InstructExample]:
    """Examples of a JSON Lines file (one object a line) or a JSON list, Alpaca's keys
    (``instruction``, optional ``input``, ``output``); errors name the file and line."""
    p = Path(path)
    if not p.is_file():
        raise ProbgenError(f"data: {p} does not exist")
    text = p.read_text(encoding="utf-8")
    rows: list[tuple[str, Any]] = []
    if text.lstrip().startswith("["):
        try:
            items = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ProbgenError(f"data: {p} is not valid JSON ({exc.msg}, line {exc.lineno})"
                               ) from None
        rows = [(f"{p} item {i + 1}", item) for i, item in enumerate(items)]
    else:
        for i, line in enumerate(text.splitlines(), 1):
            if not line.strip():
                continue
            try:
                rows.append((f"{p}:{i}", json.loads(line)))
            except json.JSONDecodeError as exc:
                raise ProbgenError(f"data: {p}:{i} is not a JSON object ({exc.msg})") from None
    out = []
    for where, item in rows:
        if not isinstance(item, dict):
            raise ProbgenError(f"data: {where} must be an object with instruction and output")
        unknown = set(item) - {"instruction", "input", "output"}
        if unknown:
            raise ProbgenError(f"data: {where} has unknown keys {sorted(unknown)} (Alpaca's "
                               "are instruction, input, output)")
        for key in ("instruction", "output"):
            if not isinstance(item.get(key), str) or not item[key]:
                raise ProbgenError(f"data: {where} needs a non-empty string {key!r}")
        if not isinstance(item.get("input", ""), str):
            raise ProbgenError(f"data: {where}: 'input' must be a string")
        out.append(InstructExample(item["instruction"], item.get("input", ""), item["output"]))
    if not out:
        raise ProbgenError(f"data: {p} holds no examples")
    return out


def encode_instructions(run: GPTRun, examples: list[InstructExample], loss: str = "response",
                        where: str = "data") -> tuple[Tensor, Tensor]:
    """Inputs ``x`` and targets ``y``, both ``(N, L)`` with ``L`` the longest input: the
    Alpaca sequence ``prompt + response + EOS`` shifted by one, padded with EOS; targets of the
    prompt (``loss="response"``) and of the padding are `IGNORE_INDEX`."""
    tok, block = run.tokenizer, run.model.config.block_size
    eos = tok.eos_id
    rows = []
    for i, ex in enumerate(examples):
        try:
            prompt = tok.encode(format_prompt(ex))
            response = tok.encode(ex.output)
        except ValueError as exc:
            raise ProbgenError(f"{where}: example {i + 1}: {exc} of the base run's tokenizer"
                               ) from None
        ids = prompt + response + [eos]
        if len(ids) - 1 > block:
            raise ProbgenError(
                f"{where}: example {i + 1} needs a context of {len(ids) - 1} tokens (prompt "
                f"{len(prompt)} + response {len(response)}), more than the base run's "
                f"block_size={block}; train the base with --set block_size={len(ids) - 1} or "
                "more, or shorten the example")
        first = len(prompt) if loss == "response" else 1
        labels = [IGNORE_INDEX] * first + ids[first:]
        rows.append((ids, labels))
    length = max(len(ids) for ids, _ in rows) - 1
    x = torch.full((len(rows), length), eos, dtype=torch.long)
    y = torch.full((len(rows), length), IGNORE_INDEX, dtype=torch.long)
    for b, (ids, labels) in enumerate(rows):
        x[b, :len(ids) - 1] = torch.tensor(ids[:-1])
        y[b, :len(ids) - 1] = torch.tensor(labels[1:])
    return x, y


class _InstructionModel(nn.Module):
    """The Pyro program: each target token observed under the GPT's logits; the prompt and
    padding positions masked out of the likelihood."""

    def __init__(self, gpt: GPT) -> None:
        super().__init__()
        self.gpt = gpt

    def model(self, x: Tensor, y: Tensor) -> None:
        logits = self.gpt(x)  # (B, L, V)
        keep = y != IGNORE_INDEX
        with pyro.plate("data", x.shape[0]):
            pyro.sample("y", dist.Categorical(logits=logits).mask(keep).to_event(1),
                        obs=y.clamp(min=0))


def _split(n: int, fraction: float, seed: int) -> tuple[list[int], list[int]]:
    order = list(range(n))
    random.Random(seed).shuffle(order)
    k = int(round(n * fraction)) if n > 1 else 0
    return sorted(order[k:]), sorted(order[:k])


def _exact(run: GPTRun, examples: list[InstructExample]) -> float | None:
    if not examples:
        return None
    hits = sum(respond(run.model, run.tokenizer, e.instruction, e.input,
                       max_new_tokens=len(run.tokenizer.encode(e.output)) + 1) == e.output
               for e in examples)
    return hits / len(examples)


@torch.no_grad()
def _response_nll(gpt: GPT, x: Tensor, y: Tensor) -> float:
    was = gpt.training
    gpt.eval()
    total, count = 0.0, 0
    for i in range(0, len(x), 32):
        logits = gpt(x[i:i + 32])
        yb = y[i:i + 32]
        total += float(torch.nn.functional.cross_entropy(
            logits.reshape(-1, logits.shape[-1]), yb.reshape(-1), ignore_index=IGNORE_INDEX,
            reduction="sum"))
        count += int((yb != IGNORE_INDEX).sum())
    gpt.train(was)
    return total / max(count, 1)


def finetune_run(base: str | os.PathLike, data: str | os.PathLike,
                 out: str | os.PathLike, *, config: str | os.PathLike | None = None,
                 sets: tuple[str, ...] | list[str] = (), progress: bool = True,
                 resume: bool = False, overwrite: bool = False, tensorboard: bool = False,
                 **values: Any) -> GPTRun:
    """Fine-tune the GPT run ``base`` on the instructions of ``data`` into the run folder
    ``out`` (see the module docstring); ``sets`` / ``values`` / ``config`` set
    [`FinetuneConfig`][probgen.models.arm.finetune.FinetuneConfig] as for ``train``. An
    existing run in ``out`` is refused unless ``resume`` (continue it exactly) or
    ``overwrite``."""
    out_path = Path(out)
    saved = _guard_folder(out_path, resume, overwrite)
    if saved is not None:
        if "finetune" not in saved:
            raise ProbgenError(f"resume: {out_path} holds a run that is not a fine-tuning run")
        base = saved["finetune"]["base"]
        if str(data) != saved["finetune"]["data"]:
            raise ProbgenError(f"data: the run in {out_path} fine-tuned on "
                               f"{saved['finetune']['data']!r}, not {str(data)!r}")
    base_run = load_run(base)
    if not isinstance(base_run, GPTRun):
        raise ProbgenError(f"run: {str(base)!r} is a {base_run.family} run, not a GPT run")
    layers = [saved["finetune"]["config"]] if saved is not None else []
    cfg = build_config(FinetuneConfig, layers, file=config, sets=sets, values=values)
    examples = read_instructions(data)
    train_idx, val_idx = _split(len(examples), cfg.val_fraction, cfg.seed)
    x, y = encode_instructions(base_run, examples, cfg.loss, where=f"data ({data})")
    if cfg.batch_size > len(train_idx):
        raise ConfigError(f"batch_size: {cfg.batch_size} exceeds the {len(train_idx)} training "
                          f"examples of {data}; lower it (--set batch_size=N)")
    device = check_device(cfg.device)
    _set_threads(cfg.threads)

    base_cfg = build_config(type(base_run.config), [config_to_dict(base_run.config)])
    if cfg.dropout is not None:
        base_cfg.dropout = cfg.dropout
    gpt = base_run.model
    for m in gpt.modules():
        if isinstance(m, nn.Dropout):
            m.p = base_cfg.dropout
    gpt.config.dropout = base_cfg.dropout
    gpt.to(device)
    info = {"base": str(base), "data": str(data), "examples": len(examples),
            "train": len(train_idx), "val": len(val_idx), "config": config_to_dict(cfg)}
    run_config = {"family": "gpt", "data": base_run.data_info,
                  "config": config_to_dict(base_cfg), "fast": False, "finetune": info}
    ctx = TrainContext(out_path, resume=saved is not None, progress=progress, device=device,
                       run_config=run_config, tensorboard=tensorboard)
    out_path.mkdir(parents=True, exist_ok=True)
    base_run.tokenizer.save(out_path / "tokenizer.json")
    ctx.say(f"fine-tuning {base} on {len(train_idx)} instructions of {data} "
            f"({len(val_idx)} held out), loss on the {cfg.loss}, {torch.get_num_threads()} "
            f"thread(s), {device}" + (f", resuming {out_path}" if saved is not None else ""))
    lm = _InstructionModel(gpt)
    xt, yt = x[train_idx], y[train_idx]
    val = (x[val_idx], y[val_idx]) if val_idx else None
    targets = float((yt != IGNORE_INDEX).sum()) / len(xt)  # per example, for the clip
    t0 = time.perf_counter()
    res = ctx.fit(lm.model, None, (xt, yt), objective="likelihood", steps=cfg.steps,
                  batch_size=cfg.batch_size, lr=cfg.lr, seed=cfg.seed,
                  optimizer=_optimizer(cfg.weight_decay, cfg.lr),
                  lr_schedule=_schedule(cfg.warmup, cfg.steps),
                  reduction="mean", grad_clip=cfg.grad_clip * targets, val_data=val,
                  val_every=cfg.val_every, patience=cfg.patience, log_every=cfg.val_every)
    seconds = time.perf_counter() - t0
    gpt.eval()
    run = GPTRun(gpt, base_run.tokenizer, base_cfg, base_run.data_info, out_path)
    k = cfg.eval_examples
    metrics: dict[str, Any] = {**res.final, "stopped_early": bool(res.stopped_early),
                               "train_seconds": seconds, "num_params": run.num_params()}
    if val is not None:
        metrics["val_response_nll"] = _response_nll(gpt, val[0].to(device), val[1].to(device))
    metrics["train_exact"] = _exact(run, [examples[i] for i in train_idx[:k]])
    metrics["val_exact"] = _exact(run, [examples[i] for i in val_idx[:k]])
    run.metrics = _json_safe(metrics)
    old = runs.read_json(out_path / "config.json")
    runs.atomic_write_json(out_path / "config.json", {**old, **run_config})
    runs.atomic_write_json(out_path / "metrics.json", run.metrics)
    ctx.say(f"fine-tuned in {seconds:.1f} s; exact answers: train "
            f"{metrics['train_exact']}, validation {metrics['val_exact']}")
    return run
