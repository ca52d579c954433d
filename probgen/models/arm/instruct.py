"""Instruction fine-tuning of a GPT with the Alpaca template (Taori et al. 2023).

An example (instruction, optional input, output) becomes one sequence::

    <prompt: template + instruction (+ input) + "### Response:\\n"> <output> <|endoftext|>

and the model is trained on the log-likelihood of the *response only*: prompt positions
and padding get the target `IGNORE_INDEX`, so they add nothing
to the loss, while the closing end-of-text token is a target, so the model learns to stop.
Batches are right-padded (with the EOS id unless told otherwise); a causal model never
looks right, so padding needs no attention mask.

Examples:
    >>> from probgen.models.arm.instruct import InstructExample, encode_example, format_prompt
    >>> from probgen.nn.tokenizers import CharTokenizer
    >>> ex = InstructExample("Reverse the word.", "cat", "tac")
    >>> print(format_prompt(ex))  # doctest: +NORMALIZE_WHITESPACE
    Below is an instruction that describes a task, paired with an input that provides further
    context. Write a response that appropriately completes the request.
    <BLANKLINE>
    ### Instruction:
    Reverse the word.
    <BLANKLINE>
    ### Input:
    cat
    <BLANKLINE>
    ### Response:
    >>> tok = CharTokenizer.fit(format_prompt(ex) + "tac")
    >>> ids, labels = encode_example(tok, ex)
    >>> tok.decode([t for t in labels if t >= 0])
    'tac<|endoftext|>'
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor
from tqdm.auto import tqdm

from probgen.models.arm.gpt import GPT, IGNORE_INDEX
from probgen.nn.tokenizers import Tokenizer

__all__ = [
    "ALPACA_PROMPT",
    "ALPACA_PROMPT_WITH_INPUT",
    "InstructExample",
    "format_prompt",
    "encode_example",
    "collate",
    "finetune",
    "respond",
    "toy_instructions",
]

ALPACA_PROMPT = (
    "Below is an instruction that describes a task. "
    "Write a response that appropriately completes the request.\n\n"
    "### Instruction:\n{instruction}\n\n### Response:\n"
)
ALPACA_PROMPT_WITH_INPUT = (
    "Below is an instruction that describes a task, paired with an input that provides "
    "further context. Write a response that appropriately completes the request.\n\n"
    "### Instruction:\n{instruction}\n\n### Input:\n{input}\n\n### Response:\n"
)


@dataclass(frozen=True)
class InstructExample:
    """One instruction-following example; ``input`` may be empty."""

    instruction: str
    input: str = ""
    output: str = ""


def format_prompt(example: InstructExample) -> str:
    """The Alpaca prompt of ``example`` (everything before the response)."""
    if not example.instruction:
        raise ValueError("example: the instruction is empty")
    template = ALPACA_PROMPT_WITH_INPUT if example.input else ALPACA_PROMPT
    return template.format(instruction=example.instruction, input=example.input)


def encode_example(
    tokenizer: Tokenizer, example: InstructExample, block_size: int | None = None
) -> tuple[list[int], list[int]]:
    """Token ids of prompt + output + EOS, and labels with the prompt set to IGNORE_INDEX.

    A model of context ``block_size`` reads at most ``block_size`` of these ids as input (the
    last one is only a target), so longer sequences are cut to ``block_size + 1`` ids (the EOS
    may then be lost); a prompt longer than ``block_size`` leaves no response target at all
    and is an error.
    """
    prompt = tokenizer.encode(format_prompt(example))
    response = tokenizer.encode(example.output) + [tokenizer.eos_id]
    ids = prompt + response
    labels = [IGNORE_INDEX] * len(prompt) + response
    if block_size is not None:
        if len(prompt) > block_size:
            raise ValueError(
                f"block_size: the prompt alone has {len(prompt)} tokens, more than the "
                f"model's block_size={block_size}")
        ids, labels = ids[:block_size + 1], labels[:block_size + 1]
    return ids, labels


def collate(
    encoded: Sequence[tuple[list[int], list[int]]], pad_id: int
) -> tuple[Tensor, Tensor]:
    """Right-padded next-token batch: inputs ``x`` and targets ``y``, both (B, L - 1).

    ``x[b, t] = ids[t]`` and ``y[b, t] = labels[t + 1]``; padding positions get ``pad_id``
    in ``x`` and IGNORE_INDEX in ``y``.

    Examples:
        >>> from probgen.models.arm.instruct import collate
        >>> x, y = collate([([5, 6, 7], [-100, 6, 7]), ([5, 8], [-100, 8])], pad_id=0)
        >>> x.tolist(), y.tolist()
        ([[5, 6], [5, 0]], [[6, 7], [8, -100]])
    """
    if not encoded:
        raise ValueError("encoded: empty batch")
    if any(len(ids) < 2 or len(ids) != len(lab) for ids, lab in encoded):
        raise ValueError("encoded: each example needs >= 2 ids and as many labels")
    L = max(len(ids) for ids, _ in encoded) - 1
    x = torch.full((len(encoded), L), pad_id, dtype=torch.long)
    y = torch.full((len(encoded), L), IGNORE_INDEX, dtype=torch.long)
    for b, (ids, labels) in enumerate(encoded):
        n = len(ids) - 1
        x[b, :n] = torch.tensor(ids[:-1])
        y[b, :n] = torch.tensor(labels[1:])
    return x, y


def finetune(
    model: GPT,
    tokenizer: Tokenizer,
    examples: Sequence[InstructExample],
    steps: int = 200,
    batch_size: int = 8,
    lr: float = 1e-4,
    weight_decay: float = 0.0,
    pad_id: int | None = None,
    seed: int = 0,
    progress: bool = True,
) -> list[float]:
    """Fine-tune ``model`` in place on the response-masked loss; returns the loss per step.

    Examples are truncated to ``block_size + 1`` tokens; the batches are drawn by a seeded
    shuffle of ``examples``. ``pad_id`` defaults to the tokenizer's EOS id.
    """
    if not examples:
        raise ValueError("examples: empty")
    if steps < 1 or batch_size < 1:
        raise ValueError(f"steps: steps and batch_size must be >= 1, got {steps}, {batch_size}")
    device = model.transformer.wte.weight.device
    pad = tokenizer.eos_id if pad_id is None else pad_id
    encoded = [encode_example(tokenizer, ex, model.config.block_size) for ex in examples]
    rng = random.Random(seed)
    order: list[int] = []
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)
    losses = []
    model.train()
    for _ in tqdm(range(steps), disable=not progress, desc="finetune"):
        batch = []
        while len(batch) < batch_size:
            if not order:
                order = list(range(len(encoded)))
                rng.shuffle(order)
            batch.append(encoded[order.pop()])
        x, y = collate(batch, pad)
        loss = model.loss(x.to(device), y.to(device))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        losses.append(loss.item())
    model.eval()
    return losses


def respond(
    model: GPT,
    tokenizer: Tokenizer,
    instruction: str,
    input: str = "",
    max_new_tokens: int = 100,
    temperature: float = 0.0,
    top_k: int | None = None,
    top_p: float | None = None,
    generator: torch.Generator | None = None,
    repetition_penalty: float = 1.0,
    use_cache: bool = True,
) -> str:
    """The model's response to an instruction: generation stops at EOS, which is removed.

    Every sampling control of [`GPT.generate`][probgen.models.arm.gpt.GPT.generate] applies
    (``temperature=0`` is greedy). The response ends where the context does: at most
    ``block_size`` minus the prompt's length new tokens, since the model never read the
    instruction from further back than its window in training.
    """
    try:
        prompt = tokenizer.encode(format_prompt(InstructExample(instruction, input)))
    except ValueError as exc:
        raise ValueError(f"instruction: {exc}") from None
    block = model.config.block_size
    if len(prompt) >= block:
        raise ValueError(f"instruction: the prompt has {len(prompt)} tokens; the model's "
                         f"block_size={block} leaves no room for a response")
    device = model.transformer.wte.weight.device
    idx = torch.tensor([prompt], dtype=torch.long, device=device)
    out = model.generate(idx, min(max_new_tokens, block - len(prompt)), temperature, top_k,
                         top_p, use_cache, repetition_penalty, [tokenizer.eos_id], generator)
    new = out[0, len(prompt):].tolist()
    if tokenizer.eos_id in new:
        new = new[: new.index(tokenizer.eos_id)]
    return tokenizer.decode(new)


_WORDS = ("cat", "dog", "sun", "tree", "bird", "fish", "moon", "star", "rain", "wind",
          "book", "lamp", "rose", "frog", "milk", "ship", "king", "snow", "leaf", "door")
_TASKS = (
    ("Reverse the word.", lambda w: w[::-1]),
    ("Write the word in capital letters.", str.upper),
    ("Repeat the word twice.", lambda w: f"{w} {w}"),
    ("How many letters does the word have?", lambda w: str(len(w))),
)


def toy_instructions(n: int = 200, seed: int = 0) -> list[InstructExample]:
    """Synthetic instruction data, made offline: four word tasks on twenty short words.

    Examples:
        >>> from probgen.models.arm.instruct import toy_instructions
        >>> toy_instructions(1, seed=3)[0].instruction in {
        ...     "Reverse the word.", "Write the word in capital letters.",
        ...     "Repeat the word twice.", "How many letters does the word have?"}
        True
    """
    if n < 1:
        raise ValueError(f"n: must be >= 1, got {n}")
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        instruction, answer = rng.choice(_TASKS)
        word = rng.choice(_WORDS)
        out.append(InstructExample(instruction, word, answer(word)))
    return out
