"""Run folders: exact resume, SIGKILL safety, refusing pickles and tampered files."""

from __future__ import annotations

import os
import pickle
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pyro
import pyro.distributions as dist
import pytest
import torch

from probgen.errors import ProbgenError
from probgen.infer import runs
from probgen.infer.fit import NonFiniteLossError, fit
from probgen.infer.objectives import ELBO

SETUP = textwrap.dedent(
    """
    import pyro, pyro.distributions as dist, torch
    from torch import nn

    class Vae(nn.Module):
        def __init__(self):
            super().__init__()
            self.enc = nn.Sequential(nn.Linear(4, 16), nn.ReLU(), nn.Linear(16, 4))
            self.dec = nn.Sequential(nn.Linear(2, 16), nn.ReLU(), nn.Linear(16, 4))

        def model(self, x):
            s = pyro.param("noise", torch.tensor(1.0), constraint=dist.constraints.positive)
            with pyro.plate("data", x.shape[0]):
                z = pyro.sample("z", dist.Normal(x.new_zeros(x.shape[0], 2), 1.0).to_event(1))
                pyro.sample("x", dist.Normal(self.dec(z), s).to_event(1), obs=x)

        def guide(self, x):
            with pyro.plate("data", x.shape[0]):
                h = self.enc(x)
                pyro.sample("z", dist.Normal(h[:, :2], h[:, 2:].exp()).to_event(1))

    def make():
        torch.set_num_threads(1)
        pyro.clear_param_store()
        torch.manual_seed(0)
        return Vae(), torch.randn(96, 4, generator=torch.Generator().manual_seed(1))
    """
)


def _setup():
    ns: dict = {}
    exec(SETUP, ns)  # the same model code runs here and in the killed subprocess
    return ns["make"]()


@pytest.fixture(autouse=True)
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
    pyro.clear_param_store()


def _strip(history):
    return [{k: v for k, v in h.items() if k != "time"} for h in history]


def _train(out, steps, resume=False, **kw):
    vae, x = _setup()
    opts = dict(steps=steps, batch_size=32, lr=1e-2, seed=3, progress=False, log_every=10)
    res = fit(vae, None, x, out=out, resume=resume, **{**opts, **kw})
    return res


def test_resume_is_bitwise_exact(tmp_path):
    straight = _train(tmp_path / "a", 40)
    _train(tmp_path / "b", 20)
    resumed = _train(tmp_path / "b", 40, resume=True)
    wa = runs.load_run_weights(tmp_path / "a")
    wb = runs.load_run_weights(tmp_path / "b")
    assert set(wa) == set(wb) and "pyro.noise" in wa
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
    assert _strip(straight.history) == _strip(resumed.history)
    ca, cb = runs.load_checkpoint(tmp_path / "a"), runs.load_checkpoint(tmp_path / "b")
    for k, v in ca.optimizers["main"]["state"].items():
        for name, t in v.items():
            assert torch.equal(t, cb.optimizers["main"]["state"][k][name])
    assert runs.read_history(tmp_path / "b" / "metrics.jsonl")[-1]["step"] == 40


def test_run_folder_contents(tmp_path):
    _train(tmp_path, 10, sample_fn=lambda n: torch.rand(n, 16))
    names = {p.name for p in tmp_path.iterdir()}
    assert {"config.json", "weights.safetensors", "metrics.jsonl", "metrics.json",
            "checkpoints", "samples"} <= names
    assert runs.read_json(tmp_path / "config.json")["batch_size"] == 32
    assert runs.read_json(tmp_path / "metrics.json")["steps"] == 10
    assert list((tmp_path / "samples").glob("*.png"))
    assert not list(tmp_path.rglob("*.tmp")) and not list(tmp_path.rglob(".tmp-*"))


def test_existing_run_needs_resume(tmp_path):
    _train(tmp_path, 5)
    with pytest.raises(ProbgenError, match="resume"):
        _train(tmp_path, 10)


def test_resume_refuses_a_different_config(tmp_path):
    _train(tmp_path, 5)
    with pytest.raises(ProbgenError, match="batch_size"):
        _train(tmp_path, 10, resume=True, batch_size=16)


def test_sigkilled_run_resumes_exactly(tmp_path):
    out = tmp_path / "killed"
    script = SETUP + textwrap.dedent(
        f"""
        from probgen.infer.fit import fit
        vae, x = make()
        fit(vae, None, x, steps=100000, batch_size=32, lr=1e-2, seed=3, progress=False,
            log_every=10, out={str(out)!r}, checkpoint_every=10)
        """
    )
    proc = subprocess.Popen([sys.executable, "-c", script], cwd=Path(__file__).parents[1])
    try:
        deadline = time.time() + 120
        while time.time() < deadline:
            ckpt = runs.latest_checkpoint(out)
            if ckpt is not None and int(ckpt.name.split("-")[1]) >= 30:
                break
            time.sleep(0.05)
        else:
            pytest.fail("the subprocess wrote no checkpoint in time")
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    reached = runs.load_checkpoint(out).state["step"]  # loadable after the kill
    target = reached + 20
    resumed = _train(out, target, resume=True, checkpoint_every=10)
    straight = _train(tmp_path / "straight", target, checkpoint_every=10)
    wa, wb = runs.load_run_weights(out), runs.load_run_weights(tmp_path / "straight")
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
    assert _strip(resumed.history) == _strip(straight.history)


class _Evil:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (Path(self.marker),))


def test_pickled_files_are_refused_without_running_them(tmp_path):
    out = tmp_path / "run"
    _train(out, 10)
    marker = tmp_path / "pwned"
    payload = pickle.dumps(_Evil(str(marker)))
    ckpt = runs.latest_checkpoint(out)
    (ckpt / "weights.safetensors").write_bytes(payload)
    with pytest.raises(runs.RunFolderError, match="checksum"):
        _train(out, 20, resume=True)
    (out / "weights.safetensors").write_bytes(payload)
    with pytest.raises(runs.RunFolderError, match="safetensors"):
        runs.load_run_weights(out)
    with pytest.raises(runs.RunFolderError, match="safetensors"):
        runs.load_tensors(ckpt / "weights.safetensors")
    # a pickle that also matches a forged manifest is still refused by the parser
    manifest = runs.read_json(ckpt / "manifest.json")
    manifest["weights.safetensors"] = runs._sha256(ckpt / "weights.safetensors")
    (ckpt / "manifest.json").write_text(__import__("json").dumps(manifest))
    with pytest.raises(runs.RunFolderError, match="safetensors"):
        _train(out, 20, resume=True)
    assert not marker.exists()


def test_truncated_files_are_a_clear_error(tmp_path):
    _train(tmp_path, 10)
    ckpt = runs.latest_checkpoint(tmp_path)
    data = (ckpt / "optimizer.safetensors").read_bytes()
    (ckpt / "optimizer.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(runs.RunFolderError, match="checksum"):
        runs.load_checkpoint(tmp_path)
    (tmp_path / "config.json").write_text('{"batch_')
    with pytest.raises(runs.RunFolderError, match="JSON"):
        runs.read_json(tmp_path / "config.json")


class _NanAfter(ELBO):
    def __init__(self, step):
        super().__init__()
        self.step, self.calls = step, 0

    def loss(self, model, guide, *batch):
        self.calls += 1
        value = super().loss(model, guide, *batch)
        return value * float("nan") if self.calls > self.step else value


def test_nan_loss_raises_and_keeps_the_last_good_checkpoint(tmp_path):
    with pytest.raises(NonFiniteLossError, match="step 13") as err:
        _train(tmp_path, 50, objective=_NanAfter(13), checkpoint_every=5)  # +1 discovery call
    assert "step-00000010" in str(err.value)
    ckpt = runs.load_checkpoint(tmp_path)
    assert ckpt.state["step"] == 10
    assert all(torch.isfinite(v).all() for v in ckpt.weights.values())


def test_atomic_write_replaces_whole_files(tmp_path):
    p = tmp_path / "f.json"
    runs.atomic_write_json(p, {"a": 1})
    runs.atomic_write_json(p, {"a": 2})
    assert runs.read_json(p) == {"a": 2}
    assert os.listdir(tmp_path) == ["f.json"]


def test_rng_state_round_trip():
    import random

    import numpy as np

    t, j = runs.rng_state()
    a = (torch.rand(3), random.random(), np.random.rand())
    runs.set_rng_state(t, j)
    b = (torch.rand(3), random.random(), np.random.rand())
    assert torch.equal(a[0], b[0]) and a[1:] == b[1:]


def test_resuming_a_different_model_is_a_clear_error(tmp_path):
    _train(tmp_path, 5)
    vae, x = _setup()
    vae.dec = torch.nn.Sequential(torch.nn.Linear(2, 4))  # different architecture
    with pytest.raises(runs.RunFolderError, match="do not match"):
        fit(vae, None, x, steps=10, batch_size=32, lr=1e-2, seed=3, progress=False,
            log_every=10, out=tmp_path, resume=True)


def test_tensorboard_event_files_hold_the_logged_losses(tmp_path):
    """With the tensorboard extra, ``fit(tensorboard=True)`` writes event files that
    TensorBoard's own reader reads back with the history's values."""
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    def model(x):
        loc = pyro.param("loc", torch.tensor(0.0))
        with pyro.plate("data", x.shape[0]):
            pyro.sample("x", dist.Normal(loc, 1.0), obs=x)

    x = torch.randn(64) + 2.0
    res = fit(model, None, x, steps=40, batch_size=16, log_every=10, val_data=x[:16],
              val_every=10, out=tmp_path / "run", progress=False, tensorboard=True)
    acc = EventAccumulator(str(tmp_path / "run" / "tensorboard"))
    acc.Reload()
    assert {"loss", "val_loss"} <= set(acc.Tags()["scalars"])
    logged = [(e.step, e.value) for e in acc.Scalars("loss")]
    expected = [(row["step"], row["loss"]) for row in res.history]
    assert [s for s, _ in logged] == [s for s, _ in expected] == [10, 20, 30, 40]
    assert all(abs(a - b) < 1e-5 for (_, a), (_, b) in zip(logged, expected))


def test_tensorboard_without_a_folder_is_a_clear_error():
    def model(x):
        with pyro.plate("data", x.shape[0]):
            pyro.sample("x", dist.Normal(pyro.param("m", torch.tensor(0.0)), 1.0), obs=x)

    with pytest.raises(ValueError, match="tensorboard"):
        fit(model, None, torch.zeros(8), steps=2, batch_size=4, progress=False,
            tensorboard=True)
