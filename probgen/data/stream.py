"""Local data too large for memory, read one example at a time.

[`ImageFolderRows`][probgen.data.stream.ImageFolderRows] reads the images of a folder (the files
[`load_images`][probgen.data.local.load_images] would read, in the same order and decoded the
same way) and [`ArrayRows`][probgen.data.stream.ArrayRows] the rows of a ``.npy`` file (memory
mapped) or a ``.safetensors`` file (sliced), each on demand. Both are ``torch`` Datasets with
a ``shape`` (like a tensor's) and ``__getitems__`` for whole batches, checked row by row the
way the in-memory path checks the whole array (range, finiteness; the error names the file
and the row). [`probgen.data.splits.load_splits`][probgen.data.splits.load_splits] uses them
for the training split when the data would not fit in memory;
[`probgen.infer.streaming`][probgen.infer.streaming] feeds them to ``fit`` through a
``DataLoader`` with worker processes.

Examples:
    >>> import tempfile, os, numpy as np
    >>> p = os.path.join(tempfile.mkdtemp(), "x.npy"); np.save(p, np.arange(12.0).reshape(6, 2))
    >>> rows = ArrayRows(p)
    >>> rows.shape, rows[2].tolist()
    ((6, 2), [4.0, 5.0])
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import torch

from probgen.data.local import IMAGE_SUFFIXES
from probgen.errors import ProbgenError

__all__ = ["StreamRows", "ImageFolderRows", "ArrayRows", "Subset", "available_memory",
           "default_workers"]


def available_memory() -> int:
    """Bytes of memory available to new allocations (``MemAvailable``; 8 GiB if unknown)."""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return 8 * 2**30


def default_workers() -> int:
    """DataLoader worker processes: one per two cores available, 1 to 4."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return max(1, min(4, (cores or 1) // 2))


class StreamRows(torch.utils.data.Dataset):
    """Base of the on-demand datasets: ``shape``, ``nbytes`` (as float32), batch reads."""

    path: Path
    shape: tuple[int, ...]
    workers: int = 0

    def __len__(self) -> int:
        return self.shape[0]

    @property
    def nbytes(self) -> int:
        """Bytes of the whole data set as float32 tensors."""
        return int(np.prod(self.shape)) * 4

    def __getitems__(self, indices: list[int]) -> list[torch.Tensor]:
        return [self[i] for i in indices]


class ImageFolderRows(StreamRows):
    """The images of a folder (sorted by name), each ``(C, H, W)`` in [0, 1], read on demand.

    Examples:
        >>> import tempfile, matplotlib.pyplot as plt
        >>> d = tempfile.mkdtemp(); plt.imsave(f"{d}/a.png", np.zeros((4, 5, 3)))
        >>> ImageFolderRows(d).shape
        (1, 3, 4, 5)
    """

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        if not self.path.is_dir():
            raise ProbgenError(f"path: {self.path} is not a folder")
        self.files = sorted(p for p in self.path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        if not self.files:
            raise ProbgenError(f"path: no {'/'.join(IMAGE_SUFFIXES)} images in {self.path}")
        first = self._read(0, check=False)
        self.example_shape = tuple(first.shape)
        self.shape = (len(self.files), *self.example_shape)

    def _read(self, i: int, check: bool = True) -> torch.Tensor:
        import matplotlib.image as mpimg

        a = np.asarray(mpimg.imread(self.files[i]))
        if a.dtype == np.uint8:
            a = a.astype(np.float32) / 255.0
        if a.ndim == 2:
            a = a[:, :, None]
        x = torch.as_tensor(np.ascontiguousarray(a[:, :, :3]), dtype=torch.float32)
        x = x.permute(2, 0, 1).contiguous()
        if check and tuple(x.shape) != self.example_shape:
            raise ProbgenError(f"path: {self.files[i]} has shape {tuple(x.shape)}, the first "
                               f"image of {self.path} {self.example_shape}")
        return x

    def __getitem__(self, i: int) -> torch.Tensor:
        return self._read(int(i))


class ArrayRows(StreamRows):
    """The rows of a ``.npy`` (memory-mapped) or ``.safetensors`` (sliced) array, on demand,
    as float32 (integer images 0..255 divided by 255, as in memory)."""

    def __init__(self, path: str | os.PathLike, key: str | None = None) -> None:
        self.path = Path(path)
        suffix = self.path.suffix.lower()
        self._safe: Any = None
        if suffix == ".npy":
            try:
                self._array = np.load(self.path, mmap_mode="r", allow_pickle=False)
            except (OSError, ValueError) as exc:
                raise ProbgenError(f"path: cannot memory-map {self.path}: {exc}") from None
            shape, integer = self._array.shape, np.issubdtype(self._array.dtype, np.integer)
            if self._array.dtype.kind not in "iuf":
                raise ProbgenError(f"data: {self.path} has dtype {self._array.dtype}; real or "
                                   "integer values are needed")
        elif suffix == ".safetensors":
            from safetensors import safe_open

            with safe_open(str(self.path), framework="pt") as f:
                keys = list(f.keys())
            if key is None and len(keys) != 1:
                raise ProbgenError(f"key: {self.path} holds {sorted(keys)}; name one")
            self.key = key or keys[0]
            if self.key not in keys:
                raise ProbgenError(f"key: {self.key!r} not in {self.path} (has {sorted(keys)})")
            with safe_open(str(self.path), framework="pt") as f:
                sl = f.get_slice(self.key)
                shape, dtype = tuple(sl.get_shape()), sl.get_dtype()
            integer = dtype.startswith(("U", "I"))
            if dtype.startswith(("BOOL", "C")):
                raise ProbgenError(f"data: {self.path} has dtype {dtype}; real or integer "
                                   "values are needed")
        else:
            raise ProbgenError(f"data: {self.path} cannot be read row by row ({suffix}); "
                               "streaming reads .npy and .safetensors arrays and image folders")
        self.integer = bool(integer)
        shape = tuple(int(s) for s in shape)
        if len(shape) not in (2, 3, 4) or (len(shape) == 4 and shape[1] not in (1, 3)):
            raise ProbgenError(f"data: {self.path} holds an array of shape {shape}; "
                               "expected vectors (N, D) or images (N, H, W) / (N, C, H, W) "
                               "with 1 or 3 channels")
        self.shape = (shape[0], 1, *shape[1:]) if len(shape) == 3 else shape
        self.image = len(self.shape) > 2

    def _raw(self, i: int) -> torch.Tensor:
        if self._safe is None and hasattr(self, "key"):
            from safetensors import safe_open

            self._safe = safe_open(str(self.path), framework="pt")  # one per worker process
        if self._safe is not None:
            return self._safe.get_slice(self.key)[i:i + 1][0]
        return torch.from_numpy(np.array(self._array[i]))

    def __getitem__(self, i: int) -> torch.Tensor:
        i = int(i)
        x = self._raw(i)
        if self.image and x.dim() == 2:
            x = x[None]
        if self.image and self.integer:
            if int(x.min()) < 0 or int(x.max()) > 255:
                raise ProbgenError(f"data: {self.path} row {i} holds integer images outside "
                                   "0..255")
            return x.float() / 255.0
        x = x.float()
        if not bool(torch.isfinite(x).all()):
            raise ProbgenError(f"data: {self.path} row {i} holds non-finite values")
        if self.image and (float(x.min()) < 0 or float(x.max()) > 1):
            raise ProbgenError(f"data: {self.path} row {i} holds float images outside [0, 1]")
        return x

    def __getstate__(self) -> dict:  # worker processes reopen the file
        return {**self.__dict__, "_safe": None}


class Subset(StreamRows):
    """Rows ``indices`` of an on-demand dataset (a split), itself on demand."""

    def __init__(self, rows: StreamRows, indices: torch.Tensor, workers: int | None = None
                 ) -> None:
        self.rows, self.indices = rows, indices.long()
        self.path = rows.path
        self.shape = (len(indices), *rows.shape[1:])
        self.workers = default_workers() if workers is None else int(workers)

    def __getitem__(self, i: int) -> torch.Tensor:
        return self.rows[int(self.indices[int(i)])]

    def materialise(self) -> torch.Tensor:
        """All rows as one tensor (for the small validation and test splits)."""
        return torch.stack([self[i] for i in range(len(self))])
