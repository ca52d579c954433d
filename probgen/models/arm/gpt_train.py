"""Train a GPT on text and use the result: a plain loop, a run folder, text generation.

[`train_gpt`][probgen.models.arm.gpt_train.train_gpt] fits a [`GPT`][probgen.models.arm.gpt.GPT] to
a corpus (the embedded default of [`probgen.data.text`][probgen.data.text], a user's file, or a
string) by maximum likelihood with AdamW, reporting the validation negative log-likelihood in nats
per token and bits per token.
With ``out_dir`` it writes one run folder::

    config.json        model config, tokenizer kind and training arguments
    model.safetensors  weights (the tied output layer is stored once)
    tokenizer.json     the fitted tokenizer
    metrics.json       the loss history
    samples.txt        a sample from the trained model

[`load_gpt_run`][probgen.models.arm.gpt_train.load_gpt_run] reads it back and
[`generate_text`][probgen.models.arm.gpt_train.generate_text] continues a prompt. These are the
hooks of the ``probgen`` command line.

Examples:
    >>> from probgen.models.arm.gpt_train import train_gpt, generate_text
    >>> run = train_gpt(text="abcabcabc " * 50, steps=30, block_size=16, n_layer=1,
    ...                 n_head=2, n_embd=32, batch_size=8, progress=False)
    >>> run.history[-1]["val_nll"] < run.history[0]["val_nll"]
    True
    >>> len(generate_text(run, "abc", max_new_tokens=5, temperature=0))
    8
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch import Tensor
from tqdm.auto import tqdm

from probgen.data.text import load_text, sample_batch, split_tokens
from probgen.models.arm.gpt import GPT, GPTConfig
from probgen.nn.tokenizers import EOS, Tokenizer, get_tokenizer, load_tokenizer

__all__ = ["GPTRun", "train_gpt", "evaluate_gpt", "save_gpt_run", "load_gpt_run",
           "generate_text"]


@dataclass
class GPTRun:
    """A trained model with its tokenizer, loss history and (if saved) its folder."""

    model: GPT
    tokenizer: Tokenizer
    history: list[dict[str, float]] = field(default_factory=list)
    train_args: dict[str, Any] = field(default_factory=dict)
    run_dir: Path | None = None


@torch.no_grad()
def evaluate_gpt(model: GPT, tokens: Tensor, batch_size: int = 16, n_batches: int = 10,
                 generator: torch.Generator | None = None) -> float:
    """Mean negative log-likelihood (nats per token) of random windows of ``tokens``."""
    was_training = model.training
    model.eval()
    device = model.transformer.wte.weight.device
    block = min(model.config.block_size, len(tokens) - 1)
    losses = []
    for _ in range(n_batches):
        x, y = sample_batch(tokens, batch_size, block, generator)
        losses.append(model.loss(x.to(device), y.to(device)).item())
    model.train(was_training)
    return sum(losses) / len(losses)


def train_gpt(
    text: str | None = None,
    path: str | Path | None = None,
    tokenizer: str | Tokenizer = "char",
    block_size: int = 128,
    n_layer: int = 4,
    n_head: int = 4,
    n_embd: int = 128,
    dropout: float = 0.1,
    steps: int = 2000,
    batch_size: int = 32,
    lr: float = 1e-3,
    weight_decay: float = 0.1,
    warmup: int = 100,
    eval_every: int = 200,
    eval_batches: int = 10,
    val_fraction: float = 0.1,
    seed: int = 0,
    device: str = "cpu",
    out_dir: str | Path | None = None,
    progress: bool = True,
) -> GPTRun:
    """Train a GPT by maximum likelihood on ``text``, the file at ``path``, or the default corpus.

    ``tokenizer`` is ``"char"``, ``"word"`` (fitted on the training text), ``"gpt2"`` (tiktoken,
    when available offline) or a [`Tokenizer`][probgen.nn.tokenizers.Tokenizer]. The learning
    rate warms up linearly for ``warmup`` steps, then follows a cosine to ``lr / 10``.
    Returns a [`GPTRun`][probgen.models.arm.gpt_train.GPTRun]; with ``out_dir`` the run folder is
    written too.
    """
    if text is not None and path is not None:
        raise ValueError("path: give either text or path, not both")
    for name, value in [("steps", steps), ("batch_size", batch_size),
                        ("eval_every", eval_every), ("eval_batches", eval_batches)]:
        if value < 1:
            raise ValueError(f"{name}: must be >= 1, got {value}")
    if lr <= 0:
        raise ValueError(f"lr: must be > 0, got {lr}")
    if text is None:
        text = load_text(path)
    elif not text:
        raise ValueError("text: empty")
    train_args = {k: v for k, v in locals().items()
                  if k not in ("text", "tokenizer", "path", "out_dir")}
    train_args["path"] = None if path is None else str(path)

    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    n_val_chars = int(len(text) * val_fraction)
    train_text = text[: len(text) - n_val_chars]
    tok = get_tokenizer(tokenizer, train_text) if isinstance(tokenizer, str) else tokenizer
    if not isinstance(tok, Tokenizer):
        raise ValueError(f"tokenizer: expected a name or a Tokenizer, got {type(tok).__name__}")
    ids = torch.tensor(_encode_lenient(tok, text), dtype=torch.long)
    train_ids, val_ids = split_tokens(ids, val_fraction)
    if len(val_ids) < 2:
        val_ids = train_ids
    block_size = min(block_size, len(train_ids) - 1)
    if block_size < 1:
        raise ValueError("text: too short to train on")

    config = GPTConfig(tok.vocab_size, block_size, n_layer, n_head, n_embd, dropout)
    model = GPT(config).to(device)
    decay = [p for p in model.parameters() if p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.dim() < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": weight_decay},
                             {"params": no_decay, "weight_decay": 0.0}], lr=lr, betas=(0.9, 0.95))

    def lr_at(step: int) -> float:
        if step < warmup:
            return lr * (step + 1) / warmup
        t = (step - warmup) / max(1, steps - warmup)
        return lr / 10 + 0.5 * (lr - lr / 10) * (1 + math.cos(math.pi * min(t, 1.0)))

    history: list[dict[str, float]] = []

    def log(step: int, train_loss: float) -> None:
        val = evaluate_gpt(model, val_ids, batch_size, eval_batches, gen)
        history.append({"step": step, "train_nll": train_loss, "val_nll": val,
                        "val_bits_per_token": val / math.log(2)})

    model.train()
    bar = tqdm(range(steps), disable=not progress, desc="train_gpt")
    running = float("nan")
    for step in bar:
        for group in opt.param_groups:
            group["lr"] = lr_at(step)
        x, y = sample_batch(train_ids, batch_size, block_size, gen)
        loss = model.loss(x.to(device), y.to(device))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        running = loss.item() if math.isnan(running) else 0.9 * running + 0.1 * loss.item()
        if step == 0 or (step + 1) % eval_every == 0 or step == steps - 1:
            log(step + 1, running)
            bar.set_postfix(train=f"{running:.3f}", val=f"{history[-1]['val_nll']:.3f}")
    model.eval()
    run = GPTRun(model, tok, history, train_args)
    if out_dir is not None:
        save_gpt_run(run, out_dir)
    return run


def _encode_lenient(tok: Tokenizer, text: str) -> list[int]:
    """Encode, dropping characters a char tokenizer fitted on the train split has not seen."""
    try:
        return tok.encode(text)
    except ValueError:
        known = getattr(tok, "stoi", None)
        if known is None:
            raise
        return tok.encode("".join(ch for ch in text if ch in known))


def save_gpt_run(run: GPTRun, out_dir: str | Path) -> Path:
    """Write the run folder described in the module docs; returns its path."""
    d = Path(out_dir)
    d.mkdir(parents=True, exist_ok=True)
    config = {"model": run.model.config.to_dict(), "tokenizer": run.tokenizer.to_dict()["type"],
              "train": run.train_args}
    (d / "config.json").write_text(json.dumps(config, indent=2))
    state = {k: v.detach().cpu().contiguous() for k, v in run.model.state_dict().items()
             if k != "lm_head.weight"}  # tied to transformer.wte.weight
    save_file(state, str(d / "model.safetensors"))
    run.tokenizer.save(d / "tokenizer.json")
    (d / "metrics.json").write_text(json.dumps(run.history, indent=2))
    try:
        prompt = run.tokenizer.decode(run.tokenizer.encode("\n"))
    except ValueError:  # a vocabulary without a newline
        prompt = EOS
    sample = generate_text(run, prompt, max_new_tokens=300, temperature=0.8, top_k=40, seed=0)
    (d / "samples.txt").write_text(sample, encoding="utf-8")
    run.run_dir = d
    return d


def load_gpt_run(run_dir: str | Path, device: str = "cpu") -> GPTRun:
    """Read a folder written by [`train_gpt`][probgen.models.arm.gpt_train.train_gpt] /
    [`save_gpt_run`][probgen.models.arm.gpt_train.save_gpt_run]."""
    d = Path(run_dir)
    for name in ("config.json", "model.safetensors", "tokenizer.json"):
        if not (d / name).is_file():
            raise ValueError(f"run_dir: {str(run_dir)!r} has no {name}")
    config = json.loads((d / "config.json").read_text())
    model = GPT(GPTConfig.from_dict(config["model"]))
    state = load_file(str(d / "model.safetensors"))
    missing, unexpected = model.load_state_dict(state, strict=False)
    if unexpected or set(missing) - {"lm_head.weight"}:
        raise ValueError(f"run_dir: weights do not match the config ({missing}, {unexpected})")
    metrics = d / "metrics.json"
    history = json.loads(metrics.read_text()) if metrics.is_file() else []
    return GPTRun(model.to(device).eval(), load_tokenizer(d / "tokenizer.json"), history,
                  config.get("train", {}), d)


def generate_text(
    run: GPTRun | str | Path,
    prompt: str,
    max_new_tokens: int = 200,
    temperature: float = 0.8,
    top_k: int | None = None,
    top_p: float | None = None,
    repetition_penalty: float = 1.0,
    stop: str | None = None,
    seed: int | None = None,
    use_cache: bool = True,
) -> str:
    """Continue ``prompt`` with a trained run (a [`GPTRun`][probgen.models.arm.gpt_train.GPTRun] or
    its folder); returns prompt + continuation. ``stop`` is a token (e.g. ``"<|endoftext|>"``)
    ending generation.
    """
    if not isinstance(run, GPTRun):
        run = load_gpt_run(run)
    if not prompt:
        raise ValueError("prompt: must not be empty")
    ids = run.tokenizer.encode(prompt)
    device = run.model.transformer.wte.weight.device
    idx = torch.tensor([ids], dtype=torch.long, device=device)
    gen = None if seed is None else torch.Generator(device=device).manual_seed(seed)
    stops = None if stop is None else [run.tokenizer.token_id(stop)]
    out = run.model.generate(idx, max_new_tokens, temperature, top_k, top_p, use_cache,
                             repetition_penalty, stops, gen)
    return run.tokenizer.decode(out[0])

