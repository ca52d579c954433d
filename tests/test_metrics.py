"""Sample-quality metrics: MMD, energy distance, Fréchet distance, PNG grids."""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.linalg
import torch

from probgen.data.digits import load_digit_labels, load_digits
from probgen.errors import ProbgenError
from probgen.metrics import frechet
from probgen.metrics.distances import energy_distance, mmd
from probgen.metrics.grids import make_grid, save_grid, save_samples, save_scatter


def _gen(seed):
    return torch.Generator().manual_seed(seed)


def test_mmd_matches_brute_force():
    x = torch.randn(12, 2, generator=_gen(0), dtype=torch.float64)
    y = torch.randn(9, 2, generator=_gen(1), dtype=torch.float64) + 0.5
    hs = (0.5, 2.0)

    def k(a, b):
        return sum(math.exp(-float(((a - b) ** 2).sum()) / (2 * h * h)) for h in hs)

    n, m = len(x), len(y)
    kxx = sum(k(x[i], x[j]) for i in range(n) for j in range(n) if i != j) / (n * (n - 1))
    kyy = sum(k(y[i], y[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
    kxy = sum(k(a, b) for a in x for b in y) / (n * m)
    assert math.isclose(mmd(x, y, hs), kxx + kyy - 2 * kxy, rel_tol=1e-9, abs_tol=1e-12)


def test_energy_distance_matches_brute_force_and_is_zero_for_equal_sets():
    x = torch.randn(10, 3, generator=_gen(2), dtype=torch.float64)
    y = torch.randn(7, 3, generator=_gen(3), dtype=torch.float64)

    def mean_dist(a, b):
        return sum(float((u - v).norm()) for u in a for v in b) / (len(a) * len(b))

    ref = 2 * mean_dist(x, y) - mean_dist(x, x) - mean_dist(y, y)
    assert math.isclose(energy_distance(x, y), ref, rel_tol=1e-9)
    assert energy_distance(x, x) == pytest.approx(0.0, abs=1e-12)


def test_distances_separate_near_from_far():
    data = torch.randn(400, 2, generator=_gen(4))
    near = torch.randn(400, 2, generator=_gen(5))
    far = torch.randn(400, 2, generator=_gen(6)) * 2 + 1
    assert mmd(data, near) < mmd(data, far)
    assert energy_distance(data, near) < energy_distance(data, far)


@pytest.mark.parametrize("bad", [torch.ones(5), torch.ones(1, 2), torch.full((3, 2), float("nan"))])
def test_distance_errors(bad):
    with pytest.raises(ProbgenError):
        energy_distance(bad, torch.ones(4, 2))
    with pytest.raises(ProbgenError, match="dimension"):
        mmd(torch.ones(4, 3), torch.ones(4, 2))


def test_frechet_distance_closed_forms():
    # 1-D: (m1 - m2)^2 + (s1 - s2)^2 with the sample moments
    a = torch.randn(3000, 1, generator=_gen(7), dtype=torch.float64)
    b = 2 + 3 * torch.randn(3000, 1, generator=_gen(8), dtype=torch.float64)
    m1, m2 = a.mean(), b.mean()
    s1, s2 = a.std(), b.std()
    assert frechet.frechet_distance(a, b) == pytest.approx(float((m1 - m2) ** 2 + (s1 - s2) ** 2))
    # D-dim against scipy's matrix square root
    x = torch.randn(500, 4, generator=_gen(9), dtype=torch.float64)
    mix = torch.randn(4, 4, generator=_gen(11), dtype=torch.float64)
    y = torch.randn(500, 4, generator=_gen(10), dtype=torch.float64) @ mix
    sx, sy = np.cov(x.numpy().T), np.cov(y.numpy().T)
    covmean = scipy.linalg.sqrtm(sx @ sy).real
    ref = float(((x.mean(0) - y.mean(0)) ** 2).sum()) + np.trace(sx + sy - 2 * covmean)
    assert frechet.frechet_distance(x, y) == pytest.approx(ref, rel=1e-6)


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    path = tmp_path_factory.mktemp("cache")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("PROBGEN_CACHE", str(path))
        frechet._CACHED.clear()
        yield path
    frechet._CACHED.clear()


def test_classifier_is_cached_deterministic_and_accurate(cache):
    net = frechet.digits_classifier()
    files = list(cache.glob("*.safetensors"))
    assert len(files) == 1
    acc = (net(load_digits("test", "unit")).argmax(1) == load_digit_labels("test")).float().mean()
    assert float(acc) > 0.85
    frechet._CACHED.clear()
    loaded = frechet.digits_classifier()  # from the file this time
    assert all(torch.equal(a, b) for a, b in zip(net.state_dict().values(),
                                                   loaded.state_dict().values()))
    retrained = frechet._train()
    assert all(torch.equal(a, b) for a, b in zip(net.state_dict().values(),
                                                   retrained.state_dict().values()))


def test_digits_fd_ranks_real_above_noise(cache):
    real = frechet.digits_frechet_distance(load_digits("val", "unit"))
    uniform = torch.rand(350, 64, generator=_gen(0))
    noisy = frechet.digits_frechet_distance(0.7 * load_digits("val", "unit") + 0.3 * uniform)
    noise = frechet.digits_frechet_distance(uniform)
    assert real < noisy < noise
    with pytest.raises(ProbgenError, match="16"):
        frechet.digits_features(load_digits("val"))
    with pytest.raises(ProbgenError, match="0, 1"):
        frechet.digits_features(load_digits("val", "symmetric"))


def test_tampered_cache_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setenv("PROBGEN_CACHE", str(tmp_path))
    (tmp_path / "digits_classifier_v1.safetensors").write_bytes(b"\x80\x04not safetensors")
    frechet._CACHED.clear()
    with pytest.raises(ProbgenError, match="delete it"):
        frechet.digits_classifier()
    frechet._CACHED.clear()


def test_grids(tmp_path):
    g = make_grid(torch.zeros(5, 64), nrow=3)
    assert g.shape == (1, 2 * 9 + 1, 3 * 9 + 1)
    assert float(g[0, 0, 0]) == 1.0 and float(g[0, 1, 1]) == 0.0
    assert save_grid(torch.rand(4, 3, 8, 8), tmp_path / "rgb.png").read_bytes()[:4] == b"\x89PNG"
    assert save_grid(load_digits("val")[:16], tmp_path / "lv.png", value_range=(0, 16)).exists()
    assert save_scatter(torch.randn(50, 2), tmp_path / "s.png").exists()
    assert save_samples(torch.randn(50, 2), tmp_path / "t.png").exists()
    with pytest.raises(ProbgenError, match="value_range"):
        make_grid(load_digits("val")[:4])
    with pytest.raises(ProbgenError, match="square"):
        make_grid(torch.zeros(2, 10))
