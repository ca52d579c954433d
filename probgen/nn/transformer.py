"""Decoder-only transformer blocks with a key/value cache.

The pieces of a GPT block, top to bottom: causal self-attention, the MLP and the pre-norm
residual block (Radford et al. 2019, "Language Models are Unsupervised Multitask Learners",
section 2.3). Parameter names follow GPT-2 (``c_attn``, ``c_proj``, ``c_fc``, ``ln_1``,
``ln_2``) so that published weights map onto them one to one.

Attention uses `torch.nn.functional.scaled_dot_product_attention`. A
[`KVCache`][probgen.nn.transformer.KVCache] stores the keys and values of the tokens already seen,
so generating one more token costs one query against the cache instead of re-running the whole
prefix.

Examples:
    >>> import torch
    >>> from probgen.nn.transformer import Block, KVCache
    >>> block = Block(n_embd=32, n_head=4)
    >>> x = torch.randn(2, 5, 32)
    >>> block(x).shape
    torch.Size([2, 5, 32])
    >>> cache = KVCache(n_layer=1, batch_size=2, n_head=4, head_dim=8, max_len=16)
    >>> y = block(x, cache=cache, layer=0); cache.advance(5); cache.length
    5
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["KVCache", "CausalSelfAttention", "MLP", "Block"]


class KVCache:
    """Keys and values of every layer for the positions generated so far.

    Storage is preallocated: ``(n_layer, B, n_head, max_len, head_dim)`` for keys and for
    values, left uninitialised (``torch.empty``): only positions below ``length`` are ever
    read, and zero-filling a GPT-2-sized cache costs as much as a dozen generated tokens.
    A forward pass writes the new positions ``[length, length + T)`` of each layer;
    the caller then calls [`advance`][probgen.nn.transformer.KVCache.advance] once, after all layers
    have run. ``max_len`` is the model's ``block_size``: a cache that is full cannot take more
    tokens (``GPT.generate`` then rebuilds it from the last ``block_size`` tokens, see there).

    Examples:
        >>> cache = KVCache(n_layer=2, batch_size=1, n_head=2, head_dim=4, max_len=8)
        >>> cache.length, cache.max_len
        (0, 8)
    """

    def __init__(
        self,
        n_layer: int,
        batch_size: int,
        n_head: int,
        head_dim: int,
        max_len: int,
        device: torch.device | str | None = None,
        dtype: torch.dtype = torch.float32,
    ) -> None:
        for name, value in [("n_layer", n_layer), ("batch_size", batch_size),
                            ("n_head", n_head), ("head_dim", head_dim), ("max_len", max_len)]:
            if value < 1:
                raise ValueError(f"{name} must be >= 1, got {value}")
        shape = (n_layer, batch_size, n_head, max_len, head_dim)
        self.k = torch.empty(shape, device=device, dtype=dtype)
        self.v = torch.empty(shape, device=device, dtype=dtype)
        self.max_len = max_len
        self.length = 0

    def update(self, layer: int, k: Tensor, v: Tensor) -> tuple[Tensor, Tensor]:
        """Write ``k, v`` of shape (B, nh, T, hs) after the cached positions of ``layer``.

        Returns the keys and values of all positions so far, (B, nh, length + T, hs).
        """
        t = k.size(2)
        end = self.length + t
        if end > self.max_len:
            raise ValueError(
                f"k: {t} new positions do not fit a cache holding {self.length} of {self.max_len}"
            )
        self.k[layer, :, :, self.length:end] = k
        self.v[layer, :, :, self.length:end] = v
        return self.k[layer, :, :, :end], self.v[layer, :, :, :end]

    def advance(self, t: int) -> None:
        """Mark ``t`` more positions as stored (call once per forward pass, after all layers)."""
        if self.length + t > self.max_len:
            raise ValueError(f"t: cannot advance {t} past max_len={self.max_len}")
        self.length += t

    def reset(self) -> None:
        """Forget every stored position (the storage is reused)."""
        self.length = 0


class CausalSelfAttention(nn.Module):
    """Multi-head masked self-attention (Vaswani et al. 2017, section 3.2).

    ``c_attn`` projects to queries, keys and values at once; ``c_proj`` mixes the heads.
    """

    def __init__(self, n_embd: int, n_head: int, dropout: float = 0.0, bias: bool = True):
        super().__init__()
        if n_embd % n_head != 0:
            raise ValueError(f"n_head: n_embd={n_embd} is not divisible by n_head={n_head}")
        self.n_head = n_head
        self.n_embd = n_embd
        self.dropout = dropout
        self.c_attn = nn.Linear(n_embd, 3 * n_embd, bias=bias)
        self.c_proj = nn.Linear(n_embd, n_embd, bias=bias)
        self.resid_dropout = nn.Dropout(dropout)

    def forward(self, x: Tensor, cache: KVCache | None = None, layer: int = 0) -> Tensor:
        B, T, C = x.shape
        q, k, v = self.c_attn(x).split(self.n_embd, dim=2)  # 3 x (B, T, C)
        hs = C // self.n_head
        q = q.view(B, T, self.n_head, hs).transpose(1, 2)  # (B, nh, T, hs)
        k = k.view(B, T, self.n_head, hs).transpose(1, 2)  # (B, nh, T, hs)
        v = v.view(B, T, self.n_head, hs).transpose(1, 2)  # (B, nh, T, hs)

        past = 0 if cache is None else cache.length
        if cache is not None:
            k, v = cache.update(layer, k, v)  # (B, nh, past + T, hs)
        p = self.dropout if self.training else 0.0
        if past == 0:
            # no cached prefix: the usual lower-triangular mask
            y = F.scaled_dot_product_attention(q, k, v, dropout_p=p, is_causal=True)
        elif T == 1:
            # one new query may look at every cached position: no mask needed
            y = F.scaled_dot_product_attention(q, k, v, dropout_p=p)
        else:
            # T new queries after `past` cached ones: query i sees keys 0 .. past + i
            mask = torch.ones(T, past + T, dtype=torch.bool, device=x.device).tril(diagonal=past)
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=p)
        y = y.transpose(1, 2).contiguous().view(B, T, C)  # (B, T, C), heads side by side
        return self.resid_dropout(self.c_proj(y))


class MLP(nn.Module):
    """Position-wise feed-forward net: ``C -> 4C -> GELU -> C`` (GPT-2's tanh GELU)."""

    def __init__(self, n_embd: int, dropout: float = 0.0, bias: bool = True):
        super().__init__()
        self.c_fc = nn.Linear(n_embd, 4 * n_embd, bias=bias)
        self.gelu = nn.GELU(approximate="tanh")
        self.c_proj = nn.Linear(4 * n_embd, n_embd, bias=bias)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: Tensor) -> Tensor:
        return self.dropout(self.c_proj(self.gelu(self.c_fc(x))))  # (B, T, C)


class Block(nn.Module):
    """Pre-norm transformer block: ``x + attn(ln_1(x))`` then ``x + mlp(ln_2(x))``."""

    def __init__(self, n_embd: int, n_head: int, dropout: float = 0.0, bias: bool = True):
        super().__init__()
        self.ln_1 = nn.LayerNorm(n_embd, bias=bias)
        self.attn = CausalSelfAttention(n_embd, n_head, dropout, bias)
        self.ln_2 = nn.LayerNorm(n_embd, bias=bias)
        self.mlp = MLP(n_embd, dropout, bias)

    def forward(self, x: Tensor, cache: KVCache | None = None, layer: int = 0) -> Tensor:
        x = x + self.attn(self.ln_1(x), cache, layer)  # (B, T, C)
        x = x + self.mlp(self.ln_2(x))  # (B, T, C)
        return x
