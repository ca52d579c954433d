"""Offline data sets: digits split and forms, 2-D densities, shapes, local files."""

from __future__ import annotations

import math
import pickle

import numpy as np
import pytest
import torch
from sklearn.datasets import load_digits as sk_digits
from sklearn.datasets import make_moons, make_swiss_roll

from probgen.data.densities import DENSITIES, checkerboard, load_density, rings, swiss_roll
from probgen.data.digits import load_digit_labels, load_digits
from probgen.data.local import load_images, load_tensor
from probgen.data.shapes import FACTORS, make_shapes, render_shapes
from probgen.errors import ProbgenError


def test_digits_split_sizes_and_levels_match_sklearn():
    raw = sk_digits()
    sizes = {s: len(load_digits(s)) for s in ("train", "val", "test")}
    assert sizes == {"train": 1000, "val": 350, "test": 447}
    levels = torch.cat([load_digits(s) for s in ("train", "val", "test")])
    assert levels.dtype == torch.long
    assert torch.equal(levels, torch.as_tensor(raw.data, dtype=torch.long))
    assert int(levels.min()) == 0 and int(levels.max()) == 16
    assert torch.equal(load_digit_labels("test"), torch.as_tensor(raw.target[1350:]))


def test_digit_forms():
    lv = load_digits("val").float()
    assert torch.equal(load_digits("val", "binary"), (lv >= 9).float())
    assert torch.allclose(load_digits("val", "unit") * 16, lv)
    sym = load_digits("val", "symmetric")
    assert float(sym.min()) == -1.0 and float(sym.max()) == 1.0
    assert load_digits("val", "unit", image=True).shape == (350, 1, 8, 8)


@pytest.mark.parametrize("kwargs", [{"split": "training"}, {"form": "grey"}])
def test_digits_bad_names(kwargs):
    with pytest.raises(ProbgenError, match=next(iter(kwargs))):
        load_digits(**kwargs)


def test_swiss_roll_is_columns_0_and_2_standardised():
    raw, _ = make_swiss_roll(500, noise=0.5, random_state=4)
    ref = raw[:, [0, 2]]
    ref = (ref - ref.mean(0)) / ref.std(0)
    assert torch.allclose(swiss_roll(500, seed=4), torch.as_tensor(ref, dtype=torch.float32))


def test_moons_match_sklearn_standardised():
    raw, _ = make_moons(300, noise=0.05, random_state=2)
    ref = (raw - raw.mean(0)) / raw.std(0)
    assert torch.allclose(load_density("moons", 300, seed=2), torch.as_tensor(ref).float())


@pytest.mark.parametrize("name", sorted(DENSITIES))
def test_densities_shape_determinism(name):
    a, b = load_density(name, 200, seed=1), load_density(name, 200, seed=1)
    assert a.shape == (200, 2) and a.dtype == torch.float32 and torch.equal(a, b)
    assert not torch.equal(a, load_density(name, 200, seed=2))


def test_checkerboard_and_rings_geometry():
    x = checkerboard(2000)
    cells = torch.floor(x + 2)
    assert bool(((cells.sum(1) % 2) == 0).all()) and float(x.abs().max()) <= 2
    r = rings(2000, noise=0.0).norm(dim=1)
    assert torch.allclose(r, torch.where(r < 1.5, 1.0, 2.0), atol=1e-5)


def test_density_errors():
    with pytest.raises(ProbgenError, match="name"):
        load_density("spiral", 10)
    with pytest.raises(ProbgenError, match="n must"):
        load_density("moons", 0)


def test_shapes_are_deterministic_and_labelled():
    a, b = make_shapes(24, size=32, seed=3), make_shapes(24, size=32, seed=3)
    assert a.images.shape == (24, 3, 32, 32) and a.factors.shape == (24, 6)
    assert torch.equal(a.images, b.images) and torch.equal(a.factors, b.factors)
    assert float(a.images.min()) >= 0 and float(a.images.max()) <= 1
    assert bool((a.factors < torch.tensor(list(FACTORS.values()))).all())
    assert a.factor_names == tuple(FACTORS)


def test_shapes_render_the_right_area():
    # largest circle: radius 0.9 * 0.22 of the image side -> area pi r^2 of the image
    img = render_shapes(torch.tensor([[1, 5, 0, 4, 4, 0]]), size=64)
    coverage = float(img.amax(1).sum()) / 64**2  # max channel = covered fraction (hue 0)
    expected = math.pi * (0.9 * 0.22) ** 2
    assert abs(coverage - expected) / expected < 0.02
    # square of half-side 0.8 * half, scaled to the smallest size
    sq = render_shapes(torch.tensor([[0, 0, 0, 4, 4, 2]]), size=64).amax(1)
    side = 2 * 0.8 * 0.22 * 0.5
    assert abs(float(sq.sum()) / 64**2 - side**2) / side**2 < 0.03


def test_shapes_factor_changes_move_the_image():
    base = torch.tensor([[2, 3, 1, 2, 2, 1]])
    moved = base.clone()
    moved[0, 3] = 6
    a, b = render_shapes(base, 32), render_shapes(moved, 32)
    cols = torch.arange(32.0)
    centre = lambda im: float((im.sum((0, 1, 2)) * cols).sum() / im.sum())  # noqa: E731
    assert centre(b) > centre(a) + 5


def test_shapes_errors():
    with pytest.raises(ProbgenError, match="factors"):
        render_shapes(torch.tensor([[9, 0, 0, 0, 0, 0]]))
    with pytest.raises(ProbgenError, match="n must"):
        make_shapes(0)


def test_local_tensors_round_trip(tmp_path):
    from safetensors.torch import save_file

    x = torch.arange(6.0).reshape(3, 2)
    np.save(tmp_path / "a.npy", x.numpy())
    np.savez(tmp_path / "b.npz", x=x.numpy())
    save_file({"x": x}, str(tmp_path / "c.safetensors"))
    torch.save({"x": x}, tmp_path / "d.pt")
    for name in ("a.npy", "b.npz", "c.safetensors", "d.pt"):
        assert torch.equal(load_tensor(tmp_path / name), x)


class _Evil:
    def __reduce__(self):
        return (print, ("executed",))


def test_local_pickles_are_refused(tmp_path, capsys):
    torch.save({"x": _Evil()}, tmp_path / "e.pt")
    np.save(tmp_path / "e.npy", np.array([_Evil()], dtype=object), allow_pickle=True)
    (tmp_path / "f.safetensors").write_bytes(pickle.dumps(_Evil()))
    for name in ("e.pt", "e.npy", "f.safetensors"):
        with pytest.raises(ProbgenError, match="safely"):
            load_tensor(tmp_path / name)
    assert "executed" not in capsys.readouterr().out
    with pytest.raises(ProbgenError, match="path"):
        load_tensor(tmp_path / "missing.npy")


def test_local_images(tmp_path):
    import matplotlib.pyplot as plt

    rng = np.random.default_rng(0)
    imgs = rng.random((3, 5, 6, 3))
    for i, im in enumerate(imgs):
        plt.imsave(tmp_path / f"{i}.png", im)
    x = load_images(tmp_path)
    assert x.shape == (3, 3, 5, 6)
    assert torch.allclose(x, torch.as_tensor(imgs).permute(0, 3, 1, 2).float(), atol=1 / 255)
    assert load_images(tmp_path, grayscale=True).shape == (3, 1, 5, 6)
    plt.imsave(tmp_path / "9.png", rng.random((4, 4, 3)))
    with pytest.raises(ProbgenError, match="differ"):
        load_images(tmp_path)
