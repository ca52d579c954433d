"""The GPT family (``probgen train gpt``): a GPT fitted to text through the shared engine.

The text (the embedded corpus, ``--data text``, or a local ``.txt`` file) is split 80 / 10 /
10 by characters; the tokenizer's vocabulary is fitted on the whole text (a character or
word list, nothing learned from its order). As a Pyro program the model is the chain of
tokens with one causal conditional: ``y ~ Categorical(logits=GPT(x))`` for every window
``x`` of ``block_size`` tokens and its shift ``y``, trained by
[`probgen.infer.fit.fit`][probgen.infer.fit.fit] with the exact likelihood, AdamW (weight decay on
matrices only, betas 0.9 / 0.95), a linear warm-up then a cosine decay to ``lr / 10`` at
``decay_steps``, and gradient clipping at ``grad_clip`` for the per-token loss. Validation and test
NLL are exact over disjoint windows, in nats per token.

The run folder holds the engine's files, ``tokenizer.json`` and ``samples.txt``;
[`generate_text`][probgen.models.arm.gpt_train.generate_text] continues a prompt with a run
(``probgen generate``).

Examples:
    >>> from probgen.data.splits import text_splits
    >>> from probgen.models.family import train
    >>> run = train("gpt", data=text_splits("abcabcabc " * 60), progress=False, steps=40,
    ...             block_size=16, n_layer=1, n_head=2, n_embd=32, batch_size=8, val_every=20)
    >>> run.metrics["nll_kind"]
    'exact (nats per token, disjoint windows of 16)'
    >>> generate_text(run, "abc", max_new_tokens=5, temperature=0)
    'abcabcab'
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import pyro
import pyro.distributions as dist
import torch
from torch import Tensor, nn

from probgen.data.splits import DataSplits
from probgen.data.text import TokenWindows, disjoint_windows
from probgen.errors import ProbgenError
from probgen.infer.fit import cosine_schedule
from probgen.models.arm.gpt import GPT, GPTConfig
from probgen.models.config import ConfigError, RunConfig, option
from probgen.models.family import Family, Run, TrainContext
from probgen.nn.tokenizers import Tokenizer, get_tokenizer, load_tokenizer

__all__ = ["GPTTrainConfig", "GPTRun", "generate_text", "FAMILY"]


@dataclass
class GPTTrainConfig(RunConfig):
    """Settings of ``probgen train gpt`` (``--show-config`` lists them with their help)."""

    steps: int = option(2000, "training steps")
    batch_size: int = option(32, "windows per step")
    val_every: int = option(200, "steps between validations")
    patience: int | None = option(None, "validations without improvement before stopping")
    tokenizer: Literal["char", "word", "gpt2"] = option("char", "tokenizer (gpt2: tiktoken)")
    block_size: int = option(128, "context length in tokens")
    n_layer: int = option(4, "transformer blocks")
    n_head: int = option(4, "attention heads")
    n_embd: int = option(128, "embedding width")
    dropout: float = option(0.1, "dropout")
    bias: bool = option(True, "biases in the linear and LayerNorm layers (GPT-2: true)")
    weight_decay: float = option(0.1, "AdamW weight decay of the weight matrices")
    warmup: int = option(100, "steps of linear learning-rate warm-up")
    decay_steps: int | None = option(None, "step where the cosine decay ends at lr / 10 "
                                           "(none: steps)")
    grad_clip: float = option(1.0, "gradient-norm clip of the per-token loss")

    def validate(self) -> None:
        super().validate()
        for name in ("block_size", "n_layer", "n_head", "n_embd"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name}: must be >= 1, got {getattr(self, name)}")
        if self.n_embd % self.n_head:
            raise ConfigError(f"n_head: n_embd={self.n_embd} is not divisible by {self.n_head}")
        if not 0 <= self.dropout < 1:
            raise ConfigError(f"dropout: must be in [0, 1), got {self.dropout}")
        if self.warmup < 0 or self.weight_decay < 0 or self.grad_clip <= 0:
            raise ConfigError("warmup, weight_decay: must be >= 0; grad_clip: > 0")
        if self.decay_steps is not None and self.decay_steps < 1:
            raise ConfigError(f"decay_steps: must be >= 1 or none, got {self.decay_steps}")


class _LanguageModel(nn.Module):
    """The Pyro program of a GPT: each window's next tokens observed under its logits."""

    def __init__(self, gpt: GPT) -> None:
        super().__init__()
        self.gpt = gpt

    def model(self, x: Tensor, y: Tensor) -> None:
        logits = self.gpt(x)  # (B, T, V)
        with pyro.plate("data", x.shape[0]):
            pyro.sample("y", dist.Categorical(logits=logits).to_event(1), obs=y)


class GPTRun(Run):
    """A trained GPT (``run.model``) with its tokenizer."""

    family = "gpt"
    sample_file = "samples.txt"

    def __init__(self, model: GPT, tokenizer: Tokenizer, config: GPTTrainConfig,
                 data: DataSplits | dict[str, Any], run_dir: str | Path | None = None) -> None:
        super().__init__(config, data, run_dir)
        self.model, self.tokenizer = model, tokenizer

    def modules(self) -> list[nn.Module]:
        return [self.model]

    def _start(self) -> int:
        for token in ("\n", " "):
            try:
                ids = self.tokenizer.encode(token)
            except ValueError:
                continue
            if len(ids) == 1:
                return ids[0]
        return self.tokenizer.eos_id

    @torch.no_grad()
    def sample(self, n: int, seed: int | None = None) -> Tensor:
        """``n`` sequences of token ids ``(n, block_size)``, sampled at temperature 1 from a
        newline (or the end-of-text token)."""
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise ProbgenError(f"n: must be a positive integer, got {n!r}")
        device = self.model.transformer.wte.weight.device
        gen = torch.Generator(device=device).manual_seed(0 if seed is None else seed)
        start = torch.full((n, 1), self._start(), dtype=torch.long, device=device)
        was = self.model.training
        self.model.eval()
        try:
            out = self.model.generate(start, self.model.config.block_size - 1, 1.0,
                                      generator=gen)
        finally:
            self.model.train(was)
        return out.cpu()

    def as_text(self, samples: Tensor) -> str:
        return "\n\n----\n\n".join(self.tokenizer.decode(row) for row in samples)

    def figures(self, progress: bool = False) -> dict[str, Any]:
        """Exact test and validation NLL in nats per token over disjoint windows."""
        block = self.model.config.block_size
        val, test = (_nll(self.model, _encode(self.tokenizer, t), block)
                     for t in (self.splits.val, self.splits.test))
        return {"test_nll": test, "test_bpd": test / math.log(2),
                "nll_kind": f"exact (nats per token, disjoint windows of {block})",
                "val_nll": val}


@torch.no_grad()
def _nll(model: GPT, ids: Tensor, block: int) -> float:
    x, y = disjoint_windows(ids, min(block, len(ids) - 1))
    device = model.transformer.wte.weight.device
    was = model.training
    model.eval()
    total, count = 0.0, 0
    try:
        for i in range(0, len(x), 64):
            xb, yb = x[i:i + 64].to(device), y[i:i + 64].to(device)
            logits = model(xb)
            total += float(torch.nn.functional.cross_entropy(
                logits.reshape(-1, logits.shape[-1]), yb.reshape(-1), reduction="sum"))
            count += yb.numel()
    finally:
        model.train(was)
    return total / count


def _encode(tok: Tokenizer, text: str) -> Tensor:
    return torch.tensor(tok.encode(text), dtype=torch.long)


def _tokenizer(config: GPTTrainConfig, splits: DataSplits, out: Path | None) -> Tokenizer:
    saved = None if out is None else out / "tokenizer.json"
    if saved is not None and saved.is_file():
        return load_tokenizer(saved)
    text = splits.train + splits.val + splits.test
    try:
        return get_tokenizer(config.tokenizer, text)
    except ValueError as exc:
        raise ProbgenError(f"tokenizer: {exc}") from None


def _optimizer(weight_decay: float, lr: float) -> Any:
    def adamw(params: list[Tensor]) -> torch.optim.Optimizer:
        decay = [p for p in params if p.dim() >= 2]
        other = [p for p in params if p.dim() < 2]
        return torch.optim.AdamW([{"params": decay, "weight_decay": weight_decay},
                                  {"params": other, "weight_decay": 0.0}],
                                 lr=lr, betas=(0.9, 0.95))
    return adamw


def _schedule(warmup: int, steps: int) -> Any:
    """Linear warm-up over ``warmup`` steps, then a cosine from 1 to 0.1 (step is 1-based)."""
    return cosine_schedule(steps, warmup, floor=0.1)


def _fit(config: GPTTrainConfig, splits: DataSplits, ctx: TrainContext) -> GPTRun:
    tok = _tokenizer(config, splits, ctx.out)
    train_ids = _encode(tok, splits.train)
    val_ids = _encode(tok, splits.val)
    block = config.block_size
    if len(train_ids) < block + 1 or len(val_ids) < block + 1:
        raise ProbgenError(f"block_size: {block} is longer than the text allows (train "
                           f"{len(train_ids)} tokens, validation {len(val_ids)}); lower it")
    torch.manual_seed(config.seed)
    gpt = GPT(GPTConfig(tok.vocab_size, block, config.n_layer, config.n_head, config.n_embd,
                        config.dropout, config.bias))
    if ctx.out is not None:
        ctx.out.mkdir(parents=True, exist_ok=True)
        tok.save(ctx.out / "tokenizer.json")
    lm = _LanguageModel(gpt)
    run = GPTRun(gpt, tok, config, splits, ctx.out)
    ctx.fit(lm.model, None, TokenWindows(train_ids, block), objective="likelihood",
            steps=config.steps, batch_size=config.batch_size, lr=config.lr, seed=config.seed,
            optimizer=_optimizer(config.weight_decay, config.lr),
            lr_schedule=_schedule(config.warmup, config.decay_steps or config.steps),
            reduction="mean", grad_clip=config.grad_clip * block,  # per token: / block
            val_data=disjoint_windows(val_ids, block),
            val_every=config.val_every, patience=config.patience, log_every=config.val_every)
    gpt.eval()
    return run


def _load(run_dir: Path, config: GPTTrainConfig, data: dict[str, Any]) -> GPTRun:
    from probgen.infer import runs

    d = runs.require_files(run_dir, ("weights.safetensors", "tokenizer.json"), "GPT")
    tok = load_tokenizer(d / "tokenizer.json")
    gpt = GPT(GPTConfig(tok.vocab_size, config.block_size, config.n_layer, config.n_head,
                        config.n_embd, config.dropout, config.bias))
    weights = runs.load_tensors(d / "weights.safetensors")
    state = {k[len("model."):]: v for k, v in weights.items() if k.startswith("model.")}
    missing, unexpected = _LanguageModel(gpt).load_state_dict(state, strict=False)
    if missing or unexpected:
        raise runs.RunFolderError(f"{d}/weights.safetensors does not match the GPT "
                                  f"(missing {missing[:3]}, unexpected {unexpected[:3]})")
    return GPTRun(gpt.eval(), tok, config, data, run_dir)


def generate_text(run: GPTRun | str | Path, prompt: str, max_new_tokens: int = 200,
                  temperature: float = 0.8, top_k: int | None = None, top_p: float | None = None,
                  repetition_penalty: float = 1.0, stop: str | None = None,
                  seed: int | None = None, use_cache: bool = True) -> str:
    """Continue ``prompt`` with a GPT run (a [`GPTRun`][probgen.models.arm.gpt_train.GPTRun] or its
    folder); returns prompt plus continuation. ``stop`` is a token (e.g. ``"<|endoftext|>"``) ending
    generation."""
    if not isinstance(run, GPTRun):
        from probgen.models.family import load_run

        loaded = load_run(run)
        if not isinstance(loaded, GPTRun):
            raise ProbgenError(f"run: {str(run)!r} is a {loaded.family} run, not a GPT run")
        run = loaded
    if not prompt:
        raise ProbgenError("prompt: must not be empty")
    try:
        ids = run.tokenizer.encode(prompt)
    except ValueError as exc:
        raise ProbgenError(f"prompt: {exc}") from None
    device = run.model.transformer.wte.weight.device
    idx = torch.tensor([ids], dtype=torch.long, device=device)
    gen = None if seed is None else torch.Generator(device=device).manual_seed(seed)
    stops = None if stop is None else [run.tokenizer.token_id(stop)]
    out = run.model.generate(idx, max_new_tokens, temperature, top_k, top_p, use_cache,
                             repetition_penalty, stops, gen)
    return run.tokenizer.decode(out[0])


FAMILY = Family(
    name="gpt",
    description="GPT: a decoder-only transformer, the chain of tokens with one causal network",
    config=GPTTrainConfig,
    fit=_fit,
    load=_load,
    kinds=("text",),
    default_data="text",
    data_names=("text",),
    fast={"*": {"steps": 50, "val_every": 25, "n_layer": 2, "n_embd": 64, "block_size": 64,
                "batch_size": 16, "warmup": 10}},
)
