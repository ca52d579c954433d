"""Fréchet distance in the features of a small digits classifier (an offline "FID" for 8x8 digits).

The classifier is an MLP 64-128-64-10 trained on the digits *train* split (pixels scaled
to [0, 1]) with full-batch Adam, a fixed seed and one thread, so training is deterministic.
It is trained once and cached as safetensors in ``$PROBGEN_CACHE`` (default
``~/.cache/probgen``); the cache is read with safetensors only. Features are the 64
activations of the last hidden layer.

``FD = |mu_x - mu_y|^2 + tr(S_x + S_y - 2 (S_x^{1/2} S_y S_x^{1/2})^{1/2})`` (Heusel et al.
2017, eq. 6; Dowson & Landau 1982), computed in float64.

Examples:
    >>> from probgen.data.digits import load_digits
    >>> fd = digits_frechet_distance(load_digits("val", "unit"), load_digits("test", "unit"))
    >>> 0 <= fd < 20
    True
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
from torch import nn

from probgen.errors import ProbgenError

__all__ = [
    "cache_dir",
    "digits_classifier",
    "digits_features",
    "frechet_distance",
    "digits_frechet_distance",
]

_VERSION = "v1"
_STEPS = 400


def cache_dir() -> Path:
    """``$PROBGEN_CACHE`` if set, else ``~/.cache/probgen``."""
    return Path(os.environ.get("PROBGEN_CACHE") or Path.home() / ".cache" / "probgen")


def _net() -> nn.Sequential:
    return nn.Sequential(
        nn.Linear(64, 128), nn.ReLU(), nn.Linear(128, 64), nn.ReLU(), nn.Linear(64, 10)
    )


def _train() -> nn.Sequential:
    from probgen.data.digits import load_digit_labels, load_digits

    x, y = load_digits("train", "unit"), load_digit_labels("train")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with torch.random.fork_rng(devices=[]), torch.enable_grad():
            torch.manual_seed(0)
            net = _net()
            opt = torch.optim.Adam(net.parameters(), lr=3e-3, weight_decay=1e-4)
            for _ in range(_STEPS):
                loss = nn.functional.cross_entropy(net(x), y)
                opt.zero_grad()
                loss.backward()
                opt.step()
    finally:
        torch.set_num_threads(threads)
    return net.eval()


_CACHED: dict[Path, nn.Sequential] = {}


def digits_classifier() -> nn.Sequential:
    """The cached feature classifier (trains and caches it on first use, ~1 s).

    Examples:
        >>> from probgen.data.digits import load_digits, load_digit_labels
        >>> net = digits_classifier()
        >>> acc = (net(load_digits("test", "unit")).argmax(1) == load_digit_labels("test"))
        >>> float(acc.float().mean()) > 0.9
        True
    """
    from safetensors.torch import load_file, save_file

    path = cache_dir() / f"digits_classifier_{_VERSION}.safetensors"
    if path in _CACHED:
        return _CACHED[path]
    net = _net()
    if path.is_file():
        try:
            net.load_state_dict(load_file(str(path)))
        except Exception as exc:
            raise ProbgenError(
                f"cache: {path} is not a valid classifier file ({exc}); delete it to retrain"
            ) from None
        net.eval()
    else:
        net = _train()
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".tmp{os.getpid()}")
        save_file({k: v.contiguous() for k, v in net.state_dict().items()}, str(tmp))
        os.replace(tmp, path)
    for p in net.parameters():
        p.requires_grad_(False)
    _CACHED[path] = net
    return net


def _unit_images(x: torch.Tensor, name: str) -> torch.Tensor:
    x = torch.as_tensor(x).detach().cpu()
    if x.dim() == 4 and x.shape[1:] == (1, 8, 8):
        x = x.reshape(-1, 64)
    if x.dim() != 2 or x.shape[1] != 64:
        raise ProbgenError(f"{name} must be (N, 64) or (N, 1, 8, 8) digits, got {tuple(x.shape)}")
    if not x.is_floating_point():
        raise ProbgenError(f"{name}: expected floats in [0, 1] (divide 17-level digits by 16)")
    if not bool(torch.isfinite(x).all()) or float(x.min()) < 0 or float(x.max()) > 1:
        raise ProbgenError(f"{name}: values must be finite and in [0, 1]")
    return x.float()


@torch.no_grad()
def digits_features(x: torch.Tensor) -> torch.Tensor:
    """64 classifier features per digit; ``x`` in [0, 1], shape (N, 64) or (N, 1, 8, 8).

    Examples:
        >>> digits_features(torch.zeros(3, 64)).shape
        torch.Size([3, 64])
    """
    net = digits_classifier()
    return net[:4](_unit_images(x, "x"))


def _sqrtm_psd(a: torch.Tensor) -> torch.Tensor:
    w, v = torch.linalg.eigh(a)
    return (v * w.clamp(min=0).sqrt()) @ v.T


def frechet_distance(fx: torch.Tensor, fy: torch.Tensor) -> float:
    """Fréchet distance between Gaussians fitted to two feature sets (N, D), (M, D).

    Examples:
        >>> g = torch.Generator().manual_seed(0)
        >>> a = torch.randn(5000, 2, generator=g, dtype=torch.float64)
        >>> round(frechet_distance(a, a + 1.0), 3)  # |mean shift|^2 = 2
        2.0
    """
    fx, fy = torch.as_tensor(fx).double(), torch.as_tensor(fy).double()
    if fx.dim() != 2 or fy.dim() != 2 or fx.shape[1] != fy.shape[1]:
        raise ProbgenError("fx, fy must be (N, D) and (M, D) with the same D")
    if fx.shape[0] < 2 or fy.shape[0] < 2:
        raise ProbgenError("fx, fy need at least 2 rows each")
    mx, my = fx.mean(0), fy.mean(0)
    sx, sy = torch.cov(fx.T).reshape(fx.shape[1], -1), torch.cov(fy.T).reshape(fy.shape[1], -1)
    root = _sqrtm_psd(sx)
    cross = torch.linalg.eigvalsh(root @ sy @ root).clamp(min=0).sqrt().sum()
    return float((mx - my).pow(2).sum() + sx.trace() + sy.trace() - 2 * cross)


def digits_frechet_distance(samples: torch.Tensor, reference: torch.Tensor | None = None) -> float:
    """FD between digit samples and ``reference`` (default: the test split), in [0, 1] scale.

    Examples:
        >>> from probgen.data.digits import load_digits
        >>> digits_frechet_distance(torch.rand(500, 64)) > 10 * digits_frechet_distance(
        ...     load_digits("val", "unit"))
        True
    """
    if reference is None:
        from probgen.data.digits import load_digits

        reference = load_digits("test", "unit")
    return frechet_distance(digits_features(samples), digits_features(reference))
