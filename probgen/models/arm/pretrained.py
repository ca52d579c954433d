"""GPT-2 weights: load them from a local Hugging Face folder or a ``torch.save`` file of the course
book's ``GPTModel``, or write them in the Hugging Face layout.

Nothing is downloaded: a user who has GPT-2 (e.g. a copy of the ``gpt2`` model folder, or the
course's ``gpt2-small-124M.pth``) points [`load_gpt2`][probgen.models.arm.pretrained.load_gpt2] at
it; the book's layout is described in
[`probgen.models.arm.book_layout`][probgen.models.arm.book_layout]. The Hugging Face layout is

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

from probgen.errors import ProbgenError
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


def _torch_file(path: Path) -> dict[str, Tensor]:
    """A ``torch.save`` state dict, loaded weights-only: pickled objects other than tensors and
    plain containers are refused, never run."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # pickle.UnpicklingError, RuntimeError, EOFError, ...
        why = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ProbgenError(f"path: {path} cannot be loaded weights-only (it may hold pickled "
                           f"objects other than tensors, which probgen never unpickles): "
                           f"{why[:200]}") from None
    if isinstance(state, dict):
        for wrapper in ("model_state_dict", "state_dict", "model"):
            if isinstance(state.get(wrapper), dict):  # e.g. the book's model + optimizer file
                state = state[wrapper]
                break
    if not isinstance(state, dict) or not state:
        raise ProbgenError(f"path: {path} does not hold a state dict (a mapping of names to "
                           f"tensors), but {type(state).__name__}")
    for key, value in state.items():
        if not isinstance(value, Tensor):
            raise ProbgenError(f"path: {path} holds a {type(value).__name__} under {key!r}, "
                               "not a tensor; expected a model state dict")
    return state


def _read_weights(path: Path) -> dict[str, Tensor]:
    st = path / "model.safetensors"
    if st.is_file():
        return load_file(str(st))
    pt = path / "pytorch_model.bin"
    if pt.is_file():
        return _torch_file(pt)
    raise ProbgenError(f"path: {str(path)!r} has neither model.safetensors nor "
                       "pytorch_model.bin")


def _hf_config_from_state(state: dict[str, Tensor], n_head: int | None,
                          dropout: float) -> GPTConfig:
    """Sizes of Hugging Face GPT-2 weights found without a config.json."""
    plain = {k.removeprefix("transformer."): v for k, v in state.items()}
    if "wte.weight" not in plain or "wpe.weight" not in plain:
        raise ProbgenError("path: the weights are in neither the book's GPTModel layout "
                           "(tok_emb.weight, ...) nor Hugging Face's (wte.weight, ...)")
    vocab, width = plain["wte.weight"].shape
    layers = len({k.split(".")[1] for k in plain if k.startswith("h.")})
    heads = n_head if n_head is not None else width // 64
    if heads < 1 or width % heads:
        raise ProbgenError(f"n_head: cannot tell the number of heads of width {width}; pass "
                           "n_head")
    return GPTConfig(int(vocab), int(plain["wpe.weight"].shape[0]), layers, heads, int(width),
                     dropout, bias=True)


def _find(p: Path) -> tuple[str, Path]:
    """What ``load_gpt2`` reads at ``p``: ``("hf", folder)`` or ``("file", weights file)``."""
    if p.is_file():
        if p.suffix.lower() not in (".pt", ".pth", ".bin", ".safetensors"):
            raise ProbgenError(f"path: {p} is neither a .pt / .pth / .bin torch.save file nor "
                               "a .safetensors file")
        return "file", p
    if not p.is_dir():
        raise ProbgenError(f"path: {str(p)!r} is neither a folder nor a weights file")
    if (p / "config.json").is_file():
        return "hf", p
    found = sorted(q for q in p.iterdir() if q.suffix.lower() in (".pt", ".pth"))
    if len(found) == 1:
        return "file", found[0]
    raise ProbgenError(f"path: {str(p)!r} has no config.json (a Hugging Face folder) and "
                       f"{'several' if found else 'no'} .pt / .pth files (the book's layout)")


def load_gpt2(path: str | Path, dropout: float = 0.0, n_head: int | None = None) -> GPT:
    """A [`GPT`][probgen.models.arm.gpt.GPT] with the weights at ``path``, in either layout:

    - a Hugging Face GPT-2 folder (``config.json`` and ``model.safetensors`` or
      ``pytorch_model.bin``; see the module docs);
    - a ``torch.save`` file (``.pt`` / ``.pth``, or a folder holding exactly one) of the course
      book's ``GPTModel`` state dict
      ([`probgen.models.arm.book_layout`][probgen.models.arm.book_layout]), or of Hugging Face
      keys; it is read with ``torch.load(weights_only=True)``, so a file that
      pickles anything but tensors is refused. Sizes come from the tensors; ``n_head`` (not
      stored in a state dict) defaults to GPT-2's 64 channels per head.

    The layout is told by the keys. Both are turned into Hugging Face's keys, then into
    probgen's by [`from_gpt2_state_dict`][probgen.models.arm.pretrained.from_gpt2_state_dict]. The
    book's output head is not tied to the token embedding: when it differs, the model keeps its
    own ``lm_head`` weight.

    Examples:
        >>> from probgen.models.arm.pretrained import load_gpt2
        >>> load_gpt2("/no/such/folder")
        Traceback (most recent call last):
        ...
        probgen.errors.ProbgenError: path: '/no/such/folder' is neither a folder nor a weights file
    """
    from probgen.models.arm.book_layout import book_config, from_book_state_dict, is_book_layout

    kind, where = _find(Path(path).expanduser())
    head = None
    if kind == "hf":
        config = gpt2_config(json.loads((where / "config.json").read_text()), dropout)
        hf = _read_weights(where)
    else:
        raw = load_file(str(where)) if where.suffix.lower() == ".safetensors" else \
            _torch_file(where)
        if is_book_layout(raw):
            config = book_config(raw, n_head, dropout)
            hf, head = from_book_state_dict(raw)
        else:
            config = _hf_config_from_state(raw, n_head, dropout)
            hf = raw
    state = from_gpt2_state_dict(hf)
    model = GPT(config)
    expected = set(model.state_dict()) - {"lm_head.weight"}
    missing, unexpected = expected - set(state), set(state) - expected
    if missing or unexpected:
        raise ProbgenError(f"path: weights at {where} do not match their config (missing "
                           f"{sorted(missing)[:5]}, unexpected {sorted(unexpected)[:5]})")
    for key, value in state.items():
        want = model.state_dict()[key].shape
        if value.shape != want:
            raise ProbgenError(f"path: {key} has shape {tuple(value.shape)}, expected "
                               f"{tuple(want)}")
    model.load_state_dict({k: v.float() for k, v in state.items()}, strict=False)
    if head is not None:
        if head.shape != model.lm_head.weight.shape:
            raise ProbgenError(f"path: out_head.weight has shape {tuple(head.shape)}, expected "
                               f"{tuple(model.lm_head.weight.shape)}")
        if not torch.equal(head.float(), model.transformer.wte.weight.data):
            model.lm_head.weight = torch.nn.Parameter(head.float().clone())  # untied
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
