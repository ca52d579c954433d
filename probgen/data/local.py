"""Your own data from a local path (MNIST, CIFAR, maps, 3D shapes... when you have them).

- [`load_tensor`][probgen.data.local.load_tensor]: one array file: ``.safetensors`` (one tensor, or
  ``key=``), ``.npy`` / ``.npz`` (read with ``allow_pickle=False``), or ``.pt`` (read with
  ``torch.load(weights_only=True)``: never unpickles arbitrary objects).
- [`load_images`][probgen.data.local.load_images]: a folder of ``.png`` / ``.jpg`` images of one
  size, sorted by file name, as ``(N, C, H, W)`` floats in [0, 1].

Examples:
    >>> import tempfile, os, numpy as np
    >>> p = os.path.join(tempfile.mkdtemp(), "x.npy"); np.save(p, np.zeros((3, 2)))
    >>> load_tensor(p).shape
    torch.Size([3, 2])
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch

from probgen.errors import ProbgenError

__all__ = ["load_tensor", "load_images", "IMAGE_SUFFIXES"]

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")


def load_tensor(path: str | os.PathLike, key: str | None = None) -> torch.Tensor:
    """Load one tensor from a ``.safetensors``, ``.npy``, ``.npz`` or ``.pt`` file.

    Examples:
        >>> import tempfile, os
        >>> from safetensors.torch import save_file
        >>> p = os.path.join(tempfile.mkdtemp(), "x.safetensors")
        >>> save_file({"x": torch.ones(2)}, p); load_tensor(p).tolist()
        [1.0, 1.0]
    """
    path = Path(path)
    if not path.is_file():
        raise ProbgenError(f"path: {path} does not exist or is not a file")
    suffix = path.suffix.lower()
    try:
        if suffix == ".safetensors":
            from safetensors.torch import load_file

            return _pick(load_file(str(path)), key, path)
        if suffix == ".npy":
            return torch.from_numpy(np.load(path, allow_pickle=False))
        if suffix == ".npz":
            with np.load(path, allow_pickle=False) as z:
                return _pick({k: torch.from_numpy(z[k]) for k in z.files}, key, path)
        if suffix == ".pt":
            obj = torch.load(path, map_location="cpu", weights_only=True)
            if isinstance(obj, dict):
                return _pick(obj, key, path)
            if not isinstance(obj, torch.Tensor):
                raise ProbgenError(f"path: {path} holds a {type(obj).__name__}, not a tensor")
            return obj
    except ProbgenError:
        raise
    except Exception as exc:
        raise ProbgenError(f"path: cannot read {path} safely: {exc}") from None
    raise ProbgenError(f"path: unsupported file type {suffix!r} (.safetensors, .npy, .npz, .pt)")


def _pick(tensors: dict, key: str | None, path: Path) -> torch.Tensor:
    if key is None:
        if len(tensors) != 1:
            raise ProbgenError(f"key: {path} holds {sorted(tensors)}; name one with key=")
        key = next(iter(tensors))
    if key not in tensors:
        raise ProbgenError(f"key: {key!r} not in {path} (has {sorted(tensors)})")
    value = tensors[key]
    if not isinstance(value, torch.Tensor):
        raise ProbgenError(f"key: {key!r} in {path} is not a tensor")
    return value


def load_images(path: str | os.PathLike, grayscale: bool = False) -> torch.Tensor:
    """All images in a folder, sorted by name, as ``(N, C, H, W)`` in [0, 1].

    Images must share one size (resize them beforehand); ``grayscale`` averages RGB.

    Examples:
        >>> import tempfile, matplotlib.pyplot as plt
        >>> d = tempfile.mkdtemp(); plt.imsave(f"{d}/a.png", np.zeros((4, 5, 3)))
        >>> load_images(d).shape
        torch.Size([1, 3, 4, 5])
    """
    import matplotlib.image as mpimg

    folder = Path(path)
    if not folder.is_dir():
        raise ProbgenError(f"path: {folder} is not a folder")
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise ProbgenError(f"path: no {'/'.join(IMAGE_SUFFIXES)} images in {folder}")
    images = []
    for f in files:
        a = np.asarray(mpimg.imread(f))
        if a.dtype == np.uint8:
            a = a.astype(np.float32) / 255.0
        if a.ndim == 2:
            a = a[:, :, None]
        a = a[:, :, :3]  # drop alpha
        if grayscale and a.shape[2] == 3:
            a = a.mean(2, keepdims=True)
        images.append(torch.as_tensor(a, dtype=torch.float32).permute(2, 0, 1))
    shapes = {tuple(x.shape) for x in images}
    if len(shapes) != 1:
        raise ProbgenError(f"path: images in {folder} differ in size or channels: {sorted(shapes)}")
    return torch.stack(images)
