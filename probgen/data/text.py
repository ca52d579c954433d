"""Text corpora for language models: one embedded default, or a user's file.

Nothing is downloaded. The default corpus is built from text that ships with Python itself:
the Zen of Python followed by the docstrings of a fixed list of standard-library modules,
read from their source files with `ast` (the modules are located, not imported). It is
English technical prose of about 400 KB, identical on every machine with the same Python
version (other versions give slightly different text; the length is reported by
[`default_corpus`][probgen.data.text.default_corpus]).

Examples:
    >>> from probgen.data.text import default_corpus, split_tokens
    >>> text = default_corpus()
    >>> text.startswith("The Zen of Python"), len(text) > 200_000
    (True, True)
    >>> import torch
    >>> train, val = split_tokens(torch.arange(100), val_fraction=0.1)
    >>> len(train), len(val)
    (90, 10)
"""

from __future__ import annotations

import ast
import codecs
import functools
import importlib.util
from pathlib import Path

import torch
from torch import Tensor

__all__ = ["DEFAULT_MODULES", "default_corpus", "load_text", "split_tokens", "sample_batch",
           "TokenWindows", "disjoint_windows"]

#: Standard-library modules whose docstrings make up the default corpus, in this order.
#: All are plain top-level modules present in Python 3.10 and later.
DEFAULT_MODULES: tuple[str, ...] = (
    "argparse", "bisect", "calendar", "collections", "contextlib", "dataclasses", "datetime",
    "difflib", "doctest", "enum", "fractions", "functools", "heapq", "inspect", "json",
    "logging", "pydoc", "random", "shutil", "statistics", "string", "subprocess", "tarfile",
    "textwrap", "threading", "typing", "zipfile", "_pydecimal",
)

_DOC_NODES = (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)


def _zen_of_python() -> str:
    """The Zen of Python, decoded from the ROT13 source of the ``this`` module (not imported)."""
    spec = importlib.util.find_spec("this")
    if spec is None or spec.origin is None:
        return ""
    tree = ast.parse(Path(spec.origin).read_text(encoding="utf-8"))
    for node in ast.walk(tree):
        if isinstance(node, ast.Assign) and isinstance(node.value, ast.Constant):
            if isinstance(node.value.value, str) and len(node.value.value) > 100:
                return codecs.decode(node.value.value, "rot13").strip()
    return ""


def _module_docstrings(name: str) -> list[str]:
    spec = importlib.util.find_spec(name)
    if spec is None or spec.origin is None or not spec.origin.endswith(".py"):
        return []
    tree = ast.parse(Path(spec.origin).read_text(encoding="utf-8"))
    docs = (ast.get_docstring(node) for node in ast.walk(tree) if isinstance(node, _DOC_NODES))
    return [d for d in docs if d]


@functools.lru_cache(maxsize=1)
def default_corpus() -> str:
    """The embedded corpus: the Zen of Python, then stdlib docstrings (see module docs).

    Examples:
        >>> from probgen.data.text import default_corpus
        >>> print(default_corpus()[:17])
        The Zen of Python
    """
    parts = [_zen_of_python()]
    for name in DEFAULT_MODULES:
        parts.extend(_module_docstrings(name))
    return "\n\n".join(p for p in parts if p) + "\n"


def load_text(path: str | Path | None = None, encoding: str = "utf-8") -> str:
    """Text of a user's file, or the embedded [`default_corpus`][probgen.data.text.default_corpus]
    when ``path`` is None.

    Examples:
        >>> from probgen.data.text import load_text
        >>> load_text()[:3]
        'The'
    """
    if path is None:
        return default_corpus()
    p = Path(path).expanduser()
    if not p.is_file():
        raise ValueError(f"path: {str(path)!r} is not a file")
    text = p.read_text(encoding=encoding)
    if not text:
        raise ValueError(f"path: {str(path)!r} is empty")
    return text


def split_tokens(tokens: Tensor, val_fraction: float = 0.1) -> tuple[Tensor, Tensor]:
    """Split a 1-D token tensor into a leading train part and a trailing validation part.

    Examples:
        >>> import torch
        >>> from probgen.data.text import split_tokens
        >>> [len(t) for t in split_tokens(torch.arange(10), 0.2)]
        [8, 2]
    """
    if tokens.dim() != 1:
        raise ValueError(f"tokens: expected a 1-D tensor, got shape {tuple(tokens.shape)}")
    if not 0.0 <= val_fraction < 1.0:
        raise ValueError(f"val_fraction: must be in [0, 1), got {val_fraction}")
    n_val = int(round(len(tokens) * val_fraction))
    n_train = len(tokens) - n_val
    return tokens[:n_train], tokens[n_train:]


def sample_batch(
    tokens: Tensor,
    batch_size: int,
    block_size: int,
    generator: torch.Generator | None = None,
) -> tuple[Tensor, Tensor]:
    """Random windows of a token stream: inputs ``x`` and next-token targets ``y``, (B, T).

    Examples:
        >>> import torch
        >>> from probgen.data.text import sample_batch
        >>> x, y = sample_batch(torch.arange(50), batch_size=4, block_size=8)
        >>> x.shape, bool((y == x + 1).all())
        (torch.Size([4, 8]), True)
    """
    if tokens.dim() != 1:
        raise ValueError(f"tokens: expected a 1-D tensor, got shape {tuple(tokens.shape)}")
    if batch_size < 1:
        raise ValueError(f"batch_size: must be >= 1, got {batch_size}")
    if block_size < 1 or len(tokens) < block_size + 1:
        raise ValueError(
            f"block_size: {block_size} needs at least {block_size + 1} tokens, have {len(tokens)}"
        )
    starts = torch.randint(len(tokens) - block_size, (batch_size,), generator=generator)
    offsets = torch.arange(block_size)
    x = tokens[starts[:, None] + offsets]  # (B, T)
    y = tokens[starts[:, None] + offsets + 1]  # (B, T)
    return x, y


class TokenWindows(torch.utils.data.Dataset):
    """Every window of ``block_size + 1`` consecutive tokens of a stream, as ``(x, y)``
    pairs (``y`` is ``x`` shifted by one): the training examples of a language model.

    Examples:
        >>> import torch
        >>> w = TokenWindows(torch.arange(10), block_size=4)
        >>> len(w), [t.tolist() for t in w[2]]
        (6, [[2, 3, 4, 5], [3, 4, 5, 6]])
    """

    def __init__(self, tokens: Tensor, block_size: int) -> None:
        if tokens.dim() != 1:
            raise ValueError(f"tokens: expected a 1-D tensor, got shape {tuple(tokens.shape)}")
        if block_size < 1 or len(tokens) < block_size + 1:
            raise ValueError(f"block_size: {block_size} needs at least {block_size + 1} "
                             f"tokens, have {len(tokens)}")
        self.tokens, self.block_size = tokens, int(block_size)

    def __len__(self) -> int:
        return len(self.tokens) - self.block_size

    def __getitem__(self, i: int) -> tuple[Tensor, Tensor]:
        w = self.tokens[i:i + self.block_size + 1]
        return w[:-1], w[1:]


def disjoint_windows(tokens: Tensor, block_size: int) -> tuple[Tensor, Tensor]:
    """Non-overlapping windows ``(x, y)`` of shape ``(N, block_size)`` covering the stream
    (the last, partial window is dropped): validation and test examples.

    Examples:
        >>> import torch
        >>> x, y = disjoint_windows(torch.arange(10), 3)
        >>> x.tolist(), y[0].tolist()
        ([[0, 1, 2], [3, 4, 5], [6, 7, 8]], [1, 2, 3])
    """
    n = (len(tokens) - 1) // block_size
    if n < 1:
        raise ValueError(f"block_size: {block_size} needs at least {block_size + 1} tokens, "
                         f"have {len(tokens)}")
    x = tokens[: n * block_size].reshape(n, block_size)
    y = tokens[1 : n * block_size + 1].reshape(n, block_size)
    return x, y
