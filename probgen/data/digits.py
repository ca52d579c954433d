"""scikit-learn's 8x8 digits (ships with scikit-learn; nothing is downloaded).

Split as in Tomczak's *Deep Generative Modeling*: train = first 1000 images,
val = next 350, test = last 447. Pixels come in four forms:

- ``"levels"``: the original 17 integer levels 0..16 (``torch.long``),
- ``"binary"``: ``1.0`` where the level is > 8 (``levels >= 9``), else ``0.0``,
- ``"unit"``: ``levels / 16`` in [0, 1],
- ``"symmetric"``: ``levels / 8 - 1`` in [-1, 1].

Examples:
    >>> x = load_digits("train", form="levels")
    >>> tuple(x.shape), x.dtype, int(x.max())
    ((1000, 64), torch.int64, 16)
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
import torch

from probgen.errors import ProbgenError

__all__ = ["SPLITS", "FORMS", "NUM_LEVELS", "load_digits", "load_digit_labels"]

SPLITS: dict[str, slice] = {
    "train": slice(0, 1000),
    "val": slice(1000, 1350),
    "test": slice(1350, None),
    "all": slice(None),
}
FORMS = ("levels", "binary", "unit", "symmetric")
NUM_LEVELS = 17


@lru_cache(maxsize=1)
def _raw() -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits as sk_load_digits

    bunch = sk_load_digits()
    return bunch.data.astype(np.int64), bunch.target.astype(np.int64)


def _split(split: str) -> slice:
    if split not in SPLITS:
        raise ProbgenError(f"split: unknown {split!r}; choose one of {sorted(SPLITS)}")
    return SPLITS[split]


def load_digits(split: str = "train", form: str = "levels", image: bool = False) -> torch.Tensor:
    """Digits of one split as ``(N, 64)`` (or ``(N, 1, 8, 8)`` with ``image=True``).

    Examples:
        >>> load_digits("test", "unit", image=True).shape
        torch.Size([447, 1, 8, 8])
    """
    if form not in FORMS:
        raise ProbgenError(f"form: unknown {form!r}; choose one of {list(FORMS)}")
    levels = torch.from_numpy(_raw()[0][_split(split)].copy())
    if form == "levels":
        x = levels
    elif form == "binary":
        x = (levels > 8).to(torch.float32)
    elif form == "unit":
        x = levels.to(torch.float32) / 16.0
    else:
        x = levels.to(torch.float32) / 8.0 - 1.0
    return x.reshape(-1, 1, 8, 8) if image else x


def load_digit_labels(split: str = "train") -> torch.Tensor:
    """Class labels 0..9 of one split (``torch.long``).

    Examples:
        >>> load_digit_labels("val").shape
        torch.Size([350])
    """
    return torch.from_numpy(_raw()[1][_split(split)].copy())
