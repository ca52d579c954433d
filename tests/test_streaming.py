"""Data that does not fit in memory: on-demand datasets, streamed splits and ``fit`` reading
through a DataLoader with workers, checked against the in-memory path bit for bit."""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import pyro
import pyro.distributions as dist
import pytest
import torch
from safetensors.torch import save_file

from probgen.data.splits import load_splits
from probgen.data.stream import ArrayRows, ImageFolderRows
from probgen.errors import ProbgenError
from probgen.infer import runs
from probgen.infer.fit import fit
from probgen.infer.streaming import LoaderBatches, _RankRows


def _folder(tmp_path, n=40):
    rng = np.random.default_rng(0)
    d = tmp_path / "images"
    d.mkdir()
    for i in range(n):
        plt.imsave(d / f"{i:03d}.png", rng.random((6, 5, 3)))
    return d


def _model(x):
    loc = pyro.param("loc", torch.zeros(x.shape[1:]))
    with pyro.plate("data", x.shape[0]):
        pyro.sample("x", dist.Normal(loc, 0.5).to_event(3), obs=x)


def _train(data, out, steps, resume=False, **kw):
    pyro.clear_param_store()
    res = fit(_model, None, data, steps=steps, batch_size=8, lr=0.05, progress=False,
              out=out, resume=resume, log_every=4, **kw)
    return res


def test_streamed_splits_equal_the_in_memory_ones(tmp_path, monkeypatch):
    d = _folder(tmp_path)
    whole = load_splits(d)
    monkeypatch.setenv("PROBGEN_STREAM", "1")
    streamed = load_splits(d)
    assert isinstance(streamed.train, torch.utils.data.Dataset) and streamed.info["streamed"]
    assert streamed.shape == whole.shape == (3, 6, 5) and streamed.sizes() == whole.sizes()
    assert torch.equal(streamed.val, whole.val) and torch.equal(streamed.test, whole.test)
    assert torch.equal(streamed.train.materialise(), whole.train)
    assert streamed.info["sha256"] == whole.info["sha256"]


def test_fit_through_workers_equals_in_memory_and_resumes(tmp_path, monkeypatch):
    d = _folder(tmp_path)
    whole = load_splits(d)
    monkeypatch.setenv("PROBGEN_STREAM", "1")
    streamed = load_splits(d)
    streamed.train.workers = 2
    a = _train(whole.train, tmp_path / "a", 12)  # 32 rows, 8 a batch: epochs turn over
    _train(streamed.train, tmp_path / "b", 8)
    b = _train(streamed.train, tmp_path / "b", 12, resume=True)
    assert [r["loss"] for r in a.history] == [r["loss"] for r in b.history]
    assert torch.equal(a.params["pyro.loc"], b.params["pyro.loc"])
    ca, cb = runs.load_checkpoint(tmp_path / "a"), runs.load_checkpoint(tmp_path / "b")
    assert torch.equal(ca.extra["sampler_order"], cb.extra["sampler_order"])


def test_each_rank_reads_only_its_shard():
    class Counting(torch.utils.data.Dataset):
        def __init__(self):
            self.read: list[int] = []

        def __len__(self):
            return 10

        def __getitem__(self, i):
            self.read.append(int(i))
            return torch.full((2,), float(i))

    for rank in (0, 1, 2):
        data = Counting()
        rows = _RankRows(data, rank, 3).__getitems__([9, 8, 7, 6, 5, 4, 3])
        mine = [[9, 8, 7], [6, 5], [4, 3]][rank]
        assert data.read == mine
        kept = torch.stack(rows)[[0, 3, 5][rank]:][:len(mine), 0]
        assert kept.tolist() == [float(i) for i in mine]


def test_array_rows_npy_and_safetensors(tmp_path):
    x = np.arange(60, dtype=np.uint8).reshape(5, 3, 4)  # (N, H, W) integer images
    np.save(tmp_path / "x.npy", x)
    save_file({"images": torch.from_numpy(x)}, str(tmp_path / "x.safetensors"))
    for name in ("x.npy", "x.safetensors"):
        rows = ArrayRows(tmp_path / name)
        assert rows.shape == (5, 1, 3, 4)
        assert torch.equal(rows[4], torch.from_numpy(x[4][None]).float() / 255.0)
    b = LoaderBatches(ArrayRows(tmp_path / "x.npy"), 2, 0, torch.device("cpu"), workers=0)
    assert b.next()[0].shape == (2, 1, 3, 4)


def test_stream_errors_name_the_file_and_row(tmp_path, monkeypatch):
    v = np.ones((12, 2), dtype=np.float32)
    v[7, 1] = np.nan
    np.save(tmp_path / "v.npy", v)
    with pytest.raises(ProbgenError, match="row 7 holds non-finite values"):
        ArrayRows(tmp_path / "v.npy")[7]
    torch.save(torch.ones(12, 2), tmp_path / "v.pt")
    with pytest.raises(ProbgenError, match="cannot be read row by row"):
        ArrayRows(tmp_path / "v.pt")
    np.save(tmp_path / "b.npy", np.ones((12, 2), dtype=bool))
    with pytest.raises(ProbgenError, match="dtype bool"):
        ArrayRows(tmp_path / "b.npy")
    d = _folder(tmp_path, n=3)
    plt.imsave(d / "999.png", np.zeros((4, 4, 3)))
    rows = ImageFolderRows(d)
    with pytest.raises(ProbgenError, match="999.png has shape"):
        rows[3]
