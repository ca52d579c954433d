"""Image-to-image data and nets: the paired augmentation against slicing by hand, the A|B and
unpaired folder loaders (and their one-line errors, on generated images), the PatchGAN's receptive
field against autograd, the U-Net, the CycleGAN program and history buffer, a local folder
training pix2pix."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from probgen.data.paired import (
    digits_pairs,
    digits_unpaired,
    downsample_digits,
    load_pix2pix_folder,
    paired_augment,
)
from probgen.data.splits import load_splits
from probgen.errors import ProbgenError
from probgen.models.family import train
from probgen.models.gan.cyclegan import HistoryPool, cycle_program
from probgen.nn.pix2pix import PatchDiscriminator, UNetGenerator, receptive_field


def _save(path, array):
    Image.fromarray((np.clip(array, 0, 1) * 255).astype(np.uint8)).save(path)


def _pairs_folder(root, n=12, h=8, rgb=True):
    rng = np.random.default_rng(0)
    root.mkdir(parents=True, exist_ok=True)
    pairs = []
    for i in range(n):
        shape = (h, h, 3) if rgb else (h, h)
        a, b = rng.random(shape), rng.random(shape)
        _save(root / f"{i:03d}.png", np.concatenate([a, b], axis=1))
        pairs.append((a, b))
    return pairs


def test_paired_augment_is_one_crop_and_flip_per_pair_checked_by_slicing():
    pairs = torch.rand(5, 2, 1, 6, 6)
    gen = torch.Generator().manual_seed(3)
    out = paired_augment(pairs, pad=2, flip=True, generator=gen)
    gen = torch.Generator().manual_seed(3)
    dy, dx = torch.randint(0, 5, (5,), generator=gen), torch.randint(0, 5, (5,), generator=gen)
    mirror = torch.rand(5, generator=gen) < 0.5
    for i in range(5):
        padded = F.pad(pairs[i].reshape(2, 6, 6), (2, 2, 2, 2), mode="reflect")
        crop = padded[:, dy[i]:dy[i] + 6, dx[i]:dx[i] + 6]
        if mirror[i]:
            crop = crop.flip(-1)
        assert torch.equal(out[i].reshape(2, 6, 6), crop)


def test_embedded_tasks_and_the_exact_downsampling():
    p = digits_pairs("val", "edges")
    assert p.shape == (350, 2, 1, 32, 32) and set(p[:, 0].unique().tolist()) <= {0.0, 1.0}
    from probgen.data.digits import load_digits

    back = downsample_digits(p[:, 1])
    assert torch.allclose(back, load_digits("val", "unit"), atol=1e-4)
    u = digits_unpaired("test")
    assert u.shape == (223, 2, 1, 32, 32)
    s = load_splits("digits_masked")
    assert s.kind == "pairs" and s.sizes() == (1000, 350, 447)
    assert load_splits("digits_unpaired").kind == "unpaired"


def test_an_ab_folder_loads_and_trains(tmp_path):
    pairs = _pairs_folder(tmp_path / "maps" / "train", n=12, h=16)
    x = load_pix2pix_folder(tmp_path / "maps" / "train")
    assert x.shape == (12, 2, 3, 16, 16)
    a0, b0 = (torch.as_tensor(v, dtype=torch.float32).permute(2, 0, 1) for v in pairs[0])
    assert torch.allclose(x[0, 0], a0, atol=1 / 255) and torch.allclose(x[0, 1], b0, atol=1 / 255)
    s = load_splits(tmp_path / "maps")
    assert s.kind == "pairs" and s.sizes() == (10, 1, 1) and s.info["carved"] == ["val", "test"]
    run = train("pix2pix", data=str(tmp_path / "maps"), fast=True, progress=False, steps=3,
                batch_size=4)
    assert run.sample(2).shape == (2, 2, 3, 16, 16) and "test_l1" in run.metrics
    assert "fd" not in run.metrics  # fd needs the digits tasks


@pytest.mark.parametrize("case, match", [
    ("misshaped", r"bad\.png is 10x8 pixels; a pix2pix pair holds A\|B"),
    ("single", r"holds 1 image\(s\) \(.*000\.png\); at least 2"),
    ("size", r"bad\.png is 32x16 RGB, unlike .*000\.png \(16x8 RGB\)"),
    ("mode", r"bad\.png is 16x8 grayscale, unlike .*000\.png \(16x8 RGB\)"),
])
def test_bad_folders_are_one_line_errors_naming_the_file(tmp_path, case, match):
    folder = tmp_path / "train"
    _pairs_folder(folder, n=1 if case == "single" else 3)
    if case == "misshaped":
        _save(folder / "bad.png", np.zeros((8, 10, 3)))
    elif case == "size":
        _save(folder / "bad.png", np.zeros((16, 32, 3)))
    elif case == "mode":
        _save(folder / "bad.png", np.zeros((8, 16)))
    with pytest.raises(ProbgenError, match=match) as err:
        load_splits(tmp_path)
    assert "\n" not in str(err.value)


def test_unpaired_folders(tmp_path):
    for d in ("trainA", "trainB"):
        (tmp_path / d).mkdir()
        for i in range(12 if d == "trainA" else 14):
            _save(tmp_path / d / f"{i}.png", np.full((8, 8, 3), i / 20))
    s = load_splits(tmp_path)
    assert s.kind == "unpaired" and s.shape == (2, 3, 8, 8) and sum(s.sizes()) == 12
    (tmp_path / "testA").mkdir()
    with pytest.raises(ProbgenError, match="testA has no partner folder .*testB"):
        load_splits(tmp_path)


@pytest.mark.parametrize("n_layers", [1, 2, 3])
def test_patchgan_receptive_field_matches_autograd(n_layers):
    torch.manual_seed(0)
    d = PatchDiscriminator(1, width=2, n_layers=n_layers).eval()
    side = 96
    x = torch.randn(1, 1, side, side, requires_grad=True)
    out = d(x)
    i, j = out.shape[-2] // 2, out.shape[-1] // 2
    (grad,) = torch.autograd.grad(out[0, 0, i, j], x)
    rows = grad[0, 0].abs().sum(1).nonzero()
    assert int(rows.max() - rows.min() + 1) == receptive_field(n_layers) == d.receptive_field


def test_unet_skips_and_dropout():
    g = UNetGenerator(1, 1, size=32, width=4, dropout=0.5)
    drops = [m for m in g.modules() if isinstance(m, torch.nn.Dropout)]
    assert drops  # the noise source
    a = torch.randn(2, 1, 32, 32)
    g.train()
    assert not torch.equal(g(a), g(a))  # dropout makes G(a) random in training
    g.eval()
    assert torch.equal(g(a), g(a))


def test_cycle_program_and_history_pool():
    p = cycle_program(torch.nn.Identity(), torch.nn.Identity(), (1, 2, 2))
    edges = set(p.bn.graph.edges)
    assert {("a", "fake_b"), ("fake_b", "rec_a"), ("b", "fake_a"), ("fake_a", "rec_b")} <= edges
    torch.manual_seed(0)
    pool = HistoryPool(4, (1,))
    first = pool.query(torch.arange(4.0)[:, None])
    assert first.flatten().tolist() == [0.0, 1.0, 2.0, 3.0] and int(pool.count) == 4
    out = pool.query(torch.full((200, 1), 9.0)).flatten()
    old = (out < 9).sum().item()
    assert 0 < old <= 4  # older fakes come back (each at most once, then replaced by a 9)
    assert set(pool.images.flatten().tolist()) <= {0.0, 1.0, 2.0, 3.0, 9.0}


@pytest.mark.parametrize("family", ["pix2pix", "cyclegan"])
def test_image_to_image_resume_is_bit_for_bit(tmp_path, family):
    """Both players, the paired jitter / history buffer and dropout resume exactly."""
    from probgen.infer import runs
    from probgen.models.family import load_run

    kw = {"fast": True, "progress": False, "val_every": 3}
    full = train(family, out=tmp_path / "full", steps=6, **kw)
    train(family, out=tmp_path / "half", steps=3, **kw)
    train(family, out=tmp_path / "half", resume=True, progress=False, steps=6)
    a = runs.load_tensors(tmp_path / "full" / "weights.safetensors")
    b = runs.load_tensors(tmp_path / "half" / "weights.safetensors")
    assert any(k.startswith("objective.") for k in a)  # the discriminator(s) are saved
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    again = load_run(tmp_path / "half")
    assert torch.equal(again.sample(3, seed=1), full.sample(3, seed=1))
