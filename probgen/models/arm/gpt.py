"""GPT: a decoder-only transformer, the autoregressive model of the course's ARM unit.

As a Bayesian network a GPT is the chain x1 -> x2 -> ... -> xT in which every token's
conditional p(x_t | x_<t) is one shared causal network;
[`GPT.log_prob`][probgen.models.arm.gpt.GPT.log_prob] is the exact log-likelihood of that network,
so the shared engine can fit it with the "likelihood" objective. Architecture as GPT-2 (Radford et
al. 2019): learned position embeddings, pre-norm blocks
([`probgen.nn.transformer`][probgen.nn.transformer]), a final LayerNorm and an output layer tied to
the token embedding (Press & Wolf 2017).

Generation ([`GPT.generate`][probgen.models.arm.gpt.GPT.generate]) supports greedy decoding
(``temperature=0``), temperature, top-k and nucleus (top-p, Holtzman et al. 2020) sampling, the CTRL
repetition penalty (Keskar et al. 2019), stop tokens and a key/value cache that yields exactly the
tokens of the uncached path.

Examples:
    >>> import torch
    >>> from probgen.models.arm.gpt import GPT, GPTConfig
    >>> torch.manual_seed(0)  # doctest: +ELLIPSIS
    <torch._C.Generator object at ...>
    >>> model = GPT(GPTConfig(vocab_size=11, block_size=16, n_layer=2, n_head=2, n_embd=16))
    >>> idx = torch.zeros(1, 3, dtype=torch.long)
    >>> model(idx).shape
    torch.Size([1, 3, 11])
    >>> out = model.generate(idx, max_new_tokens=5, temperature=0)
    >>> out.shape, torch.equal(out, model.generate(idx, 5, temperature=0, use_cache=False))
    (torch.Size([1, 8]), True)
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, fields
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from probgen.nn.transformer import Block, KVCache

__all__ = [
    "GPTConfig",
    "GPT",
    "IGNORE_INDEX",
    "apply_repetition_penalty",
    "filter_top_k",
    "filter_top_p",
    "next_token",
]

#: Target value that `GPT.loss` skips (the convention of ``F.cross_entropy``).
IGNORE_INDEX = -100


@dataclass
class GPTConfig:
    """Sizes of a GPT. ``block_size`` is the longest context the model can read.

    Examples:
        >>> from probgen.models.arm.gpt import GPTConfig
        >>> GPTConfig(vocab_size=65, block_size=128).n_embd
        256
    """

    vocab_size: int
    block_size: int
    n_layer: int = 4
    n_head: int = 4
    n_embd: int = 256
    dropout: float = 0.0
    bias: bool = True  # biases in Linear and LayerNorm layers, as GPT-2

    def __post_init__(self) -> None:
        for name in ("vocab_size", "block_size", "n_layer", "n_head", "n_embd"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name}: must be >= 1, got {getattr(self, name)}")
        if self.n_embd % self.n_head != 0:
            raise ValueError(f"n_head: n_embd={self.n_embd} is not divisible by {self.n_head}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout: must be in [0, 1), got {self.dropout}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> GPTConfig:
        known = {f.name for f in fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise ValueError(f"d: unknown GPTConfig fields {sorted(unknown)}")
        return cls(**d)


class GPT(nn.Module):
    """Decoder-only transformer language model.

    ``forward(idx)`` maps token ids (B, T) to next-token logits (B, T, vocab_size).

    Examples:
        >>> import torch
        >>> from probgen.models.arm.gpt import GPT, GPTConfig
        >>> model = GPT(GPTConfig(vocab_size=5, block_size=8, n_layer=1, n_head=1, n_embd=8))
        >>> model.log_prob(torch.tensor([[1, 2, 3]])).shape
        torch.Size([1])
    """

    def __init__(self, config: GPTConfig) -> None:
        super().__init__()
        self.config = config
        c = config
        self.transformer = nn.ModuleDict(dict(
            wte=nn.Embedding(c.vocab_size, c.n_embd),  # token embedding
            wpe=nn.Embedding(c.block_size, c.n_embd),  # position embedding
            drop=nn.Dropout(c.dropout),
            h=nn.ModuleList(Block(c.n_embd, c.n_head, c.dropout, c.bias) for _ in range(c.n_layer)),
            ln_f=nn.LayerNorm(c.n_embd, bias=c.bias),
        ))
        self.lm_head = nn.Linear(c.n_embd, c.vocab_size, bias=False)
        self.lm_head.weight = self.transformer.wte.weight  # weight tying
        self.apply(self._init_weights)
        # GPT-2 scales the residual projections by 1/sqrt(number of residual additions)
        for name, p in self.named_parameters():
            if name.endswith("c_proj.weight"):
                nn.init.normal_(p, mean=0.0, std=0.02 / math.sqrt(2 * c.n_layer))

    @staticmethod
    def _init_weights(module: nn.Module) -> None:
        if isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)

    def num_params(self, non_embedding: bool = True) -> int:
        """Parameter count; by default without the position embedding (as nanoGPT reports)."""
        n = sum(p.numel() for p in self.parameters())
        return n - self.transformer.wpe.weight.numel() if non_embedding else n

    # ------------------------------------------------------------------ forward passes

    def hidden(self, idx: Tensor, cache: KVCache | None = None) -> Tensor:
        """Final-LayerNorm features (B, T, C) of ``idx`` (B, T).

        With a ``cache`` the tokens continue the cached positions and the cache grows by T.
        """
        if idx.dim() != 2 or idx.dtype != torch.long:
            raise ValueError(
                f"idx: expected a (B, T) long tensor, got {idx.dtype} {tuple(idx.shape)}"
            )
        B, T = idx.shape
        past = 0 if cache is None else cache.length
        if past + T > self.config.block_size:
            raise ValueError(
                f"idx: {past} cached + {T} new positions exceed block_size={self.config.block_size}"
            )
        pos = torch.arange(past, past + T, device=idx.device)  # (T,)
        tok_emb = self.transformer.wte(idx)  # (B, T, C)
        pos_emb = self.transformer.wpe(pos)  # (T, C)
        x = self.transformer.drop(tok_emb + pos_emb)  # (B, T, C)
        for layer, block in enumerate(self.transformer.h):
            x = block(x, cache, layer)  # (B, T, C)
        if cache is not None:
            cache.advance(T)
        return self.transformer.ln_f(x)  # (B, T, C)

    def forward(self, idx: Tensor, cache: KVCache | None = None) -> Tensor:
        """Next-token logits (B, T, vocab_size) for token ids ``idx`` (B, T)."""
        return self.lm_head(self.hidden(idx, cache))

    def loss(self, idx: Tensor, targets: Tensor) -> Tensor:
        """Mean cross-entropy (nats per token) of ``targets`` (B, T) given ``idx`` (B, T).

        Positions whose target is `IGNORE_INDEX` (-100) do not count: that is how
        padding and the prompt of an instruction example are masked out.
        """
        if targets.shape != idx.shape:
            raise ValueError(f"targets: shape {tuple(targets.shape)} != idx {tuple(idx.shape)}")
        logits = self(idx)  # (B, T, V)
        return F.cross_entropy(
            logits.reshape(-1, logits.size(-1)), targets.reshape(-1), ignore_index=IGNORE_INDEX
        )

    def log_prob(self, idx: Tensor) -> Tensor:
        """Exact log-likelihood of each sequence, (B,): sum over t >= 2 of log p(x_t | x_<t).

        The first token is the given context (there is no start token), so this is
        log p(x_2, ..., x_T | x_1). Sequences must fit the context: 2 <= T <= block_size.
        """
        if idx.dim() != 2 or idx.size(1) < 2:
            raise ValueError(f"idx: expected (B, T) with T >= 2, got {tuple(idx.shape)}")
        logp = F.log_softmax(self(idx[:, :-1]), dim=-1)  # (B, T-1, V)
        return logp.gather(-1, idx[:, 1:, None]).squeeze(-1).sum(-1)  # (B,)

    def new_cache(self, batch_size: int, max_len: int | None = None) -> KVCache:
        """An empty [`KVCache`][probgen.nn.transformer.KVCache] sized for this model: ``max_len``
        positions (default and at most ``block_size``)."""
        c = self.config
        max_len = c.block_size if max_len is None else min(int(max_len), c.block_size)
        p = self.transformer.wte.weight
        return KVCache(c.n_layer, batch_size, c.n_head, c.n_embd // c.n_head, max_len,
                       device=p.device, dtype=p.dtype)

    # ------------------------------------------------------------------ generation

    @torch.no_grad()
    def generate(
        self,
        idx: Tensor,
        max_new_tokens: int,
        temperature: float = 1.0,
        top_k: int | None = None,
        top_p: float | None = None,
        use_cache: bool = True,
        repetition_penalty: float = 1.0,
        stop_tokens: Sequence[int] | None = None,
        generator: torch.Generator | None = None,
    ) -> Tensor:
        """Continue ``idx`` (B, T) by up to ``max_new_tokens`` tokens; returns (B, T + n).

        - ``temperature=0`` is greedy decoding; otherwise logits are divided by it, then
          ``top_k`` keeps the k most likely tokens and ``top_p`` the smallest set whose
          probability reaches p, and the next token is drawn (with ``generator`` if given).
        - ``repetition_penalty > 1`` makes every token already in the sequence less likely
          (a positive logit is divided by it, a negative one multiplied).
        - ``stop_tokens``: a row ends once it emits one of them; finished rows are padded
          with the stop token they emitted, and generation ends when every row has stopped
          (so fewer than ``max_new_tokens`` may be added).
        - Context: like nanoGPT, the model reads at most the last ``block_size`` tokens.
          With ``use_cache=True`` the keys and values of past tokens are kept, and each step
          feeds one token. While the sequence fits the window the cached and uncached paths
          give the same tokens. When it outgrows the window, absolute positions shift, so
          the cache is rebuilt from the last ``block_size`` tokens every step: still the
          same tokens as without the cache, but no longer faster.
        """
        if idx.dim() != 2 or idx.size(1) < 1 or idx.dtype != torch.long:
            raise ValueError(f"idx: expected a (B, T >= 1) long tensor, got {tuple(idx.shape)}")
        if max_new_tokens < 0:
            raise ValueError(f"max_new_tokens: must be >= 0, got {max_new_tokens}")
        if temperature < 0:
            raise ValueError(f"temperature: must be >= 0, got {temperature}")
        if repetition_penalty <= 0:
            raise ValueError(f"repetition_penalty: must be > 0, got {repetition_penalty}")
        V = self.config.vocab_size
        if int(idx.min()) < 0 or int(idx.max()) >= V:
            raise ValueError(f"idx: token ids must lie in [0, {V})")
        stops = torch.tensor(sorted(set(stop_tokens or ())), dtype=torch.long, device=idx.device)
        if stops.numel() and (int(stops.min()) < 0 or int(stops.max()) >= V):
            raise ValueError(f"stop_tokens: ids must lie in [0, {V})")

        was_training = self.training
        self.eval()
        B, window = idx.size(0), self.config.block_size
        # a sequence that stays inside the window needs only its final length of cache
        cache = self.new_cache(B, idx.size(1) + max_new_tokens) if use_cache else None
        finished = torch.zeros(B, dtype=torch.bool, device=idx.device)
        pad = torch.zeros(B, dtype=torch.long, device=idx.device)
        for _ in range(max_new_tokens):
            if cache is None:
                h = self.hidden(idx[:, -window:])  # full recompute of the window
            elif idx.size(1) > window:
                cache.reset()  # window overflow: positions shift, rebuild the cache
                h = self.hidden(idx[:, -window:], cache)
            else:
                h = self.hidden(idx[:, cache.length:], cache)  # only the unseen tokens
            logits = self.lm_head(h[:, -1, :])  # (B, V)
            if repetition_penalty != 1.0:
                logits = apply_repetition_penalty(logits, idx, repetition_penalty)
            nxt = next_token(logits, temperature, top_k, top_p, generator)  # (B,)
            if stops.numel():
                nxt = torch.where(finished, pad, nxt)
                newly = ~finished & torch.isin(nxt, stops)
                pad = torch.where(newly, nxt, pad)
                finished = finished | newly
            idx = torch.cat([idx, nxt[:, None]], dim=1)  # (B, T + 1)
            if stops.numel() and bool(finished.all()):
                break
        self.train(was_training)
        return idx


# ---------------------------------------------------------------------- sampling helpers


def apply_repetition_penalty(logits: Tensor, idx: Tensor, penalty: float) -> Tensor:
    """CTRL's repetition penalty: logits (B, V) of the tokens in ``idx`` (B, T) are pushed down.

    Examples:
        >>> import torch
        >>> from probgen.models.arm.gpt import apply_repetition_penalty
        >>> apply_repetition_penalty(torch.tensor([[2.0, -2.0, 1.0]]), torch.tensor([[0, 1]]), 2.0)
        tensor([[ 1., -4.,  1.]])
    """
    if penalty <= 0:
        raise ValueError(f"penalty: must be > 0, got {penalty}")
    seen = logits.gather(1, idx)  # (B, T)
    seen = torch.where(seen > 0, seen / penalty, seen * penalty)
    return logits.scatter(1, idx, seen)


def filter_top_k(logits: Tensor, k: int) -> Tensor:
    """Set all but the ``k`` largest logits of each row (B, V) to -inf.

    Examples:
        >>> import torch
        >>> from probgen.models.arm.gpt import filter_top_k
        >>> filter_top_k(torch.tensor([[1.0, 3.0, 2.0]]), 2)
        tensor([[-inf, 3., 2.]])
    """
    if k < 1:
        raise ValueError(f"k: must be >= 1, got {k}")
    k = min(k, logits.size(-1))
    kth = torch.topk(logits, k, dim=-1).values[:, -1:]  # (B, 1)
    return logits.masked_fill(logits < kth, float("-inf"))


def filter_top_p(logits: Tensor, p: float) -> Tensor:
    """Nucleus filtering: keep the smallest set of tokens whose probability reaches ``p``.

    Examples:
        >>> import torch
        >>> from probgen.models.arm.gpt import filter_top_p
        >>> filter_top_p(torch.tensor([[0.5, 0.3, 0.2]]).log(), 0.7).isinf().tolist()
        [[False, False, True]]
    """
    if not 0.0 < p <= 1.0:
        raise ValueError(f"p: must be in (0, 1], got {p}")
    if p >= 1.0:
        return logits
    sorted_logits, order = torch.sort(logits, dim=-1, descending=True)  # (B, V)
    probs = F.softmax(sorted_logits, dim=-1)
    mass_before = probs.cumsum(dim=-1) - probs  # probability of the strictly better tokens
    drop_sorted = mass_before >= p  # the first token is never dropped (mass_before = 0)
    drop = torch.zeros_like(drop_sorted).scatter(1, order, drop_sorted)  # back to vocabulary order
    return logits.masked_fill(drop, float("-inf"))


def next_token(
    logits: Tensor,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
    generator: torch.Generator | None = None,
) -> Tensor:
    """Pick one token per row of ``logits`` (B, V): argmax if ``temperature == 0``, else sample.

    Examples:
        >>> import torch
        >>> from probgen.models.arm.gpt import next_token
        >>> next_token(torch.tensor([[0.1, 2.0, 0.3]]), temperature=0)
        tensor([1])
    """
    if temperature < 0:
        raise ValueError(f"temperature: must be >= 0, got {temperature}")
    if temperature == 0:
        return logits.argmax(dim=-1)
    logits = logits / temperature
    if top_k is not None:
        logits = filter_top_k(logits, top_k)
    if top_p is not None:
        logits = filter_top_p(logits, top_p)
    probs = F.softmax(logits, dim=-1)  # (B, V)
    return torch.multinomial(probs, 1, generator=generator).squeeze(-1)  # (B,)
