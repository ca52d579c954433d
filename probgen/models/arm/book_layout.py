"""GPT-2 weights in the layout of the course book's ``GPTModel`` (Raschka, *Build a Large
Language Model (From Scratch)*, ch. 4-5), converted to the Hugging Face layout.

The book's model keeps its weights under

- ``tok_emb.weight``, ``pos_emb.weight`` (token and position embeddings);
- ``trf_blocks.N.att.W_query`` / ``W_key`` / ``W_value`` (``nn.Linear``, bias optional:
  ``qkv_bias``), ``trf_blocks.N.att.out_proj``, the causal-mask buffer ``trf_blocks.N.att.mask``;
- ``trf_blocks.N.ff.layers.0`` / ``.2`` (the MLP's two ``nn.Linear``, GELU between);
- ``trf_blocks.N.norm1`` / ``norm2`` / ``final_norm`` with ``scale`` and ``shift`` (a LayerNorm
  with eps 1e-5, biased variance);
- ``out_head.weight`` (an untied ``nn.Linear`` without bias).

[`from_book_state_dict`][probgen.models.arm.book_layout.from_book_state_dict] rewrites such a state
dict into the Hugging Face GPT-2 keys and layout (``h.N.attn.c_attn`` with the three projections
side by side, ``Conv1D`` matrices stored (in, out), zero biases where the book has none), so
[`load_gpt2`][probgen.models.arm.pretrained.load_gpt2] maps both layouts to probgen's GPT through
one function, [`from_gpt2_state_dict`][probgen.models.arm.pretrained.from_gpt2_state_dict]. The
output head comes back separately: the book's model does not tie it to the token embedding.

The state dict does not record the number of attention heads; GPT-2 uses heads of 64 channels
(12 heads of the 768-wide small model, 16 / 20 / 25 in the larger ones), which
[`book_config`][probgen.models.arm.book_layout.book_config] assumes unless told otherwise.

Examples:
    >>> import torch
    >>> sd = {"tok_emb.weight": torch.zeros(10, 8), "pos_emb.weight": torch.zeros(4, 8)}
    >>> is_book_layout(sd), is_book_layout({"wte.weight": torch.zeros(10, 8)})
    (True, False)
"""

from __future__ import annotations

import re

import torch
from torch import Tensor

from probgen.errors import ProbgenError
from probgen.models.arm.gpt import GPTConfig

__all__ = ["is_book_layout", "book_config", "from_book_state_dict"]

_BLOCK = re.compile(r"trf_blocks\.(\d+)\.(.+)")
#: book key inside a block -> Hugging Face key inside ``h.N`` and whether it is a Conv1D matrix
_PER_BLOCK = {
    "att.out_proj.weight": ("attn.c_proj.weight", True),
    "att.out_proj.bias": ("attn.c_proj.bias", False),
    "ff.layers.0.weight": ("mlp.c_fc.weight", True),
    "ff.layers.0.bias": ("mlp.c_fc.bias", False),
    "ff.layers.2.weight": ("mlp.c_proj.weight", True),
    "ff.layers.2.bias": ("mlp.c_proj.bias", False),
    "norm1.scale": ("ln_1.weight", False),
    "norm1.shift": ("ln_1.bias", False),
    "norm2.scale": ("ln_2.weight", False),
    "norm2.shift": ("ln_2.bias", False),
}
_QKV = ("att.W_query", "att.W_key", "att.W_value")
_TOP = {"tok_emb.weight": "wte.weight", "pos_emb.weight": "wpe.weight",
        "final_norm.scale": "ln_f.weight", "final_norm.shift": "ln_f.bias"}


def is_book_layout(state: dict[str, Tensor]) -> bool:
    """Whether ``state`` has the book's ``GPTModel`` keys (``tok_emb.weight`` and company)."""
    return "tok_emb.weight" in state and "pos_emb.weight" in state


def _num_blocks(state: dict[str, Tensor]) -> int:
    found = {int(m.group(1)) for k in state if (m := _BLOCK.fullmatch(k))}
    if found != set(range(len(found))):
        raise ProbgenError(f"state: trf_blocks are numbered {sorted(found)}, not 0..N-1")
    return len(found)


def book_config(state: dict[str, Tensor], n_head: int | None = None,
                dropout: float = 0.0) -> GPTConfig:
    """The [`GPTConfig`][probgen.models.arm.gpt.GPTConfig] of a book-layout state dict: sizes from
    the tensors, ``n_head`` given or GPT-2's 64 channels per head.

    Examples:
        >>> import torch
        >>> sd = {"tok_emb.weight": torch.zeros(50, 768), "pos_emb.weight": torch.zeros(9, 768),
        ...       "trf_blocks.0.norm1.scale": torch.ones(768)}
        >>> c = book_config(sd)
        >>> c.vocab_size, c.block_size, c.n_layer, c.n_head
        (50, 9, 1, 12)
    """
    vocab, width = state["tok_emb.weight"].shape
    block = state["pos_emb.weight"].shape[0]
    if n_head is None:
        if width % 64:
            raise ProbgenError(f"n_head: the book's state dict does not record the number of "
                               f"heads and its width {width} is no multiple of GPT-2's 64 "
                               "channels per head; pass n_head")
        n_head = width // 64
    if width % n_head:
        raise ProbgenError(f"n_head: the width {width} is not divisible by n_head={n_head}")
    return GPTConfig(vocab_size=int(vocab), block_size=int(block), n_layer=_num_blocks(state),
                     n_head=int(n_head), n_embd=int(width), dropout=dropout, bias=True)


def from_book_state_dict(state: dict[str, Tensor]) -> tuple[dict[str, Tensor], Tensor | None]:
    """The book's ``GPTModel`` state dict in Hugging Face GPT-2 keys and layout, and the
    output head (``out_head.weight``, ``None`` when absent).

    Examples:
        >>> import torch
        >>> C = 4
        >>> sd = {"tok_emb.weight": torch.randn(7, C), "pos_emb.weight": torch.randn(5, C),
        ...       "final_norm.scale": torch.ones(C), "final_norm.shift": torch.zeros(C)}
        >>> for name in ("W_query", "W_key", "W_value", "out_proj"):
        ...     sd[f"trf_blocks.0.att.{name}.weight"] = torch.randn(C, C)
        >>> sd["trf_blocks.0.att.out_proj.bias"] = torch.zeros(C)
        >>> sd.update({"trf_blocks.0.ff.layers.0.weight": torch.randn(4 * C, C),
        ...            "trf_blocks.0.ff.layers.0.bias": torch.zeros(4 * C),
        ...            "trf_blocks.0.ff.layers.2.weight": torch.randn(C, 4 * C),
        ...            "trf_blocks.0.ff.layers.2.bias": torch.zeros(C)})
        >>> for n in ("norm1", "norm2"):
        ...     sd[f"trf_blocks.0.{n}.scale"], sd[f"trf_blocks.0.{n}.shift"] = torch.ones(C), \\
        ...         torch.zeros(C)
        >>> hf, head = from_book_state_dict(sd)
        >>> hf["h.0.attn.c_attn.weight"].shape, hf["h.0.attn.c_attn.bias"].abs().sum().item()
        (torch.Size([4, 12]), 0.0)
        >>> head is None
        True
    """
    if not is_book_layout(state):
        raise ProbgenError("state: not the book's GPTModel layout (no tok_emb.weight / "
                           "pos_emb.weight)")
    out: dict[str, Tensor] = {}
    used: set[str] = set()
    for key, hf in _TOP.items():
        if key not in state:
            raise ProbgenError(f"state: the book's layout needs {key!r}")
        out[hf] = state[key]
        used.add(key)
    for i in range(_num_blocks(state)):
        pre = f"trf_blocks.{i}."

        def get(name: str, pre: str = pre) -> Tensor:
            if pre + name not in state:
                raise ProbgenError(f"state: the book's layout needs {pre + name!r}")
            used.add(pre + name)
            return state[pre + name]

        for name, (hf, conv1d) in _PER_BLOCK.items():
            value = get(name)
            out[f"h.{i}.{hf}"] = value.t() if conv1d else value
        weights = [get(f"{n}.weight") for n in _QKV]  # each (out, in)
        out[f"h.{i}.attn.c_attn.weight"] = torch.cat(weights, 0).t()  # Conv1D: (in, 3 out)
        biases = [state.get(pre + f"{n}.bias") for n in _QKV]
        if any(b is not None for b in biases) and not all(b is not None for b in biases):
            raise ProbgenError(f"state: {pre}att has biases on some of W_query / W_key / "
                               "W_value only")
        used.update(pre + f"{n}.bias" for n in _QKV)
        out[f"h.{i}.attn.c_attn.bias"] = (torch.cat(biases) if biases[0] is not None  # type: ignore[arg-type]
                                          else torch.zeros(3 * weights[0].shape[0],
                                                           dtype=weights[0].dtype))
        used.add(pre + "att.mask")  # the causal-mask buffer: recomputed, not loaded
    head = state.get("out_head.weight")
    used.add("out_head.weight")
    unexpected = sorted(set(state) - used)
    if unexpected:
        raise ProbgenError(f"state: keys the book's GPTModel does not have: {unexpected[:5]}")
    return {k: v.contiguous() for k, v in out.items()}, head
