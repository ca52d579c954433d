"""Train / validation / test splits for every family: an embedded name or a local path.

[`load_splits`][probgen.data.splits.load_splits] turns what a user passes as ``--data`` into a
[`DataSplits`][probgen.data.splits.DataSplits]:

- ``"digits"``: scikit-learn's 8x8 digits, 17 integer levels, ``(N, 64)``, the fixed
  1000 / 350 / 447 split (kind ``"digits"``; labels included);
- a 2-D density name (``swiss_roll``, ``moons``, ``eight_gaussians``, ``checkerboard``,
  ``rings`` and the aliases ``swissroll``, ``8gaussians``): 5000 / 1000 / 2000 points drawn
  with seeds 0 / 1 / 2 (kind ``"vectors"``);
- ``"shapes"``: procedurally rendered 32x32 RGB shapes, 5000 / 500 / 500 (kind ``"images"``;
  the factors are the labels); ``"shapes_centred"`` (alias ``shapes_centered``) the same
  draws with every shape in the middle (as in 3D Shapes) and unrotated (see
  [`probgen.data.shapes`][probgen.data.shapes]);
- ``"text"``: the embedded corpus (text that ships with Python), split 80 / 10 / 10 by
  characters, test last (kind ``"text"``);
- ``"digits_edges"`` / ``"digits_masked"``: paired image-to-image tasks made from the digits
  splits (kind ``"pairs"``), ``"digits_unpaired"`` an unpaired one (kind ``"unpaired"``); see
  [`probgen.data.paired`][probgen.data.paired];
- a local folder with ``train/`` (pix2pix's ``A|B`` images; ``val/``, ``test/`` when present) or
  with ``trainA/`` and ``trainB/`` (CycleGAN's layout; ``testA/``, ``testB/`` when present);
- a local path: a ``.txt`` file (text, split as above); a folder of images or an array file
  (``.npy``, ``.npz``, ``.pt``, ``.safetensors``) of vectors ``(N, D)`` or images
  ``(N, H, W)`` / ``(N, C, H, W)``. Validation and test examples (10% each) are carved out by
  a permutation drawn from ``split_seed``; `DataSplits.info` states how, and
  [`load_splits`][probgen.data.splits.load_splits] given that ``info`` rebuilds the same splits.

A file of the wrong shape or dtype, or with non-finite values, is a one-line
[`ProbgenError`][probgen.errors.ProbgenError] naming the file.

Examples:
    >>> d = load_splits("digits")
    >>> d.kind, tuple(d.train.shape), d.shape, d.info["name"]
    ('digits', (1000, 64), (64,), 'digits')
    >>> load_splits("moons").kind
    'vectors'
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from probgen.errors import ProbgenError

__all__ = ["DataSplits", "load_splits", "text_splits", "EMBEDDED", "KINDS", "describe_kind"]

#: embedded data names -> kind
EMBEDDED: dict[str, str] = {
    "digits": "digits",
    "swiss_roll": "vectors", "swissroll": "vectors",
    "moons": "vectors",
    "eight_gaussians": "vectors", "8gaussians": "vectors",
    "checkerboard": "vectors",
    "rings": "vectors",
    "shapes": "images",
    "shapes_centred": "images", "shapes_centered": "images",
    "text": "text",
    "digits_edges": "pairs", "digits_masked": "pairs",
    "digits_unpaired": "unpaired",
}
_ALIASES = {"swissroll": "swiss_roll", "8gaussians": "eight_gaussians",
            "shapes_centered": "shapes_centred"}
#: what each kind of data is
KINDS: dict[str, str] = {
    "digits": "8x8 digits at 17 integer levels, (N, 64)",
    "vectors": "real vectors (N, D), e.g. 2-D point clouds",
    "images": "images (N, C, H, W) in [0, 1]",
    "text": "a character string",
    "pairs": "paired images (N, 2, C, H, W) in [0, 1]: source A, target B",
    "unpaired": "two image domains A, B (N, 2, C, H, W) in [0, 1], rows not paired",
}
_DENSITY_SIZES = (5000, 1000, 2000)
_SHAPES_SIZES = (5000, 500, 500)
_FRACTIONS = (0.1, 0.1)  # validation, test
_ARRAY_SUFFIXES = (".npy", ".npz", ".pt", ".safetensors")


def describe_kind(kind: str) -> str:
    """One line on a kind of data (for error messages and ``probgen families``)."""
    return f"{kind} ({KINDS.get(kind, '?')})"


@dataclass
class DataSplits:
    """Three splits of one data set, its kind and how it was made.

    ``train``, ``val``, ``test`` are tensors (strings for text); ``labels`` the matching
    label tensors where the data has them; ``info`` is JSON-able and reproduces the splits
    through [`load_splits`][probgen.data.splits.load_splits].
    """

    kind: str
    train: Any
    val: Any
    test: Any
    info: dict[str, Any]
    labels: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = field(default=None,
                                                                          repr=False)

    def __post_init__(self) -> None:
        self.info = {**self.info, "kind": self.kind, "shape": list(self.shape)}

    @property
    def name(self) -> str:
        """The embedded name, or the local path."""
        return str(self.info["name"])

    @property
    def shape(self) -> tuple[int, ...]:
        """The shape of one example (``()`` for text)."""
        return () if self.kind == "text" else tuple(self.train.shape[1:])

    @property
    def levels(self) -> int | None:
        """Number of integer levels of discrete data (17 for digits), else ``None``."""
        return self.info.get("levels")

    def sizes(self) -> tuple[int, int, int]:
        """Examples (characters for text) in train, val and test."""
        return len(self.train), len(self.val), len(self.test)


def load_splits(data: str | os.PathLike | dict[str, Any], split_seed: int = 0) -> DataSplits:
    """The splits of an embedded data set, of a local file or folder, or of a stored ``info``.

    Examples:
        >>> import numpy as np, tempfile, os
        >>> p = os.path.join(tempfile.mkdtemp(), "pts.npy")
        >>> np.save(p, np.random.default_rng(0).normal(size=(100, 2)).astype("float32"))
        >>> s = load_splits(p)
        >>> s.kind, s.sizes(), load_splits(s.info).sizes()
        ('vectors', (80, 10, 10), (80, 10, 10))
    """
    if isinstance(data, dict):
        name = data.get("name")
        if not isinstance(name, str):
            raise ProbgenError(f"data: stored data info has no name: {data!r}")
        if data.get("source") == "memory":
            raise ProbgenError(f"data: {name!r} was given in memory (text_splits) and is not "
                               "stored; it cannot be loaded again")
        out = load_splits(name, int(data.get("split_seed", split_seed)))
        digest = data.get("sha256")
        if digest is not None and out.info.get("sha256") != digest:
            raise ProbgenError(f"data: {name} changed since the run was trained "
                               "(its SHA-256 differs); the splits would not be the same")
        return out
    if isinstance(data, str) and data in EMBEDDED:
        return _embedded(_ALIASES.get(data, data))
    path = Path(data)
    if not path.exists():
        raise ProbgenError(f"data: {str(data)!r} is neither an embedded data set "
                           f"({', '.join(sorted(EMBEDDED))}) nor an existing file or folder")
    if path.is_dir() and ((path / "train").is_dir() or (path / "trainA").is_dir()):
        from probgen.data.paired import folder_splits

        kind, parts, info = folder_splits(path, split_seed)
        return DataSplits(kind, *parts, {**info, "sha256": _sha256_tree(path)})
    if path.is_dir() or path.suffix.lower() in (".npy", ".safetensors"):
        streamed = _streamed(path, split_seed)
        if streamed is not None:
            return streamed
    if path.is_dir():
        from probgen.data.local import load_images

        return _carve(path, _check_array(load_images(path), path), split_seed)
    if path.suffix.lower() == ".txt":
        return _text(path.read_text(encoding="utf-8", errors="strict"), str(path), path)
    if path.suffix.lower() in _ARRAY_SUFFIXES:
        from probgen.data.local import load_tensor

        return _carve(path, _check_array(load_tensor(path), path), split_seed)
    raise ProbgenError(f"data: {path} has an unsupported type {path.suffix!r} "
                       f"(.txt, an image folder, or {', '.join(_ARRAY_SUFFIXES)})")


def _embedded(name: str) -> DataSplits:
    info: dict[str, Any] = {"name": name, "source": "embedded"}
    if name == "digits":
        from probgen.data.digits import NUM_LEVELS, load_digit_labels, load_digits

        splits = [load_digits(s, "levels") for s in ("train", "val", "test")]
        labels = tuple(load_digit_labels(s) for s in ("train", "val", "test"))
        info.update(levels=NUM_LEVELS, split="first 1000 / next 350 / last 447")
        return DataSplits("digits", *splits, info, labels)  # type: ignore[arg-type]
    if name == "text":
        from probgen.data.text import default_corpus

        return _text(default_corpus(), name, None)
    if name in ("shapes", "shapes_centred"):
        from probgen.data.shapes import make_shapes

        centred = name == "shapes_centred"
        parts = [make_shapes(n, seed=s, centred=centred) for n, s in zip(_SHAPES_SIZES, (0, 1, 2))]
        info.update(sizes=list(_SHAPES_SIZES), seeds=[0, 1, 2], size=32)
        if centred:
            info.update(layout="centred: every shape in the middle, unrotated")
        return DataSplits("images", *(p.images for p in parts), info,
                          tuple(p.factors for p in parts))  # type: ignore[arg-type]
    if EMBEDDED[name] in ("pairs", "unpaired"):
        from probgen.data.paired import digits_pairs, digits_unpaired

        task = name.split("_", 1)[1]
        parts = [digits_pairs(s, task) if task != "unpaired" else digits_unpaired(s)
                 for s in ("train", "val", "test")]
        info.update(split="the digits splits, upsampled to 32x32", task=task)
        return DataSplits(EMBEDDED[name], *parts, info)  # type: ignore[arg-type]
    from probgen.data.densities import load_density

    splits = [load_density(name, n, seed=s) for n, s in zip(_DENSITY_SIZES, (0, 1, 2))]
    info.update(sizes=list(_DENSITY_SIZES), seeds=[0, 1, 2])
    return DataSplits("vectors", *splits, info)


def text_splits(text: str, name: str = "text (given)") -> DataSplits:
    """Splits of a string held in memory (80 / 10 / 10 by characters, test last).

    It is not stored on disk, so a run trained on it can be sampled and evaluated in the
    session that made it, but not re-evaluated from its folder.

    Examples:
        >>> text_splits("abc " * 50).sizes()
        (160, 20, 20)
    """
    if not isinstance(text, str):
        raise ProbgenError(f"text: expected a string, got {type(text).__name__}")
    out = _text(text, name, None)
    out.info["source"] = "memory"
    return out


def _text(text: str, name: str, path: Path | None) -> DataSplits:
    if len(text) < 100:
        raise ProbgenError(f"data: {name} holds {len(text)} characters; at least 100 are needed")
    n = len(text)
    a, b = int(n * (1 - sum(_FRACTIONS))), int(n * (1 - _FRACTIONS[1]))
    info: dict[str, Any] = {"name": name, "source": "embedded" if path is None else "local",
                            "split": "first 80% / next 10% / last 10% of the characters"}
    if path is not None:
        info["sha256"] = _sha256(path)
    return DataSplits("text", text[:a], text[a:b], text[b:], info)


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    files = sorted(p for p in path.iterdir() if p.is_file()) if path.is_dir() else [path]
    for f in files:
        h.update(f.name.encode())
        with f.open("rb") as fh:  # in chunks: the file may not fit in memory
            for chunk in iter(lambda: fh.read(1 << 24), b""):
                h.update(chunk)
    return h.hexdigest()


def _streamed(path: Path, seed: int) -> DataSplits | None:
    """Splits whose training rows stay on disk (read by ``fit`` through a DataLoader), when
    ``PROBGEN_STREAM=1`` or when the data would take more than half the available memory
    (``PROBGEN_STREAM=0``: never); ``None`` to load it whole."""
    from probgen.data.stream import ArrayRows, ImageFolderRows, Subset, available_memory

    flag = os.environ.get("PROBGEN_STREAM", "")
    if flag == "0":
        return None
    rows = ImageFolderRows(path) if path.is_dir() else ArrayRows(path)
    if flag != "1" and rows.nbytes <= available_memory() // 2:
        return None
    n = rows.shape[0]
    if n < 10:
        raise ProbgenError(f"data: {path} holds {n} examples; at least 10 are needed "
                           "to carve validation and test examples")
    test, val, train = _split_indices(n, seed)
    info = {"name": str(path), "source": "local", "sha256": _sha256(path),
            "split_seed": seed, "val_fraction": _FRACTIONS[0], "test_fraction": _FRACTIONS[1],
            "sizes": [len(train), len(val), len(test)], "streamed": True}
    kind = "vectors" if len(rows.shape) == 2 else "images"
    return DataSplits(kind, Subset(rows, train), Subset(rows, val).materialise(),
                      Subset(rows, test).materialise(), info)


def _split_indices(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Test, validation and training rows of ``n`` examples (10% / 10% / the rest)."""
    n_val, n_test = (max(1, int(round(n * f))) for f in _FRACTIONS)
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    return order[:n_test], order[n_test:n_test + n_val], order[n_test + n_val:]
def _sha256_tree(path: Path) -> str:
    h = hashlib.sha256()
    for sub in sorted(p for p in path.iterdir() if p.is_dir()):
        h.update(sub.name.encode())
        h.update(_sha256(sub).encode())
    return h.hexdigest()


def _check_array(x: torch.Tensor, path: Path) -> torch.Tensor:
    if x.is_complex() or x.dtype == torch.bool:
        raise ProbgenError(f"data: {path} has dtype {x.dtype}; real or integer values are needed")
    if x.dim() not in (2, 3, 4):
        raise ProbgenError(f"data: {path} holds an array of shape {tuple(x.shape)}; expected "
                           "vectors (N, D) or images (N, H, W) / (N, C, H, W)")
    if x.dim() == 4 and x.shape[1] not in (1, 3):
        raise ProbgenError(f"data: {path} holds images of shape {tuple(x.shape[1:])}; expected "
                           "(N, C, H, W) with 1 or 3 channels")
    if x.is_floating_point() and not bool(torch.isfinite(x).all()):
        bad = int((~torch.isfinite(x)).reshape(x.shape[0], -1).any(1).sum())
        raise ProbgenError(f"data: {path} holds non-finite values (NaN or inf) in {bad} "
                           "example(s)")
    if x.shape[0] < 10:
        raise ProbgenError(f"data: {path} holds {x.shape[0]} examples; at least 10 are needed "
                           "to carve validation and test examples")
    return x


def _carve(path: Path, x: torch.Tensor, seed: int) -> DataSplits:
    if x.dim() == 3:
        x = x[:, None]
    kind = "vectors" if x.dim() == 2 else "images"
    if kind == "vectors":
        x = x.float()
    elif not x.is_floating_point():
        if int(x.min()) < 0 or int(x.max()) > 255:
            raise ProbgenError(f"data: {path} holds integer images outside 0..255")
        x = x.float() / 255.0
    elif float(x.min()) < 0 or float(x.max()) > 1:
        raise ProbgenError(f"data: {path} holds float images outside [0, 1] "
                           f"(min {float(x.min()):.3g}, max {float(x.max()):.3g})")
    test, val, train = _split_indices(x.shape[0], seed)
    info = {"name": str(path), "source": "local", "sha256": _sha256(path),
            "split_seed": seed, "val_fraction": _FRACTIONS[0], "test_fraction": _FRACTIONS[1],
            "sizes": [len(train), len(val), len(test)]}
    return DataSplits(kind, x[train], x[val], x[test], info)
