"""GPT-2 weights in the Hugging Face layout: load them from a local folder, or write them.

Nothing is downloaded: a user who has GPT-2 (e.g. a copy of the ``gpt2`` model folder)
points [`load_gpt2`][probgen.models.arm.pretrained.load_gpt2] at the directory. The expected layout
is

- ``config.json`` with ``vocab_size``, ``n_positions`` (or ``n_ctx``), ``n_layer``,
  ``n_head``, ``n_embd`` (optional ``activation_function``, ``layer_norm_epsilon``);
- ``model.safetensors``, or else ``pytorch_model.bin`` (read with
  ``torch.load(weights_only=True)``, which refuses pickled code).

Keys look like ``h.0.attn.c_attn.weight`` (optionally prefixed ``transformer.``). GPT-2's
``Conv1D`` layers store their weight as (in, out), the transpose of ``nn.Linear``; those
four kinds of matrices (``attn.c_attn``, ``attn.c_proj``, ``mlp.c_fc``, ``mlp.c_proj``) are
transposed on the way in and out. The causal-mask buffers (``attn.bias``,
``attn.masked_bias``) and the tied ``lm_head.weight`` are skipped.

Examples:
    >>> import tempfile, torch
    >>> from probgen.models.arm.gpt import GPT, GPTConfig
    >>> from probgen.models.arm.pretrained import load_gpt2, save_gpt2
    >>> model = GPT(GPTConfig(vocab_size=10, block_size=8, n_layer=1, n_head=2, n_embd=8))
    >>> with tempfile.TemporaryDirectory() as d:
    ...     save_gpt2(model, d)
    ...     again = load_gpt2(d)
    >>> x = torch.tensor([[1, 2, 3]])
    >>> torch.equal(model(x), again(x))
    True
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import Tensor

from probgen.models.arm.gpt import GPT, GPTConfig

__all__ = ["CONV1D_SUFFIXES", "gpt2_config", "from_gpt2_state_dict", "to_gpt2_state_dict",
           "load_gpt2", "save_gpt2"]

#: Parameters stored transposed by GPT-2's Conv1D layers.
CONV1D_SUFFIXES = ("attn.c_attn.weight", "attn.c_proj.weight", "mlp.c_fc.weight",
                   "mlp.c_proj.weight")
_SKIPPED_SUFFIXES = (".attn.bias", ".attn.masked_bias")
_TANH_GELUS = ("gelu_new", "gelu_pytorch_tanh", "gelu_fast")


def gpt2_config(hf: dict, dropout: float = 0.0) -> GPTConfig:
    """A [`GPTConfig`][probgen.models.arm.gpt.GPTConfig] from a Hugging Face GPT-2 ``config.json``
    dict.

    Examples:
        >>> from probgen.models.arm.pretrained import gpt2_config
        >>> cfg = dict(vocab_size=50257, n_positions=1024, n_layer=12, n_head=12, n_embd=768)
        >>> gpt2_config(cfg).n_layer
        12
    """
    try:
        block_size = hf.get("n_positions", hf.get("n_ctx"))
        config = GPTConfig(vocab_size=int(hf["vocab_size"]), block_size=int(block_size),
                           n_layer=int(hf["n_layer"]), n_head=int(hf["n_head"]),
                           n_embd=int(hf["n_embd"]), dropout=dropout, bias=True)
    except (KeyError, TypeError) as e:
        raise ValueError(f"hf: config.json lacks a GPT-2 size field ({e})") from e
    act = hf.get("activation_function", "gelu_new")
    if act not in _TANH_GELUS:
        raise ValueError(f"hf: activation_function {act!r} is not GPT-2's tanh GELU")
    eps = float(hf.get("layer_norm_epsilon", 1e-5))
    if abs(eps - 1e-5) > 1e-12:
        raise ValueError(f"hf: layer_norm_epsilon={eps} differs from the supported 1e-5")
    return config


def from_gpt2_state_dict(hf_state: dict[str, Tensor]) -> dict[str, Tensor]:
    """Hugging Face GPT-2 keys and layout -> [`GPT`][probgen.models.arm.gpt.GPT] state-dict keys and
    layout."""
    out: dict[str, Tensor] = {}
    for key, value in hf_state.items():
        k = key.removeprefix("transformer.")
        if k.endswith(_SKIPPED_SUFFIXES) or k == "lm_head.weight":
            continue
        if k.endswith(CONV1D_SUFFIXES):
            value = value.t()
        out[f"transformer.{k}"] = value.contiguous()
    return out


def to_gpt2_state_dict(model: GPT) -> dict[str, Tensor]:
    """[`GPT`][probgen.models.arm.gpt.GPT] parameters in the Hugging Face GPT-2 layout (no prefix,
    Conv1D transposed)."""
    if not model.config.bias:
        raise ValueError("model: GPT-2's layout needs bias=True")
    out = {}
    for key, value in model.state_dict().items():
        if key == "lm_head.weight":
            continue  # tied to wte.weight
        k = key.removeprefix("transformer.")
        if k.endswith(CONV1D_SUFFIXES):
            value = value.t()
        out[k] = value.detach().cpu().contiguous()
    return out


def _read_weights(path: Path) -> dict[str, Tensor]:
    st = path / "model.safetensors"
    if st.is_file():
        return load_file(str(st))
    pt = path / "pytorch_model.bin"
    if pt.is_file():
        state = torch.load(pt, map_location="cpu", weights_only=True)
        if not isinstance(state, dict):
            raise ValueError(f"path: {pt} does not hold a state dict")
        return state
    raise ValueError(f"path: {str(path)!r} has neither model.safetensors nor pytorch_model.bin")


def load_gpt2(path: str | Path, dropout: float = 0.0) -> GPT:
    """A [`GPT`][probgen.models.arm.gpt.GPT] with the weights of a local Hugging Face GPT-2 folder
    (see module docs).

    Examples:
        >>> from probgen.models.arm.pretrained import load_gpt2
        >>> load_gpt2("/no/such/folder")
        Traceback (most recent call last):
        ...
        ValueError: path: '/no/such/folder' is not a directory
    """
    p = Path(path).expanduser()
    if not p.is_dir():
        raise ValueError(f"path: {str(path)!r} is not a directory")
    if not (p / "config.json").is_file():
        raise ValueError(f"path: {str(path)!r} has no config.json")
    config = gpt2_config(json.loads((p / "config.json").read_text()), dropout)
    state = from_gpt2_state_dict(_read_weights(p))
    model = GPT(config)
    expected = set(model.state_dict()) - {"lm_head.weight"}
    missing, unexpected = expected - set(state), set(state) - expected
    if missing or unexpected:
        raise ValueError(f"path: weights do not match config.json (missing {sorted(missing)[:5]}, "
                         f"unexpected {sorted(unexpected)[:5]})")
    for key, value in state.items():
        want = model.state_dict()[key].shape
        if value.shape != want:
            raise ValueError(f"path: {key} has shape {tuple(value.shape)}, expected {tuple(want)}")
    model.load_state_dict({k: v.float() for k, v in state.items()}, strict=False)
    return model.eval()


def save_gpt2(model: GPT, path: str | Path) -> None:
    """Write ``config.json`` and ``model.safetensors`` in the Hugging Face GPT-2 layout."""
    p = Path(path)
    p.mkdir(parents=True, exist_ok=True)
    c = model.config
    hf = {"model_type": "gpt2", "architectures": ["GPT2LMHeadModel"],
          "vocab_size": c.vocab_size, "n_positions": c.block_size, "n_ctx": c.block_size,
          "n_layer": c.n_layer, "n_head": c.n_head, "n_embd": c.n_embd,
          "activation_function": "gelu_new", "layer_norm_epsilon": 1e-5,
          "resid_pdrop": c.dropout, "embd_pdrop": c.dropout, "attn_pdrop": c.dropout}
    (p / "config.json").write_text(json.dumps(hf, indent=2))
    save_file(to_gpt2_state_dict(model), str(p / "model.safetensors"), metadata={"format": "pt"})
