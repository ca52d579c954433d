"""Image-to-image data: embedded paired and unpaired tasks made from digits, pix2pix / CycleGAN
folders, and the paired augmentation.

A pair set is one tensor ``(N, 2, C, H, W)`` in ``[0, 1]``: ``[:, 0]`` the source ``A``,
``[:, 1]`` the target ``B``.

- [`digits_pairs`][probgen.data.paired.digits_pairs]: the digits splits upsampled to 32x32
  (bilinear) as ``B``, with ``A`` their edge map (``"edges"``: a morphological gradient,
  dilation minus erosion over 3x3, thresholded at 0.25) or the digit with a random 12x12 square
  masked out (``"masked"``, seeded);
- [`digits_unpaired`][probgen.data.paired.digits_unpaired]: the same edges ``A`` and digits ``B``
  from *disjoint* images (the first half of a split gives ``A``, the second half ``B``): no
  example has its partner, the CycleGAN setting;
- [`load_pix2pix_folder`][probgen.data.paired.load_pix2pix_folder]: images holding ``A|B`` side by
  side (the layout of the pix2pix data sets such as maps: width = 2 x height);
- [`load_unpaired_folders`][probgen.data.paired.load_unpaired_folders]: two folders (CycleGAN's
  ``trainA`` / ``trainB``);
- [`paired_augment`][probgen.data.paired.paired_augment]: one random crop (after reflection
  padding) and one random horizontal flip per pair, applied to *both* images (pix2pix's jitter).

A mis-shaped pair, a folder with fewer than two images, an image of another size or mode
(grayscale / RGB / alpha) is a one-line [`ProbgenError`][probgen.errors.ProbgenError] naming the
file.

Examples:
    >>> p = digits_pairs("val")
    >>> tuple(p.shape), float(p.min()) >= 0, float(p.max()) <= 1
    ((350, 2, 1, 32, 32), True, True)
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from probgen.errors import ProbgenError

__all__ = ["TASKS", "folder_splits", "digits_pairs", "digits_unpaired", "edge_map",
           "upsample_digits", "downsample_digits",
           "load_pix2pix_folder", "load_unpaired_folders", "paired_augment", "SIZE"]

#: the embedded tasks
TASKS = ("edges", "masked")
#: side of the embedded tasks' images
SIZE = 32


def upsample_digits(x: Tensor, size: int = SIZE) -> Tensor:
    """Digits ``(N, 64)`` in ``[0, 1]`` -> ``(N, 1, size, size)`` (bilinear).

    Examples:
        >>> upsample_digits(torch.ones(2, 64)).shape
        torch.Size([2, 1, 32, 32])
    """
    img = x.reshape(-1, 1, 8, 8)
    img = img if img.is_floating_point() else img.float()
    return F.interpolate(img, size=(size, size), mode="bilinear", align_corners=False).clamp(0, 1)


_PINV: dict[int, Tensor] = {}


def downsample_digits(images: Tensor) -> Tensor:
    """Images ``(N, 1, S, S)`` -> 8x8 digits ``(N, 64)``: the least-squares inverse (the
    pseudo-inverse) of [`upsample_digits`][probgen.data.paired.upsample_digits], exact on its
    outputs, the projection of any other image onto what an upsampled digit can be.

    Examples:
        >>> x = torch.rand(3, 64)
        >>> bool(torch.allclose(downsample_digits(upsample_digits(x)), x, atol=1e-4))
        True
    """
    size = images.shape[-1]
    if images.dim() != 4 or images.shape[1] != 1 or images.shape[2] != size:
        raise ProbgenError(f"images: expected (N, 1, S, S), got {tuple(images.shape)}")
    if size not in _PINV:
        basis = upsample_digits(torch.eye(64, dtype=torch.float64), size).reshape(64, -1)
        _PINV[size] = torch.linalg.pinv(basis.T)  # (64, S*S)
    return (images.reshape(len(images), -1).double() @ _PINV[size].T).float()


def edge_map(b: Tensor, threshold: float = 0.25) -> Tensor:
    """Binary edges of images ``(N, 1, H, W)``: ``dilate - erode`` (3x3) above ``threshold``.

    Examples:
        >>> img = torch.zeros(1, 1, 8, 8); img[..., 2:6, 2:6] = 1
        >>> e = edge_map(img)[0, 0]
        >>> int(e[1:7, 1:7].sum()), int(e[3:5, 3:5].sum())  # a ring around the square's border
        (32, 0)
    """
    dilate = F.max_pool2d(b, 3, 1, 1)
    erode = -F.max_pool2d(-b, 3, 1, 1)
    return ((dilate - erode) > threshold).float()


def _mask(b: Tensor, seed: int, side: int = 12) -> Tensor:
    gen = torch.Generator().manual_seed(seed)
    n, _, h, w = b.shape
    top = torch.randint(0, h - side + 1, (n,), generator=gen)
    left = torch.randint(0, w - side + 1, (n,), generator=gen)
    rows, cols = torch.arange(h)[None, :, None], torch.arange(w)[None, None, :]
    inside = ((rows >= top[:, None, None]) & (rows < top[:, None, None] + side)
              & (cols >= left[:, None, None]) & (cols < left[:, None, None] + side))
    return b.masked_fill(inside[:, None], 0.0)


_SEEDS = {"train": 0, "val": 1, "test": 2}


def digits_pairs(split: str = "train", task: str = "edges") -> Tensor:
    """Pairs ``(N, 2, 1, 32, 32)`` of one digits split: ``A`` = edges or masked, ``B`` = digit.

    Examples:
        >>> digits_pairs("test", "masked").shape
        torch.Size([447, 2, 1, 32, 32])
    """
    from probgen.data.digits import load_digits

    if task not in TASKS:
        raise ProbgenError(f"task: unknown {task!r}; choose one of {', '.join(TASKS)}")
    b = upsample_digits(load_digits(split, "unit"))
    a = edge_map(b) if task == "edges" else _mask(b, _SEEDS[split])
    return torch.stack([a, b], dim=1)


def digits_unpaired(split: str = "train") -> Tensor:
    """Unpaired edges / digits ``(N // 2, 2, 1, 32, 32)``: ``A`` from the first half of the
    split's images, ``B`` from the second half.

    Examples:
        >>> u = digits_unpaired("val")
        >>> u.shape, bool((u[:, 0] == digits_pairs("val")[:175, 0]).all())
        (torch.Size([175, 2, 1, 32, 32]), True)
    """
    p = digits_pairs(split, "edges")
    half = len(p) // 2
    return torch.stack([p[:half, 0], p[half:2 * half, 1]], dim=1)


def _read(f: Path) -> np.ndarray:
    import matplotlib.image as mpimg

    try:
        a = np.asarray(mpimg.imread(f))
    except Exception as exc:  # a broken or unreadable file
        raise ProbgenError(f"data: cannot read image {f}: {exc}") from None
    if a.dtype == np.uint8:
        a = a.astype(np.float32) / 255.0
    return a[:, :, None] if a.ndim == 2 else a


def _mode(a: np.ndarray) -> str:
    return {1: "grayscale", 3: "RGB", 4: "RGBA"}.get(a.shape[2], f"{a.shape[2]} channels")


def _images(folder: Path, minimum: int = 2) -> list[Path]:
    from probgen.data.local import IMAGE_SUFFIXES

    if not folder.is_dir():
        raise ProbgenError(f"data: {folder} is not a folder")
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if len(files) < minimum:
        named = f" ({files[0]})" if files else ""
        raise ProbgenError(f"data: {folder} holds {len(files)} image(s){named}; at least "
                           f"{minimum} are needed")
    return files


def _stack(files: list[Path], split_pairs: bool) -> Tensor:
    out, first, first_file = [], None, files[0]
    for f in files:
        a = _read(f)
        if split_pairs:
            h, w = a.shape[:2]
            if w != 2 * h:
                raise ProbgenError(f"data: {f} is {w}x{h} pixels; a pix2pix pair holds A|B side "
                                   f"by side (width = 2 x height)")
        sig = (a.shape, _mode(a))
        if first is None:
            first = sig
        elif sig != first:
            raise ProbgenError(f"data: {f} is {a.shape[1]}x{a.shape[0]} {_mode(a)}, unlike "
                               f"{first_file} ({first[0][1]}x{first[0][0]} {first[1]}); "
                               "every image must share one size and mode")
        t = torch.as_tensor(a[:, :, :3] if a.shape[2] == 4 else a, dtype=torch.float32)
        t = t.permute(2, 0, 1)  # (C, H, W)
        if split_pairs:
            w = t.shape[2] // 2
            t = torch.stack([t[:, :, :w], t[:, :, w:]])  # (2, C, H, W)
        out.append(t)
    return torch.stack(out)


def load_pix2pix_folder(path: str | os.PathLike) -> Tensor:
    """Every ``A|B`` image of a folder as pairs ``(N, 2, C, H, W)`` in ``[0, 1]``.

    Examples:
        >>> import tempfile, matplotlib.pyplot as plt
        >>> d = tempfile.mkdtemp()
        >>> for i in range(3): plt.imsave(f"{d}/{i}.png", np.zeros((4, 8, 3)))
        >>> load_pix2pix_folder(d).shape
        torch.Size([3, 2, 3, 4, 4])
    """
    folder = Path(path)
    return _stack(_images(folder), split_pairs=True)


def load_unpaired_folders(path_a: str | os.PathLike, path_b: str | os.PathLike
                          ) -> tuple[Tensor, Tensor]:
    """The images of two folders ``(N_a, C, H, W)``, ``(N_b, C, H, W)``: one size and mode.

    Examples:
        >>> import tempfile, matplotlib.pyplot as plt
        >>> a, b = tempfile.mkdtemp(), tempfile.mkdtemp()
        >>> for d in (a, b):
        ...     for i in range(2): plt.imsave(f"{d}/{i}.png", np.zeros((4, 4, 3)))
        >>> [x.shape[0] for x in load_unpaired_folders(a, b)]
        [2, 2]
    """
    files_a, files_b = _images(Path(path_a)), _images(Path(path_b))
    both = _stack(files_a + files_b, split_pairs=False)
    return both[:len(files_a)], both[len(files_a):]


def paired_augment(pairs: Tensor, pad: int = 2, flip: bool = True,
                   generator: torch.Generator | None = None) -> Tensor:
    """One random crop and flip per pair, the same for its two images.

    Each pair ``(2, C, H, W)`` is reflection-padded by ``pad`` and cropped back to ``H x W`` at
    a random offset (pix2pix's random jitter, scaled down), then mirrored left-right with
    probability 1/2 when ``flip``.

    Examples:
        >>> p = torch.rand(4, 2, 1, 8, 8); p[:, 1] = p[:, 0]
        >>> q = paired_augment(p, generator=torch.Generator().manual_seed(0))
        >>> q.shape, bool((q[:, 0] == q[:, 1]).all())  # both images moved alike
        (torch.Size([4, 2, 1, 8, 8]), True)
    """
    n, two, c, h, w = pairs.shape
    x = pairs.reshape(n, two * c, h, w)
    if pad:
        x = F.pad(x, (pad, pad, pad, pad), mode="reflect")
        dy = torch.randint(0, 2 * pad + 1, (n,), generator=generator)
        dx = torch.randint(0, 2 * pad + 1, (n,), generator=generator)
        rows = (dy[:, None] + torch.arange(h)[None])[:, None, :, None]
        cols = (dx[:, None] + torch.arange(w)[None])[:, None, None, :]
        idx = torch.arange(n)[:, None, None, None]
        x = x[idx, torch.arange(two * c)[None, :, None, None], rows, cols]
    if flip:
        mirror = torch.rand(n, generator=generator) < 0.5
        x = torch.where(mirror[:, None, None, None], x.flip(-1), x)
    return x.reshape(n, two, c, h, w)


def _unpaired(path: Path, split: str) -> Tensor | None:
    a, b = path / f"{split}A", path / f"{split}B"
    if not a.is_dir() and not b.is_dir():
        return None
    if not (a.is_dir() and b.is_dir()):
        have, lack = (a, b) if a.is_dir() else (b, a)
        raise ProbgenError(f"data: {have} has no partner folder {lack}")
    xa, xb = load_unpaired_folders(a, b)
    n = min(len(xa), len(xb))  # rows are not partners; equal lengths keep one tensor
    return torch.stack([xa[:n], xb[:n]], dim=1)


def folder_splits(path: str | os.PathLike, seed: int = 0
                  ) -> tuple[str, tuple[Tensor, Tensor, Tensor], dict]:
    """``(kind, (train, val, test), info)`` of a pix2pix folder (``train/`` [``val/``, ``test/``]
    of ``A|B`` images; kind ``"pairs"``) or a CycleGAN folder (``trainA/``, ``trainB/``
    [``valA/``..., ``testA/``...]; kind ``"unpaired"``). A missing validation or test split is
    carved out of ``train`` (10% each, a permutation drawn from ``seed``).

    Examples:
        >>> import tempfile, matplotlib.pyplot as plt
        >>> d = Path(tempfile.mkdtemp()); (d / "train").mkdir()
        >>> for i in range(20): plt.imsave(d / "train" / f"{i}.png", np.zeros((4, 8, 3)))
        >>> kind, (tr, va, te), info = folder_splits(d)
        >>> kind, len(tr), len(va), len(te)
        ('pairs', 16, 2, 2)
    """
    root = Path(path)
    paired = (root / "train").is_dir()
    kind = "pairs" if paired else "unpaired"
    found: dict[str, Tensor] = {}
    for split in ("train", "val", "test"):
        part = (load_pix2pix_folder(root / split) if (root / split).is_dir() else None) \
            if paired else _unpaired(root, split)
        if part is not None:
            found[split] = part
    if "train" not in found:
        raise ProbgenError(f"data: {root} has no trainA/ and trainB/ folders")
    shape = tuple(found["train"].shape[1:])
    for split, part in found.items():
        if tuple(part.shape[1:]) != shape:
            raise ProbgenError(f"data: the {split} images of {root} are {tuple(part.shape[2:])}, "
                               f"the train images {shape[1:]}; every split must share one size "
                               "and mode")
    train = found["train"]
    carved = [s for s in ("val", "test") if s not in found]
    if carved:
        if len(train) < 10:
            raise ProbgenError(f"data: {root} has {len(train)} training examples and no "
                               f"{'/'.join(carved)} split; at least 10 are needed to carve one")
        order = torch.randperm(len(train), generator=torch.Generator().manual_seed(seed))
        k = max(1, round(0.1 * len(train)))
        for i, s in enumerate(carved):
            found[s] = train[order[i * k:(i + 1) * k]]
        train = train[order[len(carved) * k:]]
    info = {"name": str(root), "source": "local", "split_seed": seed,
            "carved": carved, "sizes": [len(train), len(found["val"]), len(found["test"])]}
    return kind, (train, found["val"], found["test"]), info
